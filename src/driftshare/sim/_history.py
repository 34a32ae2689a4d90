"""Oracle confidence, twaps and price histories, as Drift's program keeps them in markets."""

from __future__ import annotations

import dataclasses
from typing import Any

from driftpy.constants.numeric_constants import (
    AMM_RESERVE_PRECISION,
    BASE_PRECISION,
    BID_ASK_SPREAD_PRECISION,
    FUNDING_RATE_BUFFER,
    PEG_PRECISION,
    PRICE_PRECISION,
    QUOTE_PRECISION,
)

from driftshare.sim import _codec

PRICE: int = PRICE_PRECISION
PEG: int = PEG_PRECISION
BASE: int = BASE_PRECISION
RESERVE: int = AMM_RESERVE_PRECISION
QUOTE: int = QUOTE_PRECISION
SPREAD: int = BID_ASK_SPREAD_PRECISION
FUNDING_BUFFER: int = FUNDING_RATE_BUFFER
ONE_HOUR = 3600
ONE_DAY = 24 * ONE_HOUR
FIVE_MINUTES = 300

_CONF_DIVISOR = 10_000
"""Oracle confidence is 1 bp of the price."""


def confidence(price: int) -> int:
    return max(1, price // _CONF_DIVISOR)


def twap(last: int, price: int, since: int, period: int) -> int:
    """Drift's twap update: ``price`` weighs ``since`` seconds, ``last`` the rest of ``period``."""
    since = min(max(0, since), period)
    from_start = max(0, period - since)
    if since + from_start == 0:
        return price
    return (price * since + last * from_start) // (since + from_start)


def oracle_history(history: Any, price: int, twap: int, twap5: int, ts: int) -> Any:
    """A market's ``historical_oracle_data`` after an oracle price of ``price`` at ``ts``."""
    return dataclasses.replace(
        history,
        last_oracle_price=price,
        last_oracle_conf=confidence(price),
        last_oracle_delay=0,
        last_oracle_price_twap=twap,
        last_oracle_price_twap5min=twap5,
        last_oracle_price_twap_ts=ts,
    )


def pool(scaled_balance: int, market_index: int) -> Any:
    """A pool (``PoolBalance``) of ``scaled_balance`` in spot market ``market_index``."""
    return dataclasses.replace(
        _codec.blank("PerpMarket").pnl_pool,
        scaled_balance=scaled_balance,
        market_index=market_index,
    )
