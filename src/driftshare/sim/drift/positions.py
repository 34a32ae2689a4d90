"""Users' positions: finding them, and perp positions moved by fills, funding and settled PnL.

The accounting is protocol-v2's (``controller/position.rs`` and ``controller/funding.rs``):
quote entry and break-even amounts, realized PnL on reduce, close and flip, the market's long
and short totals, and funding settled into the position's quote before any fill.
"""

from __future__ import annotations

import copy
from typing import Any

from driftpy.constants.numeric_constants import (
    AMM_TO_QUOTE_PRECISION_RATIO,
    FUNDING_RATE_BUFFER,
    PRICE_PRECISION,
)
from driftpy.math.perp_position import is_available as perp_position_available
from driftpy.math.spot_position import is_spot_position_available

from driftshare.sim import _codec
from driftshare.sim.drift.errors import drift_error

__all__ = [
    "apply_fill",
    "change_open_orders",
    "direction_sign",
    "div_trunc",
    "open_perp_position",
    "perp_position",
    "settle_funding",
    "spot_position",
    "update_quote_asset_amount",
]


def div_trunc(numerator: int, denominator: int) -> int:
    """Integer division rounding toward zero, as Rust's does."""
    quotient = abs(numerator) // abs(denominator)
    return quotient if (numerator >= 0) == (denominator > 0) else -quotient


def spot_position(user: Any, market_index: int) -> Any:
    """The user's position in spot market ``market_index``, opened if it has none.

    Position 0 is always the quote market's, as in the program; Drift's
    ``NoSpotPositionAvailable`` when every other slot is taken.
    """
    if market_index == 0:
        return user.spot_positions[0]
    for position in user.spot_positions[1:]:
        if position.market_index == market_index and not is_spot_position_available(position):
            return position
    for index in range(1, len(user.spot_positions)):
        if is_spot_position_available(user.spot_positions[index]):
            position = copy.deepcopy(_codec.blank("User").spot_positions[0])
            position.market_index = market_index
            user.spot_positions[index] = position
            return position
    raise drift_error("NoSpotPositionAvailable", f"spot market {market_index}")


def perp_position(user: Any, market_index: int) -> Any | None:
    """The user's position in perp market ``market_index``, or None if it has none."""
    for position in user.perp_positions:
        if position.market_index == market_index and not perp_position_available(position):
            return position
    return None


def open_perp_position(user: Any, market_index: int) -> Any:
    """The user's position in perp market ``market_index``, opened in the first free slot if it
    has none (keeping that slot's custom margin ratio if it was this market's); Drift's
    ``MaxNumberOfPositions`` if none is free.
    """
    found = perp_position(user, market_index)
    if found is not None:
        return found
    for index, old in enumerate(user.perp_positions):
        if perp_position_available(old):
            position = copy.deepcopy(_codec.blank("User").perp_positions[0])
            position.market_index = market_index
            if old.market_index == market_index:
                position.max_margin_ratio = old.max_margin_ratio
            user.perp_positions[index] = position
            return position
    raise drift_error("MaxNumberOfPositions", f"perp market {market_index}")


def _count_users(market: Any, position: Any, before_empty: bool) -> None:
    """Keep ``number_of_users`` counting positions holding base or quote."""
    after_empty = position.base_asset_amount == 0 and position.quote_asset_amount == 0
    market.number_of_users += int(before_empty) - int(after_empty)


def update_quote_asset_amount(position: Any, market: Any, delta: int) -> None:
    """Add ``delta`` quote to a position and its market's AMM quote total."""
    if delta == 0:
        return
    before_empty = position.base_asset_amount == 0 and position.quote_asset_amount == 0
    position.quote_asset_amount += delta
    market.amm.quote_asset_amount += delta
    _count_users(market, position, before_empty)


def _update_break_even(position: Any, market: Any, delta: int) -> None:
    if delta == 0 or position.base_asset_amount == 0:
        return
    position.quote_break_even_amount += delta
    if position.base_asset_amount > 0:
        market.amm.quote_break_even_amount_long += delta
    else:
        market.amm.quote_break_even_amount_short += delta


def settle_funding(user: Any, market: Any) -> int:
    """Settle the funding a user's position in ``market`` owes or earns into its quote.

    Longs pay shorts ``(cumulative rate - position's last rate) * base``; returns the payment
    (quote precision, positive when received).
    """
    position = perp_position(user, market.market_index)
    if position is None or position.base_asset_amount == 0:
        return 0
    amm = market.amm
    long = position.base_asset_amount > 0
    cumulative: int = (
        amm.cumulative_funding_rate_long if long else amm.cumulative_funding_rate_short
    )
    rate_delta = cumulative - position.last_cumulative_funding_rate
    if rate_delta == 0:
        return 0
    magnitude = (
        abs(rate_delta)
        * abs(position.base_asset_amount)
        // PRICE_PRECISION
        // FUNDING_RATE_BUFFER
        // AMM_TO_QUOTE_PRECISION_RATIO
    )
    payment: int = magnitude * (-1 if long else 1) * (1 if rate_delta > 0 else -1)
    user.cumulative_perp_funding += payment
    position.last_cumulative_funding_rate = cumulative
    update_quote_asset_amount(position, market, payment)
    _update_break_even(position, market, payment)
    amm.net_unsettled_funding_pnl -= payment
    return payment


def apply_fill(position: Any, market: Any, base_delta: int, quote_delta: int) -> int:
    """Move a position by a fill of ``base_delta`` base for ``quote_delta`` quote.

    Updates the position's base, quote, entry and break-even amounts, its funding rate, and
    the market's long/short base and entry totals and user counts. Funding must be settled
    first. Returns the PnL the fill realized (quote precision).
    """
    amm = market.amm
    base = position.base_asset_amount
    new_base = base + base_delta
    before_empty = base == 0 and position.quote_asset_amount == 0
    entry = position.quote_entry_amount
    break_even = position.quote_break_even_amount
    if base == 0 or (base > 0) == (base_delta > 0):
        kind = "open" if base == 0 else "increase"
        new_entry = entry + quote_delta
        new_break_even = break_even + quote_delta
        pnl = 0
    elif abs(base_delta) <= abs(base):
        kind = "close" if new_base == 0 else "reduce"
        new_entry = entry - div_trunc(entry * abs(base_delta), abs(base))
        new_break_even = break_even - div_trunc(break_even * abs(base_delta), abs(base))
        pnl = entry - new_entry + quote_delta
    else:
        kind = "flip"
        new_entry = quote_delta - div_trunc(quote_delta * abs(base), abs(base_delta))
        new_break_even = new_entry
        pnl = entry + quote_delta - new_entry

    if kind == "open":
        market.number_of_users_with_base += 1
    elif kind == "close":
        market.number_of_users_with_base = max(0, market.number_of_users_with_base - 1)
    amm.quote_asset_amount += quote_delta
    if kind in ("open", "increase"):
        _move_side(amm, new_base > 0, base_delta, quote_delta, quote_delta)
    elif kind in ("reduce", "close"):
        _move_side(amm, base > 0, base_delta, new_entry - entry, new_break_even - break_even)
    else:
        _move_side(amm, base > 0, -base, -entry, -break_even)
        _move_side(amm, new_base > 0, new_base, new_entry, new_break_even)

    if kind == "close":
        position.last_cumulative_funding_rate = 0
    elif kind != "reduce":
        position.last_cumulative_funding_rate = (
            amm.cumulative_funding_rate_long if new_base > 0 else amm.cumulative_funding_rate_short
        )
    position.base_asset_amount = new_base
    position.quote_asset_amount += quote_delta
    position.quote_entry_amount = new_entry
    position.quote_break_even_amount = new_break_even
    _count_users(market, position, before_empty)
    return pnl


def _move_side(amm: Any, long: bool, base: int, entry: int, break_even: int) -> None:
    """Add to the AMM's totals of its long or its short side."""
    side = "long" if long else "short"
    for field_name, delta in (
        (f"base_asset_amount_{side}", base),
        (f"quote_entry_amount_{side}", entry),
        (f"quote_break_even_amount_{side}", break_even),
    ):
        setattr(amm, field_name, getattr(amm, field_name) + delta)


def direction_sign(direction: Any) -> int:
    """+1 for a long (bid) direction, -1 for a short (ask)."""
    return 1 if type(direction).__name__ == "Long" else -1


def change_open_orders(position: Any, direction: Any, base: int) -> None:
    """Add ``base`` (negative to remove) to a position's open bids or asks."""
    if direction_sign(direction) > 0:
        position.open_bids += base
    else:
        position.open_asks -= base
