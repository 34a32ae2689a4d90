"""The pytest plugin installed with driftshare: the simulator fixtures, when they can work.

They need pytest-asyncio and the ``sim`` extra; without either this plugin offers nothing
and pytest runs as if driftshare were not installed.
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("pytest_asyncio") is not None:
    try:
        from driftshare.sim.pytest_plugin import simulator, simulator_factory
    except ImportError:  # the sim extra is not installed
        pass
    else:
        __all__ = ["simulator", "simulator_factory"]
