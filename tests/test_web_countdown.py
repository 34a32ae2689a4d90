"""The dashboard's "Next funding" column in Chromium: a countdown, 0:00 once the time has
passed (never a word standing in for a time)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, expect

from driftshare._web import LiveState, create_app
from driftshare.models import FundingRateData, MarketData
from test_web_browser import browser  # noqa: F401 - the Chromium fixture


def _market(index: int, symbol: str) -> MarketData:
    return MarketData(index, symbol, "active", 150.0, 150.0, 0.0, 1.0, 150.0, 1.0, 0.0, 0.0)


def _funding(index: int, symbol: str, next_funding_ts: int) -> FundingRateData:
    return FundingRateData(
        symbol, index, 0.0, 0.0, 0.0, True, 150.0, 150.0, None, next_funding_ts, "active", 0.0
    )


class _Reader:
    def __init__(self, now: float) -> None:
        self.markets = [_market(0, "SOL-PERP"), _market(1, "BTC-PERP")]
        self.funding = [
            _funding(0, "SOL-PERP", int(now) - 120),  # two minutes past: not settled yet
            _funding(1, "BTC-PERP", int(now) + 3600 + 125),
        ]

    async def get_all_perp_markets(self) -> list[MarketData]:
        return self.markets

    async def get_all_funding_rates(self) -> list[FundingRateData]:
        return self.funding


@pytest_asyncio.fixture
async def page_url(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    reader = _Reader(time.time())
    monkeypatch.setattr(LiveState, "reader", property(lambda self: reader))
    live = LiveState(network="mainnet", simulated=True)
    monkeypatch.setattr(live, "manager_stats", lambda: {"rpc_url": "http://127.0.0.1:1"})
    await live.refresh()
    server = TestServer(create_app(live), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/"))
    finally:
        await live.stop()
        await server.close()


async def test_a_funding_time_already_passed_counts_down_to_zero_not_due(
    browser: Browser,  # noqa: F811 - the imported fixture
    page_url: str,
) -> None:
    page = await browser.new_page()
    await page.goto(page_url)
    cell = '#markets tr[data-symbol="{}"] td[data-col="next_funding_ts"]'
    await expect(page.locator(cell.format("SOL-PERP"))).to_have_text("0:00")
    await expect(page.locator(cell.format("BTC-PERP"))).to_have_text(re.compile(r"1:0[0-2]:\d\d"))
