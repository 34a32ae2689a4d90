"""Transactions on the simulator through solana-py: what lands, what is refused, and statuses."""

from __future__ import annotations

import base64
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any

import based58
import httpx
import pytest
from driftpy.address_lookup_table import get_address_lookup_table
from driftpy.drift_client import DriftClient
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.types import TxOpts
from solana.rpc.websocket_api import connect
from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from conftest import eventually
from driftshare.sim import Simulator
from driftshare.sim.lookup_tables import MARKET_LOOKUP_TABLES

LAMPORTS_PER_SIGNATURE = 5_000
"""Solana's base fee per signature."""
SOL = 10**9


@pytest.fixture
async def sim(simulator_factory: Any) -> Simulator:
    sim: Simulator = await simulator_factory(markets=1)
    return sim


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[AsyncClient]:
    connection = AsyncClient(sim.http_url)
    yield connection
    await connection.close()


async def _funded(client: AsyncClient, lamports: int = SOL) -> Keypair:
    wallet = Keypair()
    await client.request_airdrop(wallet.pubkey(), lamports)
    return wallet


def _pay(payer: Keypair, to: Pubkey, lamports: int) -> Instruction:
    return transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=to, lamports=lamports))


async def _tx(
    client: AsyncClient,
    payer: Keypair,
    ixs: Sequence[Instruction],
    *,
    signers: Sequence[Keypair] | None = None,
    tables: Sequence[Any] = (),
) -> VersionedTransaction:
    blockhash = (await client.get_latest_blockhash()).value.blockhash
    message = MessageV0.try_compile(payer.pubkey(), list(ixs), list(tables), blockhash)
    return VersionedTransaction(message, list(signers or [payer]))


async def _raw(sim: Simulator, method: str, params: list[Any]) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    async with httpx.AsyncClient() as http:
        response = await http.post(sim.http_url, json=body)
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


async def _send_raw(sim: Simulator, tx: VersionedTransaction, **config: Any) -> dict[str, Any]:
    encoded = base64.b64encode(bytes(tx)).decode()
    return await _raw(sim, "sendTransaction", [encoded, {"encoding": "base64", **config}])


def _all_accounted(sim: Simulator) -> None:
    """Every transaction received ended one way, for every fee payer."""
    for counts in sim.stats()["transactions"]["by_signer"].values():
        ends = ("refused", "landed", "failed", "dropped", "duplicate")
        assert counts["received"] == sum(counts[end] for end in ends), counts


async def _balance(client: AsyncClient, key: Pubkey) -> int:
    return (await client.get_balance(key)).value


async def _valid(sim: Simulator, blockhash: Any) -> bool:
    """``isBlockhashValid`` (solana-py has no method for it)."""
    answer = await _raw(sim, "isBlockhashValid", [str(blockhash)])
    valid: bool = answer["result"]["value"]
    return valid


async def _status(client: AsyncClient, signature: Signature) -> Any:
    return (await client.get_signature_statuses([signature])).value[0]


async def test_a_transfer_lands_once_and_charges_the_fee(
    sim: Simulator, client: AsyncClient
) -> None:
    payer = await _funded(client)
    target = Pubkey.new_unique()
    tx = await _tx(client, payer, [_pay(payer, target, 12_345)])

    signature = (await client.send_raw_transaction(bytes(tx))).value
    assert signature == tx.signatures[0]
    assert await _balance(client, target) == 12_345
    assert await _balance(client, payer.pubkey()) == SOL - 12_345 - LAMPORTS_PER_SIGNATURE

    status = await _status(client, signature)
    assert status.err is None
    assert status.slot == sim.store.slot
    assert str(status.confirmation_status) == "TransactionConfirmationStatus.Processed"
    await sim.step()
    assert str((await _status(client, signature)).confirmation_status).endswith("Confirmed")

    # The same bytes again: with preflight a node answers AlreadyProcessed, without it the
    # signature; either way nothing lands twice.
    again = await _send_raw(sim, tx)
    assert again["error"]["code"] == -32002
    assert again["error"]["data"]["err"] == "AlreadyProcessed"
    for _ in range(3):
        assert (await _send_raw(sim, tx, skipPreflight=True))["result"] == str(signature)
    assert await _balance(client, target) == 12_345
    counts = sim.stats()["transactions"]["by_signer"][str(payer.pubkey())]
    assert counts == {
        "received": 5,
        "refused": 1,
        "landed": 1,
        "failed": 0,
        "dropped": 0,
        "duplicate": 3,
    }


async def test_a_failed_instruction_changes_nothing_but_the_fee(
    sim: Simulator, client: AsyncClient
) -> None:
    payer = await _funded(client)
    first, second = Pubkey.new_unique(), Pubkey.new_unique()
    tx = await _tx(client, payer, [_pay(payer, first, 1_000), _pay(payer, second, 10 * SOL)])

    refused = await _send_raw(sim, tx)
    assert refused["error"]["code"] == -32002
    assert refused["error"]["message"] == (
        "Transaction simulation failed: Error processing Instruction 1: custom program error: 0x1"
    )
    assert refused["error"]["data"]["err"] == {"InstructionError": [1, {"Custom": 1}]}
    assert any("insufficient lamports" in line for line in refused["error"]["data"]["logs"])
    assert await _balance(client, payer.pubkey()) == SOL
    assert (await _status(client, tx.signatures[0])) is None

    landed = await _send_raw(sim, tx, skipPreflight=True)
    assert landed["result"] == str(tx.signatures[0])
    status = await _status(client, tx.signatures[0])
    assert status is not None
    assert status.err is not None
    assert await _balance(client, first) == 0
    assert await _balance(client, payer.pubkey()) == SOL - LAMPORTS_PER_SIGNATURE
    assert sim.stats()["transactions"]["failed"] == 1
    _all_accounted(sim)


async def test_an_instruction_of_an_unknown_program_is_unsupported(
    sim: Simulator, client: AsyncClient
) -> None:
    payer = await _funded(client)
    program = Pubkey.new_unique()
    ix = Instruction(program, b"\x01", [AccountMeta(payer.pubkey(), True, True)])
    answer = await _send_raw(sim, await _tx(client, payer, [ix]))
    assert answer["error"]["data"]["err"] == {"InstructionError": [0, "UnsupportedProgramId"]}
    assert any("unsupported instruction" in line for line in answer["error"]["data"]["logs"])


async def test_a_bad_signature_is_refused(sim: Simulator, client: AsyncClient) -> None:
    payer = await _funded(client)
    tx = await _tx(client, payer, [_pay(payer, Pubkey.new_unique(), 1)])
    forged = VersionedTransaction.populate(tx.message, [Keypair().sign_message(b"not it")])
    answer = await _send_raw(sim, forged)
    assert answer["error"] == {
        "code": -32003,
        "message": "Transaction signature verification failure",
    }
    # Without preflight the node forwards it and the leader drops it: it never lands.
    assert (await _send_raw(sim, forged, skipPreflight=True))["result"] == str(forged.signatures[0])
    assert await _status(client, forged.signatures[0]) is None
    assert await _balance(client, payer.pubkey()) == SOL
    simulated = await _raw(
        sim,
        "simulateTransaction",
        [base64.b64encode(bytes(forged)).decode(), {"encoding": "base64", "sigVerify": True}],
    )
    assert simulated["error"]["code"] == -32003


async def test_a_blockhash_is_valid_for_150_blocks(sim: Simulator, client: AsyncClient) -> None:
    payer = await _funded(client)
    latest = (await client.get_latest_blockhash()).value
    height = (await client.get_block_height()).value
    assert latest.last_valid_block_height == height + 150
    for _ in range(150):
        await sim.step()
    assert (await client.get_block_height()).value == latest.last_valid_block_height
    assert await _valid(sim, latest.blockhash) is True
    await sim.step()
    assert await _valid(sim, latest.blockhash) is False

    message = MessageV0.try_compile(
        payer.pubkey(), [_pay(payer, Pubkey.new_unique(), 1)], [], latest.blockhash
    )
    expired = VersionedTransaction(message, [payer])
    answer = await _send_raw(sim, expired)
    assert answer["error"]["code"] == -32002
    assert answer["error"]["message"] == "Transaction simulation failed: Blockhash not found"
    assert answer["error"]["data"]["err"] == "BlockhashNotFound"
    fee = await _raw(
        sim, "getFeeForMessage", [base64.b64encode(to_bytes_versioned(message)).decode()]
    )
    assert fee["result"]["value"] == LAMPORTS_PER_SIGNATURE  # still in the 300-hash queue


async def test_v0_through_drifts_lookup_tables(sim: Simulator, client: AsyncClient) -> None:
    world = sim.world
    assert world is not None
    tables = [await get_address_lookup_table(client, key) for key in MARKET_LOOKUP_TABLES]
    assert world.state_pubkey in tables[0].addresses
    assert world.perp_market(0).amm.oracle in tables[1].addresses
    payer = await _funded(client)
    target = Pubkey.new_unique()
    ix = _pay(payer, target, 777)
    # Extra read-only accounts ride along; the System program ignores them.
    reads = [world.state_pubkey, world.perp_market(0).amm.oracle]
    ix = Instruction(
        ix.program_id, ix.data, [*ix.accounts, *(AccountMeta(k, False, False) for k in reads)]
    )
    tx = await _tx(client, payer, [ix], tables=tables)
    assert isinstance(tx.message, MessageV0)
    assert len(tx.message.address_table_lookups) == 2

    signature = (await client.send_raw_transaction(bytes(tx))).value
    assert await _balance(client, target) == 777
    for _ in range(32):
        await sim.step()
    got = await _raw(sim, "getTransaction", [str(signature), {"maxSupportedTransactionVersion": 0}])
    assert got["result"]["version"] == 0
    assert got["result"]["meta"]["loadedAddresses"]["readonly"] == [str(k) for k in reads]
    assert got["result"]["meta"]["fee"] == LAMPORTS_PER_SIGNATURE
    legacy_only = await _raw(sim, "getTransaction", [str(signature)])
    assert legacy_only["error"]["code"] == -32015


async def test_fee_for_message_is_what_a_priced_transaction_pays(
    sim: Simulator, client: AsyncClient
) -> None:
    payer = await _funded(client)
    target = Pubkey.new_unique()
    limit, price = 200_000, 1_500
    await sim.step()  # alone in its block, the priced transaction sets the block's minimum
    ixs = [set_compute_unit_limit(limit), set_compute_unit_price(price), _pay(payer, target, 1)]
    tx = await _tx(client, payer, ixs)
    quoted = (await client.get_fee_for_message(tx.message)).value
    assert quoted == LAMPORTS_PER_SIGNATURE + math.ceil(limit * price / 1_000_000)
    await client.send_raw_transaction(bytes(tx))
    assert await _balance(client, payer.pubkey()) == SOL - 1 - quoted
    fees = await _raw(sim, "getRecentPrioritizationFees", [[str(target)]])
    assert {"slot": sim.store.slot, "prioritizationFee": price} in fees["result"]
    others = await _raw(sim, "getRecentPrioritizationFees", [[str(Pubkey.new_unique())]])
    assert {"slot": sim.store.slot, "prioritizationFee": price} in others["result"]
    # The airdrop's block paid nothing.
    assert {"slot": sim.store.slot - 1, "prioritizationFee": 0} in others["result"]


async def test_statuses_settle_and_signature_subscriptions_fire(
    sim: Simulator, client: AsyncClient
) -> None:
    payer = await _funded(client)
    tx = await _tx(client, payer, [_pay(payer, Pubkey.new_unique(), 5)])
    async with connect(sim.ws_url) as ws:
        await ws.signature_subscribe(tx.signatures[0], commitment=Confirmed)
        subscribed = await ws.recv()
        assert isinstance(subscribed[0].result, int)
        await client.send_raw_transaction(bytes(tx))
        landed_at = sim.store.slot
        await sim.step()
        notified = await ws.recv()
        assert notified[0].result.value.err is None
        # Subscribed before it landed: notified with its own block's slot, as a node does.
        assert notified[0].result.context.slot == landed_at
    for _ in range(32):
        await sim.step()
    status = await _status(client, tx.signatures[0])
    assert str(status.confirmation_status).endswith("Finalized")
    assert status.confirmations is None
    # Out of the status cache (300 slots), a status is found only in the history.
    for _ in range(300):
        await sim.step()
    assert await _status(client, tx.signatures[0]) is None
    found = await client.get_signature_statuses([tx.signatures[0]], search_transaction_history=True)
    assert found.value[0] is not None


async def test_dropped_transactions_never_land(sim: Simulator, client: AsyncClient) -> None:
    payer = await _funded(client)
    target = Pubkey.new_unique()
    sim.faults.drop_transactions(1)
    dropped = await _tx(client, payer, [_pay(payer, target, 10)])
    assert (await client.send_raw_transaction(bytes(dropped))).value == dropped.signatures[0]
    for _ in range(3):
        await sim.step()
    assert await _status(client, dropped.signatures[0]) is None
    assert await _balance(client, target) == 0
    kept = await _tx(client, payer, [_pay(payer, target, 11)])
    await client.send_raw_transaction(bytes(kept))
    assert await _balance(client, target) == 11
    assert sim.stats()["transactions"]["dropped"] == 1
    _all_accounted(sim)


@pytest.mark.parametrize("mode", ["429", "timeout"])
async def test_a_lost_reply_still_lands(sim: Simulator, mode: str) -> None:
    async with AsyncClient(sim.http_url, timeout=0.5) as client:
        payer = await _funded(client)
        target = Pubkey.new_unique()
        tx = await _tx(client, payer, [_pay(payer, target, 42)])
        sim.faults.lose_replies(1, mode)  # type: ignore[arg-type]
        with pytest.raises(SolanaRpcException) as failure:
            await client.send_raw_transaction(bytes(tx))
        cause = failure.value.__cause__
        if mode == "429":
            assert isinstance(cause, httpx.HTTPStatusError)
            assert cause.response.status_code == 429
        else:
            assert isinstance(cause, httpx.TimeoutException)
        assert (await _status(client, tx.signatures[0])).err is None
        assert await _balance(client, target) == 42
        # The client resends the same bytes, as it should when it cannot know: no second landing.
        resent = await client.send_raw_transaction(bytes(tx), TxOpts(skip_preflight=True))
        assert resent.value == tx.signatures[0]
        assert await _balance(client, target) == 42
        _all_accounted(sim)


async def test_a_delayed_transaction_lands_later(sim: Simulator, client: AsyncClient) -> None:
    payer = await _funded(client)
    target = Pubkey.new_unique()
    sim.faults.delay_landing(0.3)
    tx = await _tx(client, payer, [_pay(payer, target, 9)])
    assert (await client.send_raw_transaction(bytes(tx))).value == tx.signatures[0]
    assert await _status(client, tx.signatures[0]) is None
    # Sent again while it waits: still one landing.
    await client.send_raw_transaction(bytes(tx), TxOpts(skip_preflight=True))

    async def landed() -> bool:
        return await _status(client, tx.signatures[0]) is not None

    await eventually(landed, "the delayed transaction lands")
    assert await _balance(client, target) == 9
    assert sim.stats()["transactions"]["duplicate"] == 1
    _all_accounted(sim)


async def test_blockhashes_expiring_early_are_refused(sim: Simulator, client: AsyncClient) -> None:
    payer = await _funded(client)
    sim.faults.expire_blockhashes(2)
    tx = await _tx(client, payer, [_pay(payer, Pubkey.new_unique(), 1)])
    latest = (await client.get_latest_blockhash()).value
    for _ in range(3):
        await sim.step()
    assert (await client.get_block_height()).value < latest.last_valid_block_height
    answer = await _send_raw(sim, tx)
    assert answer["error"]["data"]["err"] == "BlockhashNotFound"
    assert await _valid(sim, tx.message.recent_blockhash) is False


async def test_base58_wire_and_the_fault_endpoint(sim: Simulator, client: AsyncClient) -> None:
    payer = await _funded(client)
    target = Pubkey.new_unique()
    async with httpx.AsyncClient() as http:
        posted = await http.post(f"{sim.http_url}/_sim/faults", json={"drop_tx": 1})
        assert posted.json()["drop_tx_remaining"] == 1
        await http.post(f"{sim.http_url}/_sim/faults", json={"clear": True})
    tx = await _tx(client, payer, [_pay(payer, target, 3)])
    answer = await _raw(sim, "sendTransaction", [based58.b58encode(bytes(tx)).decode()])
    assert answer["result"] == str(tx.signatures[0])
    assert await _balance(client, target) == 3


async def test_driftpy_sends_through_its_own_tx_sender(simulator_factory: Any) -> None:
    sim: Simulator = await simulator_factory(markets=1, tick_s=0.05)
    async with AsyncClient(sim.http_url) as connection:
        wallet = await _funded(connection)
        client = DriftClient(connection, wallet, env="mainnet")
        target = Pubkey.new_unique()
        sent = await client.send_ixs([_pay(wallet, target, 321)])
        status = await _status(connection, sent.tx_sig)
        assert status.err is None
        assert await _balance(connection, target) == 321
        # driftpy's default compute budget (600k units at price 0) adds no priority fee.
        assert await _balance(connection, wallet.pubkey()) == SOL - 321 - LAMPORTS_PER_SIGNATURE


async def test_unreadable_transactions_get_one_clear_error(
    sim: Simulator, client: AsyncClient
) -> None:
    payer = await _funded(client)
    missing_table = AddressLookupTableAccount(Pubkey.new_unique(), [Pubkey.new_unique()])
    ix = _pay(payer, Pubkey.new_unique(), 1)
    reads = [AccountMeta(missing_table.addresses[0], False, False)]
    ix = Instruction(ix.program_id, ix.data, [*ix.accounts, *reads])
    unknown_table = await _tx(client, payer, [ix], tables=[missing_table])
    cases = [
        (["%%%", {"encoding": "base64"}], "invalid base64 encoding"),
        (["0OIl"], "invalid base58 encoding"),
        (
            [base64.b64encode(b"\x01garbage").decode(), {"encoding": "base64"}],
            "failed to deserialize",
        ),
        (["A" * 2000, {"encoding": "base64"}], "too large"),
        (["AAAA", {"encoding": "json"}], "unsupported encoding: json"),
        (
            [base64.b64encode(bytes(unknown_table)).decode(), {"encoding": "base64"}],
            "address table account that doesn't exist",
        ),
    ]
    for params, message in cases:
        for method in ("sendTransaction", "simulateTransaction"):
            answer = await _raw(sim, method, params)
            assert answer["error"]["code"] == -32602, (method, params, answer)
            assert message in answer["error"]["message"]
    assert sim.stats()["transactions"]["received"] == 1  # the airdrop only


async def test_simulation_changes_nothing_and_can_replace_the_blockhash(
    sim: Simulator, client: AsyncClient
) -> None:
    payer = await _funded(client)
    target = Pubkey.new_unique()
    stale = Hash.hash(b"not a blockhash of this chain")
    message = MessageV0.try_compile(payer.pubkey(), [_pay(payer, target, 70)], [], stale)
    wire = base64.b64encode(bytes(VersionedTransaction(message, [payer]))).decode()
    config: dict[str, Any] = {"encoding": "base64"}
    plain = await _raw(sim, "simulateTransaction", [wire, config])
    assert plain["result"]["value"]["err"] == "BlockhashNotFound"
    config |= {"replaceRecentBlockhash": True, "accounts": {"addresses": [str(target)]}}
    replaced = (await _raw(sim, "simulateTransaction", [wire, config]))["result"]["value"]
    assert replaced["err"] is None
    latest = (await client.get_latest_blockhash()).value
    assert replaced["replacementBlockhash"] == {
        "blockhash": str(latest.blockhash),
        "lastValidBlockHeight": latest.last_valid_block_height,
    }
    assert replaced["accounts"][0]["lamports"] == 70
    assert await _balance(client, target) == 0
    both = await _raw(sim, "simulateTransaction", [wire, {**config, "sigVerify": True}])
    assert both["error"]["message"] == "sigVerify may not be used with replaceRecentBlockhash"


async def test_a_delayed_transaction_whose_blockhash_expires_never_lands(
    sim: Simulator, client: AsyncClient
) -> None:
    payer = await _funded(client)
    target = Pubkey.new_unique()
    sim.faults.expire_blockhashes(0)  # valid only within its own block
    sim.faults.delay_landing(0.2)
    tx = await _tx(client, payer, [_pay(payer, target, 4)])
    assert (await client.send_raw_transaction(bytes(tx))).value == tx.signatures[0]
    await sim.step()
    await eventually(lambda: sim.stats()["transactions"]["dropped"] == 1, "the leader drops it")
    assert await _status(client, tx.signatures[0]) is None
    assert await _balance(client, target) == 0
    _all_accounted(sim)
