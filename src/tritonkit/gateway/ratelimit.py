"""Rate limits per API key and for the whole gateway (`limits`, async, sliding window counter).

With `memory://` the counters live in this process: each gateway replica enforces the limits on
its own, so N replicas let N times the rate through. There the gateway counts with
`ProcessWindows`, the arithmetic of `limits`' sliding-window counter without its async storage
layer (two hits cost 21 µs through `limits`, about 2 µs here: a sixth of the gateway's CPU per
call under load). With `async+redis://host:6379` (needs the
`gateway-redis` extra) every replica shares them. If the store cannot be reached the gateway
serves anyway (fail open, counted in `gateway_ratelimit_store_errors_total`) unless told to fail
closed (503)::

    limits = RateLimits(per_key="200/second", overall="5000/second", storage="memory://")
    verdict = await limits.check("billing")      # None, or ("key", retry_after_s)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from tritonkit.gateway.auth import send_error

logger = logging.getLogger(__name__)


class RateLimitStoreError(Exception):
    """The shared store of the counters cannot be reached and the limits fail closed."""


def _async_uri(uri: str) -> str:
    """`limits` wants async storages spelt async+…; accept memory:// and redis:// too."""
    return uri if uri.startswith("async+") else f"async+{uri}"


class ProcessWindows:
    """Sliding-window counters in this process, computed as `limits` computes them for its
    `memory://` storage: windows aligned on multiples of the limit's period since the epoch, the
    previous window's count weighted by the part of it still inside the sliding window. One
    event loop uses it, so no lock; `clock` is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        #: key -> [index of the current window, its count, the previous window's count]
        self._windows: dict[str, list[int]] = {}

    def _counts(self, item: RateLimitItem, key: str, now: float) -> tuple[int, float, int]:
        """(previous count, seconds the previous window still weighs, current count)."""
        expiry = item.get_expiry()
        index = int(now // expiry)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = [index, 0, 0]
        elif window[0] != index:
            window[2] = window[1] if window[0] == index - 1 else 0
            window[1] = 0
            window[0] = index
        previous = window[2]
        previous_ttl = (1 - (((now - expiry) / expiry) % 1)) * expiry if previous else 0.0
        return previous, previous_ttl, window[1]

    def hit(self, item: RateLimitItem, key: str) -> bool:
        """Count one request against `item` for `key` if it fits; False if it does not."""
        now = self._clock()
        previous, previous_ttl, current = self._counts(item, key, now)
        if math.floor(previous * previous_ttl / item.get_expiry() + current) + 1 > item.amount:
            return False
        self._windows[key][1] = current + 1
        return True

    def retry_after_s(self, item: RateLimitItem, key: str) -> float:
        """Seconds until the next request for `key` may fit (`limits`' window reset time)."""
        now = self._clock()
        previous, previous_ttl, current = self._counts(item, key, now)
        expiry = item.get_expiry()
        waits = [math.inf]
        if previous:
            waits.append(previous_ttl % (expiry / previous))
        if current:
            waits.append(((1 - ((now / expiry) % 1)) * expiry + expiry) % expiry)
        return 0.0 if not (previous or current) else min(waits)


class RateLimits:
    """A per-key and a global limit; `check` costs two counter updates."""

    def __init__(self, *, per_key: str, overall: str, storage: str = "memory://",
                 fail_open: bool = True) -> None:
        self.per_key = parse(per_key)
        self.overall = parse(overall)
        self.storage_uri = storage
        self.fail_open = fail_open
        self._local = ProcessWindows() if storage in ("memory://", "async+memory://") else None
        self._limiter = (None if self._local is not None else
                         SlidingWindowCounterRateLimiter(storage_from_string(_async_uri(storage))))

    async def check(self, key_name: str) -> tuple[str, float] | None:
        """Count one request of `key_name`: None if it may go, else (scope, retry-after seconds)
        with scope "key" or "global".

        Raises:
            RateLimitStoreError: the store failed and the limits fail closed.
        """
        local = self._local
        if local is not None:
            key = "key/" + key_name
            if not local.hit(self.per_key, key):
                return "key", local.retry_after_s(self.per_key, key)
            if not local.hit(self.overall, "global"):
                return "global", local.retry_after_s(self.overall, "global")
            return None
        assert self._limiter is not None
        try:
            if not await self._limiter.hit(self.per_key, "key", key_name):
                return "key", await self._retry_after(self.per_key, "key", key_name)
            if not await self._limiter.hit(self.overall, "global"):
                return "global", await self._retry_after(self.overall, "global")
        except Exception as exc:
            if not self.fail_open:
                raise RateLimitStoreError(f"rate-limit store {self.storage_uri}: {exc}") from exc
            logger.warning("rate-limit store %s failed (serving anyway): %s",
                           self.storage_uri, exc)
            raise _FailedOpen from exc
        return None

    async def _retry_after(self, item: Any, *identifiers: str) -> float:
        assert self._limiter is not None
        stats = await self._limiter.get_window_stats(item, *identifiers)
        return max(0.0, stats.reset_time - time.time())


class _FailedOpen(Exception):
    """The store failed and the request goes on (counted by the middleware)."""


class RateLimitMiddleware:
    """Pure ASGI, inside ApiKeyMiddleware: 429 with Retry-After for a caller over its rate."""

    def __init__(self, app: Any, *, limits: RateLimits,
                 on_reject: Callable[[str], None] = lambda scope: None,
                 on_store_error: Callable[[], None] = lambda: None) -> None:
        self.app = app
        self.limits = limits
        self.on_reject = on_reject
        self.on_store_error = on_store_error

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        owner = scope.get("state", {}).get("api_key") if scope["type"] == "http" else None
        if owner is None or not scope["path"].startswith("/predict"):
            await self.app(scope, receive, send)
            return
        try:
            verdict = await self.limits.check(owner.name)
        except _FailedOpen:
            self.on_store_error()
            verdict = None
        except RateLimitStoreError as exc:
            self.on_store_error()
            await send_error(send, 503, "unavailable", f"rate limits cannot be checked: {exc}",
                             headers=[(b"retry-after", b"1")])
            return
        if verdict is not None:
            scope_name, retry_after_s = verdict
            self.on_reject(scope_name)
            which = "this API key's" if scope_name == "key" else "the gateway's overall"
            limit = self.limits.per_key if scope_name == "key" else self.limits.overall
            await send_error(
                send, 429, "rate_limited",
                f"{which} rate limit of {limit} is exceeded: retry after the Retry-After header's "
                "seconds",
                headers=[(b"retry-after", str(max(1, math.ceil(retry_after_s))).encode())],
            )
            return
        await self.app(scope, receive, send)
