"""``python -m bench --quick --only trading``: both paths trade on the simulator and every
transaction is counted. No timing is asserted; speed is what the benchmark reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench._runner import main


@pytest.mark.timeout(300)
def test_the_quick_trading_section_measures_both_paths(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    assert main(["--quick", "--out", str(out), "--only", "trading"]) == 0
    results = json.loads((out / "trading.json").read_text())["results"]
    # Two engines: one shares the client with another, and each private one has its own.
    assert {(r["mode"], r["engines"]) for r in results} == {("shared", 2), ("private", 2)}
    for r in results:
        assert r["transactions"] > 0
        assert r["failed"] == 0
        # Every transaction was sent, and each one's answer was read back.
        assert r["by_method"]["sendTransaction"] >= r["transactions"]
        assert r["order_to_confirmed"]["count"] == r["transactions"]
    assert "| engines | mode |" in (out / "trading.md").read_text()
