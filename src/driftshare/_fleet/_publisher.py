"""The leader's side: every ledger change and confirmation, written fenced and published."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from driftshare import _metrics as metrics
from driftshare._fleet._records import Message, Signer, encode
from driftshare._fleet._store import FencedOut, FleetStore, Outgoing
from driftshare._generation import cancel_all
from driftshare._ledger import AccountLedger, LedgerEntry

__all__ = ["Publisher"]

log = logging.getLogger(__name__)

_BATCH = 256
"""Messages per script call: bounds how long one call holds Redis."""
_RETRY_S = 0.25
"""Pause between writes while Redis does not answer."""


class Publisher:
    """Queue the ledger's updates while leading; one task writes them in batches.

    Updates are coalesced per account (only the newest record and confirmation wait), so a
    slow or absent Redis costs memory bounded by the number of accounts, not by time.
    """

    def __init__(
        self,
        store: FleetStore,
        signer: Signer,
        member: str,
        network: str,
        on_fenced: Callable[[], None],
    ) -> None:
        self._store = store
        self._signer = signer
        self._member = member
        self._network = network
        self._on_fenced = on_fenced
        self._pending: dict[tuple[str, str], tuple[LedgerEntry, bool]] = {}
        self._wake = asyncio.Event()
        self._token: str | None = None
        self._epoch = 0
        self._remove: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    def lead(self, ledger: AccountLedger, token: str, epoch: int) -> None:
        """Start publishing as ``token``: everything the ledger holds, then every change."""
        self._token, self._epoch = token, epoch
        if self._remove is None:
            self._remove = ledger.add_listener(self._on_entry)
        # A new lease (first election, failover, Redis restarted empty) repopulates Redis:
        # every record, and its newer confirmation where there is one.
        for entry in ledger:
            pubkey = entry.record.pubkey
            self._pending[("r", pubkey)] = (entry, True)
            if entry.confirmed_slot > entry.record.slot:
                self._pending[("c", pubkey)] = (entry, False)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="driftshare-fleet-publish")

    async def stop(self) -> None:
        """Stop publishing (lease lost or member leaving); pending updates are dropped."""
        self._token = None
        if self._remove is not None:
            self._remove()
            self._remove = None
        self._pending.clear()
        task, self._task = self._task, None
        await cancel_all([task])

    def _on_entry(self, entry: LedgerEntry, changed: bool) -> None:
        if self._token is None:
            return
        kind = "r" if changed else "c"
        # A record is itself a confirmation at its slot: a pending confirmation can go.
        if changed:
            self._pending.pop(("c", entry.record.pubkey), None)
        self._pending[(kind, entry.record.pubkey)] = (entry, changed)
        self._wake.set()

    def _message(self, entry: LedgerEntry, changed: bool, token_epoch: int) -> Outgoing:
        record = entry.record
        slot = record.slot if changed else entry.confirmed_slot
        wall = time.time() - max(0.0, time.monotonic() - entry.confirmed_at)
        message = Message(
            "r" if changed else "c",
            record.pubkey,
            slot,
            wall,
            token_epoch,
            self._member,
            record if changed else None,
        )
        return Outgoing(message.type, record.pubkey, slot, encode(message, self._signer))

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending and self._token is not None:
                token = self._token
                keys = list(self._pending)[:_BATCH]
                batch = [self._pending.pop(key) for key in keys]
                updates = [self._message(entry, changed, self._epoch) for entry, changed in batch]
                try:
                    await self._store.publish(token, updates)
                except FencedOut:
                    log.warning("fleet lease lost: this member stops publishing")
                    self._token = None
                    self._pending.clear()
                    self._on_fenced()
                    break
                except (RedisError, OSError):
                    # Redis away: keep the newest per account and retry when woken again.
                    for key, item in zip(keys, batch, strict=True):
                        self._pending.setdefault(key, item)
                    await asyncio.sleep(_RETRY_S)
                    continue
                self.published += len(updates)
                metrics.FLEET_RECORDS_PUBLISHED.labels(self._network).inc(len(updates))
