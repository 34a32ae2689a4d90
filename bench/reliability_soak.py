"""The soak: four engines through random faults for a while, with RSS, descriptors and tasks
sampled every second and plotted (``make reliability SOAK=600``)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import statistics
import time
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from bench.reliability_probe import Engine, LogicalCalls, Resources, Tally, leftovers
from bench.reliability_suite import (
    ENGINES,
    FAULTS,
    ROOT,
    Context,
    Fault,
    SuiteConfig,
    machine,
    settings_shown,
    suite_env,
    threshold_s,
)
from bench.reliability_truth import ChainTruth
from driftshare.manager import DriftClientManager
from driftshare.sim import Simulator

__all__ = ["PLOT", "render_soak", "run_soak"]

PLOT = ROOT / "docs" / "reliability-soak.png"
SAMPLE_S = 1.0
TRUTH_KEPT_S = 30.0
"""Values the chain replaced longer ago than this are forgotten (then count as unknown, so
as stale): the ground truth's memory stops growing well within the warm-up."""
_SOAK_FAULTS = [
    f
    for f in FAULTS.values()
    if not f.at_start and f.sims == 1 and f.name != "release of everything"
]


def _warm_up_s(seconds: float) -> float:
    return max(60.0, seconds * 0.1) if seconds >= 120 else seconds * 0.25


async def _sample(samples: list[dict[str, float]], ports: set[int], t0: float) -> None:
    process = psutil.Process()
    while True:
        resources = Resources.take(ports)
        samples.append(
            {
                "t": time.monotonic() - t0,
                "rss_mib": process.memory_info().rss / 2**20,
                "fds": resources.fds,
                "tasks": len(resources.tasks),
                "sockets": resources.sockets,
            }
        )
        await asyncio.sleep(SAMPLE_S)


async def _random_faults(
    ctx: Context, deadline: float, t0: float, rng: random.Random, log: list[dict[str, Any]]
) -> None:
    base = ctx.config
    while time.monotonic() < deadline - 1:
        await asyncio.sleep(min(rng.uniform(2.0, 10.0), max(0.0, deadline - time.monotonic())))
        if time.monotonic() >= deadline - 1:
            return
        fault: Fault = rng.choice(_SOAK_FAULTS)
        length = min(rng.uniform(1.0, base.fault_s), max(0.5, deadline - time.monotonic() - 1))
        ctx.config = dataclasses.replace(base, fault_s=length)
        await fault.body(ctx)
        log.append({"fault": fault.name, "start": ctx.started_at - t0, "end": ctx.ended_at - t0})


async def run_soak(seconds: float, config: SuiteConfig, seed: int = 1) -> dict[str, Any]:
    """Random faults for ``seconds`` in websocket mode; samples, totals and leftovers."""
    sim = Simulator(
        markets=config.markets, tick_s=config.tick_s, funding_period_s=config.funding_period_s
    )
    await sim.start()
    truth = ChainTruth(sim)
    ports = {sim._server.port, sim._server.port + 1}
    calls = LogicalCalls()
    calls.ports = ports
    samples: list[dict[str, float]] = []
    faults: list[dict[str, Any]] = []
    try:
        with suite_env(**config.env(sim.http_url, "websocket")), calls.counting():
            settings = DriftClientManager.configure()
            baseline = Resources.take(ports)
            tally = Tally(threshold_s(settings))
            engines = [Engine(n, [truth], tally) for n in range(ENGINES)]
            stop = asyncio.Event()
            await asyncio.gather(*(e.connect() for e in engines))
            loops = [asyncio.create_task(e.run(stop)) for e in engines]
            t0 = time.monotonic()
            sampler = asyncio.create_task(_sample(samples, ports, t0))
            pruner = asyncio.create_task(_prune(truth))
            ctx = Context([sim], config)
            await _random_faults(ctx, t0 + seconds, t0, random.Random(seed), faults)
            sampler.cancel()
            pruner.cancel()
            stop.set()
            await asyncio.gather(*(e.release() for e in engines))
            await asyncio.gather(*loops)
            left = await leftovers(baseline, ports, float(getattr(settings, "idle_close_s", 0)) + 2)
            upstream = sim.stats()["http_requests"]["total"]
    finally:
        await DriftClientManager.shutdown()
        truth.close()
        await sim.stop()
    _plot(samples, faults, seconds)
    return {
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": seconds,
        "warm_up_s": _warm_up_s(seconds),
        "truth_kept_s": TRUTH_KEPT_S,
        "machine": machine(),
        "settings": settings_shown(config),
        "samples": samples,
        "faults": faults,
        "reads": tally.reads,
        "exceptions": dict(tally.exceptions),
        "none": tally.none,
        "flagged": tally.flagged,
        "unflagged": tally.unflagged,
        "upstream": upstream,
        "logical": calls.count,
        "left": dataclasses.asdict(left),
    }


async def _prune(truth: ChainTruth) -> None:
    while True:
        await asyncio.sleep(5)
        truth.forget_before(time.monotonic() - TRUTH_KEPT_S)


def _plot(samples: list[dict[str, float]], faults: list[dict[str, Any]], seconds: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in samples]
    figure, axes = plt.subplots(3, 1, sharex=True, figsize=(10, 7))
    for axis, key, label in zip(
        axes,
        ("rss_mib", "fds", "tasks"),
        ("RSS (MiB)", "open descriptors", "asyncio tasks"),
        strict=True,
    ):
        axis.plot(t, [s[key] for s in samples], linewidth=1)
        axis.set_ylabel(label)
        for fault in faults:
            axis.axvspan(fault["start"], fault["end"], color="tab:red", alpha=0.12, linewidth=0)
        axis.axvline(_warm_up_s(seconds), color="grey", linestyle="--", linewidth=0.8)
    axes[-1].set_xlabel("seconds (red: a fault is on; dashed: end of warm-up)")
    figure.suptitle(f"Reliability soak: {ENGINES} engines, {len(faults)} random faults")
    figure.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(PLOT, dpi=90)
    plt.close(figure)


def _after(samples: list[dict[str, Any]], start: float) -> list[dict[str, Any]]:
    return [s for s in samples if s["t"] >= start]


def render_soak(soak: dict[str, Any]) -> list[str]:
    """The soak's section of RELIABILITY.md."""
    samples = _after(soak["samples"], soak["warm_up_s"])
    if len(samples) < 4:
        return ["## Soak", "", "Too short to measure after warm-up.", ""]
    tenth = max(1, len(samples) // 10)
    rss_start = statistics.fmean(s["rss_mib"] for s in samples[:tenth])
    rss_end = statistics.fmean(s["rss_mib"] for s in samples[-tenth:])
    growth = (rss_end - rss_start) / rss_start * 100
    fds = [s["fds"] for s in samples]
    tasks = [s["tasks"] for s in samples]
    left = soak["left"]
    names = sorted({f["fault"] for f in soak["faults"]})
    plot = Path(PLOT).relative_to(ROOT / "docs")
    amplification = soak["upstream"] / soak["logical"] if soak["logical"] else None
    return [
        "## Soak",
        "",
        f"`make reliability SOAK={soak['seconds']:.0f}` on {soak['generated']}: {ENGINES} "
        f"engines in websocket mode through {len(soak['faults'])} random faults "
        f"({', '.join(names)}), each 1 to 6 s, 2 to 10 s apart. The process holds the "
        "simulator and the suite's ground truth (the last "
        f"{soak['truth_kept_s']:.0f} s of account values) too, so RSS includes them. Warm-up: "
        f"the first {soak['warm_up_s']:.0f} s.",
        "",
        f"![RSS, descriptors and tasks over the soak]({plot})",
        "",
        f"- RSS after warm-up: {rss_start:.1f} MiB (mean of the first tenth) to {rss_end:.1f} "
        f"MiB (last tenth): {growth:+.1f}%.",
        f"- Open descriptors after warm-up: {min(fds)} to {max(fds)}; first {fds[0]}, last "
        f"{fds[-1]}.",
        f"- Tasks after warm-up: {min(tasks)} to {max(tasks)}; first {tasks[0]}, last {tasks[-1]}.",
        f"- Reads {soak['reads']}: exceptions {sum(soak['exceptions'].values())}, None "
        f"{soak['none']}, flagged stale {soak['flagged']}, unflagged stale {soak['unflagged']}.",
        f"- Upstream {soak['upstream']} / logical {soak['logical']} requests "
        f"(amplification {'—' if amplification is None else f'{amplification:.2f}'}).",
        f"- Left after release: {len(left['tasks'])} tasks, {left['sockets']} sockets, "
        f"{left['fds']} descriptors; shared client initialized: {left['initialized']}.",
        "",
    ]
