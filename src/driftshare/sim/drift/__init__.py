"""Drift's program on the simulated chain: users, collateral, perp orders, fills and PnL."""

from driftshare.sim.drift.program import DriftProgram

__all__ = ["DriftProgram"]
