"""AccountLedger: the raw bytes, data slot and confirmation of every subscribed account.

The one record of "what we hold and how current it is" that the freshness check, the
snapshot writer and the fleet publisher all read, and that a follower or a warm start feeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "FUTURE_SLOTS",
    "MARKET_KINDS",
    "AccountKind",
    "AccountLedger",
    "AccountRecord",
    "LedgerEntry",
]

AccountKind = Literal["perp", "spot", "oracle", "state", "user", "user_stats"]

MARKET_KINDS: frozenset[AccountKind] = frozenset({"perp", "spot", "oracle", "state"})
"""The program-wide accounts every member subscribes; the others belong to one signer."""

FUTURE_SLOTS = 9_000
"""How far past the newest slot heard from upstream a held slot may be: about an hour of
slots, far beyond any lag between two RPC providers. A slot further ahead cannot be the
chain's (a corrupt snapshot, a forged Redis record) and is replaced by live data."""


@dataclass(frozen=True, slots=True)
class AccountRecord:
    """One account as read from the chain: who, what kind, at which slot, which bytes."""

    pubkey: str
    """Base58 address."""
    kind: AccountKind
    slot: int
    """The slot at which ``data`` was read."""
    data: bytes
    """The raw account data, as the program stores it."""
    oracle_source: str | None = None
    """For ``kind == "oracle"``: driftpy's OracleSource variant name (``"PythPull"``…)."""


@dataclass(slots=True)
class LedgerEntry:
    """An account's newest record and how recently it is known to be current."""

    record: AccountRecord
    confirmed_slot: int
    """The newest slot at which the account is known to hold ``record.data``."""
    confirmed_at: float
    """``time.monotonic()`` when ``confirmed_slot`` was learnt."""


Listener = Callable[[LedgerEntry, bool], None]
"""Called with the entry and whether its data changed (False: a confirmation only)."""


class AccountLedger:
    """Slot-monotonic store of :class:`AccountRecord` with per-account confirmation."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: dict[str, LedgerEntry] = {}
        self._listeners: list[Listener] = []
        self._clock = clock
        self.chain_slot: int | None = None
        """The newest slot heard from upstream (None until it answers): bounds every slot."""

    def observe_chain_slot(self, slot: int | None) -> None:
        """Upstream answered at ``slot``: the chain is at least there (None: forget it, as
        when this process stops reading upstream and its slot would only age)."""
        if slot is None:
            self.chain_slot = None
            return
        if self.chain_slot is None or slot > self.chain_slot:
            self.chain_slot = slot

    @property
    def ceiling(self) -> int | None:
        """The newest slot a held value may have, or None while upstream is unheard."""
        return None if self.chain_slot is None else self.chain_slot + FUTURE_SLOTS

    def impossible(self, slot: int) -> bool:
        """Whether ``slot`` is past :attr:`ceiling`: no chain value can be there yet."""
        ceiling = self.ceiling
        return ceiling is not None and slot > ceiling

    def apply(self, record: AccountRecord, *, confirmed_at: float | None = None) -> bool:
        """Store ``record`` unless an entry at a newer slot exists; True when data changed.

        A record at the stored slot or newer confirms the account at its slot either way.
        """
        now = self._clock() if confirmed_at is None else confirmed_at
        entry = self._entries.get(record.pubkey)
        if entry is not None and self.impossible(entry.confirmed_slot):
            entry = None  # held at an impossible future slot: the first real value replaces it
        if entry is not None and record.slot < entry.record.slot:
            return False
        changed = entry is None or entry.record.data != record.data
        if entry is None:
            entry = self._entries[record.pubkey] = LedgerEntry(record, record.slot, now)
        else:
            entry.record = record
            if record.slot >= entry.confirmed_slot:
                entry.confirmed_slot, entry.confirmed_at = record.slot, now
        self._notify(entry, changed)
        return changed

    def confirm(self, pubkey: str, slot: int, *, confirmed_at: float | None = None) -> bool:
        """Mark ``pubkey`` current as of ``slot`` (its data unchanged); True when it advanced."""
        entry = self._entries.get(pubkey)
        if entry is None:
            return False
        if slot <= entry.confirmed_slot and not self.impossible(entry.confirmed_slot):
            return False
        entry.confirmed_slot = slot
        entry.confirmed_at = self._clock() if confirmed_at is None else confirmed_at
        self._notify(entry, False)
        return True

    def get(self, pubkey: str) -> LedgerEntry | None:
        return self._entries.get(pubkey)

    def __iter__(self) -> Iterator[LedgerEntry]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def discard(self, pubkey: str) -> None:
        """Forget ``pubkey`` (no longer subscribed); its listeners are not told."""
        self._entries.pop(pubkey, None)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` on every change or confirmation; returns its remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _notify(self, entry: LedgerEntry, changed: bool) -> None:
        for listener in list(self._listeners):
            listener(entry, changed)
