"""Funding, prices and open interest of a Drift perp market, as pure functions of its account.

Every function takes a driftpy ``PerpMarketAccount`` (or the object driftpy's IDL coder decodes,
which has the same attributes) and does no I/O. The math reuses driftpy 0.8.89 and is
cross-checked against Drift's TypeScript SDK; ``docs/funding-math.md`` has the sources.

Funding math
------------
* Drift settles funding once per ``amm.funding_period`` (3600 s on mainnet perps) at the
  boundary the program's ``on_the_hour_update`` allows (``time_remaining_until_update`` in
  driftpy / ``timeRemainingUntilUpdate`` in the SDK). :func:`next_funding_ts` is
  ``last_funding_rate_ts`` plus that wait: a market settled late in its period skips to the
  following boundary.
* ``amm.last_funding_rate`` is the settled payment in quote per base unit, scaled by
  ``FUNDING_RATE_PRECISION`` (1e9). As a fraction of price per hour it is
  ``last_funding_rate / 1e9 / (twap / 1e6)`` where ``twap`` is ``amm.last_funding_oracle_twap``,
  the oracle twap the program stored with that rate (the SDK's ``getLastFundingBasis`` divides by
  the same field). Accounts written before that field existed hold 0 there; they fall back to
  ``amm.historical_oracle_data.last_oracle_price_twap``.
* ``rate_8h = hourly * 8 * 100`` and ``rate_annual = hourly * 24 * 365.25 * 100`` (percent; the
  SDK's ``calculateFormattedLiveFundingRate`` annualises with ``24 * 365.25``). A positive rate
  means longs pay shorts.
* The predicted rate of the running period is driftpy's
  ``calculate_long_short_funding_and_live_twaps`` (the SDK's
  ``calculateLongShortFundingRateAndLiveTwaps``): the long side's rate, in percent scaled by
  ``PRICE_PRECISION``, so the fraction is ``long_rate / 1e6 / 100``.
* Mark price is the AMM bid/ask mid (driftpy ``calculate_bid_ask_price``) at ``now``. The AMM is
  repegged with the SDK's ``calculateAdjustKCost``: driftpy's ``calculate_adjust_k_cost`` is off
  by ``AMM_RESERVE_PRECISION`` and raises on live markets.
* Open interest is ``base_asset_amount_long + |base_asset_amount_short|`` in base units
  (``BASE_PRECISION`` 1e9).

Status
------
``status`` is driftpy's ``MarketStatus`` variant in snake case: ``initialized``, ``active``,
``funding_paused``, ``amm_paused``, ``fill_paused``, ``withdraw_paused``, ``reduce_only``,
``settlement``, ``delisted``. Settlement and delisted markets pay no more funding: their rates are
0 and their predicted rate is None. The predicted rate is also None while funding updates are
paused (``funding_paused``, ``initialized``, or the ``UpdateFunding`` bit of
``paused_operations``), since the program will not settle it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import driftpy
from anchorpy.coder.accounts import AccountsCoder
from anchorpy_core.idl import Idl
from construct import ConstructError
from driftpy.constants.numeric_constants import (
    AMM_TO_QUOTE_PRECISION_RATIO,
    BASE_PRECISION,
    FUNDING_RATE_PRECISION,
    PEG_PRECISION,
    PERCENTAGE_PRECISION,
    PRICE_PRECISION,
)
from driftpy.math.amm import (
    calculate_amm_reserves_after_swap,
    calculate_price,
    calculate_spread_reserves,
    deepcopy_amm,
    get_swap_direction,
)
from driftpy.math.funding import calculate_long_short_funding_and_live_twaps
from driftpy.math.repeg import (
    calculate_budgeted_peg,
    calculate_optimal_peg_and_budget,
    calculate_repeg_cost,
)
from driftpy.math.utils import time_remaining_until_update
from driftpy.types import AMM, AssetType, OraclePriceData, PerpMarketAccount, PositionDirection
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "HOURS_PER_YEAR",
    "FundingRateData",
    "MarketData",
    "MarketMathError",
    "TxResult",
    "TxStatus",
    "decode_perp_market",
    "funding_is_live",
    "funding_rate_from_market",
    "hourly_funding_rate",
    "mark_price",
    "market_data_from_market",
    "market_name",
    "market_oracle_price_data",
    "market_status",
    "next_funding_ts",
    "predicted_funding_rate",
    "seconds_to_next_funding",
]

HOURS_PER_YEAR = 24 * 365.25
"""Funding payments per year, as the SDK's ``calculateFormattedLiveFundingRate`` counts them."""

_NO_FUNDING_STATUSES = frozenset({"settlement", "delisted"})
_PAUSED_FUNDING_STATUSES = frozenset({"initialized", "funding_paused"})
# PerpOperation::UpdateFunding in protocol-v2 programs/drift/src/state/paused_operations.rs.
_UPDATE_FUNDING_PAUSED = 1
_PRICE: int = PRICE_PRECISION
_BASE: int = BASE_PRECISION
_FUNDING: int = FUNDING_RATE_PRECISION
_PREDICTED_RATE_SCALE = _PRICE * 100
_JSONScalar = float | int | str | bool | None


class MarketMathError(ValueError):
    """A market account whose values cannot be turned into prices or rates."""


def _scalars(record: FundingRateData | MarketData) -> dict[str, _JSONScalar]:
    # Every field is a scalar, so dataclasses.asdict's recursive deep copy (13x slower on
    # this hot path of the dict API) buys nothing.
    return {name: getattr(record, name) for name in record.__slots__}


@dataclass(slots=True)
class FundingRateData:
    """Funding of one perp market; rates are fractions or percent as each field says."""

    market: str
    market_index: int
    rate_hourly: float
    """Last settled funding per hour, as a fraction of the oracle twap."""
    rate_8h: float
    """``rate_hourly`` over 8 hours, in percent."""
    rate_annual: float
    """``rate_hourly`` over a year of hourly payments, in percent."""
    is_positive: bool
    """True when longs pay shorts."""
    mark_price: float
    oracle_price: float
    predicted_rate_hourly: float | None
    """Estimated fraction for the running period; None when no funding will be settled."""
    next_funding_ts: int
    status: str
    timestamp: float
    stale: bool = False
    """True when ``data_age_s`` exceeds ``DRIFT_STALE_AFTER_S``, the market is unavailable or
    upstream is down."""
    age_s: float = 0.0
    """Seconds since this value was computed from the accounts (the cache entry's age)."""
    slot: int = 0
    """The newest slot at which the accounts it was computed from are known to be current."""
    data_age_s: float = 0.0
    """Seconds since those accounts were last known current (at ``slot``)."""

    def to_dict(self) -> dict[str, _JSONScalar]:
        """The fields as JSON-ready scalars."""
        return _scalars(self)


@dataclass(slots=True)
class MarketData:
    """Prices and open interest of one perp market, in quote and base units."""

    market_index: int
    symbol: str
    status: str
    mark_price: float
    oracle_price: float
    funding_rate: float
    """Last settled funding per hour, as a fraction (``FundingRateData.rate_hourly``)."""
    open_interest: float
    """Long plus short base amount."""
    open_interest_usd: float
    """``open_interest`` at the oracle price."""
    base_asset_amount_long: float
    base_asset_amount_short: float
    """Negative, as stored on chain."""
    timestamp: float
    stale: bool = False
    """True when ``data_age_s`` exceeds ``DRIFT_STALE_AFTER_S``, the market is unavailable or
    upstream is down."""
    age_s: float = 0.0
    """Seconds since this value was computed from the accounts (the cache entry's age)."""
    slot: int = 0
    """The newest slot at which the accounts it was computed from are known to be current."""
    data_age_s: float = 0.0
    """Seconds since those accounts were last known current (at ``slot``)."""

    def to_dict(self) -> dict[str, _JSONScalar]:
        """The fields as JSON-ready scalars."""
        return _scalars(self)


@cache
def _accounts_coder() -> AccountsCoder:
    idl_path = Path(next(iter(driftpy.__path__))) / "idl" / "drift.json"
    return AccountsCoder(Idl.from_json(idl_path.read_text()))


def decode_perp_market(data: bytes) -> PerpMarketAccount:
    """Decode raw ``PerpMarket`` account bytes with driftpy's bundled IDL."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    coder = _accounts_coder()
    raw = bytes(data)
    if raw[:8] != coder.acc_name_to_discriminator["PerpMarket"]:
        raise ValueError("not a PerpMarket account: discriminator does not match")
    try:
        return coder.decode(raw)
    except ConstructError as exc:
        raise ValueError(f"malformed PerpMarket account ({len(raw)} bytes): {exc}") from None


def market_name(perp_market: PerpMarketAccount) -> str:
    """The on-chain name, its space padding removed."""
    return bytes(perp_market.name).decode("utf-8", errors="replace").strip(" \x00")


_CAMEL_BOUNDARY = re.compile(r"(?<!^)(?=[A-Z])")


def snake_case(name: str) -> str:
    """A driftpy enum variant's name in snake case: ``ReduceOnly`` → ``reduce_only``."""
    return _CAMEL_BOUNDARY.sub("_", name).lower()


def market_status(perp_market: PerpMarketAccount) -> str:
    """The ``MarketStatus`` variant in snake case, e.g. ``"reduce_only"``."""
    return snake_case(type(perp_market.status).__name__)


def funding_is_live(perp_market: PerpMarketAccount) -> bool:
    """Whether the program will settle funding for the running period."""
    status = market_status(perp_market)
    if status in _NO_FUNDING_STATUSES or status in _PAUSED_FUNDING_STATUSES:
        return False
    return not perp_market.paused_operations & _UPDATE_FUNDING_PAUSED


def market_oracle_price_data(perp_market: PerpMarketAccount) -> OraclePriceData:
    """The oracle as the program last read it, from ``amm.historical_oracle_data``."""
    hist = perp_market.amm.historical_oracle_data
    return OraclePriceData(
        price=hist.last_oracle_price,
        slot=perp_market.amm.last_update_slot,
        confidence=hist.last_oracle_conf,
        twap=hist.last_oracle_price_twap,
        twap_confidence=0,
        has_sufficient_number_of_data_points=True,
    )


def _oracle(
    perp_market: PerpMarketAccount, oracle_price_data: OraclePriceData | None
) -> OraclePriceData:
    if oracle_price_data is None:
        return market_oracle_price_data(perp_market)
    return oracle_price_data


def hourly_funding_rate(perp_market: PerpMarketAccount) -> float:
    """The last settled funding per hour as a fraction of price; 0 for settled markets."""
    if market_status(perp_market) in _NO_FUNDING_STATUSES:
        return 0.0
    amm = perp_market.amm
    rate: int = amm.last_funding_rate
    twap: int = amm.last_funding_oracle_twap or amm.historical_oracle_data.last_oracle_price_twap
    if rate == 0:
        return 0.0
    if twap <= 0:
        raise MarketMathError(
            f"market {perp_market.market_index}: funding rate {rate} with oracle twap {twap}"
        )
    return rate / _FUNDING / (twap / _PRICE)


def next_funding_ts(perp_market: PerpMarketAccount) -> int:
    """Earliest unix time the program accepts the next funding update."""
    last: int = perp_market.amm.last_funding_rate_ts
    period: int = perp_market.amm.funding_period
    if period <= 0:
        # on_the_hour_update waits 0 s for a non-positive period; driftpy's port rejects it.
        return last
    return last + int(time_remaining_until_update(last, last, period))


def seconds_to_next_funding(perp_market: PerpMarketAccount, now: float) -> int:
    """Whole seconds from ``now`` until :func:`next_funding_ts`; 0 once it is due."""
    return max(0, next_funding_ts(perp_market) - int(now))


def _tdiv(numerator: int, denominator: int) -> int:
    # The SDK's BN.div truncates toward zero where Python's // floors.
    quotient = abs(numerator) // abs(denominator)
    return quotient if (numerator < 0) == (denominator < 0) else -quotient


def _adjust_k_cost(amm: AMM, numerator: int, denominator: int) -> int:
    # The SDK's calculateAdjustKCost (math/repeg.ts). driftpy 0.8.89's port also divides the
    # quote scale by AMM_RESERVE_PRECISION and floors negatives, which trips its own assertion on
    # live markets and moves the budgeted peg (docs/funding-math.md, "driftpy and the SDK").
    base: int = amm.base_asset_reserve
    with_amm: int = amm.base_asset_amount_with_amm
    quote_scale: int = amm.quote_asset_reserve * with_amm * amm.peg_multiplier
    p = _tdiv(numerator * PRICE_PRECISION, denominator)
    pct2 = PERCENTAGE_PRECISION * PERCENTAGE_PRECISION
    cost = _tdiv(quote_scale * pct2, base + with_amm) - _tdiv(
        _tdiv(quote_scale * p * pct2, PRICE_PRECISION), _tdiv(base * p, PRICE_PRECISION) + with_amm
    )
    for divisor in (PERCENTAGE_PRECISION, PERCENTAGE_PRECISION, AMM_TO_QUOTE_PRECISION_RATIO):
        cost = _tdiv(cost, divisor)
    return -_tdiv(cost, PEG_PRECISION)


def _scaled_amm(amm: AMM, numerator: int, denominator: int) -> AMM:
    scaled = deepcopy_amm(amm)
    scaled.base_asset_reserve = amm.base_asset_reserve * numerator // denominator
    scaled.sqrt_k = amm.sqrt_k * numerator // denominator
    scaled.quote_asset_reserve = scaled.sqrt_k * scaled.sqrt_k // scaled.base_asset_reserve
    if amm.base_asset_amount_with_amm == 0:
        # Nothing to close: the terminal reserve is the reserve. driftpy asserts a positive
        # swap here where the SDK (calculateAmmReservesAfterSwap) accepts zero.
        scaled.terminal_quote_asset_reserve = scaled.quote_asset_reserve
        return scaled
    to_close = (
        PositionDirection.Short()
        if amm.base_asset_amount_with_amm > 0
        else PositionDirection.Long()
    )
    terminal_quote, _ = calculate_amm_reserves_after_swap(
        scaled,
        AssetType.BASE(),
        abs(amm.base_asset_amount_with_amm),
        get_swap_direction(AssetType.BASE(), to_close),
    )
    scaled.terminal_quote_asset_reserve = terminal_quote
    return scaled


def _repegged_amm(amm: AMM, oracle_price_data: OraclePriceData) -> AMM:
    # driftpy's calculate_updated_amm / calculate_new_amm with the corrected k-adjust cost.
    if amm.curve_update_intensity == 0:
        return amm
    target_price, peg, budget, _ = calculate_optimal_peg_and_budget(amm, oracle_price_data)
    cost = calculate_repeg_cost(amm, peg)
    k_numerator, k_denominator = 1, 1
    if cost >= budget and cost > 0:
        k_numerator, k_denominator = 999, 1000
        deficit = _adjust_k_cost(amm, k_numerator, k_denominator)
        if deficit > 0:
            raise ArithmeticError(f"k-adjust deficit {deficit} is positive")
        shrunk = _scaled_amm(amm, k_numerator, k_denominator)
        peg = calculate_budgeted_peg(shrunk, budget + abs(deficit), target_price)
        cost = calculate_repeg_cost(shrunk, peg)
    updated = _scaled_amm(amm, k_numerator, k_denominator)
    updated.peg_multiplier = peg
    updated.total_fee_minus_distributions -= cost
    updated.net_revenue_since_last_funding -= cost
    return updated


def _bid_ask(
    perp_market: PerpMarketAccount, oracle_price_data: OraclePriceData, now: int
) -> tuple[int, int]:
    # driftpy's calculate_bid_ask_price, with ``now`` passed on (it reads the wall clock) and
    # the repeg of _repegged_amm, so results depend only on the arguments.
    amm = _repegged_amm(perp_market.amm, oracle_price_data)
    is_prediction = type(perp_market.contract_type).__name__ == "Prediction"
    bid_reserves, ask_reserves = calculate_spread_reserves(
        amm, oracle_price_data, now, is_prediction=is_prediction
    )
    bid = calculate_price(bid_reserves[0], bid_reserves[1], amm.peg_multiplier)
    ask = calculate_price(ask_reserves[0], ask_reserves[1], amm.peg_multiplier)
    return int(bid), int(ask)


def _mark_price_raw(
    perp_market: PerpMarketAccount, oracle_price_data: OraclePriceData, now: int
) -> int:
    try:
        bid, ask = _bid_ask(perp_market, oracle_price_data, now)
    except (ArithmeticError, AssertionError) as exc:
        raise MarketMathError(
            f"market {perp_market.market_index}: cannot price the AMM: {exc!r}"
        ) from None
    return (bid + ask) // 2


def mark_price(
    perp_market: PerpMarketAccount,
    *,
    oracle_price_data: OraclePriceData | None = None,
    now: float | None = None,
) -> float:
    """The AMM bid/ask mid in quote units."""
    oracle = _oracle(perp_market, oracle_price_data)
    clock = int(time.time() if now is None else now)
    return _mark_price_raw(perp_market, oracle, clock) / _PRICE


def _run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    # driftpy's funding estimators are ``async def`` but never await anything; stepping the
    # coroutine once returns their value without needing (or disturbing) an event loop.
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("driftpy funding estimator suspended; it is expected to be synchronous")


def _predicted_rate_raw(
    perp_market: PerpMarketAccount, oracle_price_data: OraclePriceData, mark: int, now: int
) -> int | None:
    if not funding_is_live(perp_market) or mark <= 0:
        return None
    try:
        _, _, long_rate, _ = _run_sync(
            calculate_long_short_funding_and_live_twaps(perp_market, oracle_price_data, mark, now)
        )
    except (ArithmeticError, AssertionError):
        return None
    return int(long_rate)


def predicted_funding_rate(
    perp_market: PerpMarketAccount,
    *,
    oracle_price_data: OraclePriceData | None = None,
    now: float | None = None,
) -> float | None:
    """Estimated hourly fraction for the running period, or None when none will be settled."""
    oracle = _oracle(perp_market, oracle_price_data)
    clock = int(time.time() if now is None else now)
    try:
        mark = _mark_price_raw(perp_market, oracle, clock)
    except MarketMathError:
        return None
    raw = _predicted_rate_raw(perp_market, oracle, mark, clock)
    return None if raw is None else raw / _PREDICTED_RATE_SCALE


def funding_rate_from_market(
    perp_market: PerpMarketAccount,
    *,
    oracle_price_data: OraclePriceData | None = None,
    now: float | None = None,
) -> FundingRateData:
    """Funding of ``perp_market`` at ``now`` (default: the current time).

    ``oracle_price_data`` is the live oracle in ``PRICE_PRECISION``; without it the market's
    last oracle reading is used. Raises :class:`MarketMathError` for an account whose AMM or
    funding values cannot be evaluated.
    """
    oracle = _oracle(perp_market, oracle_price_data)
    timestamp = time.time() if now is None else float(now)
    clock = int(timestamp)
    hourly = hourly_funding_rate(perp_market)
    mark = _mark_price_raw(perp_market, oracle, clock)
    predicted = _predicted_rate_raw(perp_market, oracle, mark, clock)
    return FundingRateData(
        market=market_name(perp_market),
        market_index=perp_market.market_index,
        rate_hourly=hourly,
        rate_8h=hourly * 8 * 100,
        rate_annual=hourly * HOURS_PER_YEAR * 100,
        is_positive=hourly > 0,
        mark_price=mark / _PRICE,
        oracle_price=oracle.price / _PRICE,
        predicted_rate_hourly=None if predicted is None else predicted / _PREDICTED_RATE_SCALE,
        next_funding_ts=next_funding_ts(perp_market),
        status=market_status(perp_market),
        timestamp=timestamp,
    )


def market_data_from_market(
    perp_market: PerpMarketAccount,
    *,
    oracle_price_data: OraclePriceData | None = None,
    now: float | None = None,
) -> MarketData:
    """Prices and open interest; arguments as in :func:`funding_rate_from_market`.

    ``base_asset_amount_short`` keeps the on-chain sign (negative).
    """
    oracle = _oracle(perp_market, oracle_price_data)
    timestamp = time.time() if now is None else float(now)
    long_base: int = perp_market.amm.base_asset_amount_long
    short_base: int = perp_market.amm.base_asset_amount_short
    open_interest = (long_base + abs(short_base)) / _BASE
    oracle_price = oracle.price / _PRICE
    return MarketData(
        market_index=perp_market.market_index,
        symbol=market_name(perp_market),
        status=market_status(perp_market),
        mark_price=_mark_price_raw(perp_market, oracle, int(timestamp)) / _PRICE,
        oracle_price=oracle_price,
        funding_rate=hourly_funding_rate(perp_market),
        open_interest=open_interest,
        open_interest_usd=open_interest * oracle_price,
        base_asset_amount_long=long_base / _BASE,
        base_asset_amount_short=short_base / _BASE,
        timestamp=timestamp,
    )


# -- a signer's sub-account: reads from its subscribed User account ---------------------------


class AccountRead(BaseModel):
    """How current a sub-account read is, as market data says it.

    ``slot`` is the newest slot at which the User account and every market and oracle the
    values were computed from are known to be current, ``data_age_s`` the seconds since the
    last of them was confirmed. ``stale`` is true past ``DRIFT_STALE_AFTER_S``, while upstream
    is down, or while a confirmed write's slot has not been seen yet.
    """

    model_config = ConfigDict(frozen=True)

    slot: int
    data_age_s: float
    stale: bool

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values."""
        return self.model_dump()


class AccountInfo(AccountRead):
    """A sub-account's margin, in USD, from driftpy's ``DriftUser`` math."""

    authority: str
    """The signer's public key."""
    sub_account_id: int
    user_account: str
    """The User account's address."""
    collateral: float
    """``get_total_collateral()``: spot assets plus weighted unrealized PnL (initial)."""
    free_collateral: float
    """``get_free_collateral()``: collateral above the initial margin requirement."""
    margin_ratio: float | None
    """Assets (with unrealized PnL) over liabilities, as the TS SDK's ``getMarginRatio``
    (1.0 = 100%); None without liabilities."""
    leverage: float
    """``get_leverage()`` as a multiple (1.0 = 1x)."""
    unrealized_pnl: float
    """``get_unrealized_pnl(with_funding=True)``."""


class PositionInfo(AccountRead):
    """One open perp position of a sub-account."""

    market_index: int
    symbol: str
    size: float
    """Signed base amount: positive long, negative short."""
    entry_price: float
    """driftpy's ``calculate_entry_price``: quote entry amount over base amount."""
    unrealized_pnl: float
    """``get_unrealized_pnl(with_funding=True, market_index=…)`` in USD."""
    liquidation_price: float | None
    """``get_perp_liq_price``; None when no price would liquidate it."""


class OrderInfo(AccountRead):
    """One open order of a sub-account."""

    order_id: int
    user_order_id: int
    market_index: int
    market_type: Literal["perp", "spot"]
    symbol: str
    direction: Literal["long", "short"]
    order_type: str
    """driftpy's OrderType variant in snake case: ``market``, ``limit``, ``oracle``…"""
    size: float
    """Base amount ordered."""
    filled: float
    """Base amount filled so far."""
    price: float
    reduce_only: bool
    post_only: bool
    placed_slot: int
    """The slot at which the order was placed."""
    max_ts: int
    """Unix time after which the program refuses to fill it; 0 for none."""


class AccountStatus(AccountRead):
    """Whether a signer's sub-account can trade, and what to do when it cannot."""

    ready: bool
    message: str
    address: str
    """The signer's public key."""
    sub_account_id: int
    user_account: str
    collateral: float | None
    free_collateral: float | None
    margin_ratio: float | None
    positions: int
    """How many perp positions are open."""


# -- a write's outcome ------------------------------------------------------------------------


TxStatus = Literal["confirmed", "failed", "unknown"]


class TxResult(BaseModel):
    """How one write ended, as the chain tells it.

    ``confirmed``: the chain confirmed the transaction without error, at ``slot``.
    ``failed``: it cannot land: it landed with an error, the RPC's preflight refused it
    before it left, or every signature's blockhash expired without a status; ``error`` is
    Drift's error name from its IDL where the program failed.
    ``unknown``: it may still land or may have landed; check ``signature`` before placing
    again. Never retried by re-signing.
    """

    model_config = ConfigDict(frozen=True)

    success: bool
    status: TxStatus
    signature: str | None = None
    """The signature that landed, or (``unknown``) the one that may still land."""
    slot: int | None = None
    """The slot the transaction landed in (``confirmed``, or ``failed`` on chain)."""
    error: str | None = None
    error_code: int | None = None
    """The program's custom error code, when it failed with one."""
    signatures: list[str] = Field(default_factory=list)
    """Every signature signed for this write, in order (more than one only after expiry)."""
    sends: int = 0
    """``sendTransaction`` requests made (resends of the same bytes included)."""
    elapsed_s: float = 0.0
    user_order_id: int | None = None
    reflected: bool | None = None
    """Confirmed writes: whether the sub-account's reads reflected it within
    ``DRIFT_TX_READ_TIMEOUT_S`` (if not, they stay marked stale until they do)."""

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready data."""
        return self.model_dump()
