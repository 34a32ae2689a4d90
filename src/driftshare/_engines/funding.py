"""Funding engine: ranks every perp market by the size of its annualised funding."""

from __future__ import annotations

from typing import Any

from driftshare._engines.base import Engine, EngineDataError, Signal
from driftshare.feed import DriftFundingFeed

__all__ = ["FundingEngine"]


class FundingEngine(Engine):
    """Ranks markets by |APR| through :class:`DriftFundingFeed`; the top one is the signal.

    A positive rate means longs pay, so the side that collects is the short one; when even
    the largest rate is zero nobody pays and the action is ``no_edge``.
    """

    name = "funding"
    default_interval_s = 5.0
    top_n = 5

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.feed = DriftFundingFeed(drift_adapter=self.adapter)
        self.ranking: list[tuple[str, float]] = []
        """The ``top_n`` markets as (market, APR %), largest |APR| first."""

    async def _evaluate(self) -> Signal | None:
        rates = await self.feed.get_all_funding_rates()
        if not rates:
            raise EngineDataError("no funding rates")
        ranked = sorted(rates.values(), key=lambda info: abs(info.rate_annual), reverse=True)
        self.ranking = [(info.market, info.rate_annual) for info in ranked[: self.top_n]]
        best = ranked[0]
        if best.rate_annual > 0:
            action = "collect_short"
        elif best.rate_annual < 0:
            action = "collect_long"
        else:
            action = "no_edge"
        return self._signal(
            best.market, action, best.rate_annual, f"APR {best.rate_annual:+.2f}% funding"
        )
