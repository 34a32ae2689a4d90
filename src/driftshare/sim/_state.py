"""Drift's State account in the simulated world."""

from __future__ import annotations

import dataclasses

from driftpy.addresses import get_drift_client_signer_public_key
from driftpy.types import StateAccount
from solders.pubkey import Pubkey

from driftshare.sim import _codec
from driftshare.sim._codec import DRIFT_PROGRAM_ID
from driftshare.sim._history import ONE_HOUR, QUOTE

__all__ = ["state_account"]


def state_account(
    *, perp_markets: int, number_of_markets: int, number_of_spot_markets: int
) -> StateAccount:
    """The State of a world with ``perp_markets`` perp markets and the given market counts."""
    fee_tier = dataclasses.replace(
        _codec.blank("State").perp_fee_structure.fee_tiers[0],
        fee_numerator=35,
        fee_denominator=100_000,
        maker_rebate_numerator=25,
        maker_rebate_denominator=1_000_000,
        referrer_reward_numerator=10,
        referrer_reward_denominator=100,
        referee_fee_numerator=5,
        referee_fee_denominator=100,
    )
    blank_state = _codec.blank("State")
    fees = dataclasses.replace(
        blank_state.perp_fee_structure,
        fee_tiers=[fee_tier] * len(blank_state.perp_fee_structure.fee_tiers),
        filler_reward_structure=dataclasses.replace(
            blank_state.perp_fee_structure.filler_reward_structure,
            reward_numerator=10,
            reward_denominator=100,
            time_based_reward_lower_bound=10_000,
        ),
        referrer_reward_epoch_upper_bound=1_000 * QUOTE,
        flat_filler_fee=10_000,
    )
    guard_rails = dataclasses.replace(
        blank_state.oracle_guard_rails,
        price_divergence=dataclasses.replace(
            blank_state.oracle_guard_rails.price_divergence,
            mark_oracle_percent_divergence=100_000,
            oracle_twap5min_percent_divergence=500_000,
        ),
        validity=dataclasses.replace(
            blank_state.oracle_guard_rails.validity,
            slots_before_stale_for_amm=10,
            slots_before_stale_for_margin=120,
            confidence_interval_max_size=20_000,
            too_volatile_ratio=5,
        ),
    )
    signer = get_drift_client_signer_public_key(DRIFT_PROGRAM_ID)
    signer_nonce = Pubkey.find_program_address([b"drift_signer"], DRIFT_PROGRAM_ID)[1]
    admin = Pubkey.find_program_address([b"driftshare_sim_admin"], DRIFT_PROGRAM_ID)[0]
    state = dataclasses.replace(
        blank_state,
        admin=admin,
        signer=signer,
        perp_fee_structure=fees,
        spot_fee_structure=fees,
        oracle_guard_rails=guard_rails,
        number_of_authorities=perp_markets * 1_000,
        number_of_sub_accounts=perp_markets * 1_500,
        liquidation_margin_buffer_ratio=200,
        settlement_duration=ONE_HOUR,
        number_of_markets=number_of_markets,
        number_of_spot_markets=number_of_spot_markets,
        signer_nonce=signer_nonce,
        min_perp_auction_duration=10,
        default_market_order_time_in_force=60,
        default_spot_auction_duration=10,
        liquidation_duration=150,
        initial_pct_to_liquidate=1_000,
        max_number_of_sub_accounts=65_535,
    )
    return state
