"""SubAccount: one registered (authority, sub-account), shared by every engine using it."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Protocol, TypeVar, cast

from driftpy.drift_client import DriftClient
from driftpy.drift_user import DriftUser
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from driftshare._accounts import reads
from driftshare._accounts.host import AccountHost
from driftshare._accounts.signer import Signer
from driftshare._data.ledger import AccountRecord
from driftshare.models import AccountInfo, AccountRead, AccountStatus, OrderInfo, PositionInfo

__all__ = ["SubAccount"]


class AccountRegistry(Protocol):
    """What an account asks of the :class:`driftshare._accounts.registry.AccountRegistry`
    holding it (a protocol, so that the two modules do not import each other)."""

    host: AccountHost

    async def refresh(self, account: SubAccount) -> None:
        """Read ``account``'s User account now and apply it (never raises)."""


log = logging.getLogger(__name__)

_T = TypeVar("_T")
_V = TypeVar("_V")

_REFRESH_AFTER = 0.5
"""The fraction of :meth:`SubAccount.wait_for_slot`'s timeout after which the User account
is read directly (a notification may have been lost)."""


class SubAccount:
    """One (authority, sub-account) registered on a client, reference-counted by its engines.

    Its User account is subscribed once on the client's subscription and read from the
    ledger: reads send no RPC request and carry ``slot``, ``data_age_s`` and ``stale``.

    The seams for the transaction path:

    - ``client`` is the authority's DriftClient (shared with the authority's other
      sub-accounts), ``keypair`` the signer, ``sub_account_id`` and ``user_pubkey`` this
      account's;
    - :meth:`build_ixs` builds instructions for this sub-account, whatever other engines
      have active: ``account.build_ixs(lambda c: [c.get_place_perp_order_ix(params,
      account.sub_account_id)])``;
    - :meth:`wait_for_slot` waits until the User account is confirmed at a write's slot, so
      the next read reflects the write (past the timeout, reads are marked stale).
    """

    def __init__(
        self, registry: AccountRegistry, signer: Signer, sub_account_id: int, user: DriftUser
    ) -> None:
        self._registry = registry
        self.signer = signer
        self.sub_account_id = sub_account_id
        self.user = user
        self.user_pubkey: Pubkey = user.user_public_key
        self.refs = 1
        self.closed = False
        """True once unregistered (by the last engine, or the client closing)."""
        self.required_slot = 0
        """Reads are stale until the User account is confirmed at this slot."""
        self.awaiting_leader = False
        """A fleet follower's account the leader's data has not reached yet: reads stale."""
        self._waiters: list[tuple[int, asyncio.Future[bool]]] = []
        self._computed: dict[str, tuple[tuple[AccountRecord, ...], Any]] = {}
        self._failing: set[str] = set()
        """Reads that failed last time: logged once per failure, not once per read."""
        """Each read's last value, with the records it was computed from."""

    @property
    def client(self) -> DriftClient:
        return self.signer.client

    @property
    def keypair(self) -> Keypair:
        return self.signer.keypair

    @property
    def authority(self) -> Pubkey:
        return self.signer.authority

    def __repr__(self) -> str:
        return f"SubAccount({self.authority}, {self.sub_account_id}, refs={self.refs})"

    # -- the transaction path's seams -------------------------------------------------------

    def build_ixs(self, build: Callable[[DriftClient], _T]) -> _T:
        """``build(client)`` with this sub-account active, in one synchronous block
        (see :meth:`Signer.build_ixs`)."""
        return self.signer.build_ixs(self.sub_account_id, build)

    def confirmed_slot(self) -> int:
        """The newest slot at which the User account is known current; 0 if unknown."""
        entry = self._registry.host.ledger.get(str(self.user_pubkey))
        return 0 if entry is None else entry.confirmed_slot

    async def wait_for_slot(self, slot: int, timeout: float) -> bool:  # noqa: ASYNC109
        """True once the User account is confirmed at ``slot`` or later, within ``timeout``.

        Halfway through, the account is read directly once, in case its notification was
        lost. On False, reads stay marked stale until the account reaches ``slot``.
        """
        self.required_slot = max(self.required_slot, slot)
        if self.confirmed_slot() >= slot:
            return True
        if self.closed:
            return False
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        waiter = (slot, future)
        self._waiters.append(waiter)
        try:
            with suppress(TimeoutError):
                async with asyncio.timeout(timeout * _REFRESH_AFTER):
                    return await asyncio.shield(future)
            with suppress(TimeoutError):
                async with asyncio.timeout(timeout * (1 - _REFRESH_AFTER)):
                    await self._registry.refresh(self)
                    return await asyncio.shield(future)
            return False
        finally:
            with suppress(ValueError):
                self._waiters.remove(waiter)

    def confirmed(self, slot: int) -> None:
        """The User account is confirmed at ``slot``: wake the waits it satisfies."""
        for wanted, future in self._waiters:
            if slot >= wanted and not future.done():
                future.set_result(True)

    def close(self) -> None:
        """Unregistered: every wait ends False."""
        self.closed = True
        for _, future in self._waiters:
            if not future.done():
                future.set_result(False)

    # -- reads ------------------------------------------------------------------------------

    def _read(self, what: str, compute: Callable[[DriftUser, reads.Freshness], _V]) -> _V | None:
        """``compute``'s value, computed again only when an account it came from has
        changed, stamped with how current it is now; None if it cannot be read."""
        host = self._registry.host
        try:
            entries = reads.basis(self.user, host.ledger)
            fresh = reads.freshness(
                entries,
                current=host.accounts_current() and not self.closed and not self.awaiting_leader,
                stale_after_s=host.stale_after_s,
                required_slot=self.required_slot,
            )
            records = () if entries is None else tuple(entry.record for entry in entries)
            cached = self._computed.get(what)
            if records and cached is not None and _same_bytes(cached[0], records):
                value: _V = cached[1]
            else:
                value = compute(self.user, fresh)
                if records:
                    self._computed[what] = (records, value)
        except Exception as exc:  # a missing market or undecodable account: no value
            # A dashboard reads every second: warn when a read starts failing, not each time.
            level = logging.DEBUG if what in self._failing else logging.WARNING
            self._failing.add(what)
            log.log(level, "cannot read the %s of %r: %r", what, self, exc)
            return None
        self._failing.discard(what)
        return _stamped(value, fresh)

    def account_info(self) -> AccountInfo | None:
        """Collateral, free collateral, margin ratio, leverage and PnL; None if unreadable."""
        return self._read(
            "margin",
            functools.partial(
                reads.account_info,
                authority=str(self.authority),
                sub_account_id=self.sub_account_id,
            ),
        )

    def positions(self) -> list[PositionInfo] | None:
        """Every open perp position; None if unreadable."""
        return self._read("positions", reads.positions)

    def open_orders(self) -> list[OrderInfo] | None:
        """Every open order; None if unreadable."""
        return self._read("orders", reads.open_orders)

    def status(self) -> AccountStatus:
        """Whether this sub-account can trade now, and why not."""
        info = self.account_info()
        if info is None:
            return reads.missing_status(
                authority=str(self.authority),
                sub_account_id=self.sub_account_id,
                user_account=str(self.user_pubkey),
                message="the account cannot be read now: are all its markets subscribed?",
            )
        return reads.account_status(info, open_positions=len(self.user.get_active_perp_positions()))


def _same_bytes(old: tuple[AccountRecord, ...], new: tuple[AccountRecord, ...]) -> bool:
    """Whether ``new`` names the same accounts as ``old``, holding the same bytes."""
    if len(old) != len(new):
        return False
    for was, now in zip(old, new, strict=True):
        if was is not now and (was.pubkey != now.pubkey or was.data != now.data):
            return False
    return True


def _stamped(value: _V, fresh: reads.Freshness) -> _V:
    """``value`` (a model or a list of models) carrying ``fresh``."""
    stamp = fresh.fields()
    if isinstance(value, list):
        return cast(_V, [item.model_copy(update=stamp) for item in value])
    return cast(_V, cast(AccountRead, value).model_copy(update=stamp))
