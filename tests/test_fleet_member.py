"""FleetMember in one process against a real Redis: election, publishing, following, fallback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from redis.exceptions import RedisError
from solders.pubkey import Pubkey

from bench._processes import RedisServer
from conftest import WaitUntil, eventually, last_values
from driftshare._fleet import FleetMember
from driftshare._fleet._follower import MAX_ACCOUNTS
from driftshare._fleet._records import Message, Signer, decode, encode
from driftshare._fleet._store import Outgoing
from driftshare._ledger import AccountLedger, AccountRecord
from driftshare._metrics import REGISTRY
from driftshare.config import load_settings

PUBKEY = str(Pubkey.new_unique())
STATE = AccountRecord(str(Pubkey.new_unique()), "state", 1, b"state")


async def stored(
    member: FleetMember, condition: Callable[[list[bytes], list[bytes]], bool]
) -> tuple[list[bytes], list[bytes]]:
    """Redis's last values once ``condition`` holds for them (10 s deadline)."""
    found: tuple[list[bytes], list[bytes]] = ([], [])

    async def holds() -> bool:
        nonlocal found
        try:
            found = await last_values(member._store)
        except RedisError:  # a pooled connection from before a restart
            found = ([], [])
        return condition(*found)

    await eventually(holds, "Redis holding what was expected")
    return found


MemberFactory = Callable[..., FleetMember]


async def following(members: MemberFactory, **options: object) -> tuple[FleetMember, FleetMember]:
    """A leader holding the State account and a follower that has loaded it."""
    leader = members(**options)
    await leader.join()
    leader.ledger.apply(STATE)
    follower = members(**options)
    await follower.join()
    await asyncio.wait_for(follower.wait_followed(), 5)
    return leader, follower


@pytest_asyncio.fixture
async def members(redis_server: RedisServer) -> AsyncIterator[MemberFactory]:
    made: list[FleetMember] = []

    def make(**overrides: object) -> FleetMember:
        options = {"share_url": redis_server.url, "share_lease_s": 0.6, "share_fallback_s": 1.0}
        settings = load_settings(**{**options, **overrides})
        member = FleetMember(settings, "mainnet", AccountLedger(), lambda: None)
        made.append(member)
        return member

    yield make
    for member in made:
        await member.close()


async def test_exactly_one_leader_and_a_takeover_when_it_leaves(
    members: MemberFactory, wait_until: WaitUntil
) -> None:
    trio = [members() for _ in range(3)]
    await asyncio.gather(*(m.join() for m in trio))
    await wait_until(lambda: all(m.leader is not None for m in trio))
    assert sorted(m.role for m in trio) == ["follower", "follower", "leader"]
    leader = next(m for m in trio if m.role == "leader")
    assert {m.leader for m in trio} == {leader.id}
    await wait_until(lambda: all(len(m.stats()["members"]) == 3 for m in trio))
    await leader.close()
    rest = [m for m in trio if m is not leader]
    await wait_until(lambda: sorted(m.role for m in rest) == ["follower", "leader"])
    assert max(m.epoch or 0 for m in rest) == 2


async def test_followers_get_last_values_then_updates_and_confirmations(
    members: MemberFactory,
    wait_until: WaitUntil,
) -> None:
    leader = members()
    await leader.join()
    assert leader.role == "leader"
    leader.ledger.apply(AccountRecord(PUBKEY, "perp", 10, b"a"))
    follower = members()
    await follower.join()
    waiting = asyncio.ensure_future(follower.wait_followed())
    await wait_until(lambda: follower.follower.connected)
    assert not waiting.done()  # no State account yet: a client could not start from this
    leader.ledger.apply(STATE)
    await asyncio.wait_for(waiting, 5)
    assert follower.role == "follower"
    await wait_until(lambda: follower.ledger.get(PUBKEY) is not None)
    leader.ledger.apply(AccountRecord(PUBKEY, "perp", 11, b"b"))
    await wait_until(lambda: follower.ledger.get(PUBKEY).record.data == b"b")  # type: ignore[union-attr]
    leader.ledger.confirm(PUBKEY, 15)
    await wait_until(lambda: follower.ledger.get(PUBKEY).confirmed_slot == 15)  # type: ignore[union-attr]
    assert follower.stats()["records_applied"] >= 3


async def test_a_forged_record_is_dropped_and_counted(
    members: MemberFactory, wait_until: WaitUntil, redis_server: RedisServer
) -> None:
    leader, follower = await following(members, share_secret="s3cret")
    # The forger writes straight into the channel, as anyone with Redis access could.
    record = AccountRecord(PUBKEY, "perp", 99, b"false price")
    text = encode(
        Message("r", PUBKEY, 99, time.time(), 1, "x", record), Signer(b"other", "default")
    )
    await follower._store.redis.publish(follower._store.channel, text)
    await wait_until(lambda: follower.follower.rejected == 1)
    assert follower.ledger.get(PUBKEY) is None
    leader.ledger.apply(AccountRecord(PUBKEY, "perp", 100, b"true price"))
    await wait_until(lambda: follower.ledger.get(PUBKEY) is not None)
    assert follower.ledger.get(PUBKEY).record.data == b"true price"  # type: ignore[union-attr]


async def test_without_a_secret_a_follower_holds_a_bounded_number_of_accounts(
    members: MemberFactory, wait_until: WaitUntil
) -> None:
    leader, follower = await following(members)
    # Anyone who can write to Redis publishes records for made-up accounts.
    extra = 10
    async with follower._store.redis.pipeline(transaction=False) as pipe:
        for _ in range(MAX_ACCOUNTS + extra):
            pubkey = str(Pubkey.new_unique())
            record = AccountRecord(pubkey, "oracle", 5, b"made up", "PythPull")
            message = Message("r", pubkey, 5, time.time(), 1, "x", record)
            pipe.publish(follower._store.channel, encode(message, Signer(None, "default")))
        await pipe.execute()
    await wait_until(lambda: follower.follower.rejected == extra + 1)  # STATE was held
    assert len(follower.ledger) == MAX_ACCOUNTS
    # Accounts already held still take updates.
    leader.ledger.apply(AccountRecord(STATE.pubkey, "state", 2, b"newer state"))
    await wait_until(lambda: follower.ledger.get(STATE.pubkey).record.slot == 2)  # type: ignore[union-attr]


async def test_a_follower_joining_a_flooded_redis_holds_a_bounded_number_of_accounts(
    members: MemberFactory, wait_until: WaitUntil
) -> None:
    leader = members()
    await leader.join()
    leader.ledger.apply(STATE)
    await stored(leader, lambda records, _: len(records) == 1)
    # Anyone who can write to Redis fills the stored records with made-up accounts.
    extra = 10
    made_up = {}
    for _ in range(MAX_ACCOUNTS + extra):
        pubkey = str(Pubkey.new_unique())
        record = AccountRecord(pubkey, "oracle", 5, b"made up", "PythPull")
        message = Message("r", pubkey, 5, time.time(), 1, "x", record)
        made_up[pubkey] = encode(message, Signer(None, "default"))
    await leader._store.redis.hset(leader._store._records, mapping=made_up)
    follower = members()
    await follower.join()
    # The stored values are loaded: many of them, so more than the default 10 s may pass.
    await eventually(lambda: follower.follower.connected, within=60, what="flood loaded")
    assert len(follower.ledger) == MAX_ACCOUNTS
    assert follower.follower.rejected in (extra, extra + 1)  # STATE too, if read last


async def test_redis_down_falls_back_and_rejoins(
    members: MemberFactory, wait_until: WaitUntil, redis_server: RedisServer
) -> None:
    leader, follower = members(), members()
    await leader.join()
    await follower.join()
    leader.ledger.apply(AccountRecord(PUBKEY, "perp", 10, b"a"))
    await wait_until(lambda: follower.ledger.get(PUBKEY) is not None)
    redis_server.kill()
    await wait_until(lambda: follower.role == "standalone" and leader.role == "standalone")
    assert follower.fallback
    assert follower.upstream
    redis_server.start()  # empty: the new leader repopulates it
    await wait_until(lambda: sorted(m.role for m in (leader, follower)) == ["follower", "leader"])
    new_leader = leader if leader.role == "leader" else follower
    new_follower = follower if new_leader is leader else leader
    await stored(new_leader, lambda records, _: bool(records))
    new_leader.ledger.apply(AccountRecord(PUBKEY, "perp", 20, b"c"))
    await wait_until(lambda: new_follower.ledger.get(PUBKEY).record.data == b"c")  # type: ignore[union-attr]


async def test_a_superseded_leader_stops_publishing(
    members: MemberFactory, wait_until: WaitUntil
) -> None:
    old = members()
    await old.join()
    assert old.role == "leader"
    # Another member took over while this one was paused: the lease names it, with epoch 2.
    lease = "driftshare:mainnet:default:lease"
    await old._store.redis.set(lease, "other|2", px=60_000)
    await old._store.redis.set("driftshare:mainnet:default:epoch", 2)
    old.ledger.apply(AccountRecord(PUBKEY, "perp", 10, b"from a stale leader"))
    await wait_until(lambda: old.role == "follower")
    assert await last_values(old._store) == ([], [])
    assert old.leader == "other"


async def test_malformed_member_entries_are_skipped(
    members: MemberFactory, wait_until: WaitUntil
) -> None:
    member = members()
    await member.join()
    bad = '{"id": "x", "role": "leader", "host": "h", "pid": "1", "references": 0, "seen_at": 1}'
    await member._store.redis.hset("driftshare:mainnet:default:members", "x", bad)
    await member._store.redis.hset("driftshare:mainnet:default:members", "y", "not json")
    member._wake.set()
    await wait_until(lambda: len(member.stats()["members"]) == 1)
    assert member.stats()["members"][0]["id"] == member.id


async def test_a_follower_is_not_current_until_a_new_leader_publishes(
    members: MemberFactory, wait_until: WaitUntil
) -> None:
    _, follower = await following(members)
    assert not follower.feed_lost
    # A successor took the lease with epoch 2 (as after the leader's death).
    store = follower._store
    await store.redis.set("driftshare:mainnet:default:lease", "successor|2", px=60_000)
    await wait_until(lambda: follower.epoch == 2)
    assert follower.feed_lost  # the new leader has published nothing yet
    record = AccountRecord(PUBKEY, "perp", 50, b"after the failover")
    text = encode(
        Message("r", PUBKEY, 50, time.time(), 2, "successor", record), Signer(None, "default")
    )
    await store.publish("successor|2", [Outgoing("r", PUBKEY, 50, text)])
    await wait_until(lambda: not follower.feed_lost)


async def test_a_new_leader_republishes_records_with_their_confirmations(
    members: MemberFactory, redis_server: RedisServer, wait_until: WaitUntil
) -> None:
    first = members()
    await first.join()
    first.ledger.apply(AccountRecord(PUBKEY, "perp", 10, b"a"))
    first.ledger.confirm(PUBKEY, 30)
    redis_server.restart()  # empty: the lease is gone too
    await wait_until(
        lambda: first.epoch == 1 and first.role == "leader" and first._token is not None
    )
    records, confirms = await stored(first, lambda r, c: bool(r and c))
    signer = Signer(None, "default")
    assert decode(records[0], signer).slot == 10
    assert decode(confirms[0], signer).slot == 30


def _fleet_counter(name: str) -> float:
    return (
        REGISTRY.get_sample_value(f"drift_fleet_records_{name}_total", {"network": "mainnet"})
        or 0.0
    )


async def test_published_and_applied_records_are_counted(
    members: MemberFactory, wait_until: WaitUntil
) -> None:
    leader, follower = await following(members)
    published, applied = _fleet_counter("published"), _fleet_counter("applied")
    leader.ledger.apply(AccountRecord(PUBKEY, "perp", 10, b"a"))
    leader.ledger.confirm(PUBKEY, 11)
    await wait_until(lambda: follower.ledger.get(PUBKEY) is not None)
    await wait_until(lambda: follower.ledger.get(PUBKEY).confirmed_slot == 11)  # type: ignore[union-attr]
    # One record and one confirmation each way (one process holds both counters here).
    await wait_until(lambda: _fleet_counter("published") - published == 2)
    assert _fleet_counter("applied") - applied == 2


async def test_a_followers_data_is_as_old_as_the_leaders(
    members: MemberFactory, wait_until: WaitUntil
) -> None:
    leader, follower = await following(members)
    confirmed_at = time.monotonic() - 20.0  # the leader learnt this slot 20 s ago
    leader.ledger.apply(AccountRecord(PUBKEY, "perp", 10, b"a"), confirmed_at=confirmed_at)
    await wait_until(lambda: follower.ledger.get(PUBKEY) is not None)
    entry = follower.ledger.get(PUBKEY)
    assert entry is not None
    # Not the moment the follower received it: the leader's age, give or take the transit.
    assert time.monotonic() - entry.confirmed_at == pytest.approx(20.0, abs=2.0)
