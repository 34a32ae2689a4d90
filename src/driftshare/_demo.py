"""``driftshare demo``: the sample engines on the simulator, shared client vs one client each.

Each mode runs in a fresh child process with its own simulator, so the simulator's counters
and the peak RSS belong to that mode alone. The simulator limits RPC requests like a public
endpoint (``rate_limit`` per second, shared by every connection from this host).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import logging
import resource
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass

__all__ = ["MODES", "DemoResult", "print_results", "run_demo", "run_mode"]

MODES = ("shared", "legacy")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What one mode cost, as the simulator and the process measured it."""

    mode: str
    engines: int
    duration_s: float
    drift_clients: int
    """DriftClient objects in memory at the end of the run, after a garbage collection."""
    initializations: int
    """Shared-client initializations (0 in legacy mode)."""
    rpc_requests: int
    ws_connections: int
    ws_subscriptions: int
    rate_limited: int
    """HTTP 429 answers the simulator sent."""
    engine_errors: int
    signals: int
    peak_rss_mb: float


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run_mode(
    mode: str,
    *,
    engines: int = 4,
    duration_s: float = 30.0,
    markets: int = 30,
    rate_limit: float | None = 10.0,
) -> DemoResult:
    """Run ``engines`` engines (the four kinds in turn) for ``duration_s`` in this process."""
    from driftpy.drift_client import DriftClient

    from driftshare._engines import ENGINES, make_engines
    from driftshare.manager import DriftClientManager
    from driftshare.sim import Simulator

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    async with Simulator(markets=markets, rate_limit=rate_limit) as sim:
        DriftClientManager.configure(rpc_url=sim.http_url)
        names = list(itertools.islice(itertools.cycle(ENGINES), engines))
        running = make_engines(names, use_singleton=mode == "shared")
        try:
            await asyncio.gather(*(engine.start() for engine in running))
            await asyncio.sleep(duration_s)
            gc.collect()
            clients = sum(1 for obj in gc.get_objects() if isinstance(obj, DriftClient))
            initializations = int(DriftClientManager.stats().get("initializations", 0))
            stats = sim.stats()
        finally:
            for engine in running:
                await engine.stop()
            await DriftClientManager.shutdown()
    return DemoResult(
        mode=mode,
        engines=engines,
        duration_s=duration_s,
        drift_clients=clients,
        initializations=initializations,
        rpc_requests=stats["http_requests"]["total"],
        ws_connections=stats["ws_connections"]["total"],
        ws_subscriptions=stats["subscriptions"]["total"],
        rate_limited=stats["rate_limited"],
        engine_errors=sum(engine.errors for engine in running),
        signals=sum(engine.signals for engine in running),
        peak_rss_mb=round(_peak_rss_mb(), 1),
    )


async def _child(mode: str, options: Sequence[str]) -> DemoResult:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "driftshare._demo",
        mode,
        *options,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"the {mode} run failed: " + " | ".join(tail))
    return DemoResult(**json.loads(out.decode().strip().splitlines()[-1]))


async def run_demo(
    *,
    engines: int = 4,
    duration_s: float = 30.0,
    markets: int = 30,
    rate_limit: float | None = 10.0,
) -> list[DemoResult]:
    """Both modes, one after the other, each in its own child process."""
    options = [
        f"--engines={engines}",
        f"--duration={duration_s}",
        f"--markets={markets}",
        f"--rate-limit={0 if rate_limit is None else rate_limit}",
    ]
    return [await _child(mode, options) for mode in MODES]


def print_results(results: Sequence[DemoResult], rate_limit: float | None) -> None:
    """Both modes side by side as a rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    by_mode = {r.mode: r for r in results}
    shared, legacy = by_mode["shared"], by_mode["legacy"]
    limit = "no limit" if rate_limit is None else f"{rate_limit:g} req/s"
    table = Table(
        title=f"{shared.engines} engines for {shared.duration_s:g}s on the simulated chain "
        f"({limit})",
        caption="legacy: DriftAdapter(use_singleton=False), one DriftClient per engine. "
        "RPC and WebSocket figures are counted by the simulator; RSS includes it.",
    )
    table.add_column("")
    table.add_column("shared", justify="right")
    table.add_column("legacy", justify="right")
    table.add_column("change", justify="right")
    rows = [
        ("DriftClients alive", "drift_clients"),
        ("RPC requests", "rpc_requests"),
        ("WebSocket connections", "ws_connections"),
        ("WebSocket subscriptions", "ws_subscriptions"),
        ("HTTP 429s", "rate_limited"),
        ("errors seen by engines", "engine_errors"),
        ("signals produced", "signals"),
        ("peak RSS (MB)", "peak_rss_mb"),
    ]
    for label, key in rows:
        a, b = getattr(shared, key), getattr(legacy, key)
        change = f"{(a - b) / b * 100:+.1f}%" if b else "n/a"
        table.add_row(label, f"{a:g}", f"{b:g}", change)
    Console().print(table)


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m driftshare._demo")
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--engines", type=int, default=4)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--markets", type=int, default=30)
    parser.add_argument("--rate-limit", type=float, default=10.0, help="0 for no limit")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = asyncio.run(
        run_mode(
            ns.mode,
            engines=ns.engines,
            duration_s=ns.duration,
            markets=ns.markets,
            rate_limit=ns.rate_limit or None,
        )
    )
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
