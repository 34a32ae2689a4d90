"""The dashboard in Debian's Chromium (driven by Playwright) against serve on the simulator."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright, expect

from conftest import WaitUntil, subscribed
from driftshare import DriftAdapter
from driftshare._serve import Runtime, ServeConfig
from driftshare.manager import DriftClientManager
from driftshare.sim.wallets import open_wallet
from sim_trading import ticking
from test_trading_sim import TX_SETTINGS, resting_bid

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


@pytest_asyncio.fixture
async def trading_runtime(manager_settings: None) -> AsyncIterator[Runtime]:
    """serve on a two-market simulator whose chain advances (writes confirm), no engines."""
    config = ServeConfig(
        port=0, sim_markets=2, sim_tick_s=3600, settings_overrides=dict(TX_SETTINGS)
    )
    async with Runtime(config) as rt:
        assert rt.simulator is not None
        async with ticking(rt.simulator):
            yield rt


async def test_accounts_panel_shows_a_trading_sub_account(
    browser: Browser, trading_runtime: Runtime
) -> None:
    sim = trading_runtime.simulator
    assert sim is not None
    wallet = await open_wallet(sim.http_url, DriftClientManager.settings(), subs=1, usdc=1_000)
    adapter = DriftAdapter()
    assert await adapter.connect(wallet, 0)
    try:
        assert (await adapter.deposit(500))["status"] == "confirmed"
        assert (await adapter.place_perp_order(0, "long", 0.5))["status"] == "confirmed"
        bid = await resting_bid(adapter)
        limit = await adapter.place_perp_order(0, "long", 0.2, "LIMIT", price=bid, user_order_id=9)
        assert limit["status"] == "confirmed"
        assert (await adapter.place_perp_order(0, "sideways", 1.0))["status"] == "failed"

        page = await browser.new_page(viewport={"width": 1440, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(trading_runtime.url)
        account = page.locator(f'#accounts tr[data-account="{wallet.pubkey()}/0"]')
        await expect(account).to_have_count(1, timeout=3000)
        await expect(account.locator('td[data-col="equity"]')).to_have_text(re.compile(r"^\$\d"))
        await expect(account.locator('td[data-col="leverage"]')).to_have_text(
            re.compile(r"^\d+\.\d\d\u00d7$")
        )
        # The chain's position: 0.5 SOL long, shown signed.
        position = page.locator('#accounts tr[data-position="SOL-PERP"]')
        await expect(position).to_contain_text("+0.5000")
        await expect(page.locator("#accounts tr[data-order]")).to_contain_text("uid 9")
        await expect(page.locator('#orders tr[data-status="confirmed"]')).to_have_count(3)
        await expect(page.locator('#orders tr[data-status="failed"]')).to_contain_text(
            "InvalidDirection"
        )
        html = await page.content()
        assert str(wallet) not in html
        ARTIFACTS.mkdir(exist_ok=True)
        await page.locator("#accounts-card").scroll_into_view_if_needed()
        await page.screenshot(path=ARTIFACTS / "dashboard-accounts.png", full_page=True)
        assert errors == []
    finally:
        await adapter.disconnect()
