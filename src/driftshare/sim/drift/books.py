"""Drift's accounts as one instruction reads and writes them: decoded once, written back on commit.

Reads and writes go through an :class:`AccountIO`, a transaction's ``TxAccounts`` while an
instruction runs or the store itself when a world step fills resting orders, so every written
account is served, notified and rolled back like any other.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from driftpy.accounts.oracle import decode_oracle
from driftpy.addresses import (
    get_perp_market_public_key,
    get_spot_market_public_key,
    get_state_public_key,
)
from driftpy.types import OraclePriceData
from solders.pubkey import Pubkey

from driftshare.sim import _codec
from driftshare.sim._codec import DRIFT_PROGRAM_ID
from driftshare.sim.drift.errors import anchor_error, drift_error
from driftshare.sim.programs import InstructionFailed
from driftshare.sim.store import Account

__all__ = ["AccountIO", "Books", "decoded_view"]

_DECODED_CACHE = 256
"""Decoded accounts kept by their bytes: decoding a User takes tens of milliseconds."""


class AccountIO(Protocol):
    """Where accounts are read and written: a transaction's view, or the store."""

    def get(self, pubkey: Pubkey) -> Account | None: ...

    def put(self, pubkey: Pubkey, account: Account) -> object: ...


_decoded: OrderedDict[bytes, Any] = OrderedDict()


def decoded_view(data: bytes) -> Any:
    """The Drift account in ``data``, shared between readers: never mutate it."""
    found = _decoded.get(data)
    if found is None:
        found = _codec.decode(data)
        _remember(data, found)
    else:
        _decoded.move_to_end(data)
    return found


def _remember(data: bytes, obj: Any) -> None:
    _decoded[data] = obj
    if len(_decoded) > _DECODED_CACHE:
        _decoded.popitem(last=False)


def _decode_copy(data: bytes) -> Any:
    """A private copy of the Drift account in ``data``, free to mutate."""
    return copy.deepcopy(decoded_view(data))


class Books:
    """The Drift accounts of one instruction: decoded on first read, cached, written on commit.

    Every object handed out is the instruction's own copy; :meth:`mark` records that it changed
    and :meth:`commit` writes the marked ones, so an instruction that fails writes nothing.
    """

    def __init__(
        self, io: AccountIO, *, slot: int, now: int, log: Callable[[str], None] | None = None
    ) -> None:
        self.io = io
        self.slot = slot
        self.now = now
        self._log = log
        self._objects: dict[Pubkey, tuple[str, Any]] = {}
        self._dirty: dict[Pubkey, None] = {}
        self._created: dict[Pubkey, int] = {}

    def log(self, message: str) -> None:
        """Add a line to the transaction's log messages, when there is a transaction."""
        if self._log is not None:
            self._log(message)

    def load(self, pubkey: Pubkey, name: str) -> Any:
        """The ``name`` account at ``pubkey``; Anchor's error if it is missing or another kind."""
        found = self.find(pubkey, name)
        if found is None:
            raise anchor_error("AccountNotInitialized", f"{name} {pubkey}")
        return found

    def find(self, pubkey: Pubkey, name: str) -> Any | None:
        """The ``name`` account at ``pubkey``, or None if there is none."""
        cached = self._objects.get(pubkey)
        if cached is not None:
            if cached[0] != name:
                raise anchor_error("AccountDiscriminatorMismatch", f"{pubkey} is a {cached[0]}")
            return cached[1]
        account = self.io.get(pubkey)
        if account is None or account.lamports == 0:
            return None
        if account.owner != DRIFT_PROGRAM_ID:
            raise anchor_error("AccountOwnedByWrongProgram", f"{name} {pubkey}")
        stored_name = _codec.account_name(account.data)
        if stored_name != name:
            raise anchor_error("AccountDiscriminatorMismatch", f"{pubkey} is not a {name}")
        obj = _decode_copy(account.data)
        self._objects[pubkey] = (name, obj)
        return obj

    def exists(self, pubkey: Pubkey) -> bool:
        """Whether any account lives at ``pubkey`` (or this instruction created one there)."""
        if pubkey in self._objects:
            return True
        account = self.io.get(pubkey)
        return account is not None and account.lamports > 0

    def create(self, pubkey: Pubkey, name: str, obj: Any, lamports: int) -> None:
        """A new ``name`` account at ``pubkey`` holding ``lamports``, written on commit."""
        self._objects[pubkey] = (name, obj)
        self._created[pubkey] = lamports
        self.mark(pubkey)

    def mark(self, pubkey: Pubkey) -> None:
        """Record that the object loaded from ``pubkey`` changed."""
        self._dirty[pubkey] = None

    def commit(self) -> None:
        """Write every changed account, keeping its lamports; the books are spent after."""
        for pubkey in self._dirty:
            name, obj = self._objects[pubkey]
            data = _codec.encode(name, obj)
            lamports = self._created.get(pubkey)
            if lamports is None:
                current = self.io.get(pubkey)
                lamports = current.lamports if current is not None else 0
            self.io.put(pubkey, Account(data, DRIFT_PROGRAM_ID, lamports))
            # The next instruction on this account reads these bytes: spare it the decoding.
            _remember(data, obj)
        # The objects now belong to the cache, shared: these books are done.
        self._objects.clear()
        self._dirty.clear()
        self._created.clear()

    # markets, state and oracles, found by the addresses driftpy derives

    def state(self) -> Any:
        return self.load(get_state_public_key(DRIFT_PROGRAM_ID), "State")

    def perp_market(self, index: int) -> Any:
        """Perp market ``index``; Drift's ``PerpMarketNotFound`` if it is not passed."""
        pubkey = get_perp_market_public_key(DRIFT_PROGRAM_ID, index)
        return self._market(pubkey, "PerpMarket", "PerpMarketNotFound", f"perp market {index}")

    def spot_market(self, index: int) -> Any:
        """Spot market ``index``; Drift's ``SpotMarketNotFound`` if it is not passed."""
        pubkey = get_spot_market_public_key(DRIFT_PROGRAM_ID, index)
        return self._market(pubkey, "SpotMarket", "SpotMarketNotFound", f"spot market {index}")

    def _market(self, pubkey: Pubkey, name: str, missing: str, what: str) -> Any:
        # The runner refuses accounts the instruction was not passed, as the program's account
        # maps hold only the remaining accounts: to the client, either is a missing market.
        try:
            market = self.find(pubkey, name)
        except InstructionFailed as exc:
            if exc.error != "MissingAccount":
                raise
            market = None
        if market is None:
            raise drift_error(missing, what)
        return market

    def mark_perp_market(self, index: int) -> None:
        self.mark(get_perp_market_public_key(DRIFT_PROGRAM_ID, index))

    def mark_spot_market(self, index: int) -> None:
        self.mark(get_spot_market_public_key(DRIFT_PROGRAM_ID, index))

    def perp_oracle(self, index: int) -> OraclePriceData:
        """What driftpy decodes from perp market ``index``'s oracle account."""
        amm = self.perp_market(index).amm
        return self._oracle(amm.oracle, amm.oracle_source)

    def spot_oracle(self, index: int) -> OraclePriceData:
        """What driftpy decodes from spot market ``index``'s oracle account."""
        market = self.spot_market(index)
        return self._oracle(market.oracle, market.oracle_source)

    def _oracle(self, pubkey: Pubkey, source: Any) -> OraclePriceData:
        try:
            account = self.io.get(pubkey)
        except InstructionFailed as exc:
            if exc.error != "MissingAccount":
                raise
            account = None
        if account is None:
            raise drift_error("OracleNotFound", f"oracle {pubkey}")
        try:
            price_data: OraclePriceData = decode_oracle(account.data, source)
        except Exception as exc:  # an oracle driftpy cannot decode is invalid to Drift too
            raise drift_error("InvalidOracle", f"oracle {pubkey}: {exc}") from None
        if price_data.price <= 0:
            raise drift_error("InvalidOracle", f"oracle {pubkey} price {price_data.price}")
        return price_data
