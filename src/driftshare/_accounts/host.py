"""What an account registry needs of the client it registers signers on."""

from __future__ import annotations

from typing import Any, Protocol

from driftpy.drift_client import DriftClient
from solders.keypair import Keypair

from driftshare._data.ledger import AccountLedger
from driftshare._data.tap import AccountTap

__all__ = ["AccountHost"]


class AccountHost(Protocol):
    """A subscribed client (the shared one, or an adapter's private one) whose subscription
    and ledger can carry users' accounts too."""

    network: str
    ledger: AccountLedger
    """Where the subscription writes every account it reads, users' included."""

    @property
    def stale_after_s(self) -> float:
        """``DRIFT_STALE_AFTER_S``."""

    def account_tap(self) -> AccountTap | None:
        """The tap the current subscription reports to, or None while there is none."""

    def account_subscriber(self) -> Any:
        """The subscriber serving the markets now (with ``watch_account``), or None."""

    def account_connection(self) -> Any:
        """The client's AsyncClient (its shared transport), or None while closed."""

    def accounts_current(self) -> bool:
        """Whether upstream is up and the subscription serving."""

    async def signer_client(self, keypair: Keypair) -> DriftClient:
        """A DriftClient for ``keypair``'s authority over this client's connection and
        markets, without subscriptions of its own (built once per authority)."""
