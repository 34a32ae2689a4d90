"""FleetMember: this process's place in a fleet (leader, follower or standalone).

One member per shared client. Its loop renews or takes the group's lease, announces the
member, and decides whether this process runs its own upstream client: the leader does, a
follower does not, and every member does once Redis has been unreachable for
``share_fallback_s`` (then it rejoins as soon as Redis answers again).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Literal

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from driftshare import _metrics as metrics
from driftshare._fleet._follower import Follower
from driftshare._fleet._publisher import Publisher
from driftshare._fleet._records import Signer
from driftshare._fleet._store import FleetStore, StoredMember
from driftshare._generation import cancel_all
from driftshare._ledger import AccountLedger
from driftshare.config import Settings, redact_url

__all__ = ["FleetMember", "Role", "standalone_stats"]

log = logging.getLogger(__name__)

Role = Literal["leader", "follower", "standalone"]
_ROLES: tuple[Role, ...] = ("leader", "follower", "standalone")
_TICKS_PER_LEASE = 6
"""Lease checks per lease period: a dead leader is replaced within about 7/6 of a lease."""
_FORGET_AFTER_LEASES = 10
"""A member silent for this many leases is dropped from the member list."""


def standalone_stats() -> dict[str, Any]:
    """The ``fleet`` stats of a process that is in no fleet."""
    return {"role": "standalone", "epoch": None, "leader": None, "members": []}


class FleetMember:
    """Election, publishing and following for one shared client of ``network``."""

    def __init__(
        self, settings: Settings, network: str, ledger: AccountLedger, on_change: Callable[[], None]
    ) -> None:
        assert settings.share_url is not None
        self.settings = settings
        self.network = network
        self.group = settings.share_group or "default"
        self.ledger = ledger
        self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.references = 0
        self.role: Role = "standalone"
        self.epoch: int | None = None
        self.leader: str | None = None
        self.fallback = False
        """Standalone because Redis has been unreachable for ``share_fallback_s``."""
        self._on_change = on_change
        self._lease_s = settings.share_lease_s
        self._token: str | None = None
        self._members: list[StoredMember] = []
        self._failing_since: float | None = None
        self._decided = asyncio.Event()
        secret = settings.share_secret
        signer = Signer(secret.get_secret_value().encode() if secret else None, self.group)
        # No retries inside redis-py: the loop below is the retry, at its own pace.
        options: dict[str, Any] = {
            "socket_connect_timeout": self._lease_s / 2,
            "retry": Retry(NoBackoff(), 0),
        }
        self._redis = Redis.from_url(
            settings.share_url, socket_timeout=self._lease_s / 2, **options
        )
        # The channel's connection waits for messages as long as none come: no read timeout.
        self._channel_redis = Redis.from_url(settings.share_url, socket_timeout=None, **options)
        self._store = FleetStore(self._redis, network, self.group)
        channel_store = FleetStore(self._channel_redis, network, self.group)
        self._publisher = Publisher(self._store, signer, self.id, network, self._fenced)
        self.follower = Follower(channel_store, signer, ledger, network)
        self._follow_task: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = False
        """Set by :meth:`close`: no role change may start work any more."""

    @property
    def upstream(self) -> bool:
        """Whether this process should run its own upstream client now."""
        return self.role != "follower"

    @property
    def feed_lost(self) -> bool:
        """A follower whose data is not being kept current: its channel is down, or a new
        leader (a newer epoch) has published nothing yet, as during a failover."""
        if self.role != "follower":
            return False
        return not self.follower.connected or self.follower.epoch < (self.epoch or 0)

    async def join(self) -> None:
        """Start the member and wait for its first decision (one lease round trip)."""
        if self._task is None:
            log.info(
                "fleet %s/%s: %s joins at %s",
                self.network,
                self.group,
                self.id,
                redact_url(self.settings.share_url or ""),
            )
            self._task = asyncio.create_task(self._run(), name="driftshare-fleet")
        await self._decided.wait()

    async def wait_followed(self) -> None:
        """Wait until the follower holds the group's last values, the State among them."""
        await self.follower.ready.wait()

    async def close(self) -> None:
        """Leave the fleet: stop publishing and following, free the lease for another."""
        self._closing = True
        task, self._task = self._task, None
        await cancel_all([task])
        await self._publisher.stop()
        await self._stop_following()
        # Redis away: the lease expires and the member entry ages out by themselves.
        with suppress(RedisError, OSError):
            if self._token is not None:
                await self._store.release(self._token)
            await self._store.leave(self.id)
        self._token = None
        await self._redis.aclose()
        await self._channel_redis.aclose()

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        interval = self._lease_s / _TICKS_PER_LEASE
        while True:
            try:
                await self._tick()
                self._failing_since = None
            except (
                Exception
            ) as exc:  # Redis away, or garbage in it: a failed round, never a dead loop
                await self._failed(exc)
            self._decided.set()
            self._wake.clear()
            with suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()

    async def _tick(self) -> None:
        store = self._store
        if self._token is not None and not await store.renew(self._token, self._lease_s):
            log.warning("fleet lease of %s lost (expired or Redis emptied)", self.id)
            await self._lose_lead()
        if self._token is None:
            epoch = await store.acquire(self.id, self._lease_s)
            if epoch:
                await self._lead(epoch)
            elif self.role != "follower":
                self._set_role("follower")
        holder = await store.leader()
        self.leader = holder[0] if holder else None
        if holder is not None:
            self.epoch = holder[1]
        await store.announce(
            StoredMember(
                self.id, self.role, socket.gethostname(), os.getpid(), self.references, time.time()
            ),
            self._lease_s * _FORGET_AFTER_LEASES,
        )
        self._members = await store.members()

    async def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            log.warning("fleet Redis unreachable: %s: %s", type(exc).__name__, exc)
        # Joining with Redis away there is nothing to serve meanwhile: fall back at once.
        waited = now - self._failing_since
        joining = not self._decided.is_set()
        if joining or (self.role != "standalone" and waited >= self.settings.share_fallback_s):
            log.warning("fleet Redis away: this member uses its own upstream client")
            self.fallback = True
            await self._lose_lead()
            await self._stop_following()
            self._set_role("standalone")

    async def _lead(self, epoch: int) -> None:
        self._token = f"{self.id}|{epoch}"
        self.epoch = epoch
        self.leader = self.id
        self.fallback = False
        log.info("fleet %s/%s: %s leads with epoch %d", self.network, self.group, self.id, epoch)
        await self._stop_following()
        self._set_role("leader")
        self._publisher.lead(self.ledger, self._token, epoch)

    async def _lose_lead(self) -> None:
        self._token = None
        await self._publisher.stop()

    def _fenced(self) -> None:
        # The publisher found its epoch refused: follow now instead of at the next tick.
        self._token = None
        self._wake.set()

    def _set_role(self, role: Role) -> None:
        if role == "follower":
            self.fallback = False
            if self._follow_task is None and not self._closing:
                self._follow_task = asyncio.create_task(
                    self.follower.run(), name="driftshare-fleet-follow"
                )
        if role == self.role:
            return
        was_upstream = self.upstream
        self.role = role
        for name in _ROLES:
            metrics.FLEET_ROLE.labels(self.network, name).set(1 if name == role else 0)
        if self.upstream != was_upstream:
            self._on_change()

    async def _stop_following(self) -> None:
        task, self._follow_task = self._follow_task, None
        await cancel_all([task])

    # -- visibility -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Role, epoch, leader and every member with its last-seen age."""
        now = time.time()
        return {
            "role": self.role,
            "epoch": self.epoch,
            "leader": self.leader,
            "member": self.id,
            "group": self.group,
            "redis": redact_url(self.settings.share_url or ""),
            "redis_connected": self._failing_since is None and self._decided.is_set(),
            "fallback": self.fallback,
            "records_published": self._publisher.published,
            "records_applied": self.follower.applied,
            "records_rejected": self.follower.rejected,
            "members": [
                {
                    "id": m.id,
                    "role": m.role,
                    "host": m.host,
                    "pid": m.pid,
                    "references": m.references,
                    "last_seen_age_s": round(max(0.0, now - m.seen_at), 3),
                }
                for m in self._members
            ],
        }
