"""UserOrderIds: a fresh nonzero ``user_order_id`` per order of one sub-account.

Drift refuses an order whose ``user_order_id`` (a u8) is already held by an open order of
the same User account, so a late copy of an order still open cannot open it twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

__all__ = ["UserOrderIds"]

_IDS = range(1, 256)


class UserOrderIds:
    """Hands out ids 1 to 255 round robin, skipping the ones open on chain and the ones handed
    out in the last ``hold_s`` seconds (their orders may still be in flight)."""

    def __init__(self, hold_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.hold_s = hold_s
        self._clock = clock
        self._issued: dict[int, float] = {}
        self._next = 0

    def take(self, open_ids: Iterable[int]) -> int | None:
        """A free id, or None when all 255 are open or in flight."""
        now = self._clock()
        busy = set(open_ids) | {i for i, at in self._issued.items() if now - at < self.hold_s}
        for step in range(len(_IDS)):
            candidate = _IDS[(self._next + step) % len(_IDS)]
            if candidate not in busy:
                self._next = (self._next + step + 1) % len(_IDS)
                self._issued[candidate] = now
                return candidate
        return None

    def hold(self, user_order_id: int) -> None:
        """Count a caller's own id as in flight."""
        self._issued[user_order_id] = self._clock()
