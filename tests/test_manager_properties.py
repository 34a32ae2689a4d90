"""Properties 1-4 and 7 of the shared client, over random interleavings (hypothesis).

The manager's real lifecycle code runs, ``_start`` included (it awaits, publishes and
creates the health task); only the network underneath is fake: ``_open`` creates a fake
connection and client, ``_subscribe`` yields to other tasks, may fail on demand and
installs a fake subscriber through the real swap. Thousands of interleavings run in
seconds and every leaked connection, subscriber or task is visible.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import eventually
from driftshare._client.generation import Generation
from driftshare._client.lifecycle import SharedClient
from driftshare.manager import DriftClientManager


@dataclass
class _World:
    """What the fake network opened and how it should behave."""

    failures_left: int = 0
    yields: int = 1
    open_connections: set[int] = field(default_factory=set)
    active_subscribers: set[int] = field(default_factory=set)
    clients: list[object] = field(default_factory=list)
    starts: int = 0
    subscribers: int = 0
    alive: set[int] = field(default_factory=set)
    """Clients created and not yet closed, by connection id."""
    peak_alive: int = 0
    on_subscribed: Callable[[], None] | None = None

    def reset(self, failures: int, yields: int) -> None:
        self.__init__(failures_left=failures, yields=yields)  # type: ignore[misc]


class _FakeSubscriber:
    def __init__(self, world: _World) -> None:
        world.subscribers += 1
        self._world = world
        self.id = world.subscribers
        self.oracle: dict[str, object] = {}

    def get_market_accounts_and_slots(self) -> list[object]:
        return []

    async def subscribe(self) -> None:
        self._world.active_subscribers.add(self.id)
        for _ in range(self._world.yields):
            await asyncio.sleep(0)

    async def unsubscribe(self) -> None:
        for _ in range(self._world.yields):
            await asyncio.sleep(0)
        self._world.active_subscribers.discard(self.id)


class _FakeConnection:
    def __init__(self, world: _World, conn_id: int) -> None:
        self._world = world
        self._conn_id = conn_id
        world.open_connections.add(conn_id)

    async def close(self) -> None:
        await asyncio.sleep(0)
        self._world.open_connections.discard(self._conn_id)
        self._world.alive.discard(self._conn_id)


class _FakeClient:
    def __init__(self, subscriber: _FakeSubscriber) -> None:
        self.account_subscriber = subscriber

    def get_perp_market_accounts(self) -> list[object]:
        return []


WORLD = _World()


def _fake_open(self: SharedClient, gen: Generation) -> None:
    gen.connection = _FakeConnection(WORLD, len(WORLD.clients) + 1)  # type: ignore[assignment]
    gen.client = _FakeClient(_FakeSubscriber(WORLD))
    WORLD.clients.append(gen.client)
    WORLD.alive.add(len(WORLD.clients))
    WORLD.peak_alive = max(WORLD.peak_alive, len(WORLD.alive))


async def _fake_subscribe(self: SharedClient, gen: Generation, mode: str) -> None:
    WORLD.starts += 1
    for _ in range(WORLD.yields):
        await asyncio.sleep(0)
    if WORLD.failures_left > 0:
        WORLD.failures_left -= 1
        raise ConnectionError("injected start-up failure")
    await self._install_subscriber(gen, _FakeSubscriber(WORLD))
    if WORLD.on_subscribed is not None:
        WORLD.on_subscribed()
        await asyncio.sleep(0)


def _fake_renew_session(self: SharedClient, gen: Generation) -> None:
    """The HTTP session is the transport's business (tested against the simulator)."""


@pytest.fixture(autouse=True)
def _fake_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(SharedClient, "_open", _fake_open)
    monkeypatch.setattr(SharedClient, "_subscribe", _fake_subscribe)
    monkeypatch.setattr("driftshare._client.health.renew_session", _fake_renew_session)
    DriftClientManager.configure(
        rpc_url="http://127.0.0.1:9/",
        max_retries=3,
        retry_backoff=0.0005,
        retry_backoff_cap=0.001,
    )
    yield
    DriftClientManager._shared.clear()
    DriftClientManager._readers.clear()
    DriftClientManager._settings = None


def _reset_world(failures: int, yields: int) -> None:
    WORLD.reset(failures, yields)


# One engine: how many times it gets, whether it is cancelled while waiting, its pauses.
engine_plan = st.fixed_dictionaries(
    {
        "pause_before": st.integers(0, 4),
        "cancel_while_waiting": st.booleans(),
        "hold_yields": st.integers(0, 4),
        "reconnect": st.booleans(),
        "extra_release": st.booleans(),
    }
)


async def _engine(
    plan: dict[str, Any], results: list[Any], seen: list[object], *, balanced: bool
) -> None:
    for _ in range(plan["pause_before"]):
        await asyncio.sleep(0)
    client = await DriftClientManager.get_client()
    results.append(client)
    if client is not None:
        seen.append(client)
    for _ in range(plan["hold_yields"]):
        await asyncio.sleep(0)
    if plan["reconnect"]:
        await DriftClientManager.force_reconnect()
    if client is not None and balanced:
        # Never replaced while a reference is held (an extra release elsewhere takes this
        # engine's reference): every holder has the one shared client.
        shared = DriftClientManager.shared_state()
        assert shared is not None
        assert shared.client is client
    await DriftClientManager.release_client()
    if plan["extra_release"]:
        await DriftClientManager.release_client()


async def _run(plans: list[dict[str, Any]]) -> tuple[list[Any], int, list[object]]:
    results: list[Any] = []
    seen: list[object] = []
    balanced = not any(p["extra_release"] for p in plans)
    tasks = [asyncio.create_task(_engine(p, results, seen, balanced=balanced)) for p in plans]
    cancelled = 0
    await asyncio.sleep(0)
    for plan, task in zip(plans, tasks, strict=True):
        if plan["cancel_while_waiting"] and not task.done():
            task.cancel()
            cancelled += 1
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert all(isinstance(e, asyncio.CancelledError) for e in errors), errors
    shared = DriftClientManager.shared_state()
    if shared is not None and shared._closing is not None:
        await shared._closing
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert leftover == [], leftover
    return results, cancelled, seen


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plans=st.lists(engine_plan, min_size=1, max_size=12),
    yields=st.integers(0, 5),
    failures=st.integers(0, 3),
)
def test_interleavings_never_leak_and_never_raise(
    plans: list[dict[str, Any]], yields: int, failures: int
) -> None:
    """Properties 1, 2, 3 and 7 with get, release, force_reconnect, cancellation and failed
    start-ups interleaved: one instance at a time, references balance, nothing is left at
    zero, no exception."""
    _reset_world(failures=failures, yields=yields)
    _, _, seen = asyncio.run(_run(plans))
    # One instance at a time: a client is created only once the previous one is closed.
    assert WORLD.peak_alive <= 1
    assert {id(c) for c in seen} <= {id(c) for c in WORLD.clients}
    stats = DriftClientManager.stats()
    assert stats["references"] == 0
    assert stats["initialized"] is False
    assert WORLD.open_connections == set()
    assert WORLD.active_subscribers == set()


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 60), yields=st.integers(0, 5))
def test_concurrent_first_callers_share_one_initialization(n: int, yields: int) -> None:
    """Properties 1 and 4: one instance while references are held, one initialization."""
    _reset_world(failures=0, yields=yields)

    async def scenario() -> None:
        clients = await asyncio.gather(*(DriftClientManager.get_client() for _ in range(n)))
        assert len({id(c) for c in clients}) == 1
        assert clients[0] is not None
        stats = DriftClientManager.stats()
        assert stats["references"] == n
        assert stats["initializations"] == 1
        assert WORLD.starts == 1
        for _ in range(n):
            await DriftClientManager.release_client()
        assert WORLD.open_connections == set()

    asyncio.run(scenario())


@settings(max_examples=200, deadline=None)
@given(
    gets=st.integers(1, 10),
    releases=st.integers(0, 14),
    failures=st.integers(0, 2),
)
def test_count_is_gets_minus_releases_and_never_negative(
    gets: int, releases: int, failures: int
) -> None:
    """Property 2, with failed start-ups (property 7: None, never an exception)."""
    _reset_world(failures=failures, yields=1)

    async def scenario() -> None:
        results = [await DriftClientManager.get_client() for _ in range(gets)]
        assert all(r is None or isinstance(r, _FakeClient) for r in results)
        if failures:
            assert results[0] is None
        for _ in range(releases):
            await DriftClientManager.release_client()
        assert DriftClientManager.stats()["references"] == max(0, gets - releases)
        await DriftClientManager.shutdown()
        assert WORLD.open_connections == set()

    asyncio.run(scenario())


def test_failed_start_returns_none_then_recovers_in_background() -> None:
    """Property 7: the first caller gets None at once; the background retry brings it up."""
    _reset_world(failures=2, yields=1)

    async def scenario() -> None:
        assert await DriftClientManager.get_client() is None
        shared = DriftClientManager.shared_state()
        assert shared is not None
        await eventually(DriftClientManager.is_initialized, within=5, what="recovered")
        client = await DriftClientManager.get_client()
        assert client is WORLD.clients[-1]
        stats = DriftClientManager.stats()
        assert stats["init_failures"] == 2
        assert stats["references"] == 2
        await DriftClientManager.release_client()
        await DriftClientManager.release_client()
        assert WORLD.open_connections == set()

    asyncio.run(scenario())


def test_a_new_event_loop_starts_afresh() -> None:
    """A client bound to a finished loop is never handed out on the next one."""
    _reset_world(failures=0, yields=1)
    first = asyncio.run(DriftClientManager.get_client())
    second = asyncio.run(DriftClientManager.get_client())
    assert first is not None
    assert second is not None
    assert first is not second
    assert DriftClientManager.stats()["references"] == 1


def test_release_after_last_is_a_logged_no_op(caplog: pytest.LogCaptureFixture) -> None:
    _reset_world(failures=0, yields=0)

    async def scenario() -> None:
        await DriftClientManager.release_client()
        assert await DriftClientManager.get_client() is not None
        await DriftClientManager.release_client()
        await DriftClientManager.release_client()
        assert DriftClientManager.stats()["references"] == 0

    with caplog.at_level("INFO", logger="driftshare"):
        asyncio.run(scenario())
    assert sum("no reference held" in r.message for r in caplog.records) == 2


def _other_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}


def test_a_start_finishing_after_the_last_release_publishes_nothing() -> None:
    """The generation race: the last reference leaves while ``_start`` is in flight and the
    start finishes before the close runs. It must start no task, and a caller arriving
    during the close must not be handed the client being torn down."""
    _reset_world(failures=0, yields=1)

    async def scenario() -> None:
        first = asyncio.create_task(DriftClientManager.get_client())
        # Cancelled just before the start publishes: the drop runs, then the start resumes.
        WORLD.on_subscribed = first.cancel
        with pytest.raises(asyncio.CancelledError):
            await first
        WORLD.on_subscribed = None
        second = await DriftClientManager.get_client()
        assert second is not None
        assert second is not WORLD.clients[0], "handed the client being torn down"
        assert len(WORLD.open_connections) == 1
        assert DriftClientManager.is_initialized()
        await DriftClientManager.release_client()
        assert _other_tasks() == set()
        assert WORLD.open_connections == set()
        assert WORLD.active_subscribers == set()

    asyncio.run(scenario())


@pytest.mark.parametrize("cancel_after", range(12))
def test_a_cancelled_swap_leaves_exactly_one_subscriber(cancel_after: int) -> None:
    """Cancellation at every await of the subscriber swap: the subscriber left out always
    ends fully unsubscribed, and the cancellation still reaches the caller."""
    _reset_world(failures=0, yields=3)

    async def scenario() -> None:
        assert await DriftClientManager.get_client() is not None
        shared = DriftClientManager.shared_state()
        assert shared is not None
        assert shared.gen is not None
        gen = shared.gen
        previous = gen.client.account_subscriber
        assert WORLD.active_subscribers == {previous.id}
        swap = asyncio.create_task(shared._install_subscriber(gen, _FakeSubscriber(WORLD)))
        for _ in range(cancel_after):
            await asyncio.sleep(0)
        finished = swap.done()
        swap.cancel()
        outcome = (await asyncio.gather(swap, return_exceptions=True))[0]
        if finished:  # cancelled after the swap ended: nothing to reach the caller
            assert outcome is None
        else:
            assert isinstance(outcome, asyncio.CancelledError)
        assert WORLD.active_subscribers == {gen.client.account_subscriber.id}
        await DriftClientManager.release_client()
        assert WORLD.active_subscribers == set()

    asyncio.run(scenario())


def test_the_health_loop_survives_a_check_that_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    _reset_world(failures=0, yields=1)
    DriftClientManager.configure(rpc_url="http://127.0.0.1:9/", health_interval_s=0.001)

    async def scenario() -> None:
        assert await DriftClientManager.get_client() is not None
        calls = 0
        checked_again = asyncio.Event()

        def publish_data_ages(shared: object) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("one unexpected fault")
            if calls >= 4:
                checked_again.set()

        monkeypatch.setattr("driftshare._client.health.publish_data_ages", publish_data_ages)
        # Account data is confirmed current: health needs no getSlot (the fake has none).
        monkeypatch.setattr(
            "driftshare._client.lifecycle.SharedClient.data_flows", lambda self: True
        )
        await asyncio.wait_for(checked_again.wait(), 10)
        stats = DriftClientManager.stats()
        assert "one unexpected fault" in stats["last_error"]
        await DriftClientManager.release_client()

    asyncio.run(scenario())


def test_a_bad_keypair_fails_at_once_without_retrying(caplog: pytest.LogCaptureFixture) -> None:
    _reset_world(failures=0, yields=1)
    secret = "not-a-keypair-but-a-secret-looking-value"
    DriftClientManager.configure(rpc_url="http://127.0.0.1:9/", keypair=secret)

    async def scenario() -> None:
        assert await DriftClientManager.get_client() is None
        assert await DriftClientManager.get_funding_rate("SOL-PERP") is None
        assert _other_tasks() == set(), "retrying in the background"
        stats = DriftClientManager.stats()
        assert stats["references"] == 0
        assert stats["health"] == "down"
        assert "DRIFT_KEYPAIR" in stats["last_error"]
        assert WORLD.starts == 0

    with caplog.at_level("DEBUG"):
        asyncio.run(scenario())
    assert any("DRIFT_KEYPAIR" in r.getMessage() for r in caplog.records)
    assert secret not in caplog.text


def test_durations_ignore_wall_clock_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wall clock steps an hour during start-up (NTP); time to ready stays short."""
    _reset_world(failures=0, yields=1)
    wall = time.time

    def step_the_wall_clock() -> None:
        monkeypatch.setattr(time, "time", lambda: wall() + 3600)

    WORLD.on_subscribed = step_the_wall_clock

    async def scenario() -> None:
        assert await DriftClientManager.get_client() is not None
        ready_after = DriftClientManager.stats()["time_to_ready_s"]
        assert ready_after is not None
        assert 0 <= ready_after < 60
        await DriftClientManager.release_client()

    asyncio.run(scenario())


def test_release_market_data_racing_a_read_leaks_no_reference() -> None:
    _reset_world(failures=0, yields=3)

    async def scenario() -> None:
        subscribed = asyncio.Event()
        WORLD.on_subscribed = subscribed.set
        reader = DriftClientManager.market_data()
        read = asyncio.create_task(reader.get_all_perp_markets())
        await subscribed.wait()  # the read's start-up is about to publish
        await DriftClientManager.release_market_data()
        assert await read == []
        stats = DriftClientManager.stats()
        assert stats["references"] == 0
        assert stats["read_lease"] is False
        assert not DriftClientManager.is_initialized()
        assert _other_tasks() == set()
        assert WORLD.open_connections == set()

    asyncio.run(scenario())
