"""FleetMember in one process against a real Redis: election, publishing, following, fallback."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.exceptions import RedisError
from solders.hash import Hash
from solders.pubkey import Pubkey

from bench._processes import RedisServer, RedisServerError, TcpProxy, TlsFiles
from conftest import CHAIN, WaitUntil, eventually, last_values
from driftshare._data.ledger import AccountLedger, AccountRecord
from driftshare._fleet import Chain, FleetMember
from driftshare._fleet._follower import MAX_ACCOUNTS, Follower
from driftshare._fleet._publisher import Publisher
from driftshare._fleet._records import (
    MAX_PAIRS,
    Pair,
    Signer,
    TxMessage,
    decode,
    encode,
    encode_pairs,
    encode_tx,
    record_message,
)
from driftshare._fleet._store import FleetStore, Outgoing, StoredMember
from driftshare._fleet._txshare import SharedPath
from driftshare._metrics import REGISTRY
from driftshare._tasks import cancel_all
from driftshare._tx import TransactionPath
from driftshare.config import load_settings
from driftshare.manager import DriftClientManager
from driftshare.sim import Simulator

PUBKEY = str(Pubkey.new_unique())
STATE = AccountRecord(str(Pubkey.new_unique()), "state", 1, b"state")


async def stored(
    member: FleetMember, condition: Callable[[list[bytes], list[bytes]], bool]
) -> tuple[list[bytes], list[bytes]]:
    """Redis's last values once ``condition`` holds for them (10 s deadline)."""
    return await stored_in(member._store, condition)


async def stored_in(
    store: FleetStore, condition: Callable[[list[bytes], list[bytes]], bool]
) -> tuple[list[bytes], list[bytes]]:
    """:func:`stored` for any store."""
    found: tuple[list[bytes], list[bytes]] = ([], [])

    async def holds() -> bool:
        nonlocal found
        try:
            found = await last_values(store)
        except RedisError:  # a pooled connection from before a restart
            found = ([], [])
        return condition(*found)

    await eventually(holds, "Redis holding what was expected")
    return found


MemberFactory = Callable[..., FleetMember]


async def delivered(leader: FleetMember, follower: FleetMember, record: AccountRecord) -> None:
    """``leader`` takes ``record``; wait until ``follower`` holds exactly its data."""
    leader.ledger.apply(record)
    await eventually(lambda: follower.ledger.get(record.pubkey) is not None, "delivered")
    held = follower.ledger.get(record.pubkey)
    assert held is not None
    assert held.record.data == record.data


async def leading(members: MemberFactory) -> FleetMember:
    """A leader whose State account Redis holds."""
    leader = members()
    await leader.join()
    leader.ledger.apply(STATE)
    await stored(leader, lambda records, _: len(records) == 1)
    return leader


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

    def make(
        chain: Chain = CHAIN,
        data_flows: Callable[[], bool] = lambda: True,
        on_change: Callable[[], None] = lambda: None,
        subscribed: Callable[[], Collection[str] | None] = lambda: None,
        *,
        pairs: Collection[Pair] = (),
        tx: SharedPath | None = None,
        **overrides: object,
    ) -> FleetMember:
        options = {"share_url": redis_server.url, "share_lease_s": 0.6, "share_fallback_s": 1.0}
        settings = load_settings(**{**options, **overrides})
        member = FleetMember(
            settings,
            chain,
            AccountLedger(),
            on_change,
            data_flows=data_flows,
            subscribed=subscribed,
            pairs=lambda: pairs,
            tx=tx,
        )
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
    text = encode(record_message(record, time.time(), 1, "x"), Signer(b"other", "default", CHAIN))
    await follower._store.redis.publish(follower._store.channel, text)
    await wait_until(lambda: follower.follower.rejected == 1)
    assert follower.ledger.get(PUBKEY) is None
    await delivered(leader, follower, AccountRecord(PUBKEY, "perp", 100, b"true price"))


async def test_without_a_secret_a_follower_holds_a_bounded_number_of_accounts(
    members: MemberFactory, wait_until: WaitUntil
) -> None:
    # A lease the flood's handling (in this same event loop) cannot starve: roles stay put.
    leader, follower = await following(members, share_lease_s=3.0, share_fallback_s=6.0)
    # Anyone who can write to Redis publishes records for made-up accounts.
    extra = 10
    async with follower._store.redis.pipeline(transaction=False) as pipe:
        for _ in range(MAX_ACCOUNTS + extra):
            pubkey = str(Pubkey.new_unique())
            record = AccountRecord(pubkey, "oracle", 5, b"made up", "PythPull")
            message = record_message(record, time.time(), 1, "x")
            pipe.publish(follower._store.channel, encode(message, Signer(None, "default", CHAIN)))
        await pipe.execute()
    await wait_until(lambda: follower.follower.rejected == extra + 1)  # STATE was held
    assert len(follower.ledger) == MAX_ACCOUNTS
    # Accounts already held still take updates.
    leader.ledger.apply(AccountRecord(STATE.pubkey, "state", 2, b"newer state"))
    await wait_until(lambda: follower.ledger.get(STATE.pubkey).record.slot == 2)  # type: ignore[union-attr]


async def test_a_follower_joining_a_flooded_redis_holds_a_bounded_number_of_accounts(
    members: MemberFactory, wait_until: WaitUntil
) -> None:
    leader = await leading(members)
    # Anyone who can write to Redis fills the stored records with made-up accounts.
    extra = 10
    made_up = {}
    for _ in range(MAX_ACCOUNTS + extra):
        pubkey = str(Pubkey.new_unique())
        record = AccountRecord(pubkey, "oracle", 5, b"made up", "PythPull")
        message = record_message(record, time.time(), 1, "x")
        made_up[pubkey] = encode(message, Signer(None, "default", CHAIN))
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
        message := record_message(record, time.time(), 2, "successor"),
        Signer(None, "default", CHAIN),
    )
    await store.publish("successor|2", [Outgoing.of(message, text)])
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
    signer = Signer(None, "default", CHAIN)
    assert decode(records[0], signer).slot == 10
    assert decode(confirms[0], signer).slot == 30


# -- issue 17: fleet trust ------------------------------------------------------------------

SECRET = "s3cret"
KEYS = "driftshare:mainnet:default:"


async def sentinel(leader: FleetMember, follower: FleetMember, wait_until: WaitUntil) -> None:
    """Publish a record of a new account and wait until ``follower`` holds it: everything
    the leader published before it has reached the follower too (one channel, in order)."""
    pubkey = str(Pubkey.new_unique())
    leader.ledger.apply(AccountRecord(pubkey, "perp", 1, b"sentinel"))
    await wait_until(lambda: follower.ledger.get(pubkey) is not None)


async def test_a_planted_slot_refuses_the_new_data_and_its_confirmations_alike(
    members: MemberFactory, wait_until: WaitUntil
) -> None:
    leader, follower = await following(members, share_secret=SECRET)
    leader.ledger.apply(AccountRecord(PUBKEY, "perp", 10, b"first"))
    await wait_until(lambda: follower.ledger.get(PUBKEY) is not None)
    # Someone with Redis write access but no secret makes every new record for PUBKEY lose.
    await leader._store.redis.hset(KEYS + "slots", PUBKEY, 10**12)
    leader.ledger.apply(AccountRecord(PUBKEY, "perp", 11, b"second"))
    leader.ledger.confirm(PUBKEY, 15)
    await sentinel(leader, follower, wait_until)
    held = follower.ledger.get(PUBKEY)
    assert held is not None
    assert held.record.data == b"first"
    assert held.confirmed_slot == 10  # the confirmation of "second" does not date "first"


async def test_a_planted_slot_past_the_chain_does_not_block_live_data(
    members: MemberFactory, wait_until: WaitUntil
) -> None:
    leader, follower = await following(members, share_secret=SECRET)
    leader.ledger.observe_chain_slot(11)  # its upstream answered: the chain is at slot 11
    await leader._store.redis.hset(KEYS + "slots", PUBKEY, 10**12)
    await delivered(leader, follower, AccountRecord(PUBKEY, "perp", 11, b"live"))


async def test_an_old_signed_record_planted_back_is_not_made_fresh(
    members: MemberFactory, wait_until: WaitUntil
) -> None:
    leader = members(share_secret=SECRET)
    await leader.join()
    leader.ledger.apply(STATE)
    leader.ledger.apply(AccountRecord(PUBKEY, "perp", 10, b"old"))
    records, _ = await stored(leader, lambda r, _: len(r) == 2)
    old = next(r for r in records if b"b2xk" in r)  # base64 of "old"
    leader.ledger.apply(AccountRecord(PUBKEY, "perp", 11, b"new"))
    leader.ledger.confirm(PUBKEY, 20)
    await stored(leader, lambda _, c: any(b'"s":20' in x for x in c))
    await leader._store.redis.hset(KEYS + "records", PUBKEY, old)  # replayed by an attacker
    follower = members(share_secret=SECRET)
    await follower.join()
    await asyncio.wait_for(follower.wait_followed(), 5)
    held = follower.ledger.get(PUBKEY)
    assert held is not None
    assert held.record.data == b"old"
    assert held.confirmed_slot == 10  # not 20: that confirmation names "new"


async def test_a_change_at_the_same_slot_reaches_the_followers(
    members: MemberFactory, wait_until: WaitUntil
) -> None:
    leader, follower = await following(members)
    leader.ledger.apply(AccountRecord(PUBKEY, "perp", 10, b"first"))
    await wait_until(lambda: follower.ledger.get(PUBKEY) is not None)
    leader.ledger.apply(AccountRecord(PUBKEY, "perp", 10, b"second"))  # the ledger takes it
    leader.ledger.confirm(PUBKEY, 12)
    await wait_until(lambda: follower.ledger.get(PUBKEY).confirmed_slot == 12)  # type: ignore[union-attr]
    assert follower.ledger.get(PUBKEY).record.data == b"second"  # type: ignore[union-attr]


def _framed(**fields: object) -> bytes:
    """An unsigned record message of the wire format with ``fields`` changed."""
    message = record_message(AccountRecord(PUBKEY, "perp", 1, b"x"), 1.0, 1, "x")
    raw = json.loads(encode(message, Signer(None, "default", CHAIN)).partition(".")[2])
    text = json.dumps({**raw, **{k: "@" + k for k in fields}})
    for name, value in fields.items():
        text = text.replace(json.dumps("@" + name), str(value))
    return b"." + text.encode()


@pytest.mark.parametrize(
    "garbage",
    [
        b"." + b"[" * 50_000,  # deeper than the JSON parser's recursion
        b"[" * 50_000,
        _framed(w="9" * 400),  # a time no float holds
        _framed(m='"@"').replace(b"@", b"\xff\xfe"),  # not UTF-8
    ],
    ids=["deep", "deep-unframed", "huge-int", "not-utf8"],
)
async def test_no_message_stops_the_feed(
    members: MemberFactory, wait_until: WaitUntil, garbage: bytes
) -> None:
    leader, follower = await following(members)
    await follower._store.redis.publish(follower._store.channel, garbage)
    await wait_until(lambda: follower.follower.rejected == 1)
    await sentinel(leader, follower, wait_until)


async def test_with_a_secret_nothing_unsigned_is_parsed(
    members: MemberFactory, wait_until: WaitUntil, monkeypatch: pytest.MonkeyPatch
) -> None:
    _leader, follower = await following(members, share_secret=SECRET)
    parsed: list[object] = []
    monkeypatch.setattr(json, "loads", parsed.append)  # what decode would parse with
    await follower._store.redis.publish(follower._store.channel, b"." + b"[" * 50_000)
    await wait_until(lambda: follower.follower.rejected == 1)
    assert parsed == []


async def test_the_follow_task_is_supervised(
    members: MemberFactory, wait_until: WaitUntil, monkeypatch: pytest.MonkeyPatch
) -> None:
    leader, follower = await following(members)
    failures = iter([RuntimeError("unforeseen")])

    def apply_once(raw: bytes | str | None) -> bool:
        for exc in failures:
            raise exc
        return Follower.apply(follower.follower, raw)

    monkeypatch.setattr(follower.follower, "apply", apply_once)
    leader.ledger.apply(AccountRecord(PUBKEY, "perp", 10, b"lost with the failure"))
    await sentinel(leader, follower, wait_until)


async def test_a_nested_member_entry_does_not_make_roles_flap(
    members: MemberFactory, wait_until: WaitUntil
) -> None:
    changes: list[str] = []
    member = members(on_change=lambda: changes.append("upstream switched"))
    await member.join()
    assert member.role == "leader"
    changes.clear()
    await member._store.redis.hset(KEYS + "members", "bad", "[" * 50_000)
    # Ticks go on past the fallback time, each one reading the member list: this one's
    # own entry, announced since, shows in it.
    until = time.time() + 2 * member.settings.share_fallback_s
    await wait_until(lambda: any(m.seen_at > until for m in member._members))
    assert member.role == "leader"
    assert not member.fallback
    assert changes == []
    assert not await member._store.redis.hexists(KEYS + "members", "bad")  # pruned


async def test_future_nan_and_garbled_member_entries_are_pruned(
    members: MemberFactory, wait_until: WaitUntil
) -> None:
    member = members()
    await member.join()
    redis, key = member._store.redis, KEYS + "members"
    entry = {"id": "x", "role": "follower", "host": "h", "pid": 1, "references": 0}
    await redis.hset(key, "future", json.dumps({**entry, "id": "future", "seen_at": 1e12}))
    await redis.hset(key, "nan", json.dumps({**entry, "id": "nan", "seen_at": float("nan")}))
    await redis.hset(key, "garbled", "not json")

    async def pruned() -> bool:
        return set(await redis.hkeys(key)) == {member.id.encode()}

    await eventually(pruned, "bad member entries dropped from Redis")
    assert [m["id"] for m in member.stats()["members"]] == [member.id]


async def test_a_dead_leader_is_listed_gone_once_its_lease_has_moved(
    members: MemberFactory, wait_until: WaitUntil
) -> None:
    first = members()
    await first.join()
    second = members()
    await second.join()
    await wait_until(lambda: len(second.stats()["members"]) == 2)
    await cancel_all([first._task])  # it dies: no release, no goodbye
    await first._publisher.stop()
    await wait_until(lambda: second.role == "leader")
    second._wake.set()
    await wait_until(lambda: second.epoch == 2 and second.leader == second.id)
    listed = {m["id"]: m["role"] for m in second.stats()["members"]}
    assert listed[first.id] == "gone"
    assert list(listed.values()).count("leader") <= 1


async def test_a_leader_without_current_data_hands_the_lease_over(
    members: MemberFactory, wait_until: WaitUntil
) -> None:
    upstream_alive = {"first": True}
    first = members(data_flows=lambda: upstream_alive["first"], stale_after_s=0.5)
    await first.join()
    second = members()
    await second.join()
    assert (first.role, second.role) == ("leader", "follower")
    upstream_alive["first"] = False
    await wait_until(lambda: second.role == "leader")
    await wait_until(lambda: first.role == "follower")
    assert second.epoch == 2


async def test_a_member_of_another_chain_refuses_to_join(
    members: MemberFactory, wait_until: WaitUntil, caplog: pytest.LogCaptureFixture
) -> None:
    leader = members()
    await leader.join()
    other = members(chain=dataclasses.replace(CHAIN, genesis_hash="AnotherChainsGenesis"))
    await other.join()
    assert other.role == "standalone"
    assert other.upstream
    assert other.refused is not None
    assert "another chain" in other.refused
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "another chain" in r.message]
    assert len(errors) == 1
    await leader.close()  # even with the lease free, it never bids for it
    await wait_until(lambda: other._task is not None and other._task.done())
    assert await leader._store.redis.get(KEYS + "lease") is None
    assert other.stats()["refused"] == other.refused


async def test_published_counts_only_what_redis_kept(
    members: MemberFactory, wait_until: WaitUntil
) -> None:
    leader = members()
    await leader.join()
    await leader._store.redis.hset(KEYS + "slots", PUBKEY, 100)  # newer data is stored
    leader.ledger.apply(AccountRecord(PUBKEY, "perp", 50, b"refused by Lua"))
    leader.ledger.apply(STATE)
    await stored(leader, lambda records, _: len(records) == 1)
    await wait_until(lambda: leader.stats()["records_published"] >= 1)
    assert leader.stats()["records_published"] == 1


async def test_stored_values_too_large_are_not_downloaded(
    members: MemberFactory, wait_until: WaitUntil
) -> None:
    leader = await leading(members)
    redis = leader._store.redis
    await redis.hset(KEYS + "records", "huge", b"x" * (4 << 20))
    before = await _net_output(redis)
    follower = members()
    await follower.join()
    await asyncio.wait_for(follower.wait_followed(), 5)
    assert follower.follower.rejected == 1
    assert await _net_output(redis) - before < 1 << 20


async def _net_output(redis: Redis) -> int:
    return int((await redis.info("stats"))["total_net_output_bytes"])


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[RedisServer]:
    try:
        server = RedisServer(tls=TlsFiles.make(tmp_path))
    except RedisServerError as exc:
        pytest.skip(f"no TLS certificate for the test: {exc}")
    server.start()
    yield server
    server.stop()


async def test_closing_with_redis_paused_neither_raises_nor_blocks_a_later_start(
    simulator: Simulator, tls_redis: RedisServer
) -> None:
    DriftClientManager.configure(
        share_url=tls_redis.url,
        share_lease_s=2.0,  # two clients start in this loop: a short lease lapses meanwhile
        share_fallback_s=4.0,
        retry_backoff=0.05,
        retry_backoff_cap=0.2,
    )
    # Two shared clients in one process (two RPC URLs): a leader and a follower.
    leader, follower = (f"{simulator.http_url}/?api-key={name}" for name in "ab")
    try:
        assert await DriftClientManager.get_client("mainnet", rpc_url=leader) is not None
        assert await DriftClientManager.get_client("mainnet", rpc_url=follower) is not None
        assert DriftClientManager.stats("mainnet", rpc_url=follower)["fleet"]["role"] == "follower"
        tls_redis.pause()
        try:
            await DriftClientManager.release_client("mainnet", rpc_url=follower)  # no raise
        finally:
            tls_redis.resume()

        async def starts_again() -> bool:
            client = await DriftClientManager.get_client("mainnet", rpc_url=follower)
            if client is None:
                return False
            await DriftClientManager.release_client("mainnet", rpc_url=follower)
            return True

        await eventually(starts_again, "a new shared client after Redis is back")
    finally:
        await DriftClientManager.shutdown()
        DriftClientManager._settings = None


async def test_a_half_open_channel_is_noticed_and_followed_again(
    members: MemberFactory, wait_until: WaitUntil, redis_server: RedisServer
) -> None:
    proxy = TcpProxy(redis_server.port)
    await proxy.start()
    try:
        leader = members()
        await leader.join()
        leader.ledger.apply(STATE)
        follower = members(share_url=proxy.url())
        await follower.join()
        await asyncio.wait_for(follower.wait_followed(), 5)
        assert not follower.feed_lost
        proxy.cut()  # the channel's connection stays open, and silent
        await wait_until(lambda: follower.feed_lost)
        leader.ledger.apply(AccountRecord(PUBKEY, "perp", 10, b"after the cut"))
        await wait_until(lambda: follower.ledger.get(PUBKEY) is not None)
        await wait_until(lambda: not follower.feed_lost)
    finally:
        await proxy.down()


async def test_a_member_starting_from_old_values_says_why_they_are_stale(
    members: MemberFactory, caplog: pytest.LogCaptureFixture
) -> None:
    leader = members()
    await leader.join()
    # The leader's upstream went quiet a minute ago: its values are that old.
    leader.ledger.apply(STATE, confirmed_at=time.monotonic() - 60)
    await stored(leader, lambda records, _: len(records) == 1)
    follower = members()
    await follower.join()
    await asyncio.wait_for(follower.wait_followed(), 5)
    said = [r.message for r in caplog.records if "last values were confirmed" in r.message]
    assert len(said) == 1
    assert "publishes nothing current" in said[0]


async def test_a_leader_drops_accounts_it_does_not_subscribe_to_from_redis(
    members: MemberFactory,
) -> None:
    first = members()
    await first.join()
    first.ledger.apply(STATE)
    first.ledger.apply(AccountRecord(PUBKEY, "perp", 10, b"a market no longer configured"))
    first.ledger.confirm(PUBKEY, 12)
    await stored(first, lambda records, confirms: len(records) == 2 and len(confirms) == 1)
    await first.close()
    # The next leader subscribes to the State only.
    second = members(subscribed=lambda: [STATE.pubkey])
    await second.join()
    assert second.role == "leader"
    records, confirms = await stored(second, lambda records, _: len(records) == 1)
    assert decode(records[0], Signer(None, "default", CHAIN)).pubkey == STATE.pubkey
    assert confirms == []
    follower = members()
    await follower.join()
    await asyncio.wait_for(follower.wait_followed(), 5)
    assert follower.ledger.get(PUBKEY) is None


async def test_records_waiting_to_be_written_go_before_their_confirmations(
    redis_server: RedisServer, wait_until: WaitUntil
) -> None:
    redis = Redis.from_url(redis_server.url)
    store = FleetStore(redis, "mainnet", "default")
    ledger = AccountLedger()
    ledger.apply(AccountRecord(PUBKEY, "perp", 10, b"data"))
    ledger.confirm(PUBKEY, 12)
    entry = ledger.get(PUBKEY)
    assert entry is not None
    publisher = Publisher(store, Signer(None, "default", CHAIN), "m", "mainnet", lambda: None)
    # A confirmation queued ahead of its record (as when a stream write of the record failed).
    publisher._pending = {("c", PUBKEY): (entry, False), ("r", PUBKEY): (entry, True)}
    publisher.lead(ledger, f"m|{await store.acquire('m', 5, 50)}", 1)
    try:
        _, confirms = await stored_in(store, lambda _, c: bool(c))
        assert decode(confirms[0], Signer(None, "default", CHAIN)).slot == 12
    finally:
        await publisher.stop()
        await redis.aclose()


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


# -- issue 19: the sub-accounts members trade on ---------------------------------------------


def pair(sub: int = 0) -> Pair:
    """A new authority's sub-account ``sub``."""
    return (str(Pubkey.new_unique()), sub)


async def test_the_leader_shares_the_live_members_sub_accounts(
    members: MemberFactory, wait_until: WaitUntil
) -> None:
    leader = members()
    await leader.join()
    assert leader.role == "leader"
    p1, p2, p3 = pair(0), pair(1), pair(3)
    leaving, dying, staying = (members(pairs=[p]) for p in (p1, p2, p3))
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
    leader = members(share_secret=SECRET)
    await leader.join()
    honest = pair()
    member = members(pairs=[honest], share_secret=SECRET)
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


class NoRpc:
    """A transaction path's RPC that must not be asked anything."""

    async def call(self, method: str, params: list[Any]) -> Any:
        raise AssertionError(f"{method} asked")

    async def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        raise AssertionError(f"{calls} asked")


async def test_a_follower_adopts_the_leaders_signed_blockhash_and_fee_only(
    members: MemberFactory, wait_until: WaitUntil
) -> None:
    path = TransactionPath(NoRpc(), load_settings())
    leader = members(share_secret=SECRET)
    await leader.join()
    leader.ledger.apply(STATE)
    follower = members(share_secret=SECRET, tx=path)
    await follower.join()
    await asyncio.wait_for(follower.wait_followed(), 5)
    store = follower._store
    blockhash = Hash.new_unique()

    def shared(block_height: int, signer: Signer) -> str:
        now = time.time()
        message = TxMessage(str(blockhash), 1_000, 5, block_height, now, 7, now, 1, leader.id)
        return encode_tx(message, signer)

    leaders = Signer(SECRET.encode(), "default", CHAIN)
    await store.redis.publish(store.channel, shared(900, Signer(b"forger", "default", CHAIN)))
    # Signed, but a block height past the blockhash's last valid one is no chain's answer.
    await store.redis.publish(store.channel, shared(1_001, leaders))
    await wait_until(lambda: follower.follower.rejected == 2)
    assert path.keeper.latest is None
    await store.redis.publish(store.channel, shared(900, leaders))
    await wait_until(lambda: path.keeper.latest is not None)
    assert path.keeper.latest is not None
    assert path.keeper.latest.blockhash == blockhash
    assert path.keeper.latest.last_valid_block_height == 1_000
    assert path.keeper.block_height == 900
    assert path.fees.price == 7
    # Current: the follower fetches neither itself (NoRpc would fail the write otherwise).
    assert path.keeper.due() == []
    assert path.fees.due() == []
    assert (await path.keeper.current()).blockhash == blockhash
