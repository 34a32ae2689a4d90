"""The clients an AccountRegistry registers on: the shared client, an adapter's private one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from driftpy.account_subscription_config import AccountSubscriptionConfig
from driftpy.drift_client import DriftClient
from solders.keypair import Keypair

from driftshare._accounts.subscribers import MarketsOf
from driftshare._data.ledger import AccountLedger
from driftshare._data.tap import AccountTap
from driftshare._tx import install_path

if TYPE_CHECKING:
    from driftshare._client.generation import Generation
    from driftshare._tx.path import TransactionPath
    from driftshare.config import Settings

__all__ = ["SharedHost", "signer_client"]


class SharedClient(Protocol):
    """What a host reads of :class:`driftshare._client.lifecycle.SharedClient` (a protocol, so that
    the accounts do not import the lifecycle that holds them)."""

    @property
    def network(self) -> str: ...

    @property
    def ledger(self) -> AccountLedger: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def tap(self) -> AccountTap | None: ...

    @property
    def client(self) -> Any: ...

    @property
    def gen(self) -> Generation | None: ...

    @property
    def initialized(self) -> bool: ...

    @property
    def health(self) -> str: ...

    @property
    def tx(self) -> TransactionPath: ...


async def signer_client(
    connection: Any, keypair: Keypair, network: str, markets: Callable[[], Any]
) -> DriftClient:
    """A DriftClient signing with ``keypair`` over ``connection``, reading the markets from
    ``markets()``, with no subscription of its own.

    Built in a thread: driftpy parses its IDL for every DriftClient (about 0.12 s).
    """
    client = await asyncio.to_thread(
        DriftClient,
        connection,
        keypair,
        env=network,
        # driftpy builds a subscriber of the config's kind, never subscribed: replaced below.
        account_subscription=AccountSubscriptionConfig("cached"),
        perp_market_indexes=[],
        spot_market_indexes=[],
        oracle_infos=[],
        sub_account_ids=[],
    )
    client.account_subscriber = MarketsOf(markets)
    return client


class SharedHost:
    """The shared client of one (network, RPC URL, loop) as an account host."""

    def __init__(self, shared: SharedClient) -> None:
        self._shared = shared
        self.network = shared.network
        self.ledger: AccountLedger = shared.ledger

    @property
    def stale_after_s(self) -> float:
        return self._shared.settings.stale_after_s

    def account_tap(self) -> AccountTap | None:
        return self._shared.tap

    def account_subscriber(self) -> Any:
        client = self._shared.client
        return None if client is None else client.account_subscriber

    def account_connection(self) -> Any:
        gen = self._shared.gen
        return None if gen is None else gen.connection

    def accounts_current(self) -> bool:
        shared = self._shared
        return shared.initialized and shared.health == "healthy"

    async def signer_client(self, keypair: Keypair) -> DriftClient:
        client = await signer_client(
            self.account_connection(), keypair, self.network, self.account_subscriber
        )
        # The engine's own driftpy calls on this client take the shared transaction path.
        install_path(client, self._shared.tx)
        return client
