"""The wire format and the Lua scripts, against a real Redis."""

from __future__ import annotations

import asyncio
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
from conftest import last_values
from driftshare._fleet._records import Message, RecordError, Signer, decode, encode
from driftshare._fleet._store import FencedOut, FleetStore, Outgoing, PublishStream
from driftshare._ledger import AccountRecord

PUBKEY = str(Pubkey.new_unique())


def record_message(slot: int, data: bytes = b"\x01\x02", epoch: int = 1) -> Message:
    record = AccountRecord(PUBKEY, "perp", slot, data)
    return Message("r", PUBKEY, slot, 1000.0, epoch, "m1", record)


@pytest_asyncio.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[FleetStore]:
    redis = Redis.from_url(redis_server.url)
    yield FleetStore(redis, "mainnet", "g")
    await redis.aclose()


def test_round_trip_keeps_every_field() -> None:
    signer = Signer(b"k", "g")
    message = Message(
        "r", PUBKEY, 7, 12.5, 3, "m", AccountRecord(PUBKEY, "oracle", 7, b"x", "PythPull")
    )
    assert decode(encode(message, signer), signer) == message


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("s", -1, "bad slot"),
        ("s", "7", "bad slot"),
        ("k", "user", "bad account kind"),
        ("p", "not-a-key", "bad pubkey"),
        ("d", "***", "bad data"),
        ("o", "PythPull", "oracle source mismatch"),
    ],
)
def test_malformed_fields_are_refused(field: str, value: object, reason: str) -> None:
    signer = Signer(None, "g")
    raw = json.loads(encode(record_message(7), signer))
    raw[field] = value
    with pytest.raises(RecordError, match=reason):
        decode(json.dumps(raw), signer)


def test_a_forged_or_unsigned_record_fails_verification() -> None:
    leader, follower = Signer(b"secret", "g"), Signer(b"secret", "g")
    forged = json.loads(encode(record_message(7), leader))
    forged["d"] = "AAAA"  # tampered data under the original signature
    with pytest.raises(RecordError, match="bad signature"):
        decode(json.dumps(forged), follower)
    with pytest.raises(RecordError, match="bad signature"):
        decode(encode(record_message(7), Signer(None, "g")), follower)
    with pytest.raises(RecordError, match="bad signature"):
        decode(encode(record_message(7), Signer(b"secret", "other-group")), follower)


def test_garbage_is_refused() -> None:
    signer = Signer(None, "g")
    for text in ("", "[]", "{", b"\xff\xfe", "x" * (2 << 20)):
        with pytest.raises(RecordError):
            decode(text, signer)


async def test_only_one_member_takes_the_lease_and_epochs_increase(store: FleetStore) -> None:
    first = await store.acquire("a", 3)
    assert first == 1
    assert await store.acquire("b", 3) == 0
    assert await store.leader() == ("a", 1)
    await store.release("a|1")
    assert await store.acquire("b", 3) == 2
    assert not await store.renew("a|1", 3)
    assert await store.renew("b|2", 3)


async def test_writes_are_slot_monotonic_and_published(store: FleetStore) -> None:
    signer = Signer(None, "g")
    token = f"a|{await store.acquire('a', 3)}"
    pubsub = store.redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(store.channel)

    def out(slot: int, data: bytes) -> Outgoing:
        return Outgoing("r", PUBKEY, slot, encode(record_message(slot, data), signer))

    assert await store.publish(token, [out(10, b"new")]) == 1
    assert await store.publish(token, [out(9, b"old"), out(10, b"same-slot")]) == 0
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
    signer = Signer(None, "g")
    old = f"a|{await store.acquire('a', 3)}"
    await store.redis.delete("driftshare:mainnet:g:lease")  # expired
    new = f"b|{await store.acquire('b', 3)}"
    update = Outgoing("r", PUBKEY, 5, encode(record_message(5), signer))
    with pytest.raises(FencedOut):
        await store.publish(old, [update])
    assert await last_values(store) == ([], [])
    assert await store.publish(new, [update]) == 1


@pytest.mark.parametrize("value", ["m1|¹", "m1|x", b"m1|\xff\xfe", "no-epoch"])
async def test_a_garbled_lease_has_no_leader(store: FleetStore, value: str | bytes) -> None:
    await store.redis.set("driftshare:mainnet:g:lease", value)
    assert await store.leader() is None


async def test_the_publish_stream_writes_at_once_and_answers_in_order(store: FleetStore) -> None:
    signer = Signer(None, "g")
    token = f"a|{await store.acquire('a', 3)}"
    stream = PublishStream(store)
    await stream.open()
    assert stream.ready

    def out(slot: int) -> Outgoing:
        return Outgoing("r", PUBKEY, slot, encode(record_message(slot), signer))

    # Three writes issued without awaiting in between: each reply goes to its own write.
    futures = [stream.publish(token, [out(slot)]) for slot in (10, 9, 11)]
    assert await asyncio.gather(*futures) == [1, 0, 1]
    records, _ = await last_values(store)
    assert [decode(r, signer).slot for r in records] == [11]
    with pytest.raises(FencedOut):
        await stream.publish("someone-else|9", [out(12)])
    assert stream.ready  # a refused write is an answer, not a broken stream
    await stream.close()
    assert not stream.ready


async def test_the_publish_stream_breaks_with_redis_and_reopens_on_an_empty_one(
    store: FleetStore, redis_server: RedisServer
) -> None:
    signer = Signer(None, "g")
    stream = PublishStream(store)
    await stream.open()
    redis_server.restart()  # empty: the script and the lease are gone
    update = Outgoing("r", PUBKEY, 5, encode(record_message(5), signer))
    with pytest.raises((RedisError, OSError)):
        await stream.publish("a|1", [update])
    assert not stream.ready
    token = None
    while token is None:  # the client's pooled connections notice the restart one by one
        try:
            token = f"a|{await store.acquire('a', 3)}"
        except RedisError:
            continue
    await stream.open()
    assert await stream.publish(token, [update]) == 1
    await stream.close()
