"""FleetMember: this process's place in a fleet (leader, follower or standalone).

One member per shared client. Its loop renews or takes the group's lease, announces the
member, and decides whether this process runs its own upstream client: the leader does, a
follower does not, and every member does once Redis has been unreachable for
``share_fallback_s`` (then it rejoins as soon as Redis answers again). A leader whose own
data has stopped flowing hands the lease over; a member whose upstream is another chain
than the group's never joins.

Every member lists in Redis the sub-accounts it trades on; the leader subscribes those of
the live members and shares their accounts like the markets, and, while another member
trades, its blockhash and priority fee.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Collection, Coroutine
from contextlib import suppress
from typing import Any, Literal

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from solders.hash import Hash

from driftshare import _metrics as metrics
from driftshare._data.ledger import AccountLedger
from driftshare._fleet._follower import Follower
from driftshare._fleet._publisher import Publisher
from driftshare._fleet._records import (
    MAX_PAIRS,
    Chain,
    Pair,
    RecordError,
    Signer,
    TxMessage,
    decode_pairs,
    encode_pairs,
)
from driftshare._fleet._store import FleetStore, OtherChain, StoredMember
from driftshare._fleet._txshare import SharedPath, TxSharer
from driftshare._tasks import cancel_all
from driftshare._tx.blockhash import Blockhash
from driftshare._tx.path import TxShare
from driftshare.config import Settings, redact_url

__all__ = ["FleetMember", "Role", "standalone_stats"]

log = logging.getLogger(__name__)

Role = Literal["leader", "follower", "standalone"]
_ROLES: tuple[Role, ...] = ("leader", "follower", "standalone")
_TICKS_PER_LEASE = 6
"""Lease checks per lease period: a dead leader is replaced within about 7/6 of a lease."""
_FORGET_AFTER_LEASES = 10
"""A member silent for this many leases is dropped from the member list; the group's chain
is forgotten this long after its last leader."""
_HANDOVER_AFTER_LEASES = 2
"""A leader whose upstream has not answered for this many leases (counted from
``DRIFT_STALE_AFTER_S`` after it took the lease at the earliest) hands the lease over."""
_CLOSE_TIMEOUT_LEASES = 0.5
"""How long leaving waits for Redis before the lease is left to expire by itself."""
MAX_SHARED_PAIRS = 512
"""The most sub-accounts a leader shares: their accounts (a User each, a UserStats per
authority) and Drift's markets stay within a follower's ``MAX_ACCOUNTS``."""


def standalone_stats() -> dict[str, Any]:
    """The ``fleet`` stats of a process that is in no fleet."""
    return {"role": "standalone", "refused": None, "epoch": None, "leader": None, "members": []}


class FleetMember:
    """Election, publishing and following for one shared client of ``network``."""

    def __init__(
        self,
        settings: Settings,
        chain: Chain,
        ledger: AccountLedger,
        on_change: Callable[[], None],
        *,
        data_flows: Callable[[], bool] = lambda: True,
        subscribed: Callable[[], Collection[str] | None] = lambda: None,
        pairs: Callable[[], Collection[Pair]] = tuple,
        share_pairs: Callable[[frozenset[Pair]], None] = lambda _: None,
        tx: SharedPath | None = None,
    ) -> None:
        """``chain``: what this member's upstream serves; ``data_flows``: whether its own
        upstream data is current (asked while leading); ``subscribed``: the accounts its
        upstream subscription covers (None before there is one); ``pairs``: the
        sub-accounts this member trades on; ``share_pairs``: told, while leading, every
        live member's; ``tx``: the transaction path whose blockhash and fee a leader
        shares and a follower adopts."""
        assert settings.share_url is not None
        network = chain.network
        self.settings = settings
        self.network = network
        self.group = settings.share_group
        self.ledger = ledger
        self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.references = 0
        self.role: Role = "standalone"
        self.epoch: int | None = None
        self.leader: str | None = None
        self.fallback = False
        """Standalone because Redis has been unreachable for ``share_fallback_s``."""
        self.refused: str | None = None
        """Why this member did not join (its upstream is another chain than the group's)."""
        self.chain = chain
        self._on_change = on_change
        self._data_flows = data_flows
        self._subscribed = subscribed
        self._pairs = pairs
        self._share_pairs = share_pairs
        self._tx = tx
        self.shared_pairs: frozenset[Pair] = frozenset()
        """While leading: every live member's sub-accounts, shared."""
        self._logged: set[str] = set()
        self._pruned_epoch: int | None = None
        self._stale_since: float | None = None
        self._led_at = 0.0
        self._rest_until = 0.0
        """After handing the lease over, no bid for it before this (``time.monotonic()``)."""
        self._lease_s = settings.share_lease_s
        self._token: str | None = None
        self._members: list[StoredMember] = []
        self._failing_since: float | None = None
        self._decided = asyncio.Event()
        secret = settings.share_secret
        signer = Signer(secret.get_secret_value().encode() if secret else None, self.group, chain)
        # No retries inside redis-py: the loop below is the retry, at its own pace.
        options: dict[str, Any] = {
            "socket_connect_timeout": self._lease_s / 2,
            "retry": Retry(NoBackoff(), 0),
        }
        self._redis = Redis.from_url(
            settings.share_url, socket_timeout=self._lease_s / 2, **options
        )
        # The channel's connection waits for messages as long as none come: no read timeout
        # (the follower pings it when it is quiet).
        self._channel_redis = Redis.from_url(settings.share_url, socket_timeout=None, **options)
        identity = json.dumps([chain.genesis_hash, chain.program_id])
        self._store = FleetStore(self._redis, network, self.group, identity)
        channel_store = FleetStore(self._channel_redis, network, self.group, identity)
        self._signer = signer
        self._publisher = Publisher(self._store, signer, self.id, network, self._fenced)
        self._tx_sharer = (
            None if tx is None else TxSharer(self._store, signer, self.id, tx, self._fenced)
        )
        self.follower = Follower(
            channel_store,
            signer,
            ledger,
            network,
            silence_s=self._lease_s,
            stale_after_s=settings.stale_after_s,
            on_tx=self._adopt_tx,
        )
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
        """Leave the fleet: stop publishing and following, free the lease for another.

        Never raises and never waits on Redis for long: with Redis away or paused the lease
        expires and the member entry ages out by themselves.
        """
        self._closing = True
        task, self._task = self._task, None
        await cancel_all([task])
        await self._publisher.stop()
        if self._tx_sharer is not None:
            await self._tx_sharer.stop()
        await self._stop_following()
        token, self._token = self._token, None
        await _bounded(self._leave(token), self._lease_s * _CLOSE_TIMEOUT_LEASES)
        for redis in (self._redis, self._channel_redis):
            await _bounded(redis.aclose(), self._lease_s * _CLOSE_TIMEOUT_LEASES)

    async def _leave(self, token: str | None) -> None:
        if token is not None:
            await self._store.release(token)
        await self._store.leave(self.id)

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        interval = self._lease_s / _TICKS_PER_LEASE
        while self.refused is None:
            try:
                await self._tick()
            except Exception as exc:  # Redis away or garbage in it: a failed round
                await self._failed(exc)
            self._decided.set()
            self._wake.clear()
            with suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()

    async def _tick(self) -> None:
        store = self._store
        chain_ttl_s = self._lease_s * _FORGET_AFTER_LEASES
        if self._token is not None and not await store.renew(
            self._token, self._lease_s, chain_ttl_s
        ):
            log.warning("fleet lease of %s lost (expired or Redis emptied)", self.id)
            await self._lose_lead()
        if self._token is not None and self._upstream_dead():
            await self._hand_over()
        if self._token is not None and self._pruned_epoch != self.epoch:
            await self._prune(self._token)
        if self._token is None:
            epoch = 0
            if time.monotonic() >= self._rest_until:
                try:
                    epoch = await store.acquire(self.id, self._lease_s, chain_ttl_s)
                except OtherChain as exc:
                    await self._refuse(exc.group_chain)
                    return
                epoch = epoch or await self._lost_answer()
            if epoch:
                await self._lead(epoch)
            elif self.role != "follower":
                self._set_role("follower")
        # The lease is settled: a failure from here on is no reason to change roles.
        self._failing_since = None
        if self.role == "follower" and self._follow_task is not None and self._follow_task.done():
            self._follow_task = None  # ended by something unforeseen: follow again
            self._set_role("follower")
        holder = await store.leader()
        self.leader = holder[0] if holder else None
        if holder is not None:
            self.epoch = holder[1]
        own = self._own_pairs()
        self._members = await store.announce(
            StoredMember(
                self.id, self.role, socket.gethostname(), os.getpid(), self.references, time.time()
            ),
            self._lease_s * _FORGET_AFTER_LEASES,
            encode_pairs(self.id, own, self._signer) if own else None,
        )
        if self._token is not None:
            await self._gather_pairs()

    def _own_pairs(self) -> list[Pair]:
        """The sub-accounts this member trades on, at most :data:`MAX_PAIRS` of them."""
        own = sorted(self._pairs())
        if len(own) > MAX_PAIRS:
            self._log_once(
                f"this member trades on {len(own)} sub-accounts: the fleet shares {MAX_PAIRS} "
                "of them, the others' reads stay stale"
            )
        return own[:MAX_PAIRS]

    async def _gather_pairs(self) -> None:
        """While leading: share every live member's sub-accounts. Lists of members that
        left, and lists that are not valid (garbled, too long, not signed), are dropped."""
        now = time.time()
        known = {m.id: self._listed_role(m, now) != "gone" for m in self._members}
        wanted: set[Pair] = set()
        others_trade = False
        dropped: list[str] = []
        async for member, raw in self._store.pairs():
            if member not in known:
                dropped.append(member)  # it left, or is forgotten
                continue
            try:
                if raw is None:
                    raise RecordError("too large")
                pairs = decode_pairs(raw, member, self._signer)
            except RecordError as exc:
                self._log_once(f"dropped a member's list of sub-accounts from Redis: {exc}")
                dropped.append(member)
                continue
            if known[member]:
                wanted |= pairs
                others_trade = others_trade or (member != self.id and bool(pairs))
        await self._store.drop_pairs(dropped)
        if len(wanted) > MAX_SHARED_PAIRS:
            self._log_once(
                f"the fleet's members trade on more than {MAX_SHARED_PAIRS} sub-accounts"
            )
            wanted = set(sorted(wanted)[:MAX_SHARED_PAIRS])
        shared = frozenset(wanted)
        if not shared >= self.shared_pairs:
            self._pruned_epoch = None  # drop the accounts no longer shared from Redis too
        self.shared_pairs = shared
        self._share_pairs(shared)
        if self._tx_sharer is not None:
            # A leader trading alone refreshes its blockhash when it sends, as on its own.
            self._tx_sharer.want(others_trade)

    def _log_once(self, message: str) -> None:
        # Once per message: a garbled entry rewritten every tick must not flood the log.
        if message not in self._logged:
            self._logged.add(message)
            log.warning("fleet: %s", message)

    def _adopt_tx(self, message: TxMessage, fetched_at: float, fee_at: float | None) -> None:
        """A follower signs with the leader's blockhash and fee."""
        if self._tx is None:
            return
        blockhash = Blockhash(
            Hash.from_string(message.blockhash),
            message.last_valid_block_height,
            message.slot,
            fetched_at,
        )
        self._tx.adopt(TxShare(blockhash, message.block_height, message.fee, fee_at))

    async def _lost_answer(self) -> int:
        """The epoch of a take-over that Redis carried out but whose answer was lost (it
        timed out, as after a pause), else 0: left alone, nobody would lead until it
        expired."""
        holder = await self._store.leader()
        return holder[1] if holder is not None and holder[0] == self.id else 0

    def _upstream_dead(self) -> bool:
        """Whether this leader's own data has not flowed for the hand-over bound."""
        now = time.monotonic()
        if self._data_flows() or now - self._led_at < self.settings.stale_after_s:
            # A new leader has DRIFT_STALE_AFTER_S to subscribe before its silence counts.
            self._stale_since = None
        elif self._stale_since is None:
            self._stale_since = now
        bound = self._lease_s * _HANDOVER_AFTER_LEASES
        return self._stale_since is not None and now - self._stale_since > bound

    async def _prune(self, token: str) -> None:
        """Once per lease, once subscribed: drop what Redis holds of accounts this leader
        does not subscribe to (a market no longer configured, made-up accounts), so a
        joining follower neither loads nor counts them."""
        keep = self._subscribed()
        if keep is None:
            return
        dropped = await self._store.prune(token, keep)
        self._pruned_epoch = self.epoch
        if dropped:
            log.info("fleet: dropped %d accounts no longer subscribed from Redis", dropped)

    async def _hand_over(self) -> None:
        """Free the lease for a member whose upstream may work, and follow meanwhile."""
        log.warning(
            "fleet %s/%s: %s has had no current data for %.0fs: hands the lease over",
            self.network,
            self.group,
            self.id,
            time.monotonic() - (self._stale_since or 0.0),
        )
        token = self._token
        await self._lose_lead()
        if token is not None:
            await self._store.release(token)
        # Another member bids first; if none does, this one takes it back after the rest.
        self._rest_until = time.monotonic() + self._lease_s * _HANDOVER_AFTER_LEASES
        self._set_role("follower")

    async def _refuse(self, group_chain: str) -> None:
        """This member's upstream is another chain than the group's: stay out, say so once."""
        self.refused = (
            f"this member's upstream is another chain ({_describe(self._store.chain)}) than "
            f"fleet {self.network}/{self.group}'s ({_describe(group_chain)}): "
            "not joining; it serves its own upstream alone"
        )
        log.error("fleet: %s", self.refused)
        await self._stop_following()
        self._set_role("standalone")
        self._decided.set()
        with suppress(RedisError, OSError):
            await self._store.leave(self.id)

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
        self._stale_since = None
        self._led_at = time.monotonic()
        self.epoch = epoch
        self.leader = self.id
        self.fallback = False
        log.info("fleet %s/%s: %s leads with epoch %d", self.network, self.group, self.id, epoch)
        await self._stop_following()
        self._set_role("leader")
        self._publisher.lead(self.ledger, self._token, epoch)
        if self._tx_sharer is not None:
            self._tx_sharer.lead(self._token, epoch)

    async def _lose_lead(self) -> None:
        self._token = None
        self.shared_pairs = frozenset()
        await self._publisher.stop()
        if self._tx_sharer is not None:
            await self._tx_sharer.stop()

    def _fenced(self) -> None:
        # The publisher found its epoch refused: follow now instead of at the next tick.
        self._token = None
        self.shared_pairs = frozenset()
        self._wake.set()

    def _set_role(self, role: Role) -> None:
        if role == "follower":
            self.fallback = False
            # No upstream reads from now on: the chain's slot it knew would only grow old.
            self.ledger.observe_chain_slot(None)
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
            "refused": self.refused,
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
            "pruned": self.role == "leader" and self._pruned_epoch == self.epoch,
            "shared_sub_accounts": len(self.shared_pairs),
            "blockhashes_shared": 0 if self._tx_sharer is None else self._tx_sharer.shared,
            "members": [
                {
                    "id": m.id,
                    "role": self._listed_role(m, now),
                    "host": m.host,
                    "pid": m.pid,
                    "references": m.references,
                    "last_seen_age_s": round(max(0.0, now - m.seen_at), 3),
                }
                for m in self._members
            ],
        }

    def _listed_role(self, member: StoredMember, now: float) -> str:
        """A member's role as listed: ``gone`` once it has missed a lease period, or when it
        says it leads but the lease has moved on (it died leading)."""
        if now - member.seen_at > self._lease_s:
            return "gone"
        if member.role == "leader" and self.leader is not None and member.id != self.leader:
            return "gone"
        return member.role


async def _bounded(step: Coroutine[Any, Any, Any], timeout_s: float) -> None:
    """Run one step of leaving; whatever it raises or however long it hangs, go on."""
    try:
        async with asyncio.timeout(timeout_s):
            await step
    except Exception as exc:  # leaving is best effort: Redis expires what is left
        log.debug("fleet: leaving step failed: %r", exc)


def _describe(identity: str) -> str:
    """A chain identity as :class:`FleetStore` keeps it (it may be another member's)."""
    try:
        genesis, program = json.loads(identity)
        return f"genesis {genesis}, program {program}"
    except (ValueError, TypeError):
        return "unreadable"
