"""Clean exits: ``driftshare sim`` after SIGINT, and a fleet member after SIGTERM with its
lease handed over and its final snapshot written. How long they take is measured in
bench/idle.py, never asserted here."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx

from bench import _forkserver
from bench._processes import RedisServer, ServeProcess, all_ready, free_port, stop_all
from conftest import eventually
from driftshare._snapshot import SnapshotIdentity, read_snapshot, snapshot_file
from driftshare.sim import Simulator
from driftshare.sim._codec import DRIFT_PROGRAM_ID

MAINNET = SnapshotIdentity("mainnet", str(DRIFT_PROGRAM_ID))


async def test_sim_exits_cleanly_on_sigint() -> None:
    child = await _forkserver.create(
        ["-m", "driftshare", "sim", "--port", str(free_port()), "--markets", "2"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    assert b"driftshare sim ready" in await asyncio.wait_for(child.stdout.readline(), 60)
    child.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == 0
    assert err == b""


async def test_a_fleet_member_hands_its_lease_over_and_writes_its_snapshot_at_sigterm(
    simulator: Simulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    # Only a hand-over, seen at the next lease tick (5 s), lets the follower lead before the
    # 30 s lease expires.
    env = {"DRIFT_SHARE_LEASE_S": "30", "DRIFT_SNAPSHOT_INTERVAL_S": "3600"}
    folders = [tmp_path / "a", tmp_path / "b"]
    members = []
    for folder in folders:
        folder.mkdir()
        member = ServeProcess(
            simulator.http_url, redis_server.url, env={**env, "DRIFT_SNAPSHOT_PATH": str(folder)}
        )
        await member.start()
        members.append(member)
    try:
        async with httpx.AsyncClient() as client:
            await eventually(
                lambda: all_ready(client, members), "a leader and a follower", within=60
            )
            roles = [(await m.stats(client))["fleet"]["role"] for m in members]
            leader = members[roles.index("leader")]
            follower = members[roles.index("follower")]
            leader_file = snapshot_file(folders[members.index(leader)], MAINNET)
            assert not leader_file.exists()  # the first timed write is an hour away
            assert await leader.stop(within=60) == 0  # SIGTERM, then the exit awaited

            async def follower_leads() -> bool:
                return (await follower.stats(client)).get("fleet", {}).get("role") == "leader"

            await eventually(follower_leads, "the follower leads after the hand-over", within=25)
        assert len(read_snapshot(leader_file, MAINNET).accounts) > 0
    finally:
        codes = await stop_all(members)
    assert codes == [0, 0]
