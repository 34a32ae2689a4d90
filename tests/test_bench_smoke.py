"""``python -m bench --quick``: every section runs against the simulator and yields numbers.

No timing is asserted here; speed is what the benchmark reports, not what it tests.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench import SECTIONS
from bench._runner import main
from bench.sharing.cases import CASES

_PLOTS = ("rpc_cost.png", "memory.png", "latency.png", "cold_start.png", "provider_limit.png")


def _numbers(value: Any) -> list[float]:
    """Every int and float inside ``value`` (bools excluded)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for item in value.values() for n in _numbers(item)]
    if isinstance(value, list):
        return [n for item in value for n in _numbers(item)]
    return []


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench")
    assert main(["--quick", "--out", str(out), "--only", "sharing"]) == 0
    return out, json.loads((out / "sharing.json").read_text())


@pytest.mark.timeout(600)
def test_every_case_produces_finite_numbers(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    for name in CASES:
        numbers = _numbers(results[name])
        assert numbers, name
        assert all(math.isfinite(n) for n in numbers), name


@pytest.mark.timeout(600)
def test_engine_runs_were_served_by_the_simulator(
    quick_run: tuple[Path, dict[str, Any]],
) -> None:
    _, results = quick_run
    runs = results["rpc_cost"]["runs"] + results["provider_limit"]["runs"]
    assert {(r["mode"], r["path"]) for r in results["rpc_cost"]["runs"]} == {
        (mode, path) for mode in ("websocket", "polling") for path in ("shared", "legacy")
    }
    for run in runs:
        assert run["sim"]["http_requests"] > 0
        assert run["reads"] > 0
        assert run["rss_mib"] > 0
    for row in results["latency"]["rows"]:
        assert row["get_funding_rate"]["count"] > 0
        assert row["get_all_perp_markets"]["count"] > 0
    assert all(row["ok"] for row in results["cold_start"]["rows"])
    assert all(row["served"] == row["callers"] for row in results["stampede"]["rows"])


@pytest.mark.timeout(600)
def test_report_assembles_every_section_and_links_the_plots(
    quick_run: tuple[Path, dict[str, Any]],
) -> None:
    out, results = quick_run
    report = (out / "BENCHMARKS.md").read_text()
    for topic in SECTIONS:
        title = __import__(f"bench.{topic}", fromlist=["TITLE"]).TITLE
        assert f"## {title}" in report
    # The tables hold this run's numbers, not placeholders: a row per measured run.
    runs = results["rpc_cost"]["runs"]
    for run in (r for r in runs if r["path"] == "shared"):
        legacy = next(
            r
            for r in runs
            if (r["mode"], r["path"], r["engines"]) == (run["mode"], "legacy", run["engines"])
        )
        row = f"| {run['engines']} | {run['sim']['http_requests']} | "
        assert row + f"{legacy['sim']['http_requests']} |" in report
    for row in results["stampede"]["rows"]:
        cells = [row["path"], f"{row['callers']:,}", row["clients_started"], f"{row['served']:,}"]
        assert "| " + " | ".join(str(c) for c in cells) + " |" in report
    for run in results["provider_limit"]["runs"]:
        assert f"| {run['path']} | {run['engines']} | {run['connect_failures']} |" in report
    for plot in _PLOTS:
        assert (out / plot).read_bytes().startswith(b"\x89PNG")
        assert f"]({plot})" in report


def test_unknown_section_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--only", "nope"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
