"""The drift series: Prometheus' bin rule, and a reader that adds up replicas and instances."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from tritonkit.drift.binning import FEATURE_BIN, ROWS, DriftCounter, DriftLayout, bin_index
from tritonkit.tabular.artifacts import TabularArtifacts


@pytest.fixture(scope="module")
def layout(artifacts: TabularArtifacts) -> DriftLayout:
    return DriftLayout.from_profile(json.loads(artifacts.profile.read_text()), "churn", "1")


def test_bin_index_puts_a_value_on_an_edge_in_the_lower_bin_like_prometheus_le() -> None:
    edges = [2.0, 6.0]
    assert list(bin_index(np.array([-1, 2, 2.0001, 6, 7]), edges)) == [0, 0, 1, 1, 2]


def test_layout_vector_sums_instances_and_replicas_when_series_repeat(
    layout: DriftLayout,
) -> None:
    base = {"model": "churn", "version": "1", "feature": "tenure", "bin": "3"}
    scraped: list[tuple[str, dict[str, Any], float]] = [
        (FEATURE_BIN, {**base, "model_instance": "churn_fused_0_0"}, 5.0),
        (FEATURE_BIN, {**base, "model_instance": "churn_fused_0_1", "instance": "b:8002"}, 7.0),
        (FEATURE_BIN, {**base, "version": "2"}, 100.0),  # another model version: not ours
        (FEATURE_BIN, {**base, "model": "other"}, 100.0),
        ("nv_inference_count", {"model": "churn", "version": "1"}, 100.0),
    ]
    vector = layout.vector(scraped)
    window = layout.window(vector)
    assert window.numeric["tenure"][3] == 12.0
    assert vector.sum() == 12.0


def test_counter_counts_unseen_apart_from_missing_when_categories_are_unknown(
    layout: DriftLayout,
) -> None:
    counter = DriftCounter(layout)
    categorical = len(layout.categorical)
    codes = np.zeros((categorical, 3), dtype=np.int64)
    codes[0] = [-1, -1, 1]  # first categorical feature: unseen, blank, second category
    blank = np.zeros_like(codes, dtype=bool)
    blank[0, 1] = True
    numbers = np.array([[1.0, 20.0, 20.0, 0.0], [np.nan, 20.0, 20.0, 0.0],
                        [500.0, 20.0, 20.0, 0.0]])
    counter.count_features(numbers, codes, blank)
    vector = np.zeros(len(layout))
    for index, count in counter.take():
        vector[index] = count
    window = layout.window(vector)
    first = layout.categorical[0].name
    assert (window.unseen[first], window.missing[first]) == (1, 1)
    assert window.categorical[first][layout.categorical[0].categories[1]] == 1
    tenure = layout.numeric[0].name
    assert window.missing[tenure] == 1 and window.out_of_range[tenure] == 1  # NaN; 500 > 72
    assert window.numeric[tenure].sum() == 2
    assert vector[layout.rows] == 3 and layout.series[layout.rows][0] == ROWS
    assert counter.take() == []  # take() resets
