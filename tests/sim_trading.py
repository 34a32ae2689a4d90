"""The simulator's chain advancing, and its truth about a wallet's orders."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from driftpy.addresses import get_user_account_public_key
from driftpy.decode.user import decode_user
from driftpy.types import OrderStatus, UserAccount
from solders.keypair import Keypair

from driftshare.sim import Simulator
from driftshare.sim._codec import DRIFT_PROGRAM_ID

__all__ = ["open_user_order_ids", "orders_placed", "ticking", "user_account"]

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
