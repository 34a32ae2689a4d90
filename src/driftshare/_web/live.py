"""The dashboard's live view: one refresh loop over the shared reader, pushed to every page."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import suppress
from functools import partial
from typing import Any

from driftshare._data.marketdata import MarketDataReader
from driftshare._engines import Engine
from driftshare._web.accounts import trading_view
from driftshare.config import Network
from driftshare.manager import DriftClientManager
from driftshare.models import FundingRateData, MarketData

__all__ = ["LiveState"]

log = logging.getLogger(__name__)

_PUBLISH_EVERY_S = 1.0
"""Ages, countdowns and counters move even when market data does not: publish this often."""


class LiveState:
    """Reads every perp market from the shared client and keeps history: each ``refresh_s``
    while a page listens to :meth:`updates`, each ``idle_refresh_s`` while none does (enough
    to keep the shared client's read lease, ``/readyz`` and the first page current; no
    snapshot is built for nobody).

    ``rpc_url`` None means the one :meth:`DriftClientManager.configure` set. The data behind
    every dashboard: table rows, the manager panel, per-second RPC and cache
    series over ``history_s`` and a funding sparkline per market. :meth:`updates` yields a
    new snapshot whenever market data changes, and at least every second while running.
    A market whose values have not changed for ``stale_after_s``, or that the cache serves
    as stale, is marked stale; ``/readyz`` fails once the shared client's newest data is
    that old, or once every market is stale.
    """

    def __init__(
        self,
        *,
        network: Network,
        simulated: bool,
        rpc_url: str | None = None,
        engines: Sequence[Engine] = (),
        refresh_s: float = 0.25,
        idle_refresh_s: float = 5.0,
        stale_after_s: float = 30.0,
        history_s: int = 300,
        spark_every_s: float = 2.0,
        spark_points: int = 150,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.network: Network = network
        self.rpc_url = rpc_url
        self.simulated = simulated
        self.engines = list(engines)
        self.refresh_s = refresh_s
        self.idle_refresh_s = idle_refresh_s
        self.stale_after_s = stale_after_s
        self.spark_every_s = spark_every_s
        self._clock = clock
        self.started_at = clock()
        self.first_data_at: float | None = None
        self.first_data = asyncio.Event()
        """Set once some market data was read."""
        self.version = 0
        self.markets: list[MarketData] = []
        self.funding: dict[int, FundingRateData] = {}
        self._values: dict[int, tuple[Any, ...]] = {}
        self._changed_at: dict[int, float] = {}
        self._spark: dict[int, deque[float]] = {}
        self._spark_points = spark_points
        self._history: deque[tuple[float, float | None, float | None]] = deque(maxlen=history_s)
        self._last_sample: tuple[float, int, int, int] | None = None
        self._last_spark_at = 0.0
        self._published_at = 0.0
        self._snapshot: dict[str, Any] | None = None
        self._changed = asyncio.Condition()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._listeners = 0
        self._listener_joined = asyncio.Event()

    @property
    def reader(self) -> MarketDataReader:
        """The shared client's cached reader, the one every engine reads through too."""
        return DriftClientManager.market_data(self.network, rpc_url=self.rpc_url)

    def manager_stats(self) -> dict[str, Any]:
        """:meth:`DriftClientManager.stats` of the shared client this dashboard shows."""
        return DriftClientManager.stats(self.network, rpc_url=self.rpc_url)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start refreshing in the background."""
        if self._task is None:
            self._closed = False
            self._task = asyncio.create_task(self._run(), name="driftshare-dashboard")

    async def stop(self) -> None:
        """Stop refreshing and end every :meth:`updates` stream."""
        async with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            self._listener_joined.clear()
            try:
                await self.refresh()
            except Exception:  # the dashboard must outlive one bad read; the log says why
                log.exception("dashboard refresh failed")
            if self._listeners or self.first_data_at is None:  # a page, or data awaited
                await asyncio.sleep(self.refresh_s)
                continue
            with suppress(TimeoutError):  # the idle pause ends early for a new listener
                async with asyncio.timeout(self.idle_refresh_s):
                    await self._listener_joined.wait()

    async def updates(self) -> AsyncGenerator[dict[str, Any], None]:
        """The current snapshot, then each newer one, until :meth:`stop`; close it (``aclosing``)
        when done listening, or refreshing stays at the listening pace until it is collected."""
        self._listeners += 1
        self._listener_joined.set()
        try:
            seen = -1
            while True:
                async with self._changed:
                    await self._changed.wait_for(partial(self._has_news, seen))
                    if self._closed:
                        return
                    seen = self.version
                yield self.snapshot()
        finally:
            self._listeners -= 1

    def _has_news(self, seen: int) -> bool:
        return self._closed or self.version != seen

    # -- reading --------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Read every market once (from cache within its TTL); True if a value changed."""
        reader = self.reader
        markets = await reader.get_all_perp_markets()
        funding = {f.market_index: f for f in await reader.get_all_funding_rates()}
        now = self._clock()
        changed = self._track(markets, funding, now)
        self.markets, self.funding = markets, funding
        if markets and self.first_data_at is None:
            self.first_data_at = now
            self.first_data.set()
        self._sample(now)
        if not self._listeners:
            self._snapshot = None  # built when asked for (a page load, /api/stats), not now
        elif changed or now - self._published_at >= _PUBLISH_EVERY_S or self._snapshot is None:
            await self._publish(now)
        return changed

    def _track(
        self, markets: list[MarketData], funding: dict[int, FundingRateData], now: float
    ) -> bool:
        changed = False
        for market in markets:
            index = market.market_index
            rate = funding.get(index)
            values = (
                market.status,
                market.mark_price,
                market.oracle_price,
                market.open_interest,
                None if rate is None else (rate.rate_hourly, rate.predicted_rate_hourly),
            )
            if self._values.get(index) != values:
                self._values[index] = values
                self._changed_at[index] = now
                changed = True
        return changed

    def _sample(self, now: float) -> None:
        stats = self.manager_stats()
        cache = stats.get("cache", {})
        hits = sum(cache.get("hits", {}).values())
        misses = sum(cache.get("misses", {}).values())
        requests = int(stats.get("rpc", {}).get("requests", 0))
        last = self._last_sample
        if last is None:
            self._last_sample = (now, requests, hits, misses)
        elif now - last[0] >= 1.0:
            elapsed = now - last[0]
            lookups = (hits - last[2]) + (misses - last[3])
            self._history.append(
                (
                    now,
                    (requests - last[1]) / elapsed,
                    (hits - last[2]) / lookups if lookups else None,
                )
            )
            self._last_sample = (now, requests, hits, misses)
        if self.funding and now - self._last_spark_at >= self.spark_every_s:
            self._last_spark_at = now
            for index, rate in self.funding.items():
                value = rate.predicted_rate_hourly
                spark = self._spark.setdefault(index, deque(maxlen=self._spark_points))
                spark.append(rate.rate_hourly if value is None else value)

    async def _publish(self, now: float) -> None:
        self._published_at = now
        snapshot = self._build(now)
        async with self._changed:
            self.version += 1
            snapshot["version"] = self.version
            self._snapshot = snapshot
            self._changed.notify_all()

    # -- views ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything the dashboard shows, JSON-ready."""
        if self._snapshot is None:
            self._snapshot = self._build(self._clock())
        return self._snapshot

    def rows(self, now: float | None = None) -> list[dict[str, Any]]:
        """One row per market: funding, prices, OI, countdown, data age and staleness."""
        now = self._clock() if now is None else now
        rows = []
        for market in self.markets:
            index = market.market_index
            rate = self.funding.get(index)
            # A value read from a snapshot is as old as its data, however recently it appeared.
            data_age = market.data_age_s if math.isfinite(market.data_age_s) else 0.0
            age = max(now - self._changed_at.get(index, now), data_age)
            stale = market.stale or (rate is not None and rate.stale) or age > self.stale_after_s
            rows.append(
                {
                    "market_index": index,
                    "symbol": market.symbol,
                    "status": market.status,
                    "rate_hourly": None if rate is None else rate.rate_hourly,
                    "rate_8h": None if rate is None else rate.rate_8h,
                    "rate_annual": None if rate is None else rate.rate_annual,
                    "predicted_rate_hourly": None if rate is None else rate.predicted_rate_hourly,
                    "mark_price": market.mark_price,
                    "oracle_price": market.oracle_price,
                    "open_interest_usd": market.open_interest_usd,
                    "next_funding_ts": None if rate is None else rate.next_funding_ts,
                    "data_age_s": round(age, 3),
                    "stale": stale,
                    "spark": [round(v * 100, 8) for v in self._spark.get(index, ())],
                }
            )
        return rows

    def readiness(self) -> tuple[bool, str]:
        """Whether the shared client serves fresh data, and why not."""
        stats = self.manager_stats()
        if not stats.get("initialized"):
            return False, "the shared DriftClient is not connected yet"
        if stats.get("health") != "healthy":
            return False, f"the shared DriftClient is {stats.get('health')}"
        if not self.markets:
            return False, "no market data yet"
        if all(row["stale"] for row in self.rows()):
            # A fleet follower holding only a dead leader's records has no new data either,
            # however recently its newest (other) account was confirmed.
            return False, "every market's data is stale"
        age = stats.get("last_update_age_s")
        if age is None or age > self.stale_after_s:
            return False, f"no new data for more than {self.stale_after_s:g}s"
        return True, "fresh data"

    def manager_panel(self, now: float | None = None) -> dict[str, Any]:
        """References, mode, health, traffic and cache figures of the shared client."""
        now = self._clock() if now is None else now
        stats = self.manager_stats()
        cache = stats.get("cache", {})
        hits = sum(cache.get("hits", {}).values())
        misses = sum(cache.get("misses", {}).values())
        # The cards show the charts' newest points: one definition for each figure.
        _, rps, hit_ratio = self._history[-1] if self._history else (now, None, None)
        return {
            "references": stats.get("references", 0),
            "initializations": stats.get("initializations", 0),
            "subscription_mode": stats.get("subscription_mode"),
            "health": stats.get("health", "idle"),
            "last_error": stats.get("last_error"),
            "rpc_requests": int(stats.get("rpc", {}).get("requests", 0)),
            "rpc_requests_per_s": rps,
            "rate_limited": stats.get("rate_limited", 0),
            "retries": stats.get("retries", 0),
            "rpc_endpoints": len(stats.get("rpc_endpoints", [])) or 1,
            "endpoint_switches": stats.get("endpoint_switches", 0),
            "cache_hits": hits,
            "cache_misses": misses,
            "cache_hit_ratio": hit_ratio,
            "time_to_ready_s": stats.get("time_to_ready_s"),
            "time_to_first_data_s": (
                None if self.first_data_at is None else self.first_data_at - self.started_at
            ),
            "uptime_s": now - self.started_at,
            "last_update_age_s": stats.get("last_update_age_s"),
            "data_slot": stats.get("data_slot"),
            "markets": len(self.markets),
        }

    def _build(self, now: float) -> dict[str, Any]:
        ready, reason = self.readiness()
        history = list(self._history)
        rows = self.rows(now)
        panel = self.manager_panel(now)
        panel["stale_markets"] = sum(1 for row in rows if row["stale"])
        stats = self.manager_stats()
        return {
            "version": self.version,
            "network": self.network,
            "rpc_url": stats["rpc_url"],
            "simulated": self.simulated,
            "server_time": now,
            "ready": ready,
            "ready_reason": reason,
            "manager": panel,
            "fleet": stats.get("fleet"),
            "history": {
                "t": [round(t, 3) for t, _, _ in history],
                "rpc_requests_per_s": [r for _, r, _ in history],
                "cache_hit_ratio": [h for _, _, h in history],
            },
            "markets": rows,
            "engines": [engine.status() for engine in self.engines],
            **trading_view(self.network, self.rpc_url),
        }
