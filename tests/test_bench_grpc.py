"""``python -m bench --quick --only grpc``: the section runs on the simulator and reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench._runner import main


@pytest.mark.timeout(300)
def test_grpc_section_measures_every_mode_and_both_clients(tmp_path: Path) -> None:
    assert main(["--quick", "--out", str(tmp_path), "--only", "grpc"]) == 0
    results = json.loads((tmp_path / "grpc.json").read_text())
    assert set(results["write_to_read_ms"]) == {"grpc", "websocket", "polling"}
    assert all(len(v) == 5 and min(v) > 0 for v in results["write_to_read_ms"].values())
    for counts in results["connections_and_streams"].values():
        assert counts["driftshare"]["connections"] == 1
        assert counts["driftshare"]["streams"] == 1
        # driftpy: one stream per account, its two market maps' program streams besides.
        assert counts["driftpy"]["streams"] > counts["driftpy"]["accounts"]
    assert "| grpc |" in (tmp_path / "grpc.md").read_text()
