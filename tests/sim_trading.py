"""Wallets with Drift users on a simulator, created by transactions, and the chain's truth
about their orders."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from driftpy.account_subscription_config import AccountSubscriptionConfig
from driftpy.addresses import get_user_account_public_key
from driftpy.decode.user import decode_user
from driftpy.drift_client import DriftClient
from driftpy.types import OrderStatus, UserAccount
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair

from driftshare._tx import ConnectionRpc, TransactionPath
from driftshare.config import Settings
from driftshare.sim import Simulator
from driftshare.sim._codec import DRIFT_PROGRAM_ID

__all__ = ["open_user_order_ids", "open_wallet", "orders_placed", "ticking", "user_account"]

_LAMPORTS = 10 * 10**9


@asynccontextmanager
async def ticking(sim: Simulator, every_s: float = 0.02) -> AsyncIterator[None]:
    """The chain's slots advance while inside (a transaction is confirmed one slot after it
    lands)."""

    async def tick() -> None:
        while True:
            await sim.step()
            await asyncio.sleep(every_s)

    task = asyncio.create_task(tick())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def open_wallet(sim: Simulator, settings: Settings, *, subs: int, usdc: float) -> Keypair:
    """A new wallet with SOL, ``usdc`` in its token account and Drift users 0..``subs``-1,
    created by transactions (the chain must be ticking)."""
    wallet = Keypair()
    owner = str(wallet.pubkey())
    async with httpx.AsyncClient() as http:
        airdrop = {"jsonrpc": "2.0", "id": 1, "method": "requestAirdrop"}
        answer = await http.post(sim.http_url, json={**airdrop, "params": [owner, _LAMPORTS]})
        assert "result" in answer.json(), answer.text
        credit = await http.post(f"{sim.http_url}/_sim/usdc", json={"owner": owner, "amount": usdc})
        assert credit.status_code == 200, credit.text
    connection = AsyncClient(sim.http_url)
    client = DriftClient(
        connection, wallet, env="mainnet", account_subscription=AccountSubscriptionConfig("cached")
    )
    ixs = [client.get_initialize_user_stats()]
    ixs += [client.get_initialize_user_instructions(sub, f"sub {sub}") for sub in range(subs)]
    path = TransactionPath(ConnectionRpc(lambda: connection), settings)
    try:
        result = await path.submit(ixs, wallet)
    finally:
        await path.aclose()
        await connection.close()
    assert result.status == "confirmed", result
    return wallet


def user_account(sim: Simulator, wallet: Keypair, sub: int) -> UserAccount:
    """The User account as the chain holds it now."""
    key = get_user_account_public_key(DRIFT_PROGRAM_ID, wallet.pubkey(), sub)
    account = sim.store.get(key)
    assert account is not None
    return decode_user(account.data)


def orders_placed(sim: Simulator, wallet: Keypair, sub: int) -> int:
    """Orders ever placed on the sub-account (the program numbers them from 1)."""
    return int(user_account(sim, wallet, sub).next_order_id) - 1


def open_user_order_ids(sim: Simulator, wallet: Keypair, sub: int) -> list[int]:
    """The ``user_order_id`` of every open order, as many times as it is open."""
    orders = user_account(sim, wallet, sub).orders
    return [o.user_order_id for o in orders if o.status == OrderStatus.Open()]
