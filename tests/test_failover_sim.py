"""Several RPC endpoints against two simulators: fail over when the first goes down, return."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest

from conftest import eventually
from driftshare._client import lifecycle as _lifecycle
from driftshare._client.endpoints import EndpointSelector
from driftshare._metrics import REGISTRY
from driftshare._web.live import LiveState
from driftshare.config import redact_url
from driftshare.manager import DriftClientManager
from driftshare.sim import Simulator
from driftshare.sim.pytest_plugin import SimulatorFactory

# The slot clocks run (every 0.2 s), as a chain does: silence means trouble.
TICK_S = 0.2
SETTINGS: dict[str, Any] = {
    "retry_backoff": 0.05,
    "retry_backoff_cap": 0.5,
    "rpc_rps": 200.0,
    "rpc_burst": 50,
    "poll_interval_s": TICK_S,
}


pytestmark = pytest.mark.usefixtures("clean_manager")


def _oracle_slot(client: Any) -> int:
    """The slot of the oracle data the engines' client holds for perp market 1."""
    data = client.account_subscriber.get_oracle_price_data_and_slot_for_perp_market(1)
    return 0 if data is None else int(data.slot)


def _newest_slot(*sims: Simulator) -> int:
    return max(sim.store.slot for sim in sims)


def _active_gauge(sim: Simulator) -> float | None:
    return REGISTRY.get_sample_value(
        "drift_rpc_endpoint_active",
        {"network": "mainnet", "endpoint": redact_url(sim.http_url)},
    )


@pytest.fixture(autouse=True)
def _short_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The selector's thresholds (3 s to fail, 10 s to return) are tested on a fake clock in
    test_endpoints.py; here the shortest that still let a slot clock tick through them."""
    short = functools.partial(EndpointSelector, fail_after_s=0.5, recover_after_s=2.0)
    monkeypatch.setattr(_lifecycle, "EndpointSelector", short)


@pytest.mark.parametrize("mode", ["websocket", "polling"])
async def test_fails_over_to_the_second_endpoint_and_returns_to_the_first(
    simulator_factory: SimulatorFactory, mode: str
) -> None:
    first = await simulator_factory(markets=8, tick_s=TICK_S)
    second = await simulator_factory(markets=8, tick_s=TICK_S)
    DriftClientManager.configure(
        rpc_url=f"{first.http_url}, {second.http_url}", subscription=mode, **SETTINGS
    )
    loop = asyncio.get_running_loop()

    async with DriftClientManager.session() as client:
        assert client is not None
        stats = DriftClientManager.stats()
        assert stats["rpc_url"] == redact_url(first.http_url)
        assert stats["rpc_endpoints"] == [redact_url(first.http_url), redact_url(second.http_url)]
        assert _active_gauge(first) == 1
        assert stats["subscription_mode"] == mode

        await first.faults.down(600)
        went_down = loop.time()
        # Past every slot either chain had when the first went down: only the second can
        # deliver such data now.
        newest = _newest_slot(first, second)
        await eventually(lambda: _oracle_slot(client) > newest, within=30, what="fresh data")
        failover_s = loop.time() - went_down
        print(f"\n{mode}: fresh data from the second {failover_s:.2f}s after the first went down")

        stats = DriftClientManager.stats()
        assert stats["rpc_url"] == redact_url(second.http_url)
        assert stats["endpoint_switches"] == 1
        # The session of the endpoint left is closed and let go, not kept per switch.
        shared = DriftClientManager.shared_state()
        assert shared is not None
        gen = shared.gen
        assert gen is not None
        await eventually(lambda: not gen.old_sessions, within=10, what="old session let go")
        # What /api/stats and the dashboard serve.
        shown = LiveState(network="mainnet", simulated=True).snapshot()
        assert shown["rpc_url"] == redact_url(second.http_url)
        assert (shown["manager"]["rpc_endpoints"], shown["manager"]["endpoint_switches"]) == (2, 1)
        assert (_active_gauge(first), _active_gauge(second)) == (0, 1)
        assert stats["references"] == 1
        assert await DriftClientManager.get_client() is client  # the same client object
        await DriftClientManager.release_client()

        await first.faults.clear()
        came_back = loop.time()
        await eventually(
            lambda: DriftClientManager.stats()["rpc_url"] == redact_url(first.http_url),
            within=40,
            what="return to the first",
        )
        print(f"back on the first endpoint {loop.time() - came_back:.2f}s after it came back")
        newest = _newest_slot(first, second)
        await eventually(
            lambda: _oracle_slot(client) > newest, within=10, what="data from the first"
        )

        stats = DriftClientManager.stats()
        assert stats["endpoint_switches"] == 2
        assert (_active_gauge(first), _active_gauge(second)) == (1, 0)
        assert stats["subscription_mode"] == mode
        # The second endpoint is let go: no subscription is left there.
        await eventually(
            lambda: second.stats()["subscriptions"]["active"] == 0,
            within=10,
            what="subscriptions on the second closed",
        )

    assert not DriftClientManager.is_initialized()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("driftshare-")]
