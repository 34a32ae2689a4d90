"""Properties 1-4 and 7 of the shared client, over random interleavings (hypothesis).

The manager's real lifecycle code runs; only the network part of start-up (``_start``)
is replaced by a fake that yields to other tasks, may fail on demand and opens a fake
connection, so thousands of interleavings run in seconds and every leak is visible.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftshare.manager import DriftClientManager, _Shared


@dataclass
class _World:
    """What the fake start-up opened and how it should behave."""

    failures_left: int = 0
    yields: int = 1
    open_connections: set[int] = field(default_factory=set)
    clients: list[object] = field(default_factory=list)
    starts: int = 0
    alive: set[int] = field(default_factory=set)
    """Clients created and not yet closed, by connection id."""
    peak_alive: int = 0

    def reset(self, failures: int, yields: int) -> None:
        self.__init__(failures_left=failures, yields=yields)  # type: ignore[misc]


class _FakeSubscriber:
    def __init__(self, world: _World, conn_id: int) -> None:
        self._world = world
        self._conn_id = conn_id
        self.oracle: dict[str, object] = {}

    def get_market_accounts_and_slots(self) -> list[object]:
        return []

    async def unsubscribe(self) -> None:
        await asyncio.sleep(0)
        self._world.open_connections.discard(self._conn_id)


class _FakeConnection:
    def __init__(self, world: _World, conn_id: int) -> None:
        self._world = world
        self._conn_id = conn_id

    async def close(self) -> None:
        self._world.open_connections.discard(self._conn_id)
        self._world.alive.discard(self._conn_id)


class _FakeClient:
    def __init__(self, subscriber: _FakeSubscriber) -> None:
        self.account_subscriber = subscriber


WORLD = _World()


async def _fake_start(self: _Shared) -> None:
    WORLD.starts += 1
    for _ in range(WORLD.yields):
        await asyncio.sleep(0)
    if WORLD.failures_left > 0:
        WORLD.failures_left -= 1
        raise ConnectionError("injected start-up failure")
    if self.client is None:
        conn_id = WORLD.starts
        self.connection = _FakeConnection(WORLD, conn_id)  # type: ignore[assignment]
        self.client = _FakeClient(_FakeSubscriber(WORLD, conn_id))
        WORLD.clients.append(self.client)
        WORLD.alive.add(conn_id)
        WORLD.peak_alive = max(WORLD.peak_alive, len(WORLD.alive))
    else:  # a reconnect resubscribes the client that engines already hold
        conn_id = self.connection._conn_id  # type: ignore[union-attr]
        self.client.account_subscriber = _FakeSubscriber(WORLD, conn_id)
    WORLD.open_connections.add(conn_id)
    self.initializations += 1
    self.ready_at = time.time()
    self.health = "healthy"


async def _fake_renew_session(self: _Shared) -> None:
    await asyncio.sleep(0)


@pytest.fixture(autouse=True)
def _fake_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_Shared, "_start", _fake_start)
    monkeypatch.setattr(_Shared, "_renew_session", _fake_renew_session)
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
        deadline = asyncio.get_running_loop().time() + 5
        while not DriftClientManager.is_initialized():
            assert asyncio.get_running_loop().time() < deadline, "never recovered"
            await asyncio.sleep(0.001)
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

    with caplog.at_level("INFO", logger="driftshare.manager"):
        asyncio.run(scenario())
    assert sum("no reference held" in r.message for r in caplog.records) == 2
