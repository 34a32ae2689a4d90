"""BlockhashKeeper: one recent blockhash and the block height, refreshed in the background.

As Drift's TypeScript ``BlockhashSubscriber``: a fixed cost per process (one JSON-RPC batch
of ``getLatestBlockhash`` and ``getBlockHeight`` per interval), never a request per order.
The block height is only ever the chain's own answer: expiry is decided on what the chain
said, never on an estimate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from solders.hash import Hash

from driftshare import _metrics as metrics
from driftshare._tx.rpc import RpcError, TxRpc

__all__ = ["Blockhash", "BlockhashKeeper"]

log = logging.getLogger(__name__)

_COMMITMENT = {"commitment": "confirmed"}


@dataclass(frozen=True, slots=True)
class Blockhash:
    """A blockhash, the last block height at which a transaction using it can land, and when
    it was fetched (``time.monotonic()``)."""

    blockhash: Hash
    last_valid_block_height: int
    slot: int
    fetched_at: float


class BlockhashKeeper:
    """The newest blockhash and block height, refreshed every ``interval_s`` by :meth:`run`.

    :meth:`current` serves the kept blockhash while it is younger than ``max_age_s`` and
    fetches one (single flight) otherwise, so signing never waits on the loop.
    """

    def __init__(
        self,
        rpc: TxRpc,
        *,
        interval_s: float,
        max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rpc = rpc
        self.interval_s = interval_s
        self.max_age_s = max_age_s
        self._clock = clock
        self.latest: Blockhash | None = None
        self.block_height: int | None = None
        """The chain's block height at the last refresh (confirmed commitment)."""
        self.refreshes = 0
        self.failures = 0
        self._lock = asyncio.Lock()

    def age_s(self) -> float | None:
        """Seconds since the kept blockhash was fetched, or None without one."""
        return None if self.latest is None else self._clock() - self.latest.fetched_at

    def expired(self, last_valid_block_height: int) -> bool:
        """Whether the chain's block height has passed ``last_valid_block_height``: no
        transaction signed with that blockhash can land any more."""
        return self.block_height is not None and self.block_height > last_valid_block_height

    async def current(self) -> Blockhash:
        """A blockhash younger than ``max_age_s``; raises what the fetch raised."""
        latest = self.latest
        if latest is not None and self._clock() - latest.fetched_at <= self.max_age_s:
            metrics.BLOCKHASH_AGE.set(self._clock() - latest.fetched_at)
            return latest
        async with self._lock:
            latest = self.latest
            if latest is None or self._clock() - latest.fetched_at > self.max_age_s:
                await self.refresh()
                latest = self.latest
        assert latest is not None
        return latest

    async def refresh(self) -> None:
        """Fetch the latest blockhash and the block height in one JSON-RPC batch."""
        fetched_at = self._clock()
        latest, height = await self._rpc.batch(
            [("getLatestBlockhash", [_COMMITMENT]), ("getBlockHeight", [_COMMITMENT])]
        )
        for answer in (latest, height):
            if isinstance(answer, RpcError):
                raise answer
        try:
            value = latest["value"]
            blockhash = Blockhash(
                Hash.from_string(value["blockhash"]),
                int(value["lastValidBlockHeight"]),
                int(latest["context"]["slot"]),
                fetched_at,
            )
            block_height = int(height)
        except (KeyError, TypeError, ValueError):
            raise RpcError(0, f"a malformed blockhash answer: {str(latest)[:200]}") from None
        if self.latest is None or blockhash.slot >= self.latest.slot:
            self.latest = blockhash
        # Never backwards: an answer from a lagging node must not revive an expired blockhash.
        if self.block_height is None or block_height > self.block_height:
            self.block_height = block_height
        self.refreshes += 1
        metrics.BLOCKHASH_AGE.set(0.0)

    async def run(self) -> None:
        """Refresh every ``interval_s`` until cancelled; a failure is counted and retried."""
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # an RPC failure: the next round retries
                self.failures += 1
                log.debug("blockhash refresh failed: %r", exc)
            await asyncio.sleep(self.interval_s)
