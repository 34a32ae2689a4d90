"""DriftClientManager: one shared, lazily created, reference-counted DriftClient per network."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, ClassVar

from driftpy.account_subscription_config import AccountSubscriptionConfig
from driftpy.drift_client import DriftClient
from driftpy.types import get_ws_url
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.websocket_api import connect as ws_connect
from solders.keypair import Keypair

from driftshare import metrics
from driftshare._fleet import FleetMember, standalone_stats
from driftshare._ledger import AccountLedger
from driftshare._ledger_subscriber import LedgerSubscriber
from driftshare.config import PUBLIC_RPC_URLS, Settings, load_settings, redact_text, redact_url
from driftshare.marketdata import ClientSource, MarketDataReader, MarketSource
from driftshare.models import FundingRateData, MarketData, market_name
from driftshare.subscription import (
    AccountTap,
    Discovery,
    PollingSubscriber,
    ResilientLoader,
    SubscriptionMode,
    WebsocketSubscriber,
    discover_markets,
    newest_data_slot,
)
from driftshare.transport import RateLimitedTransport, RpcStats, install_transport

__all__ = ["DriftClientManager"]

log = logging.getLogger(__name__)

_UNHEALTHY_CHECKS_BEFORE_RECONNECT = 3


def _load_keypair(settings: Settings) -> Keypair:
    """The configured signer, or a throwaway keypair for read-only use."""
    if settings.keypair is None:
        return Keypair()
    secret = settings.keypair.get_secret_value().strip()
    path = Path(secret).expanduser()
    try:
        if path.is_file():
            return Keypair.from_json(path.read_text())
        return Keypair.from_base58_string(secret)
    except (ValueError, OSError) as exc:
        # The message must not echo the secret itself.
        raise ValueError(
            f"DRIFT_KEYPAIR is neither a keypair file nor base58: {type(exc).__name__}"
        ) from None


async def _cancel_all(tasks: list[asyncio.Task[Any] | None]) -> None:
    """Cancel ``tasks`` (never the caller itself) and wait until they have ended."""
    current = asyncio.current_task()
    pending = [t for t in tasks if t is not None and t is not current and not t.done()]
    for task in pending:
        task.cancel()
    for task in pending:
        with suppress(asyncio.CancelledError, Exception):
            await task


class _Shared:
    """The shared client of one (network, RPC URL): references, lifecycle, mode and health."""

    def __init__(self, network: str, url: str, settings: Settings) -> None:
        self.network = network
        self.url = url
        self.settings = settings
        self.loop = asyncio.get_running_loop()
        self.refs = 0
        self.client: Any = None
        self.connection: AsyncClient | None = None
        self.rpc = RpcStats()
        self.mode: SubscriptionMode = settings.subscription
        self.health = "idle"
        self.initializations = 0
        self.init_failures = 0
        self.mode_switches = 0
        self.last_error: str | None = None
        self.unavailable: dict[int, str] = {}
        self.ledger = AccountLedger()
        """Every subscribed account's raw bytes, slot and confirmation, kept across reconnects."""
        self.tap: AccountTap | None = None
        self.created_at = time.time()
        self.ready_at: float | None = None
        self.last_data_at: float | None = None
        self._data_slot = 0
        self._market_seen: dict[int, tuple[int, float]] = {}
        self._attempt: asyncio.Future[Any] | None = None
        self._init_task: asyncio.Task[None] | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._reconnecting: asyncio.Task[bool] | None = None
        self._rng = random.Random()
        self.fleet: FleetMember | None = None
        """This client's fleet membership when ``DRIFT_SHARE_URL`` is set."""

    # -- references -------------------------------------------------------------------------

    async def acquire(self) -> Any:
        self.refs += 1
        self._publish_refs()
        try:
            return await self._ready()
        except asyncio.CancelledError:
            self._drop_ref()
            raise

    def _drop_ref(self) -> asyncio.Task[None] | None:
        if self.refs == 0:
            log.info("release_client(%r) with no reference held: ignored", self.network)
            return None
        self.refs -= 1
        self._publish_refs()
        if self.refs > 0:
            return None
        # Detach this generation now, so a get_client arriving during the close starts afresh
        # (after the close) instead of being handed a client about to be torn down.
        tasks = [self._init_task, self._health_task, self._reconnecting]
        self._settle_attempt(None)
        self._init_task = self._health_task = self._reconnecting = None
        self.ready_at = None
        self._closing = asyncio.create_task(
            self._close(tasks, self._closing), name=f"driftshare-close-{self.network}"
        )
        return self._closing

    async def release(self) -> None:
        closing = self._drop_ref()
        if closing is not None:
            await asyncio.shield(closing)

    def _publish_refs(self) -> None:
        log.debug("%s references: %d", self.network, self.refs)
        if self.fleet is not None:
            self.fleet.references = self.refs
        metrics.CLIENT_REF_COUNT.labels(self.network).set(self.refs)

    # -- initialization ---------------------------------------------------------------------

    async def _ready(self) -> Any:
        if self.client is not None and self._init_task is None and self.ready_at is not None:
            return self.client
        if self._init_task is None:
            self._attempt = self.loop.create_future()
            self._init_task = asyncio.create_task(
                self._init_loop(), name=f"driftshare-init-{self.network}"
            )
        if self._attempt is None:
            # Between retries: callers get None now instead of blocking on the backoff.
            return None
        return await asyncio.shield(self._attempt)

    def _settle_attempt(self, result: Any) -> None:
        if self._attempt is not None and not self._attempt.done():
            self._attempt.set_result(result)
        self._attempt = None

    async def _init_loop(self) -> None:
        """Start the client, retrying with full-jitter exponential backoff while referenced.

        Retries go on as long as someone holds a reference, so a client whose RPC was down
        at start comes up by itself once it returns; the backoff is capped at
        ``retry_backoff_cap``.
        """
        settings = self.settings
        try:
            if self._closing is not None:
                await asyncio.shield(self._closing)
            attempt = 0
            while self.refs > 0:
                if attempt:
                    cap = min(
                        settings.retry_backoff_cap,
                        settings.retry_backoff * 2 ** min(attempt - 1, 30),
                    )
                    await asyncio.sleep(self._rng.uniform(0, cap))
                    self._attempt = self.loop.create_future()
                try:
                    await asyncio.wait_for(self._start(), settings.init_timeout_s)
                except Exception as exc:  # any failure: log, hand out None, retry in background
                    self._record_failure(exc, attempt)
                    await self._discard_subscriber()
                    self._settle_attempt(None)
                    attempt += 1
                    continue
                self._settle_attempt(self.client)
                return
        finally:
            if self._init_task is asyncio.current_task():
                self._settle_attempt(None)
                self._init_task = None

    def _record_failure(self, exc: BaseException, attempt: int) -> None:
        self.init_failures += 1
        self.health = "down"
        cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self.last_error = redact_text(cause)
        # Once, then a reminder every few attempts: no log line per retry in an outage.
        level = logging.WARNING if attempt % 10 == 0 else logging.DEBUG
        log.log(
            level,
            "cannot start the %s DriftClient at %s (%s); retrying in the background",
            self.network,
            redact_url(self.url),
            self.last_error,
        )

    def _new_connection(self) -> AsyncClient:
        settings = self.settings
        connection = AsyncClient(self.url, commitment=Confirmed, timeout=settings.request_timeout_s)
        install_transport(connection, RateLimitedTransport.from_settings(settings, stats=self.rpc))
        return connection

    async def _start(self) -> None:
        self.health = "connecting"
        if self.settings.share_url is not None and self.fleet is None:
            self.fleet = FleetMember(
                self.settings, self.network, self.ledger, self._on_fleet_change
            )
            self.fleet.references = self.refs
            await self.fleet.join()
        if self.client is None:
            # The keypair first: a bad DRIFT_KEYPAIR must not leave a connection behind.
            keypair = _load_keypair(self.settings)
            self.connection = self._new_connection()
            self.client = DriftClient(
                self.connection,
                keypair,
                env=self.network,
                account_subscription=AccountSubscriptionConfig("websocket", commitment=Confirmed),
                perp_market_indexes=[],
                spot_market_indexes=[],
                oracle_infos=[],
            )
        log.info("starting the shared %s DriftClient at %s", self.network, redact_url(self.url))
        await self._subscribe(self.settings.subscription)
        self.initializations += 1
        metrics.CLIENT_INITIALIZATIONS.labels(self.network).inc()
        self.ready_at = time.time()
        self.health = "healthy"
        self._note_data()
        self._health_task = asyncio.create_task(
            self._health_loop(), name=f"driftshare-health-{self.network}"
        )
        log.info(
            "shared %s DriftClient ready: %d perp markets by %s (%d unavailable)",
            self.network,
            len(self.client.get_perp_market_accounts()),
            self.mode,
            len(self.unavailable),
        )

    async def _subscribe(self, mode: SubscriptionMode) -> None:
        """Discover the markets and subscribe in ``mode``; websocket falls back to polling.

        A fleet follower subscribes to nothing upstream: its accounts come from the leader.
        """
        program = self.client.program
        if self.fleet is not None and not self.fleet.upstream:
            await self.fleet.wait_followed()
            await self._install_subscriber(LedgerSubscriber(program, self.ledger))
            return
        discovery = await discover_markets(program, self.settings.perp_markets)
        self.unavailable = discovery.unavailable
        self.tap = tap = AccountTap(self.ledger, discovery.records)
        if mode == "websocket":
            try:
                await self._install_subscriber(self._websocket(discovery, tap))
                self.mode = "websocket"
                return
            except Exception as exc:  # any websocket failure: fall back to polling
                metrics.SUBSCRIPTION_FAILURES.labels(self.network).inc()
                log.warning(
                    "websocket subscription failed (%s); polling instead", redact_text(repr(exc))
                )
        await self._install_subscriber(self._polling(discovery, tap))
        self.mode = "polling"

    def _websocket(self, discovery: Discovery, tap: AccountTap) -> WebsocketSubscriber:
        return WebsocketSubscriber(self.client.program, discovery, Confirmed, tap)

    def _polling(self, discovery: Discovery, tap: AccountTap) -> PollingSubscriber:
        loader = ResilientLoader(self.connection, Confirmed, self.settings.poll_interval_s)
        loader.tap = tap
        return PollingSubscriber(self.client.program, loader, discovery)

    async def _install_subscriber(self, subscriber: Any) -> None:
        try:
            await asyncio.wait_for(subscriber.subscribe(), self.settings.init_timeout_s)
        except BaseException:
            with suppress(Exception):
                await subscriber.unsubscribe()
            raise
        previous, self.client.account_subscriber = self.client.account_subscriber, subscriber
        if previous is not subscriber:
            with suppress(Exception):
                await previous.unsubscribe()

    async def _discard_subscriber(self) -> None:
        if self.client is not None:
            with suppress(Exception):
                await self.client.account_subscriber.unsubscribe()

    # -- health, stall detection, reconnection ----------------------------------------------

    def data_slot(self) -> int:
        """The newest slot among the subscribed markets' and oracles' data."""
        if self.client is None or self.ready_at is None:
            return 0
        return newest_data_slot(self.client.account_subscriber) or 0

    def _note_data(self) -> bool:
        """Record whether any data advanced since the last look; refresh per-market ages."""
        slot = self.data_slot()
        if self.ready_at is not None:
            self._note_market_ages()
        if slot > self._data_slot:
            self._data_slot = slot
            self.last_data_at = time.time()
            return True
        return False

    def _note_market_ages(self) -> None:
        """Publish ``drift_data_age_seconds``: time since a market's account or oracle advanced."""
        now = time.time()
        subscriber = self.client.account_subscriber
        for ds in subscriber.get_market_accounts_and_slots():
            if ds is None:
                continue
            index = ds.data.market_index
            slot = ds.slot
            try:
                oracle = subscriber.get_oracle_price_data_and_slot_for_perp_market(index)
            except Exception:  # driftpy raises for a market it has no oracle for
                oracle = None
            slot = max(slot, getattr(oracle, "slot", 0) or 0)
            seen = self._market_seen.get(index)
            if seen is None or slot > seen[0]:
                seen = self._market_seen[index] = (slot, now)
            metrics.DATA_AGE_SECONDS.labels(market_name(ds.data)).set(now - seen[1])

    async def _health_loop(self) -> None:
        settings = self.settings
        failures = 0
        seen_slot = self.data_slot()
        polling_since: float | None = None
        check_timeout = max(settings.request_timeout_s, settings.health_interval_s)
        while True:
            await asyncio.sleep(settings.health_interval_s)
            self._note_data()
            if self.fleet is not None and not self.fleet.upstream:
                # A follower asks no RPC: its data is as healthy as its feed from Redis.
                self.health = "degraded" if self.fleet.feed_lost else "healthy"
                continue
            slot = self.data_slot()
            if slot > seen_slot:
                # New data proves upstream works: no getSlot, so a client whose data flows
                # sends no periodic HTTP request at all.
                seen_slot = slot
                stalled = False
            else:
                try:
                    rpc_slot = (
                        await asyncio.wait_for(self.connection.get_slot(), check_timeout)  # type: ignore[union-attr]
                    ).value
                except Exception as exc:  # an unhealthy RPC: count and, past a limit, rebuild
                    failures += 1
                    self.health = "degraded"
                    self.last_error = f"health check failed: {type(exc).__name__}"
                    if failures >= _UNHEALTHY_CHECKS_BEFORE_RECONNECT:
                        failures = 0
                        self.reconnect_in_background()
                    continue
                stalled = (
                    self.last_data_at is not None
                    and time.time() - self.last_data_at >= settings.ws_stall_s
                    and rpc_slot > seen_slot
                )
            failures = 0
            self.health = "healthy"
            now = time.time()
            if self.mode == "websocket" and stalled:
                metrics.SUBSCRIPTION_FAILURES.labels(self.network).inc()
                log.warning(
                    "no websocket data for %.0fs while slots advance; polling instead",
                    now - (self.last_data_at or now),
                )
                await self._switch("polling")
                seen_slot = self.data_slot()
                polling_since = now
            elif (
                self.mode == "polling"
                and settings.subscription == "websocket"
                and now - (polling_since or 0) >= settings.ws_stall_s
                and await self._websocket_works()
            ):
                log.info("websocket notifications flow again; leaving polling")
                await self._switch("websocket")
                seen_slot = self.data_slot()
                polling_since = None

    async def _switch(self, mode: SubscriptionMode) -> None:
        try:
            await self._subscribe(mode)
        except Exception as exc:  # keep the current subscriber; the next check tries again
            log.warning("cannot switch to %s: %s", mode, redact_text(repr(exc)))
            return
        self.mode_switches += 1
        self._data_slot = 0
        self._note_data()

    async def _websocket_works(self) -> bool:
        """One short slot subscription: does the WebSocket endpoint deliver notifications?"""

        async def probe() -> bool:
            async with ws_connect(get_ws_url(self.url)) as ws:
                await ws.slot_subscribe()
                await ws.recv()
                await ws.recv()
                return True

        try:
            return await asyncio.wait_for(probe(), self.settings.ws_stall_s)
        except Exception:  # unreachable or silent: not yet
            return False

    def _on_fleet_change(self) -> None:
        """Leader or follower changed: subscribe upstream, or follow, with the same client."""
        log.info(
            "fleet role of the %s client: %s", self.network, self.fleet.role if self.fleet else "-"
        )
        self.reconnect_in_background()

    def reconnect_in_background(self) -> asyncio.Task[bool] | None:
        """Start a rebuild unless one is running; concurrent requests share it."""
        if self.refs == 0:
            return None
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.create_task(
                self._reconnect(), name=f"driftshare-reconnect-{self.network}"
            )
        return self._reconnecting

    async def reconnect(self) -> bool:
        """Rebuild the HTTP session and the subscriptions of the same DriftClient object."""
        task = self.reconnect_in_background()
        return False if task is None else await asyncio.shield(task)

    async def _renew_session(self) -> None:
        # Engines hold this DriftClient and its AsyncClient: renew the HTTP session inside.
        with suppress(Exception):
            await self.connection._provider.session.aclose()  # type: ignore[union-attr]
        install_transport(
            self.connection,
            RateLimitedTransport.from_settings(self.settings, stats=self.rpc),
        )

    async def _reconnect(self) -> bool:
        if self._init_task is not None:
            return await self._ready() is not None
        log.info("reconnecting the shared %s DriftClient", self.network)
        await _cancel_all([self._health_task])
        self._health_task = None
        self.ready_at = None
        await self._discard_subscriber()
        if self.connection is not None:
            await self._renew_session()
        self._data_slot = 0
        return await self._ready() is not None

    # -- cleanup ----------------------------------------------------------------------------

    async def _close(
        self, tasks: list[asyncio.Task[Any] | None], previous: asyncio.Task[None] | None
    ) -> None:
        # Closes run one after another: the latest one ends only when every earlier one has,
        # so a new generation that waits for it never meets a close still under way.
        if previous is not None:
            await asyncio.shield(previous)
        await _cancel_all(tasks)
        fleet, self.fleet = self.fleet, None
        if fleet is not None:
            await fleet.close()
        if self.client is not None:
            log.info("last reference released: closing the shared %s DriftClient", self.network)
        await self._discard_subscriber()
        if self.connection is not None:
            with suppress(Exception):
                await self.connection.close()
        self.client = None
        self.connection = None
        self.ready_at = None
        self.health = "idle"
        self.mode = self.settings.subscription
        self._data_slot = 0

    def source(self) -> MarketSource | None:
        """The subscribed accounts to read from, or None while they cannot be trusted."""
        if self.client is None or self.ready_at is None or self.health != "healthy":
            return None
        if self.fleet is not None and self.fleet.feed_lost:
            return None
        return ClientSource(self.client)

    def snapshot(self) -> dict[str, Any]:
        self._note_data()  # observation only: the health loop keeps its own progress marker
        now = time.time()
        rpc = self.rpc.snapshot()
        return {
            "network": self.network,
            "rpc_url": redact_url(self.url),
            "references": self.refs,
            "initialized": self.client is not None and self.ready_at is not None,
            "initializations": self.initializations,
            "init_failures": self.init_failures,
            "subscription_mode": self.mode,
            "mode_switches": self.mode_switches,
            "health": self.health,
            "last_error": self.last_error,
            "unavailable_markets": dict(self.unavailable),
            "rpc": rpc,
            "rate_limited": rpc.get("rate_limited", 0),
            "retries": rpc.get("retries", 0),
            "time_to_ready_s": (self.ready_at - self.created_at) if self.ready_at else None,
            "last_update_age_s": (now - self.last_data_at) if self.last_data_at else None,
            "data_slot": self._data_slot,
            "fleet": standalone_stats() if self.fleet is None else self.fleet.stats(),
        }


class _ReaderHold:
    """The one reference a network's cached reader holds, taken once however many reads race."""

    def __init__(self, manager: type[DriftClientManager], key: tuple[str, str]) -> None:
        self._manager = manager
        self._key = key
        self._shared: _Shared | None = None
        self._taking: asyncio.Task[None] | None = None

    async def source(self) -> MarketSource | None:
        shared = self._manager._shared.get(self._key)
        if shared is None or shared is not self._shared or shared.refs == 0:
            loop = asyncio.get_running_loop()
            if self._taking is None or self._taking.done() or self._taking.get_loop() is not loop:
                self._taking = loop.create_task(self._take())
            await asyncio.shield(self._taking)
            shared = self._shared
        return None if shared is None else shared.source()

    async def _take(self) -> None:
        await self._manager.get_client(self._key[0], rpc_url=self._key[1])
        self._shared = self._manager._shared.get(self._key)

    async def release(self) -> None:
        shared, self._shared = self._shared, None
        if shared is not None and shared is self._manager._shared.get(self._key):
            await self._manager.release_client(self._key[0], rpc_url=self._key[1])


class DriftClientManager:
    """The process-wide registry of shared DriftClients, one per (network, RPC URL).

    Every method is a classmethod: engines call ``await DriftClientManager.get_client()``
    and ``await DriftClientManager.release_client()``, or use :meth:`session`.
    """

    _settings: ClassVar[Settings | None] = None
    _shared: ClassVar[dict[tuple[str, str], _Shared]] = {}
    _readers: ClassVar[dict[tuple[str, str], tuple[MarketDataReader, _ReaderHold]]] = {}

    @classmethod
    def configure(cls, settings: Settings | None = None, **overrides: Any) -> Settings:
        """Set the settings for clients created from now on (connects nothing)."""
        cls._settings = settings if settings is not None else load_settings(**overrides)
        return cls._settings

    @classmethod
    def settings(cls) -> Settings:
        if cls._settings is None:
            cls._settings = load_settings()
        return cls._settings

    @classmethod
    def _url(cls, network: str | None, rpc_url: str | None) -> tuple[str, str]:
        settings = cls.settings()
        network = network or settings.network
        if network not in PUBLIC_RPC_URLS:
            raise ValueError(
                f"unknown network {network!r}; expected one of {list(PUBLIC_RPC_URLS)}"
            )
        if rpc_url is None:
            rpc_url = settings.rpc_url if network == settings.network and settings.rpc_url else None
        return network, rpc_url or PUBLIC_RPC_URLS[network]

    @classmethod
    def _find(cls, network: str | None, rpc_url: str | None) -> _Shared | None:
        try:
            return cls._shared.get(cls._url(network, rpc_url))
        except ValueError:
            return None

    @classmethod
    def _shared_for(cls, network: str | None, rpc_url: str | None) -> _Shared | None:
        key = cls._url(network, rpc_url)
        loop = asyncio.get_running_loop()
        shared = cls._shared.get(key)
        if shared is not None and shared.loop is not loop:
            if not shared.loop.is_closed():
                log.error("the shared %s DriftClient belongs to another running event loop", key[0])
                return None
            # Its loop is gone, and with it every socket and task it had: start afresh.
            shared = None
        if shared is None:
            shared = cls._shared[key] = _Shared(key[0], key[1], cls.settings())
        return shared

    @classmethod
    async def get_client(
        cls, network: str | None = None, *, rpc_url: str | None = None
    ) -> DriftClient | None:
        """The shared client, created and subscribed on first use; adds one reference.

        ``None`` when it cannot be had now (it keeps trying in the background while
        references are held); never an exception.
        """
        try:
            shared = cls._shared_for(network, rpc_url)
        except ValueError as exc:
            log.error("cannot get a DriftClient: %s", exc)
            return None
        if shared is None:
            return None
        client: DriftClient | None = await shared.acquire()
        return client

    @classmethod
    async def release_client(
        cls, network: str | None = None, *, rpc_url: str | None = None
    ) -> None:
        """Drop one reference; the last one unsubscribes and closes everything."""
        shared = cls._find(network, rpc_url)
        if shared is None or shared.loop is not asyncio.get_running_loop():
            log.info("release_client(%r) with no reference held: ignored", network)
            return
        await shared.release()

    @classmethod
    @asynccontextmanager
    async def session(
        cls, network: str | None = None, *, rpc_url: str | None = None
    ) -> AsyncIterator[DriftClient | None]:
        """``async with DriftClientManager.session() as client:`` pairs get and release."""
        client = await cls.get_client(network, rpc_url=rpc_url)
        try:
            yield client
        finally:
            await cls.release_client(network, rpc_url=rpc_url)

    @classmethod
    def is_initialized(cls, network: str | None = None, *, rpc_url: str | None = None) -> bool:
        shared = cls._find(network, rpc_url)
        return shared is not None and shared.client is not None and shared.ready_at is not None

    @classmethod
    async def force_reconnect(
        cls, network: str | None = None, *, rpc_url: str | None = None
    ) -> bool:
        """Rebuild the connection and subscriptions under the same references."""
        shared = cls._find(network, rpc_url)
        if shared is None or shared.loop is not asyncio.get_running_loop():
            return False
        return await shared.reconnect()

    @classmethod
    def stats(cls, network: str | None = None, *, rpc_url: str | None = None) -> dict[str, Any]:
        """A plain snapshot of the shared client: references, mode, health, RPC, cache."""
        try:
            key = cls._url(network, rpc_url)
        except ValueError as exc:
            return {"network": network, "references": 0, "initialized": False, "error": str(exc)}
        shared = cls._shared.get(key)
        if shared is None:
            snapshot: dict[str, Any] = {
                "network": key[0],
                "rpc_url": redact_url(key[1]),
                "references": 0,
                "initialized": False,
                "initializations": 0,
                "fleet": standalone_stats(),
            }
        else:
            snapshot = shared.snapshot()
        reader = cls._readers.get(key)
        snapshot["cache"] = reader[0].cache.stats() if reader else {"hits": {}, "misses": {}}
        return snapshot

    # -- cached market data (no RPC request per read) -----------------------------------------

    @classmethod
    def market_data(
        cls, network: str | None = None, *, rpc_url: str | None = None
    ) -> MarketDataReader:
        """The cached reader over the shared client (ValueError for an unknown network).

        Its first read takes one reference, held until :meth:`release_market_data` or
        :meth:`shutdown`, so reads alone keep the shared client alive.
        """
        key = cls._url(network, rpc_url)
        entry = cls._readers.get(key)
        if entry is None:
            hold = _ReaderHold(cls, key)
            reader = MarketDataReader(hold.source, settings=cls.settings(), network=key[0])  # type: ignore[arg-type]
            entry = cls._readers[key] = (reader, hold)
        return entry[0]

    @classmethod
    async def release_market_data(
        cls, network: str | None = None, *, rpc_url: str | None = None
    ) -> None:
        """Forget the cached reader of ``network`` and release the reference it holds."""
        key = cls._find_key(network, rpc_url)
        entry = None if key is None else cls._readers.pop(key, None)
        if entry is not None:
            await entry[1].release()

    @classmethod
    def _find_key(cls, network: str | None, rpc_url: str | None) -> tuple[str, str] | None:
        try:
            return cls._url(network, rpc_url)
        except ValueError as exc:
            log.warning("%s", exc)
            return None

    @classmethod
    def _reader(cls, network: str | None) -> MarketDataReader | None:
        key = cls._find_key(network, None)
        return None if key is None else cls.market_data(key[0], rpc_url=key[1])

    @classmethod
    async def get_funding_rate(
        cls, market: str | int, network: str | None = None
    ) -> FundingRateData | None:
        """Funding of one perp market from the shared client, cached; never raises."""
        reader = cls._reader(network)
        return None if reader is None else await reader.get_funding_rate(market)

    @classmethod
    async def get_all_perp_markets(cls, network: str | None = None) -> list[MarketData]:
        """Every subscribed perp market from the shared client, cached; never raises."""
        reader = cls._reader(network)
        return [] if reader is None else await reader.get_all_perp_markets()

    @classmethod
    async def get_market(cls, market: str | int, network: str | None = None) -> MarketData | None:
        """Prices and open interest of one market, cached; never raises."""
        reader = cls._reader(network)
        return None if reader is None else await reader.get_market(market)

    @classmethod
    async def get_mark_price(cls, market: str | int, network: str | None = None) -> float | None:
        """The AMM bid/ask mid of one market, cached; never raises."""
        reader = cls._reader(network)
        return None if reader is None else await reader.get_mark_price(market)

    @classmethod
    async def get_open_interest(cls, market: str | int, network: str | None = None) -> float | None:
        """Open interest of one market in USD, cached; never raises."""
        reader = cls._reader(network)
        return None if reader is None else await reader.get_open_interest(market)

    @classmethod
    def shared_state(
        cls, network: str | None = None, *, rpc_url: str | None = None
    ) -> _Shared | None:
        """The internal state of one shared client (for the market-data layer and tests)."""
        return cls._find(network, rpc_url)

    @classmethod
    async def shutdown(cls) -> None:
        """Close every shared client regardless of references (process exit, tests)."""
        loop = asyncio.get_running_loop()
        cls._readers.clear()
        for key, shared in list(cls._shared.items()):
            if shared.loop is loop and shared.refs:
                shared.refs = 1
                await shared.release()
            elif shared.loop is loop and shared._closing is not None:
                await asyncio.shield(shared._closing)
            del cls._shared[key]
