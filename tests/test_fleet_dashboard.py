"""The dashboard of a fleet member shows the fleet (Debian's Chromium through Playwright)."""

from __future__ import annotations

import httpx
from playwright.async_api import Browser, expect

from driftshare._fleet._harness import RedisServer, ServeProcess, all_ready
from driftshare.sim import Simulator
from test_fleet_processes import FLEET_ENV, until
from test_web_browser import browser

__all__ = ["browser"]


async def test_the_dashboard_lists_the_members(
    simulator: Simulator, redis_server: RedisServer, browser: Browser
) -> None:
    procs = [
        ServeProcess(f"{simulator.http_url}/?api-key={name}", redis_server.url, env=FLEET_ENV)
        for name in "ab"
    ]
    try:
        procs[0].start()
        async with httpx.AsyncClient() as http:
            await until(lambda: all_ready(http, procs[:1]), what="leader ready")
            procs[1].start()
            await until(lambda: all_ready(http, procs), what="follower ready")
        page = await browser.new_page()
        await page.goto(procs[1].url + "/")
        await expect(page.locator("#fleet-card")).to_be_visible()
        await expect(page.locator("#fleet-role")).to_have_text("follower")
        await expect(page.locator("#fleet tbody tr")).to_have_count(2)
        rows = page.locator("#fleet tbody tr")
        await expect(rows.filter(has_text=f":{procs[0].pid}:")).to_contain_text("leader")
        await expect(rows.filter(has_text="(this process)")).to_contain_text(str(procs[1].pid))
    finally:
        for proc in procs:
            proc.stop()
