"""Spot market accounts of the simulated world: creation and oracle price updates."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from driftpy.addresses import (
    get_insurance_fund_vault_public_key,
    get_spot_market_public_key,
    get_spot_market_vault_public_key,
)
from driftpy.constants.numeric_constants import SPOT_CUMULATIVE_INTEREST_PRECISION

from driftshare.sim import _codec
from driftshare.sim._codec import DRIFT_PROGRAM_ID, variant, variant_name
from driftshare.sim._history import (
    FIVE_MINUTES,
    ONE_DAY,
    ONE_HOUR,
    PRICE,
    oracle_history,
    pool,
    twap,
)

__all__ = ["new_spot_market", "repriced_spot"]

_SPOT_BAND = 0.005
"""Relative oracle move that makes a spot market record a new price."""


def new_spot_market(index: int, config: Any, *, price: int, now: float, rng: random.Random) -> Any:
    """Spot market ``index`` of driftpy's mainnet ``config``, sized for its oracle ``price``."""
    ts = int(now)
    decimals = config.decimals
    usd_deposits = 300e6 if index == 0 else 150e6
    token_deposits = round(usd_deposits / (price / PRICE) * 10**decimals)
    utilization = rng.uniform(0.3, 0.7)
    token_borrows = round(token_deposits * utilization)
    deposit_interest = round(SPOT_CUMULATIVE_INTEREST_PRECISION * rng.uniform(1.02, 1.2))
    borrow_interest = round(deposit_interest * rng.uniform(1.02, 1.1))
    precision_decrease = 10 ** (19 - decimals)
    collateral = index == 0
    step = 10 ** max(0, decimals - 4) if not collateral else 1
    market = dataclasses.replace(
        _codec.blank("SpotMarket"),
        pubkey=get_spot_market_public_key(DRIFT_PROGRAM_ID, index),
        oracle=config.oracle,
        mint=config.mint,
        vault=get_spot_market_vault_public_key(DRIFT_PROGRAM_ID, index),
        name=list(config.symbol.encode()[:32].ljust(32, b" ")),
        **spot_price_history(_codec.blank("SpotMarket"), price, price, price, ts),
        revenue_pool=pool(token_deposits // 1_000, index),
        spot_fee_pool=pool(token_deposits // 10_000, index),
        insurance_fund=dataclasses.replace(
            _codec.blank("SpotMarket").insurance_fund,
            vault=get_insurance_fund_vault_public_key(DRIFT_PROGRAM_ID, index),
            total_shares=token_deposits // 20,
            user_shares=token_deposits // 40,
            unstaking_period=13 * ONE_DAY,
            last_revenue_settle_ts=ts,
            revenue_settle_period=ONE_HOUR,
            total_factor=1_000_000,
            user_factor=500_000,
        ),
        total_spot_fee=token_deposits // 500,
        deposit_balance=token_deposits * precision_decrease // deposit_interest,
        borrow_balance=token_borrows * precision_decrease // borrow_interest,
        cumulative_deposit_interest=deposit_interest,
        cumulative_borrow_interest=borrow_interest,
        withdraw_guard_threshold=token_deposits // 10,
        max_token_deposits=token_deposits * 2,
        deposit_token_twap=token_deposits,
        borrow_token_twap=token_borrows,
        utilization_twap=round(utilization * 1_000_000),
        last_interest_ts=ts,
        last_twap_ts=ts,
        order_step_size=step,
        order_tick_size=100,
        min_order_size=step,
        next_fill_record_id=rng.randrange(1, 1_000_000),
        next_deposit_record_id=rng.randrange(1, 10_000_000),
        initial_asset_weight=10_000 if collateral else 8_000,
        maintenance_asset_weight=10_000 if collateral else 9_000,
        initial_liability_weight=10_000 if collateral else 12_000,
        maintenance_liability_weight=10_000 if collateral else 11_000,
        imf_factor=0 if collateral else 1_300,
        liquidator_fee=0 if collateral else 10_000,
        if_liquidation_fee=0 if collateral else 10_000,
        optimal_utilization=800_000,
        optimal_borrow_rate=100_000,
        max_borrow_rate=1_000_000,
        decimals=decimals,
        market_index=index,
        orders_enabled=not collateral,
        oracle_source=variant("OracleSource", variant_name(config.oracle_source)),
        status=variant("MarketStatus", "Active"),
        asset_tier=variant("AssetTier", "Collateral"),
        max_token_borrows_fraction=8_000,
    )
    return market


def repriced_spot(market: Any, *, price: int, now: float, force: bool) -> Any | None:
    """``market`` after an oracle ``price`` at ``now``; None when the move is within the band."""
    hist = market.historical_oracle_data
    if not force and abs(price / hist.last_oracle_price - 1.0) <= _SPOT_BAND:
        return None
    ts = int(now)
    since = max(0, ts - hist.last_oracle_price_twap_ts)
    new_twap = twap(hist.last_oracle_price_twap, price, since, ONE_HOUR)
    twap5 = twap(hist.last_oracle_price_twap5min, price, since, FIVE_MINUTES)
    return dataclasses.replace(market, **spot_price_history(market, price, new_twap, twap5, ts))


def spot_price_history(market: Any, price: int, twap: int, twap5: int, ts: int) -> dict[str, Any]:
    """A spot market's oracle and index history fields after a price of ``price`` at ``ts``."""
    return {
        "historical_oracle_data": oracle_history(
            market.historical_oracle_data, price, twap, twap5, ts
        ),
        "historical_index_data": dataclasses.replace(
            market.historical_index_data,
            last_index_bid_price=price - price // 10_000,
            last_index_ask_price=price + price // 10_000,
            last_index_price_twap=twap,
            last_index_price_twap5min=twap5,
            last_index_price_twap_ts=ts,
        ),
    }
