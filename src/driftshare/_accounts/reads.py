"""A sub-account's reads, computed with driftpy's DriftUser math from subscribed accounts.

No read sends an RPC request: the User account and the markets and oracles its positions
touch are the ledger's, and each read says how current they are.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from driftpy.constants.numeric_constants import (
    BASE_PRECISION,
    MARGIN_PRECISION,
    PRICE_PRECISION,
    QUOTE_PRECISION,
    QUOTE_SPOT_MARKET_INDEX,
)
from driftpy.decode.utils import decode_name
from driftpy.drift_user import DriftUser
from driftpy.math.margin import MarginCategory
from driftpy.math.perp_position import calculate_entry_price
from driftpy.math.spot_position import is_spot_position_available
from driftpy.types import is_variant
from solders.pubkey import Pubkey

from driftshare._data.ledger import AccountLedger, LedgerEntry
from driftshare._data.marketdata import confirmed
from driftshare.models import (
    AccountInfo,
    AccountStatus,
    OrderInfo,
    PositionInfo,
    market_name,
    snake_case,
)

__all__ = [
    "Freshness",
    "account_info",
    "account_status",
    "basis",
    "freshness",
    "missing_status",
    "open_orders",
    "positions",
]

_QUOTE: int = QUOTE_PRECISION
_PRICE: int = PRICE_PRECISION
_BASE: int = BASE_PRECISION
_MARGIN: int = MARGIN_PRECISION
_NO_LIQUIDATION = -1
"""What ``get_perp_liq_price`` answers when no price would liquidate the position."""


@dataclass(frozen=True, slots=True)
class Freshness:
    """``slot``, ``data_age_s`` and ``stale`` of one read, as its models carry them."""

    slot: int
    data_age_s: float
    stale: bool

    def fields(self) -> dict[str, Any]:
        return {"slot": self.slot, "data_age_s": self.data_age_s, "stale": self.stale}


def _touched_keys(user: DriftUser) -> Iterable[Pubkey]:
    """The markets and oracles ``user``'s values are computed from: those of its positions
    and orders, and the quote spot market."""
    account = user.get_user_account()
    client = user.drift_client
    perps = {p.market_index for p in user.get_active_perp_positions()}
    spots = {s.market_index for s in account.spot_positions if not is_spot_position_available(s)}
    spots.add(QUOTE_SPOT_MARKET_INDEX)
    for order in account.orders:
        if is_variant(order.status, "Open"):
            (perps if is_variant(order.market_type, "Perp") else spots).add(order.market_index)
    for index in perps:
        perp = client.get_perp_market_account(index)
        if perp is None:
            raise LookupError(f"perp market {index} is not subscribed")
        yield perp.pubkey
        yield perp.amm.oracle
    for index in spots:
        spot = client.get_spot_market_account(index)
        if spot is None:
            raise LookupError(f"spot market {index} is not subscribed")
        yield spot.pubkey
        if spot.oracle != Pubkey.default():
            yield spot.oracle


def basis(user: DriftUser, ledger: AccountLedger) -> tuple[LedgerEntry, ...] | None:
    """The ledger entries ``user``'s values come from, its User account's first; None when
    one of them is not in the ledger (no known age)."""
    user_entry = ledger.get(str(user.user_public_key))
    if user_entry is None:
        return None
    entries: list[LedgerEntry] = [user_entry]
    for key in _touched_keys(user):
        entry = ledger.get(str(key))
        if entry is None:
            return None
        entries.append(entry)
    return tuple(entries)


def freshness(
    entries: tuple[LedgerEntry, ...] | None,
    *,
    current: bool,
    stale_after_s: float,
    required_slot: int = 0,
) -> Freshness:
    """How current values computed from ``entries`` (see :func:`basis`) are.

    Stale past ``stale_after_s``, when upstream is not ``current``, when an account is not
    in the ledger, or while the User account has not been confirmed at ``required_slot``.
    """
    if entries is None:
        return Freshness(0, float("inf"), True)
    slot, confirmed_at = confirmed(entries)
    age = time.monotonic() - confirmed_at
    stale = not current or age > stale_after_s or entries[0].confirmed_slot < required_slot
    return Freshness(slot, age, stale)


def _usd(amount: int) -> float:
    return int(amount) / _QUOTE


def _margin_ratio(user: DriftUser) -> float | None:
    # The TS SDK's getMarginRatio: total asset value (spot assets plus unrealized PnL, no
    # weights) over total liability value.
    liabilities = int(user.get_total_liability_value())
    if liabilities == 0:
        return None
    assets = int(user.get_total_collateral(margin_category=None))
    return (assets * _MARGIN // liabilities) / _MARGIN


def account_info(
    user: DriftUser, fresh: Freshness, *, authority: str, sub_account_id: int
) -> AccountInfo:
    """Collateral, free collateral, margin ratio, leverage and unrealized PnL of ``user``."""
    return AccountInfo(
        authority=authority,
        sub_account_id=sub_account_id,
        user_account=str(user.user_public_key),
        collateral=_usd(user.get_total_collateral()),
        free_collateral=_usd(user.get_free_collateral()),
        margin_ratio=_margin_ratio(user),
        leverage=user.get_leverage() / _MARGIN,
        unrealized_pnl=_usd(user.get_unrealized_pnl(with_funding=True)),
        **fresh.fields(),
    )


def _liquidation_price(user: DriftUser, market_index: int) -> float | None:
    price = user.get_perp_liq_price(market_index, margin_category=MarginCategory.MAINTENANCE)
    if price is None or price == _NO_LIQUIDATION:
        return None
    return int(price) / _PRICE


def positions(user: DriftUser, fresh: Freshness) -> list[PositionInfo]:
    """Every open perp position of ``user``, by market index."""
    found: list[PositionInfo] = []
    client = user.drift_client
    for position in sorted(user.get_active_perp_positions(), key=lambda p: p.market_index):
        index = position.market_index
        market = client.get_perp_market_account(index)
        found.append(
            PositionInfo(
                market_index=index,
                symbol=market_name(market),
                size=position.base_asset_amount / _BASE,
                entry_price=calculate_entry_price(position) / _PRICE,
                unrealized_pnl=_usd(user.get_unrealized_pnl(True, market_index=index)),
                liquidation_price=_liquidation_price(user, index),
                **fresh.fields(),
            )
        )
    return found


def open_orders(user: DriftUser, fresh: Freshness) -> list[OrderInfo]:
    """Every open order of ``user``, by order id."""
    client = user.drift_client
    found: list[OrderInfo] = []
    for order in sorted(user.get_open_orders(), key=lambda o: o.order_id):
        perp = is_variant(order.market_type, "Perp")
        if perp:
            symbol = market_name(client.get_perp_market_account(order.market_index))
            precision = _BASE
        else:
            spot = client.get_spot_market_account(order.market_index)
            symbol = decode_name(spot.name)
            precision = 10**spot.decimals
        found.append(
            OrderInfo(
                order_id=order.order_id,
                user_order_id=order.user_order_id,
                market_index=order.market_index,
                market_type="perp" if perp else "spot",
                symbol=symbol,
                direction="long" if is_variant(order.direction, "Long") else "short",
                order_type=snake_case(type(order.order_type).__name__),
                size=order.base_asset_amount / precision,
                filled=order.base_asset_amount_filled / precision,
                price=order.price / _PRICE,
                reduce_only=bool(order.reduce_only),
                post_only=bool(order.post_only),
                placed_slot=order.slot,
                max_ts=order.max_ts,
                **fresh.fields(),
            )
        )
    return found


def account_status(info: AccountInfo, *, open_positions: int) -> AccountStatus:
    """Ready when the account holds collateral and ``info`` is fresh; the message says why
    not."""
    who = f"sub-account {info.sub_account_id} of {info.authority}"
    if info.stale:
        ready, message = False, f"{who}: its data is stale (upstream down or catching up)"
    elif info.collateral <= 0:
        ready, message = False, f"{who} holds no collateral: deposit some before trading"
    else:
        ready, message = True, f"{who} is ready to trade"
    return AccountStatus(
        ready=ready,
        message=message,
        address=info.authority,
        sub_account_id=info.sub_account_id,
        user_account=info.user_account,
        collateral=info.collateral,
        free_collateral=info.free_collateral,
        margin_ratio=info.margin_ratio,
        positions=open_positions,
        slot=info.slot,
        data_age_s=info.data_age_s,
        stale=info.stale,
    )


def missing_status(
    *, authority: str, sub_account_id: int, user_account: str, message: str
) -> AccountStatus:
    """The status of a sub-account that is not registered: ``message`` says why."""
    return AccountStatus(
        ready=False,
        message=message,
        address=authority,
        sub_account_id=sub_account_id,
        user_account=user_account,
        collateral=None,
        free_collateral=None,
        margin_ratio=None,
        positions=0,
        slot=0,
        data_age_s=float("inf"),
        stale=True,
    )
