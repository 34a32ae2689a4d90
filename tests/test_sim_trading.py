"""An unmodified driftpy DriftClient trading on the simulator: users, collateral, orders, fills.

Expected numbers come from first principles (what was deposited, the oracle price the test
set, the documented fill model) and are compared with what driftpy reads back over RPC.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from driftpy.account_subscription_config import AccountSubscriptionConfig
from driftpy.accounts.oracle import DRIFT_IDL
from driftpy.addresses import get_user_account_public_key, get_user_stats_account_public_key
from driftpy.constants.config import DRIFT_PROGRAM_ID
from driftpy.constants.numeric_constants import BASE_PRECISION, PRICE_PRECISION, QUOTE_PRECISION
from driftpy.drift_client import DriftClient
from driftpy.drift_user import DriftUser
from driftpy.math.margin import MarginCategory
from driftpy.types import (
    MarketType,
    ModifyOrderParams,
    OrderParams,
    OrderType,
    PositionDirection,
    is_variant,
)
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from driftshare.sim import Simulator
from driftshare.sim.drift.books import Books
from driftshare.sim.drift.margin import drift_user
from driftshare.sim.tokens import associated_token_address
from driftshare.sim.world import World
from tests.conftest import eventually

SOL_PERP = 0
SPREAD_BPS = 10.0
USDC = QUOTE_PRECISION
IDL_ERRORS = {error.code: error.name for error in DRIFT_IDL.errors}


@pytest.fixture
async def sim(simulator_factory: Any) -> Simulator:
    # A day's funding period: no funding settles while the test runs, so PnL is price alone.
    sim: Simulator = await simulator_factory(
        markets=3, funding_period_s=86_400.0, fill_spread_bps=SPREAD_BPS
    )
    return sim


@pytest.fixture
async def trader(sim: Simulator) -> AsyncIterator[tuple[DriftClient, Keypair]]:
    """A DriftClient (sub-accounts 0 and 1) of a wallet holding 1 SOL and 10,000 USDC."""
    async for client in _trader(sim, "cached"):
        yield client


@pytest.fixture
async def ws_trader(sim: Simulator) -> AsyncIterator[tuple[DriftClient, Keypair]]:
    """The same, subscribed over the simulator's WebSocket."""
    async for client in _trader(sim, "websocket"):
        yield client


async def _trader(sim: Simulator, mode: str) -> AsyncIterator[tuple[DriftClient, Keypair]]:
    connection = AsyncClient(sim.http_url)
    wallet = Keypair()
    await connection.request_airdrop(wallet.pubkey(), 10**9)
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{sim.http_url}/_sim/usdc", json={"owner": str(wallet.pubkey()), "amount": 10_000}
        )
    assert answer.status_code == 200
    client = DriftClient(
        connection,
        wallet,
        env="mainnet",
        account_subscription=AccountSubscriptionConfig(mode),  # type: ignore[arg-type]
        sub_account_ids=[0, 1],
    )
    await client.subscribe()
    yield client, wallet
    for user in client.users.values():
        result = user.account_subscriber.unsubscribe()
        if inspect.isawaitable(result):
            await result
    await client.unsubscribe()
    await connection.close()


def world_of(sim: Simulator) -> World:
    assert sim.world is not None
    return sim.world


async def refreshed(client: DriftClient, sub_account_id: int) -> DriftUser:
    """The client's DriftUser for ``sub_account_id`` after re-reading every account over RPC."""
    await client.account_subscriber.fetch()
    user = client.get_user(sub_account_id)
    await user.account_subscriber.fetch()
    return user


def ground_truth(sim: Simulator, user: DriftUser) -> DriftUser:
    """driftpy's DriftUser over the simulator's own accounts, for the same user."""
    books = Books(sim.store, slot=sim.store.slot, now=0)
    return drift_user(books, user.user_public_key, books.load(user.user_public_key, "User"))


async def open_sub_account_0(
    sim: Simulator, client: DriftClient, wallet: Keypair, *, usdc: int
) -> None:
    """Sub-account 0 of ``wallet`` holding ``usdc`` USDC, with SOL-PERP's oracle at 150."""
    await client.initialize_user(0)
    await client.get_user(0).account_subscriber.fetch()
    await client.deposit(usdc * USDC, 0, associated_token_address(wallet.pubkey()))
    world_of(sim).set_oracle_price(SOL_PERP, 150.0)


def market(side: str, size: float, **fields: Any) -> OrderParams:
    direction = PositionDirection.Long() if side == "long" else PositionDirection.Short()
    return OrderParams(
        order_type=OrderType.Market(),
        base_asset_amount=round(size * BASE_PRECISION),
        market_index=SOL_PERP,
        direction=direction,
        market_type=MarketType.Perp(),
        **fields,
    )


def limit(side: str, size: float, price: float, **fields: Any) -> OrderParams:
    params = market(side, size, **fields)
    params.order_type = OrderType.Limit()
    params.price = round(price * PRICE_PRECISION)
    return params


def open_orders(user: DriftUser) -> list[Any]:
    return [o for o in user.get_user_account().orders if is_variant(o.status, "Open")]


def drift_error_name(exc: BaseException) -> str:
    """The Drift error a failed send names, mapped with the IDL as a client does."""
    found = re.search(r"Custom\((\d+)\)", str(exc))
    assert found, f"no custom program error in {exc}"
    return IDL_ERRORS[int(found.group(1))]


async def test_a_driftpy_client_trades_through_the_simulator(
    sim: Simulator, trader: tuple[DriftClient, Keypair]
) -> None:
    client, wallet = trader
    world = world_of(sim)
    authority = wallet.pubkey()
    usdc_account = associated_token_address(authority)

    # Users: sub-accounts 0 and 1 in order, at driftpy's PDAs, in the program's layouts.
    await client.initialize_user(0)
    await client.initialize_user(1)
    for sub in (0, 1):
        await refreshed(client, sub)
    info = await client.connection.get_account_info(
        get_user_account_public_key(DRIFT_PROGRAM_ID, authority, 1)
    )
    assert info.value is not None
    assert len(info.value.data) == 4376
    stats = await client.connection.get_account_info(
        get_user_stats_account_public_key(DRIFT_PROGRAM_ID, authority)
    )
    assert stats.value is not None
    assert len(stats.value.data) == 240

    # Collateral: 1,000 USDC into sub-account 0 and 500 into 1, out of the wallet's 10,000.
    await client.deposit(1_000 * USDC, 0, usdc_account, sub_account_id=0)
    await client.deposit(500 * USDC, 0, usdc_account, sub_account_id=1)
    balance = await client.connection.get_token_account_balance(usdc_account)
    assert int(balance.value.amount) == 8_500 * USDC
    sub0 = await refreshed(client, 0)
    sub1 = await refreshed(client, 1)
    # Drift scales balances by its cumulative interest and rounds what a user holds down.
    assert 1_000 * USDC - 1 <= sub0.get_token_amount(0) <= 1_000 * USDC
    assert 500 * USDC - 1 <= sub1.get_token_amount(0) <= 500 * USDC

    # A market order on sub-account 0 taken at once: oracle 150, 10 bps spread, 1 SOL.
    world.set_oracle_price(SOL_PERP, 150.0)
    assert world.oracle_price(SOL_PERP) == 150.0
    long_before = world.perp_market(SOL_PERP).amm.base_asset_amount_long
    await client.place_and_take_perp_order(market("long", 1.0), sub_account_id=0)
    sub0 = await refreshed(client, 0)
    position = sub0.get_perp_position(SOL_PERP)
    assert position is not None
    assert position.base_asset_amount == BASE_PRECISION
    assert position.quote_asset_amount == -150_150_000  # 1 SOL at 150 * 1.001
    assert position.quote_entry_amount == -150_150_000
    assert position.quote_break_even_amount == -150_150_000
    assert world.perp_market(SOL_PERP).amm.base_asset_amount_long == long_before + BASE_PRECISION
    # Collateral is the deposit plus the position at the oracle, exactly as driftpy values it.
    pnl = 150 * USDC - 150_150_000
    assert sub0.get_unrealized_pnl(True) == pnl
    assert sub0.get_total_collateral() == sub0.get_token_amount(0) + pnl
    truth = ground_truth(sim, sub0)
    for category in (MarginCategory.INITIAL, MarginCategory.MAINTENANCE):
        assert sub0.get_free_collateral(category) == truth.get_free_collateral(category)
        assert sub0.get_margin_requirement(category) == truth.get_margin_requirement(category)

    # A resting limit bid on sub-account 1 fills at its price once the oracle crosses it.
    await client.place_perp_order(limit("long", 2.0, 148.0, user_order_id=3), sub_account_id=1)
    sub1 = await refreshed(client, 1)
    (resting,) = open_orders(sub1)
    assert resting.user_order_id == 3
    assert sub1.get_perp_position(SOL_PERP).open_bids == 2 * BASE_PRECISION  # type: ignore[union-attr]
    await sim.step()
    assert open_orders(await refreshed(client, 1)) == [resting]  # the oracle is still above 148
    world.set_oracle_price(SOL_PERP, 147.0)
    await sim.step()
    sub1 = await refreshed(client, 1)
    assert open_orders(sub1) == []
    filled = sub1.get_order(resting.order_id)
    assert filled is not None
    assert is_variant(filled.status, "Filled")
    assert filled.base_asset_amount_filled == 2 * BASE_PRECISION
    assert filled.quote_asset_amount_filled == 296 * USDC
    position = sub1.get_perp_position(SOL_PERP)
    assert position is not None
    assert (position.base_asset_amount, position.quote_asset_amount) == (
        2 * BASE_PRECISION,
        -296 * USDC,
    )
    assert (position.open_bids, position.open_orders) == (0, 0)

    # Modify, cancel by user order id, cancel by order id, cancel all on sub-account 0.
    await client.place_perp_order(limit("short", 1.0, 170.0, user_order_id=5), sub_account_id=0)
    placed = (await refreshed(client, 0)).get_order_by_user_order_id(5)
    await client.modify_order(placed.order_id, ModifyOrderParams(price=171 * PRICE_PRECISION), 0)
    sub0 = await refreshed(client, 0)
    (modified,) = open_orders(sub0)
    assert (modified.user_order_id, modified.price) == (5, 171 * PRICE_PRECISION)
    assert modified.order_id != placed.order_id
    await client.cancel_order_by_user_id(5, sub_account_id=0)
    assert open_orders(await refreshed(client, 0)) == []
    await client.place_perp_order(limit("long", 1.0, 100.0), sub_account_id=0)
    await client.place_perp_order(limit("long", 1.0, 101.0), sub_account_id=0)
    first, second = open_orders(await refreshed(client, 0))
    await client.cancel_order(first.order_id, sub_account_id=0)
    assert open_orders(await refreshed(client, 0)) == [second]
    await client.cancel_orders(sub_account_id=0)
    sub0 = await refreshed(client, 0)
    assert open_orders(sub0) == []
    assert sub0.get_perp_position(SOL_PERP).open_bids == 0  # type: ignore[union-attr]

    # Close sub-account 0's long at 155 (bid 154.845) and settle the PnL into USDC.
    world.set_oracle_price(SOL_PERP, 155.0)
    await client.place_and_take_perp_order(market("short", 1.0, reduce_only=True), sub_account_id=0)
    sub0 = await refreshed(client, 0)
    realized = 154_845_000 - 150_150_000
    position = sub0.get_perp_position(SOL_PERP)
    assert position is not None
    assert (position.base_asset_amount, position.quote_asset_amount) == (0, realized)
    deposit = sub0.get_token_amount(0)
    await client.settle_pnl(sub0.user_public_key, sub0.get_user_account(), SOL_PERP)
    sub0 = await refreshed(client, 0)
    assert deposit + realized - 1 <= sub0.get_token_amount(0) <= deposit + realized
    assert sub0.get_perp_position(SOL_PERP) is None  # settled and closed: the slot is free
    assert sub0.get_user_account().settled_perp_pnl == realized
    assert sub0.get_total_collateral() == sub0.get_token_amount(0)


async def test_margin_refusal_is_drift_insufficient_collateral_and_changes_nothing(
    sim: Simulator, trader: tuple[DriftClient, Keypair]
) -> None:
    client, wallet = trader
    world = world_of(sim)
    await open_sub_account_0(sim, client, wallet, usdc=100)
    user_key = get_user_account_public_key(DRIFT_PROGRAM_ID, wallet.pubkey(), 0)
    before = _accounts(sim, user_key, world.perp_market_pubkey(SOL_PERP))

    # 100 USDC cannot carry 20 SOL (3,000 USD) at SOL-PERP's initial margin ratio.
    ratio = world.perp_market(SOL_PERP).margin_ratio_initial / 10_000
    assert 3_000 * ratio > 100
    with pytest.raises(Exception) as refused:  # noqa: PT011 - driftpy raises a bare Exception
        await client.place_and_take_perp_order(market("long", 20.0), sub_account_id=0)
    assert drift_error_name(refused.value) == "InsufficientCollateral"
    assert _accounts(sim, user_key, world.perp_market_pubkey(SOL_PERP)) == before

    # What the margin allows still trades.
    await client.place_and_take_perp_order(market("long", 0.1), sub_account_id=0)
    sub0 = await refreshed(client, 0)
    assert sub0.get_perp_position(SOL_PERP).base_asset_amount == BASE_PRECISION // 10  # type: ignore[union-attr]


def _accounts(sim: Simulator, *keys: Pubkey) -> list[bytes]:
    found = [sim.store.get(key) for key in keys]
    return [account.data for account in found if account is not None]


async def test_a_fill_reaches_a_websocket_subscriber_with_no_request(
    sim: Simulator, ws_trader: tuple[DriftClient, Keypair]
) -> None:
    client, wallet = ws_trader
    world = world_of(sim)
    await open_sub_account_0(sim, client, wallet, usdc=1_000)
    await client.place_perp_order(limit("short", 1.0, 151.0), sub_account_id=0)
    await sim.step()  # an ask at 151 is above the market's bid (149.85): it rests
    world.set_oracle_price(SOL_PERP, 152.0)
    await sim.step()  # the keeper fills the resting ask at 151; the User account changes

    def filled() -> bool:
        position = client.get_user(0).get_perp_position(SOL_PERP)
        return position is not None and position.base_asset_amount == -BASE_PRECISION

    await eventually(filled, "the fill notified to the user's account subscription")
    position = client.get_user(0).get_perp_position(SOL_PERP)
    assert position is not None
    assert position.quote_asset_amount == 151 * USDC
