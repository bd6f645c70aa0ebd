"""Render a Triton model repository for one target: every model of the spec, each by its family
(`family_of`), configs written through Triton's schema (`repository.config`)::

    render_repository(load_spec(), "embedded")    # -> model_repository/
"""

from __future__ import annotations

import logging
from pathlib import Path

from tritonkit.errors import RepositoryError
from tritonkit.families import family_of
from tritonkit.paths import PROJECT_ROOT
from tritonkit.repository.imports import undeclared_imports
from tritonkit.repository.layout import repository_path, step_names
from tritonkit.spec import Spec, TargetName

__all__ = ["render_repository", "repository_path", "step_names"]

logger = logging.getLogger(__name__)


def render_repository(spec: Spec, target_name: TargetName, repository: Path | None = None
                      ) -> list[Path]:
    """Write every model's ensemble and steps for `target_name`; returns the config.pbtxt
    paths."""
    if target_name not in spec.targets:
        raise KeyError(f"unknown target {target_name!r}; the spec has {sorted(spec.targets)}")
    repository = repository or repository_path(spec, target_name)
    repository.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in spec.models.items():
        written += family_of(model).render(repository, spec, target_name, name, model)
    requirements = spec.targets[target_name].python_requirements
    if requirements is not None:
        requirements = requirements if requirements.is_absolute() else PROJECT_ROOT / requirements
        problems = undeclared_imports(repository, requirements)
        if problems:
            raise RepositoryError(
                f"the {target_name} target's python steps import what its image lacks: "
                + "; ".join(problems) + ". Pin the module (with its hashes) there, or drop "
                "the import")
    logger.info("rendered %d models for target %s into %s", len(written), target_name, repository)
    return written
