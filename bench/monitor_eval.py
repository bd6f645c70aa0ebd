"""How long the monitoring sidecar takes to judge one window, and whether its memory stays flat.

A synthetic model of 20 features of 10 bins each (10 numeric with 9 decile edges, 10 categorical
with 8 categories plus unseen and missing) is served by two instances whose drift counters grow
by ~1,000 rows a second; 3,600 evaluations (an hour at one per second, a 300 s window) run
against it through the sidecar's own code path (`MonitorService.evaluate_once`: windows, drift
verdicts, serving numbers, gauges, the shipped alert rules), with the scrape replaced by the
synthetic counters. Prints the evaluation time per window (goal: <= 20 ms) and the process's
RSS before and after::

    .venv/bin/python bench/monitor_eval.py [--evaluations 3600] [--window-s 300]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tritonkit.drift.binning import DriftLayout
from tritonkit.monitor.service import MonitorService
from tritonkit.monitor.settings import MonitorSettings
from tritonkit.monitor.windows import Sample
from tritonkit.tabular.artifacts import TabularArtifacts

MODEL, VERSION, STEP = "bench", "1", "bench_fused"
INSTANCES = ("bench_fused_0_0", "bench_fused_0_1")


def synthetic_profile(numeric: int = 10, categorical: int = 10, categories: int = 8
                      ) -> dict[str, Any]:
    edges = [float(e) for e in range(10, 100, 10)]  # 9 edges: 10 bins
    return {
        "rows": 5000,
        "numeric": {f"num_{i}": {"edges": edges, "fractions": [0.1] * 10, "minimum": 0.0,
                                 "maximum": 100.0, "missing_fraction": 0.0}
                    for i in range(numeric)},
        "categorical": {f"cat_{i}": {"frequencies": {f"c{j}": 1 / categories
                                                     for j in range(categories)},
                                     "unseen_fraction": 0.0, "missing_fraction": 0.0}
                        for i in range(categorical)},
        "prediction": {"probability_edges": [round(0.1 * i, 1) for i in range(1, 10)],
                       "probability_fractions": [0.1] * 10, "high_risk_fraction": 0.1},
    }


class SyntheticTriton:
    """Counters of two instances that grow like a served model's; a MetricSource."""

    name = "synthetic"
    url = "synthetic://"

    def __init__(self, layout: DriftLayout, rows_per_scrape: int, seed: int = 0) -> None:
        self.layout = layout
        self.rows = rows_per_scrape
        self.random = np.random.default_rng(seed)
        self.counts = {instance: np.zeros(len(layout)) for instance in INSTANCES}
        self.requests = 0.0

    def scrape(self) -> list[Sample]:
        layout = self.layout
        for counts in self.counts.values():
            half = self.rows // 2
            for bins in layout.numeric:
                counts[bins.first:bins.first + 10] += self.random.multinomial(half, [0.1] * 10)
            for cat in layout.categorical:
                counts[cat.first:cat.first + 8] += self.random.multinomial(half, [1 / 8] * 8)
            first = layout.prediction_first
            counts[first:first + 10] += self.random.multinomial(half, [0.1] * 10)
            counts[layout.risk_first + 2] += half // 10
            counts[layout.risk_first] += half - half // 10
            counts[layout.rows] += half
        self.requests += self.rows / 50
        samples: list[Sample] = [
            (name, {**labels, "model_instance": instance}, float(counts[i]))
            for instance, counts in self.counts.items()
            for i, (name, labels) in enumerate(layout.series)]
        base = {"version": VERSION}
        samples += [
            ("nv_inference_request_success", {**base, "model": MODEL}, self.requests),
            ("nv_inference_request_failure", {**base, "model": MODEL, "reason": "OTHER"}, 0.0),
            ("nv_inference_queue_duration_us", {**base, "model": STEP}, self.requests * 20),
            ("nv_inference_request_duration_us", {**base, "model": STEP}, self.requests * 900),
            *[("nv_inference_request_summary_us", {**base, "model": MODEL, "quantile": q},
               1200.0) for q in ("0.5", "0.9", "0.95", "0.99")],
        ]
        return samples

    def close(self) -> None:
        pass


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evaluations", type=int, default=3600)
    parser.add_argument("--interval-s", type=float, default=1.0,
                        help="simulated seconds between evaluations")
    parser.add_argument("--window-s", type=float, default=300.0)
    parser.add_argument("--rows-per-scrape", type=int, default=1000)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="monitor-eval-"))
    profile = synthetic_profile()
    (folder / "reference_profile.json").write_text(json.dumps(profile))
    # The sidecar's health probes send these customers; the benchmark never runs them.
    shutil.copy(TabularArtifacts.for_version(1).require().test_rows, folder / "test.csv")
    service = MonitorService(MonitorSettings(
        model=MODEL, version=VERSION, profile_path=folder / "reference_profile.json", port=0,
        window_s=args.window_s))
    source = SyntheticTriton(service.judge.layout, args.rows_per_scrape)
    service.source = source
    service.health._steps = (STEP,)  # what Triton's ensemble config would say

    layout = service.judge.layout
    print(f"{len(layout.numeric) + len(layout.categorical)} features, {len(layout)} series per "
          f"instance, {len(INSTANCES)} instances, window {args.window_s:g} s, one evaluation "
          f"every {args.interval_s:g} s")
    now = time.time()
    service.evaluate_once(now)
    rss_start = rss_mib()
    seconds = []
    started = time.perf_counter()
    for i in range(1, args.evaluations + 1):
        evaluation = service.evaluate_once(now + i * args.interval_s)
        seconds.append(evaluation.seconds)
        if i in (1, args.evaluations // 4, args.evaluations // 2, args.evaluations):
            print(f"  after {i:>5} evaluations: RSS {rss_mib():6.1f} MiB, "
                  f"{len(service.windows)} snapshots, {service.windows.series} series")
    wall = time.perf_counter() - started
    signals = service.latest_signals
    assert signals is not None and signals.judged, "the windows were too small to judge"
    ms = sorted(s * 1e3 for s in seconds)
    print(f"evaluation per window (drift verdicts, serving numbers, gauges, alerts; scrape "
          f"excluded): median {statistics.median(ms):.2f} ms, p95 {ms[int(0.95 * len(ms))]:.2f}"
          f" ms, max {ms[-1]:.2f} ms (goal <= 20 ms); {signals.rows:.0f} rows per window")
    print(f"RSS start {rss_start:.1f} MiB, end {rss_mib():.1f} MiB after {args.evaluations} "
          f"evaluations ({wall:.1f} s of wall time, synthetic scrapes included)")
    service.stop()
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
