"""PriorityFees: one priority-fee estimate for every engine, from getRecentPrioritizationFees.

It rides in the status poll's batch (or an on-demand blockhash fetch) when due: no request
of its own, and none while nothing is sent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from driftshare._tx.riders import Call, Rider
from driftshare._tx.rpc import TxRpc

__all__ = ["PriorityFees"]


class PriorityFees(Rider):
    """The compute-unit price (micro-lamports) to pay: the ``percentile`` of the fees paid in
    recent slots for ``accounts``, at most ``cap``; a :class:`Rider` due every
    ``interval_s``. 0 until the first answer."""

    def __init__(
        self,
        rpc: TxRpc,
        *,
        interval_s: float,
        percentile: float,
        cap: int,
        accounts: Callable[[], Sequence[str]] = tuple,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(interval_s=interval_s, clock=clock)
        self._rpc = rpc
        self.percentile = percentile
        self.cap = cap
        self._accounts = accounts
        self.price = 0
        self.fetched_at: float | None = None
        """``time.monotonic()`` when :attr:`price` was fetched; None before it was."""

    async def refresh(self) -> None:
        """Fetch the estimate now, in a request of its own."""
        (call,) = self.calls()
        self.take([await self._rpc.call(*call)])

    def adopt(self, price: int, fetched_at: float) -> None:
        """Take another member's estimate (a fleet leader's), fetched at ``fetched_at``, if
        newer than this one's, and fetch none of its own while it is current."""
        if self.fetched_at is None or fetched_at > self.fetched_at:
            self.price = max(0, min(self.cap, price))
            self.fetched_at = fetched_at
        self.heard(fetched_at)

    def _calls(self) -> list[Call]:
        accounts = list(self._accounts())[:128]  # the method's limit
        return [("getRecentPrioritizationFees", [accounts])]

    def _take(self, *answers: Any) -> None:
        (answer,) = answers
        try:
            fees = sorted(int(entry["prioritizationFee"]) for entry in answer)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"a malformed fee answer: {str(answer)[:200]}") from None
        if fees:
            # Nearest rank: a fee that was actually paid.
            rank = max(1, math.ceil(self.percentile / 100 * len(fees)))
            self.price = max(0, min(self.cap, fees[rank - 1]))
        self.fetched_at = self._clock() if self._asked_at is None else self._asked_at
