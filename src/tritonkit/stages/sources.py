"""The source files a build stage depends on, derived from what it imports: a stage is stale
when any module it reaches through `tritonkit` imports (function-local ones included) changed,
so no list of files is kept by hand::

    sources("tritonkit.tabular.artifacts")   # artifacts.py, schema.py, export.py, spec/, ...
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

_PACKAGE = "tritonkit"


@functools.cache
def _file(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _imports(path: Path) -> set[str]:
    """The `tritonkit` modules a file imports (`from a import b` counts a.b when it is one)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(_PACKAGE))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.startswith(_PACKAGE):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names
                         if _file(f"{node.module}.{a.name}") is not None)
    return found


def sources(*modules: str) -> tuple[Path, ...]:
    """Every file of `modules` and of the `tritonkit` modules they reach, sorted."""
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _file(name)
        if path is None:
            continue
        seen[name] = path
        parts = name.split(".")
        # importing a.b.c runs a/__init__.py and a/b/__init__.py too
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(_imports(path))
    return tuple(sorted(set(seen.values())))
