"""The account tap: where every subscriber reports the accounts it reads, into the ledger."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from driftshare._data.ledger import AccountKind, AccountLedger, AccountRecord

__all__ = ["AccountTap"]


class AccountTap:
    """Where the subscribers report each account they read: raw bytes and slot, into a ledger.

    Only the accounts subscribed to are recorded (discovery's, whose records it applies
    first). ``on_reconnect`` is called when a driftpy subscription opens its WebSocket
    again: notifications sent during the gap are lost, so the caller re-fetches.

    A tap made ``active=False`` (for a subscriber that will replace one still serving) holds
    what it hears until :meth:`activate`: the ledger must describe the accounts being served,
    or the old subscriber's values would be dated by the new one's reads.
    """

    def __init__(
        self,
        ledger: AccountLedger,
        records: Sequence[AccountRecord],
        *,
        active: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        self.on_reconnect: Callable[[], None] | None = None
        self._kinds: dict[str, tuple[AccountKind, str | None]] = {}
        self._clock = clock
        self._held: list[tuple[AccountRecord, float]] | None = None if active else []
        for record in records:
            self._kinds[record.pubkey] = (record.kind, record.oracle_source)
            self._apply(record)

    def activate(self) -> None:
        """Write what was heard while inactive to the ledger, dated when it was read, and
        every later report straight through."""
        held, self._held = self._held, None
        for record, read_at in held or ():
            self.ledger.apply(record, confirmed_at=read_at)

    def _apply(self, record: AccountRecord) -> None:
        if self._held is None:
            self.ledger.apply(record)
        else:
            self._held.append((record, self._clock()))

    def record(self, pubkey: str, data: bytes, slot: int) -> None:
        self.ledger.observe_chain_slot(slot)
        known = self._kinds.get(pubkey)
        if known is not None:
            self._apply(AccountRecord(pubkey, known[0], slot, bytes(data), known[1]))

    def confirm(self, pubkey: str, data: bytes, slot: int) -> None:
        """Confirm ``pubkey`` at ``slot`` if ``data`` is what the ledger holds for it."""
        self.ledger.observe_chain_slot(slot)
        if self._held is not None:
            self.record(pubkey, data, slot)  # the bytes read at that slot: a record as good
            return
        entry = self.ledger.get(pubkey)
        if pubkey in self._kinds and entry is not None and entry.record.data == data:
            self.ledger.confirm(pubkey, slot)

    def pubkeys(self) -> list[str]:
        """Every subscribed account's address."""
        return list(self._kinds)

    def watch(self, pubkey: str, kind: AccountKind) -> None:
        """Record ``pubkey`` (subscribed after discovery) as ``kind`` from now on."""
        self._kinds[pubkey] = (kind, None)

    def unwatch(self, pubkey: str) -> None:
        """Stop recording ``pubkey``: it is no longer subscribed."""
        self._kinds.pop(pubkey, None)

    def reconnected(self) -> None:
        if self.on_reconnect is not None:
            self.on_reconnect()
