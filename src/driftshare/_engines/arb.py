"""Arb engine: the basis between each perp's AMM mark and its oracle."""

from __future__ import annotations

from typing import Any

from driftshare._engines.base import Engine, EngineDataError, Signal

__all__ = ["ArbEngine"]


class ArbEngine(Engine):
    """The market whose mark strays furthest from its oracle, in basis points.

    Beyond ``threshold_bps`` the signal names the leg to sell: the perp when it trades rich
    (mark above oracle), the spot otherwise.
    """

    name = "arb"
    default_interval_s = 1.0

    def __init__(self, *, threshold_bps: float = 10.0, **options: Any) -> None:
        super().__init__(**options)
        self.threshold_bps = threshold_bps

    async def _evaluate(self) -> Signal | None:
        markets = await self.adapter.get_all_perp_markets()
        if not markets:
            raise EngineDataError("no perp markets")
        best: tuple[float, str] | None = None
        for market in markets:
            mark, oracle = float(market["mark_price"]), float(market["oracle_price"])
            if market["status"] != "active" or mark <= 0 or oracle <= 0:
                continue
            basis = (mark / oracle - 1) * 1e4
            if best is None or abs(basis) > abs(best[0]):
                best = (basis, str(market["symbol"]))
        if best is None:
            return None
        basis, symbol = best
        if basis >= self.threshold_bps:
            action = "sell_perp_buy_spot"
        elif basis <= -self.threshold_bps:
            action = "buy_perp_sell_spot"
        else:
            action = "no_edge"
        return self._signal(symbol, action, basis, f"basis {basis:+.1f} bps")
