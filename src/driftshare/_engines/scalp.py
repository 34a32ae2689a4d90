"""Scalp engine: short-horizon moves of mark and oracle prices."""

from __future__ import annotations

from collections import deque
from typing import Any

from driftshare._engines.base import Engine, EngineDataError, Signal

__all__ = ["ScalpEngine"]


class ScalpEngine(Engine):
    """The largest mark-price move over the last ``window`` ticks, in basis points.

    Moves beyond ``threshold_bps`` are momentum signals; the oracle's move over the same
    window is reported alongside, since a mark running ahead of its oracle tends to revert.
    """

    name = "scalp"
    default_interval_s = 0.5

    def __init__(self, *, window: int = 10, threshold_bps: float = 20.0, **options: Any) -> None:
        super().__init__(**options)
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        self.window = window
        self.threshold_bps = threshold_bps
        self._history: dict[str, deque[tuple[float, float]]] = {}

    async def _evaluate(self) -> Signal | None:
        markets = await self.adapter.get_all_perp_markets()
        if not markets:
            raise EngineDataError("no perp markets")
        best: tuple[float, float, str] | None = None
        for market in markets:
            mark, oracle = float(market["mark_price"]), float(market["oracle_price"])
            if market["status"] != "active" or mark <= 0 or oracle <= 0:
                continue
            symbol = str(market["symbol"])
            history = self._history.setdefault(symbol, deque(maxlen=self.window))
            history.append((mark, oracle))
            if len(history) < 2:
                continue
            first_mark, first_oracle = history[0]
            mark_bps = (mark / first_mark - 1) * 1e4
            oracle_bps = (oracle / first_oracle - 1) * 1e4
            if best is None or abs(mark_bps) > abs(best[0]):
                best = (mark_bps, oracle_bps, symbol)
        if best is None:
            return None
        mark_bps, oracle_bps, symbol = best
        if mark_bps >= self.threshold_bps:
            action = "momentum_long"
        elif mark_bps <= -self.threshold_bps:
            action = "momentum_short"
        else:
            action = "flat"
        return self._signal(
            symbol, action, mark_bps, f"mark {mark_bps:+.1f} bps, oracle {oracle_bps:+.1f} bps"
        )
