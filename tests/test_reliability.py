"""The short reliability suite: four engines through a few simulator faults, in each mode.

The suite (``bench/reliability_suite.py``, ``make reliability`` for every fault) runs once per
mode; each test checks one Done-when invariant of issues 9 and 10 on every row.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator

import pytest

from bench.reliability_suite import (
    AMPLIFICATION_LIMIT,
    MODES,
    SHORT_ROWS,
    Row,
    SuiteConfig,
    run_suite,
    suite_settings,
)
from bench.reliability_truth import ChainTruth
from driftshare.manager import DriftClientManager
from driftshare.models import next_funding_ts
from driftshare.sim import Simulator

CONFIG = SuiteConfig.short()
RECOVERY_BOUND_S = 2 * CONFIG.backoff_cap_s


def _broken(rows: list[Row], invariant: str) -> list[str]:
    return [f"{r.mode}/{r.fault}" for r in rows if invariant in r.failures(RECOVERY_BOUND_S)]


def _websocket_http_bound(r: Row) -> int:
    """Issue 9's bound on a websocket client's HTTP requests over a row's window: a
    confirmation round (one getMultipleAccounts per 100 accounts) every DRIFT_STALE_AFTER_S / 2
    and one after each reconnect, and a health getSlot every DRIFT_HEALTH_INTERVAL_S."""
    settings = suite_settings(CONFIG)
    per_round = math.ceil(r.subscribed / 100)
    rounds = math.floor(r.window_s / (settings.stale_after_s / 2)) + 1 + r.ws_connections
    health = math.floor(r.window_s / settings.health_interval_s) + 1
    return rounds * per_round + health


def test_the_short_rows_cover_every_mode_and_each_is_run() -> None:
    assert {mode for mode, _ in SHORT_ROWS} == set(MODES)
    assert {cls.mode for cls in _Invariants.__subclasses__()} == set(MODES)


class _Invariants:
    """Each Done-when invariant on every short row of one mode. One class per mode, so that
    pytest-xdist (``--dist loadscope``) runs each mode's rows on a worker of its own."""

    mode: str

    @pytest.fixture(scope="class")
    def rows(self) -> Iterator[list[Row]]:
        mine = tuple(row for row in SHORT_ROWS if row[0] == self.mode)
        yield asyncio.run(run_suite(CONFIG, mine))
        DriftClientManager._settings = None

    def test_every_row_measured(self, rows: list[Row]) -> None:
        assert [(r.mode, r.fault) for r in rows] == [r for r in SHORT_ROWS if r[0] == self.mode]
        for r in rows:
            assert r.ran, r.status
            # Four engines reading three times every 100 ms for several seconds.
            assert r.reads + r.none > 4 * 3 * 10 * CONFIG.warm_s
            if r.mode == "polling":
                assert r.logical > 0  # polling reads over HTTP
            else:
                assert r.logical <= _websocket_http_bound(r), f"{r.fault}: {r.logical} requests"
            # Every value read matched a value the simulator's chain held: the truth follows it.
            assert r.unmatched == 0
            assert r.behind is not None
            assert r.subscribed > 0

    def test_no_engine_visible_exceptions(self, rows: list[Row]) -> None:
        assert _broken(rows, "exceptions") == []

    def test_no_exception_left_unretrieved(self, rows: list[Row]) -> None:
        assert [r.background_errors for r in rows] == [0] * len(rows)

    def test_nothing_left_after_release(self, rows: list[Row]) -> None:
        assert _broken(rows, "left after release") == []
        assert [r.initialized_after_release for r in rows] == [False] * len(rows)

    def test_no_unflagged_stale_reads(self, rows: list[Row]) -> None:
        assert _broken(rows, "unflagged stale") == []

    def test_recovery_within_twice_the_backoff_cap(self, rows: list[Row]) -> None:
        assert _broken(rows, "recovery") == []

    def test_amplification_within_limit(self, rows: list[Row]) -> None:
        assert AMPLIFICATION_LIMIT == 1.2
        assert _broken(rows, "amplification") == []

    def test_no_account_left_behind(self, rows: list[Row]) -> None:
        assert _broken(rows, "accounts behind") == []


class TestWebsocketRows(_Invariants):
    mode = "websocket"


class TestPollingRows(_Invariants):
    mode = "polling"


class TestGrpcRows(_Invariants):
    mode = "grpc"


async def test_truth_lag_counts_from_the_replacement(simulator: Simulator) -> None:
    now = [100.0]
    truth = ChainTruth(simulator, clock=lambda: now[0])
    try:
        world = simulator.world
        assert world is not None
        index = world.perp_indexes()[0]
        before = world.oracle_price(index)
        assert truth.lag("oracle", index, before, now[0]) == 0.0
        now[0] = 101.0
        world.set_oracle_price(index, before * 1.5)
        after = world.oracle_price(index)
        assert after != before
        # Replaced at 101: behind by the time since, while the new price is current.
        assert truth.lag("oracle", index, before, 104.5) == 3.5
        assert truth.lag("oracle", index, after, 104.5) == 0.0
        assert truth.lag("oracle", index, before * 7, 104.5) is None
    finally:
        truth.close()


async def test_truth_unchanged_account_is_never_behind(simulator: Simulator) -> None:
    truth = ChainTruth(simulator, clock=lambda: 0.0)
    try:
        world = simulator.world
        assert world is not None
        index = world.perp_indexes()[0]
        settled = next_funding_ts(world.perp_market(index))
        # The clock is stuck at 0 and steps move oracles, not this market's last settlement.
        await simulator.step()
        assert next_funding_ts(world.perp_market(index)) == settled
        assert truth.lag("next_funding_ts", index, settled, 1e9) == 0.0
        assert truth.lag("next_funding_ts", index, settled - 1, 1e9) is None
    finally:
        truth.close()
