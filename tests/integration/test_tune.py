"""`make tune` (bench/tune.py): a tiny search on a copy of the spec, run as a subprocess, and
the targeted text edit it writes the winner with (every other line and comment kept;
tritonkit.spec_edit, whose own tests are tests/unit/test_spec_edit.py)."""

from __future__ import annotations

import difflib
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tritonkit.spec import DEFAULT_SPEC, QueuePolicy, load_spec
from tritonkit.tabular.artifacts import TabularArtifacts

ROOT = Path(__file__).resolve().parents[2]
TUNE = ROOT / "bench" / "tune.py"
#: The columns a wrapped flow mapping of the tuned step continues at.
CONTINUATION = " " * len("        dynamic_batching: {")


def tuned_lines(lines: list[str]) -> set[int]:
    """Indices of churn's preprocess `instances:` and `dynamic_batching:` lines."""
    churn = lines.index("  churn:\n")
    step = next(i for i in range(churn, len(lines)) if lines[i] == "      preprocess:\n")
    keys = ("        instances:", "        dynamic_batching:")
    found = {i for i in range(step + 1, step + 3) if lines[i].startswith(keys)}
    assert len(found) == 2, lines[step:step + 3]
    return found


def assert_only_tuned_lines_changed(before: str, after: str) -> None:
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    allowed = tuned_lines(old)
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        assert set(range(i1, i2)) <= allowed, f"{tag} of lines {old[i1:i2]} -> {new[j1:j2]}"
        for line in new[j1:j2]:
            assert line.startswith(("        instances: {", "        dynamic_batching: {",
                                    CONTINUATION)), line


@pytest.mark.slow
def test_tune_writes_the_winner_into_a_copy_of_the_spec(
    tmp_path: Path, artifacts: TabularArtifacts
) -> None:
    spec_copy = tmp_path / "models.yaml"
    shutil.copy2(DEFAULT_SPEC, spec_copy)
    checkout_spec = DEFAULT_SPEC.read_text()
    original = spec_copy.read_text()
    out = tmp_path / "results"
    run = subprocess.run(
        [sys.executable, str(TUNE), "--spec", str(spec_copy), "--instances", "1", "2",
         "--delays", "0", "--preferred", "none", "--concurrency", "8", "--duration-s", "1",
         "--output-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert DEFAULT_SPEC.read_text() == checkout_spec  # --spec, not the checkout's spec

    results = json.loads((out / "points.json").read_text())
    chosen, winner = results["chosen"], results["winner"]
    assert (chosen["instances"], chosen["max_queue_delay_us"]) == (
        winner["instances"], winner["delay_us"])
    assert_only_tuned_lines_changed(original, spec_copy.read_text())
    step = load_spec(spec_copy).models["churn"].steps.preprocess
    assert step.instances["embedded"] == winner["instances"] in (1, 2)
    assert list(step.dynamic_batching.preferred_batch_size) == winner["preferred"] == []
    assert step.dynamic_batching.max_queue_delay_us == winner["delay_us"] == 0
    if chosen["queue"] != "unchanged":  # written only where the server came through the check
        assert step.dynamic_batching.queue == QueuePolicy(**chosen["queue"])
    before = load_spec(DEFAULT_SPEC)
    assert load_spec(spec_copy).models["minilm"] == before.models["minilm"]
    assert step.instances["production"] == before.models["churn"].steps.preprocess.instances[
        "production"]

    report = (out / "report.md").read_text()
    assert [p["config"]["instances"] for p in results["points"]] == [1, 2]
    for point in results["points"]:
        assert [r["connections"] for r in point["runs"]] == [8]
        assert f"| {point['phase']} | {point['label']} | 8 |" in report
    assert winner["label"] in report.split("## The winner")[1]
    assert "CPUs (" in report and "comparable only within this one run" in report


def test_the_spec_edit_keeps_every_other_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    tune = importlib.import_module("tune")
    text = DEFAULT_SPEC.read_text()
    queue = QueuePolicy(max_size=190, timeout_us=100_000)
    edited = tune.edit_spec(text, tune.Config(3, 200, (8, 32)), queue, True)
    assert_only_tuned_lines_changed(text, edited)
    changed = set(edited.splitlines()) - set(text.splitlines())
    assert len(changed) == 3 and max(map(len, changed)) <= 100, changed  # wrapped under "{"
    # the queue removed again gives back the file as it was
    assert tune.edit_spec(edited, tune.Config(2, 0, ()), None, True) == text
    # the edit itself (block and flow style, comments): tests/unit/test_spec_edit.py
