"""Units in the names: open interest in USD from ``get_open_interest_usd`` and in base units on
``MarketData``. The dashboard: its cache-hit card is its chart's newest point, and it builds
views only for listeners."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import pytest
from driftpy.constants.numeric_constants import BASE_PRECISION

from conftest import eventually
from driftshare._web import LiveState
from driftshare.manager import DriftClientManager
from driftshare.models import FundingRateData, MarketData
from driftshare.sim import Simulator


async def test_open_interest_is_usd_by_name_and_base_units_on_market_data(
    sim_manager: Simulator,
) -> None:
    world = sim_manager.world
    assert world is not None
    amm = world.perp_market(0).amm
    base_units = (amm.base_asset_amount_long + abs(amm.base_asset_amount_short)) / BASE_PRECISION
    market = await DriftClientManager.get_market(0)
    usd = await DriftClientManager.get_open_interest_usd(0)
    assert market is not None
    assert usd is not None
    assert market.open_interest == pytest.approx(base_units, rel=1e-12)
    assert usd == pytest.approx(base_units * world.oracle_price(0), rel=1e-9)
    reader_usd = await DriftClientManager.market_data().get_open_interest_usd(0)
    assert reader_usd == usd


async def test_the_old_open_interest_name_warns_and_still_answers_usd(
    sim_manager: Simulator,
) -> None:
    usd = await DriftClientManager.get_open_interest_usd(0)
    with pytest.warns(DeprecationWarning, match="get_open_interest_usd"):
        assert await DriftClientManager.get_open_interest(0) == usd
    with pytest.warns(DeprecationWarning, match="get_open_interest_usd"):
        assert await DriftClientManager.market_data().get_open_interest(0) == usd


class _Reader:
    async def get_all_perp_markets(self) -> list[MarketData]:
        return []

    async def get_all_funding_rates(self) -> list[FundingRateData]:
        return []


async def test_the_cache_hit_card_is_the_charts_newest_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    counts = [(0, 0), (90, 10), (100, 100)]  # cumulative (hits, misses) at each refresh
    live = LiveState(network="mainnet", simulated=True, clock=lambda: now[0])
    monkeypatch.setattr(LiveState, "reader", property(lambda self: _Reader()))

    step = [0]

    def stats() -> dict[str, Any]:
        hits, misses = counts[min(step[0], len(counts) - 1)]
        return {"rpc_url": "-", "cache": {"hits": {"funding": hits}, "misses": {"funding": misses}}}

    monkeypatch.setattr(live, "manager_stats", stats)
    for step[0] in range(len(counts)):
        await live.refresh()
        now[0] += 1.0
    snapshot = live.snapshot()
    chart = snapshot["history"]["cache_hit_ratio"]
    assert chart == [0.9, 0.1]  # 90 of 100 lookups, then 10 of the next 100
    assert snapshot["manager"]["cache_hit_ratio"] == chart[-1]


class _CountingReader(_Reader):
    def __init__(self, markets: list[MarketData]) -> None:
        self.markets = markets
        self.reads = 0

    async def get_all_perp_markets(self) -> list[MarketData]:
        self.reads += 1
        return self.markets


async def test_the_dashboard_works_for_listeners_only(monkeypatch: pytest.MonkeyPatch) -> None:
    market = MarketData(0, "SOL-PERP", "active", 150.0, 150.0, 0.0, 1.0, 150.0, 1.0, -0.0, 0.0)
    reader = _CountingReader([market])
    monkeypatch.setattr(LiveState, "reader", property(lambda self: reader))
    live = LiveState(network="mainnet", simulated=True, refresh_s=0.01, idle_refresh_s=3600)
    monkeypatch.setattr(live, "manager_stats", lambda: {"rpc_url": "-"})
    await live.start()
    try:
        await eventually(lambda: reader.reads >= 1, "the first read")
        assert live.version == 0  # nobody listens: nothing published
        async with aclosing(live.updates()) as updates:
            await anext(updates)
            await eventually(lambda: reader.reads >= 3, "reads at the listening pace")
            await anext(updates)
        assert live.version >= 1
    finally:
        await live.stop()
