"""SubAccount: one registered (authority, sub-account), shared by every engine using it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, TypeVar

from driftpy.drift_client import DriftClient
from driftpy.drift_user import DriftUser
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from driftshare._accounts import reads
from driftshare._accounts.signer import Signer
from driftshare.models import AccountInfo, AccountStatus, OrderInfo, PositionInfo

if TYPE_CHECKING:
    from driftshare._accounts.registry import AccountRegistry

__all__ = ["SubAccount"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

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
        self._waiters: list[tuple[int, asyncio.Future[bool]]] = []

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
                return await asyncio.wait_for(asyncio.shield(future), timeout * _REFRESH_AFTER)
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

    def _freshness(self) -> reads.Freshness:
        host = self._registry.host
        return reads.freshness(
            self.user,
            host.ledger,
            current=host.accounts_current() and not self.closed,
            stale_after_s=host.stale_after_s,
            required_slot=self.required_slot,
        )

    def account_info(self) -> AccountInfo | None:
        """Collateral, free collateral, margin ratio, leverage and PnL; None if unreadable."""
        try:
            return reads.account_info(
                self.user,
                self._freshness(),
                authority=str(self.authority),
                sub_account_id=self.sub_account_id,
            )
        except Exception as exc:  # a missing market or undecodable account: no value
            log.warning("cannot read %r: %r", self, exc)
            return None

    def positions(self) -> list[PositionInfo] | None:
        """Every open perp position; None if unreadable."""
        try:
            return reads.positions(self.user, self._freshness())
        except Exception as exc:  # a missing market or undecodable account: no value
            log.warning("cannot read the positions of %r: %r", self, exc)
            return None

    def open_orders(self) -> list[OrderInfo] | None:
        """Every open order; None if unreadable."""
        try:
            return reads.open_orders(self.user, self._freshness())
        except Exception as exc:  # a missing market or undecodable account: no value
            log.warning("cannot read the orders of %r: %r", self, exc)
            return None

    def status(self) -> AccountStatus:
        """Whether this sub-account can trade now, and why not."""
        try:
            return reads.account_status(
                self.user,
                self._freshness(),
                authority=str(self.authority),
                sub_account_id=self.sub_account_id,
            )
        except Exception as exc:  # a missing market or undecodable account
            return reads.missing_status(
                authority=str(self.authority),
                sub_account_id=self.sub_account_id,
                user_account=str(self.user_pubkey),
                message=f"the account cannot be read now: {exc!r}",
            )
