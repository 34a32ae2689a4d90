"""The reliability suite's fleet rows: three ``driftshare serve`` members, one chain, one Redis.

``python -m bench.reliability_fleet`` runs every fleet fault once, saves
``docs/reliability/fleet.json`` and rewrites ``docs/RELIABILITY.md`` from the saved results
(its other rows are not run again). Each row starts a simulator in this process, a real
``redis-server`` and three members, each reaching the simulator through a TCP proxy of its
own and Redis through a shared one (so an upstream can die alone, and a pub/sub connection
can go half-open). It reads every member's ``/api/markets`` every 250 ms, judging each value
served as fresh against the simulator's own history (:class:`ChainTruth`), puts the fault on,
clears it, and ends once every member has served only fresh data for a while.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from redis.asyncio import Redis
from solders.pubkey import Pubkey

from bench._harness import poll
from bench._processes import RedisServer, ServeProcess, TcpProxy, all_ready, stop_all
from bench.reliability import load_results, save_results, write_doc
from bench.reliability_suite import DOC, RESULTS, ROOT, machine
from bench.reliability_truth import ChainTruth
from driftshare.sim import Simulator

__all__ = ["FLEET_FAULTS", "FleetRow", "main", "run_fleet_rows"]

MEMBERS = 3
LEASE_S = 2.0
STALE_AFTER_S = 2.0
STALE_MARGIN_S = 1.0
"""As in the main table: an unflagged value is stale once this far past ``STALE_AFTER_S``."""
FAULT_S = 6.0
QUIET_S = 4.0
"""A row ends once every member has served only fresh data for this long."""
SETTLE_LIMIT_S = 40.0
READ_EVERY_S = 0.25
SECRET = "fleet-reliability-key"
ENV = {
    "DRIFT_NETWORK": "mainnet",
    "DRIFT_SHARE_LEASE_S": str(LEASE_S),
    "DRIFT_SHARE_FALLBACK_S": str(2 * LEASE_S),
    "DRIFT_SHARE_SECRET": SECRET,
    "DRIFT_STALE_AFTER_S": str(STALE_AFTER_S),
    "DRIFT_HEALTH_INTERVAL_S": "0.5",
}
_GROUP = "driftshare:mainnet:default:"


@dataclass
class FleetRow:
    """One fleet fault, as measured over every member."""

    fault: str
    what: str
    reads: int = 0
    exceptions: int = 0
    """HTTP 5xx answers, engine errors and members that died."""
    flagged: int = 0
    """Reads with at least one market flagged stale (or no answer from a live member)."""
    unflagged: int = 0
    worst_unflagged_lag_s: float = 0.0
    recovery_s: float | None = None
    """Seconds from the fault's clearing until every member served only fresh data."""
    bound_s: float = 2 * LEASE_S
    roles_after: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def failures(self) -> list[str]:
        broken = []
        if self.exceptions:
            broken.append("exceptions")
        if self.unflagged:
            broken.append("unflagged stale")
        if self.recovery_s is None or self.recovery_s > self.bound_s:
            broken.append("recovery")
        return broken


@dataclass
class _Fleet:
    sim: Simulator
    truth: ChainTruth
    redis: RedisServer
    channel: TcpProxy
    upstreams: list[tuple[TcpProxy, TcpProxy]]
    members: list[ServeProcess]
    http: httpx.AsyncClient

    async def leader(self) -> int:
        for i, member in enumerate(self.members):
            if (await member.stats(self.http)).get("fleet", {}).get("role") == "leader":
                return i
        raise RuntimeError("no leader")

    async def store(self) -> Redis:
        return Redis.from_url(self.redis.url)


FaultBody = Callable[[_Fleet], Awaitable[float]]
"""Puts the fault on, clears it, and answers ``time.monotonic()`` of the clearing."""


async def _redis_paused(fleet: _Fleet) -> float:
    fleet.redis.pause()
    await asyncio.sleep(FAULT_S)
    fleet.redis.resume()
    return time.monotonic()


async def _redis_restarted_empty(fleet: _Fleet) -> float:
    await asyncio.to_thread(fleet.redis.restart)
    return time.monotonic()


async def _forged_and_oversized(fleet: _Fleet) -> float:
    world = fleet.sim.world
    assert world is not None
    redis = await fleet.store()
    try:
        for index in world.perp_indexes():
            pubkey = str(world.perp_market_pubkey(index))
            payload = json.dumps(
                {"v": 2, "t": "r", "p": pubkey, "s": 10**12, "w": time.time(), "e": 99,
                 "m": "forger", "k": "perp", "o": None,
                 "d": base64.b64encode(b"\0" * 64).decode()}
            )  # fmt: skip
            forged = "0" * 64 + "." + payload  # not signed with the fleet's secret
            await redis.hset(_GROUP + "records", pubkey, forged)
            await redis.hset(_GROUP + "slots", pubkey, 10**12)
            await redis.publish(_GROUP + "updates", forged)
        huge = "." + "[" * (2 << 20)
        await redis.hset(_GROUP + "records", str(Pubkey.new_unique()), huge)
        await redis.publish(_GROUP + "updates", huge)
    finally:
        await redis.aclose()
    return time.monotonic()


async def _half_open_channel(fleet: _Fleet) -> float:
    fleet.channel.cut()
    return time.monotonic()


async def _leader_upstream_dead(fleet: _Fleet) -> float:
    for proxy in fleet.upstreams[await fleet.leader()]:
        await proxy.down()  # for good: the fleet must lead without it
    return time.monotonic()


@dataclass(frozen=True)
class FleetFault:
    name: str
    body: FaultBody
    what: str
    bound_s: float = 2 * LEASE_S


FLEET_FAULTS: dict[str, FleetFault] = {
    f.name: f
    for f in (
        FleetFault("Redis paused", _redis_paused, f"redis-server stopped (SIGSTOP) {FAULT_S:g} s"),
        FleetFault("Redis restarted empty", _redis_restarted_empty, "killed, started empty"),
        FleetFault(
            "forged and oversized records",
            _forged_and_oversized,
            "unsigned records at slot 10^12 for every perp market, stored, slotted and "
            "published; a 2 MiB nested record stored and published",
        ),
        FleetFault(
            "half-open channel",
            _half_open_channel,
            "every member's pub/sub connection silently drops all bytes, for good",
        ),
        FleetFault(
            "leader's upstream dead",
            _leader_upstream_dead,
            "the leader's RPC and WebSocket refuse connections, for good; recovery counted "
            "from the fault's start, bound: the hand-over's (`DRIFT_STALE_AFTER_S` and two "
            "lease periods) plus two lease periods",
            bound_s=STALE_AFTER_S + 4 * LEASE_S,
        ),
    )
}


class _Reads:
    """Every read of every member, judged against the chain."""

    def __init__(self, row: FleetRow, truth: ChainTruth) -> None:
        self.row = row
        self.truth = truth
        self.last_bad_at = [time.monotonic()] * MEMBERS

    def judge(self, member: int, status: int | None, body: Any) -> None:
        now = time.monotonic()
        self.row.reads += 1
        if status is not None and status >= 500:
            self.row.exceptions += 1
        rows = body.get("markets", []) if isinstance(body, dict) else []
        fresh = status == 200 and bool(rows)
        for market in rows:
            if market.get("stale"):
                fresh = False
                continue
            lag = self.truth.lag("oracle", market["market_index"], market["oracle_price"], now)
            if lag is None or lag > STALE_AFTER_S + STALE_MARGIN_S:
                self.row.unflagged += 1
                self.row.worst_unflagged_lag_s = max(self.row.worst_unflagged_lag_s, lag or 0.0)
                fresh = False
        if not fresh:
            self.row.flagged += 1
            self.last_bad_at[member] = now

    def quiet_since(self) -> float:
        return max(self.last_bad_at)


async def _read_forever(fleet: _Fleet, reads: _Reads) -> None:
    while True:
        for i, member in enumerate(fleet.members):
            try:
                response = await fleet.http.get(member.url + "/api/markets", timeout=2.0)
                reads.judge(i, response.status_code, response.json())
            except (httpx.HTTPError, ValueError):
                reads.judge(i, None, None)
        await asyncio.sleep(READ_EVERY_S)


async def _start_upstream(sim: Simulator) -> tuple[TcpProxy, TcpProxy]:
    """A proxy of the simulator's HTTP port and, one port up, of its WebSocket port (the
    solana-test-validator layout driftpy assumes)."""
    port = httpx.URL(sim.http_url).port
    assert port is not None
    while True:
        http = TcpProxy(port)
        await http.start()
        ws = TcpProxy(port + 1)
        try:
            await ws.start(http.port + 1)
        except OSError:  # taken: try another pair
            await http.down()
            continue
        return http, ws


async def run_fleet_row(fault: FleetFault) -> FleetRow:
    row = FleetRow(fault.name, fault.what, bound_s=fault.bound_s)
    started = time.monotonic()
    sim = Simulator(markets=8, tick_s=0.4, funding_period_s=15.0)
    await sim.start()
    redis = RedisServer()
    redis.start()
    channel = TcpProxy(redis.port)
    await channel.start()
    upstreams = [await _start_upstream(sim) for _ in range(MEMBERS)]
    members = [
        ServeProcess(
            f"http://127.0.0.1:{upstream[0].port}/?api-key=m{i}",
            channel.url(),
            engines=["funding"],
            env=ENV,
        )
        for i, upstream in enumerate(upstreams)
    ]
    truth = ChainTruth(sim)
    reader: asyncio.Task[None] | None = None
    async with httpx.AsyncClient() as http:
        fleet = _Fleet(sim, truth, redis, channel, upstreams, members, http)
        try:
            for member in members:
                await member.start()
            await poll(lambda: all_ready(http, members), 120, "fleet ready", every_s=0.1)
            reads = _Reads(row, truth)
            reader = asyncio.create_task(_read_forever(fleet, reads))
            await asyncio.sleep(2.0)
            fault_started = time.monotonic()
            cleared = await fault.body(fleet)
            since = fault_started if fault.name == "leader's upstream dead" else cleared
            while time.monotonic() - since < SETTLE_LIMIT_S:
                await asyncio.sleep(0.25)
                if time.monotonic() - max(reads.quiet_since(), since) >= QUIET_S:
                    row.recovery_s = max(0.0, reads.quiet_since() - since)
                    break
            for member in members:
                stats = await member.stats(http)
                row.exceptions += sum(e.get("errors", 0) for e in stats.get("engines", []))
                row.exceptions += 0 if member.alive() else 1
                row.roles_after.append(stats.get("fleet", {}).get("role", "?"))
        finally:
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            truth.close()
            # Awaited on the loop, which keeps serving the simulator their shutdown talks to.
            await stop_all(members)
            for proxy in [channel, *(p for pair in upstreams for p in pair)]:
                await proxy.down()
            redis.stop()
            await sim.stop()
    row.seconds = time.monotonic() - started
    return row


async def run_fleet_rows(names: Sequence[str] = tuple(FLEET_FAULTS)) -> list[FleetRow]:
    rows = []
    for name in names:
        row = await run_fleet_row(FLEET_FAULTS[name])
        print(
            f"fleet {row.fault:30} reads={row.reads} exc={row.exceptions} "
            f"flagged={row.flagged} unflagged={row.unflagged} recovery={row.recovery_s} "
            f"roles={row.roles_after} ({row.seconds:.0f} s)",
            flush=True,
        )
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    names = list(argv if argv is not None else sys.argv[1:]) or list(FLEET_FAULTS)
    logging.basicConfig(level=logging.CRITICAL)
    rows = asyncio.run(run_fleet_rows(names))
    saved = load_results(RESULTS / "fleet.json") or {"rows": []}
    measured = {row.fault for row in rows}
    kept = [r for r in saved["rows"] if r["fault"] not in measured]
    save_results(
        RESULTS / "fleet.json",
        {
            "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine(),
            "env": ENV | {"DRIFT_SHARE_SECRET": "(set)"},
            "members": MEMBERS,
            "lease_s": LEASE_S,
            "rows": kept + [dataclasses.asdict(row) | {"broken": row.failures()} for row in rows],
        },
    )
    write_doc()
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
