"""Rate limits per API key and for the whole gateway, counted in customers (`limits`, async,
sliding window counter), and per client address for requests without a valid key.

A `/predict` call pays one hit of its key's limit and of the global limit when it arrives,
before its body is read (so malformed and oversized bodies count too); a batch of n customers
pays the other n - 1 once its body is parsed: n in all. A batch larger than a limit allows at
all is refused (429, no Retry-After: waiting will not help). A request the global limit refuses
costs its key nothing: the key's hits are given back (`memory://`), or the global limit is
tested before the key is charged (a shared store, where `limits` has no refund: there a batch
the global limit refuses once parsed still costs its key the one hit of its arrival).

Requests without a valid key (401s, and the routes open without one: /healthz, /readyz,
/metrics, /docs) count against `unauthenticated` per client address, always in this process
(a flood guard needs no shared store, and a round trip to one before every authentication would
cost every caller). An address over it gets 429 before its key is even hashed: a flood of bad
keys costs the limit check alone, and a valid key sent from that address waits with it.

With `memory://` the counters live in this process: each gateway replica enforces the limits on
its own, so N replicas let N times the rate through. There the gateway counts with
`ProcessWindows`, the arithmetic of `limits`' sliding-window counter without its async storage
layer (two hits cost 21 µs through `limits`, about 2 µs here: a sixth of the gateway's CPU per
call under load). With `async+redis://host:6379` (needs the `gateway-redis` extra) every replica
shares them. If the store cannot be reached the gateway serves anyway (fail open, counted in
`gateway_ratelimit_store_errors_total`) unless told to fail closed (503)::

    limits = RateLimits(per_key="500/second", overall="5000/second", storage="memory://")
    refusal = await limits.admit("billing", cost=1)   # None, or the error to answer with
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, TypeAlias

from limits import RateLimitItem, parse
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from tritonkit.gateway.errors import RateLimited, Unavailable, send_problem

logger = logging.getLogger(__name__)
#: Above this many client addresses, those idle for a whole window are forgotten (then again at
#: twice the number left): a flood from many addresses cannot grow the table without bound.
_SWEEP_ADDRESSES_AT = 10_000


#: What the limits refuse a request with: 429 (RateLimited), or 503 when a store that fails
#: closed is down (Unavailable), each with Retry-After unless waiting cannot help.
Refusal: TypeAlias = RateLimited | Unavailable


def _async_uri(uri: str) -> str:
    """`limits` wants async storages spelt async+…; accept memory:// and redis:// too."""
    return uri if uri.startswith("async+") else f"async+{uri}"


def _seconds(retry_after_s: float) -> int:
    return max(1, math.ceil(retry_after_s))


class ProcessWindows:
    """Sliding-window counters in this process, computed as `limits` computes them for its
    `memory://` storage: windows aligned on multiples of the limit's period since the epoch, the
    previous window's count weighted by the part of it still inside the sliding window. One
    event loop uses it, so no lock; `clock` is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        #: key -> [index of the current window, its count, the previous window's count]
        self._windows: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self._windows)

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

    def _fits(self, item: RateLimitItem, key: str, cost: int) -> tuple[bool, int]:
        """(whether `cost` more hits fit now, the current window's count)."""
        previous, previous_ttl, current = self._counts(item, key, self._clock())
        weighted = math.floor(previous * previous_ttl / item.get_expiry() + current)
        return cost <= item.amount and weighted + cost <= item.amount, current

    def hit(self, item: RateLimitItem, key: str, cost: int = 1) -> bool:
        """Count `cost` hits against `item` for `key` if they fit; False (nothing counted) if
        they do not (`limits`' `hit(item, key, cost=cost)`)."""
        fits, current = self._fits(item, key, cost)
        if fits:
            self._windows[key][1] = current + cost
        return fits

    def test(self, item: RateLimitItem, key: str, cost: int = 1) -> bool:
        """Whether `hit` would count `cost` now, counting nothing (`limits`' `test`)."""
        if key not in self._windows:  # the usual case for an address: never seen
            return cost <= item.amount
        return self._fits(item, key, cost)[0]

    def refund(self, item: RateLimitItem, key: str, cost: int) -> None:
        """Give back `cost` hits counted for `key`: from the current window, then from the
        previous one if the hits were counted before the window turned."""
        self._counts(item, key, self._clock())
        window = self._windows[key]
        taken = min(window[1], cost)
        window[1] -= taken
        window[2] = max(0, window[2] - (cost - taken))

    def forget_idle(self, item: RateLimitItem) -> None:
        """Drop the keys without a hit in `item`'s current or previous window (they weigh
        nothing any more); for a table holding that one item only."""
        oldest = int(self._clock() // item.get_expiry()) - 1
        self._windows = {key: w for key, w in self._windows.items() if w[0] >= oldest}

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
    """A per-key and a global limit in customers, and a per-address limit for requests without
    a valid key; `on_reject(scope)` hears of each refusal (scope: key, global or
    unauthenticated), `on_store_error()` of each failed check of a shared store; `clock`
    drives the counters in this process (tests)."""

    def __init__(self, *, per_key: str, overall: str, unauthenticated: str = "20/second",
                 storage: str = "memory://", fail_open: bool = True,
                 on_reject: Callable[[str], None] = lambda scope: None,
                 on_store_error: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.time) -> None:
        self.per_key = parse(per_key)
        self.overall = parse(overall)
        self.unauthenticated = parse(unauthenticated)
        self.storage_uri = storage
        self.fail_open = fail_open
        self.on_reject = on_reject
        self.on_store_error = on_store_error
        local = storage in ("memory://", "async+memory://")
        self._local = ProcessWindows(clock) if local else None
        self._limiter = (None if self._local is not None else
                         SlidingWindowCounterRateLimiter(storage_from_string(_async_uri(storage))))
        self._largest_cost = min(self.per_key.amount, self.overall.amount)
        self._addresses = ProcessWindows(clock)
        self._sweep_at = _SWEEP_ADDRESSES_AT

    # -- callers with a key ------------------------------------------------------------------
    async def admit(self, key_name: str, cost: int = 1, *, paid: int = 0) -> Refusal | None:
        """Charge `cost` customers of `key_name` to its limit and to the global one: None if
        both take them, else the refusal to answer with. `paid`: what this request already paid
        on arrival (the first customer of a batch), given back to the key if the global limit
        refuses the rest."""
        if cost + paid > self._largest_cost:
            return self._never_fits(cost + paid)
        if self._local is not None:
            verdict = self._charge_local(key_name, cost, paid)
        else:
            try:
                verdict = await self._charge_shared(key_name, cost)
            except Exception as exc:
                self.on_store_error()
                if not self.fail_open:
                    return Unavailable("rate limits cannot be checked: rate-limit store "
                                       f"{self.storage_uri}: {exc}", retry_after_s=1)
                logger.warning("rate-limit store %s failed (serving anyway): %s",
                               self.storage_uri, exc)
                return None
        if verdict is None:
            return None
        scope, retry_after_s = verdict
        self.on_reject(scope)
        limit = self.per_key if scope == "key" else self.overall
        return RateLimited(f"{_which(scope)} rate limit of {limit} is exceeded: retry after the "
                           "Retry-After header's seconds", retry_after_s=_seconds(retry_after_s))

    def _never_fits(self, total: int) -> RateLimited:
        scope, item = (("key", self.per_key) if total > self.per_key.amount
                       else ("global", self.overall))
        self.on_reject(scope)
        return RateLimited(
            f"a request of {total} customers costs {total} hits of {_which(scope)} rate limit "
            f"of {item}, more than it allows at all: send at most {self._largest_cost} "
            "customers per request")

    def _charge_local(self, key_name: str, cost: int, paid: int) -> tuple[str, float] | None:
        local = self._local
        assert local is not None
        key = "key/" + key_name
        if not local.hit(self.per_key, key, cost):
            return "key", local.retry_after_s(self.per_key, key)
        if not local.hit(self.overall, "global", cost):
            local.refund(self.per_key, key, cost + paid)
            return "global", local.retry_after_s(self.overall, "global")
        return None

    async def _charge_shared(self, key_name: str, cost: int) -> tuple[str, float] | None:
        limiter = self._limiter
        assert limiter is not None
        # The global limit first, counting nothing: a request it refuses costs the key nothing.
        if not await limiter.test(self.overall, "global", cost=cost):
            return "global", await self._retry_after(self.overall, "global")
        if not await limiter.hit(self.per_key, "key", key_name, cost=cost):
            return "key", await self._retry_after(self.per_key, "key", key_name)
        if not await limiter.hit(self.overall, "global", cost=cost):  # another replica won
            return "global", await self._retry_after(self.overall, "global")
        return None

    async def _retry_after(self, item: Any, *identifiers: str) -> float:
        assert self._limiter is not None
        stats = await self._limiter.get_window_stats(item, *identifiers)
        return max(0.0, stats.reset_time - time.time())

    # -- callers without one -----------------------------------------------------------------
    def refuse_address(self, address: str) -> RateLimited | None:
        """The 429 for `address` if its requests without a valid key have used up their limit
        (counts nothing: what the key middleware asks before it hashes a key)."""
        if self._addresses.test(self.unauthenticated, address):
            return None
        return self._address_refusal(address)

    def charge_address(self, address: str) -> RateLimited | None:
        """Count one request without a valid key from `address`: None if it fits, else its
        429."""
        if len(self._addresses) > self._sweep_at:
            self._addresses.forget_idle(self.unauthenticated)
            self._sweep_at = max(_SWEEP_ADDRESSES_AT, 2 * len(self._addresses))
        if self._addresses.hit(self.unauthenticated, address):
            return None
        return self._address_refusal(address)

    def _address_refusal(self, address: str) -> RateLimited:
        self.on_reject("unauthenticated")
        wait = self._addresses.retry_after_s(self.unauthenticated, address)
        return RateLimited(
            f"too many requests without a valid API key from this address (limit "
            f"{self.unauthenticated}): retry after the Retry-After header's seconds",
            retry_after_s=_seconds(wait))


def _which(scope: str) -> str:
    return "this API key's" if scope == "key" else "the gateway's overall"


class RateLimitMiddleware:
    """Pure ASGI, inside ApiKeyMiddleware: a `/predict` call pays its first customer here,
    before its body is read (429 with Retry-After for a caller over its rate); a batch pays its
    other customers once parsed (`predict.predict_batch_reply`)."""

    def __init__(self, app: Any, *, limits: RateLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        owner = scope.get("state", {}).get("api_key") if scope["type"] == "http" else None
        if owner is None or not scope["path"].startswith("/predict"):
            await self.app(scope, receive, send)
            return
        refusal = await self.limits.admit(owner.name)
        if refusal is not None:
            await send_problem(send, refusal)
            return
        await self.app(scope, receive, send)
