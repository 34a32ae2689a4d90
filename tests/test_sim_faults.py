"""Simulator faults, each seen from a client: switched by HTTP, by Python and at start-up."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import time

import aiohttp
import httpx
import pytest
import websockets
from solana.rpc.websocket_api import connect
from solders.pubkey import Pubkey

from conftest import eventually
from driftshare.sim import Simulator
from driftshare.sim.faults import FaultError, parse_spec
from driftshare.sim.pytest_plugin import SimulatorFactory
from driftshare.sim.server import RATE_LIMIT_MESSAGE
from driftshare.sim.store import Account

OWNER = Pubkey.from_string("Stake11111111111111111111111111111111111111")
TIMEOUT_S = 5.0
HEALTH = {"jsonrpc": "2.0", "id": 1, "method": "getHealth"}


_until = functools.partial(eventually, within=TIMEOUT_S)


async def _post_faults(sim: Simulator, body: object) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(f"{sim.http_url}/_sim/faults", json=body)


async def _health(sim: Simulator, *, read_timeout_s: float = TIMEOUT_S) -> httpx.Response:
    async with httpx.AsyncClient(timeout=read_timeout_s) as http:
        return await http.post(sim.http_url, json=HEALTH)


async def _account_data(sim: Simulator, key: Pubkey) -> bytes:
    params = [str(key), {"encoding": "base64"}]
    async with httpx.AsyncClient() as http:
        body = {"jsonrpc": "2.0", "id": 1, "method": "getAccountInfo", "params": params}
        answer = (await http.post(sim.http_url, json=body)).json()
    return base64.b64decode(answer["result"]["value"]["data"][0])


async def test_fail_next_requests_over_http(simulator: Simulator) -> None:
    switched = await _post_faults(simulator, {"fail": {"status": 429, "count": 2}})
    assert switched.status_code == 200
    assert switched.json()["fail"] == {"status": 429, "remaining": 2}
    first, second, third = [await _health(simulator) for _ in range(3)]
    assert [first.status_code, second.status_code, third.status_code] == [429, 429, 200]
    assert int(first.headers["Retry-After"]) >= 1
    assert first.json()["error"] == {"code": 429, "message": RATE_LIMIT_MESSAGE}
    assert third.json()["result"] == "ok"


@pytest.mark.parametrize("status", [500, 503])
async def test_fail_with_server_errors_from_python(simulator: Simulator, status: int) -> None:
    simulator.faults.fail_next(1, status)
    failed = await _health(simulator)
    assert failed.status_code == status
    assert failed.json()["error"]["code"] == -32603
    assert (await _health(simulator)).status_code == 200
    assert simulator.stats()["http_status"] == {"200": 1, str(status): 1}


async def test_latency_delays_every_answer(simulator: Simulator) -> None:
    simulator.faults.set_latency(2000)
    with pytest.raises(httpx.ReadTimeout):
        await _health(simulator, read_timeout_s=0.2)
    simulator.faults.set_latency(0)
    assert (await _health(simulator)).status_code == 200


async def test_malformed_answers_are_not_json(simulator: Simulator) -> None:
    assert (await _post_faults(simulator, {"malformed": 2})).status_code == 200
    for _ in range(2):
        broken = await _health(simulator)
        assert broken.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(broken.text)
    assert (await _health(simulator)).json()["result"] == "ok"


async def test_hide_and_restore_an_account(simulator: Simulator) -> None:
    key = Pubkey.new_unique()
    simulator.store.put(key, Account(data=b"before", owner=OWNER, lamports=1))
    await _post_faults(simulator, {"spec": [f"hide={key}"]})
    params = [[str(key)], {"encoding": "base64"}]
    body = {"jsonrpc": "2.0", "id": 1, "method": "getMultipleAccounts", "params": params}
    async with httpx.AsyncClient() as http:
        answer = (await http.post(simulator.http_url, json=body)).json()
    assert answer["result"]["value"] == [None]

    async with connect(simulator.ws_url) as ws:
        await ws.account_subscribe(key, encoding="base64")
        await ws.recv()
        simulator.store.put(key, Account(data=b"hidden", owner=OWNER, lamports=1))
        simulator.faults.restore(key)
        simulator.store.put(key, Account(data=b"after", owner=OWNER, lamports=1))
        # The first notification is the one after the restore: the hidden write sent none.
        notification = (await asyncio.wait_for(ws.recv(), TIMEOUT_S))[0]
        assert notification.result.value.data == b"after"
    assert await _account_data(simulator, key) == b"after"


async def test_corrupt_and_restore_an_account(simulator: Simulator) -> None:
    key = Pubkey.new_unique()
    data = bytes(range(1, 41))
    simulator.store.put(key, Account(data=data, owner=OWNER, lamports=1))
    await _post_faults(simulator, {"corrupt": {"pubkey": str(key), "mode": "truncate"}})
    assert await _account_data(simulator, key) == data[:20]
    simulator.faults.corrupt(key, "garble")
    assert await _account_data(simulator, key) == bytes(b ^ 0xFF for b in data)

    async with connect(simulator.ws_url) as ws:
        await ws.account_subscribe(key, encoding="base64")
        await ws.recv()
        simulator.store.put(key, Account(data=b"\x00\x01", owner=OWNER, lamports=1))
        notification = (await asyncio.wait_for(ws.recv(), TIMEOUT_S))[0]
        assert notification.result.value.data == b"\xff\xfe"

    await _post_faults(simulator, {"restore": str(key)})
    assert await _account_data(simulator, key) == b"\x00\x01"


async def test_stall_stops_notifications_but_not_subscribing(simulator: Simulator) -> None:
    key = Pubkey.new_unique()
    simulator.store.put(key, Account(data=b"a", owner=OWNER, lamports=1))
    async with connect(simulator.ws_url) as ws:
        await _post_faults(simulator, {"stall": True})
        await ws.account_subscribe(key, encoding="base64")
        assert isinstance((await asyncio.wait_for(ws.recv(), TIMEOUT_S))[0].result, int)
        simulator.store.put(key, Account(data=b"stalled", owner=OWNER, lamports=1))
        await simulator.step()
        simulator.faults.set_stall(False)
        simulator.store.put(key, Account(data=b"flowing", owner=OWNER, lamports=1))
        # The first message after the stall is the later change: the stalled one never came.
        first = (await asyncio.wait_for(ws.recv(), TIMEOUT_S))[0]
        assert first.result.value.data == b"flowing"


async def test_drop_ws_cuts_every_websocket(simulator: Simulator) -> None:
    async with connect(simulator.ws_url) as one, connect(simulator.ws_url) as two:
        await _until(lambda: simulator.stats()["ws_connections"]["open"] == 2, "both open")
        assert (await _post_faults(simulator, {"drop_ws": True})).status_code == 200
        for ws in (one, two):
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), TIMEOUT_S)
    await _until(lambda: simulator.stats()["ws_connections"]["open"] == 0, "all dropped")
    assert await simulator.faults.drop_ws() == 0


async def test_down_refuses_connections_then_comes_back(simulator: Simulator) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(simulator.ws_url)
        switched = await _post_faults(simulator, {"down_s": 1.0})
        assert switched.json()["down"] is True
        with pytest.raises(httpx.ConnectError):
            await _health(simulator)
        with pytest.raises(ConnectionRefusedError):
            await websockets.connect(simulator.ws_url)
        closing = await ws.receive(timeout=TIMEOUT_S)
        assert closing.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        )

    async def healthy() -> bool:
        try:
            return (await _health(simulator)).status_code == 200
        except httpx.TransportError:
            return False

    await _until(healthy, "the simulator comes back by itself")
    async with connect(simulator.ws_url) as back:
        await back.slot_subscribe()
        assert isinstance((await back.recv())[0].result, int)
    assert simulator.faults.state()["down"] is False


async def test_a_connection_that_outlives_going_down_is_served_nothing(
    simulator: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection accepted as the server goes down is registered after go_down's sweep;
    it must not keep answering (a prober kept on one would see a dead endpoint alive)."""
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as http:
        assert (await http.post(simulator.http_url, json=HEALTH)).status_code == 200
        # The sweep misses this client's kept-alive connection, as it misses a late one.
        monkeypatch.setattr(aiohttp.web_server.Server, "connections", property(lambda _: []))
        await simulator.faults.down(600)
        with pytest.raises(httpx.TransportError):
            await http.post(simulator.http_url, json=HEALTH)
    assert simulator.stats()["http_status"] == {"200": 1}


async def test_clear_brings_everything_back(simulator: Simulator) -> None:
    key = Pubkey.new_unique()
    simulator.store.put(key, Account(data=b"data", owner=OWNER, lamports=1))
    specs = ("fail=503:9", "latency=10", "stall", "malformed=4", f"corrupt={key}", "down=600")
    trading = ("drop-tx=3", "lost-reply=timeout:2", "land-delay=5", "blockhash-age=10")
    for spec in (*specs, *trading, "grpc-refuse=resource_exhausted:3"):
        await simulator.faults.apply_spec(spec)
    with pytest.raises(httpx.ConnectError):
        await _health(simulator)
    await simulator.faults.clear()
    assert (await _health(simulator)).json()["result"] == "ok"
    assert await _account_data(simulator, key) == b"data"
    async with httpx.AsyncClient() as http:
        shown = (await http.get(f"{simulator.http_url}/_sim/faults")).json()
    assert shown == {
        "fail": {"status": 429, "remaining": 0},
        "latency_ms": 0.0,
        "stall": False,
        "down": False,
        "malformed_remaining": 0,
        "corrupted": {},
        "hidden": [],
        "grpc_refuse": {"status": "UNAVAILABLE", "remaining": 0},
        "drop_tx_remaining": 0,
        "lost_reply": {"mode": "429", "remaining": 0},
        "land_delay_s": 0.0,
        "blockhash_max_age": 150,
    }


async def test_clear_over_http(simulator: Simulator) -> None:
    simulator.faults.fail_next(5, 500)
    cleared = await _post_faults(simulator, {"clear": True})
    assert cleared.json()["fail"]["remaining"] == 0
    assert (await _health(simulator)).status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"explode": True}, "explode"),
        ({"fail": {"status": 404}}, "fail.status"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"corrupt": {"pubkey": "nope"}}, "invalid pubkey"),
        ({"spec": ["warp=9"]}, "unknown fault spec"),
        ([1, 2], "JSON object"),
    ],
)
async def test_bad_fault_input_is_a_400_with_a_message(
    simulator: Simulator, body: object, message: str
) -> None:
    simulator.faults.set_latency(5)
    answer = await _post_faults(simulator, body)
    assert answer.status_code == 400
    assert message in answer.json()["error"]
    assert simulator.faults.state()["latency_ms"] == 5, "nothing changes on bad input"


async def test_non_json_fault_body_is_a_400(simulator: Simulator) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{simulator.http_url}/_sim/faults", content=b"stall")
    assert answer.status_code == 400
    assert answer.json() == {"error": "body must be a JSON object"}


async def test_start_up_specs(simulator_factory: SimulatorFactory) -> None:
    sim = await simulator_factory(faults=["fail=503:1", "malformed=1", "stall"])
    assert (await _health(sim)).status_code == 503
    with pytest.raises(json.JSONDecodeError):
        json.loads((await _health(sim)).text)
    assert sim.faults.state()["stall"] is True
    assert (await _health(sim)).json()["result"] == "ok"


async def test_admin_routes_are_not_rate_limited_or_counted(
    simulator_factory: SimulatorFactory,
) -> None:
    sim = await simulator_factory(rate_limit=0.01, burst=1)
    async with httpx.AsyncClient() as http:
        for _ in range(3):
            assert (await http.get(f"{sim.http_url}/_sim/stats")).status_code == 200
            assert (await http.get(f"{sim.http_url}/_sim/faults")).status_code == 200
    assert (await _health(sim)).status_code == 200
    assert sim.stats()["http_requests"]["total"] == 1


def test_parse_spec() -> None:
    assert parse_spec("fail=503:2") == {"fail": {"status": 503, "count": 2}}
    assert parse_spec("fail=429") == {"fail": {"status": 429, "count": 1}}
    assert parse_spec("latency=200") == {"latency_ms": 200.0}
    assert parse_spec("stall") == {"stall": True}
    assert parse_spec("stall=off") == {"stall": False}
    assert parse_spec("down=10") == {"down_s": 10.0}
    assert parse_spec("drop-ws") == {"drop_ws": True}
    assert parse_spec("malformed") == {"malformed": 1}
    assert parse_spec("clear") == {"clear": True}
    for bad in ("fail=x", "latency=soon", "stall=maybe", "nothing"):
        with pytest.raises(FaultError):
            parse_spec(bad)


async def test_an_oracle_write_over_http_moves_the_price_and_says_when() -> None:
    async with Simulator(markets=2, tick_s=3600.0) as sim:
        assert sim.world is not None
        old = sim.world.oracle_price(0)
        before = time.monotonic()
        async with httpx.AsyncClient() as http:
            url = f"{sim.http_url}/_sim/oracle"
            answer = await http.post(url, json={"market": 0, "price": old * 1.01})
            bad_market = await http.post(url, json={"market": 9, "price": 1.0})
            bad_price = await http.post(url, json={"market": 0, "price": -1.0})
            bad_body = await http.post(url, json={"market": "0", "price": 1.0})
        assert answer.status_code == 200
        assert sim.world.oracle_price(0) == pytest.approx(old * 1.01, rel=1e-6)
        assert before <= answer.json()["written_at"] <= time.monotonic()
        assert [r.status_code for r in (bad_market, bad_price, bad_body)] == [400, 400, 400]
        assert "market" in bad_body.json()["error"]
        assert sim.world.oracle_price(0) == pytest.approx(old * 1.01, rel=1e-6)


async def test_an_oracle_write_without_a_world_is_not_found() -> None:
    async with Simulator(markets=0) as sim, httpx.AsyncClient() as http:
        answer = await http.post(f"{sim.http_url}/_sim/oracle", json={"market": 0, "price": 1.0})
    assert answer.status_code == 404
