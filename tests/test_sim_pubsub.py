"""The simulator's WebSocket PubSub: node-format notifications, unsubscribe, cap, stats."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import based58
import pytest
from driftpy.types import get_ws_url
from solana.rpc.websocket_api import connect
from solders.pubkey import Pubkey
from solders.rpc.responses import AccountNotification, ProgramNotification, SlotNotification
from solders.signature import Signature

from conftest import eventually
from driftshare.sim import Simulator
from driftshare.sim.pytest_plugin import SimulatorFactory
from driftshare.sim.store import Account

OWNER = Pubkey.from_string("Stake11111111111111111111111111111111111111")
TIMEOUT_S = 5.0


def _put(sim: Simulator, key: Pubkey, data: bytes, *, lamports: int = 1) -> None:
    sim.store.put(key, Account(data=data, owner=OWNER, lamports=lamports))


_until = functools.partial(eventually, within=TIMEOUT_S, every_s=0.01)


class _Raw:
    """A plain JSON WebSocket client, to see the exact text the simulator sends."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = iter(range(1, 10**6))

    async def call(self, method: str, params: list[Any] | None = None) -> Any:
        request_id = next(self._ids)
        await self.ws.send_json(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or []}
        )
        answer = await self.next()
        assert answer["id"] == request_id
        return answer

    async def next(self) -> Any:
        return json.loads(await self.ws.receive_str(timeout=TIMEOUT_S))


@asynccontextmanager
async def _raw(url: str) -> AsyncIterator[_Raw]:
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        yield _Raw(ws)


def test_ws_url_is_where_driftpy_looks(simulator: Simulator) -> None:
    assert get_ws_url(simulator.http_url) == simulator.ws_url
    assert get_ws_url(f"{simulator.http_url}/token") == f"{simulator.ws_url}/token"


async def test_account_notification_has_node_format(simulator: Simulator) -> None:
    key = Pubkey.new_unique()
    _put(simulator, key, b"before")
    async with _raw(simulator.ws_url) as ws:
        subscribed = await ws.call("accountSubscribe", [str(key), {"encoding": "base64"}])
        sub_id = subscribed["result"]
        assert isinstance(sub_id, int)
        _put(simulator, key, b"after", lamports=42)
        assert await ws.next() == {
            "jsonrpc": "2.0",
            "method": "accountNotification",
            "params": {
                "result": {
                    "context": {"slot": simulator.store.slot},
                    "value": {
                        "data": [base64.b64encode(b"after").decode(), "base64"],
                        "executable": False,
                        "lamports": 42,
                        "owner": str(OWNER),
                        "rentEpoch": 18446744073709551615,
                        "space": 5,
                    },
                },
                "subscription": sub_id,
            },
        }


async def test_solana_py_client_gets_account_program_and_slot_notifications(
    simulator: Simulator,
) -> None:
    key = Pubkey.new_unique()
    _put(simulator, key, b"v1")
    async with connect(simulator.ws_url) as ws:
        await ws.account_subscribe(key, encoding="base64")
        account_sub = (await ws.recv())[0].result
        await ws.program_subscribe(OWNER, encoding="base64")
        program_sub = (await ws.recv())[0].result
        await ws.slot_subscribe()
        slot_sub = (await ws.recv())[0].result
        assert len({account_sub, program_sub, slot_sub}) == 3

        _put(simulator, key, b"v2")
        account = (await asyncio.wait_for(ws.recv(), TIMEOUT_S))[0]
        program = (await asyncio.wait_for(ws.recv(), TIMEOUT_S))[0]
        assert isinstance(account, AccountNotification)
        assert account.subscription == account_sub
        assert account.result.value.data == b"v2"
        assert isinstance(program, ProgramNotification)
        assert program.subscription == program_sub
        assert program.result.value.pubkey == key
        assert program.result.value.account.data == b"v2"

        slot = await simulator.step()
        tick = (await asyncio.wait_for(ws.recv(), TIMEOUT_S))[0]
        assert isinstance(tick, SlotNotification)
        assert tick.subscription == slot_sub
        assert (tick.result.slot, tick.result.parent) == (slot, slot - 1)
        assert tick.result.root <= slot


async def test_program_subscription_applies_filters(simulator: Simulator) -> None:
    async with _raw(simulator.ws_url) as ws:
        wanted = based58.b58encode(b"KEEP").decode()
        config = {"encoding": "base64", "filters": [{"memcmp": {"offset": 0, "bytes": wanted}}]}
        sub_id = (await ws.call("programSubscribe", [str(OWNER), config]))["result"]
        skipped, kept = Pubkey.new_unique(), Pubkey.new_unique()
        _put(simulator, skipped, b"DROP this")
        simulator.store.put(
            Pubkey.new_unique(),
            Account(data=b"KEEP other owner", owner=Pubkey.new_unique(), lamports=1),
        )
        _put(simulator, kept, b"KEEP this")
        notification = await ws.next()
        assert notification["params"]["subscription"] == sub_id
        assert notification["params"]["result"]["value"]["pubkey"] == str(kept)


async def test_unsubscribe_stops_notifications(simulator: Simulator) -> None:
    key = Pubkey.new_unique()
    _put(simulator, key, b"a")
    async with _raw(simulator.ws_url) as ws:
        account_sub = (await ws.call("accountSubscribe", [str(key), {"encoding": "base64"}]))[
            "result"
        ]
        slot_sub = (await ws.call("slotSubscribe"))["result"]
        assert (await ws.call("accountUnsubscribe", [account_sub]))["result"] is True
        _put(simulator, key, b"b")
        await simulator.step()
        # The slot notification is sent after the account change would have been.
        assert (await ws.next())["params"]["subscription"] == slot_sub
        assert simulator.stats()["subscriptions"]["active"] == 1

        again = await ws.call("accountUnsubscribe", [account_sub])
        assert again["error"] == {"code": -32602, "message": "Invalid subscription id."}
        wrong_kind = await ws.call("accountUnsubscribe", [slot_sub])
        assert wrong_kind["error"]["code"] == -32602


async def test_ws_errors(simulator: Simulator) -> None:
    async with _raw(simulator.ws_url) as ws:
        await ws.ws.send_str("{not json")
        assert (await ws.next())["error"] == {"code": -32700, "message": "Parse error"}
        assert (await ws.call("getSlot"))["error"]["code"] == -32601
        assert (await ws.call("accountSubscribe", ["bad key"]))["error"]["code"] == -32602
        assert (await ws.call("slotSubscribe", [1]))["error"]["code"] == -32602
        for bad in ([], ["not a signature"], [str(Signature.default()), {"commitment": "soon"}]):
            assert (await ws.call("signatureSubscribe", bad))["error"]["code"] == -32602
        await ws.ws.send_json([{"jsonrpc": "2.0", "id": 9, "method": "slotSubscribe"}])
        batch = await ws.next()
        assert isinstance(batch, list)
        assert batch[0]["id"] == 9
        assert isinstance(batch[0]["result"], int)


async def test_connections_over_the_cap_are_refused_with_429(
    simulator_factory: SimulatorFactory,
) -> None:
    sim = await simulator_factory(max_ws_per_client=2)
    async with aiohttp.ClientSession() as session:
        first = await session.ws_connect(sim.ws_url)
        second = await session.ws_connect(sim.ws_url)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(sim.ws_url)
        assert refused.value.status == 429
        other = await session.ws_connect(f"{sim.ws_url}/other-token")
        assert sim.stats()["ws_connections"] == {"open": 3, "total": 3, "refused": 1}
        await first.close()
        await _until(lambda: sim.stats()["ws_connections"]["open"] == 2, "first closed")
        third = await session.ws_connect(sim.ws_url)
        for ws in (second, other, third):
            await ws.close()
    assert sim.stats()["rate_limited"] == 1


async def test_stats_count_subscriptions_and_notifications(simulator: Simulator) -> None:
    key = Pubkey.new_unique()
    _put(simulator, key, b"a")
    async with _raw(simulator.ws_url) as ws:
        await ws.call("accountSubscribe", [str(key), {"encoding": "base64"}])
        await ws.call("accountSubscribe", [str(key), {"encoding": "base64+zstd"}])
        await ws.call("slotSubscribe")
        _put(simulator, key, b"b")
        await simulator.step()
        notifications = [await ws.next() for _ in range(3)]
        assert [n["method"] for n in notifications] == [
            "accountNotification",
            "accountNotification",
            "slotNotification",
        ]
        stats = simulator.stats()
        assert stats["subscriptions"] == {
            "active": 3,
            "total": 3,
            "by_method": {"accountSubscribe": 2, "slotSubscribe": 1},
        }
        assert stats["notifications"] == {
            "total": 3,
            "by_method": {"accountNotification": 2, "slotNotification": 1},
        }
        assert stats["ws_connections"] == {"open": 1, "total": 1, "refused": 0}
    await _until(
        lambda: simulator.stats()["subscriptions"]["active"] == 0,
        "closing a connection ends its subscriptions",
    )


async def test_stop_closes_websockets(simulator_factory: SimulatorFactory) -> None:
    sim = await simulator_factory()
    async with _raw(sim.ws_url) as ws:
        await ws.call("slotSubscribe")
        await sim.stop()
        closing = await ws.ws.receive(timeout=TIMEOUT_S)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_background_clock_advances_slots(simulator_factory: SimulatorFactory) -> None:
    sim = await simulator_factory(tick_s=0.05)
    start = sim.store.slot
    async with _raw(sim.ws_url) as ws:
        sub_id = (await ws.call("slotSubscribe"))["result"]
        tick = await ws.next()
    assert tick["params"]["subscription"] == sub_id
    assert tick["params"]["result"]["slot"] > start
