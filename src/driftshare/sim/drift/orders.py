"""Perp orders on a User account: placing, canceling, expiring and modifying them.

The rules and error codes are protocol-v2's (``controller/orders.rs``, ``validation/order.rs``):
the first free order slot, ``user_order_id`` unique among open orders, sizes standardized to
the step and prices to the tick, ``max_ts`` (default 30 s for market and oracle orders) after
which an order is skipped or expired, post-only orders that would take refused, slid or skipped
as their ``PostOnlyParam`` says, reduce-only and risk-increasing margin checks. Auctions,
trigger orders and spot orders are not simulated.
"""

from __future__ import annotations

import copy
from typing import Any

from driftpy.accounts.oracle import DRIFT_CODER
from solders.pubkey import Pubkey

from driftshare.sim import _codec
from driftshare.sim._codec import variant, variant_name
from driftshare.sim.drift.books import Books
from driftshare.sim.drift.errors import drift_error, unsupported
from driftshare.sim.drift.margin import require_margin
from driftshare.sim.drift.positions import (
    change_open_orders,
    direction_sign,
    open_perp_position,
    perp_position,
)
from driftshare.sim.drift.pricing import FillModel

__all__ = [
    "MUST_MODIFY",
    "cancel_order",
    "expire_orders",
    "is_open",
    "modified_params",
    "place_perp_order",
    "retire_order",
    "unfilled",
]

_U64_MAX = 2**64 - 1
_IOC_FLAG = 1
"""``OrderParamsBitFlag.IMMEDIATE_OR_CANCEL``."""
_USER_REDUCE_ONLY = 4
"""``UserStatus::ReduceOnly``'s bit."""
_DEFAULT_MARKET_ORDER_TTL = 30
_MAX_PREDICTION_PRICE = 1_000_000
MUST_MODIFY = 1
EXCLUDE_PREVIOUS_FILL = 2
"""``ModifyOrderParams.policy`` bits (a ``u8`` in the IDL), as protocol-v2 defines them."""
_ZERO_PARAMS = bytes(128)
"""Decodes as the IDL's ``OrderParams`` with every field zero, false, None or its first variant."""


def is_open(order: Any) -> bool:
    return variant_name(order.status) == "Open"


def unfilled(order: Any, position_base: int | None = None) -> int:
    """Base left to fill; for a reduce-only order given the position, at most what it reduces."""
    left: int = order.base_asset_amount - order.base_asset_amount_filled
    if position_base is None or not order.reduce_only:
        return left
    reduces = position_base * direction_sign(order.direction) < 0
    return min(left, abs(position_base)) if reduces else 0


def retire_order(user: Any, position: Any, order: Any) -> None:
    """Count an order that left the book out of the user's and its position's open orders."""
    user.open_orders = max(0, user.open_orders - 1)
    user.has_open_order = user.open_orders > 0
    if order.auction_duration != 0:
        user.open_auctions = max(0, user.open_auctions - 1)
        user.has_open_auction = user.open_auctions > 0
    position.open_orders -= 1


def cancel_order(user: Any, order: Any) -> None:
    """Cancel an open perp order: its unfilled base leaves the position's open bids or asks.

    Drift's ``OrderNotOpen`` if it is not open.
    """
    if not is_open(order):
        raise drift_error("OrderNotOpen", f"order {order.order_id}")
    if variant_name(order.market_type) != "Perp":
        raise unsupported("canceling a spot order")
    position = perp_position(user, order.market_index)
    if position is None:
        raise drift_error("UserHasNoPositionInMarket", f"market {order.market_index}")
    change_open_orders(position, order.direction, -unfilled(order))
    retire_order(user, position, order)
    order.status = variant("OrderStatus", "Canceled")


def expire_orders(user: Any, now: int) -> None:
    """Cancel every open order whose ``max_ts`` has passed."""
    for order in user.orders:
        if is_open(order) and order.max_ts != 0 and now > order.max_ts:
            cancel_order(user, order)


def place_perp_order(
    books: Books,
    user_pubkey: Pubkey,
    user: Any,
    params: Any,
    model: FillModel,
    *,
    check_margin: bool = True,
    expire_first: bool = True,
) -> Any | None:
    """Place a perp order from ``params`` (the IDL's ``OrderParams``) on ``user``.

    Returns the new order, or None when the program skips it without failing (``max_ts``
    already past, or a ``TryPostOnly`` order that would take). Marks the user changed: even a
    skipped order may have expired others and used an order id, as in the program.
    """
    now, slot = books.now, books.slot
    books.mark(user_pubkey)
    if expire_first:
        expire_orders(user, now)
    if user.status & _USER_REDUCE_ONLY and not params.reduce_only:
        raise drift_error("UserReduceOnly", "order must be reduce only")
    slot_index = next((i for i, o in enumerate(user.orders) if not is_open(o)), None)
    if slot_index is None:
        raise drift_error("MaxNumberOfOrders")
    if params.user_order_id > 0 and any(
        is_open(o) and o.user_order_id == params.user_order_id for o in user.orders
    ):
        raise drift_error("UserOrderIdAlreadyInUse", f"user_order_id {params.user_order_id}")
    market = books.perp_market(params.market_index)
    status = variant_name(market.status)
    if status == "Initialized":
        raise drift_error("MarketBeingInitialized")
    if status in ("Settlement", "Delisted") or 0 < market.expiry_ts <= now:
        raise drift_error("MarketPlaceOrderPaused", "market is in settlement")
    order_type = variant_name(params.order_type)
    if order_type in ("TriggerMarket", "TriggerLimit"):
        raise unsupported(f"{order_type} orders")
    amm = market.amm
    position = open_perp_position(user, params.market_index)
    if params.base_asset_amount < amm.order_step_size:
        raise drift_error("OrderAmountTooSmall", f"step size {amm.order_step_size}")
    if params.base_asset_amount == _U64_MAX:
        raise unsupported("orders sized u64::MAX (the largest the margin allows)")
    base = params.base_asset_amount - params.base_asset_amount % amm.order_step_size
    oracle_price = books.perp_oracle(params.market_index).price
    max_ts = params.max_ts
    if max_ts is None:
        max_ts = now + _DEFAULT_MARKET_ORDER_TTL if order_type in ("Market", "Oracle") else 0
    if max_ts != 0 and max_ts < now:
        books.log(f"max_ts ({max_ts}) < now ({now}), skipping order")
        return None
    if variant_name(params.market_type) != "Perp":
        raise drift_error("InvalidOrderMarketType", "must be perp order")

    force_reduce_only = status == "ReduceOnly"
    post_only = variant_name(params.post_only)
    bid, ask = model.quotes(oracle_price, amm.order_tick_size)
    order = copy.deepcopy(_codec.blank("User").orders[0])
    order.status = variant("OrderStatus", "Open")
    order.order_type = params.order_type
    order.market_type = params.market_type
    order.slot = slot
    order.order_id = user.next_order_id
    order.user_order_id = params.user_order_id
    order.market_index = params.market_index
    order.price = _standard_price(params.price, amm.order_tick_size, params.direction)
    if post_only == "Slide":
        if direction_sign(params.direction) > 0 and order.price >= ask:
            order.price = ask - amm.order_tick_size
        elif direction_sign(params.direction) < 0 and order.price <= bid:
            order.price = bid + amm.order_tick_size
    order.existing_position_direction = variant(
        "PositionDirection", "Long" if position.base_asset_amount >= 0 else "Short"
    )
    order.base_asset_amount = base
    order.direction = params.direction
    order.reduce_only = params.reduce_only or force_reduce_only
    order.trigger_condition = params.trigger_condition
    order.post_only = post_only != "None"
    order.oracle_price_offset = params.oracle_price_offset or 0
    order.immediate_or_cancel = bool(params.bit_flags & _IOC_FLAG)
    order.auction_duration = params.auction_duration or 0
    order.auction_start_price = params.auction_start_price or 0
    order.auction_end_price = params.auction_end_price or 0
    order.max_ts = max_ts
    order.posted_slot_tail = slot & 0xFF
    user.next_order_id += 1

    try:
        _validate(order, market, model, oracle_price, params.trigger_price or 0)
    except _WouldTake:
        if post_only == "TryPostOnly":
            return None
        raise drift_error("PlacePostOnlyLimitFailure", "post-only order would take") from None

    risk_increasing = _risk_increasing(order, position)
    user.open_orders += 1
    user.has_open_order = True
    if order.auction_duration != 0:
        user.open_auctions += 1
        user.has_open_auction = True
    user.orders[slot_index] = order
    position.open_orders += 1
    change_open_orders(position, order.direction, base)

    if check_margin:
        require_margin(books, user_pubkey, user, initial=risk_increasing)
    if force_reduce_only:
        _check_force_reduce_only(order, position.base_asset_amount)
    if amm.max_open_interest != 0 and risk_increasing:
        sign = direction_sign(order.direction)
        side = amm.base_asset_amount_long if sign > 0 else amm.base_asset_amount_short
        if abs(side + sign * base) > amm.max_open_interest:
            raise drift_error("MaxOpenInterest", f"market {order.market_index}")
    user.last_active_slot = slot
    user.idle = False
    return order


class _WouldTake(Exception):
    """A post-only order priced to take from the market."""


def _standard_price(price: int, tick: int, direction: Any) -> int:
    """The price on the tick grid: a bid rounds down, an ask up."""
    remainder = price % tick if price else 0
    if remainder == 0:
        return price
    return price - remainder if direction_sign(direction) > 0 else price + tick - remainder


def _validate(order: Any, market: Any, model: FillModel, oracle_price: int, trigger: int) -> None:
    """protocol-v2's ``validate_order`` for the order types the simulator fills."""
    kind = variant_name(order.order_type)
    amm = market.amm
    base = order.base_asset_amount
    if base == 0:
        raise drift_error("InvalidOrderSizeTooSmall", "base_asset_amount cannot be 0")
    if base % amm.order_step_size != 0:
        raise drift_error("InvalidOrderNotStepSizeMultiple")
    if not order.reduce_only and base < amm.min_order_size:
        raise drift_error("InvalidOrderMinOrderSize", f"min order size {amm.min_order_size}")
    if trigger > 0:
        raise drift_error("InvalidOrderTrigger", f"{kind} order should not have a trigger price")
    if kind == "Limit":
        if order.price == 0 and order.oracle_price_offset == 0:
            raise drift_error("InvalidOrderLimitPrice", "limit order price == 0")
        if order.price != 0 and order.oracle_price_offset != 0:
            raise drift_error("InvalidOrderLimitPrice", "oracle offset limit order has a price")
        tick = amm.order_tick_size
        if order.post_only and model.crosses(order, oracle_price, tick):
            raise _WouldTake
    else:
        if order.post_only:
            raise drift_error("InvalidOrderPostOnly", f"{kind} order cannot be post only")
        if order.immediate_or_cancel:
            raise drift_error("InvalidOrderIOC", f"{kind} order cannot be immediate or cancel")
        if kind == "Market" and order.oracle_price_offset != 0:
            raise drift_error("InvalidOrderOracleOffset", "market order cannot have an offset")
        if kind == "Oracle" and order.price > 0:
            raise drift_error("InvalidOrderLimitPrice", "oracle order cannot have a price")
    if variant_name(market.contract_type) == "Prediction" and order.price > _MAX_PREDICTION_PRICE:
        raise drift_error("InvalidPredictionMarketOrder", "prediction market price must be <= 1")


def _risk_increasing(order: Any, position: Any) -> bool:
    """protocol-v2's ``is_new_order_risk_increasing``: the order, with the position's other open
    orders on its side, could grow the position."""
    if order.reduce_only:
        return False
    base: int = position.base_asset_amount
    size: int = order.base_asset_amount
    if direction_sign(order.direction) > 0:
        return base >= 0 or position.open_bids + size > abs(base)
    return base <= 0 or abs(position.open_asks - size) > base


def _check_force_reduce_only(order: Any, position_base: int) -> None:
    """In a reduce-only market an order must reduce an existing position."""
    if position_base == 0 or (position_base > 0) == (direction_sign(order.direction) > 0):
        raise drift_error(
            "InvalidOrderNotRiskReducing", "reduce-only market: order must reduce the position"
        )


def modified_params(existing: Any, modify: Any) -> Any | None:
    """The ``OrderParams`` that replace ``existing`` after ``modify`` (``ModifyOrderParams``).

    None when an ``ExcludePreviousFill`` size leaves nothing to place.
    """
    if modify.base_asset_amount is not None and (modify.policy or 0) & EXCLUDE_PREVIOUS_FILL:
        base = max(0, modify.base_asset_amount - existing.base_asset_amount_filled)
        if base == 0:
            return None
    elif modify.base_asset_amount is not None:
        base = modify.base_asset_amount
    else:
        base = unfilled(existing)
    trigger_condition = variant_name(existing.trigger_condition).removeprefix("Triggered")
    auction = (modify.auction_duration, modify.auction_start_price, modify.auction_end_price)
    if None in auction:
        auction = (None, None, None)
    post_only = modify.post_only
    if post_only is None:
        post_only = variant("PostOnlyParam", "MustPostOnly" if existing.post_only else "None")
    params = DRIFT_CODER.types.decode("OrderParams", _ZERO_PARAMS)
    params.order_type = existing.order_type
    params.market_type = existing.market_type
    params.direction = modify.direction if modify.direction is not None else existing.direction
    params.user_order_id = existing.user_order_id
    params.base_asset_amount = base
    params.price = modify.price if modify.price is not None else existing.price
    params.market_index = existing.market_index
    params.reduce_only = (
        modify.reduce_only if modify.reduce_only is not None else existing.reduce_only
    )
    params.post_only = post_only
    params.bit_flags = 0
    params.max_ts = modify.max_ts if modify.max_ts is not None else existing.max_ts
    params.trigger_price = (
        modify.trigger_price if modify.trigger_price is not None else existing.trigger_price
    )
    params.trigger_condition = (
        modify.trigger_condition
        if modify.trigger_condition is not None
        else variant("OrderTriggerCondition", trigger_condition)
    )
    params.oracle_price_offset = (
        modify.oracle_price_offset
        if modify.oracle_price_offset is not None
        else existing.oracle_price_offset
    )
    params.auction_duration, params.auction_start_price, params.auction_end_price = auction
    return params
