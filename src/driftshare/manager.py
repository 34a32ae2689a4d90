"""DriftClientManager: one shared, lazily created, reference-counted DriftClient per network."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx
from driftpy.account_subscription_config import AccountSubscriptionConfig
from driftpy.drift_client import DriftClient
from driftpy.types import get_ws_url
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.websocket_api import connect as ws_connect
from solders.keypair import Keypair

from driftshare import metrics
from driftshare.config import PUBLIC_RPC_URLS, Settings, load_settings, redact_text, redact_url
from driftshare.marketdata import ClientSource, MarketDataReader, MarketSource
from driftshare.models import FundingRateData, MarketData, market_name
from driftshare.subscription import (
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

_T = TypeVar("_T")

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


async def _unsubscribe_fully(subscriber: Any) -> None:
    """Unsubscribe ``subscriber`` to the end even if the caller is cancelled meanwhile.

    A subscriber left half-unsubscribed keeps sockets and tasks open for good, so the
    caller's cancellation is re-raised only once the unsubscription has finished.
    """
    task: asyncio.Future[Any] = asyncio.ensure_future(subscriber.unsubscribe())
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            if not task.done():  # the caller was cancelled, not the unsubscription
                cancelled = cancelled or exc
        except Exception:  # reported below, from the task itself
            break
    if not task.cancelled() and task.exception() is not None:
        log.debug("unsubscribe failed: %s", redact_text(repr(task.exception())))
    if cancelled is not None:
        raise cancelled


async def _close_session(session: httpx.AsyncClient) -> None:
    with suppress(Exception):
        await session.aclose()


class _Generation:
    """One life of a shared client: from the first reference to the close after the last.

    It owns what that life opened (client, connection, HTTP sessions) and every task it
    started, so its close finds all of them. Once retired it starts no task and publishes
    nothing: work still under way sees :meth:`check` raise and ends.
    """

    def __init__(self, keypair: Keypair, after: asyncio.Task[None] | None) -> None:
        self.keypair = keypair
        self.after = after
        self.client: Any = None
        self.connection: AsyncClient | None = None
        self.created_at = time.monotonic()
        self.ready_at: float | None = None
        self.retired = False
        self.attempt: asyncio.Future[Any] | None = None
        self.init_task: asyncio.Task[None] | None = None
        self.health_task: asyncio.Task[None] | None = None
        self.reconnecting: asyncio.Task[bool] | None = None
        self.old_sessions: list[httpx.AsyncClient] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, _T], name: str) -> asyncio.Task[_T] | None:
        """Run ``coro`` as a task of this generation; None (and not run) once retired."""
        if self.retired:
            coro.close()
            return None
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def check(self) -> None:
        """Raise CancelledError in a retired generation: its close cancels the work anyway."""
        if self.retired:
            raise asyncio.CancelledError

    def settle(self, result: Any) -> None:
        """Answer the callers waiting for the current start-up attempt."""
        if self.attempt is not None and not self.attempt.done():
            self.attempt.set_result(result)
        self.attempt = None

    def retire(self) -> None:
        self.retired = True
        self.ready_at = None
        self.settle(None)

    async def close_old_sessions(self) -> None:
        """Close the HTTP sessions a reconnect replaced, once their requests have ended."""
        while self.old_sessions:
            await _close_session(self.old_sessions[0])
            self.old_sessions.pop(0)

    async def close(self) -> None:
        """Cancel every task of this (retired) generation and close what it opened."""
        await _cancel_all(list(self._tasks))
        if self.client is not None:
            await _unsubscribe_fully(self.client.account_subscriber)
        await self.close_old_sessions()
        if self.connection is not None:
            with suppress(Exception):
                await self.connection.close()
        self.client = None
        self.connection = None


class _Shared:
    """The shared client of one (network, RPC URL, event loop): references, generations,
    mode and health."""

    def __init__(self, network: str, url: str, settings: Settings) -> None:
        self.network = network
        self.url = url
        self.settings = settings
        self.loop = asyncio.get_running_loop()
        self.refs = 0
        self.gen: _Generation | None = None
        self.rpc = RpcStats()
        self.mode: SubscriptionMode = settings.subscription
        self.health = "idle"
        self.initializations = 0
        self.init_failures = 0
        self.mode_switches = 0
        self.last_error: str | None = None
        self.unavailable: dict[int, str] = {}
        self.last_data_at: float | None = None
        self._data_slot = 0
        self._market_seen: dict[int, tuple[int, float]] = {}
        self._closing: asyncio.Task[None] | None = None
        self._lease: asyncio.TimerHandle | None = None
        self._lease_until = 0.0
        self._reads = 0
        self._rng = random.Random()

    @property
    def client(self) -> Any:
        """The current generation's DriftClient, or None."""
        return None if self.gen is None else self.gen.client

    @property
    def initialized(self) -> bool:
        return self.gen is not None and self.gen.ready_at is not None

    # -- references -------------------------------------------------------------------------

    def _generation(self) -> _Generation:
        """The live generation, started when there is none (ValueError for a bad keypair)."""
        if self.gen is None:
            # The keypair first: a bad DRIFT_KEYPAIR fails here, once, before anything opens.
            self.gen = _Generation(_load_keypair(self.settings), after=self._closing)
        return self.gen

    def _refuse(self, exc: ValueError) -> None:
        self.health = "down"
        self.last_error = str(exc)
        log.error("cannot start the shared %s DriftClient: %s", self.network, exc)

    async def acquire(self) -> Any:
        try:
            gen = self._generation()
        except ValueError as exc:  # a configuration error: no background retry can fix it
            self._refuse(exc)
            return None
        self.refs += 1
        self._publish_refs()
        try:
            return await self._ready(gen)
        except asyncio.CancelledError:
            self._drop_ref()
            raise

    def _drop_ref(self) -> asyncio.Task[None] | None:
        if self.refs == 0:
            log.info("release_client(%r) with no reference held: ignored", self.network)
            return None
        self.refs -= 1
        self._publish_refs()
        return self._retire_if_unused()

    def _retire_if_unused(self) -> asyncio.Task[None] | None:
        """Retire the generation once neither a reference nor a read lease keeps it."""
        if self.refs > 0 or self._lease is not None or self.gen is None:
            return None
        # Detached now, so a get_client arriving during the close starts a new generation
        # (after the close) instead of being handed a client about to be torn down.
        gen, self.gen = self.gen, None
        gen.retire()
        self._closing = asyncio.create_task(
            self._close(gen, self._closing), name=f"driftshare-close-{self.network}"
        )
        return self._closing

    async def release(self) -> None:
        closing = self._drop_ref()
        if closing is not None:
            await asyncio.shield(closing)

    def close_now(self) -> asyncio.Task[None] | None:
        """Drop every reference and the read lease: the generation closes (shutdown)."""
        self.refs = 0
        self._publish_refs()
        return self.drop_lease() or self._closing

    def _publish_refs(self) -> None:
        log.debug("%s references: %d", self.network, self.refs)
        metrics.CLIENT_REF_COUNT.labels(self.network).set(self.refs)

    # -- cached reads: a lease instead of a reference ---------------------------------------

    async def read(self) -> MarketSource | None:
        """The source for a cached read.

        While engines hold references a read takes none, so it never keeps the client open
        after they leave. A read with no holder starts the client if needed under a lease
        that ends ``idle_close_s`` after the last such read has finished.
        """
        try:
            gen = self._generation()
        except ValueError as exc:
            self._refuse(exc)
            return None
        if self.refs == 0:
            self._extend_lease()
        self._reads += 1
        try:
            await self._ready(gen)
        finally:
            self._reads -= 1
            self._lease_until = time.monotonic() + self.settings.idle_close_s
        return self.source()

    def _extend_lease(self) -> None:
        self._lease_until = time.monotonic() + self.settings.idle_close_s
        if self._lease is None:
            self._lease = self.loop.call_later(self.settings.idle_close_s, self._lease_expired)

    def _lease_expired(self) -> None:
        remaining = self._lease_until - time.monotonic()
        if self._reads:  # a read is waiting for the start: idle time counts from its end
            remaining = self.settings.idle_close_s
        if remaining > 0:
            self._lease = self.loop.call_later(remaining, self._lease_expired)
            return
        self._lease = None
        self._retire_if_unused()

    def drop_lease(self) -> asyncio.Task[None] | None:
        """End the read lease now; the generation closes if no reference holds it."""
        if self._lease is not None:
            self._lease.cancel()
            self._lease = None
        return self._retire_if_unused()

    # -- initialization ---------------------------------------------------------------------

    async def _ready(self, gen: _Generation) -> Any:
        if gen.ready_at is not None and gen.init_task is None:
            return gen.client
        if gen.init_task is None:
            gen.attempt = self.loop.create_future()
            gen.init_task = gen.spawn(self._init_loop(gen), f"driftshare-init-{self.network}")
            if gen.init_task is None:  # retired meanwhile
                gen.settle(None)
        if gen.attempt is None:
            # Between retries: callers get None now instead of blocking on the backoff.
            return None
        return await asyncio.shield(gen.attempt)

    async def _init_loop(self, gen: _Generation) -> None:
        """Start the client, retrying with full-jitter exponential backoff until retired.

        Retries go on as long as the generation lives, so a client whose RPC was down at
        start comes up by itself once it returns; the backoff is capped at
        ``retry_backoff_cap``.
        """
        settings = self.settings
        try:
            if gen.after is not None:
                await asyncio.shield(gen.after)
            attempt = 0
            while True:
                if attempt:
                    cap = min(
                        settings.retry_backoff_cap,
                        settings.retry_backoff * 2 ** min(attempt - 1, 30),
                    )
                    await asyncio.sleep(self._rng.uniform(0, cap))
                    gen.attempt = self.loop.create_future()
                try:
                    await asyncio.wait_for(self._start(gen), settings.init_timeout_s)
                except Exception as exc:  # any failure: log, hand out None, retry in background
                    gen.check()
                    self._record_failure(exc, attempt)
                    await self._discard_subscriber(gen)
                    gen.settle(None)
                    attempt += 1
                    continue
                gen.settle(gen.client)
                return
        finally:
            if gen.init_task is asyncio.current_task():
                gen.settle(None)
                gen.init_task = None

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

    def _open(self, gen: _Generation) -> None:
        """Create the generation's connection and (unsubscribed) DriftClient."""
        gen.connection = self._new_connection()
        gen.client = DriftClient(
            gen.connection,
            gen.keypair,
            env=self.network,
            account_subscription=AccountSubscriptionConfig("websocket", commitment=Confirmed),
            perp_market_indexes=[],
            spot_market_indexes=[],
            oracle_infos=[],
        )

    async def _start(self, gen: _Generation) -> None:
        gen.check()
        self.health = "connecting"
        if gen.client is None:
            self._open(gen)
        log.info("starting the shared %s DriftClient at %s", self.network, redact_url(self.url))
        await self._subscribe(gen, self.settings.subscription)
        gen.check()
        self.initializations += 1
        metrics.CLIENT_INITIALIZATIONS.labels(self.network).inc()
        gen.ready_at = time.monotonic()
        self.health = "healthy"
        self._note_data()
        gen.health_task = gen.spawn(self._health_loop(gen), f"driftshare-health-{self.network}")
        log.info(
            "shared %s DriftClient ready: %d perp markets by %s (%d unavailable)",
            self.network,
            len(gen.client.get_perp_market_accounts()),
            self.mode,
            len(self.unavailable),
        )

    async def _subscribe(self, gen: _Generation, mode: SubscriptionMode) -> None:
        """Discover the markets and subscribe in ``mode``; websocket falls back to polling."""
        program = gen.client.program
        discovery = await discover_markets(program, self.settings.perp_markets)
        gen.check()
        self.unavailable = discovery.unavailable
        if mode == "websocket":
            try:
                await self._install_subscriber(gen, self._websocket(gen, discovery))
                self.mode = "websocket"
                return
            except Exception as exc:  # any websocket failure: fall back to polling
                metrics.SUBSCRIPTION_FAILURES.labels(self.network).inc()
                log.warning(
                    "websocket subscription failed (%s); polling instead", redact_text(repr(exc))
                )
        await self._install_subscriber(gen, self._polling(gen, discovery))
        self.mode = "polling"

    def _websocket(self, gen: _Generation, discovery: Discovery) -> WebsocketSubscriber:
        return WebsocketSubscriber(gen.client.program, discovery, Confirmed)

    def _polling(self, gen: _Generation, discovery: Discovery) -> PollingSubscriber:
        loader = ResilientLoader(gen.connection, Confirmed, self.settings.poll_interval_s)
        return PollingSubscriber(gen.client.program, loader, discovery)

    async def _install_subscriber(self, gen: _Generation, subscriber: Any) -> None:
        """Subscribe ``subscriber`` and put it in place of the client's current one.

        Whatever happens, cancellation included, the one left out (the new one on failure,
        the previous one on success) ends fully unsubscribed.
        """
        try:
            await asyncio.wait_for(subscriber.subscribe(), self.settings.init_timeout_s)
            gen.check()
        except BaseException:
            await _unsubscribe_fully(subscriber)
            raise
        previous, gen.client.account_subscriber = gen.client.account_subscriber, subscriber
        if previous is not subscriber:
            await _unsubscribe_fully(previous)

    async def _discard_subscriber(self, gen: _Generation) -> None:
        if gen.client is not None:
            await _unsubscribe_fully(gen.client.account_subscriber)

    # -- health, stall detection, reconnection ----------------------------------------------

    def data_slot(self) -> int:
        """The newest slot among the subscribed markets' and oracles' data."""
        if not self.initialized:
            return 0
        return newest_data_slot(self.client.account_subscriber) or 0

    def _note_data(self) -> bool:
        """Record whether any data advanced since the last look; refresh per-market ages."""
        slot = self.data_slot()
        if self.initialized:
            self._note_market_ages()
        if slot > self._data_slot:
            self._data_slot = slot
            self.last_data_at = time.monotonic()
            return True
        return False

    def _note_market_ages(self) -> None:
        """Publish ``drift_data_age_seconds``: time since a market's account or oracle advanced."""
        now = time.monotonic()
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

    async def _health_loop(self, gen: _Generation) -> None:
        settings = self.settings
        failures = 0
        seen_slot = self.data_slot()
        polling_since: float | None = None
        check_timeout = max(settings.request_timeout_s, settings.health_interval_s)
        while True:
            await asyncio.sleep(settings.health_interval_s)
            gen.check()
            try:
                self._note_data()
                slot = self.data_slot()
                if slot > seen_slot:
                    # New data proves upstream works: no getSlot, so a client whose data flows
                    # sends no periodic HTTP request at all.
                    seen_slot = slot
                    stalled = False
                else:
                    try:
                        rpc_slot = (
                            await asyncio.wait_for(gen.connection.get_slot(), check_timeout)  # type: ignore[union-attr]
                        ).value
                    except Exception as exc:  # an unhealthy RPC: count and, past a limit, rebuild
                        gen.check()
                        failures += 1
                        self.health = "degraded"
                        self.last_error = f"health check failed: {type(exc).__name__}"
                        if failures >= _UNHEALTHY_CHECKS_BEFORE_RECONNECT:
                            failures = 0
                            self._reconnect_in_background(gen)
                        continue
                    stalled = (
                        self.last_data_at is not None
                        and time.monotonic() - self.last_data_at >= settings.ws_stall_s
                        and rpc_slot > seen_slot
                    )
                gen.check()
                failures = 0
                self.health = "healthy"
                now = time.monotonic()
                if self.mode == "websocket" and stalled:
                    metrics.SUBSCRIPTION_FAILURES.labels(self.network).inc()
                    log.warning(
                        "no websocket data for %.0fs while slots advance; polling instead",
                        now - (self.last_data_at or now),
                    )
                    await self._switch(gen, "polling")
                    seen_slot = self.data_slot()
                    polling_since = now
                elif (
                    self.mode == "polling"
                    and settings.subscription == "websocket"
                    and now - (polling_since or 0) >= settings.ws_stall_s
                    and await self._websocket_works()
                ):
                    log.info("websocket notifications flow again; leaving polling")
                    await self._switch(gen, "websocket")
                    seen_slot = self.data_slot()
                    polling_since = None
            except Exception as exc:  # one unexpected fault must not end health checking
                self.last_error = redact_text(f"health check crashed: {exc!r}")
                log.exception("health check of the shared %s DriftClient failed", self.network)

    async def _switch(self, gen: _Generation, mode: SubscriptionMode) -> None:
        try:
            await self._subscribe(gen, mode)
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

    def _reconnect_in_background(self, gen: _Generation) -> asyncio.Task[bool] | None:
        """Start a rebuild of ``gen`` unless one is running; concurrent requests share it."""
        if gen.reconnecting is None or gen.reconnecting.done():
            gen.reconnecting = gen.spawn(
                self._reconnect(gen), f"driftshare-reconnect-{self.network}"
            )
        return gen.reconnecting

    async def reconnect(self) -> bool:
        """Rebuild the HTTP session and the subscriptions of the same DriftClient object."""
        if self.gen is None or self.refs == 0:
            return False
        task = self._reconnect_in_background(self.gen)
        if task is None:
            return False
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and (current is None or not current.cancelling()):
                return False  # the generation closed under the rebuild
            raise

    def _renew_session(self, gen: _Generation) -> None:
        """Engines hold this DriftClient and its AsyncClient: renew the HTTP session inside.

        The new session is in place before the old one closes, and the old one closes only
        once the requests in flight on it have ended.
        """
        provider: Any = gen.connection._provider  # type: ignore[union-attr]
        gen.old_sessions.append(provider.session)
        install_transport(
            gen.connection,
            RateLimitedTransport.from_settings(self.settings, stats=self.rpc),
        )

    async def _reconnect(self, gen: _Generation) -> bool:
        if gen.init_task is not None:
            return await self._ready(gen) is not None
        log.info("reconnecting the shared %s DriftClient", self.network)
        await _cancel_all([gen.health_task])
        gen.health_task = None
        gen.ready_at = None
        await self._discard_subscriber(gen)
        gen.check()
        if gen.connection is not None:
            self._renew_session(gen)
        self._data_slot = 0
        ready = await self._ready(gen) is not None
        await gen.close_old_sessions()
        return ready

    # -- cleanup ----------------------------------------------------------------------------

    async def _close(self, gen: _Generation, previous: asyncio.Task[None] | None) -> None:
        # Closes run one after another: the latest one ends only when every earlier one has,
        # so a new generation that waits for it never meets a close still under way.
        if previous is not None:
            await asyncio.shield(previous)
        if gen.client is not None:
            log.info("last reference released: closing the shared %s DriftClient", self.network)
        await gen.close()
        if self.gen is None:
            self.health = "idle"
            self.mode = self.settings.subscription
            self._data_slot = 0

    def source(self) -> MarketSource | None:
        """The subscribed accounts to read from, or None while they cannot be trusted."""
        if not self.initialized or self.health != "healthy":
            return None
        return ClientSource(self.client)

    def snapshot(self) -> dict[str, Any]:
        self._note_data()  # observation only: the health loop keeps its own progress marker
        now = time.monotonic()
        rpc = self.rpc.snapshot()
        gen = self.gen
        ready_after = None
        if gen is not None and gen.ready_at is not None:
            ready_after = gen.ready_at - gen.created_at
        return {
            "network": self.network,
            "rpc_url": redact_url(self.url),
            "references": self.refs,
            "read_lease": self._lease is not None,
            "initialized": self.initialized,
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
            "time_to_ready_s": ready_after,
            "last_update_age_s": (now - self.last_data_at) if self.last_data_at else None,
            "data_slot": self._data_slot,
        }


class DriftClientManager:
    """The process-wide registry of shared DriftClients, one per (network, RPC URL).

    Every method is a classmethod: engines call ``await DriftClientManager.get_client()``
    and ``await DriftClientManager.release_client()``, or use :meth:`session`.

    Several event loops: asyncio sockets and tasks belong to one loop, so each running
    event loop (each thread running one) gets its own shared client per (network, RPC URL),
    counted and closed on its own. Calls made inside a loop act on that loop's client;
    synchronous calls outside any loop (:meth:`stats`, :meth:`is_initialized`) report the
    newest one. A client whose loop has closed is forgotten: its sockets died with it.
    """

    _settings: ClassVar[Settings | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()
    _shared: ClassVar[dict[tuple[str, str, asyncio.AbstractEventLoop], _Shared]] = {}
    _readers: ClassVar[dict[tuple[str, str], MarketDataReader]] = {}

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
        """This loop's shared client; outside any loop, the newest one of any loop."""
        try:
            network, url = cls._url(network, rpc_url)
        except ValueError:
            return None
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with cls._lock:
            if loop is not None:
                return cls._shared.get((network, url, loop))
            found = [s for (n, u, _), s in cls._shared.items() if (n, u) == (network, url)]
        return found[-1] if found else None

    @classmethod
    def _shared_for(cls, network: str | None, rpc_url: str | None) -> _Shared:
        """This loop's shared client, created (once, whatever the threads) on first use."""
        network, url = cls._url(network, rpc_url)
        settings = cls.settings()
        loop = asyncio.get_running_loop()
        with cls._lock:
            for key in [k for k in cls._shared if k[2].is_closed()]:
                del cls._shared[key]
            shared = cls._shared.get((network, url, loop))
            if shared is None:
                shared = cls._shared[(network, url, loop)] = _Shared(network, url, settings)
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
        client: DriftClient | None = await shared.acquire()
        return client

    @classmethod
    async def release_client(
        cls, network: str | None = None, *, rpc_url: str | None = None
    ) -> None:
        """Drop one reference; the last one unsubscribes and closes everything."""
        shared = cls._find(network, rpc_url)
        if shared is None:
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
        return shared is not None and shared.initialized

    @classmethod
    async def force_reconnect(
        cls, network: str | None = None, *, rpc_url: str | None = None
    ) -> bool:
        """Rebuild the connection and subscriptions under the same references."""
        shared = cls._find(network, rpc_url)
        return False if shared is None else await shared.reconnect()

    @classmethod
    def stats(cls, network: str | None = None, *, rpc_url: str | None = None) -> dict[str, Any]:
        """A plain snapshot of the shared client: references, mode, health, RPC, cache."""
        try:
            key = cls._url(network, rpc_url)
        except ValueError as exc:
            return {"network": network, "references": 0, "initialized": False, "error": str(exc)}
        shared = cls._find(*key)
        if shared is None:
            snapshot: dict[str, Any] = {
                "network": key[0],
                "rpc_url": redact_url(key[1]),
                "references": 0,
                "initialized": False,
                "initializations": 0,
            }
        else:
            snapshot = shared.snapshot()
        reader = cls._readers.get(key)
        snapshot["cache"] = reader.cache.stats() if reader else {"hits": {}, "misses": {}}
        return snapshot

    # -- cached market data (no RPC request per read) -----------------------------------------

    @classmethod
    def market_data(
        cls, network: str | None = None, *, rpc_url: str | None = None
    ) -> MarketDataReader:
        """The cached reader over the shared client (ValueError for an unknown network).

        Reads take no reference: while engines hold the client they keep it open, and once
        the last one has released it closes. A read while none holds it starts the client
        if needed, which then closes ``DRIFT_IDLE_CLOSE_S`` after the last such read, or at
        :meth:`release_market_data` or :meth:`shutdown`.
        """
        key = cls._url(network, rpc_url)
        with cls._lock:
            reader = cls._readers.get(key)
            if reader is None:
                source = functools.partial(cls._read_source, *key)
                reader = MarketDataReader(source, settings=cls.settings(), network=key[0])  # type: ignore[arg-type]
                cls._readers[key] = reader
        return reader

    @classmethod
    async def _read_source(cls, network: str, rpc_url: str) -> MarketSource | None:
        return await cls._shared_for(network, rpc_url).read()

    @classmethod
    async def release_market_data(
        cls, network: str | None = None, *, rpc_url: str | None = None
    ) -> None:
        """Forget the cached reader of ``network``; end its read lease (in this loop)."""
        key = cls._find_key(network, rpc_url)
        if key is None:
            return
        with cls._lock:
            cls._readers.pop(key, None)
        shared = cls._find(*key)
        closing = None if shared is None else shared.drop_lease()
        if closing is not None:
            await asyncio.shield(closing)

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
        """Close this loop's shared clients regardless of references (process exit, tests)."""
        loop = asyncio.get_running_loop()
        with cls._lock:
            cls._readers.clear()
            mine = [(k, s) for k, s in cls._shared.items() if k[2] is loop or k[2].is_closed()]
        for key, shared in mine:
            if key[2] is loop:
                closing = shared.close_now()
                if closing is not None:
                    await asyncio.shield(closing)
            with cls._lock:
                cls._shared.pop(key, None)
