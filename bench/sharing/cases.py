"""The benchmark cases, each run for the shared path and the legacy path.

Every case gets its simulator subprocesses from :class:`Simulators` and runs each
measurement in a fresh worker subprocess (see :mod:`bench._worker`); each returns plain
JSON-ready data.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from bench._harness import BenchError, SimProcess, run_worker, run_workers, simulator

__all__ = [
    "CASES",
    "IMPORTS",
    "PATHS",
    "BenchConfig",
    "Simulators",
    "cold_start",
    "latency",
    "provider_limit",
    "rpc_cost",
    "stampede",
]

PATHS = ("shared", "legacy")
"""``shared``: DriftAdapter over driftshare's one client; ``legacy``: one DriftClient per engine."""


@dataclass(frozen=True)
class BenchConfig:
    """How much of everything to run; :meth:`full` and :meth:`quick` are the two presets."""

    quick: bool
    engines: tuple[int, ...]
    window_s: float
    markets: int
    cold_markets: tuple[int, ...]
    cold_repeats: int
    import_repeats: int
    hit_calls: int
    miss_calls_funding: int
    miss_calls_markets: int
    stampede_callers: int
    legacy_stampede_callers: int
    limit_engines: tuple[int, ...]
    limit_window_s: float
    limit_rps: float = 10.0

    @classmethod
    def full(cls) -> BenchConfig:
        return cls(
            quick=False,
            engines=(1, 4, 16, 64),
            window_s=15.0,
            markets=30,
            cold_markets=(30, 100),
            cold_repeats=3,
            import_repeats=9,
            hit_calls=100_000,
            # A miss recomputes from the subscribed accounts (all markets: ~ms each), so
            # 100k of them would take minutes; these counts still give a stable p99.
            miss_calls_funding=20_000,
            miss_calls_markets=2_000,
            stampede_callers=1_000,
            # 1,000 private DriftClients would need GBs (see the memory case); 64 shows the trend.
            legacy_stampede_callers=64,
            limit_engines=(4, 64),
            limit_window_s=20.0,
        )

    @classmethod
    def quick_preset(cls) -> BenchConfig:
        return cls(
            quick=True,
            engines=(2,),
            window_s=1.0,
            markets=8,
            cold_markets=(8,),
            cold_repeats=1,
            import_repeats=1,
            hit_calls=200,
            miss_calls_funding=50,
            miss_calls_markets=5,
            stampede_callers=100,
            legacy_stampede_callers=4,
            limit_engines=(2,),
            limit_window_s=1.0,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Simulators:
    """Where the cases get their simulators.

    In the full run each ``with sims(...)`` starts a fresh one, so no run's traffic or 429
    debt carries into the next. In the quick run (``reuse``) there is one per distinct
    setting, kept until ``stack`` closes: every count is a difference of the simulator's
    counters around a run, so sharing changes none, and each start saved is seconds.
    """

    def __init__(self, stack: ExitStack, *, reuse: bool) -> None:
        self._stack = stack
        self._reuse = reuse
        self._running: dict[tuple[int, float | None], SimProcess] = {}

    @contextmanager
    def __call__(self, *, markets: int, rate_limit: float | None = None) -> Iterator[SimProcess]:
        if not self._reuse:
            with simulator(markets=markets, rate_limit=rate_limit) as sim:
                yield sim
            return
        key = (markets, rate_limit)
        if key not in self._running:
            self._running[key] = self._stack.enter_context(
                simulator(markets=markets, rate_limit=rate_limit)
            )
        yield self._running[key]


def _slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs`` (0 for fewer than two points)."""
    if len(set(xs)) < 2:
        return 0.0
    return float(statistics.linear_regression(xs, ys).slope)


def rpc_cost(config: BenchConfig, sims: Simulators) -> dict[str, Any]:
    """Cases 1 and 2: RPC traffic and client RSS for N engines, websocket and polling.

    Each (mode, path, N) runs in a fresh worker: N engines connect, then each reads the
    funding of every market every 100 ms for ``window_s``. The simulator counts what it
    served from the worker's start to its exit, start-up included.
    """
    plan = [
        {"mode": mode, "path": path, "engines": engines}
        for mode in ("websocket", "polling")
        for path in PATHS
        for engines in config.engines
    ]
    params = [
        {"kind": "engines", **run, "markets": config.markets, "window_s": config.window_s}
        for run in plan
    ]
    with sims(markets=config.markets) as sim:
        results = run_workers(sim, params, one_process=config.quick)
    runs = [{**run, **result} for run, result in zip(plan, results, strict=True)]
    summary: dict[str, Any] = {}
    for mode in ("websocket", "polling"):
        for path in PATHS:
            series = sorted(
                (r for r in runs if r["mode"] == mode and r["path"] == path),
                key=lambda r: r["engines"],
            )
            xs = [float(r["engines"]) for r in series]
            summary[f"{mode}/{path}"] = {
                "http_slope_per_engine": _slope(xs, [r["sim"]["http_requests"] for r in series]),
                "ws_slope_per_engine": _slope(xs, [r["sim"]["ws_connections"] for r in series]),
                "rss_slope_mib_per_engine": _slope(xs, [r["rss_mib"] for r in series]),
            }
    return {"window_s": config.window_s, "markets": config.markets, "runs": runs, **summary}


def latency(config: BenchConfig, sims: Simulators) -> dict[str, Any]:
    """Case 3: read latency of cache hits and misses, by API."""
    apis = (
        ("DriftClientManager (shared)", "manager", "shared"),
        ("DriftAdapter (shared)", "adapter", "shared"),
        ("DriftAdapter (legacy)", "adapter", "legacy"),
    )
    plan = [(label, api, path, miss) for label, api, path in apis for miss in (False, True)]
    params = [
        {
            "kind": "latency",
            "api": api,
            "path": path,
            "miss": miss,
            "markets": config.markets,
            "calls_funding": config.miss_calls_funding if miss else config.hit_calls,
            "calls_markets": config.miss_calls_markets if miss else config.hit_calls,
        }
        for _, api, path, miss in plan
    ]
    with sims(markets=config.markets) as sim:
        results = run_workers(sim, params, one_process=config.quick)
    rows = [
        {"api": label, "path": path, "cache": "miss" if miss else "hit", **result}
        for (label, _, path, miss), result in zip(plan, results, strict=True)
    ]
    return {"rows": rows}


IMPORTS = {
    "driftpy": "import driftpy.drift_client",
    "driftshare": "import driftshare",
    "read API": "from driftshare import DriftClientManager",
}
"""The imports timed in case 4, by label: driftpy's own, driftshare's, and what a read needs."""


def _import_s(statement: str) -> float:
    """Seconds ``statement`` takes in a fresh interpreter, its start-up not counted."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"cold start: `{statement}` failed: {done.stderr.strip()[-500:]}")
    return float(done.stdout)


def import_costs(repeats: int) -> list[dict[str, Any]]:
    """Each of :data:`IMPORTS` ``repeats`` times in fresh interpreters, taken in turn (the
    load of a shared machine moves), with their median and minimum."""
    samples: dict[str, list[float]] = {label: [] for label in IMPORTS}
    for _ in range(repeats):
        for label, statement in IMPORTS.items():
            samples[label].append(_import_s(statement))
    return [
        {
            "label": label,
            "statement": IMPORTS[label],
            "repeats": repeats,
            "median_s": statistics.median(samples[label]),
            "min_s": min(samples[label]),
        }
        for label in IMPORTS
    ]


def cold_start(config: BenchConfig, sims: Simulators) -> dict[str, Any]:
    """Case 4: process start to first funding rate, and connect to ready, by market count;
    and the import cost of driftshare beside driftpy's own."""
    imports = import_costs(config.import_repeats)
    rows: list[dict[str, Any]] = []
    for markets in config.cold_markets:
        with sims(markets=markets) as sim:
            for path in PATHS:
                samples: list[dict[str, Any]] = []
                for _ in range(config.cold_repeats):
                    spawned_at = time.time()
                    result = run_worker(sim, {"kind": "cold", "path": path})
                    result["process_to_first_rate_s"] = result["first_rate_at"] - spawned_at
                    result["import_s"] = result["imported_at"] - spawned_at
                    samples.append(result)
                rows.append(
                    {
                        "markets": markets,
                        "path": path,
                        "ok": all(s["ready"] and s["got_rate"] for s in samples),
                        "repeats": len(samples),
                        **{
                            key: statistics.median(s[key] for s in samples)
                            for key in ("process_to_first_rate_s", "import_s", "client_ready_s")
                        },
                    }
                )
    return {"rows": rows, "statistic": "median", "imports": imports}


def stampede(config: BenchConfig, sims: Simulators) -> dict[str, Any]:
    """Case 5: many first callers at once: how many clients start, how long until all served."""
    plan = [
        ("shared", config.stampede_callers),
        ("shared", config.legacy_stampede_callers),
        ("legacy", config.legacy_stampede_callers),
    ]
    params = [{"kind": "stampede", "path": path, "callers": callers} for path, callers in plan]
    with sims(markets=config.markets) as sim:
        results = run_workers(sim, params, one_process=config.quick)
    rows = [{"path": path, **result} for (path, _), result in zip(plan, results, strict=True)]
    return {"rows": rows}


def provider_limit(config: BenchConfig, sims: Simulators) -> dict[str, Any]:
    """Case 6: the simulator allows ``limit_rps`` requests per second per client (this host)."""
    plan = [(path, engines) for path in PATHS for engines in config.limit_engines]
    params = [
        {
            "kind": "engines",
            "path": path,
            "mode": "websocket",
            "engines": engines,
            "markets": config.markets,
            "window_s": config.limit_window_s,
        }
        for path, engines in plan
    ]
    if config.quick:
        # One simulator and one worker: each run starts with the 429 debt of the one before,
        # which the smoke version accepts and the full run avoids.
        with sims(markets=config.markets, rate_limit=config.limit_rps) as sim:
            results = run_workers(sim, params, one_process=True)
    else:
        # A fresh simulator per run: no run's 429 debt carries into the next.
        results = []
        for run in params:
            with simulator(markets=config.markets, rate_limit=config.limit_rps) as sim:
                results.append(run_worker(sim, run))
    runs = [
        {"path": path, "engines": engines, **result}
        for (path, engines), result in zip(plan, results, strict=True)
    ]
    return {"rps": config.limit_rps, "window_s": config.limit_window_s, "runs": runs}


CASES: dict[str, Callable[[BenchConfig, Simulators], dict[str, Any]]] = {
    "rpc_cost": rpc_cost,
    "latency": latency,
    "cold_start": cold_start,
    "stampede": stampede,
    "provider_limit": provider_limit,
}
"""Every case by name, in the order the suite runs them."""


def engine_errors(run: dict[str, Any]) -> int:
    """Failed connects plus failed reads: the errors the engines of one run saw."""
    return int(run["connect_failures"]) + int(run["read_errors"])
