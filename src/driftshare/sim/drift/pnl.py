"""``settle_pnl``: a perp position's PnL moved into the user's USDC balance, as protocol-v2's
``controller/pnl.rs`` settles it.

Funding is settled first. Negative PnL is always settled (if the user meets maintenance
margin) and paid into the market's PnL pool; positive PnL is settled up to what the position
realized by reducing or closing, and only as far as the PnL pool holds. The simulator's pool
never takes fee-pool top-ups.
"""

from __future__ import annotations

from driftpy.constants.numeric_constants import AMM_RESERVE_PRECISION

from driftshare.sim._codec import variant_name
from driftshare.sim.drift.balances import token_amount, update_pool_balance, update_spot_balance
from driftshare.sim.drift.call import Call
from driftshare.sim.drift.errors import anchor_error, drift_error, unsupported
from driftshare.sim.drift.margin import margin_excess
from driftshare.sim.drift.positions import (
    div_trunc,
    perp_position,
    settle_funding,
    update_quote_asset_amount,
)

__all__ = ["settle_pnl"]

_QUOTE_MARKET = 0


def settle_pnl(call: Call) -> None:
    books = call.books
    signer = call.signer("authority")
    vault = call.key("spotMarketVault")
    quote_market = books.spot_market(_QUOTE_MARKET)
    if vault != quote_market.vault:
        raise anchor_error("ConstraintSeeds", f"spotMarketVault {vault}")
    user_key = call.key("user")
    user = books.load(user_key, "User")
    market_index: int = call.args.market_index
    market = books.perp_market(market_index)
    status = variant_name(market.status)
    if status == "Settlement":
        raise unsupported("settling positions of an expired market")
    oracle_price = books.perp_oracle(market_index).price
    settle_funding(user, market)
    books.mark(user_key)
    books.mark_perp_market(market_index)
    position = perp_position(user, market_index)
    if position is None:
        raise drift_error("UserHasNoPositionInMarket", f"market {market_index}")
    base = position.base_asset_amount
    unrealized = div_trunc(base * oracle_price, AMM_RESERVE_PRECISION) + position.quote_asset_amount
    if unrealized < 0 and margin_excess(books, user_key, user, initial=False) < 0:
        raise drift_error("InsufficientCollateralForSettlingPNL", f"market {market_index}")
    if base != 0 and status != "Active":
        raise drift_error("InvalidMarketStatusToSettlePnl", f"market {market_index} is {status}")
    if base == 0 and status not in ("Active", "ReduceOnly"):
        raise drift_error("InvalidMarketStatusToSettlePnl", f"market {market_index} is {status}")
    claimable = unrealized
    if unrealized > 0:
        realized = max(0, position.quote_asset_amount - position.quote_entry_amount)
        claimable = min(unrealized, realized)
    pool = token_amount(market.pnl_pool.scaled_balance, quote_market, "Deposit")
    pnl = min(claimable, pool)
    if claimable == 0:
        raise drift_error("NoUnsettledPnl", f"market {market_index}")
    if pnl == 0:
        raise drift_error("PnlPoolCantSettleUser", f"market {market_index}")
    if pnl > 0 and signer not in (user.authority, user.delegate):
        raise drift_error("UserMustSettleTheirOwnPositiveUnsettledPNL", f"market {market_index}")
    direction = "Deposit" if pnl > 0 else "Borrow"
    update_spot_balance(abs(pnl), direction, quote_market, user.spot_positions[0])
    update_pool_balance(-pnl, quote_market, market.pnl_pool)
    update_quote_asset_amount(position, market, -pnl)
    position.settled_pnl += pnl
    user.settled_perp_pnl += pnl
    user.last_active_slot = books.slot
    books.mark_spot_market(_QUOTE_MARKET)
