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
    # A quiet process may use no clock tick (10 ms) in the quick run's 2 s: 0% is a figure.
    cpu = [row["cpu_pct"] for row in results["idle"]]
    assert all(math.isfinite(value) and value >= 0 for value in cpu)
    seconds = results["sim_exit_s"] + [v for run in results["leader_exit"] for v in run.values()]
    assert all(math.isfinite(value) and value > 0 for value in seconds)
    report = (tmp_path / "idle.md").read_text()
    assert "`driftshare serve`, no engine, no page open" in report
