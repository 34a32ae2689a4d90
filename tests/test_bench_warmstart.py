"""``python -m bench --quick --only warmstart``: the section runs and yields its numbers.

No timing is asserted here; speed is what the benchmark reports, not what it tests.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench._runner import main


@pytest.mark.timeout(600)
def test_the_warm_start_section_measures_every_case(tmp_path: Path) -> None:
    assert main(["--quick", "--out", str(tmp_path), "--only", "warmstart"]) == 0
    results = json.loads((tmp_path / "warmstart.json").read_text())
    starts = results["start"]
    assert set(starts) == {
        "rpc up, no snapshot",
        "rpc up, snapshot",
        "rpc down, no snapshot",
        "rpc down, snapshot",
    }
    # With a snapshot every market is answered, stale, with the RPC up or down.
    for case in ("rpc up, snapshot", "rpc down, snapshot"):
        for run in starts[case]:
            assert math.isfinite(run["all_markets_s"])
            assert run["all_stale"] is True
    # Without one and without an RPC, no market is ever answered.
    assert all(run["all_markets_s"] is None for run in starts["rpc down, no snapshot"])
    assert [cost["markets"] for cost in results["costs"]] == [30, 100]
    assert all(cost["bytes"] > 0 and cost["write_ms"] > 0 for cost in results["costs"])
    section = (tmp_path / "warmstart.md").read_text()
    assert "### Snapshot cost" in section
