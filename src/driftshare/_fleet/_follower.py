"""The follower's side: the group's channel and last values, verified, into a ledger."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from driftshare import _metrics as metrics
from driftshare._data.ledger import AccountLedger
from driftshare._fleet._records import (
    RecordError,
    Signer,
    TxMessage,
    decode_update,
    digest,
    local_time,
)
from driftshare._fleet._store import FleetStore

__all__ = ["Follower"]

log = logging.getLogger(__name__)

_RETRY_S = 0.25
"""Pause before subscribing again after Redis dropped the connection."""
MAX_ACCOUNTS = 2048
"""The most accounts a follower holds: about seven times Drift's mainnet (markets and their
oracles). Without ``DRIFT_SHARE_SECRET`` anyone who can write to Redis can publish records
for made-up accounts; past this, new ones are refused, so memory stays bounded."""


class Follower:
    """Feed a ledger from the group: subscribe (and wait for Redis to acknowledge it), then
    load the last values, so no update falls between the two; then apply every published
    message as it arrives.

    Every message is untrusted: malformed or unverifiable ones are dropped and counted, and
    a confirmation is applied only to the data it names. The channel is pinged whenever it
    is quiet: a connection that stops answering (a half-open TCP connection after a NAT
    drop or a partition) is dropped and subscribed again within ``silence_s``.
    """

    def __init__(
        self,
        store: FleetStore,
        signer: Signer,
        ledger: AccountLedger,
        network: str,
        *,
        silence_s: float,
        stale_after_s: float,
        max_accounts: int = MAX_ACCOUNTS,
        on_tx: Callable[[TxMessage, float, float | None], None] = lambda *_: None,
    ):
        """``on_tx`` takes the leader's blockhash and fee, with when each was fetched on
        this process's monotonic clock."""
        self._store = store
        self._on_tx = on_tx
        self._max_accounts = max_accounts
        self._signer = signer
        self._ledger = ledger
        self._network = network
        self._silence_s = silence_s
        self._stale_after_s = stale_after_s
        self.ready = asyncio.Event()
        """Set once the last values are read and hold the State account: a client can start."""
        self._loaded = False
        self.connected = False
        self.epoch = 0
        """The newest leader epoch heard from since the channel was (re)subscribed."""
        self.applied = 0
        self.rejected = 0
        self.last_message_at: float | None = None
        """``time.monotonic()`` of the last message or answer heard on the channel."""
        self._logged_reasons: set[str] = set()

    async def run(self) -> None:
        """Follow until cancelled, subscribing again whenever the channel fails."""
        while True:
            try:
                await self._follow()
            except Exception as exc:  # Redis away or garbage from it: never a dead feed
                if self.connected:
                    log.warning("fleet channel lost (%s); resubscribing", type(exc).__name__)
                elif not isinstance(exc, RedisError | OSError):
                    log.warning("fleet channel failed (%r); resubscribing", exc)
                self.connected = False
                await asyncio.sleep(_RETRY_S)

    async def _follow(self) -> None:
        pubsub = self._store.redis.pubsub()
        self.epoch = 0  # a restarted Redis starts its epochs afresh
        try:
            await pubsub.subscribe(self._store.channel)
            while (await self._next(pubsub))["type"] != "subscribe":
                pass  # only its acknowledgement can come first; from then on nothing is missed
            # Applied as they are read: past the account cap, new records are refused.
            async for raw in self._store.records():
                self.apply(raw)
            async for raw in self._store.confirmations():
                self.apply(raw)
            tx = await self._store.tx()
            if tx is not None:
                self.apply(tx)
            self.connected = self._loaded = True
            self._explain_old_values()
            if any(entry.record.kind == "state" for entry in self._ledger):
                self.ready.set()
            while True:
                message = await self._next(pubsub)
                if message["type"] == "message":
                    self.apply(message["data"])
        finally:
            self.connected = False
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _next(self, pubsub: PubSub) -> dict[str, Any]:
        """The channel's next message or answer; ConnectionError once it is silent (pinged
        meanwhile) for ``silence_s``."""
        heard_at = time.monotonic()
        while True:
            message = await pubsub.get_message(timeout=self._silence_s / 3)
            now = time.monotonic()
            if message is not None:
                self.last_message_at = now
                return cast(dict[str, Any], message)
            if now - heard_at > self._silence_s:
                raise ConnectionError(f"the fleet channel was silent for {self._silence_s:g}s")
            await pubsub.ping()

    def _explain_old_values(self) -> None:
        """Say why a member starting from the group's last values serves them stale."""
        now = time.monotonic()
        newest = max((entry.confirmed_at for entry in self._ledger), default=None)
        if newest is not None and now - newest > self._stale_after_s:
            log.warning(
                "fleet: the group's last values were confirmed %.0fs ago: the leader "
                "publishes nothing current (its upstream may be down); they are served "
                "stale until it does",
                now - newest,
            )

    def apply(self, raw: bytes | str | None) -> bool:
        """Verify one stored or published message and apply it; False if it was dropped.

        None stands for a stored value too large to have been read.
        """
        if raw is None:
            self._reject("message too large")
            return False
        try:
            message = decode_update(raw, self._signer)
        except RecordError as exc:
            self._reject(str(exc))
            return False
        if isinstance(message, TxMessage):
            self.epoch = max(self.epoch, message.epoch)
            fee_at = None
            if message.fee_wall_time is not None:
                fee_at = local_time(message.fee_wall_time)
            self._on_tx(message, local_time(message.wall_time), fee_at)
            return True
        record = message.record
        if (
            record is not None
            and len(self._ledger) >= self._max_accounts
            and self._ledger.get(record.pubkey) is None
        ):
            self._reject(f"more than {self._max_accounts} accounts")
            return False
        self.epoch = max(self.epoch, message.epoch)
        confirmed_at = local_time(message.wall_time)
        if record is not None:
            self._ledger.apply(record, confirmed_at=confirmed_at)
            if self._loaded and record.kind == "state":
                self.ready.set()
        else:
            entry = self._ledger.get(message.pubkey)
            # The bytes decide, not the slot they were read at: two subscriptions read the
            # same data at different slots.
            if entry is None or digest(entry.record.data) != message.data_digest:
                # Not an error: its record may still be on its way (loading races the
                # channel) or may have lost to newer data. Its own data stays unconfirmed.
                log.debug("fleet confirmation of other data than held for %s", message.pubkey)
                return False
            self._ledger.confirm(message.pubkey, message.slot, confirmed_at=confirmed_at)
        self.applied += 1
        metrics.FLEET_RECORDS_APPLIED.labels(self._network).inc()
        return True

    def _reject(self, reason: str) -> None:
        self.rejected += 1
        metrics.FLEET_RECORDS_REJECTED.labels(self._network).inc()
        if reason not in self._logged_reasons:
            # Once per reason: a flood of forged records must not flood the log too.
            self._logged_reasons.add(reason)
            log.warning("dropped a fleet record from Redis: %s", reason)
