"""PriorityFees: one priority-fee estimate for every engine, from getRecentPrioritizationFees."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence

from driftshare._tx.rpc import TxRpc

__all__ = ["PriorityFees"]

log = logging.getLogger(__name__)


class PriorityFees:
    """The compute-unit price (micro-lamports) to pay: the ``percentile`` of the fees paid in
    recent slots for ``accounts``, at most ``cap``; refreshed every ``interval_s`` by
    :meth:`run`. 0 until the first answer."""

    def __init__(
        self,
        rpc: TxRpc,
        *,
        interval_s: float,
        percentile: float,
        cap: int,
        accounts: Callable[[], Sequence[str]] = tuple,
    ) -> None:
        self._rpc = rpc
        self.interval_s = interval_s
        self.percentile = percentile
        self.cap = cap
        self._accounts = accounts
        self.price = 0
        self.refreshes = 0
        self.failures = 0

    async def refresh(self) -> None:
        accounts = list(self._accounts())[:128]  # the method's limit
        answer = await self._rpc.call("getRecentPrioritizationFees", [accounts])
        try:
            fees = sorted(int(entry["prioritizationFee"]) for entry in answer)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"a malformed fee answer: {str(answer)[:200]}") from None
        if fees:
            # Nearest rank: a fee that was actually paid.
            rank = max(1, math.ceil(self.percentile / 100 * len(fees)))
            self.price = max(0, min(self.cap, fees[rank - 1]))
        self.refreshes += 1

    async def run(self) -> None:
        """Refresh every ``interval_s`` until cancelled; a failure keeps the last estimate."""
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # an RPC failure or bad answer: the next round retries
                self.failures += 1
                log.debug("priority fee refresh failed: %r", exc)
            await asyncio.sleep(self.interval_s)
