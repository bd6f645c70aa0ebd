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

import numpy as np

#: One scraped sample, as `DriftLayout.vector` reads them: (metric name, labels, value).
Sample = tuple[str, Mapping[str, str], float]
#: A series: its metric name and its labels, sorted.
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


def series_key(name: str, labels: Mapping[str, str]) -> SeriesKey:
    return name, tuple(sorted(labels.items()))


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One scrape: the reset-corrected running total of every series slot, at time `at`."""

    at: float
    totals: np.ndarray


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

    Every series gets a slot in flat arrays (raw value, running total, when last seen), so a
    snapshot is one array copy. Every sample is treated as a counter for its total; gauges are
    read from the raw values of the newest scrape. Slots of series unseen for two windows are
    dropped once they outnumber the live ones (and 16), so label churn cannot grow memory.
    """

    def __init__(self, window_s: float, max_snapshots: int = 1024) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        if max_snapshots < 2:
            raise ValueError(f"max_snapshots must be >= 2, got {max_snapshots}")
        self.window_s = window_s
        self._ring: collections.deque[Snapshot] = collections.deque(maxlen=max_snapshots)
        self._keys: list[SeriesKey] = []
        self._labels: list[Mapping[str, str]] = []
        self._index: dict[SeriesKey, int] = {}
        # (name, labels in the order scraped) -> slot: skips sorting labels on every scrape.
        self._alias: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        self._raw = np.zeros(0)    # last raw value of each slot (NaN: never a number)
        self._total = np.zeros(0)  # its running, reset-corrected total
        self._seen = np.zeros(0)   # when it was last scraped
        self._latest: dict[int, float] = {}  # slot -> raw value in the newest scrape

    def __len__(self) -> int:
        return len(self._ring)

    @property
    def series(self) -> int:
        """How many series slots are held (bounded: long-unseen ones are dropped)."""
        return len(self._keys)

    def add(self, at: float, samples: Iterable[Sample]) -> Snapshot:
        """Record one scrape taken at `at` (seconds, never earlier than the previous one)."""
        if self._ring and at < self._ring[-1].at:
            raise ValueError(f"snapshot at {at} is older than the newest one at "
                             f"{self._ring[-1].at}: add scrapes in time order")
        slots, values = [], []
        for name, labels, value in samples:
            slots.append(self._slot(name, labels))
            values.append(float(value))
        size = len(self._keys)
        self._grow(size)
        scraped = np.zeros(size)
        np.add.at(scraped, np.asarray(slots, dtype=np.intp), values)  # duplicates add up
        present = np.zeros(size, dtype=bool)
        present[slots] = True
        self._latest = {slot: float(scraped[slot]) for slot in set(slots)}
        update = present & np.isfinite(scraped)
        now, previous = scraped[update], self._raw[update]
        # A new series, or one that went down (Triton or the stub restarted): all it counted
        # is new to us; otherwise the increase since the previous scrape.
        fresh = np.isnan(previous) | (now < previous)
        self._total[update] += np.where(fresh, now, now - previous)
        self._raw[update] = now
        self._seen[present] = at
        self._ring.append(Snapshot(at=at, totals=self._total.copy()))
        # Keep one snapshot at or before the window's start, and everything after it.
        while len(self._ring) >= 2 and self._ring[1].at <= at - self.window_s:
            self._ring.popleft()
        self._drop_unseen(at - 2 * self.window_s)
        return self._ring[-1]

    def window(self) -> Window | None:
        """The newest snapshot minus the one `window_s` before it (or the oldest one kept, if
        the sidecar has run for less than a window); None until there are two snapshots."""
        if len(self._ring) < 2:
            return None
        newest, base = self._ring[-1], self._ring[0]
        before = np.zeros_like(newest.totals)
        before[:base.totals.size] = base.totals  # series born since then started at 0
        deltas = dict(zip(self._keys, (newest.totals - before).tolist(), strict=True))
        latest = {self._keys[slot]: value for slot, value in self._latest.items()}
        return Window(start=base.at, end=newest.at, deltas=deltas, latest=latest,
                      labels=dict(zip(self._keys, self._labels, strict=True)))

    def _slot(self, name: str, labels: Mapping[str, str]) -> int:
        alias = (name, tuple(labels.items()))
        slot = self._alias.get(alias)
        if slot is None:
            key = series_key(name, labels)
            slot = self._index.get(key)
            if slot is None:
                slot = self._index[key] = len(self._keys)
                self._keys.append(key)
                self._labels.append(dict(labels))
            self._alias[alias] = slot
        return slot

    def _grow(self, size: int) -> None:
        missing = size - self._raw.size
        if missing > 0:
            self._raw = np.append(self._raw, np.full(missing, np.nan))
            self._total = np.append(self._total, np.zeros(missing))
            self._seen = np.append(self._seen, np.zeros(missing))

    def _drop_unseen(self, cutoff: float) -> None:
        keep = self._seen >= cutoff
        dropped = keep.size - int(keep.sum())
        if dropped <= max(16, keep.size - dropped):
            return
        def kept(totals: np.ndarray) -> np.ndarray:
            padded = np.zeros(keep.size)
            padded[:totals.size] = totals
            return padded[keep]

        self._ring = collections.deque((Snapshot(s.at, kept(s.totals)) for s in self._ring),
                                       maxlen=self._ring.maxlen)
        self._raw, self._total, self._seen = self._raw[keep], self._total[keep], self._seen[keep]
        slots = np.flatnonzero(keep).tolist()
        self._keys = [self._keys[i] for i in slots]
        self._labels = [self._labels[i] for i in slots]
        self._index = {key: i for i, key in enumerate(self._keys)}
        self._alias = {}
        moved = {old: new for new, old in enumerate(slots)}
        self._latest = {moved[s]: v for s, v in self._latest.items() if s in moved}
