"""Fills: an order's base and quote moved into its user's position and market."""

from __future__ import annotations

import logging
from typing import Any

from driftpy.constants.numeric_constants import BASE_PRECISION
from solders.pubkey import Pubkey

from driftshare.sim._codec import variant, variant_name
from driftshare.sim.drift.books import Books
from driftshare.sim.drift.orders import cancel_order, is_open, retire_order, unfilled
from driftshare.sim.drift.positions import (
    apply_fill,
    change_open_orders,
    direction_sign,
    perp_position,
    settle_funding,
)

__all__ = ["fill_order", "open_perp_orders"]

log = logging.getLogger(__name__)


def fill_order(books: Books, user_pubkey: Pubkey, user: Any, order: Any, price: int) -> int:
    """Fill what is left of an open perp ``order`` of ``user`` at ``price``; the base filled.

    Marks the user and the market changed in ``books``.
    """
    index = order.market_index
    market = books.perp_market(index)
    books.mark(user_pubkey)
    books.mark_perp_market(index)
    settle_funding(user, market)
    position = perp_position(user, index)
    if position is None:
        raise LookupError(f"open order {order.order_id} has no position in market {index}")
    base = unfilled(order, position.base_asset_amount)
    if base == 0:
        cancel_order(user, order)
        return 0
    sign = direction_sign(order.direction)
    notional = base * price
    quote = -(-notional // BASE_PRECISION) if sign > 0 else notional // BASE_PRECISION
    apply_fill(position, market, sign * base, -sign * quote)
    market.amm.base_asset_amount_with_amm += sign * base
    market.amm.last_trade_ts = books.now
    market.last_fill_price = price
    market.next_fill_record_id += 1
    order.base_asset_amount_filled += base
    order.quote_asset_amount_filled += quote
    change_open_orders(position, order.direction, -base)
    if order.base_asset_amount_filled >= order.base_asset_amount:
        order.status = variant("OrderStatus", "Filled")
        retire_order(user, position, order)
    elif order.reduce_only and unfilled(order, position.base_asset_amount) == 0:
        cancel_order(user, order)
    user.last_active_slot = books.slot
    log.debug("filled order %d of %s: %d base at %d", order.order_id, user_pubkey, base, price)
    return base


def open_perp_orders(user: Any) -> list[Any]:
    """The user's open perp orders, in the order they sit in the account."""
    return [o for o in user.orders if is_open(o) and variant_name(o.market_type) == "Perp"]
