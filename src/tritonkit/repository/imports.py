"""What the python steps of a rendered repository import, checked against the requirements
file of the image that runs them (`deploy/triton/requirements.txt` for production).

A python step is a Triton model whose config names the python backend; its version folder holds
`model.py` and the modules beside it. Everything they import must be the standard library,
Triton's `triton_python_backend_utils`, a module beside it, or a distribution the requirements
file pins: the NGC image has nothing else, and a step importing something it lacks fails to
load there (the server exits, compose restarts it in a loop)::

    problems = undeclared_imports(Path("build/production/model_repository"),
                                  Path("deploy/triton/requirements.txt"))
    # ["churn_postprocess/1/model.py imports onnxruntime (distribution onnxruntime), which
    #   deploy/triton/requirements.txt does not pin"]
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import sys
from collections.abc import Iterator
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tritonkit.paths import PROJECT_ROOT
from tritonkit.repository.config import read_config

#: Modules the python backend itself provides to every step.
BACKEND_MODULES = frozenset({"triton_python_backend_utils"})


def imported_modules(source: str) -> set[str]:
    """Top-level names of every absolute import in `source`, wherever it stands (a function, a
    `try`, an `if`): a conditional import still has to be importable where it runs."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def python_steps(repository: Path) -> Iterator[Path]:
    """The version folders of the repository's python-backend models."""
    for config_path in sorted(repository.glob("*/config.pbtxt")):
        if read_config(config_path).backend == "python":
            yield from sorted(p for p in config_path.parent.iterdir()
                              if p.is_dir() and p.name.isdigit())


def third_party_imports(folder: Path) -> dict[str, list[Path]]:
    """module -> the files of `folder` importing it, for modules that are not the standard
    library, the backend's or one of the folder's own."""
    sources = sorted(folder.glob("*.py"))
    own = {path.stem for path in sources}
    found: dict[str, list[Path]] = {}
    for path in sources:
        for module in imported_modules(path.read_text()):
            if module in sys.stdlib_module_names or module in own or module in BACKEND_MODULES:
                continue
            found.setdefault(module, []).append(path)
    return found


def pinned(requirements: Path) -> set[str]:
    """Canonical names of the distributions a requirements file pins (hash lines and comments
    skipped)."""
    names: set[str] = set()
    text = requirements.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        names.add(canonicalize_name(Requirement(line.split()[0]).name))
    return names


def _shown(path: Path) -> str:
    """`path` relative to the project's root where it lies below it."""
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


@functools.cache
def _distributions() -> dict[str, tuple[str, ...]]:
    return {module: tuple(canonicalize_name(d) for d in dists)
            for module, dists in importlib.metadata.packages_distributions().items()}


def undeclared_imports(repository: Path, requirements: Path) -> list[str]:
    """One line per import of a python step that `requirements` does not provide."""
    declared = pinned(requirements)
    problems = []
    for folder in python_steps(repository):
        for module, paths in sorted(third_party_imports(folder).items()):
            distributions = _distributions().get(module, ())
            if declared & set(distributions):
                continue
            where = ", ".join(str(p.relative_to(repository)) for p in paths)
            what = (f"distribution {', '.join(distributions)}" if distributions
                    else "no installed distribution provides it")
            problems.append(f"{where} imports {module} ({what}), which {_shown(requirements)} "
                            "does not pin")
    return problems
