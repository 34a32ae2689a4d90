"""Subscribing a generation's client: market discovery, the mode with its fallbacks, and the
swap of one subscriber for another.

A part of :class:`~driftshare._client.lifecycle.SharedClient` (it inherits
:class:`Subscriptions`), kept in its own module so that the client's life and its subscriptions
read apart; the attributes below are the client's, set by its ``__init__``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from solana.rpc.commitment import Confirmed

from driftshare import _metrics as metrics
from driftshare._accounts import AccountRegistry
from driftshare._client.generation import Generation, unsubscribe_fully
from driftshare._data.discovery import Discovery, discover_markets
from driftshare._data.freshness import Confirmer
from driftshare._data.grpc_subscription import GeyserStream, GrpcSubscriber
from driftshare._data.ledger import AccountLedger
from driftshare._data.ledger_subscriber import LedgerSubscriber
from driftshare._data.polling_subscription import PollingSubscriber, ResilientLoader
from driftshare._data.tap import AccountTap
from driftshare._data.websocket_subscription import WebsocketSubscriber
from driftshare.config import Settings, SubscriptionMode, redact_text

if TYPE_CHECKING:
    from driftshare._snapshot import SnapshotKeeper, WarmSource

__all__ = ["Subscriptions"]

log = logging.getLogger(__name__)


class Subscriptions:
    """How a shared client subscribes a generation's DriftClient, and swaps its subscriber."""

    network: str
    settings: Settings
    ledger: AccountLedger
    accounts: AccountRegistry
    confirmer: Confirmer
    snapshots: SnapshotKeeper | None
    tap: AccountTap | None
    mode: SubscriptionMode
    unavailable: dict[int, str]
    grpc_down_since: float | None
    _warm: WarmSource | None
    _warming: asyncio.Task[int] | None
    _grpc_gave_up: Callable[[Generation], None]
    """The gRPC stream's fall-back once it fails for good (the client's health decides)."""

    async def _subscribe(self, gen: Generation, mode: SubscriptionMode) -> None:
        """Discover the markets and subscribe in ``mode``; gRPC falls back to websocket,
        websocket to polling.

        A fleet follower subscribes to nothing upstream: its accounts come from the leader.
        """
        program = gen.client.program
        if gen.fleet is not None and not gen.fleet.upstream:
            self.tap = None  # nothing to confirm upstream: the leader's confirmations arrive
            await gen.fleet.wait_followed()
            await self._install_subscriber(gen, LedgerSubscriber(program, self.ledger))
            return
        if self.snapshots is not None and not self.snapshots.chain_known:
            await self._check_chain(gen)
        discovery = await discover_markets(program, self.settings.perp_markets)
        gen.check()
        self.unavailable = discovery.unavailable
        # A subscriber already serving (a mode switch, a new endpoint) keeps the ledger until
        # its replacement is in place: the ledger dates the values being served.
        self.tap = tap = AccountTap(self.ledger, discovery.records, active=gen.ready_at is None)
        tap.on_reconnect = self.confirmer.check_all
        subscribers = {"grpc": self._grpc, "websocket": self._websocket}
        fallback: dict[SubscriptionMode, SubscriptionMode] = {
            "grpc": "websocket",
            "websocket": "polling",
        }
        while mode != "polling":
            try:
                await self._install_subscriber(gen, subscribers[mode](gen, discovery, tap), tap)
                self.mode = mode
                return
            except Exception as exc:  # any failure of this mode: fall back to the next one
                metrics.SUBSCRIPTION_FAILURES.labels(self.network).inc()
                if mode == "grpc":
                    self.grpc_down_since = time.monotonic()
                log.warning(
                    "%s subscription failed (%s); %s instead",
                    mode,
                    redact_text(repr(exc)),
                    fallback[mode],
                )
                mode = fallback[mode]
        await self._install_subscriber(gen, self._polling(gen, discovery, tap), tap)
        self.mode = "polling"

    async def _check_chain(self, gen: Generation) -> None:
        """Ask the RPC for its chain's genesis hash: a snapshot of another chain is dropped."""
        if self._warming is not None:
            await asyncio.shield(self._warming)  # its accounts are in the ledger before the check
        genesis = await self._genesis(gen)
        gen.check()
        dropped = self.snapshots is not None and self.snapshots.on_chain(genesis)
        if dropped and self._warm is not None:
            self._warm.close()  # nothing of the snapshot's is left to serve
            self._warm = None

    @staticmethod
    async def _genesis(gen: Generation) -> str:
        """The genesis hash of the chain ``gen``'s RPC serves, asked once per generation."""
        if gen.genesis is None:
            if gen.connection is None:
                raise RuntimeError("no connection")
            gen.genesis = str((await gen.connection.get_genesis_hash()).value)
        return gen.genesis

    def _websocket(
        self, gen: Generation, discovery: Discovery, tap: AccountTap
    ) -> WebsocketSubscriber:
        return WebsocketSubscriber(gen.client.program, discovery, Confirmed, tap)

    def grpc_token(self) -> str | None:
        token = self.settings.grpc_token
        return None if token is None else token.get_secret_value()

    def _grpc(self, gen: Generation, discovery: Discovery, tap: AccountTap) -> GrpcSubscriber:
        """A gRPC subscriber: on the serving one's stream if there is one (one channel and
        one stream for the client's life), else on a new stream."""
        url = self.settings.grpc_url
        if url is None:
            raise ValueError("DRIFT_SUBSCRIPTION=grpc needs DRIFT_GRPC_URL")
        current = gen.client.account_subscriber
        if isinstance(current, GrpcSubscriber) and current.is_subscribed():
            subscriber = GrpcSubscriber(
                gen.client.program, self.ledger, discovery, tap, current.stream
            )
            subscriber.take_over(current)
            return subscriber
        stream = GeyserStream(
            url,
            self.grpc_token(),
            stall_s=self.settings.grpc_stall_s,
            on_account=tap.record,
            on_give_up=lambda: self._grpc_gave_up(gen),
        )
        return GrpcSubscriber(gen.client.program, self.ledger, discovery, tap, stream)

    def _polling(self, gen: Generation, discovery: Discovery, tap: AccountTap) -> PollingSubscriber:
        loader = ResilientLoader(gen.connection, Confirmed, self.settings.poll_interval_s)
        loader.attach(tap)
        return PollingSubscriber(gen.client.program, loader, discovery)

    async def _install_subscriber(
        self, gen: Generation, subscriber: Any, tap: AccountTap | None = None
    ) -> None:
        """Subscribe ``subscriber`` and put it in place of the client's current one, then let
        its ``tap`` write to the ledger.

        Whatever happens, cancellation included, the one left out (the new one on failure,
        the previous one on success) ends fully unsubscribed.
        """
        try:
            await self.accounts.attach(subscriber, tap)
            # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancellation that
            # arrives as the subscription completes.
            async with asyncio.timeout(self.settings.init_timeout_s):
                await subscriber.subscribe()
            gen.check()
        except BaseException:
            await unsubscribe_fully(subscriber)
            raise
        previous, gen.client.account_subscriber = gen.client.account_subscriber, subscriber
        if tap is not None:
            tap.activate()
            if gen.ready_at is not None and previous is not subscriber:
                self._catch_up(subscriber, tap)
        if previous is not subscriber:
            await unsubscribe_fully(previous)

    def _catch_up(self, subscriber: Any, tap: AccountTap) -> None:
        """Give a replacement the ledger's records: it starts from discovery's reads, and the
        subscriber it replaces may have applied newer ones since, which the ledger dates."""
        for pubkey in tap.pubkeys():
            entry = self.ledger.get(pubkey)
            if entry is None:
                continue
            try:
                subscriber.inject(entry.record)
            except Exception as exc:  # undecodable: the account's reads say so
                log.debug("cannot apply %s to the new subscription: %r", pubkey, exc)

    async def _discard_subscriber(self, gen: Generation) -> None:
        if gen.client is not None:
            await unsubscribe_fully(gen.client.account_subscriber)
