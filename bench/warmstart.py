"""Warm start: process start to first answer with and without a snapshot, and snapshot costs.

Runs real ``driftshare serve`` processes against a ``driftshare sim`` subprocess: with the
RPC up, then with it down (the simulator stopped), each with an empty snapshot folder and
with the snapshot a previous clean shutdown wrote. Then times writing, loading and decoding
a snapshot of 30 and 100 perp markets. ``python -m bench.warmstart [--quick]`` prints the
section's markdown; ``python -m bench --only warmstart`` stores it for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import BenchError, Context
from bench._harness import simulator
from bench._processes import ServeProcess
from driftshare._data.ledger import AccountLedger
from driftshare._data.ledger_subscriber import LedgerReads
from driftshare._snapshot import (
    SnapshotIdentity,
    SnapshotKeeper,
    encode_snapshot,
    write_snapshot,
)
from driftshare.sim._codec import DRIFT_PROGRAM_ID
from driftshare.sim._records import world_records
from driftshare.sim.store import AccountStore
from driftshare.sim.world import World

__all__ = ["TITLE", "run"]

TITLE = "Warm start"

_POLL_S = 0.005
"""How often a start is polled: its figures' resolution. Each poll costs the starting process
CPU too, so the quick mode, whose figures are not published, polls ten times less often."""


# -- processes --------------------------------------------------------------------------------


@dataclass
class StartRun:
    """One process start: seconds from spawn to each milestone, None if not reached."""

    first_answer_s: float | None = None
    """The first HTTP answer of ``/api/markets``, whatever it holds."""
    all_markets_s: float | None = None
    """The first answer listing every market."""
    all_stale: bool | None = None
    """Whether that answer flagged every market stale."""
    ready_s: float | None = None
    """``/readyz`` 200: fresh data."""


async def _measure_start(
    rpc_url: str, snapshot: Path, markets: int, *, expect_ready: bool, cap_s: float, poll_s: float
) -> StartRun:
    result = StartRun()
    serve = ServeProcess(rpc_url, snapshot=snapshot)
    started = time.perf_counter()
    await serve.spawn()
    try:
        await serve.listening()
        async with httpx.AsyncClient(base_url=serve.url, timeout=30) as http:
            deadline = started + cap_s
            while time.perf_counter() < deadline:
                if serve.returncode is not None:
                    raise BenchError(f"serve exited with {serve.returncode}")
                try:
                    response = await http.get("/api/markets")
                except httpx.TransportError:
                    await asyncio.sleep(poll_s)
                    continue
                now = time.perf_counter() - started
                if result.first_answer_s is None:
                    result.first_answer_s = now
                rows = response.json().get("markets", [])
                if len(rows) == markets:
                    result.all_markets_s = now
                    result.all_stale = all(row["stale"] for row in rows)
                    break
                await asyncio.sleep(poll_s)
            while expect_ready and time.perf_counter() < deadline:
                if (await http.get("/readyz")).status_code == 200:
                    result.ready_s = time.perf_counter() - started
                    break
                await asyncio.sleep(poll_s)
    finally:
        await serve.stop()
    return result


async def _interpreter_start() -> float:
    """Seconds to start Python and import serve's modules: the floor of any first answer."""
    started = time.perf_counter()
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import driftshare._cli, driftshare._serve"
    )
    await child.wait()
    return time.perf_counter() - started


# -- start to first answer ----------------------------------------------------------------------


async def _start_cases(markets: int, repeats: int, cap_s: float, poll_s: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="driftshare-bench-warm-"))
    saved = work / "saved"
    saved.mkdir()
    rpc_url = ""  # the simulator's, once it runs; nothing listens there once it stopped
    runs: dict[str, list[dict[str, Any]]] = {}

    async def case(rpc_up: bool, warm: bool) -> None:
        # Without a snapshot and without an RPC nothing ever comes: one start shows it.
        count = repeats if rpc_up or warm else 1
        name = f"rpc {'up' if rpc_up else 'down'}, {'snapshot' if warm else 'no snapshot'}"
        runs[name] = []
        for i in range(count):
            # The first cold start with the RPC up writes, at its clean shutdown, the
            # snapshot every warm start copies.
            folder = (
                saved if rpc_up and not warm and i == 0 else _folder(work, saved if warm else None)
            )
            # The floor under the same load as the start it is compared with.
            interpreter_s = await _interpreter_start()
            run = await _measure_start(
                rpc_url,
                folder,
                markets,
                expect_ready=rpc_up,
                cap_s=60 if rpc_up or warm else cap_s,
                poll_s=poll_s,
            )
            runs[name].append({**run.__dict__, "interpreter_s": interpreter_s})

    try:
        with simulator(markets=markets) as sim:
            rpc_url = sim.http_url
            await case(rpc_up=True, warm=False)
            if not list(saved.glob("*.snapshot")):
                raise BenchError("serve wrote no snapshot at a clean shutdown")
            await case(rpc_up=True, warm=True)
        # The RPC is down: nothing listens at its address any more.
        await case(rpc_up=False, warm=False)
        await case(rpc_up=False, warm=True)
        return runs
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _folder(work: Path, saved: Path | None) -> Path:
    """A fresh snapshot folder: empty, or holding a copy of the saved snapshot."""
    folder = Path(tempfile.mkdtemp(dir=work))
    if saved is not None:
        for file in saved.glob("*.snapshot"):
            shutil.copy2(file, folder / file.name)
    return folder


# -- snapshot costs -----------------------------------------------------------------------------


def _costs(markets: int, repeats: int) -> dict[str, Any]:
    world = World(AccountStore(), seed=1, markets=markets)
    ledger = AccountLedger()
    for record in world_records(world):
        ledger.apply(record)
    identity = SnapshotIdentity("mainnet", str(DRIFT_PROGRAM_ID), genesis_hash="bench")
    with tempfile.TemporaryDirectory(prefix="driftshare-bench-snap-") as folder:
        file = Path(folder) / "bench.snapshot"
        encode_s, write_s, load_s, decode_s = [], [], [], []
        size = 0
        for _ in range(repeats):
            t0 = time.perf_counter()
            encode_snapshot(identity, ledger, time.time(), time.monotonic())
            encode_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            size = write_snapshot(file, identity, ledger)
            write_s.append(time.perf_counter() - t0)
            restored = AccountLedger()
            keeper = SnapshotKeeper(restored, file, identity)
            t0 = time.perf_counter()
            keeper.apply(keeper.read())
            load_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            reads = LedgerReads(restored)
            decode_s.append(time.perf_counter() - t0)
            if len(reads.get_perp_market_accounts()) != markets:
                raise BenchError("the restored snapshot lost markets")
    return {
        "markets": markets,
        "accounts": len(ledger),
        "bytes": size,
        "encode_ms": statistics.median(encode_s) * 1e3,
        "write_ms": statistics.median(write_s) * 1e3,
        "load_ms": statistics.median(load_s) * 1e3,
        "decode_ms": statistics.median(decode_s) * 1e3,
        "repeats": repeats,
    }


# -- report -------------------------------------------------------------------------------------


def _ms(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "never"
    text = f"{statistics.median(got) * 1e3:,.0f} ms"
    return text if len(got) == len(values) else f"{text} ({len(got)}/{len(values)})"


def _report(results: dict[str, Any]) -> str:
    starts = results["start"]
    markets, cap_s = results["markets"], results["cap_s"]
    lines = [
        "### Start to first answer",
        "",
        f"Real `driftshare serve` processes against a `driftshare sim` subprocess with "
        f"{markets} perp markets, spawn to answer (median of {results['repeats']} starts; "
        f"one start for the RPC-down run without a snapshot, watched for {cap_s:g} s). "
        "Before each start, the time to start Python and import serve's modules is measured "
        "under the same load: the floor of any first answer (the machine is shared, so the "
        "floor moves; compare each row with its own). "
        '"RPC down" is the simulator stopped: nothing listens at the RPC address.',
        "",
        "| case | Python + imports alone | first `/api/markets` answer | "
        "answer with every market | the same, above the floor | those values | "
        "`/readyz` 200 (fresh) |",
        "|---|---|---|---|---|---|---|",
    ]
    for case, runs in starts.items():
        stale = {r["all_stale"] for r in runs if r["all_stale"] is not None}
        shown = "stale" if stale == {True} else "fresh" if stale == {False} else "—"
        if len(stale) > 1:
            shown = "mixed"
        ready = _ms([r["ready_s"] for r in runs]) if case.startswith("rpc up") else "— (503)"
        above = [
            None if r["all_markets_s"] is None else r["all_markets_s"] - r["interpreter_s"]
            for r in runs
        ]
        lines.append(
            f"| {case} | {_ms([r['interpreter_s'] for r in runs])} | "
            f"{_ms([r['first_answer_s'] for r in runs])} | "
            f"{_ms([r['all_markets_s'] for r in runs])} | {_ms(above)} | {shown} | {ready} |"
        )
    lines += [
        "",
        "### Snapshot cost",
        "",
        "Encoding is the CPU part (JSON, base64, SHA-256); writing adds the temporary file, "
        "fsync and rename, which the shared client does at most every "
        "`DRIFT_SNAPSHOT_INTERVAL_S`, in a thread. Loading is reading and validating the "
        "file and applying it to a ledger; decoding is the LedgerSubscriber decoding every "
        "account once, which the first answer from a snapshot waits for. "
        f"Medians of {results['costs'][0]['repeats']} runs.",
        "",
        "| perp markets | accounts | file size | encode | write (with fsync) | load | decode all |",
        "|---|---|---|---|---|---|---|",
    ]
    for cost in results["costs"]:
        lines.append(
            f"| {cost['markets']} | {cost['accounts']} | {cost['bytes'] / 1024:,.0f} KiB | "
            f"{cost['encode_ms']:.1f} ms | {cost['write_ms']:.1f} ms | "
            f"{cost['load_ms']:.1f} ms | {cost['decode_ms']:.0f} ms |"
        )
    return "\n".join(lines) + "\n"


def measure(quick: bool) -> dict[str, Any]:
    """Every figure of the section, as raw numbers."""
    markets = 8 if quick else 30
    repeats = 1 if quick else 5
    cap_s = 3.0 if quick else 20.0

    start = asyncio.run(_start_cases(markets, repeats, cap_s, _POLL_S * 10 if quick else _POLL_S))
    costs = [_costs(n, 3 if quick else 20) for n in (30, 100)]
    return {
        "markets": markets,
        "repeats": repeats,
        "cap_s": cap_s,
        "start": start,
        "costs": costs,
    }


def run(ctx: Context) -> str:
    """Measure (small sizes when ``ctx.quick``), store the raw numbers, return the markdown."""
    results = measure(ctx.quick)
    ctx.write_json(results)
    return _report(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one start each")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="driftshare-bench-") as out:
        ctx = Context("warmstart", args.quick, Path(out), Path("BENCHMARKS.md"))
        print(f"## {TITLE}\n\n{run(ctx)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
