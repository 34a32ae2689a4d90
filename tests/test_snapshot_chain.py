"""Warm start keyed by the chain: a snapshot serves a restart on another endpoint of the same
chain, and its accounts leave as soon as the RPC answers with another genesis hash. The
keeper's stop lets the caller's cancellation through and never lets an older write land last."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import eventually
from driftshare import _snapshot
from driftshare._ledger import AccountLedger
from driftshare._snapshot import SnapshotIdentity, SnapshotKeeper, read_snapshot, write_snapshot
from driftshare.manager import DriftClientManager
from driftshare.sim._codec import DRIFT_PROGRAM_ID
from driftshare.sim._records import world_records
from driftshare.sim.pytest_plugin import SimulatorFactory
from driftshare.sim.store import AccountStore
from driftshare.sim.world import World

CHAIN_A = "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d"
CHAIN_B = "EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG"
NETWORK_ONLY = SnapshotIdentity("mainnet", str(DRIFT_PROGRAM_ID))


def _settings(rpc_url: str, folder: Path) -> dict[str, Any]:
    return {
        "rpc_url": rpc_url,
        "snapshot_path": folder,
        "health_interval_s": 3600,
        "max_retries": 0,
        "retry_backoff": 0.2,
        "retry_backoff_cap": 0.5,
        "init_timeout_s": 5,
    }


def _identity(genesis: str) -> SnapshotIdentity:
    return SnapshotIdentity("mainnet", str(DRIFT_PROGRAM_ID), genesis)


def _ledger(world: World, slot: int) -> AccountLedger:
    ledger = AccountLedger()
    for record in world_records(world, slot=slot):
        ledger.apply(record)
    return ledger


def test_a_snapshot_of_another_chain_leaves_the_ledger_when_the_rpc_answers(
    tmp_path: Path,
) -> None:
    world = World(AccountStore(), seed=3, markets=3)
    source = _ledger(world, slot=10**9)  # far ahead of the new chain: it would win every slot
    file = tmp_path / "snap"
    write_snapshot(file, SnapshotIdentity("mainnet", str(DRIFT_PROGRAM_ID), CHAIN_A), source)
    same, other = AccountLedger(), AccountLedger()
    keep = SnapshotKeeper(same, file, NETWORK_ONLY)
    drop = SnapshotKeeper(other, file, NETWORK_ONLY)
    assert keep.apply(keep.read()) == drop.apply(drop.read()) == len(source)
    assert keep.on_chain(CHAIN_A) == 0
    assert len(same) == len(source)
    assert drop.on_chain(CHAIN_B) == len(source)
    assert len(other) == 0
    assert drop.stats()["dropped"] == len(source)
    # The new chain's accounts, at its own lower slots, are taken from now on.
    fresh = next(iter(world_records(world, slot=5)))
    assert other.apply(fresh)


async def test_a_restart_on_another_endpoint_of_the_same_chain_answers_from_the_snapshot(
    simulator_factory: SimulatorFactory, manager_settings: None, tmp_path: Path
) -> None:
    sim = await simulator_factory(markets=3)
    DriftClientManager.configure(**_settings(sim.http_url, tmp_path))
    live = {m.market_index: m for m in await DriftClientManager.get_all_perp_markets()}
    assert len(live) == 3
    await DriftClientManager.shutdown()  # a clean shutdown writes the snapshot

    await sim.faults.down(3600)
    backup = sim.http_url.replace("127.0.0.1", "localhost")  # another URL, the same chain
    try:
        DriftClientManager.configure(**_settings(backup, tmp_path))
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
    DriftClientManager.configure(**_settings(first.http_url, tmp_path))
    assert len(await DriftClientManager.get_all_perp_markets()) == 3
    await DriftClientManager.shutdown()

    second = await simulator_factory(markets=3, seed=2)
    world = second.world
    assert world is not None
    DriftClientManager.configure(**_settings(second.http_url, tmp_path))
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
    assert read_snapshot(shared.snapshots.file, NETWORK_ONLY).genesis_hash == warm["genesis_hash"]


async def test_stop_lets_the_callers_cancellation_through(tmp_path: Path) -> None:
    world = World(AccountStore(), seed=3, markets=2)
    ledger = _ledger(world, slot=7)
    keeper = SnapshotKeeper(ledger, tmp_path, _identity(CHAIN_A), interval_s=3600)
    keeper.start()
    stopping = asyncio.create_task(keeper.stop())
    await asyncio.sleep(0)  # stop() has cancelled the background task and waits for its end
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping


async def test_a_write_under_way_at_stop_never_lands_after_the_final_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(AccountStore(), seed=3, markets=2)
    ledger = AccountLedger()
    keeper = SnapshotKeeper(ledger, tmp_path, _identity(CHAIN_A), interval_s=0.01)
    for record in world_records(world, slot=7):
        ledger.apply(record)
    first_started, first_done = threading.Event(), threading.Event()
    real = _snapshot.write_snapshot

    def slow_disk(*args: Any, **kwargs: Any) -> int:
        if not first_started.is_set():
            first_started.set()
            time.sleep(0.5)  # a slow fsync: the disk, not the test, waits
            size = real(*args, **kwargs)
            first_done.set()
            return size
        return real(*args, **kwargs)

    monkeypatch.setattr(_snapshot, "write_snapshot", slow_disk)
    keeper.start()
    await eventually(first_started.is_set, "a background write under way")
    world.step()
    newest = world_records(world, slot=8)
    for record in newest:
        ledger.apply(record)
    await keeper.stop()
    await eventually(first_done.is_set, "the slow write finished")
    on_disk = {r.record.pubkey: r.record for r in read_snapshot(keeper.file, NETWORK_ONLY).accounts}
    assert all(on_disk[r.pubkey] == r for r in newest)
