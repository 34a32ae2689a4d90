"""Drift's program on the simulated chain: instructions decoded with driftpy's IDL coder and run
over one transaction's accounts, and resting orders filled as the oracle moves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from anchorpy.program.common import NamedInstruction
from anchorpy_core.idl import IdlInstruction
from driftpy.accounts.oracle import DRIFT_CODER, DRIFT_IDL
from solders.instruction import Instruction
from solders.pubkey import Pubkey

from driftshare.sim._codec import account_name
from driftshare.sim.drift import orders, pnl, users
from driftshare.sim.drift.books import Books, decoded_view
from driftshare.sim.drift.call import Call
from driftshare.sim.drift.errors import anchor_error, drift_error, unsupported
from driftshare.sim.drift.fills import fill_order, open_perp_orders
from driftshare.sim.drift.pricing import FillModel
from driftshare.sim.programs import InstructionFailed, TxAccounts
from driftshare.sim.store import AccountStore

__all__ = ["DriftProgram"]

log = logging.getLogger(__name__)

_DISCRIMINATOR = 8
_IDL_INSTRUCTIONS: dict[str, IdlInstruction] = dict(
    zip(DRIFT_CODER.instruction.sighashes, DRIFT_IDL.instructions, strict=True)
)
"""Each IDL instruction by the coder's own snake_case name (it names them in the IDL's order)."""
_PLACE_AND_TAKE_PARTIAL = 1
_PLACE_AND_TAKE_FULL = 2

Handler = Callable[[Call], None]


class DriftProgram:
    """Drift's program: a ``Program`` handler for the transaction runner, plus the keeper that
    fills resting orders each slot (:meth:`fill_resting`).

    ``fill_spread_bps`` is the half-spread the market quotes takers around the oracle.
    """

    def __init__(self, *, fill_spread_bps: float = 10.0) -> None:
        self.model = FillModel(fill_spread_bps)
        self._watched: dict[Pubkey, None] = {}
        self._handlers: dict[str, Handler] = {
            "initialize_user_stats": users.initialize_user_stats,
            "initialize_user": users.initialize_user,
            "deposit": users.deposit,
            "withdraw": users.withdraw,
            "place_perp_order": self._place_perp_order,
            "place_orders": self._place_orders,
            "place_and_take_perp_order": self._place_and_take,
            "cancel_order": self._cancel_order,
            "cancel_order_by_user_id": self._cancel_order_by_user_id,
            "cancel_orders": self._cancel_orders,
            "modify_order": self._modify_order,
            "modify_order_by_user_id": self._modify_order_by_user_id,
            "settle_pnl": pnl.settle_pnl,
        }

    def __call__(self, tx: TxAccounts, ix: Instruction) -> None:
        """Run one Drift instruction; :class:`InstructionFailed` fails the transaction."""
        named = self._parse(bytes(ix.data))
        handler = self._handlers.get(named.name)
        if handler is None:
            raise unsupported(named.name)
        idl = _IDL_INSTRUCTIONS[named.name]
        names = [account.name for account in idl.accounts]
        metas = list(ix.accounts)
        if len(metas) < len(names):
            raise anchor_error("AccountNotEnoughKeys", f"{named.name} needs {len(names)}")
        books = Books(tx, slot=tx.slot, now=tx.unix_timestamp, log=tx.log)
        call = Call(
            named.name,
            named.data,
            dict(zip(names, metas, strict=False)),
            metas[len(names) :],
            tx,
            books,
        )
        tx.log(f"Instruction: {idl.name[0].upper()}{idl.name[1:]}")
        handler(call)
        books.commit()

    @staticmethod
    def _parse(data: bytes) -> NamedInstruction:
        if len(data) < _DISCRIMINATOR:
            raise anchor_error("InstructionMissing")
        if data[:_DISCRIMINATOR] not in DRIFT_CODER.instruction.sighash_to_name:
            raise anchor_error("InstructionFallbackNotFound")
        try:
            named: NamedInstruction = DRIFT_CODER.instruction.parse(data)
        except Exception as exc:  # construct raises many kinds for bytes that do not decode
            raise anchor_error("InstructionDidNotDeserialize", str(exc)) from None
        return named

    # orders

    def _user(self, call: Call) -> tuple[Pubkey, Any]:
        """The instruction's User, which its ``authority`` must sign for (owner or delegate)."""
        authority = call.signer("authority")
        user_key = call.key("user")
        user = call.books.load(user_key, "User")
        if authority not in (user.authority, user.delegate):
            raise anchor_error("ConstraintRaw", "authority cannot sign for user")
        return user_key, user

    def _place_perp_order(self, call: Call) -> None:
        user_key, user = self._user(call)
        params = call.args.params
        if params.bit_flags & 1:
            raise drift_error("InvalidOrderIOC", "IOC orders must be place_and_take")
        orders.place_perp_order(call.books, user_key, user, params, self.model)
        self._watched[user_key] = None

    def _place_orders(self, call: Call) -> None:
        user_key, user = self._user(call)
        params_list = list(call.args.params)
        if len(params_list) > 32:
            raise drift_error("DefaultError", "max 32 order params")
        for i, params in enumerate(params_list):
            if params.bit_flags & 1:
                raise drift_error("InvalidOrderIOC", "IOC orders must be place_and_take")
            if type(params.market_type).__name__ != "Perp":
                raise unsupported("spot orders")
            orders.place_perp_order(
                call.books,
                user_key,
                user,
                params,
                self.model,
                check_margin=i == len(params_list) - 1,
                expire_first=i == 0,
            )
        self._watched[user_key] = None

    def _place_and_take(self, call: Call) -> None:
        user_key, user = self._user(call)
        books = call.books
        stats = books.load(call.key("userStats"), "UserStats")
        if stats.authority != user.authority:
            raise anchor_error("ConstraintRaw", "userStats is not the user's")
        params = call.args.params
        if type(params.post_only).__name__ != "None":
            raise drift_error("InvalidOrderPostOnly", "post_only cannot be used in place_and_take")
        success = (call.args.success_condition or 0) & 0xFF
        order = orders.place_perp_order(books, user_key, user, params, self.model)
        filled = 0
        if order is not None:
            market = books.perp_market(order.market_index)
            oracle = books.perp_oracle(order.market_index).price
            tick = market.amm.order_tick_size
            price = self.model.fill_price(order, oracle, tick, arriving=True, rest=False)
            if price is not None:
                filled = fill_order(books, user_key, user, order, price)
            if orders.is_open(order) and order.immediate_or_cancel:
                orders.cancel_order(user, order)
            if orders.is_open(order):
                self._watched[user_key] = None
        unfilled = order is not None and order.base_asset_amount_filled < order.base_asset_amount
        if success == _PLACE_AND_TAKE_PARTIAL and filled == 0:
            raise drift_error("PlaceAndTakeOrderSuccessConditionFailed", "no partial fill")
        if success == _PLACE_AND_TAKE_FULL and (filled == 0 or unfilled):
            raise drift_error("PlaceAndTakeOrderSuccessConditionFailed", "no full fill")

    @staticmethod
    def _by_order_id(user: Any, order_id: int | None) -> tuple[Any, str]:
        """The open order ``order_id`` (None: the last placed) or None, and how to name it."""
        if order_id is None:
            order_id = user.next_order_id - 1 if user.next_order_id > 1 else 2**32 - 1
        found = next((o for o in user.orders if o.order_id == order_id and orders.is_open(o)), None)
        return found, f"order id {order_id}"

    def _cancel_order(self, call: Call) -> None:
        user_key, user = self._user(call)
        self._cancel(call, user_key, user, *self._by_order_id(user, call.args.order_id))

    def _cancel_order_by_user_id(self, call: Call) -> None:
        user_key, user = self._user(call)
        user_order_id = call.args.user_order_id
        # The program takes the first order with this id whatever its status, so an old
        # filled or canceled order ahead of the open one fails with OrderNotOpen.
        order = next((o for o in user.orders if o.user_order_id == user_order_id), None)
        self._cancel(call, user_key, user, order, f"user order id {user_order_id}")

    def _cancel_orders(self, call: Call) -> None:
        user_key, user = self._user(call)
        market_type, market_index, direction = (
            call.args.market_type,
            call.args.market_index,
            call.args.direction,
        )
        for order in user.orders:
            if not orders.is_open(order):
                continue
            if (
                market_type is not None
                and market_index is not None
                and (
                    type(order.market_type) is not type(market_type)
                    or order.market_index != market_index
                )
            ):
                continue
            if direction is not None and type(order.direction) is not type(direction):
                continue
            orders.cancel_order(user, order)
        self._touched(call, user_key, user)

    def _modify_order(self, call: Call) -> None:
        user_key, user = self._user(call)
        self._modify(call, user_key, user, *self._by_order_id(user, call.args.order_id))

    def _modify_order_by_user_id(self, call: Call) -> None:
        user_key, user = self._user(call)
        user_order_id = call.args.user_order_id
        found = next(
            (o for o in user.orders if o.user_order_id == user_order_id and orders.is_open(o)),
            None,
        )
        self._modify(call, user_key, user, found, f"user order id {user_order_id}")

    def _modify(self, call: Call, user_key: Pubkey, user: Any, found: Any, what: str) -> None:
        modify = call.args.modify_order_params
        if found is None:
            call.books.log(f"{what} not found")
            if (modify.policy or 0) & orders.MUST_MODIFY:
                raise drift_error("OrderDoesNotExist", what)
            return
        orders.cancel_order(user, found)
        call.books.mark(user_key)
        params = orders.modified_params(found, modify)
        if params is not None:
            orders.place_perp_order(
                call.books, user_key, user, params, self.model, expire_first=False
            )
        self._watched[user_key] = None

    def _cancel(self, call: Call, user_key: Pubkey, user: Any, order: Any, what: str) -> None:
        """Cancel ``order``; a missing one is only logged, as the program does."""
        if order is None:
            call.books.log(f"could not find {what}")
            return
        orders.cancel_order(user, order)
        self._touched(call, user_key, user)

    @staticmethod
    def _touched(call: Call, user_key: Pubkey, user: Any) -> None:
        """Record that a cancel changed ``user`` (margin is checked only on placing)."""
        user.last_active_slot = call.books.slot
        call.books.mark(user_key)

    # the keeper

    def fill_resting(self, store: AccountStore, now: int) -> None:
        """Fill or expire the open perp orders of every user that placed one, at ``now``.

        Run once a slot after the oracles moved; writes straight into ``store``, as a landed
        keeper transaction would.
        """
        # Read-only first: most users' orders do not fill in most slots, and copying a User
        # out to change it costs more than looking.
        look = Books(store, slot=store.slot, now=now)
        for user_key in list(self._watched):
            account = store.get(user_key)
            data = b"" if account is None else account.data
            pending = open_perp_orders(decoded_view(data)) if account_name(data) == "User" else []
            if not pending:
                del self._watched[user_key]
                continue
            try:
                due = (self._fill_price(look, o) is not None or _expired(o, now) for o in pending)
                if not any(due):
                    continue
                books = Books(store, slot=store.slot, now=now)
                self._fill_user(books, user_key, now)
            except (InstructionFailed, LookupError) as exc:
                log.debug("cannot fill the orders of %s: %s", user_key, exc)
                continue
            books.commit()

    def _fill_user(self, books: Books, user_key: Pubkey, now: int) -> None:
        user = books.load(user_key, "User")
        if any(_expired(o, now) for o in open_perp_orders(user)):
            orders.expire_orders(user, now)
            books.mark(user_key)
        for order in open_perp_orders(user):
            price = self._fill_price(books, order)
            if price is not None:
                fill_order(books, user_key, user, order, price)

    def _fill_price(self, books: Books, order: Any) -> int | None:
        """The price a keeper fills ``order`` at this slot, or None."""
        tick = books.perp_market(order.market_index).amm.order_tick_size
        oracle = books.perp_oracle(order.market_index).price
        # An order placed since the last slot reaches the market now, as a keeper's fill
        # would take it; one that already saw a slot rests.
        arriving = order.slot >= books.slot - 1
        return self.model.fill_price(order, oracle, tick, arriving=arriving, rest=True)


def _expired(order: Any, now: int) -> bool:
    max_ts: int = order.max_ts
    return max_ts != 0 and now > max_ts
