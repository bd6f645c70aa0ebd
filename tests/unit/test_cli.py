"""The `tritonkit` command that pyproject.toml installs dispatches to each part's command line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tritonkit.cli import SUBCOMMANDS

from ..support import missing_tool


def _tritonkit() -> str:
    script = Path(sys.executable).parent / "tritonkit"
    found = str(script) if script.exists() else shutil.which("tritonkit")
    if found is None:
        missing_tool("the tritonkit console script is not installed (run `make setup`)")
    return found


def test_tritonkit_lists_its_subcommands_when_called_without_one() -> None:
    result = subprocess.run([_tritonkit()], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_tritonkit_subcommand_shows_its_options_when_asked_for_help(name: str) -> None:
    result = subprocess.run([_tritonkit(), name, "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and "--" in result.stdout


def test_tritonkit_refuses_an_unknown_subcommand_with_exit_2() -> None:
    result = subprocess.run([_tritonkit(), "deploy"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "unknown subcommand 'deploy'" in result.stderr
