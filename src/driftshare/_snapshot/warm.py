"""Serving a snapshot's accounts, every value stale, until the shared client is ready."""

from __future__ import annotations

from driftshare._data.ledger import AccountLedger
from driftshare._data.ledger_subscriber import LedgerReads
from driftshare._data.marketdata import ClientSource

__all__ = ["WarmSource"]


class WarmSource(ClientSource):
    """The ledger as a :class:`MarketSource` while the shared client is not ready.

    Its accounts are the snapshot's, replaced one by one by live data as it arrives; none
    is confirmed by a running subscription, so every market counts as unavailable: every
    value is stale, with the age of the accounts it is computed from. It is current (its
    cached values reusable while their accounts are unchanged) until :meth:`close`.
    """

    def __init__(self, ledger: AccountLedger) -> None:
        reads = LedgerReads(ledger)
        super().__init__(reads, ledger, current=self._serving)
        self._subscriber = reads.account_subscriber
        self._closed = False

    def _serving(self) -> bool:
        return not self._closed

    def unavailable(self, market_index: int) -> bool:
        # No value from here is current, however young its data: each one is served stale.
        return True

    def close(self) -> None:
        """Stop decoding the ledger's updates: the live client serves from now on."""
        self._closed = True
        self._subscriber.unfollow()
