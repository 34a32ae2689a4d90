"""Every method asked with no ``encoding`` answers in the validator's default for that method.

The defaults are agave's (``rpc/src/rpc.rs``, ``rpc_pubsub.rs``): getAccountInfo,
getProgramAccounts, accountSubscribe and programSubscribe send plain base58 ("binary");
getMultipleAccounts and simulateTransaction's accounts send base64; sendTransaction and
simulateTransaction read base58; getTransaction answers JSON.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import based58
import httpx
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from driftshare.sim import Simulator
from driftshare.sim.store import Account

OWNER = Pubkey.from_string("Stake11111111111111111111111111111111111111")
DATA = b"driftshare"


async def _call(sim: Simulator, method: str, params: list[Any]) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    async with httpx.AsyncClient() as http:
        answer = (await http.post(sim.http_url, json=body)).json()
    assert "error" not in answer, answer
    return answer["result"]


def _put(sim: Simulator) -> Pubkey:
    key = Pubkey.new_unique()
    sim.store.put(key, Account(DATA, OWNER, 1))
    return key


async def _notification(sim: Simulator, method: str, params: list[Any], key: Pubkey) -> Any:
    async with aiohttp.ClientSession() as session, session.ws_connect(sim.ws_url) as ws:
        await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        assert "result" in json.loads((await ws.receive()).data)
        sim.store.put(key, Account(DATA, OWNER, 2))
        note = json.loads((await ws.receive()).data)
    return note["params"]["result"]["value"]


BINARY = based58.b58encode(DATA).decode()
BASE64 = [base64.b64encode(DATA).decode(), "base64"]


async def test_get_account_info_defaults_to_binary(simulator: Simulator) -> None:
    key = _put(simulator)
    assert (await _call(simulator, "getAccountInfo", [str(key)]))["value"]["data"] == BINARY


async def test_get_multiple_accounts_defaults_to_base64(simulator: Simulator) -> None:
    key = _put(simulator)
    value = (await _call(simulator, "getMultipleAccounts", [[str(key)]]))["value"]
    assert value[0]["data"] == BASE64
    # A Drift market (over 128 bytes) is served too, as Drift's BulkAccountLoader asks for it.
    assert simulator.world is not None
    market = str(simulator.world.perp_market_pubkey(0))
    big = (await _call(simulator, "getMultipleAccounts", [[market]]))["value"][0]
    assert big["data"][1] == "base64"


async def test_get_program_accounts_defaults_to_binary(simulator: Simulator) -> None:
    _put(simulator)
    entries = await _call(simulator, "getProgramAccounts", [str(OWNER)])
    assert [entry["account"]["data"] for entry in entries] == [BINARY]


async def test_account_subscribe_defaults_to_binary(simulator: Simulator) -> None:
    key = _put(simulator)
    value = await _notification(simulator, "accountSubscribe", [str(key)], key)
    assert value["data"] == BINARY


async def test_program_subscribe_defaults_to_binary(simulator: Simulator) -> None:
    key = _put(simulator)
    value = await _notification(simulator, "programSubscribe", [str(OWNER)], key)
    assert value["account"]["data"] == BINARY


async def _transfer(sim: Simulator) -> tuple[VersionedTransaction, Pubkey]:
    payer = Keypair()
    await _call(sim, "requestAirdrop", [str(payer.pubkey()), 10**9])
    target = Pubkey.new_unique()
    ix = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=target, lamports=5))
    blockhash = (await _call(sim, "getLatestBlockhash", []))["value"]["blockhash"]
    message = MessageV0.try_compile(payer.pubkey(), [ix], [], Hash.from_string(blockhash))
    return VersionedTransaction(message, [payer]), target


async def test_send_transaction_reads_base58_by_default(simulator: Simulator) -> None:
    tx, _ = await _transfer(simulator)
    wire = based58.b58encode(bytes(tx)).decode()
    assert await _call(simulator, "sendTransaction", [wire]) == str(tx.signatures[0])


async def test_simulate_transaction_reads_base58_and_answers_base64(
    simulator: Simulator,
) -> None:
    tx, target = await _transfer(simulator)
    wire = based58.b58encode(bytes(tx)).decode()
    config = {"accounts": {"addresses": [str(target)]}}
    value = (await _call(simulator, "simulateTransaction", [wire, config]))["value"]
    assert value["err"] is None
    assert value["accounts"][0]["data"] == ["", "base64"]
    assert value["accounts"][0]["lamports"] == 5


async def test_get_transaction_defaults_to_json(simulator: Simulator) -> None:
    tx, _ = await _transfer(simulator)
    await _call(simulator, "sendTransaction", [based58.b58encode(bytes(tx)).decode()])
    await simulator.step()
    config = {"commitment": "confirmed", "maxSupportedTransactionVersion": 0}
    got = await _call(simulator, "getTransaction", [str(tx.signatures[0]), config])
    assert got["transaction"]["signatures"] == [str(tx.signatures[0])]
    assert got["transaction"]["message"]["accountKeys"][0] == str(tx.message.account_keys[0])
