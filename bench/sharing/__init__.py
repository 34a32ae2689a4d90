"""Shared client vs one DriftClient per engine: RPC cost, memory, read latency, cold start,
stampede and a rate-limited provider, each measured for both paths."""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from typing import Any

from bench import Context
from bench._harness import machine_info
from bench.sharing.cases import CASES, BenchConfig, Simulators
from bench.sharing.plots import plot_all
from bench.sharing.report import markdown

__all__ = ["TITLE", "run"]

TITLE = "Shared client vs one client per engine"

log = logging.getLogger(__name__)


def run(ctx: Context) -> str:
    """Run every case, write ``sharing.json`` and the plots, and return the markdown."""
    config = BenchConfig.quick_preset() if ctx.quick else BenchConfig.full()
    results: dict[str, Any] = {"machine": machine_info(), "config": config.as_dict()}
    started = time.perf_counter()
    with ExitStack() as stack:
        sims = Simulators(stack, reuse=config.quick)
        for name, case in CASES.items():
            log.info("benchmark case %s…", name)
            case_started = time.perf_counter()
            results[name] = case(config, sims)
            log.info("benchmark case %s done in %.0f s", name, time.perf_counter() - case_started)
    results["wall_s"] = time.perf_counter() - started
    ctx.write_json(results)
    plots = plot_all(results, ctx.out)
    return markdown(results, {path.name: ctx.link(path) for path in plots})
