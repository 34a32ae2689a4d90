"""LST engine: the carry of holding staked SOL hedged with a SOL-PERP short."""

from __future__ import annotations

from typing import Any

from driftshare._engines.base import Engine, EngineDataError, Signal

__all__ = ["LstEngine"]


class LstEngine(Engine):
    """Staking yield plus SOL-PERP funding earned by the short hedge, as one APR.

    ``staking_apr_pct`` is an assumption, not read from chain: a typical liquid-staking
    yield. The hedge is worth holding while the combined APR beats ``min_apr_pct``.
    """

    name = "lst"
    default_interval_s = 10.0
    market = "SOL-PERP"

    def __init__(
        self, *, staking_apr_pct: float = 7.0, min_apr_pct: float = 5.0, **options: Any
    ) -> None:
        super().__init__(**options)
        self.staking_apr_pct = staking_apr_pct
        self.min_apr_pct = min_apr_pct

    async def _evaluate(self) -> Signal | None:
        funding = await self.adapter.get_funding_rate(self.market)
        if funding is None:
            raise EngineDataError(f"no funding for {self.market}")
        funding_apr = float(funding["rate_annual"])
        price = float(funding["oracle_price"])
        # The hedge is short the perp: it receives funding when longs pay (positive rate).
        carry = self.staking_apr_pct + funding_apr
        action = "hold_hedge" if carry >= self.min_apr_pct else "unwind_hedge"
        return self._signal(
            self.market,
            action,
            carry,
            f"carry APR {carry:+.2f}% (staking {self.staking_apr_pct:.2f}% "
            f"+ funding {funding_apr:+.2f}%), SOL ${price:,.2f}",
        )
