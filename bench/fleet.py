"""The fleet on Redis, measured: upstream cost, propagation, failover and memory.

A section of BENCHMARKS.md (``python -m bench --only fleet``); ``python -m bench.fleet
[--quick] [--out DIR]`` runs it alone, printing its markdown. Everything runs on
this machine: the simulator in this process, Debian's redis-server and real
``driftshare serve`` processes on loopback ports.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench import BenchError, Context
from driftshare._fleet._harness import RedisServer, ServeProcess, all_ready, free_port, fresh_after
from driftshare.sim import Simulator

TITLE = "Fleet: many processes, one upstream"
ENGINES = ["funding", "lst", "scalp", "arb"]
MARKETS = 8
_ENV = {"DRIFT_NETWORK": "mainnet", "DRIFT_HEALTH_INTERVAL_S": "1"}
_READY_DEADLINE_S = 240.0


async def _poll(check: Any, deadline_s: float, what: str, every_s: float = 0.05) -> float:
    """Await ``check()`` (polled every ``every_s``); the seconds it took."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > deadline_s:
            raise BenchError(f"{what}: not within {deadline_s:g}s")
        await asyncio.sleep(every_s)
    return time.monotonic() - start


# -- upstream cost ------------------------------------------------------------------------


async def _upstream_cost(
    processes: int, fleet: bool, window_s: float, redis: RedisServer
) -> dict[str, Any]:
    sim = Simulator(markets=MARKETS, tick_s=0.4)
    await sim.start()
    procs = [
        ServeProcess(
            f"{sim.http_url}/?api-key=p{i}",
            redis.url if fleet else None,
            engines=ENGINES,
            env={**_ENV, "DRIFT_SHARE_GROUP": f"cost{processes}"},
        )
        for i in range(processes)
    ]
    try:
        async with httpx.AsyncClient() as http:
            # The first process leads; the rest join once it has published.
            procs[0].start()
            await _poll(lambda: all_ready(http, procs[:1], fleet=fleet), _READY_DEADLINE_S, "first")
            for proc in procs[1:]:
                proc.start()
            await _poll(lambda: all_ready(http, procs, fleet=fleet), _READY_DEADLINE_S, "all ready")
            await asyncio.sleep(window_s)  # the measured window: engines read, chain moves
            found = sim.stats()
            roles = [(await p.stats(http)).get("fleet", {}).get("role") for p in procs]
            engines = [e for p in procs for e in (await p.stats(http)).get("engines", [])]
            engine_errors = sum(e.get("errors", 0) for e in engines)
        rss = {p.pid: p.rss_bytes() for p in procs}
    finally:
        for proc in procs:
            proc.stop()
        await sim.stop()
    followers = [rss[p.pid] for p, r in zip(procs, roles, strict=True) if r == "follower"]
    return {
        "processes": processes,
        "fleet": fleet,
        "http_requests": found["http_requests"]["total"],
        "ws_connections": found["ws_connections"]["total"],
        "subscriptions": found["subscriptions"]["total"],
        "engine_errors": engine_errors,
        "rss_mb_median": statistics.median(rss.values()) / 2**20,
        "rss_mb_follower_median": statistics.median(followers) / 2**20 if followers else None,
        "rss_mb_leader_or_first": rss[procs[0].pid] / 2**20,
    }


# -- propagation --------------------------------------------------------------------------


async def _propagation(seconds: float, redis: RedisServer) -> list[float]:
    """Leader's ledger receives an update → a follower process's getter returns it (ms).

    The chain (``driftshare sim``), the leader (this process) and the follower each run in
    their own process; both ends stamp with CLOCK_MONOTONIC, which all processes share.
    """
    from driftshare.manager import DriftClientManager

    port = free_port()
    sim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "driftshare", "sim", "--port", str(port),
        "--markets", str(MARKETS), "--tick-s", "0.1",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    rpc_url = f"http://127.0.0.1:{port}"
    received: dict[tuple[str, int], float] = {}
    latencies: list[float] = []
    DriftClientManager.configure(
        rpc_url=rpc_url, share_url=redis.url, share_group="propagation", network="mainnet"
    )
    follower: asyncio.subprocess.Process | None = None
    try:
        async with httpx.AsyncClient() as http:
            await _poll(lambda: _answers(http, rpc_url), _READY_DEADLINE_S, "simulator")
        client = await DriftClientManager.get_client()
        shared = DriftClientManager.shared_state()
        if client is None or shared is None or shared.gen is None or shared.gen.fleet is None:
            raise BenchError("the leader did not start")

        def on_entry(entry: Any, changed: bool) -> None:
            if changed:
                received[(entry.record.pubkey, entry.record.slot)] = time.monotonic()

        shared.ledger.add_listener(on_entry)
        follower = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.fleet", "--follow", redis.url, "--rpc", rpc_url,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert follower.stdout is not None
        ready = await asyncio.wait_for(follower.stdout.readline(), _READY_DEADLINE_S)
        if ready.strip() != b"ready":
            raise BenchError("the follower did not start")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                line = await asyncio.wait_for(follower.stdout.readline(), end - time.monotonic())
            except TimeoutError:
                break
            pubkey, slot, at = line.decode().split()
            sent = received.get((pubkey, int(slot)))
            if sent is not None:
                latencies.append((float(at) - sent) * 1000)
    finally:
        for process in (follower, sim):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
        await DriftClientManager.shutdown()
    if not latencies:
        raise BenchError("no update reached the follower")
    return latencies


async def _answers(http: httpx.AsyncClient, rpc_url: str) -> bool:
    try:
        await http.post(rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "getSlot"})
    except httpx.HTTPError:
        return False
    return True


async def _follow(share_url: str, rpc_url: str) -> None:
    """The follower side of :func:`_propagation`: print when a getter returns each update."""
    from driftpy.addresses import get_perp_market_public_key, get_spot_market_public_key
    from driftpy.oracles.oracle_id import get_oracle_id
    from solders.pubkey import Pubkey

    from driftshare._ledger_subscriber import oracle_source
    from driftshare.manager import DriftClientManager

    DriftClientManager.configure(
        rpc_url=rpc_url, share_url=share_url, share_group="propagation", network="mainnet"
    )
    client = await DriftClientManager.get_client()
    shared = DriftClientManager.shared_state()
    if client is None or shared is None:
        raise SystemExit("no client")
    subscriber = client.account_subscriber
    program_id = client.program.program_id
    perp = {str(get_perp_market_public_key(program_id, i)): i for i in range(64)}
    spot = {str(get_spot_market_public_key(program_id, i)): i for i in range(64)}

    def served_slot(record: Any) -> int | None:
        if record.kind == "oracle":
            source = oracle_source(record.oracle_source)
            found = subscriber.get_oracle_price_data_and_slot(
                get_oracle_id(Pubkey.from_string(record.pubkey), source)
            )
        elif record.pubkey in perp:
            found = subscriber.get_perp_market_and_slot(perp[record.pubkey])
        elif record.pubkey in spot:
            found = subscriber.get_spot_market_and_slot(spot[record.pubkey])
        else:
            found = subscriber.get_state_account_and_slot()
        return None if found is None else found.slot

    def on_entry(entry: Any, changed: bool) -> None:
        # The LedgerSubscriber's listener ran first: the getter now returns the new value.
        if changed and served_slot(entry.record) == entry.record.slot:
            sys.stdout.write(f"{entry.record.pubkey} {entry.record.slot} {time.monotonic()}\n")
            sys.stdout.flush()

    shared.ledger.add_listener(on_entry)
    print("ready", flush=True)
    await asyncio.Event().wait()


# -- failover -----------------------------------------------------------------------------


async def _failover(runs: int, redis: RedisServer) -> list[float]:
    """SIGKILL the leader; seconds until every survivor serves data newer than the kill."""
    sim = Simulator(markets=MARKETS, tick_s=0.4)
    await sim.start()
    env = {**_ENV, "DRIFT_SHARE_GROUP": "failover", "DRIFT_HEALTH_INTERVAL_S": "0.5"}

    def member(i: int) -> ServeProcess:
        proc = ServeProcess(f"{sim.http_url}/?api-key=f{i}", redis.url, env=env)
        proc.start()
        return proc

    procs = [member(i) for i in range(3)]
    times: list[float] = []
    try:
        async with httpx.AsyncClient() as http:
            for run in range(runs):
                leader, took = await _kill_leader(http, procs, sim)
                times.append(took)
                procs = [*(p for p in procs if p is not leader), member(3 + run)]
                leader.stop()
    finally:
        for proc in procs:
            proc.stop()
        await sim.stop()
    return times


async def _kill_leader(
    http: httpx.AsyncClient, procs: list[ServeProcess], sim: Simulator
) -> tuple[ServeProcess, float]:
    await _poll(lambda: all_ready(http, procs), _READY_DEADLINE_S, "ready")
    roles = [(await p.stats(http))["fleet"]["role"] for p in procs]
    leader = procs[roles.index("leader")]
    survivors = [p for p in procs if p is not leader]
    leader.kill()
    killed_slot = sim.stats()["slot"]

    took = await _poll(lambda: fresh_after(http, survivors, killed_slot), 60, "takeover", 0.02)
    return leader, took


# -- report -------------------------------------------------------------------------------


def _plot(cost: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [
        ("http_requests", "HTTP requests"),
        ("ws_connections", "WebSocket connections"),
        ("subscriptions", "subscriptions"),
    ]
    sizes = sorted({row["processes"] for row in cost})
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    width = 0.38
    for ax, (key, label) in zip(axes, metrics, strict=True):
        for offset, fleet, name in ((-width / 2, False, "standalone"), (width / 2, True, "fleet")):
            values = [
                next(r[key] for r in cost if r["processes"] == n and r["fleet"] == fleet)
                for n in sizes
            ]
            bars = ax.bar([i + offset for i in range(len(sizes))], values, width, label=name)
            ax.bar_label(bars, fontsize=8)
        ax.set_xticks(range(len(sizes)), [f"{n} process{'es' if n > 1 else ''}" for n in sizes])
        ax.set_title(f"upstream {label}")
        ax.margins(y=0.12)
    axes[0].legend()
    fig.suptitle("Upstream cost: N processes x 4 engines, standalone vs one fleet")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _markdown(results: dict[str, Any], plot: str) -> str:
    cost = results["upstream_cost"]
    one = next(r for r in cost if r["processes"] == 1 and not r["fleet"])
    lines = [
        "Measured on this project's 2-core machine while other work shared it (load average "
        f"{', '.join(map(str, results['load_average']))} at the start): the counts do not "
        "depend on load, the times do.",
        "",
        f"Each process is `driftshare serve --engines {','.join(ENGINES)}` on the simulator "
        f"({MARKETS} perp markets, a slot every 0.4 s), measured {results['window_s']:g} s "
        "after every process is ready (start-up included in the counts). **standalone**: no "
        "`DRIFT_SHARE_URL`; **fleet**: all processes share one Redis (`redis-server` on "
        "loopback).",
        "",
        "| processes | mode | HTTP requests | WS connections | subscriptions | engine errors "
        "| vs 1 process (HTTP / WS / subs) |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in cost:
        ratio = " / ".join(
            f"{(r[k] / one[k] - 1) * 100:+.0f}%" if one[k] else "n/a"
            for k in ("http_requests", "ws_connections", "subscriptions")
        )
        mode = "fleet" if r["fleet"] else "standalone"
        lines.append(
            f"| {r['processes']} | {mode} | {r['http_requests']} | {r['ws_connections']} | "
            f"{r['subscriptions']} | {r['engine_errors']} | {ratio} |"
        )
    lines += ["", f"![Upstream cost, standalone vs fleet]({plot})", ""]
    lat = results["propagation_ms"]
    lines += [
        "### Propagation",
        "",
        "From the leader's ledger receiving an account update (its WebSocket notification, "
        "decoded) to a follower process's getter (`get_perp_market_and_slot`, "
        "`get_spot_market_and_slot`, `get_oracle_price_data_and_slot`, "
        "`get_state_account_and_slot`) returning it, on loopback; chain, leader and follower "
        f"in three processes (slot every 0.1 s, {results['propagation_s']:g} s): "
        f"{len(lat)} updates, "
        f"**p50 {_pct(lat, 0.5):.2f} ms, p99 {_pct(lat, 0.99):.2f} ms**, max {max(lat):.2f} ms "
        "(target: p99 ≤ 5 ms). The path: the leader's loop finishes the notifications it is "
        "decoding, writes the batch (one Lua call), Redis publishes, the follower verifies the "
        "record and its LedgerSubscriber decodes it (about 1 ms for a market account with "
        "driftpy's decoder).",
        "",
        "### Failover",
        "",
    ]
    fail = results["failover_s"]
    lines += [
        "Three members (`DRIFT_SHARE_LEASE_S=3`); SIGKILL of the leader, then the time until "
        "both survivors serve data newer than the slot at the kill, one of them leading: "
        + ", ".join(f"{t:.2f} s" for t in fail)
        + f" (median {statistics.median(fail):.2f} s; target ≤ 5 s).",
        "",
        "### Memory",
        "",
        "| process | RSS |",
        "|---|---:|",
    ]
    standalone = next(r for r in cost if r["processes"] == max(c["processes"] for c in cost)
                      and not r["fleet"])  # fmt: skip
    fleet = next(r for r in cost if r["processes"] == standalone["processes"] and r["fleet"])
    lines += [
        f"| standalone (median of {standalone['processes']}) | "
        f"{standalone['rss_mb_median']:.0f} MiB |",
        f"| fleet leader | {fleet['rss_mb_leader_or_first']:.0f} MiB |",
        f"| fleet follower (median) | {fleet['rss_mb_follower_median'] or 0:.0f} MiB |",
    ]
    return "\n".join(lines) + "\n"


async def _measure(quick: bool) -> dict[str, Any]:
    load = [round(x, 2) for x in os.getloadavg()]
    sizes = [1, 2] if quick else [1, 4, 16]
    window = 5.0 if quick else 20.0
    redis = RedisServer()
    redis.start()
    try:
        cost = []
        for n in sizes:
            for fleet in (False, True):
                cost.append(await _upstream_cost(n, fleet, window, redis))
        propagation_s = 5.0 if quick else 30.0
        latencies = await _propagation(propagation_s, redis)
        failover = await _failover(1 if quick else 5, redis)
    finally:
        redis.stop()
    return {
        "quick": quick,
        "load_average": load,
        "window_s": window,
        "upstream_cost": cost,
        "propagation_s": propagation_s,
        "propagation_ms": latencies,
        "failover_s": failover,
    }


def run(ctx: Context) -> str:
    """Measure (small sizes when ``ctx.quick``); raw numbers and the plot go to ``ctx.out``."""
    results = asyncio.run(_measure(ctx.quick))
    ctx.write_json(results)
    plot = ctx.out / "fleet.png"
    _plot(results["upstream_cost"], plot)
    return _markdown(results, ctx.link(plot))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    parser.add_argument("--follow", help=argparse.SUPPRESS)
    parser.add_argument("--rpc", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.follow:
        asyncio.run(_follow(ns.follow, ns.rpc))
        return 0
    ns.out.mkdir(parents=True, exist_ok=True)
    ctx = Context(topic="fleet", quick=ns.quick, out=ns.out, report=Path("BENCHMARKS.md"))
    print(run(ctx))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
