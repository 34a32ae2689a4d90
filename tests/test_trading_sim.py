"""Trading through the shared client against the simulator's Drift program.

Truth is the chain's: the User accounts in the simulator's store (orders placed, orders
open) and the simulator's own transaction counts, never the sender's word.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from solders.keypair import Keypair

from driftshare import DriftAdapter
from driftshare.manager import DriftClientManager
from driftshare.sim import Simulator
from driftshare.sim.pytest_plugin import SimulatorFactory
from sim_trading import open_user_order_ids, open_wallet, orders_placed, ticking

TX_SETTINGS: dict[str, Any] = {
    "health_interval_s": 3600,
    "tx_blockhash_interval_s": 0.05,
    "tx_status_interval_s": 0.05,
    "tx_resend_s": 0.3,
    "tx_timeout_s": 30.0,
    "tx_read_timeout_s": 5.0,
}


@pytest_asyncio.fixture
async def chain(
    simulator_factory: SimulatorFactory, manager_settings: None
) -> AsyncIterator[Simulator]:
    """A ticking two-market simulator, the manager pointed at it."""
    sim = await simulator_factory(markets=2)
    DriftClientManager.configure(rpc_url=sim.http_url, **TX_SETTINGS)
    async with ticking(sim):
        yield sim
        await DriftClientManager.shutdown()


async def connected(wallet: Keypair, sub: int, *, use_singleton: bool = True) -> DriftAdapter:
    adapter = DriftAdapter(use_singleton=use_singleton)
    assert await adapter.connect(wallet, sub), adapter.verify_drift_account
    return adapter


async def resting_bid(adapter: DriftAdapter) -> float:
    """A bid price far under the market: the order rests instead of filling."""
    mark = await adapter.get_mark_price(0)
    assert mark is not None
    return round(mark / 2, 2)


@pytest.mark.parametrize("use_singleton", [True, False], ids=["shared", "private"])
async def test_writes_land_once_and_the_next_read_reflects_them(
    chain: Simulator, use_singleton: bool
) -> None:
    settings = DriftClientManager.settings()
    wallet = await open_wallet(chain, settings, subs=1, usdc=1_000)
    adapter = await connected(wallet, 0, use_singleton=use_singleton)
    try:
        deposit = await adapter.deposit(500)
        assert deposit["status"] == "confirmed", deposit
        assert deposit["reflected"] is True
        info = await adapter.get_account_info()
        assert info is not None
        assert info["slot"] >= deposit["slot"]
        assert not info["stale"]
        assert info["collateral"] == pytest.approx(500, rel=1e-6)

        bid = await adapter.place_perp_order(
            0, "long", 0.5, "LIMIT", price=await resting_bid(adapter), user_order_id=7
        )
        assert bid["status"] == "confirmed", bid
        assert bid["user_order_id"] == 7
        assert open_user_order_ids(chain, wallet, 0) == [7]
        orders = await adapter.get_open_orders()
        assert [o["user_order_id"] for o in orders] == [7]

        cancel = await adapter.cancel_order(user_order_id=7)
        assert cancel["status"] == "confirmed", cancel
        assert open_user_order_ids(chain, wallet, 0) == []
        assert await adapter.get_open_orders() == []
        assert orders_placed(chain, wallet, 0) == 1
    finally:
        await adapter.disconnect()
