"""Perp market accounts of the simulated world: creation, re-pegging and funding settlement."""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any

from driftpy.addresses import get_perp_market_public_key
from driftpy.math.amm import calculate_price
from solders.pubkey import Pubkey

from driftshare.sim import _codec
from driftshare.sim._codec import DRIFT_PROGRAM_ID, variant, variant_name
from driftshare.sim._history import (
    BASE,
    FIVE_MINUTES,
    FUNDING_BUFFER,
    ONE_DAY,
    ONE_HOUR,
    PEG,
    PRICE,
    QUOTE,
    RESERVE,
    SPREAD,
    confidence,
    oracle_history,
    pool,
    twap,
)
from driftshare.sim.drift.positions import div_trunc

__all__ = ["MAJORS", "NO_FUNDING", "funding_rate", "new_perp_market", "repriced"]

MAJORS = frozenset({0, 1, 2})
# A ReduceOnly and a Settlement market among the first 30, as mainnet always has some of each.
_STATUS_OVERRIDES: dict[int, str] = {17: "Settlement", 25: "ReduceOnly"}
NO_FUNDING = frozenset({"FundingPaused", "Settlement", "Delisted", "Initialized"})
"""Statuses under which a market settles no funding."""
_PREMIUM_BIAS = (0.0002, 0.002)
_TICK_PREMIUM = 1e-4
"""The least premium of a one-unit peg: a mark of exactly one tick can floor to 0 in driftpy's
repeg, which multiplies the reserves by a float peg."""
_CONCENTRATION_COEF = 1_010_000


def new_perp_market(
    index: int,
    *,
    oracle_pubkey: Pubkey,
    source: str,
    symbol: str,
    prediction: bool,
    price: int,
    now: float,
    slot: int,
    funding_period: int,
    rng: random.Random,
) -> tuple[Any, float]:
    """Perp market ``index`` with plausible mainnet-like parameters for its oracle ``price``.

    Returns the market and its premium bias (the mark's long-run premium over the oracle).
    """
    ts = int(now)
    if index in MAJORS:
        notional = 50e6
    elif prediction:
        notional = 10 ** rng.uniform(5.0, 6.0)
    else:
        notional = 10 ** rng.uniform(6.0, 7.3)
    sqrt_k = max(RESERVE, round(notional / (price / PRICE) * RESERVE))
    step = 10 ** max(0, math.floor(math.log10(1e16 / price)))
    tick = 10 ** max(0, math.floor(math.log10(price / 1e5)))
    long = max(step, round(sqrt_k * rng.uniform(0.05, 0.3) / step) * step)
    short = -max(step, round(long * rng.uniform(0.98, 1.02) / step) * step)
    if long + short == 0:
        # driftpy re-pegs by swapping the AMM's net position back and rejects a zero swap
        # (calculate_amm_reserves_after_swap), so a net of exactly 0 leaves it no quote.
        short -= step
    # Alternating signs make funding of both signs certain in any world of 2+ markets.
    bias = rng.uniform(*_PREMIUM_BIAS) * (1 if index % 2 == 0 else -1)
    status = _STATUS_OVERRIDES.get(index, "Settlement" if prediction else "Active")
    tier = tier_of(index, prediction)
    initial, maintenance = {"A": (500, 300), "B": (1000, 500), "C": (1000, 500)}.get(
        tier, (2000, 1000)
    )
    if prediction:
        initial, maintenance = 10_000, 5_000
    notional_quote = round(notional * QUOTE)
    total_fee = notional_quote // 200
    base_spread = 100 if index in MAJORS else 500
    oracle_conf = confidence(price)
    funding_age = rng.randrange(funding_period)
    long_quote = -(long * price // BASE)
    short_quote = -(short * price // BASE)

    amm = dataclasses.replace(
        _codec.blank("PerpMarket").amm,
        oracle=oracle_pubkey,
        oracle_source=variant("OracleSource", source),
        historical_oracle_data=oracle_history(
            _codec.blank("PerpMarket").amm.historical_oracle_data, price, price, price, ts
        ),
        fee_pool=pool(total_fee // 4, 0),
        sqrt_k=sqrt_k,
        concentration_coef=_CONCENTRATION_COEF,
        min_base_asset_reserve=sqrt_k * 1_000_000 // _CONCENTRATION_COEF,
        max_base_asset_reserve=sqrt_k * _CONCENTRATION_COEF // 1_000_000,
        base_asset_amount_long=long,
        base_asset_amount_short=short,
        base_asset_amount_with_amm=long + short,
        max_open_interest=sqrt_k,
        quote_asset_amount=long_quote + short_quote,
        quote_entry_amount_long=long_quote,
        quote_entry_amount_short=short_quote,
        quote_break_even_amount_long=long_quote,
        quote_break_even_amount_short=short_quote,
        total_fee=total_fee,
        total_mm_fee=total_fee // 2,
        total_exchange_fee=total_fee // 2,
        total_fee_minus_distributions=total_fee * 2 // 5,
        total_fee_withdrawn=total_fee // 10,
        total_liquidation_fee=total_fee // 20,
        last_oracle_conf_pct=oracle_conf * SPREAD // price,
        net_revenue_since_last_funding=0,
        last_funding_rate_ts=ts - funding_age,
        funding_period=funding_period,
        order_step_size=step,
        order_tick_size=tick,
        min_order_size=step,
        volume24h=notional_quote * 2,
        long_intensity_volume=notional_quote // 50,
        short_intensity_volume=notional_quote // 50,
        last_trade_ts=ts,
        mark_std=oracle_conf * 2,
        oracle_std=oracle_conf * 2,
        last_mark_price_twap_ts=ts,
        base_spread=base_spread,
        max_spread=base_spread * 50,
        long_spread=base_spread // 2,
        short_spread=base_spread // 2,
        max_fill_reserve_fraction=100,
        max_slippage_ratio=50,
        curve_update_intensity=100,
        last_oracle_valid=True,
        oracle_slot_delay_override=-1,
    )
    market = dataclasses.replace(
        _codec.blank("PerpMarket"),
        pubkey=get_perp_market_public_key(DRIFT_PROGRAM_ID, index),
        amm=amm,
        pnl_pool=pool(total_fee // 5, 0),
        name=list(symbol.encode()[:32].ljust(32, b" ")),
        insurance_claim=dataclasses.replace(
            _codec.blank("PerpMarket").insurance_claim,
            max_revenue_withdraw_per_period=100 * QUOTE,
            quote_max_insurance=notional_quote // 10,
            quote_settled_insurance=0,
            last_revenue_withdraw_ts=ts,
        ),
        unrealized_pnl_max_imbalance=notional_quote // 100,
        expiry_ts=ts - ONE_DAY if status == "Settlement" else 0,
        expiry_price=price if status == "Settlement" else 0,
        next_fill_record_id=rng.randrange(1, 5_000_000),
        next_funding_rate_record_id=rng.randrange(1, 30_000),
        next_curve_record_id=rng.randrange(1, 5_000),
        imf_factor=250 if tier == "A" else 500,
        liquidator_fee=5_000,
        if_liquidation_fee=7_500,
        margin_ratio_initial=initial,
        margin_ratio_maintenance=maintenance,
        unrealized_pnl_maintenance_asset_weight=10_000,
        number_of_users_with_base=rng.randrange(10, 2_000),
        number_of_users=rng.randrange(10, 2_000),
        market_index=index,
        status=variant("MarketStatus", status),
        contract_type=variant("ContractType", "Prediction" if prediction else "Perpetual"),
        contract_tier=variant("ContractTier", tier),
        high_leverage_margin_ratio_initial=100 if index in MAJORS else 0,
        high_leverage_margin_ratio_maintenance=66 if index in MAJORS else 0,
        last_fill_price=price,
    )
    market = repriced(market, premium=bias, price=price, now=ts, slot=slot, settle=False)
    amm = market.amm
    rate = funding_rate(amm, tier)
    market = dataclasses.replace(
        market,
        amm=dataclasses.replace(
            amm,
            last_funding_rate=rate,
            last_funding_oracle_twap=amm.historical_oracle_data.last_oracle_price_twap,
            last_funding_rate_long=rate,
            last_funding_rate_short=rate,
            last24h_avg_funding_rate=rate,
            cumulative_funding_rate_long=rate * rng.randrange(24, 24 * 365),
            cumulative_funding_rate_short=rate * rng.randrange(24, 24 * 365),
        ),
    )
    return market, bias


def tier_of(index: int, prediction: bool) -> str:
    """The contract tier of market ``index``: majors A, then B, C and Speculative."""
    if prediction:
        return "Isolated"
    if index in MAJORS:
        return "A"
    if index < 16:
        return "B"
    if index < 36:
        return "C"
    return "Speculative"


def repriced(market: Any, *, premium: float, price: int, now: int, slot: int, settle: bool) -> Any:
    """``market`` re-pegged to ``price`` with twaps advanced to ``now`` and funding settled."""
    amm = market.amm
    sqrt_k: int = amm.sqrt_k
    peg = price * PEG // PRICE
    # A peg of one unit cannot carry a discount: the mark would floor to 0, which Drift's
    # spread math divides by.
    ratio = math.sqrt(1.0 + max(premium, 1.0 / peg - 1.0 + _TICK_PREMIUM))
    base = round(sqrt_k / ratio)
    quote = round(sqrt_k * ratio)
    mark = calculate_price(base, quote, peg)
    invariant = sqrt_k * sqrt_k
    half_long = amm.long_spread // 2
    half_short = amm.short_spread // 2
    ask_quote = quote + (quote // (SPREAD // half_long) if half_long else 0)
    bid_quote = quote - (quote // (SPREAD // half_short) if half_short else 0)
    ask_base = invariant // ask_quote
    bid_base = invariant // bid_quote
    ask = calculate_price(ask_base, ask_quote, peg)
    bid = calculate_price(bid_base, bid_quote, peg)
    terminal_base = max(1, base + amm.base_asset_amount_with_amm)
    conf = confidence(price)

    hist = amm.historical_oracle_data
    since_oracle = max(0, now - hist.last_oracle_price_twap_ts)
    oracle_twap = twap(hist.last_oracle_price_twap, price, since_oracle, amm.funding_period)
    oracle_twap5 = twap(hist.last_oracle_price_twap5min, price, since_oracle, FIVE_MINUTES)
    since_mark = max(0, now - amm.last_mark_price_twap_ts)
    bid_twap = twap(amm.last_bid_price_twap or bid, bid, since_mark, amm.funding_period)
    ask_twap = twap(amm.last_ask_price_twap or ask, ask, since_mark, amm.funding_period)
    mark_twap5 = twap(
        amm.last_mark_price_twap5min or mark, (bid + ask) // 2, since_mark, FIVE_MINUTES
    )
    changes: dict[str, Any] = {
        "historical_oracle_data": oracle_history(hist, price, oracle_twap, oracle_twap5, now),
        "base_asset_reserve": base,
        "quote_asset_reserve": quote,
        "peg_multiplier": peg,
        "terminal_quote_asset_reserve": invariant // terminal_base,
        "ask_base_asset_reserve": ask_base,
        "ask_quote_asset_reserve": ask_quote,
        "bid_base_asset_reserve": bid_base,
        "bid_quote_asset_reserve": bid_quote,
        "last_oracle_normalised_price": price,
        "last_oracle_reserve_price_spread_pct": (mark - price) * SPREAD // mark,
        "last_oracle_conf_pct": conf * SPREAD // price,
        "last_bid_price_twap": bid_twap,
        "last_ask_price_twap": ask_twap,
        "last_mark_price_twap": (bid_twap + ask_twap) // 2,
        "last_mark_price_twap5min": mark_twap5,
        "last_mark_price_twap_ts": now,
        "last_update_slot": slot,
        "mm_oracle_price": price,
        "mm_oracle_slot": slot,
        "mm_oracle_sequence_id": now * 1_000_000 + slot % 1_000_000,
        "last_oracle_valid": True,
    }
    if settle:
        rate = funding_rate(dataclasses.replace(amm, **changes), variant_name(market.contract_tier))
        elapsed = now - amm.last_funding_rate_ts
        changes |= {
            "last_funding_rate": rate,
            "last_funding_rate_long": rate,
            "last_funding_rate_short": rate,
            "cumulative_funding_rate_long": amm.cumulative_funding_rate_long + rate,
            "cumulative_funding_rate_short": amm.cumulative_funding_rate_short + rate,
            "last24h_avg_funding_rate": twap(amm.last24h_avg_funding_rate, rate, elapsed, ONE_DAY),
            "last_funding_rate_ts": now,
            "last_funding_oracle_twap": oracle_twap,
            "net_revenue_since_last_funding": 0,
        }
    new = dataclasses.replace(market, amm=dataclasses.replace(amm, **changes))
    if settle:
        new = dataclasses.replace(
            new, next_funding_rate_record_id=market.next_funding_rate_record_id + 1
        )
    return new


def funding_rate(amm: Any, tier: str) -> int:
    """Drift's funding rate (FUNDING_RATE_PRECISION, quote per base) from the AMM's twaps.

    As in protocol-v2's ``update_funding_rate``: the mark twap's spread over the oracle twap,
    clamped by contract tier, scaled to a 24-period day. The fee pool is assumed to cover the
    AMM's side, so longs and shorts pay the same rate.
    """
    oracle_twap: int = amm.historical_oracle_data.last_oracle_price_twap
    mark_twap = (amm.last_bid_price_twap + amm.last_ask_price_twap) // 2
    divisor = 33 if tier in ("A", "B") else 20 if tier == "C" else 10
    max_spread = oracle_twap // divisor
    spread = min(max(mark_twap - oracle_twap, -max_spread), max_spread)
    period_adjustment = ONE_DAY // max(ONE_HOUR, amm.funding_period)
    return div_trunc(spread * FUNDING_BUFFER, period_adjustment)
