"""DriftFundingFeed over both adapter modes against the simulator's ground truth."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import statistics
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from conftest import GroundTruth, WaitUntil
from driftshare import DriftAdapter, DriftFundingFeed, FundingInfo
from driftshare.manager import DriftClientManager
from driftshare.sim import Simulator


def _info(truth: GroundTruth, index: int) -> FundingInfo:
    funding = truth.funding(index)
    return FundingInfo(
        market=funding.market,
        rate_8h=funding.rate_8h,
        rate_annual=funding.rate_annual,
        is_positive=funding.is_positive,
        mark_price=funding.mark_price,
        time_to_next_funding=max(0, funding.next_funding_ts - int(truth.now)),
    )


def _active(truth: GroundTruth) -> list[int]:
    return [i for i in truth.indexes() if truth.funding(i).status == "active"]


@pytest_asyncio.fixture(params=[True, False], ids=["singleton", "private"])
async def feed(
    request: pytest.FixtureRequest, sim_manager: Simulator, frozen_now: float
) -> AsyncIterator[DriftFundingFeed]:
    adapter = DriftAdapter(use_singleton=request.param, clock=lambda: frozen_now)
    yield DriftFundingFeed(adapter)
    await adapter.disconnect()


async def test_get_funding_rate(feed: DriftFundingFeed, truth: GroundTruth) -> None:
    for index in truth.indexes():
        assert await feed.get_funding_rate(index) == _info(truth, index)
    assert await feed.get_funding_rate("sol") == _info(truth, 0)
    assert await feed.get_funding_rate("NOPE-PERP") is None


async def test_get_all_funding_rates_defaults_to_active_markets(
    wide_truth: GroundTruth, frozen_now: float
) -> None:
    for use_singleton in (True, False):
        adapter = DriftAdapter(use_singleton=use_singleton, clock=lambda: frozen_now)
        try:
            rates = await DriftFundingFeed(adapter).get_all_funding_rates()
        finally:
            await adapter.disconnect()
        active = _active(wide_truth)
        assert len(active) < len(wide_truth.indexes())
        assert list(rates.values()) == [_info(wide_truth, i) for i in active]
        assert list(rates) == [info.market for info in rates.values()]


async def test_explicit_market_list(feed: DriftFundingFeed, truth: GroundTruth) -> None:
    feed.markets = ["eth", 1, "NOPE-PERP"]
    rates = await feed.get_all_funding_rates()
    assert list(rates.items()) == [(i.market, i) for i in (_info(truth, 2), _info(truth, 1))]


async def test_find_best_opportunity(feed: DriftFundingFeed, truth: GroundTruth) -> None:
    infos = [_info(truth, i) for i in _active(truth)]
    ranked = sorted(infos, key=lambda info: abs(info.rate_8h), reverse=True)
    assert abs(ranked[0].rate_8h) > abs(ranked[1].rate_8h) > 0

    assert await feed.find_best_opportunity() == ranked[0]
    assert await feed.find_best_opportunity(abs(ranked[1].rate_8h)) == ranked[0]
    assert await feed.find_best_opportunity(abs(ranked[0].rate_8h)) is None


async def test_get_funding_markets_has_real_open_interest(
    feed: DriftFundingFeed, truth: GroundTruth
) -> None:
    rows = await feed.get_funding_markets()
    assert [row["market_index"] for row in rows] == _active(truth)
    for row in rows:
        index = row["market_index"]
        market, info = truth.market(index), _info(truth, index)
        assert row["market"] == info.market
        assert row["rate_8h"] == info.rate_8h
        assert row["direction"] == info.direction
        assert row["time_to_next_funding"] == info.time_to_next_funding
        assert row["open_interest"] == market.open_interest
        assert row["open_interest_usd"] == market.open_interest_usd
        assert row["oracle_price"] == market.oracle_price


async def test_get_market_stats(feed: DriftFundingFeed, truth: GroundTruth) -> None:
    active = _active(truth)
    rates = [truth.funding(i).rate_8h for i in active]
    stats = await feed.get_market_stats()
    assert stats == {
        "markets": len(active),
        "positive": sum(r > 0 for r in rates),
        "negative": sum(r < 0 for r in rates),
        "average_rate_8h": statistics.fmean(rates),
        "average_rate_annual": statistics.fmean(truth.funding(i).rate_annual for i in active),
        "total_open_interest_usd": sum(truth.market(i).open_interest_usd for i in active),
    }
    assert stats["positive"] > 0
    assert stats["negative"] > 0


async def test_sync_from_another_thread_while_the_loop_runs(
    feed: DriftFundingFeed, truth: GroundTruth
) -> None:
    expected = {info.market: info.rate_8h for info in (_info(truth, i) for i in _active(truth))}
    await feed.get_funding_rate(0)

    assert await asyncio.to_thread(feed.get_funding_rates_sync) == expected


async def test_sync_on_the_loop_thread_returns_last_known_rates(
    feed: DriftFundingFeed, truth: GroundTruth
) -> None:
    assert feed.get_funding_rates_sync() == {}
    rates = await feed.get_all_funding_rates()
    assert feed.get_funding_rates_sync() == {m: info.rate_8h for m, info in rates.items()}
    assert len(rates) == len(_active(truth))


class _LoopThread:
    """An event loop running in a background thread, as another part of a program would."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()


@pytest.fixture
def sim_thread() -> Iterator[_LoopThread]:
    runner = _LoopThread()
    yield runner
    runner.close()


@pytest.fixture
def threaded_sim(sim_thread: _LoopThread, manager_settings: None) -> Iterator[Simulator]:
    """A simulator serving from another thread, leaving this thread without an event loop."""
    sim = Simulator(markets=8, tick_s=3600.0)
    sim_thread.run(sim.start())
    DriftClientManager.configure(rpc_url=sim.http_url, health_interval_s=3600)
    try:
        yield sim
    finally:
        sim_thread.run(sim.stop())
        # Forget clients whose loops have ended, on a loop of its own: asyncio.run would
        # replace the event loop pytest-asyncio leaves set in this thread, unclosed.
        with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
            runner.run(DriftClientManager.shutdown())


@pytest.mark.parametrize("use_singleton", [True, False], ids=["singleton", "private"])
def test_sync_with_no_loop_running(
    threaded_sim: Simulator,
    sim_thread: _LoopThread,
    wait_until: WaitUntil,
    frozen_now: float,
    use_singleton: bool,
) -> None:
    truth = GroundTruth(threaded_sim, frozen_now)
    expected = {info.market: info.rate_8h for info in (_info(truth, i) for i in _active(truth))}
    adapter = DriftAdapter(use_singleton=use_singleton, clock=lambda: frozen_now)
    feed = DriftFundingFeed(adapter)

    assert feed.get_funding_rates_sync() == expected
    assert feed.get_funding_rates_sync() == expected

    assert not adapter.is_connected
    assert DriftClientManager.stats()["references"] == 0

    # The temporary loops really reached the chain, and closed every connection they opened
    # (their websockets may or may not have finished the handshake before the loop ended).
    assert threaded_sim.stats()["http_requests"]["total"] > 0
    sim_thread.run(wait_until(lambda: threaded_sim.stats()["ws_connections"]["open"] == 0))


def test_sync_with_no_loop_running_leaves_the_threads_event_loop_alone(
    threaded_sim: Simulator, frozen_now: float
) -> None:
    feed = DriftFundingFeed(DriftAdapter(clock=lambda: frozen_now))

    def in_a_thread_with_its_own_loop() -> bool:
        policy = asyncio.get_event_loop_policy()
        with contextlib.closing(asyncio.new_event_loop()) as mine:
            policy.set_event_loop(mine)  # set, not running: between two run_until_complete
            assert feed.get_funding_rates_sync()
            # Replaced and dropped, it would be left for the garbage collector to find unclosed.
            return policy.get_event_loop() is mine

    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        assert thread.submit(in_a_thread_with_its_own_loop).result(60)


@pytest.mark.parametrize("use_singleton", [True, False], ids=["singleton", "private"])
def test_sync_on_the_idle_loop_the_feed_ran_on(
    threaded_sim: Simulator, frozen_now: float, use_singleton: bool
) -> None:
    truth = GroundTruth(threaded_sim, frozen_now)
    expected = {info.market: info.rate_8h for info in (_info(truth, i) for i in _active(truth))}
    adapter = DriftAdapter(use_singleton=use_singleton, clock=lambda: frozen_now)
    feed = DriftFundingFeed(adapter)
    # The Runner's close cancels what is left and closes async generators, executor and loop.
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        try:
            assert runner.run(feed.get_funding_rate(0)) == _info(truth, 0)
            assert feed.get_funding_rates_sync() == expected
            # Shared reads take no reference (a read lease holds the client); private ones connect.
            assert adapter.is_connected is not use_singleton
        finally:
            runner.run(adapter.disconnect())
            runner.run(DriftClientManager.shutdown())


async def test_feed_without_adapter_reads_the_shared_client_under_the_read_lease(
    sim_manager: Simulator, truth: GroundTruth, frozen_now: float, wait_until: WaitUntil
) -> None:
    DriftClientManager.configure(
        rpc_url=sim_manager.http_url, health_interval_s=3600, idle_close_s=0.3
    )
    feed = DriftFundingFeed()
    assert feed.adapter.use_singleton
    info = await feed.get_funding_rate("SOL-PERP")
    assert info is not None
    assert info.rate_8h == truth.funding(0).rate_8h
    assert DriftClientManager.stats()["references"] == 0
    await feed.close()
    await feed.close()
    # Nothing holds the client once the feed stops reading: it closes when the lease ends.
    await wait_until(lambda: not DriftClientManager.is_initialized())
    assert DriftClientManager.stats()["references"] == 0


@pytest.mark.parametrize(
    ("rate_8h", "direction", "long_pays"),
    [(0.05, "long_pays", 0.5), (-0.02, "short_pays", -0.2), (0.0, "none", 0.0)],
)
def test_funding_info_direction_and_expected_usd(
    rate_8h: float, direction: str, long_pays: float
) -> None:
    info = FundingInfo("SOL-PERP", rate_8h, rate_8h * 3 * 365.25, rate_8h > 0, 150.0, 60)
    assert info.direction == direction
    assert info.expected_8h_usd == pytest.approx(long_pays)
    assert info.expected_usd(10_000, hours=24) == pytest.approx(long_pays * 10 * 3)


def test_funding_without_freshness_is_stale() -> None:
    funding = {
        "market": "SOL-PERP",
        "rate_8h": 0.01,
        "rate_annual": 10.9575,
        "is_positive": True,
        "mark_price": 150.0,
    }
    info = FundingInfo.from_funding(funding, 60)
    assert info.stale
    assert info.data_age_s == math.inf
    current = FundingInfo.from_funding({**funding, "stale": False, "data_age_s": 0.4}, 60)
    assert not current.stale
    assert current.data_age_s == 0.4


async def test_unreachable_rpc_never_raises(manager_settings: None, closed_port_url: str) -> None:
    DriftClientManager.configure(rpc_url=closed_port_url, max_retries=0, init_timeout_s=5)
    feed = DriftFundingFeed()
    try:
        assert await feed.get_funding_rate("SOL-PERP") is None
        assert await feed.get_all_funding_rates() == {}
        assert await feed.find_best_opportunity() is None
        assert await feed.get_funding_markets() == []
        assert (await feed.get_market_stats())["markets"] == 0
        assert await asyncio.to_thread(feed.get_funding_rates_sync) == {}
    finally:
        await feed.close()
        await DriftClientManager.shutdown()
