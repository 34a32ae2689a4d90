"""BlockhashKeeper: one recent blockhash and the block height, refreshed in the background.

As Drift's TypeScript ``BlockhashSubscriber``: a fixed cost per process (``getLatestBlockhash``
and ``getBlockHeight`` per interval), never a request per order; the calls ride in the status
poll's batch while transactions are pending, and are fetched on demand otherwise. The block
height is only ever the chain's own answer: expiry is decided on what the chain said, never
on an estimate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from solders.hash import Hash

from driftshare import _metrics as metrics
from driftshare._tx.riders import Call, Rider, ride
from driftshare._tx.rpc import RpcError, TxRpc

__all__ = ["Blockhash", "BlockhashKeeper"]

_COMMITMENT = {"commitment": "confirmed"}


@dataclass(frozen=True, slots=True)
class Blockhash:
    """A blockhash, the last block height at which a transaction using it can land, and when
    it was fetched (``time.monotonic()``)."""

    blockhash: Hash
    last_valid_block_height: int
    slot: int
    fetched_at: float


class BlockhashKeeper(Rider):
    """The newest blockhash and block height: a :class:`Rider` of the status poll, due every
    ``interval_s``.

    :meth:`current` serves the kept blockhash while it is younger than ``max_age_s`` and
    fetches one (single flight, with ``riders`` that are due) otherwise.
    """

    def __init__(
        self,
        rpc: TxRpc,
        *,
        interval_s: float,
        max_age_s: float,
        riders: Sequence[Rider] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(interval_s=interval_s, clock=clock)
        self._rpc = rpc
        self.max_age_s = max_age_s
        self._riders = list(riders)
        self.latest: Blockhash | None = None
        self.block_height: int | None = None
        """The chain's block height at the last refresh (confirmed commitment)."""
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

    def adopt(self, blockhash: Blockhash, block_height: int) -> None:
        """Keep another member's fetch (a fleet leader's) as if it were this keeper's own,
        and fetch none of its own while it is current (see :meth:`Rider.heard`)."""
        self._keep(blockhash, block_height)
        self.heard(blockhash.fetched_at)

    async def refresh(self) -> None:
        """Fetch the latest blockhash and the block height, with the riders that are due, in
        one JSON-RPC batch; raises what failed of the blockhash."""
        self.take(await ride(self._rpc, self.calls(), self._riders))

    def _calls(self) -> list[Call]:
        return [("getLatestBlockhash", [_COMMITMENT]), ("getBlockHeight", [_COMMITMENT])]

    def _take(self, *answers: Any) -> None:
        latest, height = answers
        fetched_at = self._clock() if self._asked_at is None else self._asked_at
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
        self._keep(blockhash, block_height)
        metrics.BLOCKHASH_AGE.set(0.0)

    def _keep(self, blockhash: Blockhash, block_height: int) -> None:
        if self.latest is None or blockhash.slot >= self.latest.slot:
            self.latest = blockhash
        # Never backwards: an answer from a lagging node must not revive an expired blockhash.
        if self.block_height is None or block_height > self.block_height:
            self.block_height = block_height
