"""``driftshare bench``: shared vs one DriftClient per engine, measured on the simulator.

The benchmark logic lives in :mod:`driftshare.benchmarks` so the installed command has it;
the ``bench/`` scripts of the repository call the same code.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

__all__ = ["DEFAULT_OUT", "DEFAULT_REPORT", "add_parser", "run", "script_main"]

DEFAULT_OUT = Path("docs/bench")
DEFAULT_REPORT = Path("BENCHMARKS.md")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``bench`` subcommand."""
    p = sub.add_parser("bench", help="benchmark the shared client against one client per engine")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke-test sizes (under a minute); without --out, writes to a new temp dir",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"folder for results.json and the plots (default {DEFAULT_OUT})",
    )
    p.add_argument(
        "--report",
        type=Path,
        default=None,
        help=f"markdown report (default {DEFAULT_REPORT} with the default --out, else OUT/"
        f"{DEFAULT_REPORT})",
    )
    p.add_argument(
        "--case",
        action="append",
        default=None,
        metavar="NAME",
        help="run only this case (repeatable; writes results.json only): rpc_cost, latency, "
        "cold_start, stampede, provider_limit",
    )
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(ns: argparse.Namespace) -> int:
    return run(quick=ns.quick, out=ns.out, report=ns.report, cases=ns.case)


def run(
    *,
    quick: bool = False,
    out: Path | None = None,
    report: Path | None = None,
    cases: list[str] | None = None,
) -> int:
    """Run the benchmarks and write their files; the exit status of ``driftshare bench``."""
    from driftshare.benchmarks import CASES, run_suite
    from driftshare.benchmarks._harness import BenchError

    unknown = sorted(set(cases or ()) - set(CASES))
    if unknown:
        print(
            f"driftshare bench: unknown case {', '.join(unknown)}; known: {', '.join(CASES)}",
            file=sys.stderr,
        )
        return 2
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="driftshare-bench-")) if quick else DEFAULT_OUT
        if report is None and not quick:
            report = DEFAULT_REPORT
    if report is None:
        report = out / DEFAULT_REPORT.name
    # One line per request would bury the progress lines.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    command = "driftshare bench" + (" --quick" if quick else "")
    try:
        run_suite(quick=quick, out=out, report=report, command=command, cases=cases or tuple(CASES))
    except BenchError as exc:
        print(f"driftshare bench: {exc}", file=sys.stderr)
        return 1
    print(f"driftshare bench: results in {out}" + ("" if cases else f", report {report}"))
    return 0


def script_main(case: str | None = None, argv: list[str] | None = None) -> int:
    """Entry of the ``bench/*.py`` scripts: ``case`` alone, or the whole suite for None."""
    p = argparse.ArgumentParser(
        description="the whole benchmark suite" if case is None else f"benchmark case {case}"
    )
    p.add_argument("--quick", action="store_true", help="smoke-test sizes")
    p.add_argument("--out", type=Path, default=None, help="folder for results.json and plots")
    ns = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    return run(quick=ns.quick, out=ns.out, cases=None if case is None else [case])
