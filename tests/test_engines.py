"""The sample engines: their signals match the data they read, and under serve they share one
DriftClient and one set of subscriptions without an error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from conftest import WaitUntil, subscribed
from driftshare._engines import (
    ENGINES,
    ArbEngine,
    FundingEngine,
    LstEngine,
    ScalpEngine,
    make_engines,
)
from driftshare._serve import Runtime, ServeConfig
from driftshare.feed import FundingInfo
from driftshare.manager import DriftClientManager
from driftshare.models import mark_price
from driftshare.sim import Simulator


@pytest_asyncio.fixture
async def live_manager(simulator: Simulator, manager_settings: None) -> AsyncIterator[Simulator]:
    """The manager on the simulator with no caching, so each read sees the latest accounts."""
    DriftClientManager.configure(
        rpc_url=simulator.http_url,
        health_interval_s=3600,
        cache_ttl_funding=0,
        cache_ttl_price=0,
        cache_ttl_markets=0,
        cache_ttl_oi=0,
    )
    yield simulator
    await DriftClientManager.shutdown()


async def test_funding_engine_picks_the_largest_absolute_apr(live_manager: Simulator) -> None:
    engine = FundingEngine()
    await engine.start()
    try:
        signal = await engine.run_once()
        rates = [
            r
            for r in await DriftClientManager.market_data().get_all_funding_rates()
            if r.status == "active"
        ]
    finally:
        await engine.stop()
    best = max(rates, key=lambda r: abs(r.rate_annual))
    assert signal is not None
    assert (signal.market, signal.value) == (best.market, pytest.approx(best.rate_annual))
    assert best.rate_annual != 0
    assert signal.action == ("collect_short" if best.rate_annual > 0 else "collect_long")
    assert engine.ranking[0][0] == best.market
    assert engine.errors == 0


class _Feed:
    """A funding feed answering fixed rates."""

    def __init__(self, *rates: float) -> None:
        self.rates = rates

    async def get_all_funding_rates(self) -> dict[str, FundingInfo]:
        return {
            f"M{i}-PERP": FundingInfo(f"M{i}-PERP", rate / 1095, rate, rate > 0, 100.0, 60)
            for i, rate in enumerate(self.rates)
        }


@pytest.mark.parametrize(
    ("rates", "action"),
    [((0.0, 0.0), "no_edge"), ((0.0, 12.5), "collect_short"), ((-3.0, 1.0), "collect_long")],
)
async def test_funding_engine_action_follows_the_sign_and_zero_is_no_edge(
    rates: tuple[float, ...], action: str
) -> None:
    engine = FundingEngine()
    engine.feed = _Feed(*rates)  # type: ignore[assignment]
    signal = await engine.run_once()
    assert signal is not None
    assert signal.action == action
    assert signal.value == max(rates, key=abs)
    assert engine.errors == 0


class _ReconnectingAdapter:
    """An adapter whose client is being rebuilt: not connected, yet answering cached rows."""

    is_connected = False

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    async def connect(self) -> bool:
        return False

    async def disconnect(self) -> None:
        pass

    async def get_all_perp_markets(self) -> list[dict[str, Any]]:
        return self.rows


async def test_engine_reads_stale_data_while_the_adapter_reconnects() -> None:
    engine = ArbEngine(threshold_bps=10.0)
    row = {"symbol": "SOL-PERP", "status": "active", "mark_price": 101.0, "oracle_price": 100.0}
    engine.adapter = _ReconnectingAdapter([row])  # type: ignore[assignment]
    signal = await engine.run_once()
    assert signal is not None
    assert (signal.market, signal.action) == ("SOL-PERP", "sell_perp_buy_spot")
    assert engine.errors == 0


async def test_engine_counts_an_error_when_the_data_is_missing() -> None:
    engine = ArbEngine()
    engine.adapter = _ReconnectingAdapter([])  # type: ignore[assignment]
    assert await engine.run_once() is None
    assert engine.errors == 1
    assert engine.last_error == "EngineDataError: no perp markets"


async def test_lst_engine_adds_staking_yield_to_sol_funding(live_manager: Simulator) -> None:
    engine = LstEngine(staking_apr_pct=7.0)
    signal = await engine.run_once()
    sol = await DriftClientManager.get_funding_rate("SOL-PERP")
    await engine.stop()
    assert signal is not None
    assert sol is not None
    assert signal.market == "SOL-PERP"
    assert signal.value == pytest.approx(7.0 + sol.rate_annual)
    assert engine.errors == 0


async def test_arb_engine_reports_the_widest_mark_oracle_basis(live_manager: Simulator) -> None:
    engine = ArbEngine(threshold_bps=10.0)
    signal = await engine.run_once()
    markets = await DriftClientManager.get_all_perp_markets()
    await engine.stop()
    basis = {
        m.symbol: (m.mark_price / m.oracle_price - 1) * 1e4 for m in markets if m.status == "active"
    }
    widest = max(basis, key=lambda s: abs(basis[s]))
    assert signal is not None
    assert signal.market == widest
    assert signal.value == pytest.approx(basis[widest])


async def test_scalp_engine_sees_a_price_jump_as_momentum(
    live_manager: Simulator, wait_until: WaitUntil
) -> None:
    sim = live_manager
    engine = ScalpEngine(window=5, threshold_bps=20.0)
    # One sample per market is no move yet.
    assert await engine.run_once() is None
    await wait_until(lambda: subscribed(sim))
    before = await DriftClientManager.get_mark_price("SOL-PERP")
    assert sim.world is not None
    sim.world.set_oracle_price(0, sim.world.oracle_price(0) * 1.05)

    await sim.step()
    await wait_until(lambda: _sol_mark() != before)
    signal = await engine.run_once()
    await engine.stop()
    assert signal is not None
    assert (signal.market, signal.action) == ("SOL-PERP", "momentum_long")
    assert signal.value > 20.0


async def test_engine_counts_errors_instead_of_raising(
    manager_settings: None, closed_port_url: str
) -> None:
    DriftClientManager.configure(rpc_url=closed_port_url, max_retries=0, init_timeout_s=2)
    engine = ArbEngine()
    try:
        await engine.start()
        await engine.wait_for_ticks(1)
        assert engine.errors >= 1
        assert engine.last_signal is None
        assert engine.last_error is not None
    finally:
        await engine.stop()
        await DriftClientManager.shutdown()


def test_make_engines_rejects_an_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown engine 'hft'"):
        make_engines(["funding", "hft"])


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s must be > 0"):
        ArbEngine(interval_s=0)


def _sol_mark() -> float | None:
    """SOL-PERP's mark price from the shared client's subscribed accounts, uncached."""
    state = DriftClientManager.shared_state()
    source = None if state is None else state.source()
    market = None if source is None else source.perp_market(0)
    if source is None or market is None:
        return None
    return mark_price(market, oracle_price_data=source.oracle_price_data(0))


async def _single_client_footprint(sim: Simulator, wait_until: WaitUntil) -> tuple[int, int]:
    """WebSocket connections and subscriptions of one DriftClient alone, once settled."""
    DriftClientManager.configure(rpc_url=sim.http_url, health_interval_s=3600)
    assert await DriftClientManager.get_client() is not None
    await wait_until(lambda: subscribed(sim))
    stats = sim.stats()
    await DriftClientManager.shutdown()
    DriftClientManager._settings = None
    return stats["ws_connections"]["total"], stats["subscriptions"]["total"]


async def test_four_engines_under_serve_share_one_client(
    simulator: Simulator, manager_settings: None, wait_until: WaitUntil
) -> None:
    baseline = await _single_client_footprint(simulator, wait_until)
    config = ServeConfig(
        port=0,
        engines=list(ENGINES),
        engine_interval_s=0.05,
        sim_markets=8,
        sim_tick_s=3600,
        settings_overrides={"health_interval_s": 3600},
    )
    async with Runtime(config) as runtime:
        sim = runtime.simulator
        assert sim is not None
        for engine in runtime.engines:
            await engine.wait_for_ticks(5)
            # Data moves while they run: each engine keeps reading the shared client.
            await sim.step()
        for engine in runtime.engines:
            await engine.wait_for_ticks(engine.ticks + 5)
        stats = sim.stats()
        footprint = (stats["ws_connections"]["total"], stats["subscriptions"]["total"])
        manager = DriftClientManager.stats()
        engines = {engine.name: engine for engine in runtime.engines}
    assert manager["initializations"] == 1
    # One reference per engine, all on that one client; the dashboard's reads take none.
    assert manager["references"] == len(ENGINES)
    assert footprint == baseline
    assert {name: e.errors for name, e in engines.items()} == dict.fromkeys(ENGINES, 0)
    assert all(e.last_signal is not None for e in engines.values())
