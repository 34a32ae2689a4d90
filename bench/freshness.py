"""Freshness: reads against the shared client's own subscription, write-to-read latency,
the confirmation's steady request rate, and the cost of a cache hit.

A section of BENCHMARKS.md (see ``bench/__init__.py``): ``python -m bench --only freshness``.
Everything runs against the in-process simulator with default settings unless a row says
otherwise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from bench import BenchError, Context
from driftshare.manager import DriftClientManager
from driftshare.models import market_data_from_market
from driftshare.sim import Simulator

TITLE = "Freshness"

log = logging.getLogger(__name__)

_MARKET = 0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


async def _shared(sim: Simulator, **settings: Any) -> Any:
    DriftClientManager.configure(rpc_url=sim.http_url, **settings)
    if await DriftClientManager.get_client() is None:
        raise BenchError("freshness: the shared client did not start on the simulator")
    shared = DriftClientManager.shared_state()
    world = sim.world
    if world is None:
        raise BenchError("freshness: the simulator has no Drift world")
    oracles = {world.perp_market(i).amm.oracle for i in world.perp_indexes()}
    oracles |= {world.spot_market(i).oracle for i in world.spot_indexes()}
    # Every subscription in place: the State, each oracle, the two market programs (the
    # simulator signals no event for it, so it is polled).
    while sim.stats()["subscriptions"]["active"] < 1 + len(oracles) + 2:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return shared


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
        shared = await _shared(sim)
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


async def _write_to_read(samples: int) -> tuple[list[float], list[float]]:
    """Seconds from a simulator write to the first read returning it, and from the moment
    the shared client applied its notification to that read."""
    from_write: list[float] = []
    from_applied: list[float] = []
    async with Simulator(markets=30, tick_s=3600.0) as sim:
        shared = await _shared(sim)
        world = sim.world
        if world is None:
            raise BenchError("freshness: the simulator has no Drift world")
        # The funding values come from the market account and its oracle: a write shows once
        # the later of their notifications is applied.
        keys = {str(world.perp_market(_MARKET).amm.oracle), str(world.perp_market_pubkey(_MARKET))}
        applied: list[float] = []

        def on_change(entry: Any, changed: bool) -> None:
            if changed and entry.record.pubkey in keys:
                applied.append(time.perf_counter())

        shared.ledger.add_listener(on_change)
        price = world.oracle_price(_MARKET)
        for number in range(samples):
            price *= 1.0001 if number % 2 else 0.9999
            applied.clear()
            before = await DriftClientManager.get_funding_rate(_MARKET)
            if before is None:
                raise BenchError("freshness: no funding rate from the shared client")
            written = time.perf_counter()
            world.set_oracle_price(_MARKET, price)
            give_up = written + 10.0
            while True:
                rate = await DriftClientManager.get_funding_rate(_MARKET)
                if rate is not None and rate.oracle_price != before.oracle_price:
                    break
                if time.perf_counter() > give_up:
                    raise BenchError("freshness: a simulator write never reached a read")
                await asyncio.sleep(0)
            read = time.perf_counter()
            from_write.append(read - written)
            if applied:
                from_applied.append(read - applied[-1])
        await DriftClientManager.shutdown()
    return from_write, from_applied


async def _confirmation_rate(markets: int, seconds: float, ticking: bool) -> dict[str, float]:
    """getMultipleAccounts calls per second the confirmer sends in steady websocket mode."""
    async with Simulator(markets=markets) as sim:
        shared = await _shared(sim)
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


async def _hit_latency(calls: int) -> list[float]:
    async with Simulator(markets=30, tick_s=3600.0) as sim:
        await _shared(sim)
        clock = time.perf_counter_ns
        for _ in range(1000):
            await DriftClientManager.get_funding_rate(_MARKET)
        samples: list[float] = []
        for _ in range(calls):
            started = clock()
            await DriftClientManager.get_funding_rate(_MARKET)
            samples.append((clock() - started) / 1000)
        await DriftClientManager.shutdown()
    return samples


def _timed(label: str, func: Callable[[], Any]) -> Any:
    started = time.monotonic()
    result = func()
    log.info("freshness: %s in %.1fs", label, time.monotonic() - started)
    return result


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def run(ctx: Context) -> str:
    """Measure (small sizes when ``ctx.quick``), store the raw numbers, return the markdown."""
    quick = ctx.quick
    seconds = 3.0 if quick else 60.0
    window = 3.0 if quick else 30.0
    behind = _timed("reads behind", lambda: asyncio.run(_reads_behind(seconds)))
    from_write, from_applied = _timed(
        "write to read", lambda: asyncio.run(_write_to_read(20 if quick else 500))
    )
    rates: dict[tuple[int, bool], dict[str, float]] = {}
    for markets in (30, 100):
        for ticking in (True, False):
            rates[(markets, ticking)] = _timed(
                f"confirmation {markets} markets {'ticking' if ticking else 'quiet'}",
                partial(asyncio.run, _confirmation_rate(markets, window, ticking)),
            )
    hits = _timed("hit latency", lambda: asyncio.run(_hit_latency(2_000 if quick else 100_000)))
    if not from_write or not from_applied or not hits:
        raise BenchError("freshness: no write-to-read or cache-hit sample was measured")
    ctx.write_json(
        {
            "reads_behind": {name: dataclasses.asdict(t) for name, t in behind.items()},
            "write_to_read_ms": [v * 1000 for v in from_write],
            "applied_to_read_ms": [v * 1000 for v in from_applied],
            "confirmation": [{"markets": m, "ticking": t, **r} for (m, t), r in rates.items()],
            "hit_us": _summary(hits),
        }
    )

    lines = [
        "Against the in-process simulator (30 perp markets, a slot every 0.4 s, every oracle",
        "moving each slot) with default settings (`DRIFT_STALE_AFTER_S=10`, websocket mode).",
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
    applied_p99 = _percentile([v * 1000 for v in from_applied], 0.99)
    lines += [
        "",
        "### Write to read",
        "",
        "`World.set_oracle_price` on the simulator, then `get_funding_rate` until it returns",
        "the new oracle price: from the write, and from the moment the shared client applied",
        "the later of the market's and its oracle's notifications (target: p99 at most 1 ms",
        f"after the notification is applied: {_verdict(applied_p99 <= 1.0)}).",
        "",
        "| measured from | samples | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
    ]
    for label, values in (("simulator write", from_write), ("notification applied", from_applied)):
        ms = [v * 1000 for v in values]
        lines.append(
            f"| {label} | {len(ms)} | {statistics.median(ms):.3f} | "
            f"{_percentile(ms, 0.99):.3f} | {max(ms):.3f} |"
        )
    lines += [
        "",
        "The simulator runs in the reader's process and event loop, and one simulator write",
        "sends the market, oracle and spot market notifications together: decoding the other",
        "notifications (anchorpy) and the simulator's own work run before the read gets its",
        "turn, which is what the tail shows. The value is ready as soon as the notification is",
        "applied: the cache is keyed on the accounts' bytes, so the first read after it",
        "recomputes.",
        "",
        "### Confirmation cost",
        "",
        f"getMultipleAccounts calls per second over {window:g} s of steady websocket mode,",
        "against the bound of one call per 100 subscribed accounts per",
        "`DRIFT_STALE_AFTER_S / 2`. *Ticking*: every oracle changes each 0.4 s slot (their",
        "notifications confirm them; quiet markets are read); *quiet*: slots advance but no",
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
    hit = _summary(hits)
    lines += [
        "",
        "### Cache hit",
        "",
        "`DriftClientManager.get_funding_rate` of an unchanged market, which now checks that",
        "its accounts' bytes are unchanged and computes its data age on every read:",
        "",
        "| calls | p50 µs | p99 µs | max µs |",
        "|---|---|---|---|",
        f"| {len(hits):,} | {hit['p50']:.1f} | {hit['p99']:.1f} | {hit['max']:.1f} |",
    ]
    return "\n".join(lines) + "\n"


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": statistics.median(values),
        "p99": _percentile(values, 0.99),
        "max": max(values),
    }
