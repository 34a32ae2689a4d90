"""Blocks of the simulated chain: block height and the recent blockhashes transactions cite."""

from __future__ import annotations

from collections import OrderedDict

from solders.hash import Hash

from driftshare.sim.store import AccountStore

__all__ = ["FINALITY_DEPTH", "MAX_PROCESSING_AGE", "MAX_RECENT_BLOCKHASHES", "Blocks"]

MAX_PROCESSING_AGE = 150
"""Blocks a blockhash stays usable for, as in agave (``lastValidBlockHeight`` = height + this)."""
MAX_RECENT_BLOCKHASHES = 300
"""Blockhashes a node remembers (agave's blockhash queue length)."""
FINALITY_DEPTH = 32
"""Slots between the tip and the root (finalized), about what a mainnet node reports."""


class Blocks:
    """One block per slot, so block height equals the slot; each block has its own hash.

    A blockhash is derived from the chain's genesis hash and its height, so two simulators
    never accept each other's blockhashes.
    """

    def __init__(self, store: AccountStore, genesis_hash: Hash) -> None:
        self._store = store
        self.genesis = genesis_hash
        self._genesis = bytes(genesis_hash)
        self._heights: OrderedDict[Hash, int] = OrderedDict()
        self._synced = -1

    @property
    def height(self) -> int:
        """The block height of the tip."""
        return self._store.slot

    def hash_at(self, height: int) -> Hash:
        """The blockhash of the block at ``height``."""
        return Hash.hash(self._genesis + height.to_bytes(8, "little"))

    def latest(self) -> tuple[Hash, int]:
        """The newest blockhash and the last block height it is valid for."""
        height = self.height
        self._sync(height)
        return self.hash_at(height), height + MAX_PROCESSING_AGE

    def age(self, blockhash: Hash) -> int | None:
        """Blocks since ``blockhash``'s block; None if it is not a recent blockhash."""
        height = self.height
        self._sync(height)
        at = self._heights.get(blockhash)
        return None if at is None else height - at

    def _sync(self, height: int) -> None:
        for at in range(max(self._synced + 1, height - MAX_RECENT_BLOCKHASHES + 1), height + 1):
            self._heights[self.hash_at(at)] = at
        self._synced = max(self._synced, height)
        while len(self._heights) > MAX_RECENT_BLOCKHASHES:
            self._heights.popitem(last=False)
