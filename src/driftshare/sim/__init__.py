"""A local Solana RPC (HTTP + WebSocket) serving a live Drift program state."""

from driftshare.sim.simulator import SimConfig, SimConfigError, Simulator, run_simulator

__all__ = ["SimConfig", "SimConfigError", "Simulator", "run_simulator"]
