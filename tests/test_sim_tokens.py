"""USDC on the simulator: credits, balances and token accounts as the real RPC serves them."""

from __future__ import annotations

from typing import Any

import httpx
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction
from spl.token.constants import ASSOCIATED_TOKEN_PROGRAM_ID, TOKEN_PROGRAM_ID
from spl.token.instructions import (
    TransferCheckedParams,
    create_idempotent_associated_token_account,
    get_associated_token_address,
    transfer_checked,
)

from driftshare.sim import Simulator
from driftshare.sim.tokens import USDC_MINT

USDC = 10**6


async def _credit(sim: Simulator, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(f"{sim.http_url}/_sim/usdc", json=body)


async def _token_balance(sim: Simulator, key: Pubkey) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 1, "method": "getTokenAccountBalance", "params": [str(key)]}
    async with httpx.AsyncClient() as http:
        answer: dict[str, Any] = (await http.post(sim.http_url, json=body)).json()
    return answer


async def test_usdc_credit_creates_a_real_token_account(simulator: Simulator) -> None:
    owner = Keypair().pubkey()
    credited = await _credit(simulator, {"owner": str(owner), "amount": 1000})
    assert credited.status_code == 200
    ata = get_associated_token_address(owner, USDC_MINT)
    assert credited.json()["token_account"] == str(ata)
    # The USDC mint is the one the world's collateral market uses.
    assert simulator.world is not None
    assert simulator.world.spot_market(0).mint == USDC_MINT

    async with AsyncClient(simulator.http_url) as client:
        account = (await client.get_account_info(ata, encoding="base64")).value
        assert account is not None
        assert account.owner == TOKEN_PROGRAM_ID
        # SPL Token's Account layout: mint, owner, amount (u64 LE), ..., state at byte 108.
        data = account.data
        assert len(data) == 165
        assert (data[:32], data[32:64]) == (bytes(USDC_MINT), bytes(owner))
        assert int.from_bytes(data[64:72], "little") == 1000 * USDC
        assert data[108] == 1  # Initialized
        balance = (await client.get_token_account_balance(ata)).value
        assert balance.amount == str(1000 * USDC)
        assert balance.decimals == 6
        assert balance.ui_amount_string == "1000"
        mint = (await client.get_account_info(USDC_MINT, encoding="base64")).value
        assert mint is not None
        assert mint.owner == TOKEN_PROGRAM_ID
        # Mint layout: authority option (36), supply (8), decimals, is_initialized.
        assert len(mint.data) == 82
        assert (mint.data[44], mint.data[45]) == (6, 1)

        parsed = (await client.get_account_info_json_parsed(ata)).value
        assert parsed is not None
        info = parsed.data.parsed["info"]  # type: ignore[union-attr]
        assert (info["owner"], info["mint"], info["state"]) == (
            str(owner),
            str(USDC_MINT),
            "initialized",
        )
        assert info["tokenAmount"]["uiAmountString"] == "1000"
        parsed_mint = (await client.get_account_info_json_parsed(USDC_MINT)).value
        assert parsed_mint is not None
        assert parsed_mint.data.parsed["type"] == "mint"  # type: ignore[union-attr]

    again = await _credit(simulator, {"owner": str(owner), "amount": 0.25})
    assert again.json()["balance"] == 1000 * USDC + USDC // 4
    assert (await _token_balance(simulator, ata))["result"]["value"]["uiAmountString"] == "1000.25"


async def test_bad_credits_and_token_balance_errors(simulator: Simulator) -> None:
    for body in (
        {"owner": "nope", "amount": 1},
        {"owner": str(Pubkey.new_unique()), "amount": -1},
        {"owner": str(Pubkey.new_unique()), "amount": 0.0000001},
        {"owner": str(Pubkey.new_unique())},
    ):
        answer = await _credit(simulator, body)
        assert answer.status_code == 400
        assert "error" in answer.json()
    missing = await _token_balance(simulator, Pubkey.new_unique())
    assert missing["error"] == {"code": -32602, "message": "Invalid param: could not find account"}
    not_token = await _token_balance(simulator, simulator.world.state_pubkey)  # type: ignore[union-attr]
    assert not_token["error"]["message"] == "Invalid param: not a Token account"


async def test_a_token_transfer_to_a_new_associated_account(simulator: Simulator) -> None:
    sender, recipient = Keypair(), Keypair().pubkey()
    await _credit(simulator, {"owner": str(sender.pubkey()), "amount": 50})
    source = get_associated_token_address(sender.pubkey(), USDC_MINT)
    dest = get_associated_token_address(recipient, USDC_MINT)
    async with AsyncClient(simulator.http_url) as client:
        await client.request_airdrop(sender.pubkey(), 10**9)
        create = create_idempotent_associated_token_account(sender.pubkey(), recipient, USDC_MINT)
        assert create.program_id == ASSOCIATED_TOKEN_PROGRAM_ID
        move = transfer_checked(
            TransferCheckedParams(
                program_id=TOKEN_PROGRAM_ID,
                source=source,
                mint=USDC_MINT,
                dest=dest,
                owner=sender.pubkey(),
                amount=20 * USDC,
                decimals=6,
            )
        )
        blockhash = (await client.get_latest_blockhash()).value.blockhash
        message = MessageV0.try_compile(sender.pubkey(), [create, move], [], blockhash)
        await client.send_raw_transaction(bytes(VersionedTransaction(message, [sender])))
        assert (await client.get_token_account_balance(dest)).value.amount == str(20 * USDC)
        assert (await client.get_token_account_balance(source)).value.amount == str(30 * USDC)
        rent = (await client.get_minimum_balance_for_rent_exemption(165)).value
        assert (await client.get_balance(dest)).value == rent
        fee_and_rent = 5_000 + rent
        assert (await client.get_balance(sender.pubkey())).value == 10**9 - fee_and_rent
        assert (await client.get_account_info(recipient)).value is None
