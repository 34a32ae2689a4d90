"""The simulator's accounts: what it serves, and who is told when one changes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from solders.pubkey import Pubkey

__all__ = ["Account", "AccountStore", "ChangeListener"]

ChangeListener = Callable[[Pubkey, "Account"], None]


@dataclass(frozen=True, slots=True)
class Account:
    """One account as a node stores it."""

    data: bytes
    owner: Pubkey
    lamports: int
    executable: bool = False
    rent_epoch: int = 18446744073709551615
    frozen: bool = False
    """Replayed accounts are served as loaded and never evolved."""


class AccountStore:
    """Accounts by address, with listeners called synchronously on every write."""

    def __init__(self) -> None:
        self._accounts: dict[Pubkey, Account] = {}
        self._listeners: list[ChangeListener] = []
        self.slot = 1

    def get(self, pubkey: Pubkey) -> Account | None:
        return self._accounts.get(pubkey)

    def items(self) -> Iterable[tuple[Pubkey, Account]]:
        return self._accounts.items()

    def __len__(self) -> int:
        return len(self._accounts)

    def put(self, pubkey: Pubkey, account: Account, *, force: bool = False) -> bool:
        """Store ``account``; a frozen account is only replaced with ``force``. True if written."""
        current = self._accounts.get(pubkey)
        if current is not None and current.frozen and not force:
            return False
        self._accounts[pubkey] = account
        for listener in list(self._listeners):
            listener(pubkey, account)
        return True

    def listen(self, listener: ChangeListener) -> Callable[[], None]:
        """Register ``listener``; returns the function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)
