"""Wallets for trading on a simulator: SOL, USDC and Drift users, made by transactions.

For tests, benchmarks and the sample engines: the simulator's faucet (``requestAirdrop``) and
USDC mint (``POST /_sim/usdc``) fund a new keypair, and one transaction through driftshare's
transaction path initializes its UserStats and sub-accounts as a wallet owner would.
"""

from __future__ import annotations

import httpx
from driftpy.account_subscription_config import AccountSubscriptionConfig
from driftpy.drift_client import DriftClient
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair

from driftshare._tx import ConnectionRpc, TransactionPath
from driftshare.config import Settings

__all__ = ["open_wallet"]

_LAMPORTS = 10 * 10**9
_USERS_PER_TX = 4
"""Sub-accounts initialized per transaction (a transaction holds at most 1232 bytes)."""


async def open_wallet(
    http_url: str, settings: Settings, *, subs: int, usdc: float, wallet: Keypair | None = None
) -> Keypair:
    """``wallet`` (a new one by default) with 10 SOL, ``usdc`` in its USDC token account and
    Drift users 0 to ``subs - 1`` on the simulator at ``http_url`` (whose chain must advance
    for the transactions to confirm). RuntimeError when the simulator refuses."""
    wallet = wallet or Keypair()
    owner = str(wallet.pubkey())
    async with httpx.AsyncClient(timeout=30) as http:
        airdrop = {"jsonrpc": "2.0", "id": 1, "method": "requestAirdrop"}
        answer = await http.post(http_url, json={**airdrop, "params": [owner, _LAMPORTS]})
        if "result" not in answer.json():
            raise RuntimeError(f"airdrop refused: {answer.text[:200]}")
        credit = await http.post(f"{http_url}/_sim/usdc", json={"owner": owner, "amount": usdc})
        if credit.status_code != 200:
            raise RuntimeError(f"USDC credit refused: {credit.text[:200]}")
    connection = AsyncClient(http_url)
    client = DriftClient(
        connection, wallet, env="mainnet", account_subscription=AccountSubscriptionConfig("cached")
    )
    ixs = [client.get_initialize_user_stats()]
    ixs += [client.get_initialize_user_instructions(sub, f"sub {sub}") for sub in range(subs)]
    path = TransactionPath(ConnectionRpc(lambda: connection), settings)
    try:
        for start in range(0, len(ixs), _USERS_PER_TX):
            result = await path.submit(ixs[start : start + _USERS_PER_TX], wallet)
            if result.status != "confirmed":
                raise RuntimeError(f"Drift users not initialized: {result.error or result.status}")
    finally:
        await path.aclose()
        await connection.close()
    return wallet
