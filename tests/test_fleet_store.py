"""The wire format and the Lua scripts, against a real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError
from solders.pubkey import Pubkey

from bench._processes import RedisServer
from conftest import CHAIN, eventually, last_values
from driftshare._data.ledger import AccountRecord
from driftshare._fleet import Chain
from driftshare._fleet._records import Message, RecordError, Signer, decode, digest, encode
from driftshare._fleet._records import record_message as carrying
from driftshare._fleet._store import FencedOut, FleetStore, OtherChain, Outgoing, PublishStream

PUBKEY = str(Pubkey.new_unique())


def record_message(slot: int, data: bytes = b"\x01\x02", epoch: int = 1) -> Message:
    return carrying(AccountRecord(PUBKEY, "perp", slot, data), 1000.0, epoch, "m1")


def out(message: Message, signer: Signer) -> Outgoing:
    return Outgoing.of(message, encode(message, signer))


@pytest_asyncio.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[FleetStore]:
    redis = Redis.from_url(redis_server.url)
    yield FleetStore(redis, "mainnet", "g")
    await redis.aclose()


def test_round_trip_keeps_every_field() -> None:
    signer = Signer(b"k", "g", CHAIN)
    message = carrying(AccountRecord(PUBKEY, "oracle", 7, b"x", "PythPull"), 12.5, 3, "m")
    assert decode(encode(message, signer), signer) == message


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("s", -1, "bad slot"),
        ("s", "7", "bad slot"),
        ("k", "vault", "bad account kind"),
        ("p", "not-a-key", "bad pubkey"),
        ("d", "***", "bad data"),
        ("o", "PythPull", "oracle source mismatch"),
    ],
)
def test_malformed_fields_are_refused(field: str, value: object, reason: str) -> None:
    signer = Signer(None, "g", CHAIN)
    raw = json.loads(encode(record_message(7), signer).partition(".")[2])
    raw[field] = value
    with pytest.raises(RecordError, match=reason):
        decode("." + json.dumps(raw), signer)


def test_a_forged_or_unsigned_record_fails_verification() -> None:
    leader, follower = Signer(b"secret", "g", CHAIN), Signer(b"secret", "g", CHAIN)
    signature, _, payload = encode(record_message(7), leader).partition(".")
    forged = json.loads(payload)
    forged["d"] = "AAAA"  # tampered data under the original signature
    with pytest.raises(RecordError, match="bad signature"):
        decode(signature + "." + json.dumps(forged), follower)
    with pytest.raises(RecordError, match="bad signature"):
        decode(encode(record_message(7), Signer(None, "g", CHAIN)), follower)
    with pytest.raises(RecordError, match="bad signature"):
        decode(encode(record_message(7), Signer(b"secret", "other-group", CHAIN)), follower)


def test_garbage_is_refused() -> None:
    signer = Signer(None, "g", CHAIN)
    for text in ("", "[]", "{", b"\xff\xfe", "x" * (2 << 20)):
        with pytest.raises(RecordError):
            decode(text, signer)


async def test_only_one_member_takes_the_lease_and_epochs_increase(store: FleetStore) -> None:
    first = await store.acquire("a", 3, 30)
    assert first == 1
    assert await store.acquire("b", 3, 30) == 0
    assert await store.leader() == ("a", 1)
    await store.release("a|1")
    assert await store.acquire("b", 3, 30) == 2
    assert not await store.renew("a|1", 3, 30)
    assert await store.renew("b|2", 3, 30)


async def test_writes_are_slot_monotonic_and_published(store: FleetStore) -> None:
    signer = Signer(None, "g", CHAIN)
    token = f"a|{await store.acquire('a', 3, 30)}"
    pubsub = store.redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(store.channel)

    def at(slot: int, data: bytes) -> Outgoing:
        return out(record_message(slot, data), signer)

    assert await store.publish(token, [at(10, b"new")]) == 1
    assert await store.publish(token, [at(9, b"old"), at(10, b"new")]) == 0
    records, _ = await last_values(store)
    assert [decode(r, signer).slot for r in records] == [10]
    # Redis delivers a channel's messages in the order it took them: the sentinel, published
    # last, closes the list of what the writes published.
    await store.redis.publish(store.channel, _SENTINEL)
    published = [m["data"] async for m in _messages(pubsub)]
    assert [decode(m, signer).record for m in published] == [
        AccountRecord(PUBKEY, "perp", 10, b"new")
    ]
    await pubsub.aclose()


_SENTINEL = b"end of the test's messages"


async def _messages(pubsub: PubSub) -> AsyncIterator[dict[str, Any]]:
    """The published messages up to the sentinel (10 s at most)."""
    async with asyncio.timeout(10):
        while True:
            # None for a skipped subscribe reply, or no message within the second: read on.
            message = await pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            if message["data"] == _SENTINEL:
                return
            yield message


async def test_a_superseded_epoch_writes_nothing(store: FleetStore) -> None:
    signer = Signer(None, "g", CHAIN)
    old = f"a|{await store.acquire('a', 3, 30)}"
    await store.redis.delete("driftshare:mainnet:g:lease")  # expired
    new = f"b|{await store.acquire('b', 3, 30)}"
    update = out(record_message(5), signer)
    with pytest.raises(FencedOut):
        await store.publish(old, [update])
    assert await last_values(store) == ([], [])
    assert await store.publish(new, [update]) == 1


@pytest.mark.parametrize("value", ["m1|¹", "m1|x", b"m1|\xff\xfe", "no-epoch"])
async def test_a_garbled_lease_has_no_leader(store: FleetStore, value: str | bytes) -> None:
    await store.redis.set("driftshare:mainnet:g:lease", value)
    assert await store.leader() is None


async def test_the_publish_stream_writes_at_once_and_answers_in_order(store: FleetStore) -> None:
    signer = Signer(None, "g", CHAIN)
    token = f"a|{await store.acquire('a', 3, 30)}"
    stream = PublishStream(store)
    await stream.open()
    assert stream.ready

    def at(slot: int) -> Outgoing:
        return out(record_message(slot), signer)

    # Three writes issued without awaiting in between: each reply goes to its own write.
    futures = [stream.publish(token, [at(slot)]) for slot in (10, 9, 11)]
    assert await asyncio.gather(*futures) == [1, 0, 1]
    records, _ = await last_values(store)
    assert [decode(r, signer).slot for r in records] == [11]
    with pytest.raises(FencedOut):
        await stream.publish("someone-else|9", [at(12)])
    assert stream.ready  # a refused write is an answer, not a broken stream
    await stream.close()
    assert not stream.ready


async def test_the_publish_stream_breaks_with_redis_and_reopens_on_an_empty_one(
    store: FleetStore, redis_server: RedisServer
) -> None:
    signer = Signer(None, "g", CHAIN)
    stream = PublishStream(store)
    await stream.open()
    redis_server.restart()  # empty: the script and the lease are gone
    update = out(record_message(5), signer)
    with pytest.raises((RedisError, OSError)):
        await stream.publish("a|1", [update])
    assert not stream.ready
    token = None
    while token is None:  # the client's pooled connections notice the restart one by one
        try:
            token = f"a|{await store.acquire('a', 3, 30)}"
        except RedisError:
            continue
    await stream.open()
    assert await stream.publish(token, [update]) == 1
    await stream.close()


# -- issue 17: fleet trust ------------------------------------------------------------------


@pytest.mark.parametrize(
    "other",
    [
        dataclasses.replace(CHAIN, network="devnet"),
        dataclasses.replace(CHAIN, genesis_hash="AnotherGenesis"),
        dataclasses.replace(CHAIN, program_id=str(Pubkey.new_unique())),
    ],
)
def test_a_record_signed_for_one_chain_fails_on_another(other: Chain) -> None:
    text = encode(record_message(7), Signer(b"secret", "g", other))
    with pytest.raises(RecordError, match="bad signature"):
        decode(text, Signer(b"secret", "g", CHAIN))


def test_nan_and_huge_numbers_are_refused() -> None:
    signer = Signer(None, "g", CHAIN)
    raw = json.loads(encode(record_message(7), signer).partition(".")[2])
    for field, value in (("w", float("nan")), ("w", float("inf")), ("s", 1 << 70)):
        with pytest.raises(RecordError):
            decode("." + json.dumps({**raw, field: value}), signer)


def confirmation(slot: int, of: Message, signer: Signer) -> Outgoing:
    assert of.record is not None
    message = Message(
        "c", PUBKEY, slot, 1000.0, 1, "m1", None, of.record.slot, digest(of.record.data)
    )
    return out(message, signer)


async def test_a_confirmation_is_kept_only_with_the_record_it_names(store: FleetStore) -> None:
    signer = Signer(None, "g", CHAIN)
    token = f"a|{await store.acquire('a', 3, 30)}"
    first, second = record_message(10, b"first"), record_message(11, b"second")
    assert await store.publish(token, [out(first, signer)]) == 1
    await store.redis.hset("driftshare:mainnet:g:slots", PUBKEY, 10**12)  # planted
    # The record is refused, and so is the confirmation of it.
    assert await store.publish(token, [out(second, signer), confirmation(15, second, signer)]) == 0
    # A confirmation of data Redis does not hold is refused however new it is.
    await store.redis.hset("driftshare:mainnet:g:slots", PUBKEY, 10)
    assert await store.publish(token, [confirmation(16, second, signer)]) == 0
    assert await store.publish(token, [confirmation(16, first, signer)]) == 1
    _, confirms = await last_values(store)
    assert [decode(c, signer).slot for c in confirms] == [16]


async def test_a_slot_past_the_ceiling_counts_as_none(store: FleetStore) -> None:
    signer = Signer(None, "g", CHAIN)
    token = f"a|{await store.acquire('a', 3, 30)}"
    await store.redis.hset("driftshare:mainnet:g:slots", PUBKEY, 10**12)
    assert await store.publish(token, [out(record_message(11), signer)], ceiling=10**6) == 1


async def test_the_same_slot_with_other_data_replaces_the_record(store: FleetStore) -> None:
    signer = Signer(None, "g", CHAIN)
    token = f"a|{await store.acquire('a', 3, 30)}"
    assert await store.publish(token, [out(record_message(10, b"first"), signer)]) == 1
    assert await store.publish(token, [out(record_message(10, b"first"), signer)]) == 0
    assert await store.publish(token, [out(record_message(10, b"second"), signer)]) == 1
    records, _ = await last_values(store)
    assert [decode(r, signer).record.data for r in records] == [b"second"]  # type: ignore[union-attr]


async def test_reopening_the_publish_stream_keeps_no_pool_slot(store: FleetStore) -> None:
    signer = Signer(None, "g", CHAIN)
    token = f"a|{await store.acquire('a', 3, 30)}"
    stream = PublishStream(store)
    for _ in range(200):  # twice redis-py's default pool size
        await stream.open()
    assert await stream.publish(token, [out(record_message(5), signer)]) == 1
    await stream.close()
    assert await store.publish(token, [out(record_message(6), signer)]) == 1


async def test_another_chain_cannot_take_the_lease(store: FleetStore) -> None:
    assert await store.acquire("a", 3, 30) == 1
    other = FleetStore(store.redis, "mainnet", "g", chain="another")
    await store.release("a|1")
    with pytest.raises(OtherChain):
        await other.acquire("b", 3, 30)


async def test_a_leader_after_the_groups_chain_was_forgotten_starts_from_no_records(
    store: FleetStore,
) -> None:
    # A restarted simulator is another chain whose slots start over: once the group has
    # forgotten its chain (no leader for a while), the old chain's higher slots must not
    # outrank the new chain's records, nor its blockhash be signed with.
    signer = Signer(None, "g", CHAIN)
    token = f"a|{await store.acquire('a', 3, 0.001)}"
    assert await store.publish(token, [out(record_message(5000, b"old chain"), signer)]) == 1
    await store.publish_tx(token, "old chain's blockhash")
    await store.release(token)
    chain_key = "driftshare:mainnet:g:chain"
    await eventually(lambda: _gone(store.redis, chain_key), "the group's chain forgotten")
    restarted = FleetStore(store.redis, "mainnet", "g", chain="restarted")
    token = f"b|{await restarted.acquire('b', 3, 30)}"
    assert await restarted.publish(token, [out(record_message(10, b"new chain"), signer)]) == 1
    records, _ = await last_values(restarted)
    assert [decode(r, signer).record for r in records] == [
        AccountRecord(PUBKEY, "perp", 10, b"new chain")
    ]
    assert await restarted.tx() is None


async def _gone(redis: Redis, key: str) -> bool:
    return not await redis.exists(key)
