"""Pytest fixtures starting a :class:`~driftshare.sim.Simulator` per test.

``simulator`` is a started ``Simulator(markets=8)`` whose slot clock is too slow to tick
during a test: advance it with ``await simulator.step()``. ``simulator_factory(**options)``
starts one with other options; every simulator is stopped after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio

from driftshare.sim.simulator import Simulator

__all__ = ["SimulatorFactory", "simulator", "simulator_factory"]

SimulatorFactory = Callable[..., Awaitable[Simulator]]
_TEST_DEFAULTS: dict[str, Any] = {"markets": 8, "tick_s": 3600.0}


@pytest_asyncio.fixture
async def simulator_factory() -> AsyncIterator[SimulatorFactory]:
    """``await simulator_factory(**options)``: a started simulator, stopped after the test."""
    started: list[Simulator] = []

    async def make(**options: Any) -> Simulator:
        sim = Simulator(**{**_TEST_DEFAULTS, **options})
        await sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in reversed(started):
        await sim.stop()


@pytest_asyncio.fixture
async def simulator(simulator_factory: SimulatorFactory) -> Simulator:
    """A started ``Simulator(markets=8)`` that only advances on ``await simulator.step()``."""
    return await simulator_factory()
