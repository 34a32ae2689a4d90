"""The simulator's HTTP JSON-RPC: node shapes, errors, batch, filters, limits, stats, lifecycle."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import math
import signal
import subprocess
from typing import Any

import based58
import httpx
import pytest
import zstandard
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.types import DataSliceOpts, MemcmpOpts
from solders.pubkey import Pubkey

from bench import _forkserver
from driftshare.sim import SimConfigError, Simulator
from driftshare.sim.limits import ClientLimits, TokenBucket
from driftshare.sim.pytest_plugin import SimulatorFactory
from driftshare.sim.rpc import API_VERSION
from driftshare.sim.server import RATE_LIMIT_MESSAGE
from driftshare.sim.store import Account

OWNER = Pubkey.from_string("Stake11111111111111111111111111111111111111")
OTHER_OWNER = Pubkey.from_string("Vote111111111111111111111111111111111111111")


def _put(sim: Simulator, data: bytes, *, owner: Pubkey = OWNER, lamports: int = 7) -> Pubkey:
    pubkey = Pubkey.new_unique()
    sim.store.put(pubkey, Account(data=data, owner=owner, lamports=lamports))
    return pubkey


async def _rpc(
    sim: Simulator, method: str, params: list[Any] | None = None, *, url: str | None = None
) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
    async with httpx.AsyncClient() as http:
        return await http.post(url or sim.http_url, json=body)


async def _result(sim: Simulator, method: str, params: list[Any] | None = None) -> Any:
    response = await _rpc(sim, method, params)
    assert response.status_code == 200
    payload = response.json()
    assert "error" not in payload, payload
    return payload["result"]


async def _error(sim: Simulator, method: str, params: list[Any] | None = None) -> dict[str, Any]:
    response = await _rpc(sim, method, params)
    assert response.status_code == 200
    payload = response.json()
    assert payload["id"] == 1
    assert "result" not in payload
    error: dict[str, Any] = payload["error"]
    return error


async def test_solana_py_round_trips_every_method(simulator: Simulator) -> None:
    key = _put(simulator, b"\x01\x02hello drift", lamports=1234)
    other = _put(simulator, b"\x09" * 40, lamports=1)
    missing = Pubkey.new_unique()
    client = AsyncClient(simulator.http_url, commitment=Confirmed)
    try:
        info = (await client.get_account_info(key)).value
        assert info is not None
        assert (info.data, info.lamports, info.owner) == (b"\x01\x02hello drift", 1234, OWNER)

        many = (await client.get_multiple_accounts([key, missing, other])).value
        assert [a.data if a else None for a in many] == [b"\x01\x02hello drift", None, b"\x09" * 40]

        by_memcmp = await client.get_program_accounts(
            OWNER,
            encoding="base64",
            filters=[MemcmpOpts(offset=2, bytes=based58.b58encode(b"hello").decode())],
        )
        assert [a.pubkey for a in by_memcmp.value] == [key]
        by_size = await client.get_program_accounts(OWNER, encoding="base64", filters=[40])
        assert [a.pubkey for a in by_size.value] == [other]

        sliced = await client.get_account_info(key, data_slice=DataSliceOpts(offset=2, length=5))
        assert sliced.value is not None
        assert sliced.value.data == b"hello"

        assert (await client.get_slot()).value == simulator.store.slot
        assert await client.is_connected()
        assert (await client.get_version()).value.solana_core == API_VERSION
        first = (await client.get_latest_blockhash()).value
        await simulator.step()
        second = (await client.get_latest_blockhash()).value
        assert first.blockhash != second.blockhash
        assert second.last_valid_block_height > first.last_valid_block_height
        assert (await client.get_balance(key)).value == 1234
        assert (await client.get_balance(missing)).value == 0
        parsed = (await client.get_account_info_json_parsed(key)).value
        assert parsed is not None
        assert parsed.data == b"\x01\x02hello drift"
    finally:
        await client.close()


async def test_account_and_missing_account_have_node_shapes(simulator: Simulator) -> None:
    key = _put(simulator, b"\x00\xff\x10", lamports=99)
    found = await _result(simulator, "getAccountInfo", [str(key), {"encoding": "base64"}])
    assert found == {
        "context": {"slot": simulator.store.slot, "apiVersion": API_VERSION},
        "value": {
            "data": [base64.b64encode(b"\x00\xff\x10").decode(), "base64"],
            "executable": False,
            "lamports": 99,
            "owner": str(OWNER),
            "rentEpoch": 18446744073709551615,
            "space": 3,
        },
    }
    missing = await _rpc(simulator, "getAccountInfo", [str(Pubkey.new_unique())])
    assert missing.json() == {
        "jsonrpc": "2.0",
        "result": {
            "context": {"slot": simulator.store.slot, "apiVersion": API_VERSION},
            "value": None,
        },
        "id": 1,
    }


async def test_encodings(simulator: Simulator) -> None:
    small = _put(simulator, b"small data")
    big = _put(simulator, bytes(range(256)))

    async def data(key: Pubkey, config: dict[str, Any] | None = None) -> Any:
        params: list[Any] = [str(key)] if config is None else [str(key), config]
        return (await _result(simulator, "getAccountInfo", params))["value"]["data"]

    assert await data(small) == based58.b58encode(b"small data").decode()
    assert await data(small, {"encoding": "base58"}) == [
        based58.b58encode(b"small data").decode(),
        "base58",
    ]
    packed, name = await data(big, {"encoding": "base64+zstd"})
    assert name == "base64+zstd"
    assert zstandard.ZstdDecompressor().decompress(base64.b64decode(packed)) == bytes(range(256))
    assert await data(big, {"encoding": "jsonParsed"}) == [
        base64.b64encode(bytes(range(256))).decode(),
        "base64",
    ]
    assert await data(big, {"encoding": "base64", "dataSlice": {"offset": 250, "length": 10}}) == [
        base64.b64encode(bytes(range(250, 256))).decode(),
        "base64",
    ]
    too_big = await _error(simulator, "getAccountInfo", [str(big), {"encoding": "base58"}])
    assert too_big["code"] == -32600
    assert "please use Base64 encoding" in too_big["message"]


async def test_error_codes(simulator: Simulator) -> None:
    unknown = await _error(simulator, "getEverything")
    assert unknown == {"code": -32601, "message": "Method not found"}

    async with httpx.AsyncClient() as http:
        garbage = await http.post(simulator.http_url, content=b'{"jsonrpc": "2.0", "id": 1,')
    assert garbage.status_code == 200
    assert garbage.json() == {
        "jsonrpc": "2.0",
        "error": {"code": -32700, "message": "Parse error"},
        "id": None,
    }

    bad_key = await _error(simulator, "getAccountInfo", ["not-a-key"])
    assert bad_key["code"] == -32602
    assert bad_key["message"].startswith("Invalid params: ")
    bad_encoding = await _error(simulator, "getAccountInfo", [str(OWNER), {"encoding": "base1000"}])
    assert bad_encoding["code"] == -32602
    assert "encoding" in bad_encoding["message"]
    assert (await _error(simulator, "getAccountInfo", [str(OWNER), 5]))["code"] == -32602
    assert (await _error(simulator, "getHealth", [1]))["code"] == -32602
    assert (await _error(simulator, "getBalance"))["code"] == -32602

    not_reached = await _error(
        simulator, "getSlot", [{"minContextSlot": simulator.store.slot + 10}]
    )
    assert not_reached == {
        "code": -32016,
        "message": "Minimum context slot has not been reached",
        "data": {"contextSlot": simulator.store.slot},
    }


async def test_multiple_accounts_takes_at_most_100_keys(simulator: Simulator) -> None:
    key = _put(simulator, b"x")
    hundred = [str(key)] * 100
    ok = await _result(simulator, "getMultipleAccounts", [hundred, {"encoding": "base64"}])
    assert len(ok["value"]) == 100
    too_many = await _error(simulator, "getMultipleAccounts", [[*hundred, str(key)]])
    assert too_many["code"] == -32602
    assert "Too many inputs provided; max 100" in too_many["message"]


async def test_batch_is_answered_as_an_array(simulator: Simulator) -> None:
    batch = [
        {"jsonrpc": "2.0", "id": "a", "method": "getSlot"},
        {"jsonrpc": "2.0", "id": 2, "method": "nope"},
        {"jsonrpc": "2.0", "method": "getHealth"},
        {"jsonrpc": "2.0", "id": 3, "method": "getHealth", "params": []},
        7,
    ]
    async with httpx.AsyncClient() as http:
        answer = (await http.post(simulator.http_url, json=batch)).json()
        empty = (await http.post(simulator.http_url, json=[])).json()
    assert answer == [
        {"jsonrpc": "2.0", "result": simulator.store.slot, "id": "a"},
        {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": 2},
        {"jsonrpc": "2.0", "result": "ok", "id": 3},
        {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid request"}, "id": None},
    ]
    assert empty["error"]["code"] == -32600


async def test_program_accounts_filters_and_context(simulator: Simulator) -> None:
    a = _put(simulator, b"AAAA-one")
    b = _put(simulator, b"AAAB-two")
    c = _put(simulator, b"AAAA-three")
    _put(simulator, b"AAAA-one", owner=OTHER_OWNER)

    async def keys(*filters: dict[str, Any], with_context: bool = False) -> list[str]:
        config = {"encoding": "base64", "filters": list(filters), "withContext": with_context}
        result = await _result(simulator, "getProgramAccounts", [str(OWNER), config])
        if with_context:
            assert result["context"] == {"slot": simulator.store.slot, "apiVersion": API_VERSION}
            result = result["value"]
        return sorted(entry["pubkey"] for entry in result)

    assert await keys() == sorted(map(str, (a, b, c)))
    base58_aaaa = based58.b58encode(b"AAAA").decode()
    assert await keys({"memcmp": {"offset": 0, "bytes": base58_aaaa}}) == sorted([str(a), str(c)])
    b64_two = base64.b64encode(b"two").decode()
    assert await keys({"memcmp": {"offset": 5, "bytes": b64_two, "encoding": "base64"}}) == [str(b)]
    assert await keys(
        {"memcmp": {"offset": 0, "bytes": base58_aaaa}}, {"dataSize": 8}, with_context=True
    ) == [str(a)]
    assert await keys({"dataSize": 1000}) == []

    invalid = await _error(
        simulator,
        "getProgramAccounts",
        [str(OWNER), {"filters": [{"memcmp": {"offset": 0, "bytes": "0OIl"}}]}],
    )
    assert invalid["code"] == -32602
    too_many = await _error(
        simulator, "getProgramAccounts", [str(OWNER), {"filters": [{"dataSize": 1}] * 5}]
    )
    assert too_many["message"] == "Invalid params: Too many filters provided; max 4"


async def test_gzip_labelled_bodies_are_read_as_driftpy_sends_them(simulator: Simulator) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 5, "method": "getHealth"}).encode()
    headers = {"content-encoding": "gzip", "content-type": "application/json"}
    async with httpx.AsyncClient() as http:
        plain = await http.post(simulator.http_url, content=body, headers=headers)
        packed = await http.post(simulator.http_url, content=gzip.compress(body), headers=headers)
    assert plain.json() == {"jsonrpc": "2.0", "result": "ok", "id": 5}
    assert packed.json() == {"jsonrpc": "2.0", "result": "ok", "id": 5}


def test_token_bucket_grants_refuses_and_says_how_long_to_wait() -> None:
    now = [100.0]
    bucket = TokenBucket(rate=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.take() == 0.0
    assert bucket.take(2) == pytest.approx(1.0)
    now[0] += 10
    assert bucket.take(5) == 0.0, "a full bucket lets an oversized batch through"
    assert bucket.take() == pytest.approx(1.5), "and is in debt afterwards"


def test_client_limits_round_retry_after_up_and_cap_websockets() -> None:
    now = [0.0]
    limits = ClientLimits(rate=0.4, burst=None, max_ws=2, clock=lambda: now[0])
    assert limits.burst == 1
    assert limits.retry_after("a", 1) is None
    assert limits.retry_after("a", 1) == math.ceil(1 / 0.4)
    assert limits.retry_after("b", 1) is None
    assert [limits.open_ws("a"), limits.open_ws("a"), limits.open_ws("a")] == [True, True, False]
    limits.close_ws("a")
    assert limits.open_ws("a")
    assert ClientLimits(rate=None, burst=None, max_ws=1).retry_after("a", 10**6) is None


async def test_rate_limit_answers_429_with_retry_after(
    simulator_factory: SimulatorFactory,
) -> None:
    sim = await simulator_factory(rate_limit=0.01, burst=3)
    batch = [{"jsonrpc": "2.0", "id": i, "method": "getSlot"} for i in range(2)]
    async with httpx.AsyncClient() as http:
        assert (await http.post(sim.http_url, json=batch)).status_code == 200
        assert (await _rpc(sim, "getSlot")).status_code == 200
        limited = await _rpc(sim, "getSlot")
        other_client = await _rpc(sim, "getSlot", url=f"{sim.http_url}/?api-key=other-key")
        path_client = await _rpc(sim, "getSlot", url=f"{sim.http_url}/path-token")
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 100
    assert limited.json() == {
        "jsonrpc": "2.0",
        "error": {"code": 429, "message": RATE_LIMIT_MESSAGE},
        "id": 1,
    }
    assert other_client.status_code == 200
    assert path_client.status_code == 200
    stats = sim.stats()
    assert stats["rate_limited"] == 1
    assert stats["http_status"] == {"200": 4, "429": 1}


async def test_stats_count_requests_by_method_and_client(simulator: Simulator) -> None:
    await _rpc(simulator, "getSlot")
    await _rpc(simulator, "getSlot", url=f"{simulator.http_url}/?api-key=k1")
    await _rpc(simulator, "getHealth", url=f"{simulator.http_url}/tok")
    await _rpc(simulator, "noSuchMethod", url=f"{simulator.http_url}/tok")
    async with httpx.AsyncClient() as http:
        await http.post(
            simulator.http_url, json=[{"jsonrpc": "2.0", "id": 1, "method": "getSlot"}] * 3
        )
        served = (await http.get(f"{simulator.http_url}/_sim/stats")).json()
        metrics = (await http.get(f"{simulator.http_url}/_sim/metrics")).text
    assert served == simulator.stats()
    calls = served["calls"]
    assert (calls["total"], calls["by_method"]) == (
        7,
        {"getSlot": 5, "getHealth": 1, "(unknown)": 1},
    )
    # By client: this host's plain URL (one call, then a batch of three), the api-key's, the
    # path token's; keyed clients by a label that is not their key.
    by_client = calls["by_client"]
    assert by_client["ip:127.0.0.1"] == {"getSlot": 4}
    expected = [{"getSlot": 4}, {"getSlot": 1}, {"getHealth": 1, "(unknown)": 1}]
    assert sorted(sorted(m.items()) for m in by_client.values()) == sorted(
        sorted(m.items()) for m in expected
    )
    assert not any("k1" in name or "tok" in name for name in by_client), "secrets stay out"
    clients = served["http_requests"]["by_client"]
    assert served["http_requests"]["total"] == 5
    assert clients["ip:127.0.0.1"] == 2
    assert sorted(clients.values()) == [1, 2, 2]
    assert not any("k1" in name or "tok" in name for name in clients), "secrets stay out of stats"
    assert served["http_status"] == {"200": 5}
    assert 'sim_rpc_calls_total{method="getSlot"} 5.0' in metrics
    assert "sim_http_requests_total" in metrics
    assert "drift_client_ref_count" not in metrics, "the simulator has its own registry"


async def test_stop_closes_every_socket_and_task(simulator_factory: SimulatorFactory) -> None:
    before = asyncio.all_tasks()
    sim = await simulator_factory()
    url = sim.http_url
    assert (await _rpc(sim, "getHealth")).status_code == 200
    await sim.stop()
    assert asyncio.all_tasks() - before == set()
    with pytest.raises(httpx.ConnectError):
        await _rpc(sim, "getHealth", url=url)
    with pytest.raises(RuntimeError, match="not started"):
        _ = sim.http_url


def test_bad_config_is_a_clear_error() -> None:
    with pytest.raises(SimConfigError, match="tick_s: must be > 0"):
        Simulator(tick_s=0)
    with pytest.raises(SimConfigError, match="unknown simulator option"):
        Simulator(colour="blue")
    with pytest.raises(SimConfigError, match="unknown fault spec"):
        Simulator(faults=["explode"])


def _run_cli(*args: str) -> subprocess.Popen[str] | _forkserver.Forked:
    return _forkserver.popen(
        ["-m", "driftshare", "sim", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_prints_one_ready_line_and_stops_cleanly(sig: signal.Signals) -> None:
    proc = _run_cli("--port", "0", "--markets", "0")
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().split()
        assert ready[:3] == ["driftshare", "sim", "ready:"]
        fields = dict(item.split("=", 1) for item in ready[3:])
        http_port = int(fields["http"].rsplit(":", 1)[1])
        assert fields["ws"] == f"ws://127.0.0.1:{http_port + 1}"
        assert (fields["markets"], fields["seed"]) == ("0", "0")
        health = httpx.post(fields["http"], json={"jsonrpc": "2.0", "id": 1, "method": "getHealth"})
        assert health.json()["result"] == "ok"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "Traceback" not in err
    assert out == ""


def test_cli_rejects_a_bad_fault_without_a_traceback() -> None:
    proc = _run_cli("--port", "0", "--markets", "0", "--fault", "fail=404")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "Traceback" not in err
    assert "fail" in err


async def test_each_simulator_is_a_chain_of_its_own(
    simulator_factory: SimulatorFactory,
) -> None:
    """getGenesisHash is stable for one simulator and differs between two with equal seeds."""
    first = await simulator_factory(markets=0)
    second = await simulator_factory(markets=0)
    hashes = []
    for sim in (first, first, second):
        async with AsyncClient(sim.http_url) as client:
            hashes.append(str((await client.get_genesis_hash()).value))
    assert hashes[0] == hashes[1]
    assert hashes[0] != hashes[2]
