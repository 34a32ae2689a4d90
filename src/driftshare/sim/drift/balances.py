"""Spot balances: tokens in and out of a user's spot position and its market, as Drift scales them.

A position holds a *scaled* balance; its token amount is the balance times the market's
cumulative interest. The rounding follows protocol-v2's ``update_spot_balances``: what the user
owes rounds up, what the user holds rounds down. Interest does not accrue in the simulator, so
the cumulative interest stays as the world created it.

``token_amount`` is written here rather than driftpy's ``get_token_amount``, which divides a
deposit in floating point and so drifts from the program's integer result on large balances.
"""

from __future__ import annotations

from typing import Any

from driftshare.sim._codec import variant, variant_name

__all__ = [
    "scaled_balance",
    "signed_token_amount",
    "token_amount",
    "update_pool_balance",
    "update_spot_balance",
]

_SCALED_DECIMALS = 19


def _interest(market: Any, balance_type: str) -> int:
    interest: int = (
        market.cumulative_deposit_interest
        if balance_type == "Deposit"
        else market.cumulative_borrow_interest
    )
    return interest


def _precision(market: Any) -> int:
    return int(10 ** (_SCALED_DECIMALS - market.decimals))


def scaled_balance(tokens: int, market: Any, balance_type: str, *, round_up: bool) -> int:
    """The scaled balance worth ``tokens`` of ``market`` as a deposit or a borrow."""
    balance = tokens * _precision(market) // _interest(market, balance_type)
    return balance + 1 if round_up and balance != 0 else balance


def token_amount(balance: int, market: Any, balance_type: str) -> int:
    """The tokens a scaled ``balance`` is worth: a borrow rounds up, a deposit down."""
    product = balance * _interest(market, balance_type)
    precision = _precision(market)
    return -(-product // precision) if balance_type == "Borrow" else product // precision


def signed_token_amount(position: Any, market: Any) -> int:
    """A spot position's tokens, negative for a borrow."""
    kind = variant_name(position.balance_type)
    tokens = token_amount(position.scaled_balance, market, kind)
    return -tokens if kind == "Borrow" else tokens


def _change_market_balance(market: Any, balance_type: str, delta: int) -> None:
    if balance_type == "Deposit":
        market.deposit_balance += delta
    else:
        market.borrow_balance += delta


def update_spot_balance(tokens: int, direction: str, market: Any, position: Any) -> None:
    """Move ``tokens`` into (``Deposit``) or out of (``Borrow``) a position and its market.

    Moving against the position's side first uses up what it holds, then flips its side, as
    protocol-v2's ``update_spot_balances`` does.
    """
    held = variant_name(position.balance_type)
    if direction == held:
        delta = scaled_balance(tokens, market, direction, round_up=direction == "Borrow")
        position.scaled_balance += delta
        _change_market_balance(market, direction, delta)
        return
    current = token_amount(position.scaled_balance, market, held)
    if current > 0:
        if current > tokens:
            used = tokens
            delta = scaled_balance(tokens, market, held, round_up=True)
        else:
            used = current
            delta = position.scaled_balance
        position.scaled_balance -= delta
        _change_market_balance(market, held, -delta)
        tokens -= used
    if tokens > 0:
        position.balance_type = variant("SpotBalanceType", direction)
        delta = scaled_balance(tokens, market, direction, round_up=direction == "Borrow")
        position.scaled_balance += delta
        _change_market_balance(market, direction, delta)


def update_pool_balance(tokens: int, market: Any, pool: Any) -> None:
    """Add (or with negative ``tokens`` take) quote tokens to a market pool such as a PnL pool.

    Pools only hold deposits; taking more than a pool holds is the caller's error.
    """
    if tokens >= 0:
        delta = scaled_balance(tokens, market, "Deposit", round_up=False)
    else:
        delta = -min(pool.scaled_balance, scaled_balance(-tokens, market, "Deposit", round_up=True))
    pool.scaled_balance += delta
    market.deposit_balance += delta
