"""Coalescing of concurrent `/predict` calls into one Triton request.

Per-request overhead, not the model, sets Triton's cost here (eight customers in one request
gave ~6x the customers per second of one at a time), so the gateway sends Triton fewer, larger
requests. The rule ("natural batching"): a call goes out at once while fewer than
`max_in_flight` Triton requests are running, so a lone caller never waits; while they run,
arriving calls queue and leave together, at most `max_rows` customers per request, as soon as a
request finishes or the oldest has waited `max_wait_s`. Each caller gets its own answer or its
own error; a request that Triton refuses as bad is retried per caller, so one bad customer
cannot fail the others.

The customers it holds (queued, or in Triton requests not yet answered) are bounded by
`max_pending_rows`: beyond it a caller is refused at once (`QueueFull`, which the gateway
answers 503 with Retry-After) and those already held go on. The queue alone would not do:
a caller leaves it after `max_wait_s` whatever is in flight, so while Triton hangs the callers
pile up in flight, each until its deadline::

    coalescer = Coalescer(upstream.infer, max_rows=64, max_wait_s=0.002, max_in_flight=2,
                          max_pending_rows=512)
    probability, risk, version = (await coalescer.submit([row]))[0]
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from tritonkit.gateway.errors import QueueFull, UpstreamError
from tritonkit.gateway.wire import Answer

__all__ = ["Coalescer", "QueueFull"]

logger = logging.getLogger(__name__)

Rows = Sequence[Mapping[str, Any]]
Infer = Callable[[Rows], Awaitable[list[Answer]]]


@dataclasses.dataclass
class _Waiting:
    rows: Rows
    future: asyncio.Future[list[Answer]]
    since: float


class Coalescer:
    """Merges the rows of concurrent callers into Triton requests of at most `max_rows`."""

    def __init__(self, infer: Infer, *, max_rows: int, max_wait_s: float, max_in_flight: int,
                 max_pending_rows: int, on_batch: Callable[[int], None] | None = None) -> None:
        if min(max_rows, max_in_flight, max_pending_rows) < 1 or max_wait_s < 0:
            raise ValueError("max_rows, max_in_flight and max_pending_rows must be >= 1, "
                             "max_wait_s >= 0")
        self._infer = infer
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.max_in_flight = max_in_flight
        self.max_pending_rows = max_pending_rows
        self._on_batch = on_batch
        self._queue: collections.deque[_Waiting] = collections.deque()
        self._in_flight = 0
        #: customers of the callers not yet answered (queued or in flight)
        self.pending_rows = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, rows: Rows) -> list[Answer]:
        """Answers for `rows` (one per row, in order), from a Triton request shared with others.

        Raises:
            UpstreamError: this caller's failure (a copy per caller when a request failed).
            QueueFull: `max_pending_rows` customers are held already; nothing was queued.
        """
        count = len(rows)
        if not 0 < count <= self.max_rows:
            raise ValueError(f"a caller sends 1 to {self.max_rows} rows, not {count}")
        if self.pending_rows + count > self.max_pending_rows:
            raise QueueFull(self.pending_rows, self.max_pending_rows)
        self.pending_rows += count
        try:
            if not self._queue and self._in_flight < self.max_in_flight:
                # Nobody waits and a slot is free: this caller's request goes out at once from
                # its own task (no task, future and wake-up of its own: the lone caller's
                # latency).
                self._in_flight += 1
                try:
                    if self._on_batch is not None:
                        self._on_batch(count)
                    return await self._infer(rows)
                finally:
                    self._in_flight -= 1
                    self._dispatch()
            loop = asyncio.get_running_loop()
            waiting = _Waiting(rows, loop.create_future(), time.monotonic())
            self._queue.append(waiting)
            self._dispatch()
            return await waiting.future
        finally:
            self.pending_rows -= count

    async def drain(self) -> None:
        """Wait for every Triton request already sent (at shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _dispatch(self) -> None:
        """Send what may go now; set a timer for the oldest caller that must wait."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = time.monotonic()
        while self._queue and (self._in_flight < self.max_in_flight
                               or now - self._queue[0].since >= self.max_wait_s):
            batch: list[_Waiting] = []
            size = 0
            while self._queue and size + len(self._queue[0].rows) <= self.max_rows:
                waiting = self._queue.popleft()
                if waiting.future.done():  # its caller went away
                    continue
                batch.append(waiting)
                size += len(waiting.rows)
            if not batch:
                continue
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._queue:
            delay = max(0.0, self._queue[0].since + self.max_wait_s - now)
            self._timer = asyncio.get_running_loop().call_later(delay, self._dispatch)

    async def _send(self, batch: list[_Waiting]) -> None:
        try:
            if self._on_batch is not None:
                self._on_batch(sum(len(w.rows) for w in batch))
            rows = [row for waiting in batch for row in waiting.rows]
            try:
                answers = await self._infer(rows)
            except UpstreamError as exc:
                if exc.kind == "bad_request" and len(batch) > 1:
                    # Someone's rows were refused: ask again per caller, so each gets its own
                    # answer or its own 400.
                    await asyncio.gather(*(self._send_alone(w) for w in batch))
                else:
                    for waiting in batch:
                        _fail(waiting, exc.copy())
                return
            except Exception as exc:  # a bug: every caller hears of it, the loop goes on
                logger.exception("coalesced Triton request failed unexpectedly")
                for waiting in batch:
                    _fail(waiting, exc)
                return
            start = 0
            for waiting in batch:
                stop = start + len(waiting.rows)
                if not waiting.future.done():
                    waiting.future.set_result(answers[start:stop])
                start = stop
        finally:
            self._in_flight -= 1
            self._dispatch()

    async def _send_alone(self, waiting: _Waiting) -> None:
        try:
            answers = await self._infer(waiting.rows)
        except Exception as exc:
            _fail(waiting, exc)
        else:
            if not waiting.future.done():
                waiting.future.set_result(answers)


def _fail(waiting: _Waiting, exc: BaseException) -> None:
    if not waiting.future.done():
        waiting.future.set_exception(exc)
