"""driftpy's user seams over an AccountLedger: a DriftUser or DriftUserStats reading its account
from the ledger the shared subscription feeds, and a DriftClient reading its markets from the
subscriber the shared client serves now."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from driftpy.accounts.types import (
    DataAndSlot,
    DriftClientAccountSubscriber,
    UserAccountSubscriber,
    UserStatsAccountSubscriber,
)
from driftpy.decode.user import decode_user
from driftpy.types import UserAccount, UserStatsAccount

from driftshare._data.ledger import AccountLedger, AccountRecord
from driftshare._data.ledger_subscriber import DRIFT_PROGRAM

__all__ = ["LedgerUserStatsSubscriber", "LedgerUserSubscriber", "MarketsOf"]

_T = TypeVar("_T")


class _LedgerAccount(Generic[_T]):
    """One ledger account, decoded when its bytes have changed since the last read."""

    def __init__(self, ledger: AccountLedger, pubkey: str, decode: Callable[[bytes], _T]) -> None:
        self._ledger = ledger
        self._pubkey = pubkey
        self._decode = decode
        self._record: AccountRecord | None = None
        self._value: _T | None = None

    def get(self) -> DataAndSlot[_T] | None:
        entry = self._ledger.get(self._pubkey)
        if entry is None:
            return None
        record = entry.record
        if record is not self._record:
            if self._record is None or record.data != self._record.data:
                self._value = self._decode(record.data)
            self._record = record
        return DataAndSlot(record.slot, self._value)


class LedgerUserSubscriber(UserAccountSubscriber):  # type: ignore[misc]
    """driftpy's UserAccountSubscriber over the ledger entry of one User account.

    Whoever feeds the ledger (the shared subscription, its confirmations) keeps it current:
    subscribing, fetching and unsubscribing do nothing.
    """

    def __init__(self, ledger: AccountLedger, pubkey: str) -> None:
        self._account = _LedgerAccount(ledger, pubkey, decode_user)

    async def subscribe(self) -> None:
        """Nothing to subscribe: the ledger is fed elsewhere."""

    def unsubscribe(self) -> None:
        """Nothing to close (driftpy calls this without awaiting)."""

    async def fetch(self) -> None:
        """Nothing to fetch: the ledger is fed elsewhere."""

    def get_user_account_and_slot(self) -> DataAndSlot[UserAccount] | None:
        return self._account.get()


def _decode_user_stats(data: bytes) -> UserStatsAccount:
    decoded: UserStatsAccount = DRIFT_PROGRAM.coder.accounts.decode(data)
    return decoded


class LedgerUserStatsSubscriber(UserStatsAccountSubscriber):  # type: ignore[misc]
    """driftpy's UserStatsAccountSubscriber over the ledger entry of one UserStats account."""

    def __init__(self, ledger: AccountLedger, pubkey: str) -> None:
        self._account = _LedgerAccount(ledger, pubkey, _decode_user_stats)

    async def subscribe(self) -> None:
        """Nothing to subscribe: the ledger is fed elsewhere."""

    async def unsubscribe(self) -> None:
        """Nothing to close."""

    async def fetch(self) -> None:
        """Nothing to fetch: the ledger is fed elsewhere."""

    def get_user_stats_account_and_slot(self) -> DataAndSlot[UserStatsAccount] | None:
        return self._account.get()


class MarketsOf(DriftClientAccountSubscriber):  # type: ignore[misc]
    """A DriftClient's market reads from another client's current account subscriber.

    A signer's DriftClient reads the shared client's markets, whichever subscriber serves
    them now (a mode switch or a rebuild replaces it): no subscription of its own.
    """

    def __init__(self, current: Callable[[], Any]) -> None:
        self._current = current
        """The serving subscriber, or None while there is none."""

    async def subscribe(self) -> None:
        """Nothing to subscribe: the shared client subscribes."""

    async def unsubscribe(self) -> None:
        """Nothing to close: the shared client owns the subscription."""

    async def fetch(self) -> None:
        """Nothing to fetch: the shared client's subscription is live."""

    def get_state_account_and_slot(self) -> DataAndSlot[Any] | None:
        current = self._current()
        return None if current is None else current.get_state_account_and_slot()

    def get_perp_market_and_slot(self, market_index: int) -> DataAndSlot[Any] | None:
        current = self._current()
        return None if current is None else current.get_perp_market_and_slot(market_index)

    def get_spot_market_and_slot(self, market_index: int) -> DataAndSlot[Any] | None:
        current = self._current()
        return None if current is None else current.get_spot_market_and_slot(market_index)

    def get_oracle_price_data_and_slot(self, oracle_id: str) -> DataAndSlot[Any] | None:
        current = self._current()
        return None if current is None else current.get_oracle_price_data_and_slot(oracle_id)

    def get_market_accounts_and_slots(self) -> list[DataAndSlot[Any]]:
        current = self._current()
        return [] if current is None else list(current.get_market_accounts_and_slots())

    def get_spot_market_accounts_and_slots(self) -> list[DataAndSlot[Any]]:
        current = self._current()
        return [] if current is None else list(current.get_spot_market_accounts_and_slots())

    def get_oracle_price_data_and_slot_for_perp_market(
        self, market_index: int
    ) -> DataAndSlot[Any] | None:
        current = self._current()
        if current is None:
            return None
        found: DataAndSlot[Any] | None = current.get_oracle_price_data_and_slot_for_perp_market(
            market_index
        )
        return found

    def get_oracle_price_data_and_slot_for_spot_market(
        self, market_index: int
    ) -> DataAndSlot[Any] | None:
        current = self._current()
        if current is None:
            return None
        found: DataAndSlot[Any] | None = current.get_oracle_price_data_and_slot_for_spot_market(
            market_index
        )
        return found
