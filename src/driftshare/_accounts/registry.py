"""AccountRegistry: the signers and sub-accounts registered on one client, each User and
UserStats account subscribed once on that client's own subscription."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from driftpy.account_subscription_config import AccountSubscriptionConfig
from driftpy.addresses import get_user_account_public_key, get_user_stats_account_public_key
from driftpy.constants.config import DRIFT_PROGRAM_ID
from driftpy.decode.user import decode_user
from driftpy.drift_user import DriftUser
from driftpy.drift_user_stats import DriftUserStats, UserStatsSubscriptionConfig
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from driftshare._accounts.account import SubAccount
from driftshare._accounts.host import AccountHost
from driftshare._accounts.signer import Signer
from driftshare._accounts.subscribers import LedgerUserStatsSubscriber, LedgerUserSubscriber
from driftshare._data.freshness import multiple_accounts
from driftshare._data.grpc_subscription import GrpcSubscriber
from driftshare._data.ledger import AccountKind, AccountRecord, LedgerEntry
from driftshare._data.polling_subscription import PollingSubscriber
from driftshare._data.tap import AccountTap
from driftshare._data.websocket_subscription import WebsocketSubscriber
from driftshare._transport import post_batch

__all__ = ["AccountMissing", "AccountRegistry", "AccountUnavailable", "missing_message"]

log = logging.getLogger(__name__)

_Watcher = WebsocketSubscriber | PollingSubscriber


class AccountMissing(LookupError):
    """The sub-account's User account does not exist; the message says how to create it."""


class AccountUnavailable(RuntimeError):
    """The User account cannot be read now (upstream down, or undecodable)."""


def missing_message(authority: Pubkey, sub_account_id: int, user_account: Pubkey) -> str:
    """How to initialize a missing sub-account (driftshare never creates one)."""
    first = (
        ""
        if sub_account_id == 0
        else " (sub-account 0 must exist first; sub-accounts are created in order)"
    )
    return (
        f"no Drift User account for {authority} sub-account {sub_account_id} "
        f"(expected at {user_account}): initialize it first{first}, e.g. with driftpy's "
        f"`await DriftClient.initialize_user(sub_account_id={sub_account_id})` signed by "
        "this wallet, then deposit collateral; driftshare never creates accounts"
    )


class AccountRegistry:
    """Every (authority, sub-account) registered on one client, reference-counted.

    One :class:`Signer` (DriftClient) per authority and one :class:`SubAccount` per
    (authority, sub-account), however many engines open it. Each User account, and each
    authority's UserStats, is watched once on the client's subscription (the oracles'
    WebSocket, or the polling loader's batched reads), written to the client's ledger and
    confirmed by its confirmer like the markets. The last :meth:`close` unsubscribes it.
    """

    def __init__(self, host: AccountHost) -> None:
        self.host = host
        self._signers: dict[Pubkey, Signer] = {}
        self._accounts: dict[tuple[Pubkey, int], SubAccount] = {}
        self._by_user: dict[str, SubAccount] = {}
        self._watched: dict[str, AccountKind] = {}
        """Every watched account's address → its kind."""
        self._attached: tuple[_Watcher, AccountTap | None] | None = None
        """A subscriber being installed, which already watches every account."""
        self._lock = asyncio.Lock()
        host.ledger.add_listener(self._on_entry)

    # -- registration -----------------------------------------------------------------------

    def find(self, authority: Pubkey, sub_account_id: int) -> SubAccount | None:
        return self._accounts.get((authority, sub_account_id))

    def accounts(self) -> list[SubAccount]:
        """Every registered sub-account, by authority and sub-account id."""
        return [self._accounts[key] for key in sorted(self._accounts, key=str)]

    def snapshot(self) -> dict[str, Any]:
        """Plain data for stats(): each registered sub-account (public keys only) and how
        many accounts are watched for them; safe to call from another thread."""
        accounts = [
            {
                "authority": str(account.authority),
                "sub_account_id": account.sub_account_id,
                "user_account": str(account.user_pubkey),
                "references": account.refs,
            }
            for account in list(self._accounts.values())
        ]
        return {
            "signers": len(self._signers),
            "watched": len(self._watched),
            "sub_accounts": accounts,
        }

    def watched(self) -> dict[str, AccountKind]:
        """The address and kind of every account subscribed for a signer."""
        return dict(self._watched)

    async def open(self, keypair: Keypair, sub_account_id: int) -> SubAccount:
        """Register (or take one more reference on) ``keypair``'s ``sub_account_id``.

        AccountMissing when its User account does not exist, AccountUnavailable when it
        cannot be read now; nothing stays registered then.
        """
        authority = keypair.pubkey()
        async with self._lock:
            existing = self._accounts.get((authority, sub_account_id))
            if existing is not None:
                existing.refs += 1
                return existing
            signer = self._signers.get(authority)
            if signer is None:
                if self.host.account_connection() is None:
                    raise AccountUnavailable("the client is not connected")
                signer = Signer(await self.host.signer_client(keypair), keypair)
            account = await self._register(signer, sub_account_id)
            self._signers[authority] = signer
            self._accounts[(authority, sub_account_id)] = account
            self._by_user[str(account.user_pubkey)] = account
            return account

    async def _register(self, signer: Signer, sub_account_id: int) -> SubAccount:
        authority = signer.authority
        user_key = get_user_account_public_key(DRIFT_PROGRAM_ID, authority, sub_account_id)
        stats_key = get_user_stats_account_public_key(DRIFT_PROGRAM_ID, authority)
        keys = [str(user_key)] if signer.stats_watched else [str(user_key), str(stats_key)]
        slot, found = await self._read(keys)
        data = found.get(str(user_key))
        if data is None:
            raise AccountMissing(missing_message(authority, sub_account_id, user_key))
        try:
            decoded = decode_user(data)
        except Exception as exc:  # untrusted bytes: one clear error
            raise AccountUnavailable(f"the User account {user_key} cannot be decoded") from exc
        if decoded.authority != authority or decoded.sub_account_id != sub_account_id:
            raise AccountUnavailable(f"{user_key} is not {authority}'s sub-account")
        ledger = self.host.ledger
        client = signer.client
        # driftpy builds a (never subscribed) subscriber of the config's kind; replaced below.
        config = AccountSubscriptionConfig("cached")
        user = DriftUser(client, user_public_key=user_key, account_subscription=config)
        user.account_subscriber = LedgerUserSubscriber(ledger, str(user_key))
        await self._watch(AccountRecord(str(user_key), "user", slot, data))
        signer.add(sub_account_id, user)
        stats_data = found.get(str(stats_key))
        if stats_data is not None:
            await self._watch(AccountRecord(str(stats_key), "user_stats", slot, stats_data))
            stats = DriftUserStats(client, stats_key, UserStatsSubscriptionConfig())
            stats.account_subscriber = LedgerUserStatsSubscriber(ledger, str(stats_key))
            signer.add_stats(stats)
        return SubAccount(self, signer, sub_account_id, user)

    async def close(self, account: SubAccount) -> None:
        """Drop one reference on ``account``; the last unsubscribes its accounts."""
        async with self._lock:
            key = (account.authority, account.sub_account_id)
            if self._accounts.get(key) is not account:
                return  # already unregistered (the client closed)
            account.refs -= 1
            if account.refs > 0:
                return
            del self._accounts[key]
            self._by_user.pop(str(account.user_pubkey), None)
            account.close()
            signer = account.signer
            signer.remove(account.sub_account_id)
            await self._unwatch(str(account.user_pubkey))
            if not signer.sub_account_ids:
                del self._signers[signer.authority]
                stats_key = get_user_stats_account_public_key(DRIFT_PROGRAM_ID, signer.authority)
                await self._unwatch(str(stats_key))

    def clear(self) -> None:
        """The client closed: every registration ends with its subscription."""
        for account in self._accounts.values():
            account.close()
        for pubkey in self._watched:
            self.host.ledger.discard(pubkey)
        self._accounts.clear()
        self._by_user.clear()
        self._signers.clear()
        self._watched.clear()
        self._attached = None

    # -- the subscription -------------------------------------------------------------------

    def _targets(self) -> tuple[list[_Watcher], list[AccountTap]]:
        """The subscribers and taps to watch on: the serving ones and one being installed."""
        subscribers: list[_Watcher] = []
        taps: list[AccountTap] = []
        serving = self.host.account_subscriber()
        if isinstance(serving, WebsocketSubscriber | PollingSubscriber | GrpcSubscriber):
            subscribers.append(serving)
        tap = self.host.account_tap()
        if tap is not None:
            taps.append(tap)
        if self._attached is not None:
            attached, attached_tap = self._attached
            if attached is not serving:
                subscribers.append(attached)
            if attached_tap is not None and attached_tap is not tap:
                taps.append(attached_tap)
        return subscribers, taps

    async def attach(self, subscriber: Any, tap: AccountTap | None) -> None:
        """Watch every registered account on ``subscriber`` (not subscribed yet) and ``tap``."""
        if not isinstance(subscriber, WebsocketSubscriber | PollingSubscriber | GrpcSubscriber):
            return  # a fleet follower's: the leader's accounts only
        self._attached = (subscriber, tap)
        for pubkey, kind in list(self._watched.items()):
            if tap is not None:
                tap.watch(pubkey, kind)
            entry = self.host.ledger.get(pubkey)
            if entry is not None:
                await subscriber.watch_account(entry.record)

    async def _watch(self, record: AccountRecord) -> None:
        self._watched[record.pubkey] = record.kind
        self.host.ledger.apply(record)
        subscribers, taps = self._targets()
        for tap in taps:
            tap.watch(record.pubkey, record.kind)
        for subscriber in subscribers:
            await subscriber.watch_account(record)

    async def _unwatch(self, pubkey: str) -> None:
        self._watched.pop(pubkey, None)
        subscribers, taps = self._targets()
        for tap in taps:
            tap.unwatch(pubkey)
        for subscriber in subscribers:
            try:
                await subscriber.unwatch_account(pubkey)
            except Exception as exc:  # a closing socket: the subscription ends with it
                log.debug("cannot unsubscribe %s: %r", pubkey, exc)
        self.host.ledger.discard(pubkey)

    async def _read(self, keys: list[str]) -> tuple[int, dict[str, bytes]]:
        """One getMultipleAccounts of ``keys``: its slot and the accounts that exist."""
        connection = self.host.account_connection()
        if connection is None:
            raise AccountUnavailable("the client is not connected")
        request = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "getMultipleAccounts",
            "params": [keys, {"encoding": "base64", "commitment": "confirmed"}],
        }
        try:
            (answer,) = await post_batch(connection, [request])
            slot, accounts = multiple_accounts(keys, answer)
        except Exception as exc:  # upstream trouble: one clear error
            raise AccountUnavailable(f"cannot read the accounts: {exc!r}") from exc
        return slot, dict(accounts)

    async def refresh(self, account: SubAccount) -> None:
        """Read ``account``'s User account now and apply it (never raises)."""
        key = str(account.user_pubkey)
        try:
            slot, found = await self._read([key])
        except AccountUnavailable as exc:
            log.debug("cannot refresh %r: %s", account, exc)
            return
        data = found.get(key)
        if data is not None and key in self._watched:
            self.host.ledger.apply(AccountRecord(key, "user", slot, data))

    def _on_entry(self, entry: LedgerEntry, changed: bool) -> None:
        account = self._by_user.get(entry.record.pubkey)
        if account is not None:
            account.confirmed(entry.confirmed_slot)
