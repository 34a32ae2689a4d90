"""DriftAdapter in both modes against the simulator's ground truth."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from solders.keypair import Keypair

from conftest import GroundTruth, WaitUntil
from driftshare import DriftAdapter
from driftshare.manager import DriftClientManager
from driftshare.models import next_funding_ts
from driftshare.sim import Simulator
from sim_users import put_user

MODES = pytest.mark.parametrize("use_singleton", [True, False], ids=["singleton", "private"])


def _without_age(row: dict[str, Any]) -> dict[str, Any]:
    # How long the value sat in the cache and how recently its accounts were confirmed are
    # the fields truth cannot know (test_freshness_sim checks them); in both modes they must
    # still name a confirmed slot and a finite age.
    assert row["slot"] > 0
    assert 0.0 <= row["data_age_s"] < math.inf
    return {**row, "age_s": 0.0, "slot": 0, "data_age_s": 0.0}


def _references() -> int:
    refs: int = DriftClientManager.stats()["references"]
    return refs


@pytest_asyncio.fixture(params=[True, False], ids=["singleton", "private"])
async def adapter(
    request: pytest.FixtureRequest, sim_manager: Simulator, frozen_now: float
) -> AsyncIterator[DriftAdapter]:
    drift = DriftAdapter(use_singleton=request.param, clock=lambda: frozen_now)
    yield drift
    await drift.disconnect()


async def test_connect_and_disconnect_are_idempotent(
    adapter: DriftAdapter, truth: GroundTruth, wait_until: WaitUntil
) -> None:
    assert not adapter.is_connected
    assert await adapter.connect()
    assert await adapter.connect()
    assert adapter.is_connected
    await wait_until(lambda: truth.active_subscriptions() == truth.subscriptions_per_client())
    if adapter.use_singleton:
        assert _references() == 1

    await adapter.disconnect()
    await adapter.disconnect()

    assert not adapter.is_connected
    if adapter.use_singleton:
        assert _references() == 0
    await wait_until(lambda: truth.active_subscriptions() == 0)


async def test_singleton_adapters_share_one_client(
    sim_manager: Simulator, truth: GroundTruth, wait_until: WaitUntil
) -> None:
    first, second = DriftAdapter(), DriftAdapter()
    assert await first.connect()
    assert await second.connect()
    assert _references() == 2
    assert DriftClientManager.stats()["initializations"] == 1
    await wait_until(lambda: truth.active_subscriptions() == truth.subscriptions_per_client())

    await first.disconnect()
    await first.disconnect()
    assert _references() == 1
    assert second.is_connected
    await second.disconnect()
    assert _references() == 0


async def test_private_adapters_each_subscribe(
    sim_manager: Simulator, truth: GroundTruth, wait_until: WaitUntil
) -> None:
    first, second = DriftAdapter(use_singleton=False), DriftAdapter(use_singleton=False)
    try:
        assert await first.connect()
        assert await second.connect()
        expected = 2 * truth.subscriptions_per_client()
        await wait_until(lambda: truth.active_subscriptions() == expected)
        assert _references() == 0
    finally:
        await first.disconnect()
        await second.disconnect()


async def test_get_funding_rate_equals_ground_truth(
    adapter: DriftAdapter, truth: GroundTruth
) -> None:
    assert await adapter.connect()
    for index in truth.indexes():
        funding = await adapter.get_funding_rate(index)
        assert funding is not None
        assert _without_age(funding) == truth.funding(index).to_dict()
    sol = await adapter.get_funding_rate("sol")
    assert sol is not None
    assert {"rate_hourly", "rate_8h", "rate_annual", "is_positive", "mark_price"} <= sol.keys()
    assert sol["market"] == "SOL-PERP"


async def test_get_all_perp_markets_equals_ground_truth(
    adapter: DriftAdapter, truth: GroundTruth
) -> None:
    assert await adapter.connect()
    markets = await adapter.get_all_perp_markets()
    assert [_without_age(m) for m in markets] == [
        truth.market(i).to_dict() for i in truth.indexes()
    ]


async def test_mark_price_and_perp_market_symbols(
    adapter: DriftAdapter, truth: GroundTruth
) -> None:
    assert await adapter.get_perp_markets() == [truth.market(i).symbol for i in truth.indexes()]
    for index in truth.indexes():
        assert await adapter.get_mark_price(index) == truth.market(index).mark_price
    assert await adapter.get_mark_price("sol") == truth.market(0).mark_price
    assert await adapter.get_mark_price("NOPE-PERP") is None


async def test_get_time_to_funding(
    adapter: DriftAdapter, truth: GroundTruth, frozen_now: float
) -> None:
    assert await adapter.connect()
    for index in truth.indexes():
        market = truth.sim.world.perp_market(index)  # type: ignore[union-attr]
        expected = max(0, next_funding_ts(market) - int(frozen_now))
        assert await adapter.get_time_to_funding(index) == expected
    assert await adapter.get_time_to_funding() == await adapter.get_time_to_funding(0)
    due = next_funding_ts(truth.sim.world.perp_market(0))  # type: ignore[union-attr]
    adapter.clock = lambda: due - 17.5
    assert await adapter.get_time_to_funding(0) == 18
    adapter.clock = lambda: due + 5
    assert await adapter.get_time_to_funding(0) == 0


async def test_time_to_funding_of_unknown_market_counts_to_the_hour(
    adapter: DriftAdapter, frozen_now: float
) -> None:
    assert await adapter.get_time_to_funding("NOPE-PERP") == 3600 - int(frozen_now) % 3600


async def test_reads_before_connect_answer(adapter: DriftAdapter, truth: GroundTruth) -> None:
    funding = await adapter.get_funding_rate("SOL-PERP")
    assert funding is not None
    assert _without_age(funding) == truth.funding(0).to_dict()
    if adapter.use_singleton:
        # Reads take no reference: the manager's read lease keeps the client up meanwhile.
        assert not adapter.is_connected
        assert _references() == 0
        assert DriftClientManager.stats()["read_lease"]
    else:
        assert adapter.is_connected  # the private client is connected lazily and kept


@pytest.mark.parametrize("market", ["NOPE-PERP", 999, "", None])
async def test_unknown_market_is_none(adapter: DriftAdapter, market: Any) -> None:
    assert await adapter.get_funding_rate(market) is None


async def test_both_modes_answer_the_same(sim_manager: Simulator, frozen_now: float) -> None:
    shared = DriftAdapter(clock=lambda: frozen_now)
    private = DriftAdapter(use_singleton=False, clock=lambda: frozen_now)
    try:
        assert await shared.connect()
        assert await private.connect()
        shared_rows = [_without_age(m) for m in await shared.get_all_perp_markets()]
        private_rows = [_without_age(m) for m in await private.get_all_perp_markets()]
        assert shared_rows == private_rows
        for row in shared_rows:
            index = row["market_index"]
            a, b = await shared.get_funding_rate(index), await private.get_funding_rate(index)
            assert a is not None
            assert b is not None
            assert _without_age(a) == _without_age(b)
            assert await shared.get_time_to_funding(index) == await private.get_time_to_funding(
                index
            )
    finally:
        await shared.disconnect()
        await private.disconnect()


@MODES
async def test_unreachable_rpc_never_raises(
    manager_settings: None, use_singleton: bool, closed_port_url: str
) -> None:
    DriftClientManager.configure(max_retries=0, init_timeout_s=5)
    drift = DriftAdapter(use_singleton=use_singleton, rpc_url=closed_port_url)

    def references() -> int:
        refs: int = DriftClientManager.stats("mainnet", rpc_url=drift.rpc_url)["references"]
        return refs

    try:
        assert not await drift.connect()
        assert not drift.is_connected
        # A shared client that failed to start stays referenced: the manager keeps retrying.
        held = 1 if use_singleton else 0
        assert references() == held
        assert not await drift.connect()
        assert references() == held
        assert await drift.get_funding_rate("SOL-PERP") is None
        assert await drift.get_all_perp_markets() == []
        assert 0 < await drift.get_time_to_funding() <= 3600
        before = references()
        await drift.disconnect()
        assert references() == before - held
        assert not drift.is_connected
    finally:
        await drift.disconnect()
        await DriftClientManager.shutdown()


async def test_a_shared_client_that_failed_to_start_comes_up_in_the_background(
    simulator: Simulator, manager_settings: None, wait_until: WaitUntil
) -> None:
    DriftClientManager.configure(
        rpc_url=simulator.http_url,
        max_retries=0,
        retry_backoff=0.05,
        retry_backoff_cap=0.1,
        health_interval_s=3600,
    )
    simulator.faults.fail_next(3, status=503)
    drift = DriftAdapter()
    try:
        assert not await drift.connect()
        # No second connect: the reference the adapter kept is what keeps the manager trying.
        await wait_until(lambda: drift.is_connected)
        assert await drift.get_funding_rate("SOL-PERP") is not None
    finally:
        await drift.disconnect()
        await DriftClientManager.shutdown()


async def test_private_client_signs_with_the_wallet(sim_manager: Simulator) -> None:
    wallet = Keypair()
    put_user(sim_manager, wallet.pubkey(), 3)
    drift = DriftAdapter(use_singleton=False)
    try:
        assert await drift.connect(wallet=wallet, sub_account=3)
        client = drift._private.client  # type: ignore[union-attr]
        assert client.wallet.public_key == wallet.pubkey()
        assert client.active_sub_account_id == 3
        assert drift.account is not None
        assert drift.account.client is client
    finally:
        await drift.disconnect()


async def test_singleton_registers_the_wallet(sim_manager: Simulator) -> None:
    wallet = Keypair()
    put_user(sim_manager, wallet.pubkey(), 3)
    drift = DriftAdapter()
    try:
        assert await drift.connect(wallet=wallet, sub_account=3)
        assert _references() == 1
        assert drift.can_trade
        assert drift.address == str(wallet.pubkey())
        assert drift.account is not None
        assert (drift.account.authority, drift.account.sub_account_id) == (wallet.pubkey(), 3)
    finally:
        await drift.disconnect()
    assert not drift.can_trade


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"network": "testnet"}, "unknown network 'testnet'"),
        ({"rpc_url": "ws://127.0.0.1:1"}, "rpc_url must be an http(s) URL"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        DriftAdapter(**kwargs)
