"""Real ``driftshare serve`` processes sharing one upstream through a real Redis.

The simulator runs in the test's event loop; each process reaches it with its own API key,
so the simulator's per-client counters say who talked upstream.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from redis.asyncio import Redis

import conftest
from bench._processes import (
    RedisServer,
    RedisServerError,
    ServeProcess,
    TlsFiles,
    all_ready,
    fresh_after,
)
from conftest import CHAIN, StartServe
from driftshare._data.ledger import AccountRecord
from driftshare._fleet._records import Signer, encode, record_message
from driftshare.sim import Simulator
from driftshare.sim.pytest_plugin import SimulatorFactory
from driftshare.sim.server import client_id

pytestmark = pytest.mark.timeout(240)

FLEET_ENV = {
    "DRIFT_NETWORK": "mainnet",
    "DRIFT_SHARE_LEASE_S": "3",
    "DRIFT_SHARE_FALLBACK_S": "4",
    "DRIFT_HEALTH_INTERVAL_S": "0.5",
}

Start = Callable[..., Awaitable[ServeProcess]]


def key_client(name: str) -> str:
    """The simulator's client id of a process whose RPC URL carries ``api-key=name``."""

    class _Request:
        query = {"api-key": name}
        match_info: dict[str, str] = {}
        remote = None

    return client_id(_Request())  # type: ignore[arg-type]


# Other processes: polled every 50 ms, a minute at most unless a call says otherwise.
until = functools.partial(conftest.eventually, within=60.0, every_s=0.05)


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def start(redis_server: RedisServer, serve: StartServe) -> Start:
    """``await start(sim, name, **env)``: a fleet member on ``sim`` as API key ``name``."""

    async def make(sim: Simulator, name: str, **env: str) -> ServeProcess:
        return await serve(
            f"{sim.http_url}/?api-key={name}",
            redis_server.url,
            engines=["funding"],
            env={**FLEET_ENV, **env},
        )

    return make


REDIS_PASSWORD = "fleet-redis-pw-7f3a9c"


@pytest.fixture(params=["password", "tls"])
def protected_redis(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[RedisServer]:
    """A redis-server requiring a password; for ``tls``, serving ``rediss://`` only."""
    tls = None
    if request.param == "tls":
        try:
            tls = TlsFiles.make(tmp_path)
        except RedisServerError as exc:
            pytest.skip(f"no TLS certificate for the test: {exc}")
    server = RedisServer(password=REDIS_PASSWORD, tls=tls)
    server.start()
    yield server
    server.stop()


async def with_role(http: httpx.AsyncClient, procs: list[ServeProcess], role: str) -> ServeProcess:
    for proc in procs:
        if (await proc.stats(http))["fleet"]["role"] == role:
            return proc
    raise AssertionError(f"no {role}")


def _numbers(markets: dict[str, Any] | None) -> list[tuple[Any, ...]]:
    rows = (markets or {}).get("markets", [])
    return sorted(
        (r["market_index"], r["mark_price"], r["oracle_price"], r["open_interest"],
         r["funding_rate"])
        for r in rows
    )  # fmt: skip


async def test_one_leader_silent_followers_and_equal_numbers(
    simulator: Simulator, start: Start, http: httpx.AsyncClient
) -> None:
    leader = await start(simulator, "a")
    await until(lambda: all_ready(http, [leader]), what="leader ready")
    # The leader's WebSocket subscriptions are in place before the followers come.
    await until(lambda: simulator.stats()["subscriptions"]["active"] > 0, what="subscribed")
    before = simulator.stats()
    followers = [await start(simulator, "b"), await start(simulator, "c")]
    trio = [leader, *followers]
    await until(lambda: all_ready(http, trio), what="followers ready")
    roles = [(await p.stats(http))["fleet"]["role"] for p in trio]
    assert roles.count("leader") == 1
    # Each says where its data comes from: the leader subscribes, the followers follow.
    modes = [(await p.stats(http))["manager"]["subscription_mode"] for p in trio]
    assert modes == ["websocket", "fleet", "fleet"]
    assert all("following the fleet's leader" in p.log_text() for p in followers)
    after = simulator.stats()
    by_client = after["http_requests"]["by_client"]
    # One call each: getGenesisHash, the chain's identity checked against the fleet's.
    assert by_client.get(key_client("b"), 0) == 1
    assert by_client.get(key_client("c"), 0) == 1
    assert after["ws_connections"]["total"] == before["ws_connections"]["total"]
    for _ in range(3):
        await simulator.step()
    slot = simulator.stats()["slot"]

    async def same_slot() -> bool:
        found = [(await p.stats(http)).get("manager", {}).get("data_slot") for p in trio]
        return found == [slot] * 3

    await until(same_slot, what="every member at the chain's slot")

    async def equal_numbers() -> bool:
        numbers = [_numbers(await p.get(http, "/api/markets")) for p in trio]
        return bool(numbers[0]) and numbers[0] == numbers[1] == numbers[2]

    await until(equal_numbers, within=10, what="followers' numbers equal the leader's")

    async def all_members_listed() -> bool:
        members = (await leader.stats(http))["fleet"]["members"]
        return sorted(m["pid"] for m in members) == sorted(p.pid for p in trio)

    await until(all_members_listed, within=10, what="the leader lists every member")
    text = await followers[0].metrics(http)
    assert 'drift_fleet_role{network="mainnet",role="follower"} 1.0' in text


async def test_sigkill_of_the_leader_then_a_survivor_takes_over_with_fresh_data(
    simulator_factory: SimulatorFactory, start: Start, http: httpx.AsyncClient
) -> None:
    simulator = await simulator_factory(tick_s=0.4)
    trio = [await start(simulator, name) for name in "abc"]
    await until(lambda: all_ready(http, trio), what="fleet ready")
    leader = await with_role(http, trio, "leader")
    survivors = [p for p in trio if p is not leader]
    await leader.kill()
    killed_at_slot = simulator.stats()["slot"]

    # How soon is bench/fleet.py's failover figure; the lease's expiry is tested on a fake
    # clock in test_fleet_member.py.
    await until(lambda: fresh_after(http, survivors, killed_at_slot), what="takeover")
    for proc in survivors:
        engines = (await proc.stats(http))["engines"]
        assert engines
        assert all(e["errors"] == 0 for e in engines)


async def test_redis_down_stale_fallback_rejoin_and_repopulate(
    simulator_factory: SimulatorFactory,
    start: Start,
    http: httpx.AsyncClient,
    redis_server: RedisServer,
) -> None:
    simulator = await simulator_factory(tick_s=0.4)
    pair = [await start(simulator, "a"), await start(simulator, "b")]
    await until(lambda: all_ready(http, pair), what="fleet ready")
    follower = await with_role(http, pair, "follower")
    name = "a" if follower is pair[0] else "b"
    redis_server.kill()

    async def stale() -> bool:
        rows = (await follower.get(http, "/api/markets") or {}).get("markets", [])
        return bool(rows) and all(r["stale"] for r in rows)

    await until(stale, within=30, what="follower flags its data stale")

    async def fallen_back() -> bool:
        s = await follower.stats(http)
        upstream = simulator.stats()["http_requests"]["by_client"].get(key_client(name), 0)
        return s.get("fleet", {}).get("role") == "standalone" and upstream > 0

    await until(fallen_back, within=30, what="follower falls back to its own upstream")
    redis_server.start()  # empty
    await until(lambda: all_ready(http, pair), within=30, what="rejoined")
    redis = Redis.from_url(redis_server.url)
    try:

        async def repopulated() -> bool:
            return bool(await redis.hlen("driftshare:mainnet:default:records"))

        await until(repopulated, within=10, what="Redis repopulated")
    finally:
        await redis.aclose()


async def test_a_forged_record_is_refused_with_a_secret(
    simulator: Simulator, start: Start, http: httpx.AsyncClient, redis_server: RedisServer
) -> None:
    secret = {"DRIFT_SHARE_SECRET": "fleet-signing-key"}
    leader = await start(simulator, "a", **secret)
    await until(lambda: all_ready(http, [leader]), what="leader ready")
    world = simulator.world
    assert world is not None
    index = world.perp_indexes()[0]
    redis = Redis.from_url(redis_server.url)
    try:
        perp: list[str] = []

        async def published() -> bool:
            records = await redis.hgetall("driftshare:mainnet:default:records")
            perp[:] = [k.decode() for k, v in records.items() if b'"k":"perp"' in v]
            return bool(perp)

        await until(published, within=10, what="leader published its perp markets")

        async def pruned() -> bool:
            return bool((await leader.stats(http))["fleet"]["pruned"])

        # Planted once the leader has dropped what it does not subscribe to from Redis.
        await until(pruned, within=10, what="leader pruned Redis")
        pubkey = perp[0]
        record = AccountRecord(pubkey, "perp", 10**9, b"\0" * 8)
        forged = record_message(record, time.time(), 1, "x")
        text = encode(forged, Signer(b"wrong-key", "default", CHAIN))
        # Beside the real record, so a joiner's load meets it as well as the channel.
        await redis.hset("driftshare:mainnet:default:records", "forged", text)
        follower = await start(simulator, "b", **secret)
        await until(lambda: all_ready(http, [leader, follower]), what="follower ready")
        await redis.publish("driftshare:mainnet:default:updates", text)

        async def refused() -> bool:
            return 'drift_fleet_records_rejected_total{network="mainnet"} 2.0' in (
                await follower.metrics(http)
            )

        await until(refused, within=10, what="both forged copies refused")
        leader_markets = _numbers(await leader.get(http, "/api/markets"))
        assert any(row[0] == index for row in leader_markets)
        assert _numbers(await follower.get(http, "/api/markets")) == leader_markets
    finally:
        await redis.aclose()


async def test_a_protected_redis_carries_the_fleet_and_its_password_shows_nowhere(
    simulator: Simulator,
    protected_redis: RedisServer,
    http: httpx.AsyncClient,
    serve: StartServe,
) -> None:
    url = protected_redis.url
    assert REDIS_PASSWORD in url
    procs = [await serve(f"{simulator.http_url}/?api-key=a", url, env=FLEET_ENV)]
    await until(lambda: all_ready(http, procs), what="leader ready")
    procs.append(await serve(f"{simulator.http_url}/?api-key=b", url, env=FLEET_ENV))
    await until(lambda: all_ready(http, procs), what="follower ready")
    stats = [await p.stats(http) for p in procs]
    assert sorted(s["fleet"]["role"] for s in stats) == ["follower", "leader"]
    scheme = "rediss" if protected_redis.tls else "redis"
    assert stats[1]["fleet"]["redis"].startswith(f"{scheme}://***@127.0.0.1:")
    by_client = simulator.stats()["http_requests"]["by_client"]
    assert by_client.get(key_client("b"), 0) == 1  # getGenesisHash; the rest via Redis
    for proc, found in zip(procs, stats, strict=True):
        assert REDIS_PASSWORD not in json.dumps(found)
        assert REDIS_PASSWORD not in await proc.metrics(http)
        assert REDIS_PASSWORD not in (await http.get(proc.url + "/")).text
        log = proc.log_text()
        assert "joins at" in log  # the line that names the Redis URL
        assert REDIS_PASSWORD not in log


async def test_a_member_of_another_chain_refuses_to_join_with_one_error(
    simulator_factory: SimulatorFactory, start: Start, http: httpx.AsyncClient
) -> None:
    # Two simulators are two chains (each its own genesis hash), sharing one Redis.
    first, other = await simulator_factory(), await simulator_factory()
    leader = await start(first, "a")
    await until(lambda: all_ready(http, [leader]), what="leader ready")
    stranger = await start(other, "b")
    await until(lambda: all_ready(http, [stranger], fleet=False), what="the other member up")
    fleet = (await stranger.stats(http))["fleet"]
    assert fleet["role"] == "standalone"
    assert "another chain" in fleet["refused"]
    assert (await leader.stats(http))["fleet"]["role"] == "leader"
    errors = [line for line in stranger.log_text().splitlines() if "another chain" in line]
    assert len(errors) == 1
    assert other.stats()["http_requests"]["total"] > 1  # it serves its own chain
