"""The trading view of ``serve``: /api/accounts, /api/orders, the transaction metrics, and
that nothing served can sign or shows a secret key."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from driftpy.constants.numeric_constants import BASE_PRECISION
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from driftshare import DriftAdapter
from driftshare import _metrics as metrics
from driftshare._tx.history import HISTORY_SIZE, TxHistory
from driftshare._web import LiveState, create_app
from driftshare._web.api import OPENAPI
from driftshare.manager import DriftClientManager
from driftshare.models import TxResult
from driftshare.sim import Simulator
from driftshare.sim.wallets import open_wallet
from sim_trading import user_account
from test_trading_sim import chain, resting_bid  # noqa: F401 (chain: a fixture)

Served = tuple[Simulator, TestClient[web.Request, web.Application]]


def test_every_route_only_reads() -> None:
    app = create_app(LiveState(network="mainnet", simulated=True))
    methods = {route.method for route in app.router.routes()}
    assert methods <= {"GET", "HEAD"}, methods


def test_the_history_keeps_the_newest_writes_only() -> None:
    history = TxHistory()
    for slot in range(HISTORY_SIZE + 5):
        history.add("deposit", TxResult(success=True, status="confirmed", slot=slot))
    slots = [record.slot for record in history.records()]
    assert slots == list(range(HISTORY_SIZE + 4, 4, -1))


def _sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest_asyncio.fixture
async def served(
    chain: Simulator,  # noqa: F811 - the imported fixture
) -> AsyncIterator[Served]:
    """The ticking simulator and the dashboard app over the shared client."""
    live = LiveState(network="mainnet", simulated=True)
    async with TestClient(TestServer(create_app(live))) as client:
        yield chain, client


async def test_accounts_and_orders_show_a_trading_sub_account(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sim, client = served
    wallet = await open_wallet(sim.http_url, DriftClientManager.settings(), subs=1, usdc=1_000)
    confirmed = _sample("drift_transactions_total", status="confirmed")
    failed = _sample("drift_transactions_total", status="failed")
    timed = _sample("drift_transaction_confirm_seconds_count")
    adapter = DriftAdapter()
    assert await adapter.connect(wallet, 0)
    try:
        writes = [
            await adapter.deposit(500),
            await adapter.place_perp_order(0, "long", 0.5),
            await adapter.place_perp_order(
                0, "long", 0.2, "LIMIT", price=await resting_bid(adapter), user_order_id=9
            ),
            await adapter.place_perp_order(0, "sideways", 1.0),
        ]
        assert [w["status"] for w in writes] == ["confirmed", "confirmed", "confirmed", "failed"]

        answer = await (await client.get("/api/accounts")).json()
        (account,) = answer["accounts"]
        assert account["authority"] == str(wallet.pubkey())
        assert account["sub_account_id"] == 0
        schemas = OPENAPI["components"]["schemas"]
        assert set(account) == set(schemas["Account"]["properties"])
        # The chain's own User account is the truth for positions.
        chain = user_account(sim, wallet, 0)
        assert account["user_account"] == str(adapter.account.user_pubkey)  # type: ignore[union-attr]
        (position,) = account["positions"]
        base = next(p.base_asset_amount for p in chain.perp_positions if p.base_asset_amount)
        assert position["size"] == base / BASE_PRECISION == 0.5
        assert position["symbol"] == "SOL-PERP"
        assert {"entry_price", "unrealized_pnl", "liquidation_price", "slot"} <= set(position)
        assert [o["user_order_id"] for o in account["open_orders"]] == [9]
        # 500 deposited, moved only by the market order's fee and its PnL so far (either
        # sign: the oracle walks); driftpy's math itself is checked in test_accounts_sim.
        assert account["collateral"] == pytest.approx(500, abs=5)
        assert 0 < account["free_collateral"] < account["collateral"]
        assert account["leverage"] > 0
        assert not account["stale"]
        assert isinstance(account["slot"], int)
        assert account["data_age_s"] >= 0

        answer = await (await client.get("/api/orders")).json()
        orders = answer["orders"]
        assert [o["status"] for o in orders] == ["failed", "confirmed", "confirmed", "confirmed"]
        assert [o["kind"] for o in orders[1:]] == ["place_perp_order"] * 2 + ["deposit"]
        assert [o["market"] for o in orders] == ["SOL-PERP"] * 3 + [None]
        assert [o["signature"] for o in orders[1:]] == [w["signature"] for w in writes[2::-1]]
        assert [o["slot"] for o in orders[1:]] == [w["slot"] for w in writes[2::-1]]
        assert orders[0]["error"].startswith("InvalidDirection")
        assert {o["sub_account_id"] for o in orders} == {0}
        assert {o["authority"] for o in orders} == {str(wallet.pubkey())}
        assert {frozenset(o) for o in orders} == {frozenset(schemas["TxRecord"]["properties"])}
        assert set(position) == set(schemas["PositionInfo"]["properties"])
        assert set(account["open_orders"][0]) == set(schemas["OrderInfo"]["properties"])

        assert _sample("drift_transactions_total", status="confirmed") == confirmed + 3
        assert _sample("drift_transactions_total", status="failed") == failed + 1
        assert _sample("drift_transaction_confirm_seconds_count") == timed + 3
        text = await (await client.get("/metrics")).text()
        assert 'drift_transactions_total{status="confirmed"}' in text
        assert "drift_transaction_confirm_seconds_bucket" in text
        assert "drift_blockhash_age_seconds" in text

        served_text = [
            await (await client.get(path)).text()
            for path in ("/", "/api/accounts", "/api/orders", "/api/stats", "/metrics")
        ]
        _assert_no_secret(wallet, served_text + [r.getMessage() for r in caplog.records])
        assert str(wallet.pubkey()) in served_text[0]
    finally:
        await adapter.disconnect()


def _assert_no_secret(wallet: Keypair, texts: list[str]) -> None:
    """Neither the keypair's base58 (64 bytes) nor its secret seed's appears anywhere."""
    full = str(wallet)
    # A 32-byte value's base58, the alphabet solders uses for keys (seed as if a key).
    seed = str(Pubkey.from_bytes(wallet.secret()))
    for text in texts:
        assert full not in text
        assert seed not in text
