"""``python -m bench --quick --only freshness``: the section runs on the simulator and reports.

No timing is asserted here; speed is what the benchmark reports, not what it tests.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench._runner import main


@pytest.mark.timeout(600)
def test_freshness_section_measures_every_part(tmp_path: Path) -> None:
    assert main(["--quick", "--out", str(tmp_path), "--only", "freshness"]) == 0
    results = json.loads((tmp_path / "freshness.json").read_text())
    for tally in results["reads_behind"].values():
        assert tally["reads"] > 0
        assert 0 <= tally["behind"] <= tally["reads"]
    assert results["write_to_read_ms"]
    assert results["applied_to_read_ms"]
    assert results["in_process_write_to_read_ms"]
    assert results["in_process_applied_to_read_ms"]
    sizes = {(row["markets"], row["ticking"]): row for row in results["confirmation"]}
    small, large = sorted({markets for markets, _ in sizes})
    assert set(sizes) == {(m, t) for m in (small, large) for t in (True, False)}
    # More markets, more subscribed accounts: the rows measured what they say.
    assert sizes[(large, True)]["accounts"] > sizes[(small, True)]["accounts"] > 0
    numbers = [
        *results["write_to_read_ms"],
        *results["applied_to_read_ms"],
        *results["in_process_write_to_read_ms"],
        *results["in_process_applied_to_read_ms"],
        *results["hit_us"].values(),
        *(v for floor in results["hit_floor_us"].values() for v in floor.values()),
        *(v for row in results["confirmation"] for v in row.values() if not isinstance(v, bool)),
    ]
    assert all(math.isfinite(n) for n in numbers)
    # Each floor of a hit is timed as often as the hit itself.
    floors = results["hit_floor_us"]
    assert len(floors) == 2
    assert all(floor["count"] == results["hit_us"]["count"] > 0 for floor in floors.values())
    section = (tmp_path / "freshness.md").read_text()
    assert "| simulator apart | notification applied |" in section
    for heading in ("### Reads behind", "### Write to read", "### Confirmation", "### Cache hit"):
        assert heading in section
    assert "## Freshness" in (tmp_path / "BENCHMARKS.md").read_text()
