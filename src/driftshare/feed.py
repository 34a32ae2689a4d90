"""DriftFundingFeed: the legacy funding feed, over :class:`~driftshare.adapter.DriftAdapter`."""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from driftshare.adapter import DriftAdapter
from driftshare.manager import DriftClientManager

__all__ = ["Direction", "DriftFundingFeed", "FundingInfo"]

log = logging.getLogger(__name__)

Direction = Literal["long_pays", "short_pays", "none"]


@dataclass(frozen=True, slots=True)
class FundingInfo:
    """Funding of one perp market as the feed reports it."""

    NOTIONAL_USD: ClassVar[float] = 1000.0
    """Position size :attr:`expected_8h_usd` is quoted for."""

    market: str
    rate_8h: float
    """Last settled hourly funding over 8 hours, in percent of the price."""
    rate_annual: float
    """Over a year of hourly payments, in percent."""
    is_positive: bool
    """True when longs pay shorts."""
    mark_price: float
    time_to_next_funding: int
    """Whole seconds until the next funding update; 0 once it is due."""
    stale: bool = False
    """The :class:`~driftshare.models.FundingRateData` flag: True when the data is older than
    ``DRIFT_STALE_AFTER_S``, the market is unavailable or upstream is down."""
    data_age_s: float = field(default=0.0, compare=False)
    """Seconds since the accounts behind this rate were last known current (not compared:
    two readings of the same rate are equal whatever their age)."""

    @property
    def direction(self) -> Direction:
        """``"long_pays"`` (longs pay shorts), ``"short_pays"``, or ``"none"`` at a zero rate."""
        if self.rate_8h > 0:
            return "long_pays"
        if self.rate_8h < 0:
            return "short_pays"
        return "none"

    @property
    def expected_8h_usd(self) -> float:
        """USD a long of :attr:`NOTIONAL_USD` pays over 8 hours (negative: it receives).

        A short of the same size receives this amount.
        """
        return self.expected_usd(self.NOTIONAL_USD)

    def expected_usd(self, notional_usd: float, hours: float = 8.0) -> float:
        """USD a long of ``notional_usd`` pays over ``hours`` at this rate (negative: receives)."""
        return notional_usd * self.rate_8h / 100 * hours / 8

    @classmethod
    def from_funding(cls, funding: dict[str, Any], time_to_next_funding: int) -> FundingInfo:
        """Build from a ``FundingRateData.to_dict()``."""
        return cls(
            market=str(funding["market"]),
            rate_8h=float(funding["rate_8h"]),
            rate_annual=float(funding["rate_annual"]),
            is_positive=bool(funding["is_positive"]),
            mark_price=float(funding["mark_price"]),
            time_to_next_funding=time_to_next_funding,
            # Unknown freshness is not freshness: without both keys the value is stale.
            stale=bool(funding.get("stale", True)),
            data_age_s=float(funding.get("data_age_s", math.inf)),
        )


class DriftFundingFeed:
    """Funding rates of Drift perp markets through a :class:`DriftAdapter`.

    Without ``drift_adapter`` the feed makes a singleton-backed adapter of the configured
    network, whose reads hold no reference (see :class:`DriftAdapter`), and disconnects it
    in :meth:`close`. ``markets`` (symbols or indexes) defaults
    to every perp market whose status is ``active``. Reads never raise for upstream
    problems: they answer ``None`` or empty results.
    """

    def __init__(
        self,
        drift_adapter: DriftAdapter | None = None,
        markets: Sequence[str | int] | None = None,
        *,
        sync_timeout_s: float = 30.0,
    ) -> None:
        self._owns_adapter = drift_adapter is None
        self.adapter = drift_adapter or DriftAdapter(DriftClientManager.settings().network)
        self.markets: list[str | int] | None = None if markets is None else list(markets)
        self.sync_timeout_s = sync_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_rates: dict[str, float] = {}

    def _note_loop(self) -> None:
        self._loop = asyncio.get_running_loop()

    def _seconds_until(self, next_funding_ts: int) -> int:
        return max(0, next_funding_ts - int(self.adapter.clock()))

    async def _market_list(self) -> list[str | int]:
        if self.markets is not None:
            return self.markets
        markets = await self.adapter.get_all_perp_markets()
        return [int(m["market_index"]) for m in markets if m["status"] == "active"]

    async def get_funding_rate(self, market: str | int) -> FundingInfo | None:
        """Funding of ``market`` (``SOL-PERP``, ``sol``, ``0``), or None."""
        self._note_loop()
        funding = await self.adapter.get_funding_rate(market)
        if funding is None:
            return None
        return FundingInfo.from_funding(
            funding, self._seconds_until(int(funding["next_funding_ts"]))
        )

    async def get_all_funding_rates(self) -> dict[str, FundingInfo]:
        """``{market: FundingInfo}`` of every market of the feed that has data, in the feed's
        market order."""
        self._note_loop()
        infos = [await self.get_funding_rate(m) for m in await self._market_list()]
        found = {info.market: info for info in infos if info is not None}
        self._last_rates = {market: info.rate_8h for market, info in found.items()}
        return found

    async def _rates_8h(self) -> dict[str, float]:
        return {
            market: info.rate_8h for market, info in (await self.get_all_funding_rates()).items()
        }

    async def _rates_8h_on_temporary_loop(self) -> dict[str, float]:
        # The loop ends with the call: close what was opened on it so no socket outlives it.
        try:
            return await self._rates_8h()
        finally:
            await self.adapter.disconnect()
            if self.adapter.use_singleton:
                await self._release_shared_of_this_loop()

    async def _release_shared_of_this_loop(self) -> None:
        # Inside a running loop the manager answers this loop's client only.
        shared = DriftClientManager.shared_state(self.adapter.network, rpc_url=self.adapter.rpc_url)
        # A client of this loop cannot outlive it: drop every reference and the read lease.
        closing = None if shared is None else shared.close_now()
        if closing is not None:
            await closing

    def get_funding_rates_sync(self) -> dict[str, float]:
        """``{market: rate_8h}`` for callers without ``await``.

        With no event loop running in this thread the rates are read on the feed's idle
        loop, else on a temporary one whose connections are closed before it ends (the
        thread's event loop, if one is set, stays set). From another thread while the feed's
        loop runs, the read runs on that loop and this thread waits up to ``sync_timeout_s``.
        From the thread of a running loop it cannot wait without blocking that loop, so it
        returns the rates of the last :meth:`get_all_funding_rates` (empty before the first).
        Any failure logs a warning and returns the last known rates.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._read_sync()
        return dict(self._last_rates)

    def _read_sync(self) -> dict[str, float]:
        loop = self._loop
        try:
            if loop is not None and loop.is_running():
                return self._wait_on(loop)
            if loop is not None and not loop.is_closed():
                return loop.run_until_complete(self._rates_8h())
            # Not asyncio.run: it would replace this thread's event loop and leave it unset.
            with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
                return runner.run(self._rates_8h_on_temporary_loop())
        except Exception as exc:  # the caller gets the last known rates, never an exception
            log.warning("cannot read funding rates: %r", exc)
        return dict(self._last_rates)

    def _wait_on(self, loop: asyncio.AbstractEventLoop) -> dict[str, float]:
        future = asyncio.run_coroutine_threadsafe(self._rates_8h(), loop)
        try:
            return future.result(self.sync_timeout_s)
        except TimeoutError:
            future.cancel()
            log.warning("funding rates not read within %.1fs", self.sync_timeout_s)
        return dict(self._last_rates)

    async def find_best_opportunity(self, min_rate_pct: float | None = None) -> FundingInfo | None:
        """The market with the largest ``|rate_8h|`` above ``min_rate_pct`` (any, if None)."""
        rates = list((await self.get_all_funding_rates()).values())
        if min_rate_pct is not None:
            rates = [info for info in rates if abs(info.rate_8h) > min_rate_pct]
        return max(rates, key=lambda info: abs(info.rate_8h), default=None)

    async def get_funding_markets(self) -> list[dict[str, Any]]:
        """Each market's funding with its open interest from the market account."""
        rates = (await self.get_all_funding_rates()).values()
        markets = {m["symbol"]: m for m in await self.adapter.get_all_perp_markets()}
        rows: list[dict[str, Any]] = []
        for info in rates:
            market = markets.get(info.market)
            if market is None:
                continue
            rows.append(
                {
                    "market": info.market,
                    "market_index": market["market_index"],
                    "rate_8h": info.rate_8h,
                    "rate_annual": info.rate_annual,
                    "is_positive": info.is_positive,
                    "direction": info.direction,
                    "mark_price": info.mark_price,
                    "oracle_price": market["oracle_price"],
                    "open_interest": market["open_interest"],
                    "open_interest_usd": market["open_interest_usd"],
                    "time_to_next_funding": info.time_to_next_funding,
                }
            )
        return rows

    async def get_market_stats(self) -> dict[str, Any]:
        """Counts, mean rates (None without markets) and total open interest in USD."""
        rows = await self.get_funding_markets()
        rates = [row["rate_8h"] for row in rows]
        return {
            "markets": len(rows),
            "positive": sum(1 for r in rates if r > 0),
            "negative": sum(1 for r in rates if r < 0),
            "average_rate_8h": statistics.fmean(rates) if rates else None,
            "average_rate_annual": (
                statistics.fmean(row["rate_annual"] for row in rows) if rows else None
            ),
            "total_open_interest_usd": sum(row["open_interest_usd"] for row in rows),
        }

    async def close(self) -> None:
        """Disconnect the adapter if the feed made it."""
        if self._owns_adapter:
            await self.adapter.disconnect()
