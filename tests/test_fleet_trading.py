"""A follower engine trading on its own wallet through a real Redis and the simulator.

Two shared clients in this process, on one simulator with API keys ``a`` (the leader) and
``b`` (the follower), so the simulator's per-client counts say who asked what upstream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from driftpy.addresses import get_user_account_public_key

from bench._processes import RedisServer
from conftest import eventually
from driftshare import DriftAdapter
from driftshare._client.lifecycle import SharedClient
from driftshare.manager import DriftClientManager
from driftshare.sim import Simulator
from driftshare.sim._codec import DRIFT_PROGRAM_ID
from driftshare.sim.pytest_plugin import SimulatorFactory
from driftshare.sim.wallets import open_wallet
from sim_trading import open_user_order_ids, ticking
from test_fleet_processes import key_client

SETTINGS: dict[str, Any] = {
    "health_interval_s": 3600,
    "share_lease_s": 2.0,  # two clients start in this loop: a short lease lapses meanwhile
    "share_fallback_s": 4.0,
    "stale_after_s": 2.0,
    # The leader refreshes its blockhash every second: a follower waits two before its own.
    "tx_blockhash_interval_s": 1.0,
    "tx_status_interval_s": 0.05,
    "tx_resend_s": 0.3,
    "tx_read_timeout_s": 5.0,
}
BLOCKHASH_AND_FEE = ("getLatestBlockhash", "getBlockHeight", "getRecentPrioritizationFees")


@pytest_asyncio.fixture
async def chain(
    simulator_factory: SimulatorFactory, redis_server: RedisServer, manager_settings: None
) -> AsyncIterator[Simulator]:
    """A ticking one-market simulator; the manager in a fleet on ``redis_server``."""
    sim = await simulator_factory(markets=1)
    DriftClientManager.configure(share_url=redis_server.url, **SETTINGS)
    async with ticking(sim):
        yield sim
        await DriftClientManager.shutdown()


def url(sim: Simulator, name: str) -> str:
    return f"{sim.http_url}/?api-key={name}"


def shared(sim: Simulator, name: str) -> SharedClient:
    found = DriftClientManager._find("mainnet", url(sim, name))
    assert found is not None
    return found


def calls(sim: Simulator, name: str) -> dict[str, int]:
    """The JSON-RPC calls the simulator has answered for API key ``name``, by method."""
    by_client: dict[str, dict[str, int]] = sim.stats()["calls"]["by_client"]
    return dict(by_client.get(key_client(name), {}))


async def test_a_follower_trades_on_the_leaders_accounts_blockhash_and_fee(
    chain: Simulator,
) -> None:
    assert await DriftClientManager.get_client("mainnet", rpc_url=url(chain, "a")) is not None
    wallet = await open_wallet(chain.http_url, DriftClientManager.settings(), subs=1, usdc=1_000)
    adapter = DriftAdapter(rpc_url=url(chain, "b"))
    try:
        assert await adapter.connect(wallet, 0)
        follower, leader = shared(chain, "b"), shared(chain, "a")
        assert follower.snapshot()["fleet"]["role"] == "follower"
        # Its own read found the account; until the leader's data for it arrives, stale.
        first = await adapter.get_account_info()
        assert first is not None
        assert first["stale"]

        async def ready() -> bool:
            info = await adapter.get_account_info()
            fresh = info is not None and not info["stale"]
            return fresh and follower.tx.keeper.latest is not None

        await eventually(ready, "the leader's account data and blockhash at the follower")
        assert leader.snapshot()["fleet"]["shared_sub_accounts"] == 1
        before = calls(chain, "b")

        deposit = await adapter.deposit(500)
        assert deposit["status"] == "confirmed", deposit
        assert deposit["reflected"] is True  # the leader's record at its slot, through Redis
        info = await adapter.get_account_info()
        assert info is not None
        assert not info["stale"]
        assert info["slot"] >= deposit["slot"]
        assert 499 < info["collateral"] < 501  # 500 plus the little interest accrued since
        mark = await adapter.get_mark_price(0)
        assert mark is not None
        bid = await adapter.place_perp_order(0, "long", 0.5, "LIMIT", price=mark / 2)
        assert bid["status"] == "confirmed", bid
        assert bid["reflected"] is True
        assert [o["user_order_id"] for o in await adapter.get_open_orders()] == (
            open_user_order_ids(chain, wallet, 0)
        )

        after = calls(chain, "b")
        assert after.get("sendTransaction", 0) > before.get("sendTransaction", 0)
        assert calls(chain, "a").get("sendTransaction", 0) == 0  # nobody signs for another
        for method in BLOCKHASH_AND_FEE:
            assert after.get(method, 0) == before.get(method, 0), method

        # The leader stops publishing: the follower's account goes stale, and once the
        # leader's blockhash is old the follower fetches its own.
        fleet = leader.gen.fleet if leader.gen is not None else None
        assert fleet is not None
        await fleet._publisher.stop()
        assert fleet._tx_sharer is not None
        await fleet._tx_sharer.stop()

        async def stale() -> bool:
            info = await adapter.get_account_info()
            return info is not None and info["stale"]

        await eventually(stale, "the follower's account stale")
        keeper = follower.tx.keeper

        def old() -> bool:
            age = keeper.age_s()
            return age is not None and age > 2 * keeper.interval_s

        await eventually(old, "the leader's blockhash two intervals old")
        cancel = await adapter.cancel_all_orders()
        assert cancel["status"] == "confirmed", cancel
        assert calls(chain, "b").get("getLatestBlockhash", 0) > after.get("getLatestBlockhash", 0)

        # The engine disconnects: its member lists its sub-account no more, and the leader
        # unsubscribes it.
        user = str(get_user_account_public_key(DRIFT_PROGRAM_ID, wallet.pubkey(), 0))
        assert user in leader.accounts.watched()
        await adapter.disconnect()
        await eventually(lambda: user not in leader.accounts.watched(), "unsubscribed")
        store = fleet._store

        async def dropped() -> bool:
            return not await store.redis.hexists(store._records, user)

        await eventually(dropped, "its record dropped from Redis")
    finally:
        await adapter.disconnect()
