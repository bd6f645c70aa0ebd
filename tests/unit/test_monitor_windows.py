"""Counter windows of the monitoring sidecar: differences of scrapes, counter resets (Triton or
one python stub restarted), series that come and go, and memory that stays flat."""

from __future__ import annotations

import numpy as np
import pytest

from tritonkit.drift.binning import FEATURE_BIN, ROWS, DriftLayout
from tritonkit.monitor.windows import CounterWindows

SUCCESS = "nv_inference_request_success"
CHURN = {"model": "churn", "version": "1"}


def _scrape(value: float, **labels: str) -> list[tuple[str, dict[str, str], float]]:
    return [(SUCCESS, {**CHURN, **labels}, value)]


def test_window_is_the_difference_of_two_snapshots_when_counters_only_grow() -> None:
    windows = CounterWindows(window_s=60)
    windows.add(0.0, _scrape(100))
    windows.add(60.0, _scrape(175))

    window = windows.window()

    assert window is not None
    assert window.total(SUCCESS, model="churn") == 75
    assert (window.start, window.end, window.span_s) == (0.0, 60.0, 60.0)


def test_window_is_none_when_only_one_snapshot_exists() -> None:
    windows = CounterWindows(window_s=60)
    windows.add(0.0, _scrape(100))

    assert windows.window() is None


def test_window_counts_the_current_value_when_a_counter_went_down() -> None:
    windows = CounterWindows(window_s=60)
    windows.add(0.0, _scrape(500))
    windows.add(60.0, _scrape(30))  # Triton restarted and counted 30 since

    window = windows.window()

    assert window is not None and window.total(SUCCESS) == 30


def test_window_keeps_the_increase_before_a_reset_when_the_reset_falls_inside_the_window(
) -> None:
    windows = CounterWindows(window_s=60)
    windows.add(0.0, _scrape(100))
    windows.add(30.0, _scrape(140))  # +40
    windows.add(60.0, _scrape(25))   # reset, then +25

    window = windows.window()

    assert window is not None and window.total(SUCCESS) == 65


def test_window_sums_instances_when_only_one_instance_restarted() -> None:
    windows = CounterWindows(window_s=60)
    first, second = {"model_instance": "step_0_0"}, {"model_instance": "step_0_1"}
    windows.add(0.0, _scrape(100, **first) + _scrape(200, **second))
    windows.add(60.0, _scrape(10, **first) + _scrape(260, **second))  # the first restarted

    window = windows.window()

    assert window is not None and window.total(SUCCESS, model="churn") == 10 + 60


def test_window_counts_a_new_series_whole_when_it_appears_after_the_base_snapshot() -> None:
    windows = CounterWindows(window_s=60)
    windows.add(0.0, _scrape(100))
    windows.add(60.0, _scrape(100) + _scrape(7, model_instance="step_0_2"))

    window = windows.window()

    assert window is not None and window.total(SUCCESS) == 7


def test_window_counts_only_what_came_back_when_a_series_vanished_and_returned() -> None:
    windows = CounterWindows(window_s=90)
    windows.add(0.0, _scrape(100))
    windows.add(30.0, [])            # the stub died: its series left /metrics
    windows.add(60.0, _scrape(4))    # reloaded: counting from 0 again

    window = windows.window()

    assert window is not None and window.total(SUCCESS) == 4


def test_window_starts_at_the_newest_snapshot_window_s_old_when_more_history_exists() -> None:
    windows = CounterWindows(window_s=60)
    for at, value in [(0.0, 0), (20.0, 10), (40.0, 30), (60.0, 60), (80.0, 100)]:
        windows.add(at, _scrape(value))

    window = windows.window()

    assert window is not None
    assert (window.start, window.end) == (20.0, 80.0)
    assert window.total(SUCCESS) == 90


def test_window_reads_gauges_from_the_newest_snapshot_when_asked_for_values() -> None:
    windows = CounterWindows(window_s=60)
    summary = "nv_inference_request_summary_us"
    windows.add(0.0, [(summary, {**CHURN, "quantile": "0.95"}, 900.0)])
    windows.add(60.0, [(summary, {**CHURN, "quantile": "0.95"}, 1500.0),
                       (summary, {**CHURN, "quantile": "0.99"}, float("nan"))])

    window = windows.window()

    assert window is not None
    assert window.values(summary, quantile="0.95") == [1500.0]
    assert window.values(summary, quantile="0.99") == []


def test_add_raises_when_a_snapshot_is_older_than_the_newest() -> None:
    windows = CounterWindows(window_s=60)
    windows.add(60.0, _scrape(1))

    with pytest.raises(ValueError, match="time order"):
        windows.add(30.0, _scrape(2))


def test_windows_keep_memory_flat_when_an_hour_of_scrapes_with_churning_series_is_added(
) -> None:
    windows = CounterWindows(window_s=300)
    held = []
    for second in range(3600):
        # one steady series, and one whose instance label changes every minute
        windows.add(float(second), _scrape(second, model_instance="steady")
                    + _scrape(1, model_instance=f"i{second // 60}"))
        held.append((len(windows), windows.series))

    window = windows.window()

    assert max(snapshots for snapshots, _ in held) <= 302  # what one window needs, no more
    assert max(series for _, series in held) <= 2 * (1 + 2 * 300 // 60 + 1) + 16
    assert window is not None and window.total(SUCCESS, model_instance="steady") == 300
    assert window.total(SUCCESS, model_instance="i59") == 1  # born inside the window
    assert window.total(SUCCESS, model_instance="i50") == 0  # born before it

def test_layout_vector_sums_instances_when_reading_window_samples() -> None:
    profile = {
        "numeric": {"tenure": {"edges": [10.0, 20.0], "fractions": [0.3, 0.3, 0.4],
                               "minimum": 0.0, "maximum": 72.0}},
        "categorical": {},
        "prediction": {"probability_edges": [0.5], "probability_fractions": [0.7, 0.3]},
    }
    layout = DriftLayout.from_profile(profile, "churn", "1")
    windows = CounterWindows(window_s=60)
    labels = {**CHURN, "feature": "tenure", "bin": "1"}
    windows.add(0.0, [(FEATURE_BIN, {**labels, "model_instance": "a"}, 5),
                      (FEATURE_BIN, {**labels, "model_instance": "b"}, 9),
                      (ROWS, {**CHURN, "model_instance": "a"}, 50)])
    windows.add(60.0, [(FEATURE_BIN, {**labels, "model_instance": "a"}, 8),
                       (FEATURE_BIN, {**labels, "model_instance": "b"}, 2),  # b restarted
                       (ROWS, {**CHURN, "model_instance": "a"}, 60)])

    window = windows.window()
    assert window is not None
    counts = layout.window(layout.vector(window.samples()))

    np.testing.assert_array_equal(counts.numeric["tenure"], [0, 3 + 2, 0])
    assert counts.rows == 10
