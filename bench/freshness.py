"""Freshness: reads against the shared client's own subscription, write-to-read latency,
the confirmation's steady request rate, and the cost of a cache hit.

A section of BENCHMARKS.md (see ``bench/__init__.py``): ``python -m bench --only freshness``.
Everything runs against the in-process simulator with default settings unless a part says
otherwise; write-to-read also runs with the simulator in its own process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx

from bench import BenchError, Context
from bench._harness import percentiles, poll, simulator
from driftshare.manager import DriftClientManager
from driftshare.models import market_data_from_market
from driftshare.sim import Simulator

TITLE = "Freshness"

log = logging.getLogger(__name__)

_MARKET = 0


async def shared_client(http_url: str, stats: Stats, **settings: Any) -> Any:
    """The shared client on the simulator at ``http_url`` (default settings unless given),
    once every account is subscribed: in websocket mode the State, each oracle and the two
    market programs, in grpc mode every account on the stream (the simulator signals no
    event for them, so ``stats`` is polled)."""
    DriftClientManager.configure(rpc_url=http_url, **settings)
    if await DriftClientManager.get_client() is None:
        raise BenchError("the shared client did not start on the simulator")
    shared = DriftClientManager.shared_state()
    if shared is None:
        raise BenchError("the shared client has no state")
    accounts = len(shared.ledger)
    oracles = len([entry for entry in shared.ledger if entry.record.kind == "oracle"])

    async def subscribed() -> bool:
        counts = await stats()
        if shared.mode == "grpc":
            return bool(counts["grpc"]["streams"]["accounts"] >= accounts)
        if shared.mode == "websocket":
            return bool(counts["subscriptions"]["active"] >= 1 + oracles + 2)
        return True

    await poll(subscribed, 30.0, f"{shared.mode} subscriptions")
    return shared


async def _in_process_stats(sim: Simulator) -> dict[str, Any]:
    return sim.stats()


def _direct_mark(client: Any, index: int) -> float:
    """The mark price straight from the shared client's subscribed accounts."""
    market = client.get_perp_market_account(index)
    oracle = client.get_oracle_price_data_for_perp_market(index)
    return market_data_from_market(market, oracle_price_data=oracle).mark_price


@dataclass
class _Behind:
    reads: int = 0
    behind: int = 0
    longest_s: float = 0.0


async def _reads_behind(seconds: float) -> dict[str, _Behind]:
    """Engines reading every 10 ms; a read is behind when it differs from the subscription."""
    results = {"get_mark_price": _Behind(), "get_all_perp_markets": _Behind()}
    async with Simulator(markets=30) as sim:
        shared = await shared_client(sim.http_url, partial(_in_process_stats, sim))
        client = shared.client
        changed_at: dict[float, float] = {}
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            direct = _direct_mark(client, _MARKET)
            changed_at.setdefault(direct, time.monotonic())
            mark = await DriftClientManager.get_mark_price(_MARKET)
            rows = await DriftClientManager.get_all_perp_markets()
            listed = next(r.mark_price for r in rows if r.market_index == _MARKET)
            for name, value in (("get_mark_price", mark), ("get_all_perp_markets", listed)):
                tally = results[name]
                tally.reads += 1
                if value != direct:
                    tally.behind += 1
                    lag = time.monotonic() - changed_at[direct]
                    tally.longest_s = max(tally.longest_s, lag)
            await asyncio.sleep(0.01)
        await DriftClientManager.shutdown()
    return results


Write = Callable[[float], Awaitable[float]]
"""Moves market 0's oracle to a price; returns the write's ``time.monotonic()``."""


@dataclass
class _Latencies:
    from_write: list[float] = field(default_factory=list)
    from_applied: list[float] = field(default_factory=list)


async def _engine(applied: list[float], changes: asyncio.Queue[tuple[float, float]]) -> None:
    """An engine reading market 0's funding as fast as the loop lets it: one read, then one
    ``await asyncio.sleep(0)``. Each read returning a new oracle price is reported with
    when the newest notification it could include was applied (``applied[0]``)."""
    last: float | None = None
    while True:
        rate = await DriftClientManager.get_funding_rate(_MARKET)
        if rate is not None and rate.oracle_price != last:
            if last is not None:
                changes.put_nowait((time.monotonic(), applied[0]))
            last = rate.oracle_price
        await asyncio.sleep(0)


async def _write_to_read(shared: Any, write: Write, samples: int) -> _Latencies:
    """Seconds from each oracle write to the engine's first read returning it, and from the
    moment the shared client applied the later of the market's and its oracle's
    notifications to that read."""
    client = shared.client
    market = client.get_perp_market_account(_MARKET)
    keys = {str(market.pubkey), str(market.amm.oracle)}
    applied = [0.0]

    def on_change(entry: Any, changed: bool) -> None:
        if changed and entry.record.pubkey in keys:
            applied[0] = time.monotonic()

    remove = shared.ledger.add_listener(on_change)
    changes: asyncio.Queue[tuple[float, float]] = asyncio.Queue()
    engine = asyncio.create_task(_engine(applied, changes))
    measured = _Latencies()
    first = await DriftClientManager.get_funding_rate(_MARKET)
    if first is None:
        raise BenchError("freshness: no funding rate from the shared client")
    price = first.oracle_price
    try:
        for number in range(samples):
            # Writes spaced like oracle updates on a busy market, so each one settles first.
            await asyncio.sleep(0.01)
            price *= 1.0001 if number % 2 else 0.9999
            written = await write(price)
            try:
                read, last_applied = await asyncio.wait_for(changes.get(), 10.0)
            except TimeoutError:
                raise BenchError("freshness: a simulator write never reached a read") from None
            measured.from_write.append(read - written)
            measured.from_applied.append(read - last_applied)
    finally:
        engine.cancel()
        remove()
    return measured


async def _write_in_process(samples: int) -> _Latencies:
    """The simulator in the engine's own process and event loop."""
    async with Simulator(markets=30, tick_s=3600.0) as sim:
        world = sim.world
        if world is None:
            raise BenchError("freshness: the simulator has no Drift world")

        async def write(price: float) -> float:
            written = time.monotonic()
            world.set_oracle_price(_MARKET, price)
            return written

        shared = await shared_client(sim.http_url, partial(_in_process_stats, sim))
        try:
            return await _write_to_read(shared, write, samples)
        finally:
            await DriftClientManager.shutdown()


Stats = Callable[[], Awaitable[dict[str, Any]]]
Subscribe = Callable[[str, Stats], Awaitable[Any]]
"""Starts the shared client on the simulator at an HTTP URL, whose counters ``Stats`` reads;
returns the client's state once it is subscribed (:func:`shared_client`)."""


async def write_remote(
    http_url: str, samples: int, subscribe: Subscribe = shared_client
) -> _Latencies:
    """The simulator in its own process, written through ``POST /_sim/oracle``; the write
    time is the simulator's ``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every
    process on this Linux host)."""
    async with httpx.AsyncClient(timeout=10.0) as http:

        async def stats() -> dict[str, Any]:
            answer: dict[str, Any] = (await http.get(f"{http_url}/_sim/stats")).json()
            return answer

        async def write(price: float) -> float:
            answer = await http.post(
                f"{http_url}/_sim/oracle", json={"market": _MARKET, "price": price}
            )
            if answer.status_code != 200:
                raise BenchError(f"freshness: the oracle write failed: {answer.text}")
            written: float = answer.json()["written_at"]
            return written

        shared = await subscribe(http_url, stats)
        try:
            return await _write_to_read(shared, write, samples)
        finally:
            await DriftClientManager.shutdown()


async def _confirmation_rate(
    markets: int, seconds: float, ticking: bool, stale_after_s: float
) -> dict[str, float]:
    """getMultipleAccounts calls per second the confirmer sends in steady websocket mode."""
    async with Simulator(markets=markets) as sim:
        stats = partial(_in_process_stats, sim)
        shared = await shared_client(sim.http_url, stats, stale_after_s=stale_after_s)
        if not ticking:
            # Slots advance, no account changes: every confirmation comes from a read.
            for key, account in list(sim.store.items()):
                sim.store.put(key, dataclasses.replace(account, frozen=True), force=True)
        await asyncio.sleep(shared.confirmer.period_s)  # past discovery's confirmations
        start_requests = shared.confirmer.requests
        start_http = sim.stats()["calls"]["total"]
        await asyncio.sleep(seconds)
        requests = shared.confirmer.requests - start_requests
        accounts = len(shared.ledger)
        period = shared.confirmer.period_s
        ages = [time.monotonic() - e.confirmed_at for e in shared.ledger]
        http_calls = sim.stats()["calls"]["total"] - start_http
        await DriftClientManager.shutdown()
    return {
        "accounts": accounts,
        "rate": requests / seconds,
        "bound": math.ceil(accounts / 100) / period,
        "http_calls_rate": http_calls / seconds,
        "oldest_age_s": max(ages),
    }


async def _hit_latency(calls: int) -> dict[str, list[float]]:
    """µs per hit, and per step of the floor under any hit, timed alike in the same loop."""
    async with Simulator(markets=30, tick_s=3600.0) as sim:
        await shared_client(sim.http_url, partial(_in_process_stats, sim))
        clock = time.perf_counter_ns
        for _ in range(1000):
            await DriftClientManager.get_funding_rate(_MARKET)
        samples: list[float] = []
        for _ in range(calls):
            started = clock()
            await DriftClientManager.get_funding_rate(_MARKET)
            samples.append((clock() - started) / 1000)
        floors = await _floors(calls)
        await DriftClientManager.shutdown()
    return {HIT: samples, **floors}


HIT = "`DriftClientManager.get_funding_rate`, a hit"


async def _floors(calls: int) -> dict[str, list[float]]:
    """What a hit cannot do without, each step timed as a hit is: a dict look-up and a
    clock read (the cached value and its age), and the two coroutines of the async API
    (the manager's and its reader's)."""
    clock, monotonic = time.perf_counter_ns, time.monotonic
    key = ("funding", _MARKET)
    entries = {key: 0.0}

    async def reader() -> None:
        return None

    async def manager() -> None:
        await reader()

    lookups: list[float] = []
    for _ in range(calls):
        started = clock()
        entries.get(key)
        monotonic()
        lookups.append((clock() - started) / 1000)
    awaits: list[float] = []
    for _ in range(calls):
        started = clock()
        await manager()
        awaits.append((clock() - started) / 1000)
    return {
        "floor: a dict look-up and `time.monotonic()`": lookups,
        "floor: two nested coroutines awaited": awaits,
    }


def _timed(label: str, func: Callable[[], Any]) -> Any:
    started = time.monotonic()
    result = func()
    log.info("freshness: %s in %.1fs", label, time.monotonic() - started)
    return result


HIT_BEFORE_US = 4.8
"""The issue's reference: a hit's p99 before reads checked their accounts (2026-11-25)."""
HIT_TARGET_US = HIT_BEFORE_US * 1.2


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def run(ctx: Context) -> str:
    """Measure (small sizes when ``ctx.quick``), store the raw numbers, return the markdown."""
    quick = ctx.quick
    seconds = 2.0 if quick else 60.0
    window = 1.5 if quick else 30.0
    # The confirmer's period is DRIFT_STALE_AFTER_S / 2: the quick run shortens it so its
    # window still spans several periods.
    stale_after_s = 1.0 if quick else 10.0
    behind = _timed("reads behind", lambda: asyncio.run(_reads_behind(seconds)))
    samples = 20 if quick else 500
    with simulator(markets=30, tick_s=3600.0) as chain:
        remote = _timed(
            "write to read, simulator apart",
            lambda: asyncio.run(write_remote(chain.http_url, samples)),
        )
    local = _timed(
        "write to read, simulator in process", lambda: asyncio.run(_write_in_process(samples))
    )
    rates: dict[tuple[int, bool], dict[str, float]] = {}
    # The quick run's rows only show that the part runs: small worlds are cheap to build.
    for markets in (8, 30) if quick else (30, 100):
        for ticking in (True, False):
            rates[(markets, ticking)] = _timed(
                f"confirmation {markets} markets {'ticking' if ticking else 'quiet'}",
                partial(asyncio.run, _confirmation_rate(markets, window, ticking, stale_after_s)),
            )
    timed = _timed("hit latency", lambda: asyncio.run(_hit_latency(2_000 if quick else 100_000)))
    hits = timed[HIT]
    if not remote.from_applied or not local.from_applied or not hits:
        raise BenchError("freshness: no write-to-read or cache-hit sample was measured")
    ctx.write_json(
        {
            "reads_behind": {name: dataclasses.asdict(t) for name, t in behind.items()},
            "write_to_read_ms": [v * 1000 for v in remote.from_write],
            "applied_to_read_ms": [v * 1000 for v in remote.from_applied],
            "in_process_write_to_read_ms": [v * 1000 for v in local.from_write],
            "in_process_applied_to_read_ms": [v * 1000 for v in local.from_applied],
            "confirmation": [{"markets": m, "ticking": t, **r} for (m, t), r in rates.items()],
            "confirmation_stale_after_s": stale_after_s,
            "hit_us": percentiles(hits),
            "hit_floor_us": {name: percentiles(v) for name, v in timed.items() if name != HIT},
        }
    )

    lines = [
        "Unless a part says otherwise, against the in-process simulator (30 perp markets, a",
        "slot every 0.4 s, every oracle moving each slot), always with default settings",
        "(`DRIFT_STALE_AFTER_S=10`, websocket mode).",
        "",
        "### Reads behind the subscription",
        "",
        f"One engine reads SOL-PERP every 10 ms for {seconds:g} s; a read is behind when its",
        "mark price differs from the one computed at that moment from the shared client's own",
        "subscribed accounts (target: at most 1% of reads, longest lag at most 0.5 s).",
        "",
        "| read | reads | behind | % | longest lag s | target |",
        "|---|---|---|---|---|---|",
    ]
    for name, tally in behind.items():
        share = 100 * tally.behind / tally.reads if tally.reads else 0.0
        met = share <= 1.0 and tally.longest_s <= 0.5
        lines.append(
            f"| {name} | {tally.reads:,} | {tally.behind:,} | {share:.2f} | "
            f"{tally.longest_s:.3f} | {_verdict(met)} |"
        )
    lines += [
        "",
        "### Write to read",
        "",
        "Oracle writes on the simulator (`World.set_oracle_price`, 30 perp markets, no slot",
        "ticking meanwhile), 0.01% up or down, each 10 ms after the previous one was read;",
        "one engine task reads",
        "`DriftClientManager.get_funding_rate` of that market in a loop (one read, then one",
        "`await asyncio.sleep(0)`, as an engine yields to its event loop), and its first read",
        "returning the new oracle price is timed: from the write, and from the moment the",
        "shared client applied the later of the market's and its oracle's notifications",
        "received before that read (target: p99 at most 1 ms after the notification is",
        "applied). One write sends three notifications: the oracle, the perp market and the",
        "spot market reading that oracle.",
        "",
        "*Simulator apart* is the realistic setup: the simulator runs in its own process, as a",
        "remote RPC does, and the bench writes through `POST /_sim/oracle`, whose answer",
        "carries the write's `time.monotonic()` (CLOCK_MONOTONIC: one clock for every",
        "process on this Linux host); the engine's process handles that answer too.",
        "*Simulator in process*: the simulator shares the engine's process and event loop.",
        "",
        "| setup | measured from | samples | p50 ms | p99 ms | max ms | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for setup, measured in (("simulator apart", remote), ("simulator in process", local)):
        for label, values in (
            ("simulator write", measured.from_write),
            ("notification applied", measured.from_applied),
        ):
            ms = percentiles([v * 1000 for v in values])
            target = _verdict(ms["p99"] <= 1.0) if label == "notification applied" else ""
            lines.append(
                f"| {setup} | {label} | {ms['count']:.0f} | {ms['p50']:.3f} | "
                f"{ms['p99']:.3f} | {ms['max']:.3f} | {target} |"
            )
    lines += [
        "",
        "After a notification is applied, a read waits for nothing else: a cache miss",
        "computes in the reading task itself (no task queued behind the loop's other",
        "callbacks), and the market subscriptions let the loop's readers run before",
        "decoding each notification (about 1 ms for a market account), so a read is never",
        "held behind the decoding of accounts it does not read. What remains is the",
        "recomputation (driftpy's AMM math, about 0.2 ms) and the machine's noise. From the",
        "write, the time also covers the simulator building and sending the notifications",
        "and, apart, the hop between processes on a shared 2-core machine.",
        "",
        "### Confirmation cost",
        "",
        f"getMultipleAccounts calls per second over {window:g} s of steady websocket mode",
        f"(`DRIFT_STALE_AFTER_S={stale_after_s:g}`), against the bound of one call per 100",
        "subscribed accounts per `DRIFT_STALE_AFTER_S / 2`. *Ticking*: every oracle changes",
        "each 0.4 s slot (their notifications confirm them; quiet markets are read); *quiet*:",
        "slots advance but no",
        "account changes (every account frozen), so every confirmation is a read. *HTTP*:",
        "every call the simulator served meanwhile; *oldest*: the longest any account had gone",
        "without confirmation at the end.",
        "",
        "| perp markets | chain | accounts | calls/s | bound calls/s | HTTP calls/s | oldest s |",
        "|---|---|---|---|---|---|---|",
    ]
    for (markets, ticking), r in rates.items():
        lines.append(
            f"| {markets} | {'ticking' if ticking else 'quiet'} | {r['accounts']:.0f} | "
            f"{r['rate']:.3f} | {r['bound']:.3f} | {r['http_calls_rate']:.3f} | "
            f"{r['oldest_age_s']:.2f} |"
        )
    hit = percentiles(hits)
    lines += [
        "",
        "### Cache hit",
        "",
        "`DriftClientManager.get_funding_rate` of an unchanged market, which now checks that",
        "its accounts' bytes are unchanged and computes its data age on every read (target:",
        f"p99 at most {HIT_TARGET_US:.2f} µs, within 20% of the {HIT_BEFORE_US} µs a hit cost",
        f"before these checks: {_verdict(hit['p99'] <= HIT_TARGET_US)}):",
        "",
        "| read | calls | p50 µs | p99 µs | max µs |",
        "|---|---|---|---|---|",
    ]
    for name, samples in timed.items():
        p = percentiles(samples)
        lines.append(
            f"| {name} | {len(samples):,} | {p['p50']:.2f} | {p['p99']:.2f} | {p['max']:.1f} |"
        )
    lines += [
        "",
        "The floors are timed the same way in the same loop, the timer's own cost included:",
        "the part of a hit that no change to the hit path can remove on this machine.",
        "What is left above them is Python work, about 25 calls per hit (cProfile): the",
        "checks that keep a hit honest (its accounts' bytes unchanged since the value was",
        "computed, their confirmation, the data age and the stale flag) and a copy of the",
        "16-field result, since each read carries its own age. The p99 also holds the",
        "machine's noise: the same loop alone in a process, 3 quiet markets, measured a p50",
        "of 4.6 µs and a p99 of 8.8 µs.",
    ]
    return "\n".join(lines) + "\n"
