#!/usr/bin/env python3
"""Drift evaluation benchmark: how long one sidecar evaluation of every feature's verdict takes.

One evaluation judges the features (half numeric with 10 buckets, half categorical with 8
categories) and the prediction histogram, and takes the drifted share, on windows drawn with a
fixed seed. Prints the median and worst time per evaluation against the 20 ms budget::

    python bench/drift_eval.py --features 20 --repeats 200
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from tritonkit.monitor.drift_stats import (
    DriftThresholds,
    FeatureDrift,
    drifted_share,
    judge_categorical,
    judge_numeric,
    judge_prediction,
)

BUDGET_MS = 20.0
BINS = 10
REFERENCE_ROWS = 5000
WINDOW_ROWS = 1000


def evaluation(features: int, seed: int) -> Callable[[], list[FeatureDrift]]:
    """One sidecar evaluation over `features` features, its windows drawn up front."""
    rng = np.random.default_rng(seed)
    thresholds = DriftThresholds()
    fractions = [1.0 / BINS] * BINS
    categories = [f"c{i}" for i in range(8)]
    frequencies = dict(zip(categories, rng.dirichlet(np.full(8, 5.0)).tolist(), strict=True))
    numeric = [rng.multinomial(WINDOW_ROWS, fractions).astype(float).tolist()
               for _ in range(features // 2)]
    categorical = [dict(zip(categories, rng.multinomial(WINDOW_ROWS, list(frequencies.values()))
                            .astype(float).tolist(), strict=True))
                   for _ in range(features - features // 2)]
    prediction = rng.multinomial(WINDOW_ROWS, fractions).astype(float).tolist()

    def run() -> list[FeatureDrift]:
        verdicts = [judge_numeric(f"n{i}", fractions, REFERENCE_ROWS, counts, 0.0, 0.0, thresholds)
                    for i, counts in enumerate(numeric)]
        verdicts += [judge_categorical(f"c{i}", frequencies, REFERENCE_ROWS, counts, 0.0, 0.0,
                                       thresholds) for i, counts in enumerate(categorical)]
        verdicts.append(judge_prediction(fractions, REFERENCE_ROWS, prediction, 0.265, 0.27,
                                         thresholds))
        drifted_share(verdicts)
        return verdicts

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=20, help="features judged per evaluation")
    parser.add_argument("--repeats", type=int, default=200, help="timed evaluations")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated windows")
    args = parser.parse_args()

    run = evaluation(args.features, args.seed)
    for _ in range(10):  # warm-up: imports, scipy's first calls
        run()
    times_ms = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run()
        times_ms.append((time.perf_counter() - start) * 1e3)
    median, worst = statistics.median(times_ms), max(times_ms)
    print(f"{args.features} features x {BINS} bins + prediction: median {median:.2f} ms, "
          f"worst {worst:.2f} ms per evaluation (budget {BUDGET_MS:.0f} ms)")
    return 0 if median <= BUDGET_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
