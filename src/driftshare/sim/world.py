"""The simulated Drift program state: State, spot and perp markets and their oracles."""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from driftpy.accounts.oracle import decode_oracle
from driftpy.addresses import (
    get_drift_client_signer_public_key,
    get_insurance_fund_vault_public_key,
    get_perp_market_public_key,
    get_spot_market_public_key,
    get_spot_market_vault_public_key,
    get_state_public_key,
)
from driftpy.constants.numeric_constants import (
    AMM_RESERVE_PRECISION,
    BASE_PRECISION,
    BID_ASK_SPREAD_PRECISION,
    FUNDING_RATE_BUFFER,
    PEG_PRECISION,
    PRICE_PRECISION,
    QUOTE_PRECISION,
    SPOT_CUMULATIVE_INTEREST_PRECISION,
)
from driftpy.constants.perp_markets import mainnet_perp_market_configs
from driftpy.constants.spot_markets import mainnet_spot_market_configs
from driftpy.math.amm import calculate_price
from driftpy.types import PerpMarketAccount, SpotMarketAccount, StateAccount
from solders.pubkey import Pubkey

from driftshare.sim import _codec
from driftshare.sim._codec import DRIFT_PROGRAM_ID, variant, variant_name
from driftshare.sim.oracles import (
    SUPPORTED_SOURCES,
    EncodedOracle,
    OracleQuote,
    encode_oracle,
    price_multiple,
    read_price,
)
from driftshare.sim.replay import load_account_files
from driftshare.sim.store import Account, AccountStore

__all__ = ["World"]

log = logging.getLogger(__name__)

_PRICE: int = PRICE_PRECISION
_PEG: int = PEG_PRECISION
_BASE: int = BASE_PRECISION
_RESERVE: int = AMM_RESERVE_PRECISION
_QUOTE: int = QUOTE_PRECISION
_SPREAD: int = BID_ASK_SPREAD_PRECISION
_FUNDING_BUFFER: int = FUNDING_RATE_BUFFER
_ONE_HOUR = 3600
_ONE_DAY = 24 * _ONE_HOUR
_FIVE_MINUTES = 300
_MAX_MARKETS = 65_535

# Approximate USD prices late 2025, in each market's unit (per 1K/1M tokens for 1K*/1M* markets).
_PRICES: dict[str, float] = {
    "USDC": 1.0, "SOL": 150.0, "BTC": 95_000.0, "ETH": 3_300.0, "APT": 8.0, "1MBONK": 20.0,
    "POL": 0.4, "ARB": 0.6, "DOGE": 0.3, "BNB": 650.0, "SUI": 3.5, "1MPEPE": 10.0, "OP": 1.5,
    "RENDER": 6.0, "XRP": 2.3, "HNT": 4.0, "INJ": 20.0, "LINK": 20.0, "RLB": 0.08, "PYTH": 0.3,
    "TIA": 4.0, "JTO": 2.5, "SEI": 0.35, "AVAX": 30.0, "WIF": 1.5, "JUP": 0.8, "DYM": 1.2,
    "TAO": 400.0, "W": 0.25, "KMNO": 0.08, "TNSR": 0.3, "DRIFT": 0.8, "CLOUD": 0.2, "IO": 2.0,
    "ZEX": 0.05, "POPCAT": 0.5, "1KWEN": 0.1, "TON": 5.0, "MOTHER": 0.05, "MOODENG": 0.2,
    "DBR": 0.02, "1KMEW": 4.0, "MICHI": 0.1, "GOAT": 0.3, "FWOG": 0.2, "PNUT": 0.4, "RAY": 4.0,
    "HYPE": 25.0, "LTC": 100.0, "ME": 2.0, "PENGU": 0.03, "AI16Z": 0.5, "TRUMP": 15.0,
    "MELANIA": 1.0, "BERA": 5.0, "KAITO": 1.5, "IP": 5.0, "FARTCOIN": 1.0, "ADA": 0.8,
    "PAXG": 3_300.0, "LAUNCHCOIN": 0.1, "PUMP": 0.005, "ASTER": 1.5, "XPL": 1.0, "2Z": 0.3,
    "ZEC": 50.0, "MNT": 1.0, "1KPUMP": 5.0, "MET": 0.5, "1KMON": 0.05, "LIT": 1.0,
}  # fmt: skip
_MAJORS = frozenset({0, 1, 2})
# A ReduceOnly and a Settlement market among the first 30, as mainnet always has some of each.
_STATUS_OVERRIDES: dict[int, str] = {17: "Settlement", 25: "ReduceOnly"}
_NO_FUNDING = frozenset({"FundingPaused", "Settlement", "Delisted", "Initialized"})

_SLOT_SIGMA = 3e-4
"""Relative stdev of one slot's oracle move: about 2.8% an hour at 400 ms slots."""
_PROBABILITY_SIGMA = 2_000
_PROBABILITY_RANGE = (0.05, 0.95)
"""Where prediction-market oracles walk: Drift's AMM quotes asks from 0.05 and bids up to 0.95
(driftpy's ``get_quote_asset_reserve_prediction_market_bounds``), so there its mark follows them.
One put outside (a replayed settled market's, or by ``set_oracle_price``) moves no further out."""
_STABLE_SIGMA = 30
_PREMIUM_BIAS = (0.0002, 0.002)
_PREMIUM_REVERSION = 0.95
_PREMIUM_SIGMA = 1e-4
_PREMIUM_CAP = 0.004
_REPEG_BAND = 0.0015
"""Relative mark drift from its target that makes the AMM re-peg (and the market re-encode)."""
_TICK_PREMIUM = 1e-4
"""The least premium of a one-unit peg: a mark of exactly one tick can floor to 0 in driftpy's
repeg, which multiplies the reserves by a float peg."""
_SPOT_BAND = 0.005
_CONF_DIVISOR = 10_000
"""Oracle confidence is 1 bp of the price."""
_STABLE_CONF = 50
"""A stablecoin's confidence (1e6 precision): within it of $1, driftpy reads exactly $1."""
_CONCENTRATION_COEF = 1_010_000
_SIM_FEED_BASE = 10_000

_OracleKind = Literal["walk", "stable", "probability"]


@dataclass(slots=True)
class _Oracle:
    pubkey: Pubkey
    source: str
    kind: _OracleKind
    target: int
    """The walked price in PRICE_PRECISION, in ``source``'s unit."""
    market_index: int
    feed_id: bytes
    encoded: EncodedOracle | None = None
    replayed_price: dict[str, int] | None = None
    """For a replayed oracle: what driftpy decodes from it, by the source reading it."""
    frozen: bool = False


@dataclass(slots=True)
class _Perp:
    pubkey: Pubkey
    market: Any
    premium_bias: float = 0.0
    premium: float = 0.0
    frozen: bool = False


@dataclass(slots=True)
class _Spot:
    pubkey: Pubkey
    market: Any
    frozen: bool = False


def _oracle_history(history: Any, price: int, twap: int, twap5: int, ts: int) -> Any:
    """A market's ``historical_oracle_data`` after an oracle price of ``price`` at ``ts``."""
    return dataclasses.replace(
        history,
        last_oracle_price=price,
        last_oracle_conf=_confidence(price),
        last_oracle_delay=0,
        last_oracle_price_twap=twap,
        last_oracle_price_twap5min=twap5,
        last_oracle_price_twap_ts=ts,
    )


def _spot_price_history(market: Any, price: int, twap: int, twap5: int, ts: int) -> dict[str, Any]:
    """A spot market's oracle and index history fields after a price of ``price`` at ``ts``."""
    return {
        "historical_oracle_data": _oracle_history(
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


class World:
    """Drift's program state on a simulated chain, written into an :class:`AccountStore`.

    The world creates the State account, spot markets 0 (USDC) and 1 (SOL), ``markets`` perp
    markets named and indexed as on mainnet (``SIM{n}-PERP`` beyond driftpy's configs) and an
    oracle account for every market, each in its oracle source's format, and writes them all on
    construction. :meth:`step` advances one slot. Randomness comes only from ``seed``, time only
    from ``clock``, so equal arguments give equal bytes.
    """

    def __init__(
        self,
        store: AccountStore,
        *,
        seed: int = 0,
        markets: int = 30,
        funding_period_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(markets, bool) or not isinstance(markets, int):
            raise ValueError(f"markets must be an integer, got {markets!r}")
        if not 1 <= markets <= _MAX_MARKETS:
            raise ValueError(f"markets must be 1..{_MAX_MARKETS}, got {markets}")
        if not math.isfinite(funding_period_s) or funding_period_s <= 0:
            raise ValueError(f"funding_period_s must be > 0, got {funding_period_s}")
        self._store = store
        self._rng = random.Random(seed)
        self._clock = clock
        self._funding_period_s = float(funding_period_s)
        self._funding_period = max(1, round(funding_period_s))
        self._oracles: dict[Pubkey, _Oracle] = {}
        self._perps: dict[int, _Perp] = {}
        self._spots: dict[int, _Spot] = {}
        self._state_pubkey = get_state_public_key(DRIFT_PROGRAM_ID)
        self._state: Any = None
        self._state_frozen = False

        now = self._clock()
        for spot_index in (0, 1):
            self._add_spot_oracle(spot_index)
        for perp_index in range(markets):
            self._add_perp_oracle(perp_index)
        for oracle in self._oracles.values():
            self._write_oracle(oracle, now)
        for spot_index in (0, 1):
            self._spots[spot_index] = _Spot(
                get_spot_market_public_key(DRIFT_PROGRAM_ID, spot_index), None
            )
            self._write_spot(spot_index, now)
        for perp_index in range(markets):
            self._create_perp(perp_index, now)
        self._write_state()

    # ground truth

    @property
    def store(self) -> AccountStore:
        """The store the world writes to."""
        return self._store

    @property
    def state_pubkey(self) -> Pubkey:
        """Address of Drift's State account."""
        return self._state_pubkey

    def state(self) -> StateAccount:
        """The State account last written (or replayed)."""
        return self._state

    def perp_indexes(self) -> list[int]:
        """Indexes of every perp market, simulated or replayed, ascending."""
        return sorted(self._perps)

    def spot_indexes(self) -> list[int]:
        """Indexes of every spot market, ascending."""
        return sorted(self._spots)

    def perp_market(self, index: int) -> PerpMarketAccount:
        """The perp market account last written (or replayed) at ``index``; KeyError if none."""
        return self._perp(index).market

    def perp_market_pubkey(self, index: int) -> Pubkey:
        """Address of the perp market account at ``index``; KeyError if none."""
        return self._perp(index).pubkey

    def spot_market(self, index: int) -> SpotMarketAccount:
        """The spot market account last written (or replayed) at ``index``; KeyError if none."""
        return self._spot(index).market

    def oracle_price(self, index: int) -> float:
        """The price driftpy decodes from perp market ``index``'s oracle account, in USD.

        KeyError if there is no such market, LookupError if its oracle cannot be priced.
        """
        market = self._perp(index).market
        return (
            self._market_price(market.amm.oracle, variant_name(market.amm.oracle_source)) / _PRICE
        )

    def spot_oracle_price(self, index: int) -> float:
        """The price driftpy decodes from spot market ``index``'s oracle account, in USD."""
        market = self._spot(index).market
        return self._market_price(market.oracle, variant_name(market.oracle_source)) / _PRICE

    # evolution

    def step(self) -> None:
        """Advance one slot: move every oracle, re-peg drifting AMMs and settle due funding."""
        self._store.slot += 1
        now = self._clock()
        for oracle in self._oracles.values():
            if not oracle.frozen:
                self._walk(oracle)
                self._write_oracle(oracle, now)
        for index in sorted(self._perps):
            perp = self._perps[index]
            if not perp.frozen:
                perp.premium = self._next_premium(perp)
                self._refresh_perp(index, now, force=False)
        for index in sorted(self._spots):
            self._refresh_spot(index, now, force=False)

    def set_oracle_price(self, index: int, price: float) -> None:
        """Move perp market ``index``'s oracle to ``price`` (in the market's unit) now.

        Markets reading that oracle are updated as a step would update them. KeyError for an
        unknown market, ValueError for a non-positive price or a replayed (frozen) oracle.
        """
        if (
            isinstance(price, bool)
            or not isinstance(price, int | float)
            or not math.isfinite(price)
        ):
            raise ValueError(f"price must be a finite number, got {price!r}")
        if price <= 0:
            raise ValueError(f"price must be > 0, got {price}")
        market = self._perp(index).market
        oracle = self._oracles.get(market.amm.oracle)
        if oracle is None or oracle.frozen:
            raise ValueError(f"perp market {index}'s oracle is replayed and cannot be moved")
        self._move_oracle(oracle, price * _PRICE, variant_name(market.amm.oracle_source))

    def _move_oracle(self, oracle: _Oracle, price: float, source: str) -> None:
        """Write ``oracle`` at ``price`` (1e6 precision, read as ``source``), then its readers."""
        unit_ratio = price_multiple(oracle.source) / price_multiple(source)
        oracle.target = max(1, round(price * unit_ratio))
        now = self._clock()
        self._write_oracle(oracle, now)
        for perp_index in sorted(self._perps):
            perp = self._perps[perp_index]
            if not perp.frozen and perp.market.amm.oracle == oracle.pubkey:
                self._refresh_perp(perp_index, now, force=True)
        for spot_index in sorted(self._spots):
            if self._spots[spot_index].market.oracle == oracle.pubkey:
                self._refresh_spot(spot_index, now, force=True)

    # replay

    def replay(self, paths: Sequence[Path]) -> list[Pubkey]:
        """Serve the accounts of ``solana account --output json`` files (or folders) as frozen.

        They add to or replace the world's accounts and are never evolved. Decodable perp and
        spot markets and the State replace the world's at their index; a replayed perp market
        whose oracle account is absent gets one synthesized at its last oracle price. Raises
        ValueError naming the file for a malformed file. Returns the replayed addresses.
        """
        accounts = load_account_files(list(paths))
        for pubkey, account in accounts:
            self._store.put(pubkey, account, force=True)
        replayed_perps: list[int] = []
        for pubkey, account in accounts:
            self._adopt(pubkey, account, replayed_perps)
        for index in replayed_perps:
            self._ensure_oracle(self._perps[index].market)
        if not self._state_frozen:
            self._write_state()
        return [pubkey for pubkey, _ in accounts]

    # construction

    def _add_spot_oracle(self, index: int) -> None:
        config = mainnet_spot_market_configs[index]
        source = variant_name(config.oracle_source)
        kind: _OracleKind = "stable" if "StableCoin" in source else "walk"
        self._add_oracle(config.oracle, source, kind, self._initial_price(config.symbol), index)

    def _add_perp_oracle(self, index: int) -> None:
        pubkey, source, symbol = self._perp_config(index)
        kind: _OracleKind = "probability" if self._is_prediction(index) else "walk"
        if kind == "probability":
            price = round(self._rng.uniform(*_PROBABILITY_RANGE) * _PRICE)
        else:
            price = self._initial_price(symbol)
        self._add_oracle(pubkey, source, kind, price, index)

    def _add_oracle(
        self, pubkey: Pubkey, source: str, kind: _OracleKind, price: int, index: int
    ) -> None:
        if pubkey in self._oracles:
            return
        feed_id = bytes(pubkey)
        self._oracles[pubkey] = _Oracle(pubkey, source, kind, price, index, feed_id)

    def _initial_price(self, symbol: str) -> int:
        base = symbol.removesuffix("-PERP")
        if base in _PRICES:
            usd = _PRICES[base] * (1.0 if base == "USDC" else self._rng.uniform(0.97, 1.03))
        else:
            usd = 10 ** self._rng.uniform(-2.0, 3.0)
        return max(1, round(usd * _PRICE))

    @staticmethod
    def _perp_config(index: int) -> tuple[Pubkey, str, str]:
        if index < len(mainnet_perp_market_configs):
            config = mainnet_perp_market_configs[index]
            return config.oracle, variant_name(config.oracle_source), config.symbol
        # Seeds like Drift's own Pyth Lazer oracle PDAs, with feed ids no real feed uses.
        feed = (_SIM_FEED_BASE + index).to_bytes(4, "little")
        oracle = Pubkey.find_program_address([b"pyth_lazer", feed], DRIFT_PROGRAM_ID)[0]
        return oracle, "PythLazer", f"SIM{index}-PERP"

    @staticmethod
    def _is_prediction(index: int) -> bool:
        if index >= len(mainnet_perp_market_configs):
            return False
        config = mainnet_perp_market_configs[index]
        return variant_name(config.oracle_source) == "Prelaunch" and not config.symbol.endswith(
            "-PERP"
        )

    def _create_perp(self, index: int, now: float) -> None:
        """Write perp market ``index`` with plausible mainnet-like parameters for its price."""
        oracle_pubkey, source, symbol = self._perp_config(index)
        rng = self._rng
        prediction = self._is_prediction(index)
        price = self._read(oracle_pubkey, source)
        ts = int(now)
        if index in _MAJORS:
            notional = 50e6
        elif prediction:
            notional = 10 ** rng.uniform(5.0, 6.0)
        else:
            notional = 10 ** rng.uniform(6.0, 7.3)
        sqrt_k = max(_RESERVE, round(notional / (price / _PRICE) * _RESERVE))
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
        tier = self._tier(index, prediction)
        initial, maintenance = {"A": (500, 300), "B": (1000, 500), "C": (1000, 500)}.get(
            tier, (2000, 1000)
        )
        if prediction:
            initial, maintenance = 10_000, 5_000
        notional_quote = round(notional * _QUOTE)
        total_fee = notional_quote // 200
        base_spread = 100 if index in _MAJORS else 500
        oracle_conf = _confidence(price)
        funding_age = rng.randrange(self._funding_period)
        long_quote = -(long * price // _BASE)
        short_quote = -(short * price // _BASE)

        amm = dataclasses.replace(
            _codec.blank("PerpMarket").amm,
            oracle=oracle_pubkey,
            oracle_source=variant("OracleSource", source),
            historical_oracle_data=_oracle_history(
                _codec.blank("PerpMarket").amm.historical_oracle_data, price, price, price, ts
            ),
            fee_pool=self._pool(total_fee // 4, 0),
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
            last_oracle_conf_pct=oracle_conf * _SPREAD // price,
            net_revenue_since_last_funding=0,
            last_funding_rate_ts=ts - funding_age,
            funding_period=self._funding_period,
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
            pnl_pool=self._pool(total_fee // 5, 0),
            name=list(symbol.encode()[:32].ljust(32, b" ")),
            insurance_claim=dataclasses.replace(
                _codec.blank("PerpMarket").insurance_claim,
                max_revenue_withdraw_per_period=100 * _QUOTE,
                quote_max_insurance=notional_quote // 10,
                quote_settled_insurance=0,
                last_revenue_withdraw_ts=ts,
            ),
            unrealized_pnl_max_imbalance=notional_quote // 100,
            expiry_ts=ts - _ONE_DAY if status == "Settlement" else 0,
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
            high_leverage_margin_ratio_initial=100 if index in _MAJORS else 0,
            high_leverage_margin_ratio_maintenance=66 if index in _MAJORS else 0,
            last_fill_price=price,
        )
        perp = _Perp(market.pubkey, market, bias, bias)
        self._perps[index] = perp
        perp.market = self._repriced(perp, market, price, ts, settle=False)
        amm = perp.market.amm
        rate = _funding_rate(amm, tier)
        perp.market = dataclasses.replace(
            perp.market,
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
        self._put_drift(perp.pubkey, "PerpMarket", perp.market)

    @staticmethod
    def _tier(index: int, prediction: bool) -> str:
        if prediction:
            return "Isolated"
        if index in _MAJORS:
            return "A"
        if index < 16:
            return "B"
        if index < 36:
            return "C"
        return "Speculative"

    @staticmethod
    def _pool(scaled_balance: int, market_index: int) -> Any:
        return dataclasses.replace(
            _codec.blank("PerpMarket").pnl_pool,
            scaled_balance=scaled_balance,
            market_index=market_index,
        )

    # evolution helpers

    def _walk(self, oracle: _Oracle) -> None:
        rng = self._rng
        if oracle.kind == "walk":
            oracle.target = max(1, round(oracle.target * math.exp(rng.gauss(0.0, _SLOT_SIGMA))))
        elif oracle.kind == "stable":
            drift = (oracle.target - _PRICE) * 0.9 + rng.gauss(0.0, _STABLE_SIGMA)
            oracle.target = max(1, round(_PRICE + drift))
        else:
            moved = oracle.target + rng.gauss(0.0, _PROBABILITY_SIGMA)
            low = min(_PROBABILITY_RANGE[0] * _PRICE, oracle.target)
            high = max(_PROBABILITY_RANGE[1] * _PRICE, oracle.target)
            oracle.target = round(min(max(moved, low), high))

    def _next_premium(self, perp: _Perp) -> float:
        moved = perp.premium_bias + (perp.premium - perp.premium_bias) * _PREMIUM_REVERSION
        moved += self._rng.gauss(0.0, _PREMIUM_SIGMA)
        return min(max(moved, -_PREMIUM_CAP), _PREMIUM_CAP)

    def _write_oracle(self, oracle: _Oracle, now: float) -> None:
        confidence = _STABLE_CONF if oracle.kind == "stable" else _confidence(oracle.target)
        quote = OracleQuote(oracle.target, confidence, self._store.slot, now)
        encoded = encode_oracle(
            oracle.source, quote, market_index=oracle.market_index, feed_id=oracle.feed_id
        )
        oracle.encoded = encoded
        account = Account(
            encoded.data, encoded.owner, _codec.rent_exempt_lamports(len(encoded.data))
        )
        self._store.put(oracle.pubkey, account)

    def _read(self, pubkey: Pubkey, source: str) -> int:
        """What driftpy decodes from the world's oracle ``pubkey`` read as ``source``."""
        oracle = self._oracles.get(pubkey)
        if oracle is None:
            raise LookupError(f"no oracle account {pubkey}")
        if oracle.replayed_price is not None:
            if source not in oracle.replayed_price:
                raise LookupError(f"replayed oracle {pubkey} does not decode as {source}")
            return oracle.replayed_price[source]
        if oracle.encoded is None:
            raise LookupError(f"oracle {pubkey} was never written")
        return read_price(source, oracle.encoded)

    def _market_price(self, pubkey: Pubkey, source: str) -> int:
        try:
            return self._read(pubkey, source)
        except ValueError as exc:
            raise LookupError(str(exc)) from None

    def _refresh_perp(self, index: int, now: float, *, force: bool) -> None:
        perp = self._perps[index]
        market = perp.market
        amm = market.amm
        try:
            price = self._read(amm.oracle, variant_name(amm.oracle_source))
        except (LookupError, ValueError):
            return  # a replayed oracle that does not decode: the market keeps its last state
        if price <= 0:
            return  # nor can an AMM be pegged to a replayed oracle's non-positive price
        status = variant_name(market.status)
        due = status not in _NO_FUNDING and now - amm.last_funding_rate_ts >= self._funding_period_s
        mark = calculate_price(amm.base_asset_reserve, amm.quote_asset_reserve, amm.peg_multiplier)
        target = price * (1.0 + perp.premium)
        if not (force or due or abs(mark / target - 1.0) > _REPEG_BAND):
            return
        perp.market = self._repriced(perp, market, price, int(now), settle=due)
        self._put_drift(perp.pubkey, "PerpMarket", perp.market)

    def _repriced(self, perp: _Perp, market: Any, price: int, now: int, *, settle: bool) -> Any:
        """``market`` re-pegged to ``price`` with twaps advanced to ``now`` and funding settled."""
        amm = market.amm
        sqrt_k: int = amm.sqrt_k
        peg = price * _PEG // _PRICE
        # A peg of one unit cannot carry a discount: the mark would floor to 0, which Drift's
        # spread math divides by.
        ratio = math.sqrt(1.0 + max(perp.premium, 1.0 / peg - 1.0 + _TICK_PREMIUM))
        base = round(sqrt_k / ratio)
        quote = round(sqrt_k * ratio)
        mark = calculate_price(base, quote, peg)
        invariant = sqrt_k * sqrt_k
        half_long = amm.long_spread // 2
        half_short = amm.short_spread // 2
        ask_quote = quote + (quote // (_SPREAD // half_long) if half_long else 0)
        bid_quote = quote - (quote // (_SPREAD // half_short) if half_short else 0)
        ask_base = invariant // ask_quote
        bid_base = invariant // bid_quote
        ask = calculate_price(ask_base, ask_quote, peg)
        bid = calculate_price(bid_base, bid_quote, peg)
        terminal_base = max(1, base + amm.base_asset_amount_with_amm)
        conf = _confidence(price)

        hist = amm.historical_oracle_data
        since_oracle = max(0, now - hist.last_oracle_price_twap_ts)
        oracle_twap = _twap(hist.last_oracle_price_twap, price, since_oracle, amm.funding_period)
        oracle_twap5 = _twap(hist.last_oracle_price_twap5min, price, since_oracle, _FIVE_MINUTES)
        since_mark = max(0, now - amm.last_mark_price_twap_ts)
        bid_twap = _twap(amm.last_bid_price_twap or bid, bid, since_mark, amm.funding_period)
        ask_twap = _twap(amm.last_ask_price_twap or ask, ask, since_mark, amm.funding_period)
        mark_twap5 = _twap(
            amm.last_mark_price_twap5min or mark, (bid + ask) // 2, since_mark, _FIVE_MINUTES
        )
        slot = self._store.slot
        changes: dict[str, Any] = {
            "historical_oracle_data": _oracle_history(hist, price, oracle_twap, oracle_twap5, now),
            "base_asset_reserve": base,
            "quote_asset_reserve": quote,
            "peg_multiplier": peg,
            "terminal_quote_asset_reserve": invariant // terminal_base,
            "ask_base_asset_reserve": ask_base,
            "ask_quote_asset_reserve": ask_quote,
            "bid_base_asset_reserve": bid_base,
            "bid_quote_asset_reserve": bid_quote,
            "last_oracle_normalised_price": price,
            "last_oracle_reserve_price_spread_pct": (mark - price) * _SPREAD // mark,
            "last_oracle_conf_pct": conf * _SPREAD // price,
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
            rate = _funding_rate(
                dataclasses.replace(amm, **changes), variant_name(market.contract_tier)
            )
            elapsed = now - amm.last_funding_rate_ts
            changes |= {
                "last_funding_rate": rate,
                "last_funding_rate_long": rate,
                "last_funding_rate_short": rate,
                "cumulative_funding_rate_long": amm.cumulative_funding_rate_long + rate,
                "cumulative_funding_rate_short": amm.cumulative_funding_rate_short + rate,
                "last24h_avg_funding_rate": _twap(
                    amm.last24h_avg_funding_rate, rate, elapsed, _ONE_DAY
                ),
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

    def _write_spot(self, index: int, now: float) -> None:
        config = mainnet_spot_market_configs[index]
        source = variant_name(config.oracle_source)
        price = self._read(config.oracle, source)
        ts = int(now)
        rng = self._rng
        decimals = config.decimals
        usd_deposits = 300e6 if index == 0 else 150e6
        token_deposits = round(usd_deposits / (price / _PRICE) * 10**decimals)
        utilization = rng.uniform(0.3, 0.7)
        token_borrows = round(token_deposits * utilization)
        deposit_interest = round(SPOT_CUMULATIVE_INTEREST_PRECISION * rng.uniform(1.02, 1.2))
        borrow_interest = round(deposit_interest * rng.uniform(1.02, 1.1))
        precision_decrease = 10 ** (19 - decimals)
        collateral = index == 0
        step = 10 ** max(0, decimals - 4) if not collateral else 1
        market = dataclasses.replace(
            _codec.blank("SpotMarket"),
            pubkey=self._spots[index].pubkey,
            oracle=config.oracle,
            mint=config.mint,
            vault=get_spot_market_vault_public_key(DRIFT_PROGRAM_ID, index),
            name=list(config.symbol.encode()[:32].ljust(32, b" ")),
            **_spot_price_history(_codec.blank("SpotMarket"), price, price, price, ts),
            revenue_pool=self._pool(token_deposits // 1_000, index),
            spot_fee_pool=self._pool(token_deposits // 10_000, index),
            insurance_fund=dataclasses.replace(
                _codec.blank("SpotMarket").insurance_fund,
                vault=get_insurance_fund_vault_public_key(DRIFT_PROGRAM_ID, index),
                total_shares=token_deposits // 20,
                user_shares=token_deposits // 40,
                unstaking_period=13 * _ONE_DAY,
                last_revenue_settle_ts=ts,
                revenue_settle_period=_ONE_HOUR,
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
            oracle_source=variant("OracleSource", source),
            status=variant("MarketStatus", "Active"),
            asset_tier=variant("AssetTier", "Collateral"),
            max_token_borrows_fraction=8_000,
        )
        self._spots[index].market = market
        self._put_drift(market.pubkey, "SpotMarket", market)

    def _refresh_spot(self, index: int, now: float, *, force: bool) -> None:
        spot = self._spots[index]
        if spot.frozen:
            return
        market = spot.market
        try:
            price = self._read(market.oracle, variant_name(market.oracle_source))
        except (LookupError, ValueError):
            return
        hist = market.historical_oracle_data
        if not force and abs(price / hist.last_oracle_price - 1.0) <= _SPOT_BAND:
            return
        ts = int(now)
        since = max(0, ts - hist.last_oracle_price_twap_ts)
        twap = _twap(hist.last_oracle_price_twap, price, since, _ONE_HOUR)
        twap5 = _twap(hist.last_oracle_price_twap5min, price, since, _FIVE_MINUTES)
        spot.market = dataclasses.replace(
            market, **_spot_price_history(market, price, twap, twap5, ts)
        )
        self._put_drift(spot.pubkey, "SpotMarket", spot.market)

    def _write_state(self) -> None:
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
            referrer_reward_epoch_upper_bound=1_000 * _QUOTE,
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
            number_of_authorities=len(self._perps) * 1_000,
            number_of_sub_accounts=len(self._perps) * 1_500,
            liquidation_margin_buffer_ratio=200,
            settlement_duration=_ONE_HOUR,
            number_of_markets=max(self._perps, default=-1) + 1,
            number_of_spot_markets=max(self._spots, default=-1) + 1,
            signer_nonce=signer_nonce,
            min_perp_auction_duration=10,
            default_market_order_time_in_force=60,
            default_spot_auction_duration=10,
            liquidation_duration=150,
            initial_pct_to_liquidate=1_000,
            max_number_of_sub_accounts=65_535,
        )
        if self._state is not None and state == self._state:
            return
        self._state = state
        self._put_drift(self._state_pubkey, "State", state)

    def _put_drift(self, pubkey: Pubkey, name: str, obj: Any) -> None:
        data = _codec.encode(name, obj)
        self._store.put(
            pubkey, Account(data, DRIFT_PROGRAM_ID, _codec.rent_exempt_lamports(len(data)))
        )

    # replay helpers

    def _adopt(self, pubkey: Pubkey, account: Account, replayed_perps: list[int]) -> None:
        oracle = self._oracles.get(pubkey)
        if oracle is not None:
            oracle.frozen = True
            oracle.replayed_price = self._decode_replayed_oracle(pubkey, account.data)
            return
        name = _codec.account_name(account.data) if account.owner == DRIFT_PROGRAM_ID else None
        obj = None
        if name in ("PerpMarket", "SpotMarket", "State"):
            try:
                obj = _codec.decode(account.data)
            except Exception:  # construct raises many unrelated error types for bad bytes
                log.warning("replayed %s %s does not decode; serving it as is", name, pubkey)
                self._forget(pubkey)
                return
        if obj is None:
            self._forget(pubkey)
            return
        if name == "PerpMarket":
            self._perps[obj.market_index] = _Perp(pubkey, obj, frozen=True)
            replayed_perps.append(obj.market_index)
        elif name == "SpotMarket":
            self._spots[obj.market_index] = _Spot(pubkey, obj, frozen=True)
        elif pubkey == self._state_pubkey:
            self._state = obj
            self._state_frozen = True

    def _forget(self, pubkey: Pubkey) -> None:
        """Stop simulating whatever market or State lived at ``pubkey``: the replay replaced it."""
        self._perps = {i: p for i, p in self._perps.items() if p.pubkey != pubkey}
        self._spots = {i: s for i, s in self._spots.items() if s.pubkey != pubkey}
        if pubkey == self._state_pubkey:
            self._state_frozen = True

    def _decode_replayed_oracle(self, pubkey: Pubkey, data: bytes) -> dict[str, int]:
        prices: dict[str, int] = {}
        readers = {
            variant_name(p.market.amm.oracle_source)
            for p in self._perps.values()
            if p.market.amm.oracle == pubkey
        }
        readers |= {
            variant_name(s.market.oracle_source)
            for s in self._spots.values()
            if s.market.oracle == pubkey
        }
        for source in sorted(readers):
            try:
                prices[source] = int(decode_oracle(data, variant("OracleSource", source)).price)
            except Exception:  # driftpy's decoders raise struct, construct and value errors alike
                log.warning("replayed oracle %s does not decode as %s", pubkey, source)
        return prices

    def _ensure_oracle(self, market: Any) -> None:
        pubkey: Pubkey = market.amm.oracle
        source = variant_name(market.amm.oracle_source)
        known = self._oracles.get(pubkey)
        if known is not None:
            if known.replayed_price is not None and source not in known.replayed_price:
                known.replayed_price |= self._decode_replayed_oracle(
                    pubkey, self._stored_data(pubkey)
                )
            elif known.encoded is not None and not known.frozen:
                self._anchor(known, known.encoded, market, source)
            return
        stored = self._store.get(pubkey)
        if stored is not None:
            oracle = _Oracle(
                pubkey, source, "walk", 0, market.market_index, bytes(pubkey), frozen=True
            )
            self._oracles[pubkey] = oracle
            oracle.replayed_price = self._decode_replayed_oracle(pubkey, stored.data)
            return
        price = int(market.amm.historical_oracle_data.last_oracle_price)
        if source not in SUPPORTED_SOURCES or price <= 0:
            log.warning(
                "cannot synthesize a %s oracle at price %d for replayed perp market %d",
                source,
                price,
                market.market_index,
            )
            return
        prediction = variant_name(market.contract_type) == "Prediction"
        kind: _OracleKind = (
            "probability" if prediction else "stable" if "StableCoin" in source else "walk"
        )
        oracle = _Oracle(pubkey, source, kind, price, market.market_index, bytes(pubkey))
        self._oracles[pubkey] = oracle
        self._write_oracle(oracle, self._clock())

    def _anchor(self, oracle: _Oracle, encoded: EncodedOracle, market: Any, source: str) -> None:
        """Move a simulated oracle to where a replayed market last saw it, so the two agree."""
        try:
            read_price(source, encoded)
        except ValueError as exc:
            log.warning("replayed perp market %d: %s", market.market_index, exc)
            return
        price = int(market.amm.historical_oracle_data.last_oracle_price)
        if price > 0:
            self._move_oracle(oracle, price, source)

    def _stored_data(self, pubkey: Pubkey) -> bytes:
        stored = self._store.get(pubkey)
        return stored.data if stored is not None else b""

    def _perp(self, index: int) -> _Perp:
        try:
            return self._perps[index]
        except KeyError:
            raise KeyError(f"no perp market {index}") from None

    def _spot(self, index: int) -> _Spot:
        try:
            return self._spots[index]
        except KeyError:
            raise KeyError(f"no spot market {index}") from None


def _confidence(price: int) -> int:
    return max(1, price // _CONF_DIVISOR)


def _twap(last: int, price: int, since: int, period: int) -> int:
    """Drift's twap update: ``price`` weighs ``since`` seconds, ``last`` the rest of ``period``."""
    since = min(max(0, since), period)
    from_start = max(0, period - since)
    if since + from_start == 0:
        return price
    return (price * since + last * from_start) // (since + from_start)


def _div_trunc(numerator: int, denominator: int) -> int:
    """Integer division rounding toward zero, as Rust's does."""
    quotient = abs(numerator) // abs(denominator)
    return quotient if (numerator >= 0) == (denominator > 0) else -quotient


def _funding_rate(amm: Any, tier: str) -> int:
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
    period_adjustment = _ONE_DAY // max(_ONE_HOUR, amm.funding_period)
    return _div_trunc(spread * _FUNDING_BUFFER, period_adjustment)
