"""The shared client against the simulator: sharing, limits, fallbacks, outages, bad accounts."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import re
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from solders.keypair import Keypair

from conftest import FAST, QUIET, ManagerOn, eventually, subscribed
from driftshare._client.health import data_slot
from driftshare._client.lifecycle import SharedClient
from driftshare._metrics import DATA_AGE_SECONDS, REGISTRY, render
from driftshare._web import LiveState, create_app
from driftshare.adapter import DriftAdapter
from driftshare.config import redact_url
from driftshare.feed import DriftFundingFeed
from driftshare.manager import DriftClientManager
from driftshare.sim import Simulator

pytestmark = pytest.mark.usefixtures("clean_manager")


def _client_side(task: asyncio.Task[Any]) -> bool:
    """False for the simulator's own server tasks, which outlive a client's sockets briefly."""
    code = getattr(task.get_coro(), "cr_code", None)
    filename = code.co_filename if code is not None else ""
    return "/aiohttp/web" not in filename and "/driftshare/sim/" not in filename


def _sockets() -> int:
    """Open socket descriptors of this process (the simulator's included)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


def _client_tasks(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() - before if not t.done() and _client_side(t)}


async def _nothing_left(sim: Simulator, tasks: set[asyncio.Task[Any]], sockets: int) -> None:
    """No client task, WebSocket or socket beyond what was open before the client."""
    assert not DriftClientManager.is_initialized()
    await eventually(lambda: sim.stats()["ws_connections"]["open"] == 0, what="websockets closed")
    await eventually(lambda: _sockets() <= sockets, what=f"sockets back to {sockets}")
    assert _client_tasks(tasks) == set()


async def _engine(rounds: int, sim: Simulator, errors: list[BaseException]) -> int:
    """A read-only engine: holds the shared client and reads funding each round."""
    reads = 0
    async with DriftClientManager.session() as client:
        assert client is not None
        for _ in range(rounds):
            try:
                rate = await DriftClientManager.get_funding_rate("SOL-PERP")
            except BaseException as exc:  # an engine must never see one
                errors.append(exc)
                continue
            if rate is not None:
                reads += 1
            await sim.step()
    return reads


async def test_four_engines_share_one_client_and_one_subscription_set(
    manager_on: ManagerOn,
) -> None:
    sim = await manager_on(QUIET, markets=12)
    first = await DriftClientManager.get_client()
    assert first is not None
    # Every subscription of the one client, not the first: on a loaded machine the rest
    # arrive while the engines read, and would be counted as theirs.
    await eventually(lambda: subscribed(sim), what="the client's subscriptions")
    await sim.step()
    one_client = sim.stats()

    clients = await asyncio.gather(*(DriftClientManager.get_client() for _ in range(4)))
    errors: list[BaseException] = []
    reads = await asyncio.gather(*(_engine(5, sim, errors) for _ in range(4)))

    assert all(c is first for c in clients)
    assert errors == []
    assert all(r == 5 for r in reads)
    stats = DriftClientManager.stats()
    assert stats["initializations"] == 1
    # The first get and four more: reads made while engines hold the client take none.
    assert stats["references"] == 5
    assert stats["read_lease"] is False
    after = sim.stats()
    assert after["ws_connections"]["total"] == one_client["ws_connections"]["total"]
    assert after["subscriptions"]["total"] == one_client["subscriptions"]["total"]
    for _ in range(5):
        await DriftClientManager.release_client()


async def test_thousand_concurrent_first_callers_one_initialization(
    manager_on: ManagerOn,
) -> None:
    sim = await manager_on(QUIET)
    clients = await asyncio.gather(*(DriftClientManager.get_client() for _ in range(1000)))
    assert clients[0] is not None
    assert all(c is clients[0] for c in clients)
    assert DriftClientManager.stats()["initializations"] == 1
    assert sim.stats()["calls"]["by_method"]["getProgramAccounts"] == 2


async def test_last_release_closes_every_socket_and_task(
    manager_on: ManagerOn,
) -> None:
    sim = await manager_on(FAST)
    tasks, sockets = set(asyncio.all_tasks()), _sockets()
    assert await DriftClientManager.get_client() is not None
    await eventually(lambda: sim.stats()["subscriptions"]["active"] > 0, what="subscriptions")
    await DriftClientManager.release_client()

    await _nothing_left(sim, tasks, sockets)
    assert sim.stats()["subscriptions"]["active"] == 0


async def test_provider_rate_limit_is_invisible_to_engines(
    simulator_factory: Callable[..., Awaitable[Simulator]],
) -> None:
    """Simulator at 5 rps answering 429 + Retry-After: engines see no error, data flows."""
    sim = await simulator_factory(markets=8, rate_limit=5.0, burst=5)
    DriftClientManager.configure(
        rpc_url=sim.http_url, **{**FAST, "subscription": "polling", "poll_interval_s": 0.05}
    )
    errors: list[BaseException] = []
    reads = await asyncio.gather(*(_engine(3, sim, errors) for _ in range(4)))
    assert errors == []
    assert all(r == 3 for r in reads)

    # Data keeps coming: a price moved on chain reaches the engines through polling, past
    # refusals. Whether polling outruns 5 rps depends on the machine's load, so two 429s
    # are certain on top of the limit.
    assert sim.world is not None
    sim.faults.fail_next(2, 429)
    sim.world.set_oracle_price(0, 321.0)
    shared = DriftClientManager.shared_state()
    assert shared is not None
    await DriftClientManager.get_client()
    # Under this limit the retry budget may give up on a start-up; it retries in the background.
    await eventually(
        DriftClientManager.is_initialized, within=20, what="the client up through the limit"
    )

    def moved() -> bool:
        data = shared.client.get_oracle_price_data_for_perp_market(0)
        return data is not None and data.price == 321_000_000

    await eventually(moved, within=20, what="the new price through a 5 rps limit")
    # The provider did refuse; the engines never saw it, and the retry budget kept the
    # refusals from multiplying the load.
    assert sim.stats()["rate_limited"] > 0
    stats = DriftClientManager.stats()
    assert stats["rate_limited"] > 0
    assert stats["rpc"]["amplification"] <= 1.2, {
        k: v for k, v in stats["rpc"].items() if k != "methods"
    }
    await DriftClientManager.release_client()


async def test_stalled_websocket_falls_back_to_polling_and_returns(
    manager_on: ManagerOn,
) -> None:
    sim = await manager_on(FAST)
    client = await DriftClientManager.get_client()
    assert client is not None
    assert DriftClientManager.stats()["subscription_mode"] == "websocket"

    failures = _subscription_failures()
    sim.faults.set_stall(True)
    await eventually(
        lambda: DriftClientManager.stats()["subscription_mode"] == "polling",
        sim=sim,
        what="polling fallback",
    )
    assert _subscription_failures() > failures
    sim.world.set_oracle_price(1, 4321.0)  # type: ignore[union-attr]
    assert await DriftClientManager.get_client() is not None
    shared = DriftClientManager.shared_state()
    assert shared is not None

    def polled() -> bool:
        data = shared.client.get_oracle_price_data_for_perp_market(1)
        return data is not None and data.price == 4_321_000_000

    await eventually(polled, what="polled price")

    sim.faults.set_stall(False)
    await eventually(
        lambda: DriftClientManager.stats()["subscription_mode"] == "websocket",
        sim=sim,
        what="return to websocket",
    )
    # At least there and back; a loaded machine may add round trips, never a half one.
    switches = DriftClientManager.stats()["mode_switches"]
    assert switches >= 2
    assert switches % 2 == 0
    assert shared.client is client, "engines keep the object they hold"


def _subscription_failures() -> float:
    labels = {"network": "mainnet"}
    return REGISTRY.get_sample_value("drift_subscription_failures_total", labels) or 0.0


async def test_dropped_websockets_are_survived(
    manager_on: ManagerOn,
) -> None:
    sim = await manager_on(FAST)
    client = await DriftClientManager.get_client()
    assert client is not None
    await eventually(lambda: sim.stats()["subscriptions"]["active"] > 0, what="subscriptions")
    assert await sim.faults.drop_ws() > 0
    dropped_at = sim.store.slot
    shared = DriftClientManager.shared_state()
    assert shared is not None

    def fresh() -> bool:
        subscriber = shared.client.account_subscriber
        data = subscriber.get_oracle_price_data_and_slot_for_perp_market(2)
        return data is not None and data.slot > dropped_at

    # driftpy's subscribers reconnect by themselves; the chain moving on reaches them again.
    await eventually(fresh, sim=sim, within=15, what="data after the drop")
    assert shared.client is client, "engines keep the object they hold"


async def test_simulator_down_at_start_gives_none_then_comes_up_by_itself(
    simulator_factory: Callable[..., Awaitable[Simulator]],
) -> None:
    # Down until the test brings it up: a timed outage could end before a slow machine asks.
    sim = await simulator_factory(markets=8, faults=["down=3600"])
    DriftClientManager.configure(rpc_url=sim.http_url, **{**FAST, "max_retries": 1})
    assert await DriftClientManager.get_client() is None
    assert DriftClientManager.stats()["health"] == "down"
    await sim.faults.clear()
    await eventually(DriftClientManager.is_initialized, within=15, what="recovery")
    rate = await DriftClientManager.get_funding_rate(0)
    assert rate is not None
    # get_client answered at the first refused request; the start it began may itself have
    # succeeded once the simulator came back, so the refusal is what was certainly seen.
    assert DriftClientManager.stats()["rpc"]["by_status"].get("error", 0) >= 1


async def test_undecodable_market_does_not_take_the_others_down(
    simulator_factory: Callable[..., Awaitable[Simulator]],
) -> None:
    sim = await simulator_factory(markets=8)
    assert sim.world is not None
    sim.faults.corrupt(sim.world.perp_market_pubkey(3), "truncate")
    DriftClientManager.configure(rpc_url=sim.http_url, **FAST)
    assert await DriftClientManager.get_client() is not None

    stats = DriftClientManager.stats()
    assert list(stats["unavailable_markets"]) == [3]
    markets = await DriftClientManager.get_all_perp_markets()
    assert [m.market_index for m in markets] == [i for i in sim.world.perp_indexes() if i != 3]
    assert await DriftClientManager.get_funding_rate(3) is None
    assert await DriftClientManager.get_funding_rate(4) is not None

    # The bad account keeps changing on chain; the other markets' updates still arrive.
    shared = DriftClientManager.shared_state()
    assert shared is not None
    subscriber = shared.client.account_subscriber
    before = subscriber.get_perp_market_and_slot(4).slot
    sim.world.set_oracle_price(3, 1.5)
    await sim.step()
    sim.world.set_oracle_price(4, 2.5)
    await eventually(
        lambda: subscriber.get_perp_market_and_slot(4).slot > before,
        sim=sim,
        what="market 4 updated beside the undecodable market 3",
    )
    assert list(DriftClientManager.stats()["unavailable_markets"]) == [3]


async def test_a_configured_subset_stays_the_subset(
    manager_on: ManagerOn,
) -> None:
    """DRIFT_PERP_MARKETS holds in websocket mode, even as every market changes on chain."""
    sim = await manager_on({**FAST, "perp_markets": [0, 2]})
    assert await DriftClientManager.get_client() is not None
    shared = DriftClientManager.shared_state()
    assert shared is not None
    assert sim.world is not None
    for index in sim.world.perp_indexes():
        sim.world.set_oracle_price(index, 10.0 + index)
    subscriber = shared.client.account_subscriber
    await eventually(
        lambda: subscriber.get_perp_market_and_slot(0).slot > 1, sim=sim, what="updates"
    )
    indexes = sorted(m.market_index for m in shared.client.get_perp_market_accounts())
    assert indexes == [0, 2]


async def test_concurrent_first_reads_start_one_client(
    manager_on: ManagerOn,
) -> None:
    await manager_on(QUIET)
    reads = await asyncio.gather(
        DriftClientManager.get_funding_rate(0),
        DriftClientManager.get_funding_rate(1),
        DriftClientManager.get_mark_price(2),
        DriftClientManager.get_all_perp_markets(),
    )
    assert all(r is not None for r in reads)
    stats = DriftClientManager.stats()
    assert stats["initializations"] == 1
    assert stats["references"] == 0  # reads take a lease, never a reference
    assert stats["read_lease"] is True
    await DriftClientManager.release_market_data()
    assert DriftClientManager.stats()["read_lease"] is False
    assert not DriftClientManager.is_initialized()


async def test_an_unknown_network_never_raises() -> None:
    assert await DriftClientManager.get_client("testnet") is None
    assert await DriftClientManager.get_funding_rate("SOL-PERP", "testnet") is None
    assert await DriftClientManager.get_all_perp_markets("testnet") == []
    assert DriftClientManager.stats("testnet")["initialized"] is False
    assert not DriftClientManager.is_initialized("testnet")
    await DriftClientManager.release_client("testnet")


async def test_api_keys_never_appear_in_stats_metrics_logs_or_the_dashboard(
    simulator_factory: Callable[..., Awaitable[Simulator]], caplog: pytest.LogCaptureFixture
) -> None:
    sim = await simulator_factory(markets=8)
    # Short keys, in the path and in the query, as providers hand them out.
    keyed = f"{sim.http_url}/pk3y?api-key=qk3y"
    # A backup at the same provider, with another key: the same redacted label.
    DriftClientManager.configure(rpc_url=f"{keyed},{sim.http_url}/pk4y?api-key=qk4y", **FAST)
    with caplog.at_level(logging.DEBUG):
        assert await DriftClientManager.get_client() is not None
        live = LiveState(network="mainnet", simulated=False, rpc_url=keyed)
        async with TestClient(TestServer(create_app(live))) as web:
            shown = [await (await web.get(path)).text() for path in ("/", "/api/stats")]
    stats = DriftClientManager.stats()
    assert stats["rpc_url"] == f"{redact_url(sim.http_url)}/***?***"
    for text in (repr(stats), render().decode(), caplog.text, *shown):
        assert not {"pk3y", "qk3y", "pk4y", "qk4y"} & set(re.findall(r"\w+", text))
    # The label stands for both endpoints: one of them is in use.
    label = {"network": "mainnet", "endpoint": stats["rpc_url"]}
    assert REGISTRY.get_sample_value("drift_rpc_endpoint_active", label) == 1


async def test_data_age_is_exported_per_market(
    manager_on: ManagerOn,
) -> None:
    await manager_on(FAST)
    DATA_AGE_SECONDS.clear()  # the registry is process-wide: start from no sample at all
    assert REGISTRY.get_sample_value("drift_data_age_seconds", {"market": "SOL-PERP"}) is None
    assert await DriftClientManager.get_client() is not None
    age = REGISTRY.get_sample_value("drift_data_age_seconds", {"market": "SOL-PERP"})
    assert age is not None
    assert 0 <= age < 60


async def _data_after(client: Any, sim: Simulator, what: str) -> None:
    """Wait until ``client`` holds oracle data newer than the simulator's slot now."""
    now = sim.store.slot

    def newer() -> bool:
        data = client.account_subscriber.get_oracle_price_data_and_slot_for_perp_market(0)
        return data is not None and data.slot > now

    await eventually(newer, sim=sim, what=what)


async def test_force_reconnect_keeps_references_and_client(
    manager_on: ManagerOn,
) -> None:
    sim = await manager_on(QUIET)
    client = await DriftClientManager.get_client()
    assert client is not None
    results = await asyncio.gather(*(DriftClientManager.force_reconnect() for _ in range(3)))
    assert results == [True, True, True]
    assert DriftClientManager.stats()["references"] == 1
    # Concurrent requests share one rebuild, and engines keep the object they hold.
    assert DriftClientManager.stats()["initializations"] == 2
    assert await DriftClientManager.get_client() is client

    # The rebuilt subscriptions deliver to that same object.
    await _data_after(client, sim, "data on the kept client")


async def test_a_429_slowdown_survives_a_reconnect(
    manager_on: ManagerOn,
) -> None:
    """A rebuilt HTTP session keeps the provider's pushback: the halved rate stays halved."""
    sim = await manager_on({**QUIET, "subscription": "polling"})
    client = await DriftClientManager.get_client()
    assert client is not None
    rps = FAST["rpc_rps"]
    sim.faults.fail_next(1, 429)
    await client.connection.get_slot()
    before = client.connection._provider.session
    assert before._transport.rate < rps

    assert await DriftClientManager.force_reconnect()
    after = client.connection._provider.session
    assert after is not before
    # The rate creeps back by rps / 20 per 2 s: a reset transport would send at rps at once.
    assert after._transport.rate < rps
    await DriftClientManager.release_client()


@pytest.mark.parametrize("network", ["mainnet", "devnet"])
async def test_networks_are_counted_apart(manager_on: ManagerOn, network: str) -> None:
    await manager_on({**FAST, "network": network})
    other = "devnet" if network == "mainnet" else "mainnet"
    assert await DriftClientManager.get_client(network) is not None
    assert DriftClientManager.stats(network)["references"] == 1
    assert DriftClientManager.stats(other)["references"] == 0
    assert not DriftClientManager.is_initialized(other)


async def test_after_every_adapter_disconnects_nothing_is_left(
    manager_on: ManagerOn,
) -> None:
    """Cached reads made through engines keep no reference of their own."""
    sim = await manager_on(FAST)
    tasks, sockets = set(asyncio.all_tasks()), _sockets()
    adapters = [DriftAdapter(network="mainnet") for _ in range(3)]
    for adapter in adapters:
        assert await adapter.connect()
        assert await adapter.get_funding_rate("SOL-PERP") is not None
    assert DriftClientManager.stats()["references"] == 3
    for adapter in adapters:
        await adapter.disconnect()
    await _nothing_left(sim, tasks, sockets)


async def test_a_client_started_by_reads_alone_closes_when_idle(
    manager_on: ManagerOn,
) -> None:
    sim = await manager_on({**QUIET, "idle_close_s": 0.3})
    tasks, sockets = set(asyncio.all_tasks()), _sockets()
    assert await DriftClientManager.get_funding_rate("SOL-PERP") is not None
    assert DriftClientManager.is_initialized()
    assert DriftClientManager.stats()["references"] == 0
    await eventually(lambda: not DriftClientManager.is_initialized(), what="idle close")
    await _nothing_left(sim, tasks, sockets)
    # The next read that misses the cache starts it again.
    assert await DriftClientManager.get_funding_rate(1) is not None
    assert DriftClientManager.stats()["initializations"] == 2


async def test_an_engines_reads_after_its_disconnect_do_not_keep_the_client_open(
    manager_on: ManagerOn,
) -> None:
    """A feed still iterating its markets when its engine disconnects reads on: those reads
    must not take the reference back, or the client never closes."""
    sim = await manager_on({**QUIET, "idle_close_s": 0.3})
    tasks, sockets = set(asyncio.all_tasks()), _sockets()
    adapter = DriftAdapter()
    feed = DriftFundingFeed(adapter)
    assert await adapter.connect()
    await adapter.disconnect()
    assert DriftClientManager.stats()["references"] == 0
    assert len(await feed.get_all_funding_rates()) == 8
    assert DriftClientManager.stats()["references"] == 0
    await eventually(lambda: not DriftClientManager.is_initialized(), what="idle close")
    await _nothing_left(sim, tasks, sockets)


async def test_two_threads_starting_at_once_each_get_a_client_of_their_own_loop(
    manager_on: ManagerOn,
) -> None:
    """The rule for several running loops: one shared client per loop, none orphaned."""
    sim = await manager_on(FAST)
    both_running = threading.Barrier(2)

    async def engine() -> tuple[bool, int, int, bool]:
        both_running.wait()
        client = await DriftClientManager.get_client()
        markets = 0 if client is None else len(client.get_perp_market_accounts())
        references = DriftClientManager.stats()["references"]
        await DriftClientManager.release_client()
        return client is not None, markets, references, DriftClientManager.is_initialized()

    results = await asyncio.gather(*(asyncio.to_thread(asyncio.run, engine()) for _ in range(2)))
    assert results == [(True, 8, 1, False)] * 2
    created = list(DriftClientManager._shared.values())
    assert len(created) == 2
    assert all(s.refs == 0 and s.gen is None for s in created)
    await eventually(lambda: sim.stats()["ws_connections"]["open"] == 0, what="websockets closed")


async def test_force_reconnect_lets_requests_in_flight_finish(
    manager_on: ManagerOn,
) -> None:
    """The new HTTP session is in place before the old one closes, after its requests."""
    sim = await manager_on(FAST)
    client = await DriftClientManager.get_client()
    assert client is not None
    sent = sim.stats()["http_requests"]["total"]
    sim.faults.set_latency(500)
    in_flight = [asyncio.create_task(client.connection.get_slot()) for _ in range(4)]
    await eventually(
        lambda: sim.stats()["http_requests"]["total"] >= sent + 4, what="requests in flight"
    )
    reconnect = asyncio.create_task(DriftClientManager.force_reconnect())
    slots = await asyncio.gather(*in_flight)
    assert all(s.value > 0 for s in slots)
    sim.faults.set_latency(0)
    assert await reconnect is True
    rpc = DriftClientManager.stats()["rpc"]
    assert rpc["retries"] == 0
    assert rpc["failures"] == 0


def _copied(value: object) -> object:
    return copy.copy(value) if isinstance(value, dict | list | set) else value


def _state(shared: SharedClient) -> list[dict[str, Any]]:
    """The attributes of the shared client and of what it owns, copied one level deep."""
    owned = [shared, shared.gen, shared.rpc, shared.confirmer, shared.endpoints, shared.limits]
    state = [{k: _copied(v) for k, v in vars(part).items()} for part in owned]
    state.append({e.record.pubkey: (e.confirmed_slot, e.confirmed_at) for e in shared.ledger})
    return state


async def test_stats_from_another_thread_changes_nothing(
    manager_on: ManagerOn,
) -> None:
    """stats() only reads: a metrics scrape or a web server thread may call it any time."""
    sim = await manager_on(QUIET)
    assert await DriftClientManager.get_client() is not None
    assert await DriftClientManager.get_funding_rate("SOL-PERP") is not None
    shared = DriftClientManager.shared_state()
    assert shared is not None
    first = data_slot(shared)
    # New data the health loop (idle under QUIET) has not looked at yet.
    await eventually(lambda: data_slot(shared) > first, sim=sim, what="new data")
    before, metrics_before = _state(shared), render()
    found: list[dict[str, Any]] = []
    # Joined without yielding to the loop: nothing but stats() runs meanwhile.
    thread = threading.Thread(target=lambda: found.append(DriftClientManager.stats()))
    thread.start()
    thread.join()
    assert _state(shared) == before
    assert render() == metrics_before
    assert found[0]["data_slot"] == data_slot(shared)
    assert found[0]["references"] == 1
    await DriftClientManager.release_client()


async def test_an_rpc_failing_three_health_checks_gets_its_connection_rebuilt(
    manager_on: ManagerOn,
) -> None:
    sim = await manager_on({**FAST, "request_timeout_s": 0.5}, markets=4)
    client = await DriftClientManager.get_client()
    assert client is not None
    shared = DriftClientManager.shared_state()
    assert shared is not None
    gen = shared.gen
    assert gen is not None
    assert gen.reconnecting is None
    await sim.faults.down(3600)
    # No data for DRIFT_STALE_AFTER_S, then three getSlot checks fail: a rebuild starts.
    await eventually(lambda: gen.reconnecting is not None, within=30, what="a rebuild")
    await sim.faults.clear()
    await eventually(
        lambda: DriftClientManager.stats()["initializations"] == 2, within=30, what="rebuilt"
    )
    assert await DriftClientManager.get_client() is client
    await _data_after(client, sim, "data after the rebuild")


def _ref_count() -> float | None:
    return REGISTRY.get_sample_value("drift_client_ref_count", {"network": "mainnet"})


async def test_the_reference_count_metric_follows_the_references(
    manager_on: ManagerOn,
) -> None:
    await manager_on(QUIET, markets=4)
    first, second = DriftAdapter(), DriftAdapter()
    assert await first.connect()
    assert _ref_count() == 1
    assert await second.connect()
    assert _ref_count() == 2
    await first.disconnect()
    assert _ref_count() == 1
    await second.disconnect()
    assert _ref_count() == 0


@pytest.mark.parametrize("form", ["file", "base58"])
async def test_a_valid_drift_keypair_is_the_clients_signer(
    manager_on: ManagerOn,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    form: str,
) -> None:
    keypair = Keypair()
    if form == "file":
        (tmp_path / "id.json").write_text(keypair.to_json())
        monkeypatch.setenv("DRIFT_KEYPAIR", str(tmp_path / "id.json"))
    else:
        monkeypatch.setenv("DRIFT_KEYPAIR", str(keypair))
    await manager_on(QUIET, markets=2)
    client = await DriftClientManager.get_client()
    assert client is not None
    assert client.wallet.public_key == keypair.pubkey()
    message = b"a transaction's message"
    signature = client.wallet.payer.sign_message(message)
    assert signature.verify(keypair.pubkey(), message)
