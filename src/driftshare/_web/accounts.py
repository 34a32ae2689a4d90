"""The trading view: registered sub-accounts and the last writes, public keys only.

Read from the shared client's account registry (ledger reads, no RPC request) and its
transaction path's history; nothing here signs, sends or touches a key.
"""

from __future__ import annotations

from typing import Any

from driftshare.config import Network
from driftshare.manager import DriftClientManager

__all__ = ["DASHBOARD_ORDERS", "UNREADABLE_FIELDS", "account_rows", "order_rows", "trading_view"]

DASHBOARD_ORDERS = 20
"""The last writes the dashboard shows (``/api/orders`` gives every kept one)."""

UNREADABLE_FIELDS = (
    "collateral",
    "free_collateral",
    "margin_ratio",
    "leverage",
    "unrealized_pnl",
    "slot",
    "data_age_s",
)
"""The fields of an account row that are null while it cannot be read."""


def account_rows(network: Network, rpc_url: str | None) -> list[dict[str, Any]]:
    """Each registered sub-account: collateral (driftpy's total collateral, the equity),
    free collateral, leverage, margin ratio, PnL, positions and open orders, with ``slot``,
    ``data_age_s`` and ``stale``; one that cannot be read now has null values and is stale."""
    shared = DriftClientManager.shared_state(network, rpc_url=rpc_url)
    if shared is None:
        return []
    rows = []
    for account in shared.accounts.accounts():
        info = account.account_info()
        identity = {
            "authority": str(account.authority),
            "sub_account_id": account.sub_account_id,
            "user_account": str(account.user_pubkey),
        }
        values = (
            {**dict.fromkeys(UNREADABLE_FIELDS), "stale": True} if info is None else info.to_dict()
        )
        rows.append(
            {
                **values,
                **identity,
                "positions": [p.to_dict() for p in account.positions() or []],
                "open_orders": [o.to_dict() for o in account.open_orders() or []],
            }
        )
    return rows


def order_rows(
    network: Network, rpc_url: str | None, limit: int | None = None
) -> list[dict[str, Any]]:
    """The last writes of the shared client's transaction path, newest first."""
    shared = DriftClientManager.shared_state(network, rpc_url=rpc_url)
    if shared is None:
        return []
    return [record.to_dict() for record in shared.tx.history.records()[:limit]]


def trading_view(network: Network, rpc_url: str | None) -> dict[str, Any]:
    """The dashboard snapshot's ``accounts`` and ``orders``."""
    return {
        "accounts": account_rows(network, rpc_url),
        "orders": order_rows(network, rpc_url, DASHBOARD_ORDERS),
    }
