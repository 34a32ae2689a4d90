"""The follower's side: the group's channel and last values, verified, into a ledger."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.exceptions import RedisError

from driftshare import _metrics as metrics
from driftshare._fleet._records import Message, RecordError, Signer, decode
from driftshare._fleet._store import FleetStore
from driftshare._ledger import AccountLedger

__all__ = ["Follower"]

log = logging.getLogger(__name__)

_RETRY_S = 0.25
"""Pause before subscribing again after Redis dropped the connection."""
MAX_ACCOUNTS = 2048
"""The most accounts a follower holds: about seven times Drift's mainnet (markets and their
oracles). Without ``DRIFT_SHARE_SECRET`` anyone who can write to Redis can publish records
for made-up accounts; past this, new ones are refused, so memory stays bounded."""


class Follower:
    """Feed a ledger from the group: subscribe first, then load the last values, so no
    update falls between the two; then apply every published message as it arrives.

    Every message is untrusted: malformed or unverifiable ones are dropped and counted.
    """

    def __init__(
        self,
        store: FleetStore,
        signer: Signer,
        ledger: AccountLedger,
        network: str,
        max_accounts: int = MAX_ACCOUNTS,
    ):
        self._store = store
        self._max_accounts = max_accounts
        self._signer = signer
        self._ledger = ledger
        self._network = network
        self.ready = asyncio.Event()
        """Set once the last values are read and hold the State account: a client can start."""
        self._loaded = False
        self.connected = False
        self.epoch = 0
        """The newest leader epoch heard from since the channel was (re)subscribed."""
        self.applied = 0
        self.rejected = 0
        self.last_message_at: float | None = None
        self._logged_reasons: set[str] = set()

    async def run(self) -> None:
        """Follow until cancelled, resubscribing whenever Redis drops the connection."""
        while True:
            try:
                await self._follow()
            except (RedisError, OSError) as exc:
                if self.connected:
                    log.warning("fleet channel lost (%s); resubscribing", type(exc).__name__)
                self.connected = False
                await asyncio.sleep(_RETRY_S)

    async def _follow(self) -> None:
        pubsub = self._store.redis.pubsub(ignore_subscribe_messages=True)
        self.epoch = 0  # a restarted Redis starts its epochs afresh
        try:
            await pubsub.subscribe(self._store.channel)
            # Applied as they are read: past the account cap, new records are refused.
            async for raw in self._store.records():
                self.apply(raw)
            async for raw in self._store.confirmations():
                self.apply(raw)
            self.connected = self._loaded = True
            if any(entry.record.kind == "state" for entry in self._ledger):
                self.ready.set()
            while True:
                message: dict[str, Any] | None = await pubsub.get_message(timeout=None)
                if message is not None and message.get("type") == "message":
                    self.apply(message["data"])
        finally:
            self.connected = False
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    def apply(self, raw: bytes | str) -> bool:
        """Verify one stored or published message and apply it; False if it was dropped."""
        try:
            message = decode(raw, self._signer)
        except RecordError as exc:
            self._reject(str(exc))
            return False
        record = message.record
        if (
            record is not None
            and len(self._ledger) >= self._max_accounts
            and self._ledger.get(record.pubkey) is None
        ):
            self._reject(f"more than {self._max_accounts} accounts")
            return False
        self.last_message_at = time.monotonic()
        self.epoch = max(self.epoch, message.epoch)
        confirmed_at = _local_time(message)
        if record is not None:
            self._ledger.apply(record, confirmed_at=confirmed_at)
            if self._loaded and record.kind == "state":
                self.ready.set()
        else:
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


def _local_time(message: Message) -> float:
    """The leader's wall time of the message on this process's monotonic clock.

    A record loaded from Redis keeps its real age (a dead leader's values are not fresh);
    a leader clock ahead of ours never makes a value younger than "now".
    """
    age = max(0.0, time.time() - message.wall_time)
    return time.monotonic() - age
