"""The simulator's Yellowstone Geyser gRPC server, through the stubs driftpy ships and
through driftpy's own GrpcAccountSubscriber over TLS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from driftpy.accounts.grpc.account_subscriber import GrpcAccountSubscriber
from driftpy.accounts.grpc.geyser_codegen import geyser_pb2, geyser_pb2_grpc
from driftpy.drift_client import DriftClient
from driftpy.types import GrpcConfig, PerpMarketAccount
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from bench._harness import grpc_test_tls
from conftest import eventually
from driftshare.sim import Simulator
from driftshare.sim.simulator import SimConfigError

SimFactory = Callable[..., Awaitable[Simulator]]
TOKEN = "sim-geyser-test-token-1f2e3d"


class Stream:
    """One Subscribe call whose requests are written at will and whose updates are read."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.call = stub.Subscribe(metadata=metadata)

    async def write(self, **fields: Any) -> None:
        await self.call.write(geyser_pb2.SubscribeRequest(**fields))

    async def next(self, kind: str) -> Any:
        """The next update of ``kind`` (account, slot, pong), skipping the others."""
        async with asyncio.timeout(10):
            while True:
                update = await self.call.read()
                if update.WhichOneof("update_oneof") == kind:
                    return update


def accounts_filter(*keys: Pubkey) -> dict[str, Any]:
    return {"drift": geyser_pb2.SubscribeRequestFilterAccounts(account=[str(k) for k in keys])}


@pytest.fixture
async def sim(simulator_factory: SimFactory) -> Simulator:
    return await simulator_factory(markets=2, grpc_port=0)


@pytest.fixture
async def channel(sim: Simulator) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(sim.grpc_address) as opened:
        yield opened


def market_key(sim: Simulator, index: int = 0) -> Pubkey:
    assert sim.world is not None
    return sim.world.perp_market_pubkey(index)


def oracle_key(sim: Simulator, index: int = 0) -> Pubkey:
    """Perp market ``index``'s oracle: written on every step, unlike the market."""
    assert sim.world is not None
    key: Pubkey = sim.world.perp_market(index).amm.oracle
    return key


async def test_account_updates_carry_the_stored_bytes_at_the_slot(
    sim: Simulator, channel: grpc.aio.Channel
) -> None:
    key = oracle_key(sim)
    stream = Stream(geyser_pb2_grpc.GeyserStub(channel))
    await stream.write(
        accounts=accounts_filter(key),
        slots={"tip": geyser_pb2.SubscribeRequestFilterSlots()},
        commitment=geyser_pb2.CONFIRMED,
    )
    await eventually(lambda: sim.stats()["grpc"]["streams"]["accounts"] == 1, "filter in place")
    slot = await sim.step()
    update = await stream.next("account")
    stored = sim.store.get(key)
    assert stored is not None
    assert update.account.slot == slot
    assert Pubkey.from_bytes(update.account.account.pubkey) == key
    assert update.account.account.data == stored.data
    assert Pubkey.from_bytes(update.account.account.owner) == stored.owner
    assert list(update.filters) == ["drift"]
    tip = await stream.next("slot")
    assert tip.slot.slot == slot
    stream.call.cancel()


async def test_a_ping_is_answered_and_keeps_the_filters(
    sim: Simulator, channel: grpc.aio.Channel
) -> None:
    key = oracle_key(sim)
    stream = Stream(geyser_pb2_grpc.GeyserStub(channel))
    await stream.write(accounts=accounts_filter(key))
    await stream.write(ping=geyser_pb2.SubscribeRequestPing(id=7))
    assert (await stream.next("pong")).pong.id == 7
    await sim.step()
    update = await stream.next("account")
    assert Pubkey.from_bytes(update.account.account.pubkey) == key
    stream.call.cancel()


async def test_a_new_request_replaces_the_filters_on_the_same_stream(
    sim: Simulator, channel: grpc.aio.Channel
) -> None:
    stream = Stream(geyser_pb2_grpc.GeyserStub(channel))
    await stream.write(accounts=accounts_filter(oracle_key(sim, 0)))
    await eventually(lambda: sim.stats()["grpc"]["streams"]["accounts"] == 1, "one account")
    await stream.write(accounts=accounts_filter(oracle_key(sim, 0), oracle_key(sim, 1)))
    await eventually(lambda: sim.stats()["grpc"]["streams"]["accounts"] == 2, "two accounts")
    await sim.step()
    seen = {Pubkey.from_bytes((await stream.next("account")).account.account.pubkey)}
    seen.add(Pubkey.from_bytes((await stream.next("account")).account.account.pubkey))
    assert seen == {oracle_key(sim, 0), oracle_key(sim, 1)}
    assert sim.stats()["grpc"]["streams"]["open"] == 1
    stream.call.cancel()


async def test_a_bad_pubkey_ends_the_stream_with_invalid_argument(
    sim: Simulator, channel: grpc.aio.Channel
) -> None:
    stream = Stream(geyser_pb2_grpc.GeyserStub(channel))
    await stream.write(
        accounts={"bad": geyser_pb2.SubscribeRequestFilterAccounts(account=["nope"])}
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stream.next("account")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_unary_calls_answer_as_the_http_rpc_does(
    sim: Simulator, channel: grpc.aio.Channel
) -> None:
    stub = geyser_pb2_grpc.GeyserStub(channel)
    slot = (await stub.GetSlot(geyser_pb2.GetSlotRequest())).slot
    assert slot == sim.store.slot
    finalized = await stub.GetSlot(geyser_pb2.GetSlotRequest(commitment=geyser_pb2.FINALIZED))
    assert finalized.slot < slot
    latest = await stub.GetLatestBlockhash(geyser_pb2.GetLatestBlockhashRequest())
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            sim.http_url, json={"jsonrpc": "2.0", "id": 1, "method": "getLatestBlockhash"}
        )
    value = answer.json()["result"]["value"]
    assert latest.blockhash == value["blockhash"]
    assert latest.last_valid_block_height == value["lastValidBlockHeight"]
    assert (await stub.Ping(geyser_pb2.PingRequest(count=3))).count == 3


async def test_many_streams_on_one_channel_are_one_connection(
    sim: Simulator, channel: grpc.aio.Channel
) -> None:
    stub = geyser_pb2_grpc.GeyserStub(channel)
    streams = [Stream(stub) for _ in range(3)]
    for stream in streams:
        await stream.write(accounts=accounts_filter(oracle_key(sim)))
    await eventually(lambda: sim.stats()["grpc"]["streams"]["open"] == 3, "three streams")
    assert sim.stats()["grpc"]["connections"] == {"open": 1, "total": 1}
    for stream in streams:
        stream.call.cancel()
    await eventually(lambda: sim.stats()["grpc"]["streams"]["open"] == 0, "streams closed")


async def test_the_token_is_required_and_never_shown(simulator_factory: SimFactory) -> None:
    sim = await simulator_factory(markets=1, grpc_port=0, grpc_token=TOKEN)
    async with grpc.aio.insecure_channel(sim.grpc_address) as channel:
        stub = geyser_pb2_grpc.GeyserStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetSlot(geyser_pb2.GetSlotRequest())
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetSlot(geyser_pb2.GetSlotRequest(), metadata=(("x-token", "wrong"),))
        answer = await stub.GetSlot(geyser_pb2.GetSlotRequest(), metadata=(("x-token", TOKEN),))
        assert answer.slot == sim.store.slot
    assert sim.stats()["grpc"]["refused"] == {"UNAUTHENTICATED": 2}
    async with httpx.AsyncClient() as http:
        shown = [
            (await http.get(f"{sim.http_url}/_sim/{page}")).text for page in ("stats", "metrics")
        ]
    assert not any(TOKEN in text for text in shown)
    assert TOKEN not in repr(sim.config)


@pytest.mark.parametrize("status", ["UNAVAILABLE", "RESOURCE_EXHAUSTED"])
async def test_refusal_faults_refuse_the_next_calls_only(
    sim: Simulator, channel: grpc.aio.Channel, status: str
) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{sim.http_url}/_sim/faults", json={"spec": [f"grpc-refuse={status}:2"]}
        )
    assert answer.json()["grpc_refuse"] == {"status": status, "remaining": 2}
    stub = geyser_pb2_grpc.GeyserStub(channel)
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetSlot(geyser_pb2.GetSlotRequest())
        assert raised.value.code() == grpc.StatusCode[status]
    assert (await stub.GetSlot(geyser_pb2.GetSlotRequest())).slot == sim.store.slot


async def test_dropped_streams_end_with_unavailable_and_new_ones_work(
    sim: Simulator, channel: grpc.aio.Channel
) -> None:
    stub = geyser_pb2_grpc.GeyserStub(channel)
    stream = Stream(stub)
    await stream.write(accounts=accounts_filter(oracle_key(sim)))
    await eventually(lambda: sim.stats()["grpc"]["streams"]["open"] == 1, "stream open")
    assert await sim.faults.drop_grpc() == 1
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stream.next("account")
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    again = Stream(stub)
    await again.write(accounts=accounts_filter(oracle_key(sim)))
    await eventually(lambda: sim.stats()["grpc"]["streams"]["accounts"] == 1, "filter again")
    await sim.step()
    assert (await again.next("account")).account.slot == sim.store.slot
    again.call.cancel()


async def test_a_stall_stops_updates_but_not_pongs(
    sim: Simulator, channel: grpc.aio.Channel
) -> None:
    stream = Stream(geyser_pb2_grpc.GeyserStub(channel))
    await stream.write(
        accounts=accounts_filter(oracle_key(sim)),
        slots={"tip": geyser_pb2.SubscribeRequestFilterSlots()},
    )
    await eventually(lambda: sim.stats()["grpc"]["streams"]["accounts"] == 1, "filter in place")
    sim.faults.set_stall(True)
    await sim.step()
    await stream.write(ping=geyser_pb2.SubscribeRequestPing(id=1))
    # The stream is in order: a pong first means the stalled step sent nothing.
    first = await stream.call.read()
    assert first.WhichOneof("update_oneof") == "pong"
    sim.faults.set_stall(False)
    slot = await sim.step()
    assert (await stream.next("account")).account.slot == slot
    stream.call.cancel()


def test_bad_grpc_settings_are_named() -> None:
    with pytest.raises(SimConfigError, match="grpc_port"):
        Simulator(markets=0, grpc_port=70000)
    with pytest.raises(SimConfigError, match="give both or neither"):
        Simulator(markets=0, grpc_port=0, grpc_tls_cert=Path("/nonexistent.pem"))


async def test_driftpy_grpc_account_subscriber_reads_a_market_over_tls(
    simulator_factory: SimFactory,
) -> None:
    tls_files = grpc_test_tls()  # driftpy trusts only gRPC's default roots: these
    sim = await simulator_factory(
        markets=2,
        grpc_port=0,
        grpc_token=TOKEN,
        grpc_tls_cert=tls_files.cert,
        grpc_tls_key=tls_files.key,
    )
    connection = AsyncClient(sim.http_url)
    client = DriftClient(connection, Keypair(), env="mainnet")
    key = market_key(sim)
    subscriber = GrpcAccountSubscriber[PerpMarketAccount](
        GrpcConfig(endpoint=sim.grpc_address, token=TOKEN),
        "perp_market_0",
        client.program,
        key,
    )
    try:
        await subscriber.subscribe()
        await eventually(lambda: sim.stats()["grpc"]["streams"]["accounts"] == 1, "subscribed")
        world = sim.world
        assert world is not None
        # A slot after driftpy's HTTP read, and far outside the re-peg band: the market
        # account is rewritten at that slot, and only the stream can tell driftpy.
        slot = await sim.step()
        world.set_oracle_price(0, world.oracle_price(0) * 1.5)
        await eventually(
            lambda: (
                subscriber.data_and_slot is not None
                and subscriber.data_and_slot.slot == slot
                and subscriber.data_and_slot.data == world.perp_market(0)
            ),
            "driftpy read the update",
        )
    finally:
        await subscriber.unsubscribe()
        await connection.close()


async def test_down_refuses_grpc_and_ends_its_streams_until_it_comes_back(
    sim: Simulator, channel: grpc.aio.Channel
) -> None:
    stub = geyser_pb2_grpc.GeyserStub(channel)
    stream = Stream(stub)
    await stream.write(accounts=accounts_filter(oracle_key(sim)))
    await eventually(lambda: sim.stats()["grpc"]["streams"]["open"] == 1, "stream open")
    await sim.faults.down(600)
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await stream.next("account")
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.GetSlot(geyser_pb2.GetSlotRequest())
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    await sim.faults.clear()
    assert (await stub.GetSlot(geyser_pb2.GetSlotRequest())).slot == sim.store.slot


async def test_owner_and_memcmp_filters_pick_accounts_by_content(
    sim: Simulator, channel: grpc.aio.Channel
) -> None:
    world = sim.world
    assert world is not None
    key = market_key(sim, 1)
    stored = sim.store.get(key)
    assert stored is not None
    # Bytes 8..40 of a perp market account are its own address.
    memcmp = geyser_pb2.SubscribeRequestFilterAccountsFilterMemcmp(offset=8, bytes=bytes(key))
    spec = geyser_pb2.SubscribeRequestFilterAccounts(
        owner=[str(stored.owner)],
        filters=[geyser_pb2.SubscribeRequestFilterAccountsFilter(memcmp=memcmp)],
    )
    stream = Stream(geyser_pb2_grpc.GeyserStub(channel))
    await stream.write(accounts={"market": spec})
    await stream.write(ping=geyser_pb2.SubscribeRequestPing(id=1))
    await stream.next("pong")  # requests are read in order: the filter is in place
    for index in world.perp_indexes():  # every market rewritten: only market 1 matches
        world.set_oracle_price(index, world.oracle_price(index) * 1.5)
    update = await stream.next("account")
    assert Pubkey.from_bytes(update.account.account.pubkey) == key
    assert list(update.filters) == ["market"]
    stream.call.cancel()
