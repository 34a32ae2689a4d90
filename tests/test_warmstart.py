"""Warm start: real ``driftshare serve`` processes restarted against the simulator."""

from __future__ import annotations

import asyncio
import functools
import json
import stat
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench._processes import ServeProcess
from conftest import StartServe, eventually
from driftshare._snapshot import keeper as keeper_module
from driftshare.adapter import DriftAdapter
from driftshare.feed import DriftFundingFeed
from driftshare.manager import DriftClientManager
from driftshare.models import MarketData
from driftshare.sim import Simulator
from driftshare.sim.pytest_plugin import SimulatorFactory

_DEADLINE_S = 60.0


def _quick_restarts(rpc_url: str, snapshot: Path) -> dict[str, Any]:
    """Manager settings for an in-process restart: no health timer, short start-up retries."""
    return {
        "rpc_url": rpc_url,
        "snapshot_path": snapshot,
        "health_interval_s": 3600,
        "max_retries": 0,
        "retry_backoff": 0.2,
        "retry_backoff_cap": 0.5,
        "init_timeout_s": 5,
    }


async def _get(process: ServeProcess, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=process.url, timeout=30) as http:
        return await http.get(path)


poll = functools.partial(eventually, within=_DEADLINE_S, every_s=0.05)


async def _dashboard_rows(process: ServeProcess) -> list[dict[str, Any]]:
    """The market rows of the first dashboard event that has any."""
    async with (
        httpx.AsyncClient(base_url=process.url, timeout=30) as http,
        http.stream("GET", "/api/events") as events,
        asyncio.timeout(_DEADLINE_S),
    ):
        async for line in events.aiter_lines():
            if line.startswith("data: "):
                rows: list[dict[str, Any]] = json.loads(line[6:])["markets"]
                if rows:
                    return rows
    raise AssertionError("the event stream ended")


async def _every_market(count: int) -> list[MarketData]:
    """The shared client's markets once it serves all ``count`` (a loaded machine may need
    more than one start-up attempt of the quick settings)."""
    found: list[MarketData] = []

    async def served() -> bool:
        found[:] = await DriftClientManager.get_all_perp_markets()
        return len(found) == count

    await poll(served, f"{count} markets served")
    return found


def _snapshots(folder: Path) -> list[Path]:
    return list(folder.glob("*.snapshot"))


async def _markets(process: ServeProcess) -> list[dict[str, Any]]:
    response = await _get(process, "/api/markets")
    assert response.status_code == 200, response.text
    markets: list[dict[str, Any]] = response.json()["markets"]
    return markets


async def _serve_until_ready(sim: Simulator, folder: Path, serve: StartServe) -> ServeProcess:
    process = await serve(sim.http_url, snapshot=folder)

    async def ready() -> bool:
        return (await _get(process, "/readyz")).status_code == 200

    await poll(ready, "first process ready")
    return process


async def test_a_restart_with_the_rpc_down_answers_every_market_stale_from_the_first_answer(
    simulator_factory: SimulatorFactory, tmp_path: Path, serve: StartServe
) -> None:
    sim = await simulator_factory(markets=8)
    world = sim.world
    assert world is not None
    first = await _serve_until_ready(sim, tmp_path, serve)
    live = {m["market_index"]: m for m in await _markets(first)}
    assert sorted(live) == world.perp_indexes()
    assert await first.stop() == 0
    files = _snapshots(tmp_path)
    assert len(files) == 1
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    stopped_at = time.time()

    await sim.faults.down(3600)
    second = await serve(sim.http_url, snapshot=tmp_path)
    markets = await _markets(second)  # the very first request
    assert sorted(m["market_index"] for m in markets) == world.perp_indexes()
    assert all(m["stale"] for m in markets)
    for market in markets:
        assert market["oracle_price"] == live[market["market_index"]]["oracle_price"]
        # The data's true age: at least the time since the first process stopped.
        assert market["data_age_s"] >= time.time() - stopped_at - 0.5
    assert (await _get(second, "/readyz")).status_code == 503
    warm = (await _get(second, "/api/stats")).json()["manager"]["warm_start"]
    assert warm["loaded"] == warm["restored"] > len(live)  # markets, oracles and the State
    rows = await _dashboard_rows(second)
    assert len(rows) == len(live)
    assert all(row["stale"] for row in rows)
    assert all(row["data_age_s"] >= time.time() - stopped_at - 0.5 for row in rows)

    # The RPC comes back with a new price: live data replaces the snapshot's.
    world.set_oracle_price(0, 321.5)
    await sim.step()
    expected = world.oracle_price(0)
    assert expected != live[0]["oracle_price"]
    await sim.faults.clear()

    async def fresh() -> bool:
        rows = await _markets(second)
        by_index = {m["market_index"]: m for m in rows}
        return (
            len(rows) == len(live)
            and not any(m["stale"] for m in rows)
            and by_index[0]["oracle_price"] == pytest.approx(expected)
        )

    await poll(fresh, "fresh data replacing the snapshot")

    async def ready() -> bool:
        return (await _get(second, "/readyz")).status_code == 200

    await poll(ready, "ready once fresh data arrived")
    warm = (await _get(second, "/api/stats")).json()["manager"]["warm_start"]
    assert warm["restored"] == 0
    assert await second.stop() == 0


@pytest.mark.parametrize("damage", ["garbled", "truncated", "foreign"])
async def test_a_bad_snapshot_is_ignored_and_the_process_still_starts(
    simulator_factory: SimulatorFactory,
    tmp_path: Path,
    serve: StartServe,
    damage: str,
) -> None:
    sim = await simulator_factory(markets=4)
    first = await _serve_until_ready(sim, tmp_path, serve)
    assert await first.stop() == 0
    (file,) = _snapshots(tmp_path)
    content = file.read_bytes()
    if damage == "garbled":
        file.write_bytes(content[:200] + bytes(b ^ 0x5A for b in content[200:400]) + content[400:])
    elif damage == "truncated":
        file.write_bytes(content[: len(content) // 2])
    second_env: dict[str, str] = {}
    if damage == "foreign":
        second_env["DRIFT_NETWORK"] = "devnet"
        file.rename(tmp_path / file.name.replace("mainnet", "devnet"))

    second = await serve(sim.http_url, snapshot=tmp_path, env=second_env)

    async def ready() -> bool:
        return (await _get(second, "/readyz")).status_code == 200

    await poll(ready, "started as if there were no snapshot")
    markets = await _markets(second)
    assert len(markets) == 4
    assert not any(m["stale"] for m in markets)
    assert await second.stop() == 0
    warnings = [line for line in second.log if "ignoring the snapshot" in line]
    assert len(warnings) == 1, second.log


async def test_reader_adapter_and_feed_answer_from_the_snapshot_while_the_rpc_is_down(
    simulator_factory: SimulatorFactory,
    clean_manager: None,
    frozen_now: float,
    tmp_path: Path,
) -> None:
    sim = await simulator_factory(markets=6)
    world = sim.world
    assert world is not None
    settings = _quick_restarts(sim.http_url, tmp_path)
    DriftClientManager.configure(**settings)
    live = {m.market_index: m for m in await _every_market(6)}
    funding = await DriftClientManager.get_funding_rate(2)
    assert funding is not None
    assert not funding.stale
    await DriftClientManager.shutdown()  # a clean shutdown writes the snapshot

    await sim.faults.down(3600)
    try:
        DriftClientManager.configure(**settings)
        adapter = DriftAdapter("mainnet")
        feed = DriftFundingFeed(adapter)
        restored = await adapter.get_funding_rate(2)
        assert restored is not None
        assert restored["stale"]
        assert restored["data_age_s"] > 0
        assert restored["rate_8h"] == funding.rate_8h
        markets = await DriftClientManager.get_all_perp_markets()
        assert [m.market_index for m in markets] == sorted(live)
        for market in markets:
            assert market.stale
            assert market.oracle_price == live[market.market_index].oracle_price
            assert market.slot == live[market.market_index].slot
        active = [i for i, m in live.items() if m.status == "active"]
        infos = await feed.get_all_funding_rates()
        assert len(infos) == len(active)
        assert not DriftClientManager.is_initialized()
        await feed.close()
        await adapter.disconnect()
    finally:
        await sim.faults.clear()
        await DriftClientManager.shutdown()


async def test_the_snapshot_is_read_off_the_event_loop(
    simulator_factory: SimulatorFactory,
    clean_manager: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim = await simulator_factory(markets=4)
    settings = _quick_restarts(sim.http_url, tmp_path)
    DriftClientManager.configure(**settings)
    await _every_market(4)
    await DriftClientManager.shutdown()  # a clean shutdown writes the snapshot

    readers: list[threading.Thread] = []
    real = keeper_module.read_snapshot

    def read_snapshot(*args: Any, **kwargs: Any) -> Any:
        readers.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(keeper_module, "read_snapshot", read_snapshot)
    await sim.faults.down(3600)
    try:
        DriftClientManager.configure(**settings)
        markets = await DriftClientManager.get_all_perp_markets()
        assert len(markets) == 4
        assert all(m.stale for m in markets)  # the snapshot's, the RPC being down
        assert readers
        assert threading.current_thread() not in readers
    finally:
        await sim.faults.clear()
        await DriftClientManager.shutdown()


@pytest.mark.parametrize("redis_up", [True, False], ids=["redis-up", "redis-unreachable"])
@pytest.mark.parametrize("rpc_up", [True, False], ids=["rpc-up", "rpc-down"])
async def test_a_fleet_member_reads_its_snapshot_only_without_a_fleet_to_join(  # noqa: PLR0917
    simulator_factory: SimulatorFactory,
    clean_manager: None,
    redis_server: Any,
    tmp_path: Path,
    redis_up: bool,
    rpc_up: bool,
) -> None:
    sim = await simulator_factory(markets=4)
    settings = _quick_restarts(sim.http_url, tmp_path)
    DriftClientManager.configure(**settings)
    await _every_market(4)
    first = DriftClientManager.shared_state()
    assert first is not None
    accounts = len(first.ledger)
    await DriftClientManager.shutdown()  # a clean shutdown writes the snapshot

    share_url = redis_server.url
    if not redis_up:
        redis_server.kill()
    if not rpc_up:
        await sim.faults.down(3600)
    try:
        DriftClientManager.configure(**settings, share_url=share_url, share_fallback_s=1)
        await DriftClientManager.get_all_perp_markets()
        shared = DriftClientManager.shared_state()
        assert shared is not None
        assert shared.snapshots is not None
        # Redis holds the fleet's last values: the snapshot is the fallback for its absence,
        # and for a member whose RPC has not yet named the chain (getGenesisHash), which
        # cannot join a fleet (loaded once that first call has failed).
        snapshots = shared.snapshots
        if redis_up and rpc_up:
            assert snapshots.loaded == 0
        else:
            await eventually(lambda: snapshots.loaded == accounts, "the snapshot loaded")
    finally:
        await sim.faults.clear()
        await DriftClientManager.shutdown()


async def test_a_restart_on_another_endpoint_of_the_same_chain_answers_from_the_snapshot(
    simulator_factory: SimulatorFactory, manager_settings: None, tmp_path: Path
) -> None:
    sim = await simulator_factory(markets=3)
    DriftClientManager.configure(**_quick_restarts(sim.http_url, tmp_path))
    live = {m.market_index: m for m in await DriftClientManager.get_all_perp_markets()}
    assert len(live) == 3
    await DriftClientManager.shutdown()  # a clean shutdown writes the snapshot

    await sim.faults.down(3600)
    backup = sim.http_url.replace("127.0.0.1", "localhost")  # another URL, the same chain
    try:
        DriftClientManager.configure(**_quick_restarts(backup, tmp_path))
        markets = await DriftClientManager.get_all_perp_markets()
        assert sorted(m.market_index for m in markets) == sorted(live)
        for market in markets:
            assert market.stale
            assert market.oracle_price == live[market.market_index].oracle_price
    finally:
        await sim.faults.clear()
        await DriftClientManager.shutdown()


async def test_a_restart_on_another_chain_drops_the_snapshot_once_it_answers(
    simulator_factory: SimulatorFactory, manager_settings: None, tmp_path: Path
) -> None:
    first = await simulator_factory(markets=3, seed=1)
    for _ in range(20):  # its slots ahead of the second chain's
        await first.step()
    DriftClientManager.configure(**_quick_restarts(first.http_url, tmp_path))
    assert len(await DriftClientManager.get_all_perp_markets()) == 3
    await DriftClientManager.shutdown()

    second = await simulator_factory(markets=3, seed=2)
    world = second.world
    assert world is not None
    DriftClientManager.configure(**_quick_restarts(second.http_url, tmp_path))
    try:
        await DriftClientManager.get_all_perp_markets()
        shared = DriftClientManager.shared_state()
        assert shared is not None
        assert shared.snapshots is not None

        async def second_chains_prices() -> bool:
            markets = await DriftClientManager.get_all_perp_markets()
            return len(markets) == 3 and all(
                not m.stale and m.oracle_price == pytest.approx(world.oracle_price(m.market_index))
                for m in markets
            )

        await eventually(second_chains_prices, "the second chain's data served")
        warm = shared.snapshots.stats()
        assert warm["loaded"] > 0
        assert warm["dropped"] == warm["loaded"]
        assert warm["genesis_hash"] is not None
    finally:
        await DriftClientManager.shutdown()
    assert (
        keeper_module.read_snapshot(shared.snapshots.file, shared.snapshots.identity).genesis_hash
        == warm["genesis_hash"]
    )


async def test_the_snapshot_is_rewritten_every_interval_while_the_data_changes(
    simulator: Simulator,
    clean_manager: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRIFT_SNAPSHOT_INTERVAL_S", "0.2")
    DriftClientManager.configure(rpc_url=simulator.http_url, snapshot_path=tmp_path)
    try:
        assert await DriftClientManager.get_client() is not None
        shared = DriftClientManager.shared_state()
        assert shared is not None
        keeper = shared.snapshots
        assert keeper is not None
        # Written while running, not only at shutdown; each step changes the data again.
        await eventually(lambda: keeper.writes >= 1, sim=simulator, within=5, what="a write")
        assert _snapshots(tmp_path)
        written = keeper.writes
        await eventually(lambda: keeper.writes > written, sim=simulator, within=5, what="another")
    finally:
        await DriftClientManager.shutdown()
