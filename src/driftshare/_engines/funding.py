"""Funding engine: ranks every perp market by the size of its annualised funding, and (with a
trading wallet, on the simulator) opens and closes small delta-neutral positions on it."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from solders.keypair import Keypair

from driftshare._engines.base import Engine, EngineDataError, Signal
from driftshare.feed import DriftFundingFeed, FundingInfo

__all__ = ["FundingEngine"]


class FundingEngine(Engine):
    """Ranks markets by |APR| through :class:`DriftFundingFeed`; the top one is the signal.

    A positive rate means longs pay, so the side that collects is the short one; when even
    the largest rate is zero nobody pays and the action is ``no_edge``.
    """

    name = "funding"
    default_interval_s = 5.0
    top_n = 5
    notional_usd = 50.0
    """Each leg of a trade, in USD."""
    collateral_usd = 1_000.0
    hedge_market = "SOL-PERP"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.feed = DriftFundingFeed(drift_adapter=self.adapter)
        self.ranking: list[tuple[str, float]] = []
        """The ``top_n`` markets as (market, APR %), largest |APR| first."""
        self.trading = False
        self._funded = False
        self._legs: list[str] = []
        """Markets with a position this engine opened."""
        self.orders: dict[str, int] = {"confirmed": 0, "failed": 0, "unknown": 0}
        self.last_order: dict[str, Any] | None = None

    def trade_with(self, wallet: Keypair) -> None:
        """Trade with ``wallet``'s sub-account 0 (call before :meth:`start`): each tick closes
        the legs it holds, or opens two of the same notional: the collecting side of the
        largest funding and the opposite side on :attr:`hedge_market`."""
        self.wallet = wallet
        self.trading = True

    def status(self) -> dict[str, Any]:
        status = super().status()
        if self.trading:
            status["orders"] = dict(self.orders)
            status["last_order"] = self.last_order
        return status

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
        if self.trading:
            await self._trade(best, ranked[-1], action)
        return self._signal(
            best.market, action, best.rate_annual, f"APR {best.rate_annual:+.2f}% funding"
        )

    async def _trade(self, best: FundingInfo, quietest: FundingInfo, action: str) -> None:
        if not self._funded:
            self._funded = await self._write(self.adapter.deposit(self.collateral_usd))
            return
        if self._legs:
            # Last opened, first closed: the hedge (opened first) goes last.
            legs, self._legs = self._legs, []
            for market in reversed(legs):
                await self._write(self.adapter.close_position(market))
            return
        if action == "no_edge":
            return
        side = "short" if action == "collect_short" else "long"
        opposite = "long" if side == "short" else "short"
        # The hedge is SOL-PERP, the deepest market, unless the funding is there: then the
        # market with the smallest funding.
        if best.market == self.hedge_market:
            plan = [(best.market, side), (quietest.market, opposite)]
        else:
            plan = [(self.hedge_market, opposite), (best.market, side)]
        for market, direction in plan:
            price = await self.adapter.get_mark_price(market)
            if not price:
                return
            order = self.adapter.place_perp_order(market, direction, self.notional_usd / price)
            if not await self._write(order):
                return  # one leg alone is not delta-neutral: the next tick closes it
            self._legs.append(market)

    async def _write(self, write: Awaitable[dict[str, Any]]) -> bool:
        result = await write
        status = str(result["status"])
        self.orders[status] = self.orders.get(status, 0) + 1
        self.last_order = {k: result[k] for k in ("status", "signature", "slot", "error")}
        if status != "confirmed":
            self._record_error(f"order {status}: {result['error']}")
        return status == "confirmed"
