"""Margin checks with driftpy's own math: a ``DriftUser`` reading an instruction's accounts."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from driftpy.account_subscription_config import AccountSubscriptionConfig
from driftpy.accounts.types import DataAndSlot
from driftpy.drift_user import DriftUser
from driftpy.math.margin import MarginCategory
from driftpy.types import OraclePriceData
from solders.pubkey import Pubkey

from driftshare.sim.drift.books import Books
from driftshare.sim.drift.errors import drift_error

__all__ = ["drift_user", "margin_excess", "require_margin"]

_NO_CONNECTION = SimpleNamespace(provider=SimpleNamespace(connection=None))
"""What DriftUser's constructor reads from ``drift_client.program``; it never sends a request
with a cached subscription."""


class _ClientView:
    """What a ``DriftUser`` reads from a ``DriftClient``, answered from an instruction's books."""

    program = _NO_CONNECTION

    def __init__(self, books: Books) -> None:
        self._books = books

    def get_perp_market_account(self, market_index: int) -> Any:
        return self._books.perp_market(market_index)

    def get_spot_market_account(self, market_index: int) -> Any:
        return self._books.spot_market(market_index)

    def get_oracle_price_data_for_perp_market(self, market_index: int) -> OraclePriceData:
        return self._books.perp_oracle(market_index)

    def get_oracle_price_data_for_spot_market(self, market_index: int) -> OraclePriceData:
        return self._books.spot_oracle(market_index)

    def get_state_account(self) -> Any:
        return self._books.state()


def drift_user(books: Books, pubkey: Pubkey, user: Any) -> DriftUser:
    """A driftpy ``DriftUser`` over ``user`` (the instruction's copy) and ``books``' markets."""
    reader = DriftUser(_ClientView(books), pubkey, AccountSubscriptionConfig("cached"))
    reader.account_subscriber.update_data(DataAndSlot(books.slot, user))
    return reader


def margin_excess(books: Books, pubkey: Pubkey, user: Any, *, initial: bool) -> int:
    """Total collateral minus margin requirement (open orders included), in quote precision.

    Initial margin is valued strictly, as ``DriftUser.get_free_collateral`` and the program's
    order placement do; maintenance is not. Unlike ``get_free_collateral`` it may be negative.
    """
    reader = drift_user(books, pubkey, user)
    if initial:
        collateral: int = reader.get_total_collateral(MarginCategory.INITIAL, True)
        requirement: int = reader.get_margin_requirement(MarginCategory.INITIAL, strict=True)
    else:
        collateral = reader.get_total_collateral(MarginCategory.MAINTENANCE)
        requirement = reader.get_margin_requirement(MarginCategory.MAINTENANCE)
    return int(collateral - requirement)  # driftpy's math mixes in float divisions


def require_margin(books: Books, pubkey: Pubkey, user: Any, *, initial: bool) -> None:
    """Drift's ``InsufficientCollateral`` unless ``user`` meets its margin requirement."""
    excess = margin_excess(books, pubkey, user, initial=initial)
    if excess < 0:
        kind = "initial" if initial else "maintenance"
        raise drift_error(
            "InsufficientCollateral", f"{kind} margin short by {-excess} (quote precision)"
        )
