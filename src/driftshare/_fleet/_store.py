"""The fleet's Redis layout and the Lua scripts that make leases and writes atomic.

Keys of a group (``driftshare:<network>:<group>:``): ``lease`` (``member|epoch``, with a TTL),
``epoch`` (the INCR fencing counter), ``records`` and ``slots`` (each account's newest
message and its slot), ``confirms`` (each account's newest confirmation), ``members``
(member id → JSON of who it is) and the pub/sub channel ``updates``. No secret goes into a
name.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

__all__ = ["FencedOut", "FleetStore", "Outgoing", "StoredMember"]

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
        args: list[Any] = [token, self.channel]
        for update in updates:
            args += [update.type, update.pubkey, update.slot, update.message]
        keys = [self._lease, self._records, self._slots, self._confirm_slots, self._confirms]
        kept = int(await self._publish(keys=keys, args=args))
        if kept < 0:
            raise FencedOut(token)
        return kept

    async def last_values(self) -> tuple[list[bytes], list[bytes]]:
        """Every stored record, then every stored confirmation (raw, untrusted)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hvals(self._records)
            pipe.hvals(self._confirms)
            records, confirms = await pipe.execute()
        return list(records), list(confirms)

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
