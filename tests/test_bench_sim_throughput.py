"""Smoke test of bench/sim_throughput.py at a tiny size: both loads run and land answers."""

from __future__ import annotations

import json
from pathlib import Path

from bench import sim_throughput


def test_sim_throughput_measures_reads_and_transactions(tmp_path: Path) -> None:
    out = tmp_path / "sim.json"
    argv = ["--markets", "2", "--keys", "2", "--seconds", "0.3", "--warmup", "0.2"]
    argv += ["--tx-seconds", "0.5", "--concurrency", "2", "--out", str(out)]
    assert sim_throughput.main(argv) == 0
    results = json.loads(out.read_text())
    assert results["requests"] > 0
    assert results["errors"] == 0
    assert results["tx_landed"] > 0
    assert results["tx_errors"] == 0
