"""The dashboard in Debian's Chromium (driven by Playwright) against serve on the simulator."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright, expect

from conftest import WaitUntil, subscribed
from driftshare._serve import Runtime, ServeConfig
from driftshare.manager import DriftClientManager

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
MARKETS = 30

# How long an expect waits for the page: a guard against a hang on a loaded machine, not a
# speed claim (the dashboard's latency is measured in bench/, never asserted).
_HANG_MS = 15_000


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        await chromium.close()


@pytest_asyncio.fixture
async def runtime(manager_settings: None) -> AsyncIterator[Runtime]:
    """serve with the four engines on a simulator whose clock only moves when told."""
    config = ServeConfig(
        port=0,
        engines=["funding", "lst", "scalp", "arb"],
        sim_markets=MARKETS,
        sim_tick_s=3600,
        settings_overrides={"health_interval_s": 3600},
    )
    async with Runtime(config) as rt:
        yield rt


def _price_text(value: float) -> str:
    """The dashboard's formatting of a price between 1 and 1000 (four decimals)."""
    return f"{value:.4f}"


async def test_dashboard_shows_every_market_and_live_changes(
    browser: Browser, runtime: Runtime, wait_until: WaitUntil
) -> None:
    sim = runtime.simulator
    assert sim is not None
    world = sim.world
    assert world is not None
    symbols = [m.symbol for m in await DriftClientManager.get_all_perp_markets()]
    assert len(symbols) == MARKETS
    page = await browser.new_page(viewport={"width": 1440, "height": 1400})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(runtime.url)

    rows = page.locator("#markets tbody tr")
    await expect(rows).to_have_count(MARKETS, timeout=_HANG_MS)
    for symbol in symbols:
        await expect(page.locator(f'#markets tr[data-symbol="{symbol}"]')).to_have_count(1)
    await expect(page.locator("#chain")).to_have_text("simulated chain")
    await expect(page.locator("#sim-banner")).to_be_visible()
    await expect(page.locator("#conn")).to_have_class("conn on", timeout=_HANG_MS)

    oracle = page.locator('#markets tr[data-symbol="SOL-PERP"] td[data-col="oracle_price"]')
    await expect(oracle).to_have_text(_price_text(world.oracle_price(0)))
    # A price moved before the client's subscriptions are live would never be pushed.
    await wait_until(lambda: subscribed(sim))
    world.set_oracle_price(0, world.oracle_price(0) * 1.05)
    await sim.step()
    await expect(oracle).to_have_text(_price_text(world.oracle_price(0)), timeout=_HANG_MS)

    await page.fill("#filter", "sol")
    await expect(rows).to_have_count(1)
    await page.fill("#filter", "")
    await expect(rows).to_have_count(MARKETS)

    rates = await DriftClientManager.market_data().get_all_funding_rates()
    highest = max(rates, key=lambda r: r.rate_annual)
    await page.click('#markets-head th[data-key="rate_annual"]')
    await expect(rows.first).to_have_attribute("data-symbol", highest.market)
    await page.click('#markets-head th[data-key="symbol"]')
    await expect(rows.first).to_have_attribute("data-symbol", min(symbols))

    await expect(page.locator("#engines tbody tr")).to_have_count(4)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.click('#markets-head th[data-key="rate_annual"]')
    # Cells flash on every change; a still picture of the page should not catch one mid-way.
    await page.add_style_tag(content="td.up, td.down { animation: none !important; }")
    await page.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True)
    assert errors == []
