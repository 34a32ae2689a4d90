"""driftshare's benchmarks, measured on the simulator: ``python -m bench`` (``make bench``).

They live here, beside the library and outside the wheel: the installed package ships no
benchmarks. ``python -m bench --quick`` is the smoke version (small sizes, written to a
temporary folder unless ``--out`` says otherwise); ``--only TOPIC`` re-measures one section.

Sections
========
BENCHMARKS.md is a header (the machine) followed by one section per entry of
:data:`SECTIONS`, in that order. A section is a module or package ``bench/<topic>`` with:

``TITLE: str``
    Its heading; the runner writes it as ``## TITLE``.
``def run(ctx: Context) -> str``
    Measures (small sizes when ``ctx.quick``), writes its raw numbers with
    ``ctx.write_json`` and its plots into ``ctx.out`` (``docs/bench/`` for ``make bench``),
    and returns its markdown: headings at level 3 or deeper, plots linked with
    ``ctx.link(path)``, every figure measured in this run. It raises :class:`BenchError`
    when it cannot measure or report (never ``assert``, which ``-O`` removes).

The runner stores each section's markdown as ``ctx.out/<topic>.md`` and assembles
BENCHMARKS.md from the stored parts of every registered section, so re-measuring one
section keeps the others. To add a section: write ``bench/<topic>.py``, append ``topic``
to :data:`SECTIONS`, and give it a quick smoke test in ``tests/``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._harness import BenchError

__all__ = ["SECTIONS", "BenchError", "Context"]

SECTIONS: tuple[str, ...] = (
    "sharing",
    "freshness",
    "grpc",
    "warmstart",
    "fleet",
    "trading",
    "idle",
)
"""The sections of BENCHMARKS.md, in order; each names the module ``bench/<topic>``."""


@dataclass(frozen=True)
class Context:
    """What a section's ``run`` gets: the size to run at and where its files go."""

    topic: str
    quick: bool
    out: Path
    """Folder for the section's plots and raw numbers (``docs/bench/`` for ``make bench``)."""
    report: Path
    """The markdown file being assembled; links are relative to its folder."""

    def link(self, path: Path) -> str:
        """The markdown link target of ``path`` (a file the section wrote) from the report."""
        return Path(os.path.relpath(path, self.report.parent)).as_posix()

    def write_json(self, results: dict[str, Any]) -> Path:
        """Write the section's raw numbers to ``out/<topic>.json``."""
        path = self.out / f"{self.topic}.json"
        path.write_text(json.dumps(results, indent=2) + "\n")
        return path
