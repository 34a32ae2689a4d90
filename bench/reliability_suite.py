"""The reliability suite's rows: four engines through one simulator fault in one
subscription mode, measured (:func:`run_row`, :func:`run_suite`).

Each row starts fresh simulators, points ``DRIFT_RPC_URL`` at them, starts four engines, lets
them read, puts the fault on, takes it off, waits for the reads to settle, checks how far the
shared client's accounts are behind the chain, releases every engine at once (while their
reads are in flight) and looks for tasks, sockets and descriptors left behind.
:mod:`bench.reliability` runs and reports them; ``tests/test_reliability.py`` runs
:data:`SHORT_ROWS` with :meth:`SuiteConfig.short`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import psutil  # type: ignore[import-untyped]

from bench.reliability_probe import (
    READ_INTERVAL_S,
    BehindWatch,
    Engine,
    LogicalCalls,
    Resources,
    Tally,
    leftovers,
)
from bench.reliability_truth import ChainTruth
from driftshare.config import Settings, load_settings
from driftshare.manager import DriftClientManager
from driftshare.sim import Simulator
from driftshare.sim.faults import GrpcRefusal

__all__ = ["FAULTS", "SHORT_ROWS", "Row", "SuiteConfig", "run_row", "run_suite"]

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "RELIABILITY.md"
RESULTS = ROOT / "docs" / "reliability"
Mode = Literal["websocket", "polling", "grpc"]
MODES: tuple[Mode, ...] = ("websocket", "polling", "grpc")
ENGINES = 4
AMPLIFICATION_LIMIT = 1.2
FAILOVER_FRESH_S = 5.0
"""Issue 10: failover gives engines fresh data within 5 s of the first endpoint going down."""
WINDOW_IDLE_WAIT_S = 2.0
"""The longest a fault waits for a moment without HTTP calls in flight to open its window."""
STALE_MARGIN_S = 1.0
"""Issue 9: a read served unflagged is stale when its data is older than this past
``DRIFT_STALE_AFTER_S``."""

SUITE_ENV: dict[str, str] = {
    "DRIFT_NETWORK": "mainnet",
    "DRIFT_STALE_AFTER_S": "2",
    "DRIFT_IDLE_CLOSE_S": "1",
}
"""Settings of every run besides ``DRIFT_RPC_URL``, ``DRIFT_SUBSCRIPTION`` and
``DRIFT_RETRY_BACKOFF_CAP``; the ones this branch does not know yet are ignored by it and shown
as such in the report."""


@dataclass(frozen=True)
class SuiteConfig:
    """How long each phase of a row lasts and what the simulators look like."""

    markets: int = 30
    tick_s: float = 0.4
    funding_period_s: float = 15.0
    """With repegs, a market account changes every few seconds: often enough for reads of
    an old settlement to show, seldom enough for an update lost in a gap to stay lost."""
    fault_s: float = 5.0
    warm_s: float = 2.0
    quiet_s: float = 4.0
    """A row ends once no read has been bad for this long (and recovery is measurable)."""
    ready_timeout_s: float = 20.0
    backoff_cap_s: float = 5.0
    """``DRIFT_RETRY_BACKOFF_CAP``: recovery is bounded by twice this."""

    @classmethod
    def short(cls) -> SuiteConfig:
        return cls(
            markets=10,
            fault_s=3.0,
            warm_s=1.0,
            quiet_s=2.0,
            ready_timeout_s=15.0,
            backoff_cap_s=2.0,
        )

    def env(self, url: str, mode: Mode, grpc_url: str | None = None) -> dict[str, str]:
        """The ``DRIFT_*`` variables of a run besides :data:`SUITE_ENV`."""
        env = {
            "DRIFT_RPC_URL": url,
            "DRIFT_SUBSCRIPTION": mode,
            "DRIFT_RETRY_BACKOFF_CAP": str(self.backoff_cap_s),
        }
        if grpc_url is not None:
            env["DRIFT_GRPC_URL"] = grpc_url
        return env


@dataclass
class Context:
    sims: list[Simulator]
    config: SuiteConfig
    counters: Callable[[], tuple[int, int, int]] = lambda: (0, 0, 0)
    """(upstream requests, logical calls, WebSockets accepted) so far."""
    idle: Callable[[], bool] = lambda: True
    """Whether no HTTP call is in flight."""
    started_at: float = 0.0
    ended_at: float = 0.0
    window: list[tuple[int, int, int]] = field(default_factory=list)
    """``counters()`` when the fault started and ``backoff_cap_s`` after it ended."""
    window_at: list[float] = field(default_factory=list)
    """When each reading of ``window`` was taken."""

    async def start(self) -> None:
        """Open the window between calls, so no call is counted upstream but not as logical."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WINDOW_IDLE_WAIT_S):
                while not self.idle():  # noqa: ASYNC110 (a count, not an event, says so)
                    await asyncio.sleep(0.005)
        self.started_at = time.monotonic()
        self.window = [self.counters()]
        self.window_at = [self.started_at]

    def end(self) -> None:
        self.ended_at = time.monotonic()

    def close_window(self, final: bool = False) -> None:
        """Take the window's second reading once retries of the fault's calls are over, between
        calls (no call counted as logical but not yet upstream), or at the row's end."""
        due = self.ended_at > 0 and time.monotonic() >= self.ended_at + self.config.backoff_cap_s
        if len(self.window) == 1 and ((due and self.idle()) or final):
            self.window.append(self.counters())
            self.window_at.append(time.monotonic())

    @property
    def sim(self) -> Simulator:
        return self.sims[0]


FaultBody = Callable[[Context], Awaitable[None]]


@dataclass(frozen=True)
class Fault:
    name: str
    body: FaultBody
    what: str
    """How the simulator is made to fail, for the report."""
    at_start: bool = False
    """Put on before the engines start."""
    sims: int = 1
    recover_from: Literal["start", "end"] = "end"
    """Recovery counts from the fault's end, or (failover) from its start."""


async def _window(ctx: Context, on: Callable[[], object], off: Callable[[], object]) -> None:
    await ctx.start()
    result = on()
    if asyncio.iscoroutine(result):
        await result
    await asyncio.sleep(ctx.config.fault_s)
    result = off()
    if asyncio.iscoroutine(result):
        await result
    ctx.end()


_FOREVER = 10**9


async def _storm_429(ctx: Context) -> None:
    f = ctx.sim.faults
    await _window(ctx, lambda: f.fail_next(_FOREVER, 429), lambda: f.fail_next(0, 429))


async def _burst_5xx(ctx: Context) -> None:
    f = ctx.sim.faults
    await _window(ctx, lambda: f.fail_next(_FOREVER, 503), lambda: f.fail_next(0, 503))


async def _latency(ctx: Context) -> None:
    f = ctx.sim.faults
    await _window(ctx, lambda: f.set_latency(5000), lambda: f.set_latency(0))


async def _ws_drop(ctx: Context) -> None:
    await ctx.start()
    await ctx.sim.faults.drop_ws()
    await asyncio.sleep(ctx.config.fault_s / 2)
    await ctx.sim.faults.drop_ws()
    ctx.end()


async def _ws_stall(ctx: Context) -> None:
    f = ctx.sim.faults
    await _window(ctx, lambda: f.set_stall(True), lambda: f.set_stall(False))


async def _grpc_drop(ctx: Context) -> None:
    await ctx.start()
    await ctx.sim.faults.drop_grpc()
    await asyncio.sleep(ctx.config.fault_s / 2)
    await ctx.sim.faults.drop_grpc()
    ctx.end()


def _grpc_refusal(status: GrpcRefusal) -> FaultBody:
    async def refuse(ctx: Context) -> None:
        f = ctx.sim.faults

        async def on() -> None:
            f.refuse_grpc(_FOREVER, status)
            await f.drop_grpc()

        await _window(ctx, on, lambda: f.refuse_grpc(0, status))

    return refuse


async def _until_up(sim: Simulator) -> None:
    # The simulator tells when it comes back up only through this flag.
    while sim.faults.is_down:  # noqa: ASYNC110
        await asyncio.sleep(0.02)


async def _down(ctx: Context) -> None:
    await ctx.start()
    await ctx.sim.faults.down(ctx.config.fault_s)
    await _until_up(ctx.sim)
    ctx.end()


async def _malformed(ctx: Context) -> None:
    f = ctx.sim.faults
    await _window(ctx, lambda: f.malform_next(_FOREVER), lambda: f.malform_next(0))


async def _corrupt(ctx: Context) -> None:
    world = ctx.sim.world
    assert world is not None
    key = world.perp_market_pubkey(world.perp_indexes()[0])
    f = ctx.sim.faults
    await _window(ctx, lambda: f.corrupt(key, "garble"), lambda: f.restore(key))


async def _down_at_start(ctx: Context) -> None:
    # Put on by run_row before the engines start; here only its end is awaited.
    await _until_up(ctx.sim)
    ctx.end()


async def _failover(ctx: Context) -> None:
    await ctx.start()
    await ctx.sims[0].faults.down(ctx.config.fault_s * 2)
    await _until_up(ctx.sims[0])
    ctx.end()


async def _nothing(ctx: Context) -> None:
    await ctx.start()
    ctx.end()


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault("429 storm", _storm_429, "every HTTP request answered 429, Retry-After 1"),
        Fault("5xx burst", _burst_5xx, "every HTTP request answered 503"),
        Fault("5 s latency", _latency, "every HTTP answer delayed 5 s"),
        Fault("WebSocket drop", _ws_drop, "every WebSocket cut, twice, half the window apart"),
        Fault(
            "WebSocket stall",
            _ws_stall,
            "no WebSocket notification nor gRPC update; the chain goes on",
        ),
        Fault("gRPC drop", _grpc_drop, "every gRPC stream ended (UNAVAILABLE), twice"),
        Fault(
            "gRPC unavailable",
            _grpc_refusal("UNAVAILABLE"),
            "every gRPC stream ended, every gRPC call refused with UNAVAILABLE",
        ),
        Fault(
            "gRPC exhausted",
            _grpc_refusal("RESOURCE_EXHAUSTED"),
            "every gRPC stream ended, every gRPC call refused with RESOURCE_EXHAUSTED",
        ),
        Fault(
            "RPC down mid-run",
            _down,
            "HTTP and WebSocket ports closed, connections reset, gRPC calls refused",
        ),
        Fault("malformed JSON", _malformed, "every HTTP answer cut in half (invalid JSON)"),
        Fault("corrupt account", _corrupt, "the first perp market account served bit-flipped"),
        Fault("RPC down at start", _down_at_start, "ports closed when the engines start", True),
        Fault(
            "endpoint failover",
            _failover,
            "two simulators in DRIFT_RPC_URL; the first down for twice the window",
            sims=2,
            recover_from="start",
        ),
        Fault("release of everything", _nothing, "no fault: only the release"),
    )
}
SHORT_ROWS: tuple[tuple[Mode, str], ...] = (
    ("websocket", "WebSocket drop"),
    ("websocket", "RPC down mid-run"),
    ("polling", "5xx burst"),
    ("polling", "malformed JSON"),
    ("polling", "endpoint failover"),
    ("websocket", "release of everything"),
    ("grpc", "gRPC unavailable"),
)


@dataclass
class Row:
    """One fault in one mode, as measured."""

    mode: str
    fault: str
    status: str = "ok"
    """``ok``, or why the row could not run (``not available: ...``)."""
    reads: int = 0
    exceptions: dict[str, int] = field(default_factory=dict)
    none: int = 0
    flagged: int = 0
    unflagged: int = 0
    unflagged_by_kind: dict[str, int] = field(default_factory=dict)
    worst_unflagged_lag_s: float = 0.0
    unmatched: int = 0
    behind: int | None = None
    behind_worst_lag_s: float = 0.0
    behind_accounts: list[str] = field(default_factory=list)
    recovery_s: float | None = None
    """Seconds from the fault's end to the last bad read; None if reads never settled."""
    upstream: int = 0
    logical: int = 0
    window_s: float = 0.0
    """Seconds over which ``upstream`` and ``logical`` were counted."""
    ws_connections: int = 0
    """WebSockets the simulators accepted in that window: the engines' reconnects."""
    subscribed: int = 0
    """Accounts the shared client held (its ledger) when the row settled."""
    tasks_left: list[str] = field(default_factory=list)
    sockets_left: int = 0
    fds_left: int = 0
    initialized_after_release: bool = False
    slowest_call_s: float = 0.0
    background_errors: int = 0
    seconds: float = 0.0

    @property
    def ran(self) -> bool:
        return self.status == "ok"

    @property
    def amplification(self) -> float | None:
        return self.upstream / self.logical if self.logical else None

    def failures(self, recovery_bound_s: float) -> list[str]:
        """The Done-when invariants this row breaks (issues 9 and 10)."""
        if not self.ran:
            return []
        broken = []
        if sum(self.exceptions.values()):
            broken.append("exceptions")
        if self.unflagged:
            broken.append("unflagged stale")
        if self.recovery_s is None or self.recovery_s > recovery_bound_s:
            broken.append("recovery")
        amplification = self.amplification
        if amplification is not None and amplification > AMPLIFICATION_LIMIT:
            broken.append("amplification")
        if self.tasks_left or self.sockets_left > 0 or self.fds_left > 0:
            broken.append("left after release")
        if self.behind:
            broken.append("accounts behind")
        return broken


@contextlib.contextmanager
def suite_env(**extra: str) -> Iterator[None]:
    """Only the suite's ``DRIFT_*`` variables for the duration, restored afterwards."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("DRIFT_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(SUITE_ENV, **extra)
    try:
        yield
    finally:
        for key in [k for k in os.environ if k.startswith("DRIFT_")]:
            del os.environ[key]
        os.environ.update(saved)


def _grace_s(settings: Settings) -> float:
    """How long closes get after release: the idle close where the branch has it, plus 2 s."""
    return float(getattr(settings, "idle_close_s", 0.0)) + 2.0


def threshold_s(settings: Settings) -> float:
    stale_after = getattr(settings, "stale_after_s", None)
    return float(SUITE_ENV["DRIFT_STALE_AFTER_S"] if stale_after is None else stale_after) + (
        STALE_MARGIN_S
    )


def recovery_bound_s(settings: Settings) -> float:
    return 2 * settings.retry_backoff_cap


class _Errors:
    """Exceptions nobody retrieved (asyncio's loop exception handler)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.count += 1


async def _failover_available(ctx: Context) -> str | None:
    """Why a comma-separated ``DRIFT_RPC_URL`` cannot run here, or None if it can."""
    try:
        async with asyncio.timeout(10):
            client = await DriftClientManager.get_client()
    except TimeoutError:
        client = None
    reached = ctx.sims[0].stats()["http_requests"]["total"]
    await DriftClientManager.shutdown()
    if client is None and reached == 0:
        return "not available: a comma-separated DRIFT_RPC_URL reaches no endpoint on this branch"
    return None


async def run_row(fault: Fault, mode: Mode, config: SuiteConfig) -> Row:
    """Run ``fault`` in ``mode`` on fresh simulators and measure it."""
    row = Row(mode, fault.name)
    started = time.monotonic()
    sims = [
        Simulator(
            markets=config.markets,
            tick_s=config.tick_s,
            funding_period_s=config.funding_period_s,
            grpc_port=0 if mode == "grpc" else None,
        )
        for _ in range(fault.sims)
    ]
    for sim in sims:
        await sim.start()
    truths = [ChainTruth(sim) for sim in sims]
    ports = {p for sim in sims for p in (sim._server.port, sim._server.port + 1)}
    grpc_url = sims[0].grpc_url if mode == "grpc" else None
    if grpc_url is not None:
        ports.add(int(grpc_url.rsplit(":", 1)[1]))
    loop = asyncio.get_running_loop()
    errors = _Errors()
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(errors)
    calls = LogicalCalls()
    calls.ports = ports

    def counters() -> tuple[int, int, int]:
        stats = [s.stats() for s in sims]
        return (
            sum(s["http_requests"]["total"] for s in stats),
            calls.count,
            sum(s["ws_connections"]["total"] for s in stats),
        )

    ctx = Context(sims, config, counters, lambda: calls.in_flight == 0)
    url = ",".join(sim.http_url for sim in sims)
    try:
        with suite_env(**config.env(url, mode, grpc_url)), calls.counting():
            settings = DriftClientManager.configure()
            if fault.sims > 1:
                unavailable = await _failover_available(ctx)
                if unavailable is not None:
                    row.status = unavailable
                    return row
            baseline = Resources.take(ports)
            await _measure(
                row=row,
                fault=fault,
                ctx=ctx,
                truths=truths,
                settings=settings,
                baseline=baseline,
                ports=ports,
            )
            (upstream_0, logical_0, ws_0), (upstream_1, logical_1, ws_1) = ctx.window
            row.upstream, row.logical = upstream_1 - upstream_0, logical_1 - logical_0
            row.ws_connections = ws_1 - ws_0
            row.window_s = ctx.window_at[1] - ctx.window_at[0]
    finally:
        row.background_errors = errors.count
        await DriftClientManager.shutdown()
        loop.set_exception_handler(previous_handler)
        for truth in truths:
            truth.close()
        for sim in sims:
            await sim.stop()
        row.seconds = time.monotonic() - started
    return row


async def _measure(
    *,
    row: Row,
    fault: Fault,
    ctx: Context,
    truths: Sequence[ChainTruth],
    settings: Settings,
    baseline: Resources,
    ports: set[int],
) -> None:
    config = ctx.config
    tally = Tally(threshold_s(settings))
    engines = [Engine(n, truths, tally) for n in range(ENGINES)]
    stop = asyncio.Event()
    if fault.at_start:
        await ctx.start()
        await ctx.sim.faults.down(config.fault_s)
    await asyncio.gather(*(e.connect() for e in engines))
    behind = BehindWatch(truths, tally.threshold_s)
    settled = False
    watcher = asyncio.create_task(_watch(behind, ctx, fault))
    loops = [
        asyncio.create_task(e.run(stop), name=f"reliability-engine-{e.number}") for e in engines
    ]
    try:
        if fault.at_start:
            await fault.body(ctx)
        else:
            await _ready(tally, config.ready_timeout_s)
            await asyncio.sleep(config.warm_s)
            await fault.body(ctx)
        await _settle(tally, ctx, fault, recovery_bound_s(settings))
        settled = not _still_bad(tally, ctx)
        behind.sample()
        shared = DriftClientManager.shared_state(settings.network)
        row.subscribed = len(shared.ledger) if shared is not None else 0
    finally:
        watcher.cancel()
        ctx.close_window(final=True)
        # Every engine at once, with reads in flight: release racing reads is part of the test.
        stop.set()
        await asyncio.gather(*(e.release() for e in engines))
        await asyncio.gather(*loops)
    left = await leftovers(baseline, ports, _grace_s(settings))
    row.tasks_left, row.sockets_left, row.fds_left = left.tasks, left.sockets, left.fds
    row.behind, row.behind_worst_lag_s = behind.count, behind.worst_lag_s
    row.behind_accounts = sorted(behind.accounts)
    row.initialized_after_release = left.initialized
    row.reads, row.none, row.flagged = tally.reads, tally.none, tally.flagged
    row.exceptions = dict(tally.exceptions)
    row.unflagged, row.unmatched = tally.unflagged, tally.unmatched
    row.unflagged_by_kind = dict(tally.unflagged_by_kind)
    row.worst_unflagged_lag_s = tally.worst_unflagged_lag_s
    row.slowest_call_s = tally.slowest_call_s
    reference = ctx.started_at if fault.recover_from == "start" else ctx.ended_at
    last_bad = tally.last_bad_at
    if not settled:
        row.recovery_s = None
    else:
        row.recovery_s = 0.0 if last_bad is None else max(0.0, last_bad - reference)


async def _ready(tally: Tally, timeout_s: float) -> None:
    """Until every engine has had one good read (or ``timeout_s``)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(tally.all_good.wait(), timeout_s)


def _still_bad(tally: Tally, ctx: Context) -> bool:
    last_bad = tally.last_bad_at
    return last_bad is not None and time.monotonic() - last_bad < ctx.config.quiet_s


async def _watch(behind: BehindWatch, ctx: Context, fault: Fault) -> None:
    """Sample the shared client's accounts once the library has had time to catch up: the
    stale threshold after the fault ends, or (failover) 5 s after it starts."""
    while True:
        now = time.monotonic()
        if fault.recover_from == "start":
            due = ctx.started_at > 0 and now >= ctx.started_at + FAILOVER_FRESH_S
        else:
            due = ctx.ended_at > 0 and now >= ctx.ended_at + behind.threshold_s
        if due:
            behind.sample()
        ctx.close_window()
        await asyncio.sleep(READ_INTERVAL_S)


async def _settle(tally: Tally, ctx: Context, fault: Fault, bound_s: float) -> None:
    """Until reads have been good for ``quiet_s``, or past the recovery bound (plus quiet)."""
    reference = ctx.started_at if fault.recover_from == "start" else ctx.ended_at
    give_up = reference + bound_s + ctx.config.quiet_s + 1.0
    earliest = ctx.ended_at + ctx.config.quiet_s
    while time.monotonic() < give_up:
        if time.monotonic() >= earliest and not _still_bad(tally, ctx):
            return
        await asyncio.sleep(READ_INTERVAL_S)


async def run_suite(
    config: SuiteConfig,
    rows: Sequence[tuple[Mode, str]] | None = None,
    progress: Callable[[Row], None] | None = None,
) -> list[Row]:
    """Every (mode, fault) of ``rows`` (default: all), one after another."""
    wanted = rows or [(mode, name) for mode in MODES for name in FAULTS]
    results = []
    for mode, name in wanted:
        row = await run_row(FAULTS[name], mode, config)
        results.append(row)
        if progress is not None:
            progress(row)
    return results


# -- the settings and machine a run reports ------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        "cores": psutil.cpu_count(logical=True),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "driftpy": metadata.version("driftpy"),
        "platform": platform.platform(),
    }


def suite_settings(config: SuiteConfig) -> Settings:
    """The settings every row runs with (the suite's environment)."""
    with suite_env(**config.env("http://127.0.0.1:8899", "websocket")):
        return load_settings()


def settings_shown(config: SuiteConfig) -> dict[str, str]:
    """The suite's settings as the library on this branch sees them."""
    settings = suite_settings(config)
    shown = {}
    everything = {**SUITE_ENV, "DRIFT_RETRY_BACKOFF_CAP": str(config.backoff_cap_s)}
    for key, value in everything.items():
        name = key.removeprefix("DRIFT_").lower()
        known = name in type(settings).model_fields
        shown[key] = value if known else f"{value} (not a setting on this branch: ignored)"
    for name in ("request_timeout_s", "max_retries", "rpc_rps", "health_interval_s", "ws_stall_s"):
        shown[f"DRIFT_{name.upper()}"] = f"{getattr(settings, name)} (default)"
    return shown
