"""The sub-accounts fleet members trade on, listed in a real Redis and shared by the leader."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from solders.pubkey import Pubkey

from bench._processes import RedisServer
from conftest import CHAIN, WaitUntil
from driftshare._data.ledger import AccountLedger
from driftshare._fleet import FleetMember
from driftshare._fleet._records import MAX_PAIRS, Pair, Signer, encode_pairs
from driftshare._fleet._store import StoredMember
from driftshare._tasks import cancel_all
from driftshare.config import load_settings

SECRET = "s3cret"


def pair(sub: int = 0) -> Pair:
    return (str(Pubkey.new_unique()), sub)


MemberFactory = Callable[..., FleetMember]


@pytest_asyncio.fixture
async def members(redis_server: RedisServer) -> AsyncIterator[MemberFactory]:
    """``members(*pairs)``: a fleet member trading on ``pairs``."""
    made: list[FleetMember] = []

    def make(*pairs: Pair) -> FleetMember:
        settings = load_settings(share_url=redis_server.url, share_lease_s=0.6, share_secret=SECRET)
        member = FleetMember(settings, CHAIN, AccountLedger(), lambda: None, pairs=lambda: pairs)
        made.append(member)
        return member

    yield make
    for member in made:
        await member.close()


async def test_the_leader_shares_the_live_members_sub_accounts(
    members: MemberFactory, wait_until: WaitUntil
) -> None:
    leader = members()
    await leader.join()
    assert leader.role == "leader"
    p1, p2, p3 = pair(0), pair(1), pair(3)
    leaving, dying, staying = members(p1), members(p2), members(p3)
    for member in (leaving, dying, staying):
        await member.join()
    await wait_until(lambda: leader.shared_pairs == {p1, p2, p3})
    await leaving.close()
    await wait_until(lambda: leader.shared_pairs == {p2, p3})
    # Killed: it stops announcing itself, and its list counts no more once its last
    # announcement is a lease old.
    await cancel_all([dying._task, dying._follow_task])
    await wait_until(lambda: leader.shared_pairs == {p3})
    # The next leader shares every published list.
    await leader.close()
    await wait_until(lambda: staying.role == "leader")
    await wait_until(lambda: staying.shared_pairs == {p3})


async def test_forged_garbled_and_oversized_lists_are_dropped(
    members: MemberFactory, wait_until: WaitUntil, caplog: pytest.LogCaptureFixture
) -> None:
    leader = members()
    await leader.join()
    honest = pair()
    member = members(honest)
    await member.join()
    await wait_until(lambda: leader.shared_pairs == {honest})
    store = leader._store
    signer = Signer(SECRET.encode(), "default", CHAIN)
    forger = Signer(b"not the secret", "default", CHAIN)
    too_many = [pair(i) for i in range(MAX_PAIRS + 1)]
    lists = {
        "forged": encode_pairs("forged", [pair()], forger),
        "too-many": encode_pairs("too-many", too_many, signer),
        "too-large": "x" * 10_000,
        "garbled": "not a list",
        "bad-key": encode_pairs("bad-key", [("not a key", 0)], signer),
        "moved": encode_pairs("other", [pair()], signer),  # another member's, signed
    }
    # Made-up members that look alive (member entries are not signed), each with its list,
    # and a list of no member at all.
    seen_at = time.time() + 3.0
    for name, text in lists.items():
        ghost = StoredMember(name, "follower", "h", 1, 1, seen_at)
        await store.redis.hset(store._members, name, json.dumps(dataclasses.asdict(ghost)))
        await store.redis.hset(store._pairs, name, text)
    await store.redis.hset(store._pairs, "nobody", encode_pairs("nobody", [pair()], signer))

    async def dropped() -> bool:
        return set(await store.redis.hkeys(store._pairs)) == {member.id.encode()}

    with caplog.at_level(logging.WARNING, logger="driftshare._fleet._member"):
        await wait_until(dropped)
        assert leader.shared_pairs == {honest}
        # Written again: dropped again, without another log line.
        await store.redis.hset(store._pairs, "garbled", lists["garbled"])
        await wait_until(dropped)
    lines = [r.getMessage() for r in caplog.records if "list of sub-accounts" in r.getMessage()]
    assert len(lines) == len(set(lines)) == 6
    assert leader.shared_pairs == {honest}
