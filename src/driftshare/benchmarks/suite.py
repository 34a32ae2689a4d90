"""Run the cases, then write ``results.json``, the plots and the markdown report."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from driftshare.benchmarks._harness import machine_info
from driftshare.benchmarks.cases import CASES, BenchConfig
from driftshare.benchmarks.report import plot_all, write_report

__all__ = ["run_case", "run_suite"]

log = logging.getLogger(__name__)


def run_case(name: str, config: BenchConfig) -> dict[str, Any]:
    """One case by name (see :data:`~driftshare.benchmarks.cases.CASES`)."""
    if name not in CASES:
        raise ValueError(f"unknown benchmark case {name!r}; known: {', '.join(CASES)}")
    return CASES[name](config)


def run_suite(
    *, quick: bool, out: Path, report: Path, command: str, cases: Sequence[str] = tuple(CASES)
) -> dict[str, Any]:
    """Run ``cases`` and write ``out/results.json``, ``out/*.png`` and ``report``.

    The report needs every case, so with a subset only the JSON is written.
    """
    for name in cases:
        if name not in CASES:
            raise ValueError(f"unknown benchmark case {name!r}; known: {', '.join(CASES)}")
    config = BenchConfig.quick_preset() if quick else BenchConfig.full()
    results: dict[str, Any] = {"machine": machine_info(), "config": config.as_dict()}
    started = time.perf_counter()
    for name in cases:
        log.info("benchmark case %s…", name)
        case_started = time.perf_counter()
        results[name] = run_case(name, config)
        log.info("benchmark case %s done in %.0f s", name, time.perf_counter() - case_started)
    results["wall_s"] = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if set(CASES) <= set(cases):
        plots = plot_all(results, out)
        write_report(results, report, plots, command)
    return results
