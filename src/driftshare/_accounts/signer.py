"""Signer: one authority's DriftClient, shared by every sub-account registered for it."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar

from driftpy.drift_client import DriftClient
from driftpy.drift_user import DriftUser
from driftpy.drift_user_stats import DriftUserStats
from solders.keypair import Keypair
from solders.pubkey import Pubkey

__all__ = ["Signer"]

_T = TypeVar("_T")


class Signer:
    """One authority's driftpy DriftClient over the shared connection and markets.

    ``client.users`` holds a :class:`~driftpy.drift_user.DriftUser` per registered
    sub-account, each reading its User account from the shared ledger, and
    ``client.user_stats`` the authority's UserStats. The client's active sub-account is
    client-wide state driftpy reads while building instructions: only :meth:`build_ixs`
    changes it, and puts it back before returning.
    """

    def __init__(self, client: DriftClient, keypair: Keypair) -> None:
        self.client = client
        self.keypair = keypair
        """The signer: the fee payer and ``authority`` of every instruction."""
        self.authority: Pubkey = client.authority
        self.stats_watched = False
        """Whether the authority's UserStats account is subscribed."""

    def add(self, sub_account_id: int, user: DriftUser) -> None:
        """Register ``user`` as ``sub_account_id`` on the client."""
        client = self.client
        client.users[sub_account_id] = user
        if sub_account_id not in client.sub_account_ids:
            client.sub_account_ids.append(sub_account_id)
        if client.active_sub_account_id not in client.users:
            # driftpy's get_remaining_accounts reads the active user: one must be registered.
            client.active_sub_account_id = sub_account_id

    def add_stats(self, stats: DriftUserStats) -> None:
        self.client.user_stats[self.authority] = stats
        self.stats_watched = True

    def remove(self, sub_account_id: int) -> None:
        """Forget ``sub_account_id``; the active one moves to a registered one, if any."""
        client = self.client
        client.users.pop(sub_account_id, None)
        if sub_account_id in client.sub_account_ids:
            client.sub_account_ids.remove(sub_account_id)
        if client.active_sub_account_id == sub_account_id and client.users:
            client.active_sub_account_id = min(client.users)

    @property
    def sub_account_ids(self) -> list[int]:
        return sorted(self.client.users)

    def build_ixs(self, sub_account_id: int, build: Callable[[DriftClient], _T]) -> _T:
        """``build(client)`` with ``sub_account_id`` active, in one synchronous block.

        driftpy's instruction builders (``get_place_perp_order_ix(params, sub_account_id)``
        and the like) read the client-wide active sub-account for remaining accounts. No
        other task runs between setting it and putting it back, so two engines on
        different sub-accounts never see each other's. ``build`` must not be a coroutine
        function: a coroutine would run later, under whatever sub-account is active then
        (TypeError). KeyError if ``sub_account_id`` is not registered.
        """
        client = self.client
        if sub_account_id not in client.users:
            raise KeyError(f"sub-account {sub_account_id} of {self.authority} is not registered")
        active = client.active_sub_account_id
        client.active_sub_account_id = sub_account_id
        try:
            built = build(client)
        finally:
            client.active_sub_account_id = active
        if inspect.iscoroutine(built):
            built.close()
            raise TypeError("build_ixs needs a synchronous builder, got a coroutine")
        return built
