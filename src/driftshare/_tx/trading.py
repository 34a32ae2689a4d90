"""Trader: the adapter's writes for one registered sub-account, through the transaction path.

Every instruction names its sub-account explicitly (built under
:meth:`~driftshare._accounts.SubAccount.build_ixs`), every order carries a fresh
``user_order_id``, a market order a ``max_ts``, and a confirmed write waits (bounded) until
the sub-account's reads reflect it.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec

from anchorpy import Context
from driftpy.constants.numeric_constants import BASE_PRECISION, PRICE_PRECISION
from driftpy.drift_client import DriftClient
from driftpy.types import (
    MarketType,
    OrderParams,
    OrderStatus,
    OrderType,
    PositionDirection,
    PostOnlyParams,
)
from solders.instruction import Instruction
from spl.token.constants import TOKEN_PROGRAM_ID
from spl.token.instructions import get_associated_token_address

from driftshare._accounts import SubAccount
from driftshare._data.markets import MarketResolver
from driftshare._tx.path import TransactionPath
from driftshare._tx.sender import failed_before_sending
from driftshare.config import Network
from driftshare.models import TxResult

__all__ = ["Trader"]

log = logging.getLogger(__name__)

_QUOTE_SPOT_MARKET = 0
"""USDC, the collateral deposit and withdraw move."""
_DIRECTIONS = {"long": "Long", "buy": "Long", "short": "Short", "sell": "Short"}
_ORDER_TYPES = {"MARKET": OrderType.Market, "LIMIT": OrderType.Limit}

Builder = Callable[[DriftClient], list[Instruction]]

_P = ParamSpec("_P")
_Write = Callable[Concatenate["Trader", _P], Coroutine[Any, Any, TxResult]]


def _recorded(kind: str, *, market: bool = False) -> Callable[[_Write[_P]], _Write[_P]]:
    """Record every result of the write in the path's history, refusals before sending
    included; ``market``: the write's first argument (``symbol``) names its market."""

    def wrap(write: _Write[_P]) -> _Write[_P]:
        @functools.wraps(write)
        async def recorded(self: Trader, /, *args: _P.args, **kwargs: _P.kwargs) -> TxResult:
            result = await write(self, *args, **kwargs)
            symbol = (args[0] if args else kwargs.get("symbol")) if market else None
            self.path.history.add(
                kind,
                result,
                authority=str(self.account.authority),
                sub_account_id=self.account.sub_account_id,
                market=None if symbol is None else self._market_name(symbol),
            )
            return result

        return recorded

    return wrap


class Trader:
    """Places, cancels and settles for one sub-account; each write returns a
    :class:`~driftshare.models.TxResult` and never raises.

    ``max_ts_s``: a market order placed later than this many seconds after it was signed is
    skipped by the program (``max_ts``, which Drift also checks on a resting order: a limit
    order gets one only when given ``expires_in_s``). ``read_timeout_s`` bounds the wait for
    the write's slot.
    """

    def __init__(
        self,
        account: SubAccount,
        path: TransactionPath,
        network: Network,
        *,
        read_timeout_s: float,
        max_ts_s: float,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.account = account
        self.path = path
        self.read_timeout_s = read_timeout_s
        self.max_ts_s = max_ts_s
        self._wall_clock = wall_clock
        self._markets = MarketResolver(network)
        self._order_ids = path.order_ids(str(account.user_pubkey))

    # -- orders -----------------------------------------------------------------------------

    @_recorded("place_perp_order", market=True)
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
    ) -> TxResult:
        """Place a perp order of ``size`` base units, ``direction`` long/buy or short/sell.

        ``expires_in_s``: the order's ``max_ts`` is that long after signing; the program skips
        a copy landing later and cancels the order once it has passed. Without it a market
        order gets ``max_ts_s`` and a limit order none: it rests until filled or cancelled.
        """
        index = self._market(symbol)
        side = _DIRECTIONS.get(str(direction).lower())
        kind = _ORDER_TYPES.get(str(order_type).upper())
        problem = None
        if index is None:
            problem = f"UnknownMarket: {symbol!r}"
        elif side is None:
            problem = f"InvalidDirection: {direction!r} (long, short, buy or sell)"
        elif kind is None:
            problem = f"InvalidOrderType: {order_type!r} (MARKET or LIMIT)"
        elif kind is OrderType.Limit and price is None:
            problem = "InvalidOrderPrice: a LIMIT order needs a price"
        elif price is not None and not _positive(price):
            problem = f"InvalidOrderPrice: {price!r} (a positive price)"
        elif not _positive(size):
            problem = f"InvalidOrderSize: {size!r} (a positive base amount)"
        elif expires_in_s is not None and not _positive(expires_in_s):
            problem = f"InvalidExpiry: {expires_in_s!r} (a positive number of seconds)"
        if problem is not None or index is None or side is None or kind is None:
            return failed_before_sending(problem or "InvalidOrder", user_order_id)
        return await self._place(
            index,
            getattr(PositionDirection, side)(),
            round(size * BASE_PRECISION),
            kind(),
            price=price,
            reduce_only=reduce_only,
            post_only=post_only,
            user_order_id=user_order_id,
            expires_in_s=expires_in_s,
        )

    @_recorded("close_position", market=True)
    async def close_position(self, symbol: str | int) -> TxResult:
        """A reduce-only market order for the whole open position in ``symbol``."""
        index = self._market(symbol)
        if index is None:
            return failed_before_sending(f"UnknownMarket: {symbol!r}")
        position = self.account.user.get_perp_position(index)
        base = 0 if position is None else int(position.base_asset_amount)
        if base == 0:
            return failed_before_sending(f"NoPosition: no open position in {symbol!r}")
        direction = PositionDirection.Short() if base > 0 else PositionDirection.Long()
        return await self._place(index, direction, abs(base), OrderType.Market(), reduce_only=True)

    async def _place(
        self,
        index: int,
        direction: PositionDirection,
        base: int,
        order_type: OrderType,
        *,
        price: float | None = None,
        reduce_only: bool = False,
        post_only: bool = False,
        user_order_id: int | None = None,
        expires_in_s: float | None = None,
    ) -> TxResult:
        market = self.account.client.get_perp_market_account(index)
        if market is None:
            return failed_before_sending(f"MarketUnavailable: perp market {index}", user_order_id)
        step = max(1, int(market.amm.order_step_size))
        base -= base % step
        if base < max(step, int(market.amm.min_order_size)):
            return failed_before_sending(
                "InvalidOrderSize: below the market's minimum order size", user_order_id
            )
        price_int = 0
        if price is not None:
            tick = max(1, int(market.amm.order_tick_size))
            price_int = round(price * PRICE_PRECISION / tick) * tick
        if user_order_id is None:
            user_order_id = self._order_ids.take(self._open_user_order_ids())
            if user_order_id is None:
                return failed_before_sending("NoFreeUserOrderId: 255 orders open or in flight")
        elif not 0 < user_order_id < 256:
            return failed_before_sending(f"InvalidUserOrderId: {user_order_id} (1 to 255)")
        else:
            self._order_ids.hold(user_order_id)
        if expires_in_s is None and order_type == OrderType.Market():
            expires_in_s = self.max_ts_s
        params = OrderParams(
            order_type=order_type,
            base_asset_amount=base,
            market_index=index,
            direction=direction,
            market_type=MarketType.Perp(),
            user_order_id=user_order_id,
            price=price_int,
            reduce_only=reduce_only,
            post_only=PostOnlyParams.MustPostOnly() if post_only else PostOnlyParams.NONE(),
            # A copy landing after this is skipped by the program: no late order. None: the
            # program's own (none for a limit order, which then rests until cancelled).
            max_ts=None if expires_in_s is None else int(self._wall_clock() + expires_in_s),
        )
        sub = self.account.sub_account_id
        return await self._write(
            lambda c: [c.get_place_perp_order_ix(params, sub)], user_order_id=user_order_id
        )

    @_recorded("cancel_order")
    async def cancel_order(
        self, order_id: int | None = None, *, user_order_id: int | None = None
    ) -> TxResult:
        """Cancel one order by ``order_id`` or ``user_order_id``; with neither, the newest
        open order (the program's rule)."""
        sub = self.account.sub_account_id
        if user_order_id is not None:
            uid = user_order_id
            return await self._write(lambda c: [c.get_cancel_order_by_user_id_ix(uid, sub)])
        return await self._write(lambda c: [c.get_cancel_order_ix(order_id, sub)])

    @_recorded("cancel_all_orders", market=True)
    async def cancel_all_orders(self, symbol: str | int | None = None) -> TxResult:
        """Cancel every open order, or every one in ``symbol``'s perp market."""
        sub = self.account.sub_account_id
        if symbol is None:
            return await self._write(lambda c: [c.get_cancel_orders_ix(None, None, None, sub)])
        index = self._market(symbol)
        if index is None:
            return failed_before_sending(f"UnknownMarket: {symbol!r}")
        perp = MarketType.Perp()
        return await self._write(lambda c: [c.get_cancel_orders_ix(perp, index, None, sub)])

    # -- collateral and PnL -----------------------------------------------------------------

    @_recorded("deposit")
    async def deposit(self, amount: float) -> TxResult:
        """Deposit ``amount`` USDC from the signer's associated token account."""
        return await self._collateral("deposit", amount)

    @_recorded("withdraw")
    async def withdraw(self, amount: float) -> TxResult:
        """Withdraw ``amount`` USDC (never borrowing) to the signer's associated token
        account, created if missing."""
        return await self._collateral("withdraw", amount)

    @_recorded("settle_pnl", market=True)
    async def settle_pnl(self, symbol: str | int) -> TxResult:
        """Settle this sub-account's PnL in ``symbol``'s perp market."""
        index = self._market(symbol)
        if index is None:
            return failed_before_sending(f"UnknownMarket: {symbol!r}")
        user = self.account.user_pubkey
        sub = self.account.sub_account_id
        return await self._write(
            lambda c: [c.get_settle_pnl_ix(user, c.get_user_account(sub), index)]
        )

    async def _collateral(self, kind: str, amount: float) -> TxResult:
        spot = self.account.client.get_spot_market_account(_QUOTE_SPOT_MARKET)
        if spot is None:
            return failed_before_sending("MarketUnavailable: the USDC spot market")
        units = round(amount * 10 ** int(spot.decimals)) if _positive(amount) else 0
        if units <= 0:
            return failed_before_sending(f"InvalidAmount: {amount!r} (a positive USDC amount)")
        sub = self.account.sub_account_id
        return await self._write(lambda c: _collateral_ixs(c, kind, units, sub))

    # -- the path ---------------------------------------------------------------------------

    def _market(self, symbol: str | int) -> int | None:
        self._markets.update(self.account.client.get_perp_market_accounts())
        try:
            return self._markets.resolve(symbol)
        except TypeError:
            return None

    def _market_name(self, symbol: object) -> str:
        """``symbol``'s market as the chain names it (SOL-PERP for 0 or "sol"), else as given."""
        index = self._market(symbol) if isinstance(symbol, str | int) else None
        return str(symbol) if index is None else self._markets.symbol(index)

    def _open_user_order_ids(self) -> list[int]:
        try:
            orders = self.account.user.get_user_account().orders
        except Exception as exc:  # unreadable now: the in-flight ids still keep their hold
            log.debug("cannot read the open orders of %r: %r", self.account, exc)
            return []
        open_status = OrderStatus.Open()
        return [o.user_order_id for o in orders if o.status == open_status and o.user_order_id]

    async def _write(self, build: Builder, *, user_order_id: int | None = None) -> TxResult:
        account = self.account
        if account.closed:
            return failed_before_sending("NotConnected: the sub-account is closed", user_order_id)
        try:
            ixs = account.build_ixs(build)
        except Exception as exc:  # driftpy could not build it: nothing was signed
            return failed_before_sending(f"BuildError: {exc!r}", user_order_id)
        try:
            tables = await self.path.lookup_tables.get(account.client.market_lookup_tables or [])
        except Exception as exc:  # the RPC cannot serve the tables now: nothing was signed
            return failed_before_sending(f"NotSent: lookup tables ({exc!r})", user_order_id)
        result = await self.path.submit(
            ixs, account.keypair, lookup_tables=tables, user_order_id=user_order_id
        )
        if result.status == "confirmed" and result.slot is not None:
            # Read your writes: the next read of this sub-account reflects this write, or
            # is marked stale until it does.
            reflected = await account.wait_for_slot(result.slot, self.read_timeout_s)
            result = result.model_copy(update={"reflected": reflected})
        return result


def _positive(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def _collateral_ixs(client: DriftClient, kind: str, units: int, sub: int) -> list[Instruction]:
    # driftpy's deposit/withdraw builders are coroutines (its withdraw reads the token account
    # over RPC on every call), so they cannot run inside build_ixs' synchronous block: the
    # same instruction, with driftpy's accounts, built here.
    spot = client.get_spot_market_account(_QUOTE_SPOT_MARKET)
    authority = client.wallet.public_key
    token_account = get_associated_token_address(authority, spot.mint)
    accounts: dict[str, Any] = {
        "state": client.get_state_public_key(),
        "spot_market": spot.pubkey,
        "spot_market_vault": spot.vault,
        "user": client.get_user_account_public_key(sub),
        "user_stats": client.get_user_stats_public_key(),
        "user_token_account": token_account,
        "authority": authority,
        "token_program": TOKEN_PROGRAM_ID,
    }
    remaining = client.get_remaining_accounts(
        writable_spot_market_indexes=[_QUOTE_SPOT_MARKET],
        user_accounts=[client.get_user_account(sub)],
    )
    if kind == "deposit":
        ix = client.program.instruction["deposit"](
            _QUOTE_SPOT_MARKET,
            units,
            False,
            ctx=Context(accounts=accounts, remaining_accounts=remaining),
        )
        return [ix]
    accounts["drift_signer"] = client.get_signer_public_key()
    create = client.create_associated_token_account_idempotent_instruction(
        account=token_account, payer=authority, owner=authority, mint=spot.mint
    )
    ix = client.program.instruction["withdraw"](
        _QUOTE_SPOT_MARKET,
        units,
        True,  # reduce only: a withdrawal never borrows
        ctx=Context(accounts=accounts, remaining_accounts=remaining),
    )
    return [create, ix]
