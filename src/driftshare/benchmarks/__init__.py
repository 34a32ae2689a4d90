"""Benchmarks of the shared DriftClient against one DriftClient per engine, on the simulator.

``driftshare bench`` runs :func:`run_suite`; ``bench/*.py`` run single cases.
"""

from driftshare.benchmarks.cases import CASES, BenchConfig
from driftshare.benchmarks.suite import run_case, run_suite

__all__ = ["CASES", "BenchConfig", "run_case", "run_suite"]
