"""One trading measurement in a fresh process: ``python -m bench.trading.worker '<json>'``.

The JSON names the ``mode`` (shared or private), the number of ``engines``, the
``duration_s`` and the simulator's ``url``; the result is one JSON object on the last stdout
line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httpx
from anchorpy import Wallet
from driftpy.account_subscription_config import AccountSubscriptionConfig
from driftpy.constants.numeric_constants import BASE_PRECISION, PRICE_PRECISION
from driftpy.drift_client import DriftClient
from driftpy.types import MarketType, OrderParams, OrderType, PositionDirection
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair
from spl.token.instructions import get_associated_token_address

from bench._harness import percentiles
from driftshare import DriftAdapter
from driftshare.manager import DriftClientManager
from driftshare.sim.wallets import open_wallet

__all__ = ["main"]

_PERIOD_S = 1.0
_READ_POLL_S = 0.01
_READ_TIMEOUT_S = 10.0
_SIZE = 0.1
_DEPOSIT = 1_000.0


class _Engine(Protocol):
    async def start(self) -> None: ...

    async def place(self, user_order_id: int, price: float) -> float | None:
        """The time the order was confirmed (``time.monotonic()``), None if it was not."""

    async def cancel(self, user_order_id: int) -> float | None: ...

    async def holds(self, user_order_id: int) -> bool: ...

    async def stop(self) -> None: ...


class _Shared:
    def __init__(self, wallet: Keypair, sub: int) -> None:
        self.wallet, self.sub = wallet, sub
        self.adapter = DriftAdapter()

    async def start(self) -> None:
        if not await self.adapter.connect(self.wallet, self.sub):
            raise RuntimeError(f"sub-account {self.sub} cannot connect")
        if (await self.adapter.deposit(_DEPOSIT))["status"] != "confirmed":
            raise RuntimeError("the deposit did not land")

    @staticmethod
    def _confirmed_at(started: float, result: dict[str, Any]) -> float | None:
        return started + result["elapsed_s"] if result["status"] == "confirmed" else None

    async def place(self, user_order_id: int, price: float) -> float | None:
        started = time.monotonic()
        result = await self.adapter.place_perp_order(
            0, "long", _SIZE, "LIMIT", price=price, user_order_id=user_order_id
        )
        return self._confirmed_at(started, result)

    async def cancel(self, user_order_id: int) -> float | None:
        started = time.monotonic()
        return self._confirmed_at(
            started, await self.adapter.cancel_order(user_order_id=user_order_id)
        )

    async def holds(self, user_order_id: int) -> bool:
        orders = await self.adapter.get_open_orders()
        return any(o["user_order_id"] == user_order_id for o in orders or [])

    async def stop(self) -> None:
        await self.adapter.disconnect()


class _Private:
    """One DriftClient as driftpy builds it: its own connection, WebSocket subscriptions and
    ``StandardTxSender``."""

    def __init__(self, url: str, wallet: Keypair, sub: int) -> None:
        self.wallet, self.sub = wallet, sub
        self.connection = AsyncClient(url, commitment=Confirmed)
        self.client = DriftClient(
            self.connection,
            Wallet(wallet),
            env="mainnet",
            account_subscription=AccountSubscriptionConfig("websocket", commitment=Confirmed),
            sub_account_ids=[sub],
            active_sub_account_id=sub,
        )

    async def start(self) -> None:
        await self.client.subscribe()
        usdc = self.client.get_spot_market_account(0)
        token_account = get_associated_token_address(self.wallet.pubkey(), usdc.mint)
        amount = round(_DEPOSIT * 10**usdc.decimals)
        await self.client.deposit(amount, 0, token_account, self.sub)

    async def place(self, user_order_id: int, price: float) -> float | None:
        params = OrderParams(
            order_type=OrderType.Limit(),
            base_asset_amount=round(_SIZE * BASE_PRECISION),
            market_index=0,
            direction=PositionDirection.Long(),
            market_type=MarketType.Perp(),
            price=round(price * PRICE_PRECISION),
            user_order_id=user_order_id,
        )
        try:
            await self.client.place_perp_order(params, sub_account_id=self.sub)
        except Exception:  # driftpy raises on a confirmation timeout: not confirmed
            return None
        return time.monotonic()

    async def cancel(self, user_order_id: int) -> float | None:
        try:
            await self.client.cancel_order_by_user_id(user_order_id, self.sub)
        except Exception:  # as above
            return None
        return time.monotonic()

    async def holds(self, user_order_id: int) -> bool:
        orders = self.client.get_user(self.sub).get_open_orders()
        return any(o.user_order_id == user_order_id for o in orders)

    async def stop(self) -> None:
        for user in self.client.users.values():
            await user.account_subscriber.unsubscribe()
        await self.client.unsubscribe()
        await self.connection.close()


async def _until(check: Callable[[], Any], want: bool) -> float | None:
    deadline = time.monotonic() + _READ_TIMEOUT_S
    while time.monotonic() < deadline:
        if await check() == want:
            return time.monotonic()
        await asyncio.sleep(_READ_POLL_S)
    return None


class _Tally:
    def __init__(self) -> None:
        self.transactions = 0
        self.failed = 0
        self.confirmed: list[float] = []
        self.read: list[float] = []

    async def write(
        self, engine: _Engine, send: Awaitable[float | None], user_order_id: int, held: bool
    ) -> None:
        started = time.monotonic()  # the send starts when awaited, below
        confirmed_at = await send
        self.transactions += 1
        if confirmed_at is None:
            self.failed += 1
            return
        self.confirmed.append(confirmed_at - started)
        seen = await _until(lambda: engine.holds(user_order_id), held)
        if seen is not None:
            self.read.append(max(0.0, seen - confirmed_at))


async def _trade(engine: _Engine, price: float, until: float, tally: _Tally) -> None:
    user_order_id = 0
    next_at = time.monotonic()
    while time.monotonic() < until:
        user_order_id = user_order_id % 255 + 1
        await tally.write(engine, engine.place(user_order_id, price), user_order_id, True)
        await tally.write(engine, engine.cancel(user_order_id), user_order_id, False)
        next_at += _PERIOD_S
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


def _sim_stats(url: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{url}/_sim/stats", timeout=30).json()
    return stats


async def _measure(params: dict[str, Any]) -> dict[str, Any]:
    url, mode, count = params["url"], params["mode"], int(params["engines"])
    DriftClientManager.configure(rpc_url=url, rpc_rps=100)
    settings = DriftClientManager.settings()
    wallet = await open_wallet(url, settings, subs=count, usdc=count * _DEPOSIT * 2)
    engines: list[_Engine] = [
        _Shared(wallet, sub) if mode == "shared" else _Private(url, wallet, sub)
        for sub in range(count)
    ]
    try:
        for engine in engines:
            await engine.start()
        mark = await DriftClientManager.get_mark_price(0)
        if mark is None:
            raise RuntimeError("no mark price")
        price = round(mark / 2, 2)  # resting: far under the market, never filled
        before = _sim_stats(url)
        tally = _Tally()
        until = time.monotonic() + float(params["duration_s"])
        await asyncio.gather(*(_trade(e, price, until, tally) for e in engines))
        after = _sim_stats(url)
    finally:
        for engine in engines:
            await engine.stop()
        await DriftClientManager.shutdown()
    requests = after["http_requests"]["total"] - before["http_requests"]["total"]
    return {
        "mode": mode,
        "engines": count,
        "transactions": tally.transactions,
        "failed": tally.failed,
        "requests": requests,
        "requests_per_tx": requests / max(1, tally.transactions),
        "websockets": after["ws_connections"]["open"],
        "by_method": {
            method: n - before["calls"]["by_method"].get(method, 0)
            for method, n in after["calls"]["by_method"].items()
            if n - before["calls"]["by_method"].get(method, 0)
        },
        "order_to_confirmed": percentiles(tally.confirmed),
        "confirmed_to_read": percentiles(tally.read),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(json.dumps(asyncio.run(_measure(json.loads(args[0])))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
