"""What an idle process costs, and how fast each one exits.

A section of BENCHMARKS.md (``python -m bench --only idle``). Idle CPU: a bare driftpy
WebSocket client, driftshare's shared client with no reads, and ``driftshare serve`` with no
engine and no page open, each in its own process on one simulator (30 markets, a slot every
0.4 s) in another. Exits: ``driftshare sim`` after SIGINT, and a fleet leader (``driftshare
serve`` with ``DRIFT_SHARE_URL``) after SIGTERM, with the lease hand-over and the final
snapshot checked each time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import IO, Any

import httpx
import psutil  # type: ignore[import-untyped]

from bench import BenchError, Context, _forkserver
from bench._harness import poll, run_worker, simulator
from bench._processes import RedisServer, ServeProcess, all_ready, stop_all
from driftshare.sim import Simulator

TITLE = "Idle cost and shutdown"
MARKETS = 30
_DEADLINE_S = 120.0
_LEASE_S = 30.0
"""Far longer than an exit: only a hand-over, noticed at the follower's next lease tick (a
sixth of the lease), lets it lead before the lease expires."""


def _wait_for_line(stream: IO[str], marker: str) -> None:
    """Read ``stream`` up to a line holding ``marker`` (BenchError if it ends first)."""
    seen: list[str] = []
    for line in stream:
        if marker in line:
            return
        seen.append(line)
    raise BenchError(f"no {marker!r} line: {' | '.join(seen[-3:])}")


def _serve_idle(url: str, warmup_s: float, window_s: float) -> dict[str, Any]:
    """``driftshare serve`` with no engine and no page: its CPU over ``window_s``."""
    argv = ["-m", "driftshare", "serve", "--rpc-url", url, "--port", "0"]
    env = {**os.environ, "COLUMNS": "400"}
    proc = _forkserver.popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        if proc.stderr is None:
            raise BenchError("serve's stderr is not a pipe")
        _wait_for_line(proc.stderr, "ready (")
        time.sleep(warmup_s)
        measured = psutil.Process(proc.pid)
        before, started = measured.cpu_times(), time.perf_counter()
        time.sleep(window_s)
        after, wall = measured.cpu_times(), time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(_DEADLINE_S)
    cpu = (after.user + after.system) - (before.user + before.system)
    return {"client": "serve", "cpu_pct": 100 * cpu / wall, "window_s": window_s}


def _sim_exit_s(markets: int) -> float:
    """Seconds from SIGINT to the exit of a fresh ``driftshare sim`` serving ``markets``."""
    with simulator(markets=markets) as sim:
        return _interrupted_exit_s(sim.process)


def _interrupted_exit_s(proc: subprocess.Popen[Any] | _forkserver.Forked) -> float:
    """Seconds from SIGINT to the exit of the simulator ``proc``, which must exit 0."""
    started = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    code = proc.wait(_DEADLINE_S)
    if code != 0:
        raise BenchError(f"driftshare sim exited with {code} after SIGINT")
    return time.perf_counter() - started


async def _leader_exit(redis: RedisServer, folder: Path) -> dict[str, float]:
    """A two-member fleet; SIGTERM its leader: seconds to its exit and to the follower's lead.

    The final snapshot is the only one written (interval an hour).
    """
    env = {"DRIFT_SHARE_LEASE_S": str(_LEASE_S), "DRIFT_SNAPSHOT_INTERVAL_S": "3600"}
    async with Simulator(markets=8, tick_s=0.4) as sim:
        members = []
        for name in ("a", "b"):
            (folder / name).mkdir()
            snapshots = {**env, "DRIFT_SNAPSHOT_PATH": str(folder / name)}
            members.append(ServeProcess(sim.http_url, redis.url, env=snapshots))
        for member in members:
            await member.start()
        try:
            async with httpx.AsyncClient() as client:
                ready = partial(all_ready, client, members)
                await poll(ready, _DEADLINE_S, "a leader and a follower")
                roles = [(await m.stats(client))["fleet"]["role"] for m in members]
                leader = members[roles.index("leader")]
                follower = members[roles.index("follower")]
                started = time.perf_counter()
                code = await leader.stop(_DEADLINE_S)  # SIGTERM, then the exit awaited
                exit_s = time.perf_counter() - started

                async def leads() -> bool:
                    stats = await follower.stats(client)
                    return bool(stats.get("fleet", {}).get("role") == "leader")

                await poll(leads, _DEADLINE_S, "the follower's lead")
                handover_s = time.perf_counter() - started
                if handover_s >= _LEASE_S:
                    raise BenchError("the follower led only once the lease expired: no hand-over")
        finally:
            await stop_all(members)
    written = list((folder / ("a" if members[0] is leader else "b")).glob("*.snapshot"))
    if code != 0 or not written:
        raise BenchError(f"the leader exited with {code}, snapshot files {written}")
    return {"exit_s": exit_s, "handover_s": handover_s}


def run(ctx: Context) -> str:
    warmup_s, window_s, repeats = (1.0, 2.0, 1) if ctx.quick else (10.0, 60.0, 5)
    markets = 4 if ctx.quick else MARKETS
    idle: list[dict[str, Any]] = []
    with simulator(markets=markets, tick_s=0.4) as sim:
        for client in ("driftpy", "shared"):
            params = {"kind": "idle", "client": client, "warmup_s": warmup_s}
            idle.append(run_worker(sim, {**params, "window_s": window_s}))
        idle.append(_serve_idle(sim.http_url, warmup_s, window_s))
        # Its clients gone, the simulator that served them is the first one timed at exit.
        sim_exits = [_interrupted_exit_s(sim.process)]
    sim_exits += [_sim_exit_s(markets) for _ in range(repeats - 1)]
    redis = RedisServer()
    redis.start()
    try:
        with tempfile.TemporaryDirectory(prefix="driftshare-bench-exit-") as work:
            leaders = []
            for i in range(repeats):
                run_folder = Path(work) / str(i)
                run_folder.mkdir()
                leaders.append(asyncio.run(_leader_exit(redis, run_folder)))
    finally:
        redis.stop()
    results = {
        "markets": markets,
        "idle": idle,
        "sim_exit_s": sim_exits,
        "leader_exit": leaders,
    }
    ctx.write_json(results)
    return _report(results, window_s)


def _report(results: dict[str, Any], window_s: float) -> str:
    names = {
        "driftpy": "a bare driftpy WebSocket client",
        "shared": "driftshare's shared client, no reads",
        "serve": "`driftshare serve`, no engine, no page open",
    }
    rows = "\n".join(f"| {names[r['client']]} | {r['cpu_pct']:.1f}% |" for r in results["idle"])
    sim = results["sim_exit_s"]
    exits = [run["exit_s"] for run in results["leader_exit"]]
    handovers = [run["handover_s"] for run in results["leader_exit"]]
    sim_s = f"{statistics.median(sim):.2f} ({max(sim):.2f})"
    leader_s = f"{statistics.median(exits):.2f} ({max(exits):.2f})"
    return f"""### Idle CPU

One process each on one simulator ({results["markets"]} markets, a slot every 0.4 s, in a
process of its own), CPU time over {window_s:g} s of wall time after a warm-up. The
dashboard reads every 5 s while no page listens, every 0.25 s while one does.

| process | CPU |
| --- | --- |
{rows}

### Exit

| process | signal | seconds to exit, median (max) of {len(sim)} |
| --- | --- | --- |
| `driftshare sim`, {results["markets"]} markets | SIGINT | {sim_s} |
| fleet leader (`driftshare serve`) | SIGTERM | {leader_s} |

Each leader exited with status 0 after writing its final snapshot and handing its lease
over: the follower led {statistics.median(handovers):.2f} s (median) after the signal, at
its next lease tick ({_LEASE_S:g} s lease, a tick every {_LEASE_S / 6:g} s). Most of an
exit used to be the interpreter's teardown (1 to 5 s): the `driftshare` program now
freezes the garbage collector's objects before it, see `driftshare._cli.run`.
"""
