"""DriftAdapter: the legacy per-engine adapter, now reading through the shared client."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import suppress
from types import TracebackType
from typing import Any, Self, cast, get_args
from urllib.parse import urlsplit

from driftpy.account_subscription_config import AccountSubscriptionConfig
from driftpy.drift_client import DriftClient
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair

from driftshare._freshness import Confirmer
from driftshare._ledger import AccountLedger
from driftshare._marketdata import ClientSource, MarketDataReader, MarketSource
from driftshare._subscription import AccountTap, WebsocketSubscriber, discover_markets, post_batch
from driftshare.config import PUBLIC_RPC_URLS, Network, Settings, redact_url
from driftshare.manager import DriftClientManager

__all__ = ["DriftAdapter"]

log = logging.getLogger(__name__)

_FALLBACK_FUNDING_PERIOD_S = 3600
"""Drift settles perp funding on the hour (``amm.funding_period`` of every mainnet perp)."""


class _PrivateClient:
    """One adapter's own connection, DriftClient, websocket subscriber and cached reader.

    Its accounts go through a ledger confirmed by a :class:`Confirmer`, as the shared
    client's do, so a value whose WebSocket went silent ages and turns stale.
    """

    def __init__(
        self, network: Network, url: str, settings: Settings, wallet: Keypair, sub_account: int
    ) -> None:
        self.url = url
        self.settings = settings
        # A plain solana-py client: this path deliberately bypasses the shared transport.
        self.connection = AsyncClient(url, commitment=Confirmed, timeout=settings.request_timeout_s)
        self.client = DriftClient(
            self.connection,
            wallet,
            env=network,
            account_subscription=AccountSubscriptionConfig("websocket", commitment=Confirmed),
            perp_market_indexes=[],
            spot_market_indexes=[],
            oracle_infos=[],
            active_sub_account_id=sub_account,
            sub_account_ids=[sub_account],
        )
        self.subscriber: WebsocketSubscriber | None = None
        self.ledger = AccountLedger()
        self.unavailable: dict[int, str] = {}
        self._confirming: asyncio.Task[None] | None = None
        self.reader = MarketDataReader(self._source, settings=settings, network=network)

    async def _source(self) -> MarketSource | None:
        if self.subscriber is None:
            return None
        return ClientSource(self.client, self.ledger, lambda: self.unavailable)

    async def _post_batch(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return await post_batch(self.connection, batch)

    async def start(self) -> None:
        discovery = await discover_markets(self.client.program, self.settings.perp_markets)
        tap = AccountTap(self.ledger, discovery.records)
        subscriber = WebsocketSubscriber(self.client.program, discovery, Confirmed, tap)
        confirmer = Confirmer(
            self.ledger,
            pubkeys=tap.pubkeys,
            post=self._post_batch,
            inject=subscriber.inject,
            stale_after_s=self.settings.stale_after_s,
        )
        tap.on_reconnect = confirmer.check_all
        try:
            await subscriber.subscribe()
        except BaseException:
            with suppress(Exception):
                await subscriber.unsubscribe()
            raise
        self.client.account_subscriber = subscriber
        self.subscriber = subscriber
        self.unavailable = discovery.unavailable
        self._confirming = asyncio.create_task(confirmer.run(), name="driftshare-confirm-private")

    async def close(self) -> None:
        confirming, self._confirming = self._confirming, None
        if confirming is not None:
            confirming.cancel()
            with suppress(asyncio.CancelledError):
                await confirming
        subscriber, self.subscriber = self.subscriber, None
        if subscriber is not None:
            with suppress(Exception):
                await subscriber.unsubscribe()
        with suppress(Exception):
            await self.connection.close()


def _check_network(network: str) -> Network:
    if network not in get_args(Network):
        raise ValueError(f"unknown network {network!r}; expected one of {list(get_args(Network))}")
    return cast(Network, network)


class DriftAdapter:
    """Funding and market data of one Drift network, as plain dicts.

    With ``use_singleton=True`` (the default) :meth:`connect` takes one reference on the
    shared client of :class:`~driftshare.manager.DriftClientManager` and reads go through
    its cached reader. With ``use_singleton=False`` the adapter opens its own RPC
    connection and websocket-subscribed DriftClient, as before the shared client existed.

    With the singleton, reads take no reference: only :meth:`connect` holds the shared
    client open, so a read still running when :meth:`disconnect` returns cannot keep it
    open. A read with no holder starts the client under the manager's read lease, which
    closes it ``DRIFT_IDLE_CLOSE_S`` after the last read. Without the singleton, reads
    before :meth:`connect` connect lazily (with no wallet, sub-account 0) and the adapter
    holds its connection until :meth:`disconnect`. A shared client that cannot start
    yet is held all the same: :meth:`connect` answers False, the manager keeps retrying in
    the background, and reads answer from its cache until it is up. Upstream failures
    never raise: reads answer ``None``, ``[]`` or stale values and log a warning.
    ``rpc_url`` defaults to ``DRIFT_RPC_URL`` for the configured network, else the
    network's public endpoint; ``clock`` gives the unix time for :meth:`get_time_to_funding`.
    """

    def __init__(
        self,
        network: str = "mainnet",
        use_singleton: bool = True,
        *,
        rpc_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.network: Network = _check_network(network)
        if rpc_url is not None and urlsplit(rpc_url).scheme not in ("http", "https"):
            raise ValueError(f"rpc_url must be an http(s) URL, got {redact_url(rpc_url)!r}")
        self.use_singleton = use_singleton
        self.rpc_url = rpc_url
        self.clock = clock
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._holds_reference = False
        self._private: _PrivateClient | None = None

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """Whether :meth:`connect` succeeded, :meth:`disconnect` has not run since, and the
        client is up (a shared client being rebuilt is not)."""
        if not self._holds_connection():
            return False
        if self.use_singleton:
            return DriftClientManager.is_initialized(self.network, rpc_url=self.rpc_url)
        return True

    def _holds_connection(self) -> bool:
        if self._loop is None or self._loop.is_closed():
            return False
        return self._holds_reference or self._private is not None

    def _guard(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None and self._loop.is_closed():
                # Everything this adapter held lived on that loop and ended with it.
                self._holds_reference = False
                self._private = None
            self._lock = None
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def connect(self, wallet: Keypair | None = None, sub_account: int = 0) -> bool:
        """Connect (a no-op when connected); False if upstream cannot be reached now.

        With the singleton the reference is kept even then, until :meth:`disconnect`.
        ``wallet`` and ``sub_account`` only matter without the singleton: the shared client
        is read-only and ignores them.
        """
        async with self._guard():
            if self.is_connected:
                return True
            self._loop = asyncio.get_running_loop()
            if self.use_singleton:
                return await self._connect_shared(wallet, sub_account)
            return await self._connect_private(wallet, sub_account)

    async def _connect_shared(self, wallet: Keypair | None, sub_account: int) -> bool:
        if wallet is not None or sub_account != 0:
            log.debug("the shared client is read-only: wallet and sub_account are ignored")
        if not self._holds_reference:
            client = await DriftClientManager.get_client(self.network, rpc_url=self.rpc_url)
            # Kept even without a client: the reference is what keeps the manager retrying.
            self._holds_reference = True
            if client is None:
                log.warning("the shared %s DriftClient is not available yet", self.network)
                return False
        return self.is_connected

    async def _connect_private(self, wallet: Keypair | None, sub_account: int) -> bool:
        settings = DriftClientManager.settings()
        url = self._private_url(settings)
        try:
            private = _PrivateClient(self.network, url, settings, wallet or Keypair(), sub_account)
        except Exception as exc:  # a bad wallet or sub-account: report, do not raise
            log.warning("cannot create a DriftClient: %s", exc)
            return False
        try:
            await asyncio.wait_for(private.start(), settings.init_timeout_s)
        except Exception as exc:  # any upstream failure: not connected
            await private.close()
            log.warning("cannot connect to %s: %s", url, str(exc) or type(exc).__name__)
            return False
        self._private = private
        return True

    def _private_url(self, settings: Settings) -> str:
        if self.rpc_url is not None:
            return self.rpc_url
        if settings.rpc_url and settings.network == self.network:
            return settings.rpc_url
        return PUBLIC_RPC_URLS[self.network]

    async def disconnect(self) -> None:
        """Release the shared reference or close the private client; safe to repeat."""
        async with self._guard():
            if self._holds_reference:
                self._holds_reference = False
                await DriftClientManager.release_client(self.network, rpc_url=self.rpc_url)
            private, self._private = self._private, None
            if private is not None:
                await private.close()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()

    # -- reads ----------------------------------------------------------------------------

    async def _reader(self) -> MarketDataReader | None:
        if self.use_singleton:
            # A shared client that is starting or being rebuilt still answers, from its cache.
            return DriftClientManager.market_data(self.network, rpc_url=self.rpc_url)
        if not self._holds_connection():
            await self.connect()
        return None if self._private is None else self._private.reader

    async def _read(self, what: str, read: Callable[[MarketDataReader], Any]) -> Any:
        reader = await self._reader()
        if reader is None:
            return None
        try:
            return await read(reader)
        except Exception as exc:  # upstream or decoding trouble: the caller gets None
            log.warning("cannot read %s: %r", what, exc)
            return None

    async def get_funding_rate(self, market: str | int) -> dict[str, Any] | None:
        """``FundingRateData.to_dict()`` of ``market`` (``SOL-PERP``, ``sol``, ``0``), or None."""
        data = await self._read(f"funding of {market!r}", lambda r: r.get_funding_rate(market))
        return None if data is None else cast(dict[str, Any], data.to_dict())

    async def get_all_perp_markets(self) -> list[dict[str, Any]]:
        """``MarketData.to_dict()`` of every subscribed perp market, by index."""
        markets = await self._read("perp markets", lambda r: r.get_all_perp_markets())
        return [m.to_dict() for m in markets or []]

    async def get_time_to_funding(self, market: str | int = "SOL-PERP") -> int:
        """Whole seconds until ``market``'s next funding update; 0 once it is due.

        Without data for the market it logs a warning and counts to the next full hour,
        when Drift settles hourly funding.
        """
        now = int(self.clock())
        data = await self._read(f"funding of {market!r}", lambda r: r.get_funding_rate(market))
        if data is None:
            log.warning("no funding time for %r; assuming the next full hour", market)
            return _FALLBACK_FUNDING_PERIOD_S - now % _FALLBACK_FUNDING_PERIOD_S
        return max(0, int(data.next_funding_ts) - now)
