"""The simulator's fill model: every perp order fills against the market, never another user.

- The market quotes ``oracle * (1 - spread)`` to sell and ``oracle * (1 + spread)`` to buy
  (``fill_spread_bps``), rounded outward to the market's tick, with unlimited size.
- A *taking* order fills in full at that quote: a market order or an oracle order whenever its
  limit (if any) allows, and a limit order (not post-only) whose price reaches the quote when it
  arrives. ``place_and_take_perp_order`` takes at once; an order placed with
  ``place_perp_order`` or ``place_orders`` arrives on the next slot, when a keeper would fill it.
- A limit order that did not take *rests*, and fills in full at its own price on the first
  slot whose oracle price reaches it (at or below a bid, at or above an ask).
- Reduce-only orders fill at most the position they reduce, and are canceled once it is gone;
  orders past their ``max_ts`` are canceled instead of filled. No fees are charged.

The accounting of each fill is the program's: funding settled first, then the position and the
market's long/short totals moved as protocol-v2's ``update_position_and_market`` moves them.
"""

from __future__ import annotations

from typing import Any

from driftshare.sim._codec import variant_name
from driftshare.sim.drift.positions import direction_sign

__all__ = ["FillModel"]

_BPS = 10_000


class FillModel:
    """The market's quotes around the oracle, and which orders they fill at what price."""

    def __init__(self, spread_bps: float) -> None:
        if not spread_bps >= 0:
            raise ValueError(f"fill_spread_bps must be >= 0, got {spread_bps}")
        self.spread_bps = spread_bps

    def quotes(self, oracle_price: int, tick: int) -> tuple[int, int]:
        """The (bid, ask) the market fills takers at, around ``oracle_price``."""
        tick = max(1, tick)
        spread = oracle_price * self.spread_bps / _BPS
        bid = max(tick, int((oracle_price - spread) // tick) * tick)
        ask = -int(-(oracle_price + spread) // tick) * tick
        return bid, ask

    def limit_price(self, order: Any, oracle_price: int) -> int | None:
        """The order's limit: its price, or the oracle plus its offset; None for none at all."""
        offset: int = order.oracle_price_offset
        if offset != 0:
            return max(1, oracle_price + offset)
        price: int = order.price
        return price if price > 0 else None

    def crosses(self, order: Any, oracle_price: int, tick: int) -> bool:
        """Whether the order's limit reaches the market's quote (a market order always does)."""
        sign = direction_sign(order.direction)
        limit = self.limit_price(order, oracle_price)
        bid, ask = self.quotes(oracle_price, tick)
        return limit is None or (limit - (ask if sign > 0 else bid)) * sign >= 0

    def fill_price(
        self, order: Any, oracle_price: int, tick: int, *, arriving: bool, rest: bool
    ) -> int | None:
        """The price ``order`` fills at now, or None if it does not fill.

        An ``arriving`` limit order (one the market has not yet seen) takes at the market's
        quote if its price reaches it; market and oracle orders always may. With ``rest``, a
        limit order that does not take fills at its own price once the oracle reaches it.
        """
        sign = direction_sign(order.direction)
        kind = variant_name(order.order_type)
        may_take = not order.post_only and (arriving or kind != "Limit")
        if may_take and self.crosses(order, oracle_price, tick):
            bid, ask = self.quotes(oracle_price, tick)
            return ask if sign > 0 else bid
        limit = self.limit_price(order, oracle_price)
        if rest and kind == "Limit" and limit is not None and (limit - oracle_price) * sign >= 0:
            return limit
        return None
