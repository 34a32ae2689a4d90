"""AdapterWrites: the DriftAdapter's trading methods, each returning a TxResult as a dict.

On the shared client they go through its one transaction path; with ``use_singleton=False``
through a path of the adapter's own over its private connection (the fallback, and the
benchmarks' baseline), with the same guarantees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from driftshare._tx.driftpy_sender import PathTxSender, install_path
from driftshare._tx.path import TransactionPath
from driftshare._tx.rpc import ConnectionRpc
from driftshare._tx.sender import failed_before_sending
from driftshare._tx.trading import Trader
from driftshare.config import Network, Settings
from driftshare.manager import DriftClientManager
from driftshare.models import TxResult

if TYPE_CHECKING:
    from driftshare._accounts import SubAccount

__all__ = ["AdapterWrites"]

_NOT_CONNECTED = "NotConnected: connect(wallet, sub_account) first"


class AdapterWrites:
    """The writes of :class:`~driftshare.adapter.DriftAdapter`, on its registered
    sub-account (``adapter.account``); the sub-account is explicit in every instruction."""

    network: Network
    use_singleton: bool
    rpc_url: str | None
    _private: Any
    _trader: Trader | None = None
    _private_tx: TransactionPath | None = None

    if TYPE_CHECKING:

        @property
        def account(self) -> SubAccount | None: ...

    async def place_perp_order(
        self,
        symbol: str | int,
        direction: str,
        size: float,
        order_type: str = "MARKET",
        *,
        price: float | None = None,
        reduce_only: bool = False,
        post_only: bool = False,
        user_order_id: int | None = None,
        expires_in_s: float | None = None,
    ) -> dict[str, Any]:
        """Place a perp order: ``direction`` long/buy or short/sell, ``size`` in base units,
        ``order_type`` MARKET or LIMIT (with ``price``). A ``user_order_id`` (1 to 255) is
        chosen when not given. ``expires_in_s`` sets the order's ``max_ts`` that long after
        signing (no copy is placed later, and a resting order is cancelled then); without
        it a MARKET order's is ``DRIFT_TX_TIMEOUT_S`` and a LIMIT order rests until
        cancelled."""
        trader = self._trading()
        if trader is None:
            return _refused(user_order_id)
        result = await trader.place_perp_order(
            symbol,
            direction,
            size,
            order_type,
            price=price,
            reduce_only=reduce_only,
            post_only=post_only,
            user_order_id=user_order_id,
            expires_in_s=expires_in_s,
        )
        return result.to_dict()

    async def cancel_order(
        self, order_id: int | None = None, *, user_order_id: int | None = None
    ) -> dict[str, Any]:
        """Cancel one order by ``order_id`` or ``user_order_id`` (neither: the newest)."""
        trader = self._trading()
        if trader is None:
            return _refused()
        return (await trader.cancel_order(order_id, user_order_id=user_order_id)).to_dict()

    async def cancel_all_orders(self, symbol: str | int | None = None) -> dict[str, Any]:
        """Cancel every open order, or only ``symbol``'s."""
        trader = self._trading()
        return _refused() if trader is None else (await trader.cancel_all_orders(symbol)).to_dict()

    async def close_position(self, symbol: str | int) -> dict[str, Any]:
        """Close the whole position in ``symbol`` with a reduce-only market order."""
        trader = self._trading()
        return _refused() if trader is None else (await trader.close_position(symbol)).to_dict()

    async def deposit(self, amount: float) -> dict[str, Any]:
        """Deposit ``amount`` USDC from the signer's token account."""
        trader = self._trading()
        return _refused() if trader is None else (await trader.deposit(amount)).to_dict()

    async def withdraw(self, amount: float) -> dict[str, Any]:
        """Withdraw ``amount`` USDC (never borrowing) to the signer's token account."""
        trader = self._trading()
        return _refused() if trader is None else (await trader.withdraw(amount)).to_dict()

    async def settle_pnl(self, symbol: str | int) -> dict[str, Any]:
        """Settle the sub-account's PnL in ``symbol``."""
        trader = self._trading()
        return _refused() if trader is None else (await trader.settle_pnl(symbol)).to_dict()

    # -- the path -----------------------------------------------------------------------------

    def _trading(self) -> Trader | None:
        """The trader of the registered sub-account, on the right path; None without one."""
        account = self.account
        if account is None:
            return None
        trader = self._trader
        if trader is not None and trader.account is account:
            return trader
        path = self._path()
        if path is None:
            return None
        sender = account.client.tx_sender
        if not (isinstance(sender, PathTxSender) and sender.path is path):
            # The engine's own driftpy calls on this signer's client take the same path.
            install_path(account.client, path)
        settings = DriftClientManager.settings()
        self._trader = trader = Trader(
            account,
            path,
            self.network,
            read_timeout_s=settings.tx_read_timeout_s,
            max_ts_s=settings.tx_timeout_s,
        )
        return trader

    def _path(self) -> TransactionPath | None:
        if self.use_singleton:
            shared = DriftClientManager.shared_state(self.network, rpc_url=self.rpc_url)
            return None if shared is None else shared.tx
        private = self._private
        if private is None:
            return None
        if self._private_tx is None:
            self._private_tx = _private_path(private.connection, DriftClientManager.settings())
        return self._private_tx

    async def _close_trading(self) -> None:
        """Forget the trader; stop the private path's background work (disconnect)."""
        self._trader = None
        path, self._private_tx = self._private_tx, None
        if path is not None:
            await path.aclose()


def _private_path(connection: Any, settings: Settings) -> TransactionPath:
    return TransactionPath(ConnectionRpc(lambda: connection), settings)


def _refused(user_order_id: int | None = None) -> dict[str, Any]:
    result: TxResult = failed_before_sending(_NOT_CONNECTED, user_order_id)
    return result.to_dict()
