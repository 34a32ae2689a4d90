"""DriftAdapter: the legacy per-engine adapter, now reading through the shared client."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from contextlib import suppress
from types import TracebackType
from typing import Any, Self, TypeVar, cast, get_args
from urllib.parse import urlsplit

from driftpy.account_subscription_config import AccountSubscriptionConfig
from driftpy.addresses import get_user_account_public_key
from driftpy.constants.config import DRIFT_PROGRAM_ID
from driftpy.drift_client import DriftClient
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from driftshare._accounts import AccountMissing, AccountRegistry, AccountUnavailable, SubAccount
from driftshare._accounts.hosts import signer_client
from driftshare._accounts.reads import missing_status
from driftshare._data.discovery import discover_markets
from driftshare._data.freshness import Confirmer
from driftshare._data.ledger import AccountLedger
from driftshare._data.marketdata import ClientSource, MarketDataReader, MarketSource
from driftshare._data.tap import AccountTap
from driftshare._data.websocket_subscription import WebsocketSubscriber
from driftshare._sync import LoopThread
from driftshare._transport import post_batch
from driftshare._tx.writes import AdapterWrites
from driftshare.config import PUBLIC_RPC_URLS, Network, Settings, redact_url
from driftshare.manager import DriftClientManager, configured_signer

__all__ = ["DriftAdapter"]

log = logging.getLogger(__name__)

_R = TypeVar("_R")

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
        self.network: str = network
        self.subscriber: WebsocketSubscriber | None = None
        self.tap: AccountTap | None = None
        self.ledger = AccountLedger()
        self.unavailable: dict[int, str] = {}
        self._confirming: asyncio.Task[None] | None = None
        self.reader = MarketDataReader(self._source, settings=settings, network=network)
        self.accounts = AccountRegistry(self)
        """The wallet's sub-accounts, watched on this client's own subscription."""

    # -- what AccountRegistry needs of its client -------------------------------------------

    @property
    def stale_after_s(self) -> float:
        return self.settings.stale_after_s

    def account_tap(self) -> AccountTap | None:
        return self.tap

    def account_subscriber(self) -> WebsocketSubscriber | None:
        return self.subscriber

    def account_connection(self) -> AsyncClient:
        return self.connection

    def accounts_current(self) -> bool:
        return self.subscriber is not None

    async def signer_client(self, keypair: Keypair) -> DriftClient:
        if keypair.pubkey() == self.client.wallet.public_key:
            return self.client
        return await signer_client(self.connection, keypair, self.network, self.account_subscriber)

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
        self.tap = tap
        try:
            await self.accounts.attach(subscriber, tap)
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
        self.accounts.clear()
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


def _identity(signer: Keypair | None, sub_account: int) -> tuple[Pubkey | None, int]:
    return (None if signer is None else signer.pubkey()), sub_account


def _check_network(network: str) -> Network:
    if network not in get_args(Network):
        raise ValueError(f"unknown network {network!r}; expected one of {list(get_args(Network))}")
    return cast(Network, network)


class DriftAdapter(AdapterWrites):
    """Funding, market data and a signer's sub-account of one Drift network, as plain dicts.

    With ``use_singleton=True`` (the default) :meth:`connect` takes one reference on the
    shared client of :class:`~driftshare.manager.DriftClientManager` and reads go through
    its cached reader. With ``use_singleton=False`` the adapter opens its own RPC
    connection and websocket-subscribed DriftClient, as before the shared client existed.

    ``connect(wallet, sub_account)`` registers that signer's sub-account (``DRIFT_KEYPAIR``
    when no wallet is given; with neither the adapter only reads market data). Its User
    account is subscribed once on the client's subscription however many engines register
    it, and :meth:`get_account_info`, :meth:`get_positions`, :meth:`get_open_orders` and
    :meth:`verify_drift_account` read it with no RPC request. A sub-account whose User
    account does not exist is never created: :meth:`connect` answers False and
    :meth:`verify_drift_account` says how to initialize it.

    With the singleton, reads take no reference: only :meth:`connect` holds the shared
    client open, so a read still running when :meth:`disconnect` returns cannot keep it
    open. A read with no holder starts the client under the manager's read lease, which
    closes it ``DRIFT_IDLE_CLOSE_S`` after the last read. Without the singleton, reads
    before :meth:`connect` connect lazily (with no wallet, sub-account 0) and the adapter
    holds its connection until :meth:`disconnect`. A shared client that cannot start
    yet is held all the same: :meth:`connect` answers False, the manager keeps retrying in
    the background, and reads answer from its cache until it is up; calling :meth:`connect`
    again registers the sub-account once it can. Upstream failures never raise: reads
    answer ``None``, ``[]`` or stale values and log a warning. Writes
    (:class:`~driftshare._tx.writes.AdapterWrites`) go through the client's one transaction
    path on the registered sub-account and answer a ``TxResult`` dict, never an exception.
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
        self._signer: Keypair | None = None
        """The wallet of the last :meth:`connect`, or ``DRIFT_KEYPAIR``; None: read-only."""
        self._sub_account = 0
        self._account: SubAccount | None = None
        self._problem: str | None = None
        """Why the sub-account is not registered, for :meth:`verify_drift_account`."""
        self._sync: LoopThread | None = None

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

    @property
    def can_trade(self) -> bool:
        """Whether a signer and its User account are registered and the client is up."""
        return self.account is not None and self.is_connected

    @property
    def address(self) -> str | None:
        """The signer's public key (base58); None for a read-only adapter."""
        return None if self._signer is None else str(self._signer.pubkey())

    @property
    def account(self) -> SubAccount | None:
        """The registered sub-account (its reads, instruction building and
        ``wait_for_slot``), or None."""
        account = self._account
        return None if account is None or account.closed else account

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
                self._account = None
            self._lock = None
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def connect(self, wallet: Keypair | None = None, sub_account: int = 0) -> bool:
        """Connect and register ``wallet``'s ``sub_account``; False if either cannot be now.

        Without ``wallet`` the signer is ``DRIFT_KEYPAIR``, and with neither the adapter
        connects for market data only. A no-op when already connected with that signer and
        sub-account. With the singleton the client reference is kept even on False, until
        :meth:`disconnect`.
        """
        async with self._guard():
            self._loop = asyncio.get_running_loop()
            try:
                settings = DriftClientManager.settings()
                signer = wallet if wallet is not None else configured_signer(settings)
            except ValueError as exc:  # a bad DRIFT_KEYPAIR: no retry can fix it
                self._problem = str(exc)
                log.error("cannot connect: %s", exc)
                return False
            if _identity(self._signer, self._sub_account) != _identity(signer, sub_account):
                await self._unregister()
            self._signer, self._sub_account = signer, sub_account
            if self.use_singleton:
                connected = await self._connect_shared()
            else:
                connected = await self._connect_private(signer, sub_account)
            if not connected or signer is None:
                return connected
            return await self._register(signer, sub_account)

    async def _connect_shared(self) -> bool:
        if not self._holds_reference:
            client = await DriftClientManager.get_client(self.network, rpc_url=self.rpc_url)
            # Kept even without a client: the reference is what keeps the manager retrying.
            self._holds_reference = True
            if client is None:
                self._problem = f"the shared {self.network} DriftClient is not available yet"
                log.warning("%s", self._problem)
                return False
        return self.is_connected

    async def _connect_private(self, wallet: Keypair | None, sub_account: int) -> bool:
        if self._private is not None:
            if wallet is None or self._private.client.wallet.public_key == wallet.pubkey():
                return True
            await self._close_private()  # another wallet: its own DriftClient
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
            self._problem = f"cannot connect to {redact_url(url)}: {str(exc) or type(exc).__name__}"
            log.warning("%s", self._problem)
            return False
        self._private = private
        return True

    def _private_url(self, settings: Settings) -> str:
        if self.rpc_url is not None:
            return self.rpc_url
        if settings.rpc_url and settings.network == self.network:
            return settings.rpc_url
        return PUBLIC_RPC_URLS[self.network]

    def _registry(self) -> AccountRegistry | None:
        if not self.use_singleton:
            return None if self._private is None else self._private.accounts
        shared = DriftClientManager.shared_state(self.network, rpc_url=self.rpc_url)
        return None if shared is None else shared.accounts

    async def _register(self, signer: Keypair, sub_account: int) -> bool:
        if self.account is not None:
            return True
        registry = self._registry()
        if registry is None:
            return False
        try:
            self._account = await registry.open(signer, sub_account)
        except (AccountMissing, AccountUnavailable) as exc:
            self._problem = str(exc)
            log.warning("cannot register sub-account %d: %s", sub_account, exc)
            return False
        self._problem = None
        return True

    async def _unregister(self) -> None:
        account, self._account = self._account, None
        registry = self._registry()
        if account is not None and registry is not None:
            await registry.close(account)

    async def _close_private(self) -> None:
        private, self._private = self._private, None
        if private is not None:
            await private.close()

    async def disconnect(self) -> None:
        """Unregister the sub-account, release the shared reference or close the private
        client; safe to repeat."""
        async with self._guard():
            await self._close_trading()
            await self._unregister()
            if self._holds_reference:
                self._holds_reference = False
                await DriftClientManager.release_client(self.network, rpc_url=self.rpc_url)
            await self._close_private()

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

    # -- for callers without an event loop ------------------------------------------------

    def _run_sync(self, what: str, make: Callable[[], Coroutine[Any, Any, _R]], default: _R) -> _R:
        """Run ``make()`` on the adapter's loop (its own background loop when it has none
        running) and wait for it; ``default`` inside a running loop or on failure."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            log.warning("%s_sync() inside a running event loop: await %s() instead", what, what)
            return default
        loop = self._loop
        if loop is None or not loop.is_running():
            if self._sync is None:
                self._sync = LoopThread(f"driftshare-adapter-{self.network}")
            loop = self._sync.loop
        settings = DriftClientManager.settings()
        try:
            return self._sync_wait(loop, make(), settings.init_timeout_s * 2)
        except Exception as exc:  # the caller gets the default, never an exception
            log.warning("%s_sync() failed: %r", what, exc)
            return default

    @staticmethod
    def _sync_wait(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, _R], timeout: float
    ) -> _R:
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def connect_sync(self, wallet: Keypair | None = None, sub_account: int = 0) -> bool:
        """:meth:`connect` for callers without an event loop.

        The adapter then lives on a background event loop of its own (one thread), which
        keeps its subscriptions live between calls; :meth:`disconnect_sync` ends it.
        """
        return self._run_sync("connect", lambda: self.connect(wallet, sub_account), False)

    def verify_drift_account_sync(self) -> dict[str, Any]:
        """:meth:`verify_drift_account` for callers without an event loop."""
        return self._run_sync(
            "verify_drift_account", self.verify_drift_account, self._unregistered_status()
        )

    def disconnect_sync(self) -> None:
        """:meth:`disconnect` for callers without an event loop; stops the adapter's own
        background loop."""
        sync, self._sync = self._sync, None
        if sync is None or sync.loop is not self._loop:
            self._run_sync("disconnect", self.disconnect, None)
            return
        self._run_sync("disconnect", self._disconnect_own_loop, None)
        sync.stop()

    async def _disconnect_own_loop(self) -> None:
        await self.disconnect()
        # Only this adapter used its loop: close whatever reads left open on it.
        await DriftClientManager.shutdown()

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

    async def get_mark_price(self, market: str | int) -> float | None:
        """The AMM bid/ask mid of ``market`` (``SOL-PERP``, ``sol``, ``0``), or None."""
        price = await self._read(f"mark of {market!r}", lambda r: r.get_mark_price(market))
        return None if price is None else float(price)

    async def get_perp_markets(self) -> list[str]:
        """The symbol of every subscribed perp market, by index."""
        return [str(m["symbol"]) for m in await self.get_all_perp_markets()]

    # -- the signer's sub-account: no RPC request per read ----------------------------------

    async def get_account_info(self) -> dict[str, Any] | None:
        """``AccountInfo.to_dict()`` of the registered sub-account, or None."""
        account = self.account
        info = None if account is None else account.account_info()
        return None if info is None else info.to_dict()

    async def get_positions(self) -> list[dict[str, Any]]:
        """``PositionInfo.to_dict()`` of every open perp position ([] without an account)."""
        account = self.account
        positions = None if account is None else account.positions()
        return [p.to_dict() for p in positions or []]

    async def get_open_orders(self) -> list[dict[str, Any]]:
        """``OrderInfo.to_dict()`` of every open order ([] without an account)."""
        account = self.account
        orders = None if account is None else account.open_orders()
        return [o.to_dict() for o in orders or []]

    async def verify_drift_account(self) -> dict[str, Any]:
        """``AccountStatus.to_dict()``: whether the sub-account can trade, and if not why
        (a missing account's message says how to initialize it)."""
        account = self.account
        if account is None:
            return self._unregistered_status()
        return account.status().to_dict()

    def _unregistered_status(self) -> dict[str, Any]:
        signer, sub_account = self._signer, self._sub_account
        if signer is None:
            message = "no signer: pass a wallet to connect() or set DRIFT_KEYPAIR"
            authority, user_account = "", ""
        else:
            message = self._problem or "not connected: call connect(wallet, sub_account) first"
            authority = str(signer.pubkey())
            user_account = str(
                get_user_account_public_key(DRIFT_PROGRAM_ID, signer.pubkey(), sub_account)
            )
        return missing_status(
            authority=authority,
            sub_account_id=sub_account,
            user_account=user_account,
            message=message,
        ).to_dict()
