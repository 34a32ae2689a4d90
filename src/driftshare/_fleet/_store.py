"""The fleet's Redis layout and the Lua scripts that make leases and writes atomic.

Keys of a group (``driftshare:<network>:<group>:``): ``lease`` (``member|epoch``, with a TTL),
``epoch`` (the INCR fencing counter), ``records`` and ``slots`` (each account's newest
message and its slot), ``confirms`` (each account's newest confirmation), ``members``
(member id → JSON of who it is) and the pub/sub channel ``updates``. No secret goes into a
name.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from driftshare._generation import cancel_all

__all__ = ["FencedOut", "FleetStore", "Outgoing", "PublishStream", "StoredMember"]

# Take the lease if nobody holds it; the epoch counter fences out every earlier holder.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local epoch = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. '|' .. epoch, 'PX', ARGV[2])
  return epoch
end
return 0
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# ARGV: token, channel, then (type, pubkey, slot, message) per update. A record replaces the
# stored one only at a newer slot, a confirmation likewise; only what is kept is published.
# A token that is not the current lease (a stale epoch) writes nothing.
_PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
local kept = 0
for i = 3, #ARGV, 4 do
  local kind, pubkey, slot, message = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  local slots = kind == 'r' and KEYS[3] or KEYS[4]
  local stored = tonumber(redis.call('HGET', slots, pubkey) or '-1')
  if slot > stored then
    redis.call('HSET', slots, pubkey, ARGV[i + 2])
    if kind == 'r' then
      redis.call('HSET', KEYS[2], pubkey, message)
    else
      redis.call('HSET', KEYS[5], pubkey, message)
    end
    redis.call('PUBLISH', ARGV[2], message)
    kept = kept + 1
  end
end
return kept
"""


_SCAN_PAGE = 512
"""Hash fields asked for per HSCAN call."""


class FencedOut(Exception):
    """The member's lease is gone or superseded: its writes were refused."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message for :meth:`FleetStore.publish`."""

    type: str
    pubkey: str
    slot: int
    message: str


@dataclass(frozen=True, slots=True)
class StoredMember:
    """A member as it last described itself."""

    id: str
    role: str
    host: str
    pid: int
    references: int
    seen_at: float


class FleetStore:
    """One group's keys in one Redis, through redis-py's asyncio client."""

    def __init__(self, redis: Redis, network: str, group: str) -> None:
        self.redis = redis
        prefix = f"driftshare:{network}:{group}:"
        self.channel = prefix + "updates"
        self._lease = prefix + "lease"
        self._epoch = prefix + "epoch"
        self._records = prefix + "records"
        self._slots = prefix + "slots"
        self._confirm_slots = prefix + "confirm-slots"
        self._confirms = prefix + "confirms"
        self._members = prefix + "members"
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._publish = redis.register_script(_PUBLISH)

    async def acquire(self, member: str, lease_s: float) -> int:
        """The new epoch if ``member`` took the free lease, else 0."""
        return int(
            await self._acquire(keys=[self._lease, self._epoch], args=[member, _ms(lease_s)])
        )

    async def renew(self, token: str, lease_s: float) -> bool:
        """Extend the lease held as ``token`` (``member|epoch``); False if it is not held."""
        return bool(await self._renew(keys=[self._lease], args=[token, _ms(lease_s)]))

    async def release(self, token: str) -> None:
        await self._release(keys=[self._lease], args=[token])

    async def leader(self) -> tuple[str, int] | None:
        """The current lease holder and its epoch, or None."""
        value = await self.redis.get(self._lease)
        if value is None:
            return None
        member, _, epoch = _text(value).rpartition("|")
        return (member, int(epoch)) if epoch.isascii() and epoch.isdigit() else None

    async def publish(self, token: str, updates: Sequence[Outgoing]) -> int:
        """Store and publish ``updates`` fenced by ``token``; how many were newer than stored.

        :class:`FencedOut` when ``token`` no longer holds the lease.
        """
        keys, args = self._publish_call(token, updates)
        return _kept(await self._publish(keys=keys, args=args), token)

    def _publish_call(self, token: str, updates: Sequence[Outgoing]) -> tuple[list[str], list[Any]]:
        args: list[Any] = [token, self.channel]
        for update in updates:
            args += [update.type, update.pubkey, update.slot, update.message]
        keys = [self._lease, self._records, self._slots, self._confirm_slots, self._confirms]
        return keys, args

    def records(self) -> AsyncIterator[bytes]:
        """Every stored record (raw, untrusted), page by page."""
        return self._scan(self._records)

    def confirmations(self) -> AsyncIterator[bytes]:
        """Every stored confirmation (raw, untrusted), page by page."""
        return self._scan(self._confirms)

    async def _scan(self, key: str) -> AsyncIterator[bytes]:
        # Paged, not read whole: a hash grown by whoever can write to Redis then costs a
        # reader one page at a time. What changes meanwhile also arrives on the channel.
        async for _, value in self.redis.hscan_iter(key, count=_SCAN_PAGE):
            yield value

    async def announce(self, member: StoredMember, forget_after_s: float) -> None:
        """Record ``member`` as seen now; drop members silent for ``forget_after_s``."""
        await self.redis.hset(self._members, member.id, json.dumps(dataclasses.asdict(member)))
        for stored in await self.members():
            if member.seen_at - stored.seen_at > forget_after_s:
                await self.redis.hdel(self._members, stored.id)

    async def leave(self, member_id: str) -> None:
        await self.redis.hdel(self._members, member_id)

    async def members(self) -> list[StoredMember]:
        """Every member that announced itself (malformed entries skipped)."""
        found = []
        for raw in (await self.redis.hgetall(self._members)).values():
            try:
                member = StoredMember(**json.loads(raw))
            except (ValueError, TypeError):
                continue
            if _well_typed(member):
                found.append(member)
        return sorted(found, key=lambda m: m.id)


class PublishStream:
    """One connection of its own on which :meth:`publish` writes at once, without awaiting.

    redis-py sends only from a coroutine, which runs when the event loop next gets to it:
    after a whole burst of WebSocket notifications has been decoded. Writing on the
    connection's stream from the caller puts each update on the wire as it is received.
    One task reads the replies in order. Any failure breaks the stream: every reply still
    due fails, and the owner closes it and opens another.
    """

    def __init__(self, store: FleetStore) -> None:
        self._store = store
        self._connection: AbstractConnection | None = None
        self._waiting: collections.deque[tuple[asyncio.Future[int], str]] = collections.deque()
        self._replies = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.broken = False

    @property
    def ready(self) -> bool:
        return self._connection is not None and not self.broken

    async def open(self) -> None:
        """Connect and load the publish script (a restarted Redis has forgotten it)."""
        await self.close()
        redis = self._store.redis
        await redis.script_load(_PUBLISH)
        pool = redis.connection_pool
        self._connection = connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        self.broken = False
        self._reader = asyncio.create_task(self._read(connection), name="driftshare-fleet-replies")

    def publish(self, token: str, updates: Sequence[Outgoing]) -> asyncio.Future[int]:
        """Write the fenced publish of ``updates`` now; the future gets what
        :meth:`FleetStore.publish` returns or raises. Only while :attr:`ready`."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        connection = self._connection
        # redis-py's send_packed_command writes on this stream too, then awaits the drain.
        writer = None if connection is None else connection._writer
        if connection is None or writer is None or writer.is_closing():
            self.broken = True
            future.set_exception(ConnectionError("the fleet's publish stream is closed"))
            return future
        keys, args = self._store._publish_call(token, updates)
        sha = self._store._publish.sha
        writer.writelines(connection.pack_command("EVALSHA", sha, len(keys), *keys, *args))
        self._waiting.append((future, token))
        self._replies.set()
        return future

    async def _read(self, connection: AbstractConnection) -> None:
        try:
            while True:
                await self._replies.wait()
                self._replies.clear()
                while self._waiting:
                    reply = await connection.read_response()
                    future, token = self._waiting.popleft()
                    if not future.done():
                        try:
                            future.set_result(_kept(reply, token))
                        except FencedOut as exc:
                            future.set_exception(exc)
        except (RedisError, OSError) as exc:
            self.broken = True
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        while self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(exc)

    async def close(self) -> None:
        """Drop the connection; replies still due fail with ConnectionError."""
        connection, self._connection = self._connection, None
        reader, self._reader = self._reader, None
        await cancel_all([reader])
        self._fail(ConnectionError("the fleet's publish stream was closed"))
        if connection is not None:
            # Replies may still be due on it: it is not given back to the pool.
            with suppress(RedisError, OSError):
                await connection.disconnect(nowait=True)


def _kept(reply: Any, token: str) -> int:
    kept = int(reply)
    if kept < 0:
        raise FencedOut(token)
    return kept


def _well_typed(member: StoredMember) -> bool:
    """Whether a member entry read from Redis (untrusted) has the types it claims."""
    return (
        all(isinstance(v, str) and len(v) <= 200 for v in (member.id, member.role, member.host))
        and all(type(v) is int for v in (member.pid, member.references))
        and type(member.seen_at) in (int, float)
    )


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
