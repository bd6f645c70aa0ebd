"""Model families, one package each (`tritonkit.tabular`, `tritonkit.text`), whose `family`
module says how a model of it is built and rendered; `render` writes a whole repository.

The spec names each model's `family`; `family_of` finds the module that builds its artefacts,
variants and gates (`build`) and writes its Triton models for a target (`render`). Floors go
one way: `builder` (the CLI, cards) above this package, above the families, above `stages`
and the `repository` library (tests/unit/test_import_floors.py)::

    family = family_of(spec.models["churn"])             # tritonkit.tabular.family
    family.build("churn", spec.models["churn"], force=False)
    family.render(repository, spec, "embedded", "churn", spec.models["churn"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from tritonkit.spec import ModelSpec, Spec, TargetName


class Family(Protocol):
    """What a family module provides."""

    def build(self, name: str, model: Any, *, force: bool = False) -> dict[str, Any]:
        """Make the model's artefacts, variants and gates where their inputs changed (all when
        `force`); returns a summary: what was rebuilt, gates, skipped GPU steps and why."""
        ...

    def render(self, repository: Path, spec: Spec, target: TargetName, name: str,
               model: Any) -> list[Path]:
        """Write the model's ensemble and steps for `target`; returns the config.pbtxt paths."""
        ...


def family_of(model: ModelSpec) -> Family:
    """The module of a model's family (imported here: a family's dependencies load only when a
    spec names it)."""
    if model.family == "tabular_classifier":
        from tritonkit.tabular import family as tabular_classifier

        return tabular_classifier
    if model.family == "text_embedding":
        from tritonkit.text import family as text_embedding

        return text_embedding
    raise KeyError(f"no family module for {model.family!r}")
