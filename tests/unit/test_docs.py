"""scripts/check_docs.py: the repository's links and pointers resolve, and dead ones are named.

This file holds dead pointers on purpose (docs-check: ignore-file), which the check of the
repository passes over.
"""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tritonkit.paths import PROJECT_ROOT

CHECKER = PROJECT_ROOT / "scripts" / "check_docs.py"

README = [
    "# Project",
    "",
    "## Set up: two commands",
    "",
    "[guide](docs/guide.md), [its section](docs/guide.md#the-packed-entry-point-churn_packed),",
    "[this one](#set-up-two-commands), [a card](artifacts/churn/1/MODEL_CARD.md) (built later).",
    "[gone](docs/missing.md)",
    "[no such heading](docs/guide.md#no-such-heading)",
    "[nor here](#nowhere)",
    "```",
    "[in a code block](nowhere.md)",
    "```",
]
GUIDE = [
    "# Guide",
    "",
    "## The packed entry point: `churn_packed`",
    "",
    "Back to [the README](../README.md#project) and",
    "[its first section](../README.md#set-up-two-commands).",
]
CODE = [
    '"""A module pointing into the docs.',
    "",
    'Packed: docs/guide.md, "The packed entry point"; set up: README, "Set up".',
    "Costs: docs/nowhere.md.",
    'Gone: README, "Gone section".',
    "Unquoted: README, Performance.",
    'Wrapped: docs/guide.md, "The packed',
    '    entry point" and docs/guide.md, "No such',
    '    heading".',
    "Not ours: onnxruntime docs/OperatorKernels.md.",
    "Meant: docs/ignored.md (docs-check: ignore).",
    '"""',
]


@functools.cache
def _checker_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_docs", CHECKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _run(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECKER), "--root", str(root)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "README.md").write_text("\n".join(README) + "\n")
    (tmp_path / "docs" / "guide.md").write_text("\n".join(GUIDE) + "\n")
    (tmp_path / "src" / "pkg" / "mod.py").write_text("\n".join(CODE) + "\n")
    return tmp_path


def test_check_docs_passes_when_run_on_the_repository() -> None:
    result = _run(PROJECT_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_check_docs_names_each_dead_link_anchor_and_pointer_when_a_tree_has_them(
        tree: Path) -> None:
    result = _run(tree)
    assert result.returncode == 1, result.stderr
    problems = result.stdout.splitlines()
    expected = [
        "README.md:7: link to docs/missing.md: docs/missing.md does not exist",
        "README.md:8: link to docs/guide.md#no-such-heading: no heading with the anchor "
        "#no-such-heading in docs/guide.md",
        "README.md:9: link to #nowhere: no heading with the anchor #nowhere in README.md",
        "src/pkg/mod.py:4: docs/nowhere.md does not exist",
        'src/pkg/mod.py:5: README, "Gone section": no such heading in README.md',
        "src/pkg/mod.py:6: README, Performance: a section named without quotes; write README, "
        '"<heading>" or docs/<page>.md, "<heading>"',
        'src/pkg/mod.py:8: docs/guide.md, "No such heading": no such heading in docs/guide.md',
    ]
    assert problems == expected


def test_check_docs_reports_a_page_when_a_pointer_names_one_that_is_missing(
        tree: Path) -> None:
    (tree / "deploy").mkdir()
    (tree / "deploy" / "values.yaml").write_text('# see docs/ops.md, "Scaling"\n')
    problems = _run(tree).stdout.splitlines()
    assert 'deploy/values.yaml:1: docs/ops.md, "Scaling": docs/ops.md does not exist' in problems


@pytest.mark.parametrize(("heading", "anchor"), [
    ("The packed entry point: `churn_packed`", "the-packed-entry-point-churn_packed"),
    ("Overload (`make bench-overload`, and the open-loop runs of `make bench`)",
     "overload-make-bench-overload-and-the-open-loop-runs-of-make-bench"),
    ("Quirks of Triton 2.51 and what the project does about them",
     "quirks-of-triton-251-and-what-the-project-does-about-them"),
    ("GPU variants and TensorRT engines", "gpu-variants-and-tensorrt-engines"),
])
def test_slugify_gives_githubs_anchor_when_a_heading_has_code_and_punctuation(
        heading: str, anchor: str) -> None:
    assert _checker_module().slugify(heading) == anchor
