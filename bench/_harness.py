"""Processes and numbers shared by the cases: a simulator subprocess, worker subprocesses,
simulator counters, a deadline-bound poll, percentiles and a description of the machine
(``driftshare serve`` and redis-server processes are in :mod:`bench._processes`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from bench import _forkserver
from bench._processes import TlsFiles

__all__ = [
    "SIM_COUNTERS",
    "BenchError",
    "SimProcess",
    "counted",
    "grpc_test_tls",
    "machine_info",
    "percentiles",
    "run_worker",
    "run_workers",
    "sim_counters",
    "simulator",
]

_READY_PREFIX = "driftshare sim ready:"
_WORKER_TIMEOUT_S = 600.0
# Far above what one process opens here: the WebSocket cap is not what these cases measure.
_UNCAPPED_WS = 100_000

SIM_COUNTERS = (
    "http_requests",
    "calls",
    "ws_connections",
    "ws_refused",
    "subscriptions",
    "notifications",
    "rate_limited",
)
"""The simulator counters every engine run reports, as totals since the simulator started."""


@functools.cache
def grpc_test_tls() -> TlsFiles:
    """A certificate for 127.0.0.1, made once per process, that gRPC's default roots trust.

    driftpy's gRPC mode trusts only the default roots; gRPC's documented variable makes them
    this certificate, but gRPC reads it once, when the process makes its first TLS channel:
    every TLS test and bench of one process must share it.
    """
    tls = TlsFiles.make(Path(tempfile.mkdtemp(prefix="driftshare-grpc-tls-")))
    os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = str(tls.cert)
    return tls


class BenchError(RuntimeError):
    """A benchmark could not run: the simulator or a worker failed; the message says how."""


@dataclass(frozen=True)
class SimProcess:
    """A running ``driftshare sim`` subprocess."""

    process: subprocess.Popen[Any] | _forkserver.Forked
    http_url: str
    tick_s: float
    grpc_url: str | None = None
    """Its Yellowstone Geyser endpoint, when started with ``grpc=True``."""

    def stats(self) -> dict[str, Any]:
        """``GET /_sim/stats``: every counter since the simulator started."""
        answer: dict[str, Any] = httpx.get(f"{self.http_url}/_sim/stats", timeout=30).json()
        return answer


@contextmanager
def simulator(
    *,
    markets: int = 30,
    rate_limit: float | None = None,
    tick_s: float = 0.4,
    grpc: bool = False,
) -> Iterator[SimProcess]:
    """Run a simulator in its own process, so it shares neither CPU time nor RSS with the
    measured client, and stop it on exit; ``grpc`` serves Geyser gRPC too."""
    command = ["-m", "driftshare", "sim", "--port", "0"]
    if grpc:
        command += ["--grpc-port", "0"]
    command += ["--markets", str(markets), "--tick-s", str(tick_s)]
    command += ["--max-ws-per-client", str(_UNCAPPED_WS)]
    if rate_limit is not None:
        command += ["--rate-limit", str(rate_limit)]
    # Its log (clients hanging up mid-notification, by design here) goes to a file, read
    # back only to explain a simulator that did not start.
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed with the process below
    proc = _forkserver.popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        if not ready.startswith(_READY_PREFIX):
            proc.wait(timeout=30)
            log.seek(0)
            tail = " ".join(log.read().strip().splitlines()[-3:])
            raise BenchError(f"the simulator did not start: {tail or ready.strip()!r}")
        fields = dict(item.split("=", 1) for item in ready.split()[3:])
        yield SimProcess(proc, fields["http"], tick_s, fields.get("grpc"))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def sim_counters(stats: dict[str, Any]) -> dict[str, int]:
    """The totals of :data:`SIM_COUNTERS` from one ``/_sim/stats`` snapshot."""
    return {
        "http_requests": stats["http_requests"]["total"],
        "calls": stats["calls"]["total"],
        "ws_connections": stats["ws_connections"]["total"],
        "ws_refused": stats["ws_connections"]["refused"],
        "subscriptions": stats["subscriptions"]["total"],
        "notifications": stats["notifications"]["total"],
        "rate_limited": stats["rate_limited"],
    }


def run_worker(sim: SimProcess, params: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh ``python -m bench._worker`` process.

    The result is the worker's JSON, plus ``sim``: what the simulator served meanwhile,
    counted from before the worker started until after it exited, and ``wall_s``.
    """
    return counted(
        sim.stats, lambda: spawn_worker({**params, "url": sim.http_url, "tick_s": sim.tick_s})
    )


def counted(
    stats: Callable[[], dict[str, Any]], run: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """``run()``'s result plus ``wall_s`` and ``sim``: the :data:`SIM_COUNTERS` the
    simulator (its ``/_sim/stats`` from ``stats``) served meanwhile."""
    before = sim_counters(stats())
    started = time.perf_counter()
    result = run()
    result["wall_s"] = time.perf_counter() - started
    after = sim_counters(stats())
    result["sim"] = {key: after[key] - before[key] for key in SIM_COUNTERS}
    return result


def run_workers(
    sim: SimProcess, runs: Sequence[dict[str, Any]], *, one_process: bool
) -> list[dict[str, Any]]:
    """:func:`run_worker` for each of ``runs``; with ``one_process`` (the quick mode) they
    all run in one worker process, one after another, which counts each one's simulator
    traffic itself: its start-up cost is paid once, so per-run memory and start times
    say little there."""
    if not one_process:
        return [run_worker(sim, params) for params in runs]
    batch = [{**params, "url": sim.http_url, "tick_s": sim.tick_s} for params in runs]
    results: list[dict[str, Any]] = spawn_worker({"kind": "batch", "runs": batch})["results"]
    return results


def spawn_worker(params: dict[str, Any], module: str = "bench._worker") -> dict[str, Any]:
    """Run the worker ``module`` with ``params`` and return the JSON object on its last
    stdout line."""
    argv = ["-m", module, json.dumps(params)]
    try:
        done = _forkserver.run(argv, env=_forkserver.checkout_environ(), timeout=_WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BenchError(f"worker {params['kind']} ran over {_WORKER_TIMEOUT_S:.0f}s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise BenchError(f"worker {params['kind']} failed ({done.returncode}): {tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


async def poll(
    check: Callable[[], Awaitable[object]], deadline_s: float, what: str, every_s: float = 0.05
) -> float:
    """Await ``check()`` (polled every ``every_s``) until true; the seconds it took.
    BenchError after ``deadline_s``."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > deadline_s:
            raise BenchError(f"{what}: not within {deadline_s:g}s")
        await asyncio.sleep(every_s)
    return time.monotonic() - start


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max of ``samples`` (nearest rank); zeros for no samples."""
    if not samples:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0, "count": 0}
    ordered = sorted(samples)
    last = len(ordered) - 1
    return {
        "p50": ordered[round(last * 0.50)],
        "p99": ordered[round(last * 0.99)],
        "max": ordered[-1],
        "count": len(ordered),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, load, Python, driftpy and solana versions, and the date."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "os": platform.platform(),
        "python": platform.python_version(),
        "driftpy": metadata.version("driftpy"),
        "solana": metadata.version("solana"),
        "driftshare": metadata.version("driftshare"),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
