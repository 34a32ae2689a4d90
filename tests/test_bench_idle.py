"""``python -m bench --quick --only idle``: idle CPU of each process and exit times, measured.

No figure is asserted beyond being measured: speed is what the benchmark reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench._runner import main


@pytest.mark.timeout(600)
def test_idle_and_exit_figures_are_measured(tmp_path: Path) -> None:
    assert main(["--quick", "--out", str(tmp_path), "--only", "idle"]) == 0
    results = json.loads((tmp_path / "idle.json").read_text())
    assert [row["client"] for row in results["idle"]] == ["driftpy", "shared", "serve"]
    figures = [row["cpu_pct"] for row in results["idle"]] + results["sim_exit_s"]
    figures += [value for run in results["leader_exit"] for value in run.values()]
    assert all(math.isfinite(value) and value > 0 for value in figures)
    report = (tmp_path / "idle.md").read_text()
    assert "`driftshare serve`, no engine, no page open" in report
