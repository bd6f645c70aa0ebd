"""Windows of counters: what every series counted between the newest scrape and one `window_s`
earlier, with restarts of Triton (or of one python stub) taken into account.

A snapshot keeps, per series, a running total that survives counter resets the way Prometheus'
`increase()` does: a counter that went down was reset, so its whole current value is new. A
window is the difference of two snapshots' totals. Memory stays flat: the ring keeps only the
snapshots a window still needs (and never more than `max_snapshots`), and series not seen for
two windows are forgotten::

    windows = CounterWindows(window_s=300)
    windows.add(time.time(), source.scrape())     # every evaluation
    window = windows.window()                     # None until two snapshots exist
    window.total("nv_inference_request_success", model="churn"), window.span_s
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Iterable, Iterator, Mapping

#: One scraped sample, as `DriftLayout.vector` reads them: (metric name, labels, value).
Sample = tuple[str, Mapping[str, str], float]
#: A series: its metric name and its labels, sorted.
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


def series_key(name: str, labels: Mapping[str, str]) -> SeriesKey:
    return name, tuple(sorted(labels.items()))


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One scrape: reset-corrected running totals, and the raw values (for gauges)."""

    at: float
    totals: Mapping[SeriesKey, float]
    values: Mapping[SeriesKey, float]


@dataclasses.dataclass(frozen=True)
class Window:
    """Increases of every series between `start` and `end`, and the newest raw values."""

    start: float
    end: float
    deltas: Mapping[SeriesKey, float]
    latest: Mapping[SeriesKey, float]
    labels: Mapping[SeriesKey, Mapping[str, str]]

    @property
    def span_s(self) -> float:
        return self.end - self.start

    def samples(self) -> Iterator[Sample]:
        """The increases as samples, for `DriftLayout.vector` (which sums over instances)."""
        for key, delta in self.deltas.items():
            yield key[0], self.labels[key], delta

    def total(self, name: str, **labels: str) -> float:
        """Sum of the increases of metric `name` over the series that carry `labels`."""
        return sum(delta for key, delta in self.deltas.items()
                   if key[0] == name and _matches(self.labels[key], labels))

    def values(self, name: str, **labels: str) -> list[float]:
        """The newest raw values of metric `name` in the series carrying `labels` (gauges,
        summary quantiles); NaN values are left out."""
        return [value for key, value in self.latest.items()
                if key[0] == name and _matches(self.labels[key], labels)
                and not math.isnan(value)]


def _matches(found: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(found.get(k) == v for k, v in wanted.items())


class CounterWindows:
    """A bounded ring of snapshots, and windows of `window_s` over them.

    Every sample is treated as a counter for its total (gauges are read from the raw values of
    the newest snapshot, their totals are never used).
    """

    def __init__(self, window_s: float, max_snapshots: int = 1024) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        if max_snapshots < 2:
            raise ValueError(f"max_snapshots must be >= 2, got {max_snapshots}")
        self.window_s = window_s
        self._ring: collections.deque[Snapshot] = collections.deque(maxlen=max_snapshots)
        self._raw: dict[SeriesKey, float] = {}      # last raw value of each series
        self._total: dict[SeriesKey, float] = {}    # its running, reset-corrected total
        self._seen: dict[SeriesKey, float] = {}     # when it was last scraped
        self._labels: dict[SeriesKey, Mapping[str, str]] = {}

    def __len__(self) -> int:
        return len(self._ring)

    @property
    def series(self) -> int:
        """How many series are remembered (bounded: unseen ones are forgotten)."""
        return len(self._total)

    def add(self, at: float, samples: Iterable[Sample]) -> Snapshot:
        """Record one scrape taken at `at` (seconds, never earlier than the previous one)."""
        if self._ring and at < self._ring[-1].at:
            raise ValueError(f"snapshot at {at} is older than the newest one at "
                             f"{self._ring[-1].at}: add scrapes in time order")
        values: dict[SeriesKey, float] = {}
        for name, labels, value in samples:
            key = series_key(name, labels)
            if key not in self._labels:
                self._labels[key] = dict(labels)
            values[key] = values.get(key, 0.0) + float(value)
        for key, value in values.items():
            previous = self._raw.get(key)
            if math.isnan(value):
                continue
            if previous is None:
                increase = value  # a new series: everything it counted is new to us
            elif value < previous:
                increase = value  # a reset (Triton or the stub restarted): counted from 0
            else:
                increase = value - previous
            self._raw[key] = value
            self._total[key] = self._total.get(key, 0.0) + increase
            self._seen[key] = at
        self._forget_older_than(at - 2 * self.window_s)
        snapshot = Snapshot(at=at, totals=dict(self._total), values=values)
        self._ring.append(snapshot)
        # Keep one snapshot at or before the window's start, and everything after it.
        while len(self._ring) >= 2 and self._ring[1].at <= at - self.window_s:
            self._ring.popleft()
        return snapshot

    def window(self) -> Window | None:
        """The newest snapshot minus the one `window_s` before it (or the oldest one kept, if
        the sidecar has run for less than a window); None until there are two snapshots."""
        if len(self._ring) < 2:
            return None
        newest, base = self._ring[-1], self._ring[0]
        deltas = {key: total - base.totals.get(key, 0.0)
                  for key, total in newest.totals.items()}
        labels = {key: self._labels[key] for key in newest.values.keys() | deltas.keys()}
        return Window(start=base.at, end=newest.at, deltas=deltas, latest=newest.values,
                      labels=labels)

    def _forget_older_than(self, cutoff: float) -> None:
        stale = [key for key, seen in self._seen.items() if seen < cutoff]
        for key in stale:
            for table in (self._raw, self._total, self._seen, self._labels):
                table.pop(key, None)
