"""Snapshot files: atomic writes, true ages on load, any unusable file ignored with one warning."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import os
import signal
import stat
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FakeClock
from driftshare._data.ledger import AccountLedger
from driftshare._data.ledger_subscriber import ledger_client
from driftshare._snapshot import (
    FORMAT_VERSION,
    SnapshotError,
    SnapshotIdentity,
    SnapshotKeeper,
    WarmSource,
    read_snapshot,
    snapshot_file,
    snapshot_keeper,
    write_snapshot,
)
from driftshare.config import load_settings
from driftshare.sim._codec import DRIFT_PROGRAM_ID
from driftshare.sim._records import world_records
from driftshare.sim.store import AccountStore
from driftshare.sim.world import World

MAINNET_GENESIS = "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d"
IDENTITY = SnapshotIdentity("mainnet", str(DRIFT_PROGRAM_ID), MAINNET_GENESIS)


@pytest.fixture
def world() -> World:
    return World(AccountStore(), seed=5, markets=5)


def _filled(world: World, slot: int = 40, confirmed_at: float = 1000.0) -> AccountLedger:
    ledger = AccountLedger()
    for record in world_records(world, slot=slot):
        ledger.apply(record, confirmed_at=confirmed_at)
    return ledger


def _written(world: World, folder: Path, **identity: str) -> Path:
    ident = dataclasses.replace(IDENTITY, **identity)
    file = folder / "snap"
    write_snapshot(file, ident, _filled(world), wall_now=50_000.0, mono_now=1030.0)
    return file


def test_round_trip_keeps_values_slots_and_true_ages(world: World, tmp_path: Path) -> None:
    source = _filled(world, slot=40, confirmed_at=1000.0)
    oracle = str(world.perp_market(1).amm.oracle)
    source.confirm(oracle, 45, confirmed_at=1020.0)
    file = snapshot_file(tmp_path, IDENTITY)
    # The writer's clocks: wall 50 000 s at monotonic 1030, so the data is 30 s (10 s) old.
    write_snapshot(file, IDENTITY, source, wall_now=50_000.0, mono_now=1030.0)
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    # Another process, 100 s later by the wall clock, with an unrelated monotonic clock.
    ledger = AccountLedger()
    keeper = SnapshotKeeper(
        ledger, tmp_path, IDENTITY, mono_clock=FakeClock(7.0), wall_clock=FakeClock(50_100.0)
    )
    assert keeper.apply(keeper.read()) == len(source)
    market = ledger.get(str(world.perp_market_pubkey(0)))
    assert market is not None
    assert 7.0 - market.confirmed_at == pytest.approx(130.0)
    confirmed = ledger.get(oracle)
    assert confirmed is not None
    assert confirmed.confirmed_slot == 45
    assert 7.0 - confirmed.confirmed_at == pytest.approx(110.0)
    assert keeper.restored == {e.record.pubkey for e in source}
    client = ledger_client(ledger)
    for index in world.perp_indexes():
        assert client.get_perp_market_account(index) == world.perp_market(index)
        assert client.get_oracle_price_data_for_perp_market(index) is not None
    assert client.get_state_account() == world.state()


def test_the_file_is_keyed_by_the_chain_and_holds_no_url(world: World, tmp_path: Path) -> None:
    header = json.loads(_written(world, tmp_path).read_bytes().split(b"\n", 1)[0])
    assert sorted(header) == [
        "body_bytes",
        "body_sha256",
        "format",
        "genesis_hash",
        "network",
        "program_id",
        "records",
        "version",
        "written_at",
    ]
    assert header["genesis_hash"] == MAINNET_GENESIS


def test_only_drift_program_on_mainnet_or_devnet_is_kept() -> None:
    assert IDENTITY.allowed
    assert SnapshotIdentity("devnet", str(DRIFT_PROGRAM_ID)).allowed
    assert not SnapshotIdentity("localnet", str(DRIFT_PROGRAM_ID)).allowed
    assert not SnapshotIdentity("mainnet", "11111111111111111111111111111111").allowed


def _load_warnings(
    file: Path, caplog: pytest.LogCaptureFixture, identity: SnapshotIdentity = IDENTITY
) -> tuple[int, list[str], AccountLedger]:
    ledger = AccountLedger()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="driftshare._snapshot.keeper"):
        keeper = SnapshotKeeper(ledger, file, identity, wall_clock=FakeClock(50_100.0))
        loaded = keeper.apply(keeper.read())
    return loaded, [r.getMessage() for r in caplog.records], ledger


@pytest.mark.parametrize(
    ("identity", "why"),
    [
        ({"network": "devnet"}, "written for mainnet, not devnet"),
        ({"program_id": "11111111111111111111111111111111"}, "written for program"),
    ],
)
def test_a_foreign_snapshot_is_ignored_with_one_warning(
    world: World,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    identity: dict[str, str],
    why: str,
) -> None:
    file = _written(world, tmp_path)
    mine = dataclasses.replace(IDENTITY, **identity)
    loaded, warnings, ledger = _load_warnings(file, caplog, mine)
    assert loaded == 0
    assert len(ledger) == 0
    assert len(warnings) == 1
    assert why in warnings[0]


def _rewrite_header(file: Path, **changes: object) -> None:
    header, body = file.read_bytes().split(b"\n", 1)
    fields = {**json.loads(header), **changes}
    file.write_bytes(json.dumps(fields).encode() + b"\n" + body)


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ("version", f"this driftshare reads {FORMAT_VERSION}"),
        ("future", "written in the future"),
        ("flip", "checksum"),
        ("truncate", "truncated"),
        ("not json", "invalid header"),
        ("empty", "no header line"),
        ("oversized account", "at most"),
    ],
)
def test_a_damaged_snapshot_is_ignored_with_one_warning(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str, why: str
) -> None:
    file = _written(world, tmp_path)
    content = file.read_bytes()
    if damage == "version":
        _rewrite_header(file, version=FORMAT_VERSION + 1)
    elif damage == "future":
        _rewrite_header(file, written_at=50_100.0 + 3600)
    elif damage == "flip":
        middle = len(content) * 2 // 3
        file.write_bytes(content[:middle] + bytes([content[middle] ^ 0x01]) + content[middle + 1 :])
    elif damage == "truncate":
        file.write_bytes(content[: len(content) - 10])
    elif damage == "not json":
        file.write_bytes(b"\x00\xff garbage\n" + content)
    elif damage == "empty":
        file.write_bytes(b"")
    else:
        header, body = content.split(b"\n", 1)
        records = json.loads(body)
        records["records"][0]["data"] = base64.b64encode(b"\x01" * 20_000).decode()
        new_body = json.dumps(records).encode()
        fields = {
            **json.loads(header),
            "body_bytes": len(new_body),
            "body_sha256": hashlib.sha256(new_body).hexdigest(),
        }
        file.write_bytes(json.dumps(fields).encode() + b"\n" + new_body)
    loaded, warnings, ledger = _load_warnings(file, caplog)
    assert loaded == 0
    assert len(ledger) == 0
    assert len(warnings) == 1
    assert why in warnings[0]


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0), junk=st.binary(max_size=64))
def test_any_truncation_or_tail_garbage_is_refused(
    world: World, tmp_path: Path, cut: int, junk: bytes
) -> None:
    file = _written(world, tmp_path)
    content = file.read_bytes()
    cut %= len(content)
    file.write_bytes(content[:cut] + junk)
    with pytest.raises(SnapshotError):
        read_snapshot(file, IDENTITY, wall_now=50_100.0)


def test_live_data_replaces_the_snapshot_account_by_account(world: World, tmp_path: Path) -> None:
    file = _written(world, tmp_path)
    ledger = AccountLedger()
    keeper = SnapshotKeeper(ledger, file, IDENTITY, wall_clock=FakeClock(50_100.0))
    keeper.apply(keeper.read())
    records = {r.pubkey: r for r in world_records(world, slot=40)}
    market0 = str(world.perp_market_pubkey(0))
    market1 = str(world.perp_market_pubkey(1))
    # Live data from an older slot never replaces the snapshot's newer value.
    ledger.apply(records[market0].__class__(market0, "perp", 39, b"older", None))
    assert ledger.get(market0).record == records[market0]  # type: ignore[union-attr]
    assert market0 in keeper.restored
    # Live data at a newer slot does, for that account alone.
    world.step()
    fresh = {r.pubkey: r for r in world_records(world, slot=41)}
    ledger.apply(fresh[market0])
    assert market0 not in keeper.restored
    assert market1 in keeper.restored
    assert ledger.get(market0).record == fresh[market0]  # type: ignore[union-attr]


async def test_the_keeper_writes_changes_and_once_at_close(world: World, tmp_path: Path) -> None:
    ledger = AccountLedger()
    keeper = SnapshotKeeper(ledger, tmp_path, IDENTITY, interval_s=3600)
    assert not await keeper.write_if_changed()
    for record in world_records(world, slot=3):
        ledger.apply(record)
    assert await keeper.write_if_changed()
    assert not await keeper.write_if_changed()
    world.step()
    changed = world_records(world, slot=4)[1]
    ledger.apply(changed)
    await keeper.stop()
    assert keeper.writes == 2
    restored = read_snapshot(keeper.file, IDENTITY)
    assert changed in [r.record for r in restored.accounts]


_WRITER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from driftshare._data.ledger import AccountLedger
    from driftshare._snapshot import SnapshotIdentity, write_snapshot
    from driftshare.sim._records import world_records
    from driftshare.sim.store import AccountStore
    from driftshare.sim.world import World

    file, program, genesis = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    identity = SnapshotIdentity("mainnet", program, genesis)
    world = World(AccountStore(), seed=5, markets=5)
    world.step()
    ledger = AccountLedger()
    for record in world_records(world, slot=99):
        ledger.apply(record)
    real_fsync = os.fsync

    def fsync_then_hang(fd):
        real_fsync(fd)
        print("mid-write", flush=True)
        sys.stdin.read()  # held here, temporary file written, until killed

    os.fsync = fsync_then_hang
    write_snapshot(file, identity, ledger)
    """
)


async def test_a_crash_mid_write_leaves_the_previous_snapshot_usable(
    world: World, tmp_path: Path
) -> None:
    file = tmp_path / "snap"
    write_snapshot(file, IDENTITY, _filled(world, slot=40), mono_now=1000.0)
    before = file.read_bytes()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _WRITER,
        str(file),
        IDENTITY.program_id,
        MAINNET_GENESIS,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert line.strip() == b"mid-write"
        leftovers = _leftovers(tmp_path)
        assert len(leftovers) == 1
        assert leftovers[0].stat().st_size > 0
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()
    assert file.read_bytes() == before
    (leftover,) = _leftovers(tmp_path)
    os.utime(leftover, (time.time() - 3600, time.time() - 3600))  # a crash of an hour ago
    ledger = AccountLedger()
    keeper = SnapshotKeeper(ledger, file, IDENTITY)
    assert keeper.apply(keeper.read()) == len(_filled(world))
    assert {e.record.slot for e in ledger} == {40}
    assert _leftovers(tmp_path) == []


def _leftovers(folder: Path) -> list[Path]:
    return list(folder.glob(".snap.*.tmp"))


async def test_a_failing_disk_warns_once_and_the_next_good_write_lands(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "not-yet"
    ledger = _filled(world, confirmed_at=time.monotonic())
    keeper = SnapshotKeeper(ledger, folder / "snap", IDENTITY)
    ledger.confirm(str(world.perp_market_pubkey(0)), 50)
    with caplog.at_level(logging.WARNING, logger="driftshare._snapshot.keeper"):
        assert not await keeper.write_if_changed()
        assert not await keeper.write_if_changed()
    assert len(caplog.records) == 1
    assert "cannot write the snapshot" in caplog.records[0].getMessage()
    folder.mkdir()
    assert await keeper.write_if_changed()
    assert len(read_snapshot(keeper.file, IDENTITY).accounts) == len(ledger)


def test_one_undecodable_account_in_a_sound_file_hides_only_its_market(
    world: World, tmp_path: Path
) -> None:
    broken = str(world.perp_market_pubkey(3))
    ledger = _filled(world)
    entry = ledger.get(broken)
    assert entry is not None
    ledger.apply(
        dataclasses.replace(entry.record, slot=41, data=entry.record.data[:64]), confirmed_at=1000.0
    )
    file = tmp_path / "snap"
    write_snapshot(file, IDENTITY, ledger, wall_now=50_000.0, mono_now=1030.0)
    restored = AccountLedger()
    keeper = SnapshotKeeper(restored, file, IDENTITY, wall_clock=FakeClock(50_100.0))
    assert keeper.apply(keeper.read()) == len(ledger)
    source = WarmSource(restored)
    served = sorted(m.market_index for m in source.perp_markets())
    assert served == [i for i in world.perp_indexes() if i != 3]
    assert source.perp_market(3) is None  # the undecodable one, and only it, is hidden
    assert source.current()
    source.close()
    assert not source.current()
    assert source.perp_market(2) == world.perp_market(2)


def test_an_unusable_snapshot_path_costs_the_warm_start_not_the_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A name too long for the file system: checking it raises OSError (ENAMETOOLONG).
    path = Path("/tmp") / ("x" * 5000)
    settings = load_settings(snapshot_path=path, rpc_url="http://127.0.0.1:8899")
    with caplog.at_level(logging.WARNING, logger="driftshare._snapshot.keeper"):
        keeper = snapshot_keeper(AccountLedger(), settings, "mainnet", settings.effective_rpc_url())
    assert keeper is None
    assert "DRIFT_SNAPSHOT_PATH" in caplog.text
