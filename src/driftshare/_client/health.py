"""Health of a shared client: data flow, stall detection, fallback, rebuilds, fail-over.

Health is "healthy" while account data is confirmed current (the ledger); a getSlot, asked
only while none is, tells whether the RPC answers, never that data is fresh. A websocket
subscription that misses updates (the confirmer finds them) falls back to polling and
returns once notifications flow; an RPC failing several checks in a row gets its HTTP
session and subscriptions rebuilt. With several endpoints, a faster watch feeds the
endpoint selector and follows its choice.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
from driftpy.types import get_ws_url
from solana.rpc.websocket_api import connect as ws_connect

from driftshare import _metrics as metrics
from driftshare._client.endpoints import EndpointSelector
from driftshare._client.generation import Generation
from driftshare._data.freshness import Confirmer
from driftshare._data.grpc_subscription import grpc_works
from driftshare._data.ledger import AccountLedger
from driftshare._data.marketdata import ClientSource, confirmed, newest_data_slot
from driftshare._tasks import cancel_all
from driftshare._transport import (
    RateLimitedTransport,
    RpcStats,
    SharedLimits,
    install_transport,
    retry_after_seconds,
    tls_context,
)
from driftshare.config import Settings, SubscriptionMode, redact_text, redact_url
from driftshare.models import market_name

__all__ = [
    "data_slot",
    "failover_loop",
    "health_loop",
    "publish_data_ages",
    "publish_endpoint",
    "reconnect",
    "reconnect_in_background",
    "switch_mode",
]

log = logging.getLogger(__name__)


class SharedClient(Protocol):
    """What the checks read and drive of :class:`driftshare._client.lifecycle.SharedClient`
    (a protocol, so that this module does not import the one that runs it)."""

    health: str
    last_error: str | None
    mode_switches: int
    grpc_down_since: float | None

    @property
    def network(self) -> str: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def endpoints(self) -> EndpointSelector: ...

    @property
    def limits(self) -> SharedLimits: ...

    @property
    def rpc(self) -> RpcStats: ...

    @property
    def ledger(self) -> AccountLedger: ...

    @property
    def confirmer(self) -> Confirmer: ...

    @property
    def gen(self) -> Generation | None: ...

    @property
    def refs(self) -> int: ...

    @property
    def mode(self) -> SubscriptionMode: ...

    @property
    def client(self) -> Any: ...

    @property
    def initialized(self) -> bool: ...

    def data_flows(self) -> bool: ...

    def grpc_token(self) -> str | None: ...

    def transport(self) -> RateLimitedTransport: ...

    async def _ready(self, gen: Generation) -> Any: ...

    async def _subscribe(self, gen: Generation, mode: SubscriptionMode) -> None: ...

    async def _discard_subscriber(self, gen: Generation) -> None: ...


_UNHEALTHY_CHECKS_BEFORE_RECONNECT = 3
# With several endpoints: how often the active one's data flow is checked (and, if silent,
# the endpoint probed), and how long a probe may take.
_FAILOVER_CHECK_S = 0.5
_PROBE_TIMEOUT_S = 1.0
# How many probes a more preferred endpoint gets per ``recover_after_s``.
_PROBES_PER_RECOVERY = 4


def data_slot(shared: SharedClient) -> int:
    """The newest slot among the subscribed markets' and oracles' data."""
    if not shared.initialized:
        return 0
    return newest_data_slot(shared.client.account_subscriber) or 0


def publish_data_ages(shared: SharedClient) -> None:
    """Publish ``drift_data_age_seconds``: time since a market's account and oracle were last
    both known current (the ``data_age_s`` its values carry)."""
    if not shared.initialized:
        return
    now = time.monotonic()
    source = ClientSource(shared.client, shared.ledger)
    for ds in shared.client.account_subscriber.get_market_accounts_and_slots():
        if ds is not None:
            _, confirmed_at = confirmed(source.accounts(ds.data))
            metrics.DATA_AGE_SECONDS.labels(market_name(ds.data)).set(now - confirmed_at)


async def health_loop(shared: SharedClient, gen: Generation) -> None:
    confirming = gen.spawn(shared.confirmer.run(), f"driftshare-confirm-{shared.network}")
    try:
        await _checks(shared, gen)
    finally:
        await cancel_all([confirming])


async def _checks(shared: SharedClient, gen: Generation) -> None:
    settings = shared.settings
    failures = 0
    polling_since: float | None = None
    check_timeout = max(settings.request_timeout_s, settings.health_interval_s)
    while True:
        await asyncio.sleep(settings.health_interval_s)
        gen.check()
        try:
            publish_data_ages(shared)
            if gen.fleet is not None and not gen.fleet.upstream:
                # A follower asks no RPC: its data is as healthy as its feed from Redis.
                shared.health = "degraded" if gen.fleet.feed_lost else "healthy"
                continue
            if not shared.data_flows():
                # No account confirmed for DRIFT_STALE_AFTER_S: a getSlot only tells whether
                # the RPC answers (no answer for long: rebuild); it never makes data fresh.
                shared.health = "degraded"
                try:
                    async with asyncio.timeout(check_timeout):
                        await gen.connection.get_slot()  # type: ignore[union-attr]
                except Exception as exc:  # an unhealthy RPC: count and, past a limit, rebuild
                    gen.check()
                    failures += 1
                    shared.last_error = f"health check failed: {type(exc).__name__}"
                    if failures >= _UNHEALTHY_CHECKS_BEFORE_RECONNECT:
                        failures = 0
                        reconnect_in_background(shared, gen)
                    continue
                gen.check()
                failures = 0
                shared.last_error = "no account data confirmed recently"
                continue
            failures = 0
            shared.health = "healthy"
            now = time.monotonic()
            stalled = shared.confirmer.stalled()
            # A gRPC stream's own watch (pongs, slots) decides its fallback: the confirmer's
            # reads race a stream busy with a slot's many updates and would call it stalled.
            if (
                shared.mode != "grpc"
                and settings.subscription == "grpc"
                and settings.grpc_url is not None
                and now - (shared.grpc_down_since or 0) >= settings.grpc_stall_s
                and await grpc_works(settings.grpc_url, shared.grpc_token(), settings.grpc_stall_s)
            ):
                log.info("the gRPC endpoint streams again; leaving %s", shared.mode)
                await switch_mode(shared, gen, "grpc")
            elif shared.mode == "websocket" and stalled:
                metrics.SUBSCRIPTION_FAILURES.labels(shared.network).inc()
                log.warning(
                    "websocket subscriptions (%s) missed updates; polling instead",
                    ", ".join(sorted(stalled)),
                )
                await switch_mode(shared, gen, "polling")
                polling_since = now
            elif (
                shared.mode == "polling"
                and settings.subscription == "websocket"
                and now - (polling_since or 0) >= settings.ws_stall_s
                and await _websocket_works(shared)
            ):
                log.info("websocket notifications flow again; leaving polling")
                await switch_mode(shared, gen, "websocket")
                polling_since = None
        except Exception as exc:  # one unexpected fault must not end health checking
            shared.last_error = redact_text(f"health check crashed: {exc!r}")
            log.exception("health check of the shared %s DriftClient failed", shared.network)


async def switch_mode(shared: SharedClient, gen: Generation, mode: SubscriptionMode) -> None:
    """Subscribe in ``mode`` in place of the current subscriber; kept on failure."""
    try:
        await shared._subscribe(gen, mode)
    except Exception as exc:  # keep the current subscriber; the next check tries again
        log.warning("cannot switch to %s: %r", mode, exc)
        return
    shared.mode_switches += 1
    shared.confirmer.resubscribed()


async def _websocket_works(shared: SharedClient) -> bool:
    """One short slot subscription: does the WebSocket endpoint deliver notifications?"""

    async def probe() -> bool:
        async with ws_connect(get_ws_url(shared.endpoints.active)) as ws:
            await ws.slot_subscribe()
            await ws.recv()
            await ws.recv()
            return True

    try:
        async with asyncio.timeout(shared.settings.ws_stall_s):
            return await probe()
    except Exception:  # unreachable or silent: not yet
        return False


def reconnect_in_background(shared: SharedClient, gen: Generation) -> asyncio.Task[bool] | None:
    """Start a rebuild of ``gen`` unless one is running; concurrent requests share it."""
    if gen.reconnecting is None or gen.reconnecting.done():
        gen.reconnecting = gen.spawn(
            _reconnect(shared, gen), f"driftshare-reconnect-{shared.network}"
        )
    return gen.reconnecting


async def reconnect(shared: SharedClient) -> bool:
    """Rebuild the HTTP session and the subscriptions of the same DriftClient object."""
    if shared.gen is None or shared.refs == 0:
        return False
    task = reconnect_in_background(shared, shared.gen)
    if task is None:
        return False
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if task.cancelled() and (current is None or not current.cancelling()):
            return False  # the generation closed under the rebuild
        raise


def renew_session(shared: SharedClient, gen: Generation) -> None:
    """Engines hold this DriftClient and its AsyncClient: renew the HTTP session inside.

    The new session is in place before the old one closes, and the old one closes only
    once the requests in flight on it have ended.
    """
    provider: Any = gen.connection._provider  # type: ignore[union-attr]
    gen.old_sessions.append(provider.session)
    install_transport(gen.connection, shared.transport())


async def _reconnect(shared: SharedClient, gen: Generation) -> bool:
    if gen.init_task is not None:
        return await shared._ready(gen) is not None
    log.info("reconnecting the shared %s DriftClient", shared.network)
    await cancel_all([gen.health_task])
    gen.health_task = None
    gen.ready_at = None
    await shared._discard_subscriber(gen)
    gen.check()
    if gen.connection is not None:
        renew_session(shared, gen)
    ready = await shared._ready(gen) is not None
    await gen.close_old_sessions()
    return ready


# -- several endpoints: fail over and return ------------------------------------------------


async def failover_loop(shared: SharedClient, gen: Generation) -> None:
    """Feed the endpoint selector (data flow, probes) and follow its choice."""
    seen_slot = 0
    # Not through RateLimitedTransport: a probe must not retry or log a warning every time
    # an endpoint stays down. It waits for the client's limiter all the same.
    async with httpx.AsyncClient(timeout=_PROBE_TIMEOUT_S, verify=tls_context()) as prober:
        probes = _Probes(shared, prober)
        while True:
            await asyncio.sleep(_FAILOVER_CHECK_S)
            gen.check()
            if gen.fleet is not None and not gen.fleet.upstream:
                continue  # a fleet follower probes no endpoint: it reads from Redis
            try:
                slot = data_slot(shared)
                if slot > seen_slot:
                    # New data proves the active endpoint works without a request.
                    seen_slot = slot
                    shared.endpoints.report(shared.endpoints.active, True)
                else:
                    await probes.probe(shared.endpoints.active, _FAILOVER_CHECK_S)
                # A return needs ``recover_after_s`` of health: a few probes in that time do.
                every = shared.endpoints.recover_after_s / _PROBES_PER_RECOVERY
                for url in shared.endpoints.preferred():
                    await probes.probe(url, every)
                chosen = shared.endpoints.choose()
                connection = gen.connection
                if connection is not None and connection._provider.endpoint_uri != chosen:
                    await _move_to(shared, gen, chosen)
                    seen_slot = 0
            except Exception as exc:  # one unexpected fault must not end the watch
                shared.last_error = redact_text(f"endpoint watch crashed: {exc!r}")
                log.exception("endpoint watch of the shared %s DriftClient failed", shared.network)


class _Probes:
    """getSlot probes of the endpoints, each no more often than asked, within the client's
    rate limit; a 429 means "alive, back off" and its ``Retry-After`` is honoured."""

    def __init__(
        self,
        shared: SharedClient,
        prober: httpx.AsyncClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._shared = shared
        self._prober = prober
        self._clock = clock
        self._next: dict[str, float] = {}

    async def probe(self, url: str, every: float) -> None:
        """Probe ``url`` unless it was probed within ``every`` seconds or asked for a pause."""
        shared = self._shared
        if self._clock() < self._next.get(url, -math.inf):
            return
        if url == shared.endpoints.active and shared.limits.cooling_down():
            return  # the active endpoint answered 429 lately: it is alive and wants quiet
        await shared.limits.acquire()
        self._next[url] = self._clock() + every
        try:
            response = await self._prober.post(
                url, json={"jsonrpc": "2.0", "id": 1, "method": "getSlot"}
            )
        except httpx.HTTPError as exc:
            timeout = isinstance(exc, httpx.TimeoutException)
            shared.rpc.record_request("getSlot", "timeout" if timeout else "error")
            shared.endpoints.report(url, False)
            return
        status = response.status_code
        shared.rpc.record_request("getSlot", str(status))
        if status == 429:
            pause = retry_after_seconds(response.headers.get("retry-after"), now=datetime.now(UTC))
            cap = shared.settings.retry_backoff_cap
            wait = min(cap, pause if pause is not None else shared.settings.retry_backoff)
            self._next[url] = self._clock() + max(every, wait)
        shared.endpoints.report(url, status in (200, 429))


async def _move_to(shared: SharedClient, gen: Generation, url: str) -> None:
    """Point HTTP at ``url`` and subscribe there (driftpy derives the WebSocket URL from the
    connection's), then drop the old subscriptions: engines never see a gap."""
    provider: Any = gen.connection._provider  # type: ignore[union-attr]
    log.warning(
        "RPC endpoint %s of %s failing or no longer preferred: switching to %s",
        provider.endpoint_uri,
        shared.network,
        url,
    )
    provider.endpoint_uri = url
    metrics.RPC_ENDPOINT_SWITCHES.labels(shared.network).inc()
    publish_endpoint(shared)
    renew_session(shared, gen)
    # The old session closes once its requests (to the endpoint left) have ended.
    gen.spawn(gen.close_old_sessions(), f"driftshare-close-sessions-{shared.network}")
    if gen.ready_at is None or gen.init_task is not None:
        return  # a start or rebuild under way subscribes on the new endpoint
    try:
        await shared._subscribe(gen, shared.settings.subscription)
    except Exception as exc:  # the full rebuild retries until it works
        gen.check()
        log.warning("cannot subscribe at %s: %r", url, exc)
        reconnect_in_background(shared, gen)


def publish_endpoint(shared: SharedClient) -> None:
    """Set ``drift_rpc_endpoint_active``: 1 for the endpoint in use, 0 for the others.

    Endpoints that differ only past the host (keys in the path) share one redacted label:
    it is 1 while one of them is in use."""
    active = redact_url(shared.endpoints.active)
    for label in {redact_url(url) for url in shared.endpoints.urls}:
        metrics.RPC_ENDPOINT_ACTIVE.labels(shared.network, label).set(int(label == active))
