"""The fleet's Redis layout and the Lua scripts that make leases and writes atomic.

Keys of a group (``driftshare:<network>:<group>:``): ``lease`` (``member|epoch``, with a TTL),
``epoch`` (the INCR fencing counter), ``records`` and ``slots`` (each account's newest
message and its slot), ``confirms`` (each account's newest confirmation), ``members``
(member id → JSON of who it is), ``pairs`` (member id → the sub-accounts it trades on),
``tx`` (the leader's blockhash and fee), ``chain`` (the group's genesis hash and program id)
and the pub/sub channel ``updates``. No secret goes into a
name.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import math
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from driftshare._fleet._records import MAX_MESSAGE_BYTES, MAX_PAIRS_BYTES, Message
from driftshare._tasks import cancel_all

__all__ = [
    "NO_CEILING",
    "FencedOut",
    "FleetStore",
    "OtherChain",
    "Outgoing",
    "PublishStream",
    "StoredMember",
]

# Take the lease if nobody holds it; the epoch counter fences out every earlier holder.
# ARGV: member, lease ms, the member's chain, how long the chain outlives its last leader.
# A member of another chain than the group's (while the group lives) is refused: -1.
# KEYS[4..]: what the group keeps of its chain (records, confirmations, blockhash). Once the
# group's chain is forgotten they may be another chain's (a restarted simulator's, whose
# slots start over and would be outranked by the old ones): the new leader starts without.
_ACQUIRE = """
local chain = redis.call('GET', KEYS[3])
if chain and chain ~= ARGV[3] then
  return -1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local epoch = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. '|' .. epoch, 'PX', ARGV[2])
  if not chain then
    redis.call('DEL', unpack(KEYS, 4))
  end
  redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
  return epoch
end
return 0
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
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

# ARGV: token, channel, ceiling, then (type, pubkey, slot, digest, message) per
# update. The same rules as AccountLedger's: a record replaces the stored one at a newer
# slot, or at the same slot with other data; a confirmation is kept only when it names the
# stored record's data (its digest), at or after its slot, and is newer than the stored
# confirmation. A stored
# slot past ``ceiling`` (the chain's slot plus a margin) is impossible: it counts as none.
# Only what is kept is published; a token that is not the current lease writes nothing.
_PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
local ceiling = tonumber(ARGV[3])
local kept = 0
for i = 4, #ARGV, 5 do
  local kind, pubkey, slot = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local digest, message = ARGV[i + 3], ARGV[i + 4]
  local stored = tonumber(redis.call('HGET', KEYS[3], pubkey) or '')
  if stored == nil or stored > ceiling then
    stored = -1
  end
  local stored_digest = redis.call('HGET', KEYS[4], pubkey)
  local keep
  if kind == 'r' then
    keep = slot > stored or (slot == stored and stored_digest ~= digest)
    if keep then
      redis.call('HSET', KEYS[3], pubkey, ARGV[i + 2])
      redis.call('HSET', KEYS[4], pubkey, digest)
      redis.call('HSET', KEYS[2], pubkey, message)
      redis.call('HDEL', KEYS[5], pubkey)
      redis.call('HDEL', KEYS[6], pubkey)
    end
  else
    local confirmed = tonumber(redis.call('HGET', KEYS[5], pubkey) or '') or -1
    keep = digest == stored_digest and slot >= stored and slot > confirmed
      and slot <= ceiling
    if keep then
      redis.call('HSET', KEYS[5], pubkey, ARGV[i + 2])
      redis.call('HSET', KEYS[6], pubkey, message)
    end
  end
  if keep then
    redis.call('PUBLISH', ARGV[2], message)
    kept = kept + 1
  end
end
return kept
"""

# ARGV: token, then every account the leader subscribes to: every other account's record,
# confirmation and slots are dropped. How many were dropped; -1 for a stale token.
_PRUNE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
local keep = {}
for i = 2, #ARGV do
  keep[ARGV[i]] = true
end
local dropped = 0
for _, pubkey in ipairs(redis.call('HKEYS', KEYS[2])) do
  if not keep[pubkey] then
    for k = 2, #KEYS do
      redis.call('HDEL', KEYS[k], pubkey)
    end
    dropped = dropped + 1
  end
end
return dropped
"""

# ARGV: token, channel, message: the leader's blockhash and fee, kept and published.
_PUBLISH_TX = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""

# A string value, or false (nil to the client) when longer than ARGV[1] bytes.
_GET_BOUNDED = """
local value = redis.call('GET', KEYS[1])
if value and #value > tonumber(ARGV[1]) then
  return false
end
return value
"""

# One HSCAN page: the cursor, then field and value pairs, each value longer than ARGV[3]
# bytes replaced by false (nil to the client): whoever can write to Redis must not make a
# reader download a huge value.
_SCAN = """
local page = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local found = {page[1]}
local limit = tonumber(ARGV[3])
for i = 1, #page[2], 2 do
  local value = page[2][i + 1]
  found[#found + 1] = page[2][i]
  if #value <= limit then
    found[#found + 1] = value
  else
    found[#found + 1] = false
  end
end
return found
"""

_SCAN_PAGE = 512
"""Hash fields asked for per HSCAN call."""
_MAX_MEMBER_BYTES = 4096
"""A member entry is a few hundred bytes; a longer one is garbage, skipped unread."""
NO_CEILING = 1 << 53
"""The publish ceiling while the chain's slot is unknown: Lua's numbers are exact below it."""


class FencedOut(Exception):
    """The member's lease is gone or superseded: its writes were refused."""


class OtherChain(Exception):
    """The group shares another chain than this member's upstream."""

    def __init__(self, group_chain: str) -> None:
        super().__init__(group_chain)
        self.group_chain = group_chain


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message for :meth:`FleetStore.publish`: what Lua needs to know of it, and its text."""

    type: str
    pubkey: str
    slot: int
    digest: str
    """Of the data the message carries or confirms."""
    message: str

    @classmethod
    def of(cls, message: Message, text: str) -> Outgoing:
        """``message``, encoded as ``text``."""
        return cls(message.type, message.pubkey, message.slot, message.data_digest, text)


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
    """One group's keys in one Redis, through redis-py's asyncio client.

    ``chain`` identifies the chain this member's upstream serves (genesis hash and program
    id): the group keeps the first leader's while any member of it lives.
    """

    def __init__(self, redis: Redis, network: str, group: str, chain: str = "") -> None:
        self.redis = redis
        self.chain = chain
        prefix = f"driftshare:{network}:{group}:"
        self.channel = prefix + "updates"
        self._lease = prefix + "lease"
        self._epoch = prefix + "epoch"
        self._chain = prefix + "chain"
        self._records = prefix + "records"
        self._slots = prefix + "slots"
        self._digests = prefix + "digests"
        self._confirm_slots = prefix + "confirm-slots"
        self._confirms = prefix + "confirms"
        self._accounts = [
            self._records,
            self._slots,
            self._digests,
            self._confirm_slots,
            self._confirms,
        ]
        """The hashes keyed by account: records and confirmations, with their slots and data."""
        self._members = prefix + "members"
        self._pairs = prefix + "pairs"
        self._tx = prefix + "tx"
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._publish = redis.register_script(_PUBLISH)
        self._scan_script = redis.register_script(_SCAN)
        self._prune = redis.register_script(_PRUNE)
        self._publish_tx = redis.register_script(_PUBLISH_TX)
        self._get_bounded = redis.register_script(_GET_BOUNDED)

    async def acquire(self, member: str, lease_s: float, chain_ttl_s: float) -> int:
        """The new epoch if ``member`` took the free lease, else 0.

        :class:`OtherChain` when the group shares another chain than :attr:`chain`. A member
        taking the lease of a group that has forgotten its chain drops what Redis kept.
        """
        args: list[str | int] = [member, _ms(lease_s), self.chain, _ms(chain_ttl_s)]
        keys = [self._lease, self._epoch, self._chain, *self._accounts, self._tx]
        epoch = int(await self._acquire(keys=keys, args=args))
        if epoch < 0:
            raise OtherChain(_text(await self.redis.get(self._chain) or b""))
        return epoch

    async def renew(self, token: str, lease_s: float, chain_ttl_s: float) -> bool:
        """Extend the lease held as ``token`` (``member|epoch``); False if it is not held."""
        args: list[str | int] = [token, _ms(lease_s), _ms(chain_ttl_s)]
        return bool(await self._renew(keys=[self._lease, self._chain], args=args))

    async def release(self, token: str) -> None:
        await self._release(keys=[self._lease], args=[token])

    async def leader(self) -> tuple[str, int] | None:
        """The current lease holder and its epoch, or None."""
        value = await self.redis.get(self._lease)
        if value is None:
            return None
        member, _, epoch = _text(value).rpartition("|")
        return (member, int(epoch)) if epoch.isascii() and epoch.isdigit() else None

    async def publish(
        self, token: str, updates: Sequence[Outgoing], ceiling: int = NO_CEILING
    ) -> int:
        """Store and publish ``updates`` fenced by ``token``; how many were kept.

        :class:`FencedOut` when ``token`` no longer holds the lease.
        """
        keys, args = self._publish_call(token, updates, ceiling)
        return _kept(await self._publish(keys=keys, args=args), token)

    def _publish_call(
        self, token: str, updates: Sequence[Outgoing], ceiling: int
    ) -> tuple[list[str], list[Any]]:
        args: list[Any] = [token, self.channel, ceiling]
        for u in updates:
            args += [u.type, u.pubkey, u.slot, u.digest, u.message]
        return [self._lease, *self._accounts], args

    async def prune(self, token: str, keep: Collection[str]) -> int:
        """Drop every stored account but ``keep`` (fenced by ``token``); how many went."""
        keys = [self._lease, *self._accounts]
        return _kept(await self._prune(keys=keys, args=[token, *keep]), token)

    async def records(self) -> AsyncIterator[bytes | None]:
        """Every stored record (raw, untrusted; None for one too large to read), by pages."""
        async for _, value in self._scan(self._records, MAX_MESSAGE_BYTES):
            yield value

    async def confirmations(self) -> AsyncIterator[bytes | None]:
        """Every stored confirmation, like :meth:`records`."""
        async for _, value in self._scan(self._confirms, MAX_MESSAGE_BYTES):
            yield value

    async def publish_tx(self, token: str, message: str) -> None:
        """Keep and publish the leader's blockhash and fee, fenced by ``token``.

        :class:`FencedOut` when ``token`` no longer holds the lease.
        """
        keys = [self._lease, self._tx]
        _kept(await self._publish_tx(keys=keys, args=[token, self.channel, message]), token)

    async def tx(self) -> bytes | None:
        """The stored blockhash and fee (raw, untrusted; None if none, or too large)."""
        found: bytes | None = await self._get_bounded(keys=[self._tx], args=[MAX_MESSAGE_BYTES])
        return found

    async def pairs(self) -> AsyncIterator[tuple[str, bytes | None]]:
        """Every member's stored list of sub-accounts (raw, untrusted; None for one too
        large to read), by member id."""
        async for field, value in self._scan(self._pairs, MAX_PAIRS_BYTES):
            yield _text(field), value

    async def drop_pairs(self, member_ids: Collection[str]) -> None:
        """Forget the lists of sub-accounts of ``member_ids``."""
        if member_ids:
            await self.redis.hdel(self._pairs, *member_ids)

    async def _scan(self, key: str, limit: int) -> AsyncIterator[tuple[bytes, bytes | None]]:
        # Paged, not read whole, and each value checked for size in Redis: a hash grown by
        # whoever can write to Redis costs a reader one bounded page at a time. What
        # changes meanwhile also arrives on the channel.
        cursor: bytes | int = 0
        while True:
            page = await self._scan_script(keys=[key], args=[cursor, _SCAN_PAGE, limit])
            cursor = page[0]
            for i in range(1, len(page) - 1, 2):
                yield page[i], page[i + 1]
            if int(cursor) == 0:
                return

    async def announce(
        self, member: StoredMember, forget_after_s: float, pairs: str | None = None
    ) -> list[StoredMember]:
        """Record ``member`` as seen now, with its list of sub-accounts (``pairs``, as
        encoded; None: it trades on none); every other member that is not gone.

        Dropped from Redis: entries silent for ``forget_after_s``, entries dated that far
        in the future (a wrong clock) and entries that are not a member at all.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(self._members, member.id, json.dumps(dataclasses.asdict(member)))
            if pairs is None:
                pipe.hdel(self._pairs, member.id)
            else:
                pipe.hset(self._pairs, member.id, pairs)
            await pipe.execute()
        found, forget = [], []
        async for field, raw in self._scan(self._members, _MAX_MEMBER_BYTES):
            stored = _member(raw)
            if stored is None or abs(member.seen_at - stored.seen_at) > forget_after_s:
                forget.append(field)
            else:
                found.append(stored)
        if forget:
            await self.redis.hdel(self._members, *forget)
        return sorted(found, key=lambda m: m.id)

    async def leave(self, member_id: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hdel(self._members, member_id)
            pipe.hdel(self._pairs, member_id)
            await pipe.execute()


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

    def publish(
        self, token: str, updates: Sequence[Outgoing], ceiling: int = NO_CEILING
    ) -> asyncio.Future[int]:
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
        keys, args = self._store._publish_call(token, updates, ceiling)
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
            # Replies may still be due on it: disconnected, then given back to the pool
            # (which reconnects it when next used), or each reopen would keep a slot.
            with suppress(RedisError, OSError):
                await connection.disconnect(nowait=True)
            # KeyError: a pool reset meanwhile has forgotten it already.
            with suppress(KeyError, RedisError, OSError):
                await self._store.redis.connection_pool.release(connection)


def _kept(reply: Any, token: str) -> int:
    kept = int(reply)
    if kept < 0:
        raise FencedOut(token)
    return kept


def _member(raw: bytes | None) -> StoredMember | None:
    """A member entry read from Redis (untrusted), or None if it is not one."""
    if raw is None or len(raw) > _MAX_MEMBER_BYTES:
        return None
    try:
        member = StoredMember(**json.loads(raw))
    except Exception:  # any malformed entry (nesting past the parser's depth too) is skipped
        return None
    well_typed = (
        all(isinstance(v, str) and len(v) <= 200 for v in (member.id, member.role, member.host))
        and all(type(v) is int for v in (member.pid, member.references))
        and type(member.seen_at) in (int, float)
        and math.isfinite(member.seen_at)
    )
    return member if well_typed else None


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
