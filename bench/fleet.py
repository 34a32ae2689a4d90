"""The fleet on Redis, measured: upstream cost, propagation, failover and memory.

A section of BENCHMARKS.md (``python -m bench --only fleet``); ``python -m bench.fleet
[--quick] [--out DIR]`` runs it alone, printing its markdown. Everything runs on
this machine: the simulator in this process, Debian's redis-server and real
``driftshare serve`` processes on loopback ports.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench import BenchError, Context
from bench._harness import poll
from bench._processes import (
    RedisServer,
    ServeProcess,
    all_ready,
    free_port,
    fresh_after,
    stop_all,
)
from driftshare._data.ledger import AccountRecord
from driftshare.sim import Simulator

TITLE = "Fleet: many processes, one upstream"
ENGINES = ["funding", "lst", "scalp", "arb"]
MARKETS = 8
_ENV = {"DRIFT_NETWORK": "mainnet", "DRIFT_HEALTH_INTERVAL_S": "1"}
_READY_DEADLINE_S = 240.0
_REPORT_EVERY_S = 0.5
_STEADY_MIN_S = 30.0
"""The least time between all processes being ready and the window's end."""
_FLOOR_CHANNEL = "driftshare-bench:floor"


# -- upstream cost ------------------------------------------------------------------------


async def _upstream_cost(
    processes: int, fleet: bool, window_s: float, redis: RedisServer
) -> dict[str, Any]:
    """What ``processes`` processes cost the RPC in the ``window_s`` seconds from the first
    one's start: the first starts alone, the rest once it is ready (in a fleet, once it
    leads). The steady rate is counted from the moment all are ready to the window's end."""
    sim = Simulator(markets=MARKETS, tick_s=0.4)
    await sim.start()
    keys = [f"p{i}" for i in range(processes)]
    procs = [
        ServeProcess(
            f"{sim.http_url}/?api-key={key}",
            redis.url if fleet else None,
            engines=ENGINES,
            env={**_ENV, "DRIFT_SHARE_GROUP": f"cost{processes}"},
        )
        for key in keys
    ]
    try:
        async with httpx.AsyncClient() as http:
            started = time.monotonic()
            await procs[0].start()
            await poll(lambda: all_ready(http, procs[:1], fleet=fleet), _READY_DEADLINE_S, "first")
            await asyncio.gather(*(proc.start() for proc in procs[1:]))
            await poll(lambda: all_ready(http, procs, fleet=fleet), _READY_DEADLINE_S, "all ready")
            ready_s = time.monotonic() - started
            if ready_s > window_s - _STEADY_MIN_S:
                raise BenchError(
                    f"{processes} processes were ready only after {ready_s:.0f}s: no steady "
                    f"state within the {window_s:g}s window"
                )
            at_ready = sim.stats()
            await asyncio.sleep(started + window_s - time.monotonic())  # the engines read
            found = sim.stats()
            stats = [await p.stats(http) for p in procs]
        rss = {p.pid: p.rss_bytes() for p in procs}
    finally:
        await stop_all(procs)
        await sim.stop()
    roles = [s.get("fleet", {}).get("role") for s in stats]
    engine_errors = sum(e.get("errors", 0) for s in stats for e in s.get("engines", []))
    followers = [rss[p.pid] for p, r in zip(procs, roles, strict=True) if r == "follower"]
    by_client = found["http_requests"]["by_client"]
    follower_requests = sum(
        by_client.get(_client_id(key), 0)
        for key, role in zip(keys, roles, strict=True)
        if role == "follower"
    )
    steady_s = window_s - ready_s
    http_total = found["http_requests"]["total"]
    return {
        "processes": processes,
        "fleet": fleet,
        "ready_s": ready_s,
        "http_requests": http_total,
        "http_per_min_steady": (http_total - at_ready["http_requests"]["total"]) * 60 / steady_s,
        "calls_by_method": found["calls"]["by_method"],
        "follower_http_requests": follower_requests if fleet else None,
        "ws_connections": found["ws_connections"]["total"],
        "subscriptions": found["subscriptions"]["total"],
        "engine_errors": engine_errors,
        "rss_mb_median": statistics.median(rss.values()) / 2**20,
        "rss_mb_follower_median": statistics.median(followers) / 2**20 if followers else None,
        "rss_mb_leader_or_first": rss[procs[0].pid] / 2**20,
    }


def _client_id(api_key: str) -> str:
    """How the simulator names a client in its counters (``sim.server.client_id``)."""
    return "key:" + hashlib.sha256(api_key.encode()).hexdigest()[:12]


# -- propagation --------------------------------------------------------------------------


async def _propagation(seconds: float, redis: RedisServer) -> tuple[list[float], list[float]]:
    """Leader's ledger receives an update → a follower process's getter returns it (ms).

    The chain (``driftshare sim``), the leader (this process) and the follower each run in
    their own process; both ends stamp with CLOCK_MONOTONIC, which all processes share.
    The leader's stamp is taken as its account tap hands the update to the ledger, before
    any of the ledger's listeners (the fleet's publisher among them) runs. Also returned:
    the part until the follower has read and verified the message (the hop through Redis).
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
    hops: list[float] = []
    DriftClientManager.configure(
        rpc_url=rpc_url, share_url=redis.url, share_group="propagation", network="mainnet"
    )
    follower: asyncio.subprocess.Process | None = None
    try:
        async with httpx.AsyncClient() as http:
            await poll(lambda: _answers(http, rpc_url), _READY_DEADLINE_S, "simulator")
        client = await DriftClientManager.get_client()
        shared = DriftClientManager.shared_state()
        if client is None or shared is None or shared.gen is None or shared.gen.fleet is None:
            raise BenchError("the leader did not start")

        ledger = shared.ledger
        apply = ledger.apply

        def stamped(record: AccountRecord, *, confirmed_at: float | None = None) -> bool:
            received.setdefault((record.pubkey, record.slot), time.monotonic())
            return apply(record, confirmed_at=confirmed_at)

        ledger.apply = stamped  # type: ignore[method-assign]  # the probe: stamp, then apply
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
            if not line:
                break
            pubkey, slot, verified, at = line.decode().split()
            sent = received.get((pubkey, int(slot)))
            if sent is not None:
                latencies.append((float(at) - sent) * 1000)
                hops.append((float(verified) - sent) * 1000)
    finally:
        for process in (follower, sim):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
        await DriftClientManager.shutdown()
    if not latencies:
        raise BenchError("no update reached the follower")
    return latencies, hops


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

    from driftshare._data.ledger_subscriber import oracle_source
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

    fleet = shared.gen.fleet if shared.gen is not None else None
    if fleet is None:
        raise SystemExit("not in a fleet")

    def on_entry(entry: Any, changed: bool) -> None:
        # The LedgerSubscriber's listener ran first: the getter now returns the new value.
        if changed and served_slot(entry.record) == entry.record.slot:
            record, verified = entry.record, fleet.follower.last_message_at
            sys.stdout.write(f"{record.pubkey} {record.slot} {verified} {time.monotonic()}\n")

    shared.ledger.add_listener(on_entry)
    print("ready", flush=True)
    await _flush_stdout_every(_REPORT_EVERY_S)


async def _flush_stdout_every(seconds: float) -> None:
    """Hand the stamps over in chunks: a write per update would wake the leader's process
    (where they are read) once per update, in the middle of what is measured."""
    while True:
        await asyncio.sleep(seconds)
        sys.stdout.flush()


async def _pubsub_floor(seconds: float, rate: float, redis: RedisServer) -> list[float]:
    """The same path with nothing of driftshare: redis-py PUBLISH of a timestamp from this
    process → a redis-py subscriber in another process (ms), ``rate`` messages a second."""
    from redis.asyncio import Redis

    listener = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.fleet", "--echo", redis.url, stdout=asyncio.subprocess.PIPE
    )
    assert listener.stdout is not None
    client = Redis.from_url(redis.url)
    try:
        ready = await asyncio.wait_for(listener.stdout.readline(), _READY_DEADLINE_S)
        if ready.strip() != b"ready":
            raise BenchError("the reference subscriber did not start")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await client.publish(_FLOOR_CHANNEL, repr(time.monotonic()))
            await asyncio.sleep(1 / rate)
        await client.publish(_FLOOR_CHANNEL, "end")
        output = await asyncio.wait_for(listener.stdout.read(), _READY_DEADLINE_S)
    finally:
        await client.aclose()
        if listener.returncode is None:
            listener.kill()
            await listener.wait()
    return [float(line) for line in output.split()]


async def _echo(share_url: str) -> None:
    """The subscriber of :func:`_pubsub_floor`: print each message's latency at the end."""
    from redis.asyncio import Redis

    client = Redis.from_url(share_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(_FLOOR_CHANNEL)
    print("ready", flush=True)
    latencies = []
    while True:
        message = await pubsub.get_message(timeout=None)
        if message is None or message.get("type") != "message":
            continue
        if message["data"] == b"end":
            break
        latencies.append((time.monotonic() - float(message["data"])) * 1000)
    print("\n".join(f"{ms:.4f}" for ms in latencies), flush=True)
    await client.aclose()


# -- failover -----------------------------------------------------------------------------


async def _failover(runs: int, redis: RedisServer) -> list[float]:
    """SIGKILL the leader; seconds until every survivor serves data newer than the kill."""
    sim = Simulator(markets=MARKETS, tick_s=0.4)
    await sim.start()
    env = {**_ENV, "DRIFT_SHARE_GROUP": "failover", "DRIFT_HEALTH_INTERVAL_S": "0.5"}

    async def member(i: int) -> ServeProcess:
        proc = ServeProcess(f"{sim.http_url}/?api-key=f{i}", redis.url, env=env)
        await proc.start()
        return proc

    procs = list(await asyncio.gather(*(member(i) for i in range(3))))
    times: list[float] = []
    try:
        async with httpx.AsyncClient() as http:
            for run in range(runs):
                leader, took = await _kill_leader(http, procs, sim)
                times.append(took)
                procs = [*(p for p in procs if p is not leader), await member(3 + run)]
    finally:
        await stop_all(procs)
        await sim.stop()
    return times


async def _kill_leader(
    http: httpx.AsyncClient, procs: list[ServeProcess], sim: Simulator
) -> tuple[ServeProcess, float]:
    await poll(lambda: all_ready(http, procs), _READY_DEADLINE_S, "ready")
    roles = [(await p.stats(http))["fleet"]["role"] for p in procs]
    leader = procs[roles.index("leader")]
    survivors = [p for p in procs if p is not leader]
    await leader.kill()
    killed_slot = sim.stats()["slot"]

    took = await poll(lambda: fresh_after(http, survivors, killed_slot), 60, "takeover", 0.02)
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
        f"({MARKETS} perp markets, a slot every 0.4 s). **standalone**: no `DRIFT_SHARE_URL`; "
        "**fleet**: all processes share one Redis (`redis-server` on loopback). Every row "
        f"counts the same window: the {results['window_s']:g} s from the first process's "
        "start (start-up included). The first process starts alone, the others once it is "
        "ready (in a fleet: leads); *ready after* is when the last one is. The steady rate "
        "counts from then to the window's end. *followers' HTTP* are the requests the "
        "simulator received with a follower's API key.",
        "",
        "| processes | mode | ready after | HTTP requests | HTTP / min, steady | "
        "followers' HTTP | WS connections | subscriptions | engine errors "
        "| vs 1 process (HTTP / WS / subs) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in cost:
        ratio = " / ".join(
            f"{(r[k] / one[k] - 1) * 100:+.0f}%" if one[k] else "n/a"
            for k in ("http_requests", "ws_connections", "subscriptions")
        )
        mode = "fleet" if r["fleet"] else "standalone"
        followers = "-" if r["follower_http_requests"] is None else r["follower_http_requests"]
        lines.append(
            f"| {r['processes']} | {mode} | {r['ready_s']:.1f} s | {r['http_requests']} | "
            f"{r['http_per_min_steady']:.1f} | {followers} | {r['ws_connections']} | "
            f"{r['subscriptions']} | {r['engine_errors']} | {ratio} |"
        )
    lines += ["", f"![Upstream cost, standalone vs fleet]({plot})", ""]
    lat, hop = results["propagation_ms"], results["propagation_hop_ms"]
    floor = results["pubsub_floor_ms"]
    lines += [
        "### Propagation",
        "",
        "From the leader receiving an account update to a follower process's getter "
        "(`get_perp_market_and_slot`, `get_spot_market_and_slot`, "
        "`get_oracle_price_data_and_slot`, `get_state_account_and_slot`) returning it, on "
        "loopback. *Receiving* is the moment the leader's account tap hands the update "
        "(raw bytes and slot, after driftpy's WebSocket subscriber decoded the notification) "
        "to its ledger, before any listener of the ledger runs; the fleet's publisher is one "
        "of them and writes the update to Redis right there (one Lua call per update, on a "
        "connection of its own, without waiting for the event loop). The follower verifies "
        "the message and its LedgerSubscriber decodes it. Chain, leader and follower run in "
        f"three processes (slot every 0.1 s, {results['propagation_s']:g} s): {len(lat)} "
        f"updates, **p50 {_pct(lat, 0.5):.2f} ms, p99 {_pct(lat, 0.99):.2f} ms**, max "
        f"{max(lat):.2f} ms (target: p99 ≤ 5 ms). Of that, until the follower has read and "
        f"verified the message (the hop through Redis): p50 {_pct(hop, 0.5):.2f} ms, p99 "
        f"{_pct(hop, 0.99):.2f} ms; the rest is the follower's decode and the getter.",
        "",
        "For reference, the same machine right after, without driftshare: redis-py "
        "`PUBLISH` of a timestamp from one process to a redis-py subscriber in another, "
        f"through the same Redis, {results['pubsub_floor_rate']:g} messages a second (the "
        f"propagation run's rate): {len(floor)} messages, p50 {_pct(floor, 0.5):.2f} ms, "
        f"p99 {_pct(floor, 0.99):.2f} ms, max {max(floor):.2f} ms.",
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
    window = 45.0 if quick else 120.0
    redis = RedisServer()
    redis.start()
    try:
        cost = []
        for n in sizes:
            for fleet in (False, True):
                cost.append(await _upstream_cost(n, fleet, window, redis))
        propagation_s = 5.0 if quick else 30.0
        latencies, hops = await _propagation(propagation_s, redis)
        rate = len(latencies) / propagation_s
        floor = await _pubsub_floor(propagation_s / 2, rate, redis)
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
        "propagation_hop_ms": hops,
        "pubsub_floor_rate": round(rate),
        "pubsub_floor_ms": floor,
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
    parser.add_argument("--echo", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.echo:
        asyncio.run(_echo(ns.echo))
        return 0
    if ns.follow:
        asyncio.run(_follow(ns.follow, ns.rpc))
        return 0
    ns.out.mkdir(parents=True, exist_ok=True)
    ctx = Context(topic="fleet", quick=ns.quick, out=ns.out, report=Path("BENCHMARKS.md"))
    print(run(ctx))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
