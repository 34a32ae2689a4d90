"""The dashboard of a fleet member shows the fleet (Debian's Chromium through Playwright)."""

from __future__ import annotations

import httpx
from playwright.async_api import Browser, expect

from bench._processes import RedisServer, all_ready
from conftest import StartServe
from driftshare.sim import Simulator
from test_fleet_processes import FLEET_ENV, until
from test_web_browser import browser

__all__ = ["browser"]


async def test_the_dashboard_lists_the_members(
    simulator: Simulator, redis_server: RedisServer, browser: Browser, serve: StartServe
) -> None:
    def member(name: str) -> tuple[str, str]:
        return f"{simulator.http_url}/?api-key={name}", redis_server.url

    async with httpx.AsyncClient() as http:
        procs = [await serve(*member("a"), env=FLEET_ENV)]
        await until(lambda: all_ready(http, procs), what="leader ready")
        procs.append(await serve(*member("b"), env=FLEET_ENV))
        await until(lambda: all_ready(http, procs), what="follower ready")
    page = await browser.new_page()
    await page.goto(procs[1].url + "/")
    await expect(page.locator("#fleet-card")).to_be_visible()
    await expect(page.locator("#fleet-role")).to_have_text("follower")
    await expect(page.locator("#fleet tbody tr")).to_have_count(2)
    rows = page.locator("#fleet tbody tr")
    await expect(rows.filter(has_text=f":{procs[0].pid}:")).to_contain_text("leader")
    await expect(rows.filter(has_text="(this process)")).to_contain_text(str(procs[1].pid))
