"""What an RPC provider enforces per client: a request rate and a WebSocket connection cap."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["ClientLimits", "TokenBucket"]


class TokenBucket:
    """A token bucket holding up to ``burst`` tokens, refilled at ``rate`` tokens per second.

    Hand-written because aiolimiter waits for capacity while a provider refuses at once
    and has to tell the client how long to wait (``Retry-After``), which aiolimiter does
    not expose.
    """

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def take(self, amount: int = 1) -> float:
        """Take ``amount`` tokens; 0.0 if granted, else the seconds until they would be.

        A batch larger than the bucket is granted when the bucket is full and leaves it in
        debt, so it is throttled rather than refused forever.
        """
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        needed = min(amount, self.burst)
        if self._tokens >= needed:
            self._tokens -= amount
            return 0.0
        return (needed - self._tokens) / self.rate


class ClientLimits:
    """Per-client token buckets and open WebSocket counts."""

    def __init__(
        self,
        rate: float | None,
        burst: int | None,
        max_ws: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1, int(rate or 1))
        self.max_ws = max_ws
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._ws_open: dict[str, int] = {}

    def retry_after(self, client: str, calls: int) -> int | None:
        """Charge ``calls`` to ``client``; None if allowed, else whole seconds to wait (>= 1)."""
        if self.rate is None:
            return None
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = TokenBucket(self.rate, self.burst, clock=self._clock)
        wait = bucket.take(calls)
        if wait == 0.0:
            return None
        return max(1, math.ceil(wait))

    def open_ws(self, client: str) -> bool:
        """Count a new WebSocket for ``client``; False (and not counted) if over the cap."""
        current = self._ws_open.get(client, 0)
        if current >= self.max_ws:
            return False
        self._ws_open[client] = current + 1
        return True

    def close_ws(self, client: str) -> None:
        """Forget one of ``client``'s WebSockets."""
        remaining = self._ws_open.get(client, 0) - 1
        if remaining > 0:
            self._ws_open[client] = remaining
        else:
            self._ws_open.pop(client, None)
