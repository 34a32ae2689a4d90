"""The life of one shared client: references, read leases, start-up with retries, close.

Each life is a :class:`~driftshare._client.generation.Generation`: the first reference (or a read
with no holder) starts one, and the close after the last reference or the read lease's
expiry ends it. The health checks it runs live in :mod:`driftshare._client.health`, how it
subscribes in :mod:`driftshare._client.subscribing`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
from driftpy.account_subscription_config import AccountSubscriptionConfig
from driftpy.drift_client import DriftClient
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed

from driftshare import _metrics as metrics
from driftshare._accounts import AccountRegistry
from driftshare._accounts.hosts import SharedHost
from driftshare._client.endpoints import EndpointSelector
from driftshare._client.generation import Generation
from driftshare._client.health import (
    data_slot,
    failover_loop,
    health_loop,
    publish_data_ages,
    publish_endpoint,
    reconnect_in_background,
    switch_mode,
)
from driftshare._client.keypair import load_keypair
from driftshare._client.subscribing import Subscriptions
from driftshare._data.freshness import Confirmer
from driftshare._data.grpc_subscription import GrpcSubscriber
from driftshare._data.ledger import AccountLedger, AccountRecord, LedgerEntry
from driftshare._data.marketdata import ClientSource, MarketSource
from driftshare._data.tap import AccountTap
from driftshare._data.websocket_subscription import WebsocketSubscriber
from driftshare._transport import (
    RateLimitedTransport,
    RpcStats,
    SharedLimits,
    install_transport,
    post_batch,
)
from driftshare._tx import ConnectionRpc, TransactionPath, install_path
from driftshare.config import (
    ConfigError,
    Settings,
    SubscriptionMode,
    redact_text,
    redact_url,
    split_rpc_urls,
)

if TYPE_CHECKING:
    from driftshare._snapshot import SnapshotKeeper, WarmSource

__all__ = ["SharedClient"]

log = logging.getLogger(__name__)


class _StartStats(RpcStats):
    """RpcStats that also reports each request that was not answered with success."""

    def __init__(self, on_failed: Callable[[str, str], None]) -> None:
        super().__init__()
        self._on_failed = on_failed

    def record_request(self, method: str, status: str) -> None:
        super().record_request(method, status)
        if not status.startswith("2"):
            self._on_failed(method, status)


class SharedClient(Subscriptions):
    """The shared client of one (network, RPC URL list, event loop): references,
    generations, mode, health and the active endpoint."""

    def __init__(self, network: str, url: str, settings: Settings) -> None:
        self.network = network
        self.url = url
        self.endpoints = EndpointSelector(split_rpc_urls(url))
        self._endpoint_by_key = {_endpoint_key(httpx.URL(u)): u for u in self.endpoints.urls}
        publish_endpoint(self)
        self.settings = settings
        self.limits = SharedLimits.from_settings(settings)
        """Rate limit and back-pressure of every HTTP session this client ever opens."""
        self.loop = asyncio.get_running_loop()
        self.refs = 0
        self.gen: Generation | None = None
        self.rpc = _StartStats(self._request_failed)
        self.mode: SubscriptionMode = settings.subscription
        self.health = "idle"
        self.initializations = 0
        self.init_failures = 0
        self.mode_switches = 0
        self.grpc_down_since: float | None = None
        """``time.monotonic()`` when the gRPC stream last failed for good (fell back)."""
        self.last_error: str | None = None
        self.config_error: str | None = None
        """Set once a setting makes every start fail (a bad DRIFT_KEYPAIR): no retries."""
        self.unavailable: dict[int, str] = {}
        self.ledger: AccountLedger = AccountLedger()
        """Every subscribed account's raw bytes, slot and confirmation, across generations."""
        self.tap: AccountTap | None = None
        self.last_confirmed_at: float | None = None
        """``time.monotonic()`` of the newest confirmation of any account."""
        self.snapshots: SnapshotKeeper | None = None
        if settings.snapshot_path is not None:
            # Imported on use: `import driftshare` stays as light as driftpy allows.
            from driftshare._snapshot import snapshot_keeper

            self.snapshots = snapshot_keeper(self.ledger, settings, network, url)
        self._warm: WarmSource | None = None
        self._warming: asyncio.Task[int] | None = None
        if settings.share_url is None and self.snapshots is not None:
            # A fleet member starts from Redis's last values; see _start.
            self._warming = self.loop.create_task(
                self.load_snapshot(), name=f"driftshare-snapshot-load-{network}"
            )
        self.ledger.add_listener(self._on_ledger)
        self.accounts = AccountRegistry(SharedHost(self))
        """The signers and sub-accounts engines registered, watched on this subscription."""
        self.confirmer = Confirmer(
            self.ledger,
            pubkeys=lambda: [] if self.tap is None else self.tap.pubkeys(),
            post=self._post_batch,
            inject=self._inject,
            stale_after_s=settings.stale_after_s,
        )
        self.tx = TransactionPath(
            ConnectionRpc(self._connection),
            settings,
            fee_accounts=self._perp_market_keys,
            active=lambda: self.gen is not None,
            socket=self._signature_socket,
        )
        """Every write's one way out, across generations; its work starts with the first."""
        self._closing: asyncio.Task[None] | None = None
        self._lease: asyncio.TimerHandle | None = None
        self._lease_until = 0.0
        self._reads = 0
        self._rng = random.Random()

    async def load_snapshot(self) -> int:
        """Serve the snapshot's accounts, stale, until live data replaces them; how many.

        Started at creation; a fleet member calls it when Redis is unreachable at start.
        """
        if self.snapshots is None or self._warm is not None:
            return 0
        # Off the loop: a mainnet-sized file (165 KiB) reads in milliseconds, but a file may be
        # up to MAX_FILE_BYTES, read, hashed and parsed, on a disk that may be cold.
        contents = await asyncio.to_thread(self.snapshots.read)
        if self._warm is not None or self.initialized:
            return 0  # loaded meanwhile, or live data came first
        confirmed_at = self.last_confirmed_at
        loaded = self.snapshots.apply(contents)
        # The snapshot's confirmations are another process's: they prove no data flows now.
        self.last_confirmed_at = confirmed_at
        if loaded:
            from driftshare._snapshot import WarmSource

            self._warm = WarmSource(self.ledger)
        return loaded

    @property
    def client(self) -> Any:
        """The current generation's DriftClient, or None."""
        return None if self.gen is None else self.gen.client

    def _connection(self) -> AsyncClient | None:
        return None if self.gen is None else self.gen.connection

    def _signature_socket(self) -> WebsocketSubscriber | None:
        # The WebSocket the User accounts ride: signatures ride it too. Polling, gRPC and a
        # fleet follower have none; their signatures are polled.
        subscriber = None if self.client is None else self.client.account_subscriber
        return subscriber if isinstance(subscriber, WebsocketSubscriber) else None

    def _perp_market_keys(self) -> list[str]:
        # The accounts every order writes: their recent fees are the ones to outbid.
        return [entry.record.pubkey for entry in self.ledger if entry.record.kind == "perp"]

    @property
    def initialized(self) -> bool:
        return self.gen is not None and self.gen.ready_at is not None

    # -- references -------------------------------------------------------------------------

    def _generation(self) -> Generation | None:
        """The live generation, started when there is none; None after a configuration error."""
        if self.gen is None:
            if self.config_error is not None:
                return None  # no retry can fix the configuration: refused once, for good
            try:
                # The keypair first: a bad DRIFT_KEYPAIR fails here, before anything opens.
                keypair = load_keypair(self.settings)
            except ConfigError as exc:
                self._refuse(exc)
                return None
            self.gen = Generation(keypair, after=self._closing)
            if self.snapshots is not None:
                self.snapshots.start()
        return self.gen

    def _refuse(self, exc: ConfigError) -> None:
        self.config_error = self.last_error = str(exc)
        self.init_failures += 1
        self.health = "down"
        log.error("cannot start the shared %s DriftClient: %s", self.network, exc)

    async def acquire(self) -> Any:
        gen = self._generation()
        if gen is None:
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
            await asyncio.wait([closing])  # an engine never sees the close's own failure

    def close_now(self) -> asyncio.Task[None] | None:
        """Drop every reference and the read lease: the generation closes (shutdown)."""
        self.refs = 0
        self._publish_refs()
        return self.drop_lease() or self._closing

    def _publish_refs(self) -> None:
        log.debug("%s references: %d", self.network, self.refs)
        if self.gen is not None and self.gen.fleet is not None:
            self.gen.fleet.references = self.refs
        metrics.CLIENT_REF_COUNT.labels(self.network).set(self.refs)

    # -- cached reads: a lease instead of a reference ---------------------------------------

    async def read(self) -> MarketSource | None:
        """The source for a cached read.

        While engines hold references a read takes none, so it never keeps the client open
        after they leave. A read with no holder starts the client if needed under a lease
        that ends ``idle_close_s`` after the last such read has finished.
        """
        gen = self._generation()
        if gen is None:
            return None
        if self.refs == 0:
            self._extend_lease()
        if self._warming is not None:
            await asyncio.shield(self._warming)  # the first read may answer from the snapshot
        if self._warm is not None and not self.initialized:
            # A snapshot answers now, stale, rather than after the first connection.
            self._begin(gen)
            self._lease_until = time.monotonic() + self.settings.idle_close_s
            return self.source()
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

    def _request_failed(self, method: str, status: str) -> None:
        gen = self.gen
        starting = gen is not None and gen.init_task is not None
        if starting and self.last_error is None:
            # The first failure shows in stats() now, not once the retries are spent: with no
            # DRIFT_RPC_URL it is Solana's public endpoint refusing, and the user should see so.
            answer = {"error": "no answer", "timeout": "timed out"}.get(status, f"HTTP {status}")
            self.last_error = f"{method} to {redact_url(self.endpoints.active)}: {answer}"
        if status not in ("error", "timeout") or gen is None or not starting:
            return
        # A start whose RPC refuses connections or times out would hold its callers through
        # the transport's retries: they get None now and the start goes on in the background.
        # With several endpoints a failing one (or a failed probe of a backup) is the
        # fail-over's to handle: the start may still succeed on the next endpoint.
        if len(self.endpoints.urls) == 1:
            self.health = "down"
            gen.settle(None)

    def _begin(self, gen: Generation) -> None:
        """Start ``gen``'s start-up in the background unless it runs or is done."""
        if gen.ready_at is None and gen.init_task is None:
            gen.attempt = self.loop.create_future()
            gen.init_task = gen.spawn(self._init_loop(gen), f"driftshare-init-{self.network}")
            if len(self.endpoints.urls) > 1 and gen.failover_task is None:
                gen.failover_task = gen.spawn(
                    failover_loop(self, gen), f"driftshare-failover-{self.network}"
                )
            if gen.init_task is None:  # retired meanwhile
                gen.settle(None)

    async def _ready(self, gen: Generation) -> Any:
        if gen.ready_at is not None and gen.init_task is None:
            return gen.client
        self._begin(gen)
        if gen.attempt is None:
            # Between retries: callers get None now instead of blocking on the backoff.
            return None
        return await asyncio.shield(gen.attempt)

    async def _init_loop(self, gen: Generation) -> None:
        """Start the client, retrying with full-jitter exponential backoff until retired.

        Retries go on as long as the generation lives, so a client whose RPC was down at
        start comes up by itself once it returns; the backoff is capped at
        ``retry_backoff_cap``.
        """
        settings = self.settings
        try:
            if gen.after is not None:
                # However the previous close ended, it has ended: this start never inherits
                # its failure.
                await asyncio.wait([gen.after])
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
            self.url,
            self.last_error,
        )

    def _new_connection(self) -> AsyncClient:
        connection = AsyncClient(
            self.endpoints.active, commitment=Confirmed, timeout=self.settings.request_timeout_s
        )
        install_transport(connection, self.transport())
        return connection

    def transport(self) -> RateLimitedTransport:
        """A new HTTP transport within this client's limits; what it sees of each endpoint
        feeds the endpoint selector."""
        return RateLimitedTransport.from_settings(
            self.settings, stats=self.rpc, on_result=self._endpoint_result, limits=self.limits
        )

    def _endpoint_result(self, url: httpx.URL, served: bool) -> None:
        endpoint = self._endpoint_by_key.get(_endpoint_key(url))
        if endpoint is not None:
            self.endpoints.report(endpoint, served)

    def _open(self, gen: Generation) -> None:
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
        install_path(gen.client, self.tx)

    async def _start(self, gen: Generation) -> None:
        gen.check()
        self.health = "connecting"
        if gen.client is None:
            self._open(gen)
        if self.settings.share_url is not None and gen.fleet is None:
            # A fleet shares one chain: its identity is signed into every record and checked
            # against the group's, so the upstream must say which chain it serves first.
            try:
                genesis = await self._genesis(gen)
            except Exception:
                # No chain identity, no fleet: the snapshot answers until the RPC does.
                await self.load_snapshot()
                raise
            gen.check()
            from driftshare._fleet import Chain, FleetMember  # redis-py only in a fleet

            gen.fleet = FleetMember(
                self.settings,
                Chain(self.network, genesis, str(gen.client.program_id)),
                self.ledger,
                lambda: self._on_fleet_change(gen),
                data_flows=self.upstream_answers,
                subscribed=lambda: None if self.tap is None else self.tap.pubkeys(),
            )
            gen.fleet.references = self.refs
            await gen.fleet.join()
            if gen.fleet.refused is not None:
                self.last_error = gen.fleet.refused
            if gen.fleet.fallback:
                # Redis is unreachable at start: the snapshot answers until upstream does.
                await self.load_snapshot()
            gen.check()
        log.info("starting the shared %s DriftClient at %s", self.network, self.url)
        await self._subscribe(gen, self.settings.subscription)
        gen.check()
        self.initializations += 1
        metrics.CLIENT_INITIALIZATIONS.labels(self.network).inc()
        gen.ready_at = time.monotonic()
        self.health = "healthy"
        publish_data_ages(self)
        gen.health_task = gen.spawn(health_loop(self, gen), f"driftshare-health-{self.network}")
        log.info(
            "shared %s DriftClient ready: %d perp markets by %s (%d unavailable)",
            self.network,
            len(gen.client.get_perp_market_accounts()),
            self.mode,
            len(self.unavailable),
        )

    # -- reactions: a fleet role change, a gRPC stream that gave up ----------------------------

    def _on_fleet_change(self, gen: Generation) -> None:
        """Leader or follower changed: subscribe upstream, or follow, with the same client."""
        role = gen.fleet.role if gen.fleet is not None else "-"
        log.info("fleet role of the shared %s DriftClient: %s", self.network, role)
        if not gen.retired:
            reconnect_in_background(self, gen)

    def _grpc_gave_up(self, gen: Generation) -> None:
        """The serving gRPC stream failed repeatedly: fall back to websocket (or polling)."""
        subscriber = gen.client.account_subscriber if gen.client is not None else None
        if self.mode == "grpc" and isinstance(subscriber, GrpcSubscriber):
            gen.spawn(self._leave_grpc(gen), f"driftshare-grpc-fallback-{self.network}")

    async def _leave_grpc(self, gen: Generation) -> None:
        """Serve by websocket (or polling, if that fails too) until gRPC works again."""
        metrics.SUBSCRIPTION_FAILURES.labels(self.network).inc()
        self.grpc_down_since = time.monotonic()
        log.warning("the %s gRPC stream keeps failing; websocket instead", self.network)
        await switch_mode(self, gen, "websocket")

    # -- freshness: the ledger, its confirmation and the repairs ---------------------------

    def _on_ledger(self, entry: LedgerEntry, changed: bool) -> None:
        if self.last_confirmed_at is None or entry.confirmed_at > self.last_confirmed_at:
            self.last_confirmed_at = entry.confirmed_at
        if self.health == "degraded" and self.initialized:
            self.health = "healthy"  # data flows again

    def data_flows(self) -> bool:
        """Whether some account was confirmed current within ``stale_after_s``."""
        last = self.last_confirmed_at
        return last is not None and time.monotonic() - last <= self.settings.stale_after_s

    def upstream_answers(self) -> bool:
        """Whether data flows, or upstream answered a read within ``stale_after_s`` (a quiet
        chain confirms nothing new, yet its RPC answers)."""
        answered = self.confirmer.last_answer_at
        recent = answered is not None and time.monotonic() - answered <= self.settings.stale_after_s
        return self.data_flows() or recent

    async def _post_batch(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        gen = self.gen
        if gen is None or gen.connection is None:
            raise RuntimeError("no connection")
        return await post_batch(gen.connection, batch)

    def _inject(self, record: AccountRecord) -> None:
        if self.initialized:
            self.client.account_subscriber.inject(record)

    # -- close and observation ------------------------------------------------------------

    async def _close(self, gen: Generation, previous: asyncio.Task[None] | None) -> None:
        # Closes run one after another: the latest one ends only when every earlier one has,
        # so a new generation that waits for it never meets a close still under way.
        if previous is not None:
            await asyncio.wait([previous])  # ended, however: its failure is not this close's
        if gen.client is not None:
            log.info("last reference released: closing the shared %s DriftClient", self.network)
        await gen.close()
        self.accounts.clear()  # registrations end with the connection they were made on
        if self.gen is None and self.snapshots is not None:
            await self.snapshots.stop()  # the clean shutdown's write
        if self.gen is None:
            await self.tx.aclose()
            self.health = "idle"
            self.mode = self.settings.subscription

    def source(self) -> MarketSource | None:
        """The subscribed accounts to read from, or None while they cannot be trusted."""
        client = self.client
        if not self.initialized or self.health != "healthy":
            # Until the client is ready, a loaded snapshot (with whatever live data already
            # replaced it) answers, every value stale.
            return self._warm
        if self._warm is not None:
            # Live and ready: the snapshot's part is over; later outages serve the cache.
            self._warm.close()
            self._warm = None
        if self.gen is not None and self.gen.fleet is not None and self.gen.fleet.feed_lost:
            return None
        return ClientSource(
            client,
            self.ledger,
            lambda: self.unavailable,
            lambda: self.health == "healthy" and self.client is client and self.initialized,
        )

    def _grpc_stats(self) -> dict[str, Any] | None:
        """The gRPC stream's health while it serves; its endpoint alone otherwise."""
        url = self.settings.grpc_url
        if url is None:
            return None
        subscriber = self.client.account_subscriber if self.client is not None else None
        if isinstance(subscriber, GrpcSubscriber):
            return subscriber.stream.stats()
        return {"url": redact_url(url), "connected": False}

    def snapshot(self) -> dict[str, Any]:
        """Plain data about this client; reads only (other threads call it: stats())."""
        from driftshare._fleet import standalone_stats  # on use: redis-py is not imported before

        now = time.monotonic()
        confirmed_at = self.last_confirmed_at
        rpc = self.rpc.snapshot()
        gen = self.gen
        ready_after = None
        if gen is not None and gen.ready_at is not None:
            ready_after = gen.ready_at - gen.created_at
        return {
            "network": self.network,
            "rpc_url": redact_url(self.endpoints.active),
            "rpc_endpoints": [redact_url(url) for url in self.endpoints.urls],
            "endpoint_switches": self.endpoints.switches,
            "references": self.refs,
            "read_lease": self._lease is not None,
            "initialized": self.initialized,
            "initializations": self.initializations,
            "init_failures": self.init_failures,
            "subscription_mode": self.mode,
            "grpc": self._grpc_stats(),
            "mode_switches": self.mode_switches,
            "health": self.health,
            "last_error": self.last_error,
            "config_error": self.config_error,
            "unavailable_markets": dict(self.unavailable),
            "rpc": rpc,
            "rate_limited": rpc.get("rate_limited", 0),
            "retries": rpc.get("retries", 0),
            "time_to_ready_s": ready_after,
            "last_update_age_s": None if confirmed_at is None else now - confirmed_at,
            "data_slot": data_slot(self),
            "freshness": self.confirmer.snapshot(),
            "accounts": self.accounts.snapshot(),
            "transactions": self.tx.snapshot(),
            "warm_start": None if self.snapshots is None else self.snapshots.stats(),
            "fleet": standalone_stats() if gen is None or gen.fleet is None else gen.fleet.stats(),
        }


def _endpoint_key(url: httpx.URL) -> tuple[str, str, int | None, str, bytes]:
    # "http://h:1" and "http://h:1/" are one endpoint.
    return (url.scheme, url.host, url.port, url.path.rstrip("/"), url.query)
