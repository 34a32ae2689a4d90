"""DriftClientManager's cached market data against the simulator's ground truth."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable
from types import SimpleNamespace
from typing import Any

import pytest
from driftpy.constants.perp_markets import mainnet_perp_market_configs
from solders.pubkey import Pubkey

from conftest import GroundTruth, WaitUntil, eventually
from driftshare._data.cache import TTLCache
from driftshare._data.ledger import AccountLedger, AccountRecord
from driftshare._data.marketdata import ClientSource, MarketDataReader, MarketSource
from driftshare.config import load_settings
from driftshare.manager import DriftClientManager
from driftshare.models import FundingRateData, MarketData
from driftshare.sim import Simulator
from driftshare.sim.pytest_plugin import SimulatorFactory


def _without_age(value: FundingRateData | MarketData) -> FundingRateData | MarketData:
    # How long the value sat in the cache and how recently its accounts were confirmed are
    # the fields truth cannot know (test_freshness_sim checks them).
    return dataclasses.replace(value, age_s=0.0, slot=0, data_age_s=0.0)


def _calls(sim: Simulator) -> int:
    total: int = sim.stats()["calls"]["total"]
    return total


async def test_funding_rate_of_every_market_equals_ground_truth(wide_truth: GroundTruth) -> None:
    statuses = set()
    for index in wide_truth.indexes():
        funding = await DriftClientManager.get_funding_rate(index)
        assert funding is not None
        assert _without_age(funding) == wide_truth.funding(index)
        assert funding.oracle_price == wide_truth.sim.world.oracle_price(index)  # type: ignore[union-attr]
        statuses.add(funding.status)
    assert {"active", "settlement", "reduce_only"} <= statuses


async def test_all_perp_markets_equal_ground_truth(wide_truth: GroundTruth) -> None:
    markets = await DriftClientManager.get_all_perp_markets()
    assert [m.market_index for m in markets] == wide_truth.indexes()
    for market in markets:
        assert _without_age(market) == wide_truth.market(market.market_index)
        assert market.open_interest_usd > 0


async def test_cache_hit_costs_no_rpc_request(sim_manager: Simulator, truth: GroundTruth) -> None:
    first = await DriftClientManager.get_funding_rate("SOL-PERP")
    markets = await DriftClientManager.get_all_perp_markets()
    calls = _calls(sim_manager)
    hits = DriftClientManager.stats()["cache"]["hits"]

    again = await DriftClientManager.get_funding_rate("SOL-PERP")
    markets_again = await DriftClientManager.get_all_perp_markets()

    assert _calls(sim_manager) == calls
    cache = DriftClientManager.stats()["cache"]
    assert cache["hits"]["funding"] == hits.get("funding", 0) + 1
    assert cache["hits"]["markets"] == hits.get("markets", 0) + 1
    assert first is not None
    assert again is not None
    assert _without_age(again) == _without_age(first) == truth.funding(0)
    assert [_without_age(m) for m in markets_again] == [_without_age(m) for m in markets]


async def test_read_right_after_an_account_change_returns_the_new_value(
    sim_manager: Simulator, truth: GroundTruth, wait_until: WaitUntil
) -> None:
    clock = [0.0]
    reader = DriftClientManager.market_data()
    reader.cache = TTLCache(clock=lambda: clock[0])  # no TTL ever runs out here
    before = await DriftClientManager.get_funding_rate(0)
    assert before is not None
    assert _without_age(before) == truth.funding(0)

    # Notifications only reach subscriptions the server has already registered.
    await wait_until(lambda: truth.active_subscriptions() == truth.subscriptions_per_client())
    await sim_manager.step()
    moved = truth.funding(0)
    assert moved.oracle_price != before.oracle_price
    client = DriftClientManager.shared_state().client  # type: ignore[union-attr]
    expected_price = round(moved.oracle_price * 1e6)
    await wait_until(
        lambda: client.get_oracle_price_data_for_perp_market(0).price == expected_price
    )
    after = await DriftClientManager.get_funding_rate(0)
    assert after is not None
    assert _without_age(after) == moved
    assert after.slot >= before.slot
    assert not after.stale


async def test_unchanged_value_is_reused_then_recomputed_after_its_ttl(
    sim_manager: Simulator, truth: GroundTruth
) -> None:
    clock = [0.0]
    reader = DriftClientManager.market_data()
    reader.cache = TTLCache(clock=lambda: clock[0])
    ttl = DriftClientManager.settings().cache_ttl_funding
    before = await DriftClientManager.get_funding_rate(0)
    assert before is not None

    clock[0] = ttl / 2
    cached = await DriftClientManager.get_funding_rate(0)
    assert cached is not None
    assert cached.age_s == ttl / 2
    assert reader.cache.stats()["hits"] == {"funding": 1}

    clock[0] = ttl
    again = await DriftClientManager.get_funding_rate(0)
    assert again is not None
    assert again.age_s == 0
    assert _without_age(again) == truth.funding(0)
    assert reader.cache.stats()["misses"] == {"funding": 2}


@pytest.mark.parametrize("symbol", ["SOL-PERP", "sol-perp", "SOL", "sol", " Sol-Perp ", "0", 0])
async def test_symbols_resolve(
    sim_manager: Simulator, truth: GroundTruth, symbol: str | int
) -> None:
    funding = await DriftClientManager.get_funding_rate(symbol)
    market = await DriftClientManager.get_market(symbol)
    assert funding is not None
    assert market is not None
    assert _without_age(funding) == truth.funding(0)
    assert _without_age(market) == truth.market(0)
    assert await DriftClientManager.get_mark_price(symbol) == truth.market(0).mark_price
    assert (
        await DriftClientManager.get_open_interest_usd(symbol) == truth.market(0).open_interest_usd
    )


@pytest.mark.parametrize("symbol", ["NOPE-PERP", "", "-1", 999, 1.5, None, True])
async def test_unknown_market_is_none(sim_manager: Simulator, symbol: object) -> None:
    assert await DriftClientManager.get_funding_rate(symbol) is None  # type: ignore[arg-type]
    assert await DriftClientManager.get_market(symbol) is None  # type: ignore[arg-type]
    assert await DriftClientManager.get_mark_price(symbol) is None  # type: ignore[arg-type]


async def test_market_known_only_on_chain_resolves_on_first_read(
    simulator_factory: SimulatorFactory, manager_settings: None, frozen_now: float
) -> None:
    configs = len(mainnet_perp_market_configs)
    sim = await simulator_factory(markets=configs + 1)
    truth = GroundTruth(sim, frozen_now)
    DriftClientManager.configure(rpc_url=sim.http_url, health_interval_s=3600)
    try:
        funding = await DriftClientManager.get_funding_rate(f"sim{configs}-perp")
        assert funding is not None
        assert funding.market == f"SIM{configs}-PERP"
        assert _without_age(funding) == truth.funding(configs)
    finally:
        await DriftClientManager.shutdown()


class _AccountsSource:
    """A MarketSource over given market accounts, priced by the simulator's oracles."""

    def __init__(self, accounts: dict[int, Any], truth: GroundTruth) -> None:
        self._accounts = accounts
        self._truth = truth

    def perp_markets(self) -> list[Any]:
        return list(self._accounts.values())

    def perp_market(self, market_index: int) -> Any:
        return self._accounts.get(market_index)

    def oracle_price_data(self, market_index: int) -> Any:
        return self._truth.oracle(market_index)

    def accounts(self, perp_market: Any) -> tuple[()]:
        return ()

    def unavailable(self, market_index: int) -> bool:
        return False

    def current(self) -> bool:
        return True


async def test_max_staleness_from_the_environment_bounds_serving_the_last_value(
    truth: GroundTruth, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFT_MAX_STALENESS_S", "0.5")
    monkeypatch.setenv("DRIFT_CACHE_TTL_FUNDING", "0")
    world = truth.sim.world
    assert world is not None
    up = [True]

    async def source() -> MarketSource | None:
        accounts = {i: world.perp_market(i) for i in world.perp_indexes()}
        return _AccountsSource(accounts, truth) if up[0] else None

    reader = MarketDataReader(source, settings=load_settings())
    first = await reader.get_funding_rate(0)
    assert first is not None
    up[0] = False  # upstream unavailable: the last value, flagged, for 0.5 s at most
    served = await reader.get_funding_rate(0)
    assert served is not None
    assert served.stale
    assert served.rate_hourly == first.rate_hourly
    await eventually(
        lambda: _is_none(reader.get_funding_rate(0)), within=5, what="nothing past 0.5 s"
    )


async def _is_none(answer: Awaitable[object]) -> bool:
    return await answer is None


async def test_an_unpriceable_market_does_not_hide_the_others(truth: GroundTruth) -> None:
    world = truth.sim.world
    assert world is not None
    broken = world.perp_market(1)
    amm = broken.amm
    # A settled rate with no oracle twap to divide it by cannot be turned into a fraction.
    broken = dataclasses.replace(
        broken,
        amm=dataclasses.replace(
            amm,
            last_funding_oracle_twap=0,
            historical_oracle_data=dataclasses.replace(
                amm.historical_oracle_data, last_oracle_price_twap=0
            ),
        ),
    )
    assert amm.last_funding_rate != 0
    accounts = {i: world.perp_market(i) for i in world.perp_indexes()} | {1: broken}

    async def source() -> MarketSource:
        return _AccountsSource(accounts, truth)

    reader = MarketDataReader(source, settings=load_settings())
    markets = await reader.get_all_perp_markets()
    expected = [i for i in truth.indexes() if i != 1]
    # Accounts of no known age: every value is stale.
    assert all(m.stale for m in markets)
    fresh = [dataclasses.replace(_without_age(m), stale=False) for m in markets]
    assert fresh == [truth.market(i) for i in expected]
    assert await reader.get_funding_rate(1) is None


def test_market_value_without_a_ledger_entry_for_an_account_has_no_age() -> None:
    market_key, oracle_key = Pubkey.new_unique(), Pubkey.new_unique()
    ledger = AccountLedger()
    source = ClientSource(object(), ledger)
    market = SimpleNamespace(pubkey=market_key, amm=SimpleNamespace(oracle=oracle_key))
    ledger.apply(AccountRecord(str(market_key), "perp", 10, b"market"))
    # The oracle's age is unknown: the market's own confirmation must not vouch for it.
    assert source.accounts(market) == ()
    ledger.apply(AccountRecord(str(oracle_key), "oracle", 11, b"oracle", "PythPull"))
    both = source.accounts(market)
    assert [e.record.pubkey for e in both] == [str(market_key), str(oracle_key)]
    # Nor the other way round.
    assert ClientSource(object(), AccountLedger()).accounts(market) == ()
    only_oracle = AccountLedger()
    only_oracle.apply(AccountRecord(str(oracle_key), "oracle", 11, b"oracle", "PythPull"))
    assert ClientSource(object(), only_oracle).accounts(market) == ()
    # A market without an oracle (Pubkey.default()) is judged by its own account.
    no_oracle = SimpleNamespace(pubkey=market_key, amm=SimpleNamespace(oracle=Pubkey.default()))
    assert [e.record.pubkey for e in source.accounts(no_oracle)] == [str(market_key)]
