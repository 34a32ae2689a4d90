"""Drift User and UserStats accounts written straight into a simulator's store.

Encoded with driftpy's own account coder, as the simulator's world encodes its markets, for
tests that need signers' accounts before the simulator can create them by transactions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from driftpy.addresses import get_user_account_public_key, get_user_stats_account_public_key
from driftpy.constants.numeric_constants import BASE_PRECISION, PRICE_PRECISION, QUOTE_PRECISION
from solders.pubkey import Pubkey

from driftshare.sim import Simulator
from driftshare.sim._codec import DRIFT_PROGRAM_ID, blank, encode, rent_exempt_lamports, variant
from driftshare.sim.store import Account

__all__ = ["Perp", "put_user", "put_user_stats"]

_SPOT_BALANCE_DIGITS = 19
"""driftpy's get_token_amount divides by 10 ** (19 - decimals)."""


@dataclass(frozen=True)
class Perp:
    """A perp position: ``size`` base units (signed) entered at ``entry`` USD."""

    market_index: int
    size: float
    entry: float
    bid: float = 0.0
    """An open limit bid of this many base units at ``bid_price``, as order id 1."""
    bid_price: float = 0.0


def _put(sim: Simulator, pubkey: Pubkey, name: str, obj: Any) -> None:
    data = encode(name, obj)
    sim.store.put(pubkey, Account(data, DRIFT_PROGRAM_ID, rent_exempt_lamports(len(data))))


def put_user_stats(sim: Simulator, authority: Pubkey) -> Pubkey:
    """Write ``authority``'s UserStats account; its address."""
    pubkey = get_user_stats_account_public_key(DRIFT_PROGRAM_ID, authority)
    _put(sim, pubkey, "UserStats", dataclasses.replace(blank("UserStats"), authority=authority))
    return pubkey


def put_user(
    sim: Simulator,
    authority: Pubkey,
    sub_account_id: int = 0,
    *,
    usdc: float = 1_000.0,
    perps: tuple[Perp, ...] = (),
) -> Pubkey:
    """Write ``authority``'s User account ``sub_account_id`` holding ``usdc`` deposited and
    ``perps``, at the simulator's current slot; its address."""
    world = sim.world
    assert world is not None
    user = blank("User")
    usdc_market = world.spot_market(0)
    decrease = 10 ** (_SPOT_BALANCE_DIGITS - usdc_market.decimals)
    tokens = round(usdc * QUOTE_PRECISION)
    scaled = tokens * decrease // usdc_market.cumulative_deposit_interest
    spots = list(user.spot_positions)
    spots[0] = dataclasses.replace(
        spots[0], scaled_balance=scaled, cumulative_deposits=tokens, market_index=0
    )
    positions = list(user.perp_positions)
    orders = list(user.orders)
    for slot, perp in enumerate(perps):
        market = world.perp_market(perp.market_index)
        base = round(perp.size * BASE_PRECISION)
        quote = -round(perp.size * perp.entry * QUOTE_PRECISION)
        funding = (
            market.amm.cumulative_funding_rate_long
            if base > 0
            else (market.amm.cumulative_funding_rate_short)
        )
        bid = round(perp.bid * BASE_PRECISION)
        positions[slot] = dataclasses.replace(
            positions[slot],
            market_index=perp.market_index,
            base_asset_amount=base,
            quote_asset_amount=quote,
            quote_entry_amount=quote,
            quote_break_even_amount=quote,
            last_cumulative_funding_rate=funding,
            open_bids=bid,
            open_orders=1 if bid else 0,
        )
        if bid:
            orders[slot] = dataclasses.replace(
                orders[slot],
                slot=sim.store.slot,
                order_id=slot + 1,
                user_order_id=slot + 11,
                market_index=perp.market_index,
                status=variant("OrderStatus", "Open"),
                order_type=variant("OrderType", "Limit"),
                market_type=variant("MarketType", "Perp"),
                direction=variant("PositionDirection", "Long"),
                base_asset_amount=bid,
                price=round(perp.bid_price * PRICE_PRECISION),
                post_only=True,
            )
    user = dataclasses.replace(
        user,
        authority=authority,
        sub_account_id=sub_account_id,
        spot_positions=spots,
        perp_positions=positions,
        orders=orders,
        next_order_id=len(perps) + 1,
        open_orders=sum(1 for p in perps if p.bid),
        has_open_order=any(p.bid for p in perps),
    )
    pubkey = get_user_account_public_key(DRIFT_PROGRAM_ID, authority, sub_account_id)
    _put(sim, pubkey, "User", user)
    return pubkey
