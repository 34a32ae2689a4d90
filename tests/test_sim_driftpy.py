"""An unmodified driftpy DriftClient against the simulator, in each subscription mode."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from driftpy.account_subscription_config import AccountSubscriptionConfig
from driftpy.accounts.bulk_account_loader import BulkAccountLoader
from driftpy.drift_client import DriftClient
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair

from conftest import eventually
from driftshare.sim import Simulator

MODES = ["websocket", "polling", "cached"]


async def _client(sim: Simulator, mode: str) -> tuple[DriftClient, AsyncClient]:
    connection = AsyncClient(sim.http_url)
    if mode == "polling":
        config = AccountSubscriptionConfig(
            "polling", bulk_account_loader=BulkAccountLoader(connection, "confirmed", 0.05)
        )
    else:
        config = AccountSubscriptionConfig(mode)  # type: ignore[arg-type]
    client = DriftClient(connection, Keypair(), env="mainnet", account_subscription=config)
    await asyncio.wait_for(client.subscribe(), 30)
    return client, connection


@pytest.fixture
async def sim(
    simulator_factory: Callable[..., Awaitable[Simulator]],
) -> Simulator:
    return await simulator_factory(markets=12)


@pytest.mark.parametrize("mode", MODES)
async def test_every_perp_market_reads_as_the_ground_truth(sim: Simulator, mode: str) -> None:
    world = sim.world
    assert world is not None
    client, connection = await _client(sim, mode)
    try:
        indexes = world.perp_indexes()
        assert sorted(m.market_index for m in client.get_perp_market_accounts()) == indexes
        for index in indexes:
            assert client.get_perp_market_account(index) == world.perp_market(index)
            oracle = client.get_oracle_price_data_for_perp_market(index)
            assert oracle is not None
            assert oracle.price == round(world.oracle_price(index) * 1_000_000)
        for index in world.spot_indexes():
            assert client.get_spot_market_account(index) == world.spot_market(index)
    finally:
        await _close(client, connection)


@pytest.mark.parametrize("mode", ["websocket", "polling"])
async def test_a_price_change_reaches_the_client(sim: Simulator, mode: str) -> None:
    """In both modes (how soon is bench/freshness.py's write-to-read figure)."""
    world = sim.world
    assert world is not None
    client, connection = await _client(sim, mode)
    try:
        await _wait_subscribed(sim)
        world.set_oracle_price(0, 199.5)
        await sim.step()
        expected = round(world.oracle_price(0) * 1_000_000)

        def arrived() -> bool:
            data = client.get_oracle_price_data_for_perp_market(0)
            return data is not None and data.price == expected

        await eventually(arrived, what="the new price")
    finally:
        await _close(client, connection)


async def _close(client: DriftClient, connection: AsyncClient) -> None:
    # DriftClient.unsubscribe leaves the user subscribers that subscribe() added running,
    # and driftpy's user subscribers are sync in one mode and async in another.
    subscribers = [u.account_subscriber for u in client.users.values()]
    subscribers += [s.account_subscriber for s in client.user_stats.values()]
    for subscriber in subscribers:
        result = subscriber.unsubscribe()
        if inspect.isawaitable(result):
            await result
    await client.unsubscribe()
    await connection.close()


async def _wait_subscribed(sim: Simulator) -> None:
    def subscribed() -> bool:
        stats: dict[str, Any] = sim.stats()
        return bool(
            stats["subscriptions"]["active"] > 0
            or stats["calls"]["by_method"].get("getMultipleAccounts", 0) >= 2
        )

    await eventually(subscribed, what="subscribed or polling")
