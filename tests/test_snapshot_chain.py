"""Snapshots keyed by the chain: a snapshot's accounts leave the ledger as soon as the RPC
answers with another genesis hash (restarts: test_warmstart.py). The keeper's stop lets the
caller's cancellation through and never lets an older write land last."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import eventually
from driftshare._data.ledger import AccountLedger
from driftshare._snapshot import SnapshotIdentity, SnapshotKeeper, read_snapshot, write_snapshot
from driftshare._snapshot import keeper as keeper_module
from driftshare.sim._codec import DRIFT_PROGRAM_ID
from driftshare.sim._records import world_records
from driftshare.sim.store import AccountStore
from driftshare.sim.world import World

CHAIN_A = "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d"
CHAIN_B = "EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG"
NETWORK_ONLY = SnapshotIdentity("mainnet", str(DRIFT_PROGRAM_ID))


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
    real = keeper_module.write_snapshot

    def slow_disk(*args: Any, **kwargs: Any) -> int:
        if not first_started.is_set():
            first_started.set()
            time.sleep(0.5)  # a slow fsync: the disk, not the test, waits
            size = real(*args, **kwargs)
            first_done.set()
            return size
        return real(*args, **kwargs)

    monkeypatch.setattr(keeper_module, "write_snapshot", slow_disk)
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
