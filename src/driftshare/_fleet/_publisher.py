"""The leader's side: every ledger change and confirmation, written fenced and published."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.exceptions import RedisError

from driftshare import _metrics as metrics
from driftshare._data.ledger import AccountLedger, LedgerEntry
from driftshare._fleet._records import (
    Message,
    Signer,
    digest,
    encode,
    record_message,
    wall_time,
)
from driftshare._fleet._store import NO_CEILING, FencedOut, FleetStore, Outgoing, PublishStream
from driftshare._tasks import cancel_all

__all__ = ["Publisher"]

log = logging.getLogger(__name__)

_BATCH = 256
"""Messages per script call: bounds how long one call holds Redis."""
_RETRY_S = 0.25
"""Pause between writes while Redis does not answer."""


_Key = tuple[str, str]
"""(message type, pubkey)."""
_Item = tuple[LedgerEntry, bool]
"""An entry and whether its data changed."""


class Publisher:
    """Write each ledger update to Redis the moment it is received, while leading.

    Each update goes out at once on a :class:`PublishStream`. While that stream is not up
    (at the start, or after a failure), updates wait, coalesced per account (only the
    newest record and confirmation), so a slow or absent Redis costs memory bounded by the
    number of accounts, not by time; one task writes what waits in batches and reopens the
    stream. Records go before confirmations, and nothing goes on the stream while a batch is
    under way: Redis keeps a confirmation only once it holds the record it names.
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
        self._pending: dict[_Key, _Item] = {}
        self._stream = PublishStream(store)
        self._wake = asyncio.Event()
        self._token: str | None = None
        self._epoch = 0
        self._remove: Callable[[], None] | None = None
        self._ledger: AccountLedger | None = None
        self._flushing = False
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    def lead(self, ledger: AccountLedger, token: str, epoch: int) -> None:
        """Start publishing as ``token``: everything the ledger holds, then every change."""
        self._token, self._epoch = token, epoch
        self._ledger = ledger
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
        await self._stream.close()

    def _on_entry(self, entry: LedgerEntry, changed: bool) -> None:
        if self._token is None:
            return
        key = ("r" if changed else "c", entry.record.pubkey)
        # A record is itself a confirmation at its slot: a pending confirmation can go.
        if changed:
            self._pending.pop(("c", entry.record.pubkey), None)
        if self._stream.ready and not self._pending and not self._flushing:
            token = self._token
            update = self._message(entry, changed, self._epoch)
            future = self._stream.publish(token, [update], self._ceiling())
            future.add_done_callback(lambda done: self._written(done, token, key, (entry, changed)))
            return
        self._pending[key] = (entry, changed)
        self._wake.set()

    def _written(self, done: asyncio.Future[int], token: str, key: _Key, item: _Item) -> None:
        """The reply to one update written on the stream."""
        if done.cancelled() or token != self._token:
            return
        exc = done.exception()
        if isinstance(exc, FencedOut):
            self._lost_lease()
        elif exc is not None:
            # The stream broke: the batch task writes it with whatever else waits by then.
            self._pending.setdefault(key, item)
            self._wake.set()
        else:
            self._count(done.result())

    def _lost_lease(self) -> None:
        log.warning("fleet lease lost: this member stops publishing")
        self._token = None
        self._pending.clear()
        self._on_fenced()

    def _ceiling(self) -> int:
        ceiling = None if self._ledger is None else self._ledger.ceiling
        return NO_CEILING if ceiling is None else ceiling

    def _count(self, published: int) -> None:
        self.published += published
        metrics.FLEET_RECORDS_PUBLISHED.labels(self._network).inc(published)

    def _message(self, entry: LedgerEntry, changed: bool, token_epoch: int) -> Outgoing:
        record = entry.record
        wall = wall_time(entry.confirmed_at)
        if changed:
            message = record_message(record, wall, token_epoch, self._member)
        else:
            message = Message(
                "c", record.pubkey, entry.confirmed_slot, wall, token_epoch, self._member,
                None, record.slot, digest(record.data),
            )  # fmt: skip
        return Outgoing.of(message, encode(message, self._signer))

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending and self._token is not None:
                token = self._token
                # Every record first: a confirmation is stored only after its record.
                keys = sorted(self._pending, key=lambda key: key[0] != "r")[:_BATCH]
                batch = [self._pending.pop(key) for key in keys]
                updates = [self._message(entry, changed, self._epoch) for entry, changed in batch]
                self._flushing = True
                try:
                    kept = await self._store.publish(token, updates, self._ceiling())
                except FencedOut:
                    self._lost_lease()
                    break
                except (RedisError, OSError):
                    # Redis away: keep the newest per account and retry when woken again.
                    for key, item in zip(keys, batch, strict=True):
                        self._pending.setdefault(key, item)
                    await asyncio.sleep(_RETRY_S)
                    continue
                finally:
                    self._flushing = False
                self._count(kept)
            if self._token is not None and not self._stream.ready:
                await self._open_stream()

    async def _open_stream(self) -> None:
        try:
            await self._stream.open()
        except (RedisError, OSError):
            await self._stream.close()
            await asyncio.sleep(_RETRY_S)
            self._wake.set()  # try again
