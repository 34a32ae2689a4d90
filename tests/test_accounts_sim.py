"""Signers' sub-accounts on the shared client, against the simulator and driftpy's own math."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from driftpy.account_subscription_config import AccountSubscriptionConfig
from driftpy.addresses import get_user_account_public_key
from driftpy.constants.config import DRIFT_PROGRAM_ID
from driftpy.constants.numeric_constants import BASE_PRECISION, PRICE_PRECISION, QUOTE_PRECISION
from driftpy.drift_client import DriftClient
from driftpy.drift_user import DriftUser
from driftpy.math.perp_position import calculate_entry_price
from driftpy.types import MarketType, OrderParams, OrderType, PositionDirection
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair

from conftest import eventually, subscriptions_per_client
from driftshare import DriftAdapter
from driftshare.manager import DriftClientManager
from driftshare.sim import Simulator
from driftshare.sim.pytest_plugin import SimulatorFactory
from driftshare.sim.tokens import associated_token_address
from sim_users import Perp, put_user, put_user_stats

_MARKETS = 3
_SOL, _BTC = 0, 1
_ENGINE_ACCOUNTS = {
    0: {"usdc": 1_000.0, "perps": ()},
    1: {"usdc": 2_000.0, "perps": (Perp(_SOL, 3.0, 140.0, bid=1.0, bid_price=100.0),)},
    2: {"usdc": 5_000.0, "perps": (Perp(_BTC, -0.05, 99_000.0), Perp(_SOL, 10.0, 160.0))},
    3: {"usdc": 300.0, "perps": (Perp(_SOL, -4.0, 150.0),)},
}


@pytest_asyncio.fixture
async def sim(
    simulator_factory: SimulatorFactory, manager_settings: None
) -> AsyncIterator[Simulator]:
    """A small simulator and the manager pointed at it, with no background RPC during a test
    (health checks and confirmation rounds far apart)."""
    simulator = await simulator_factory(markets=_MARKETS)
    DriftClientManager.configure(
        rpc_url=simulator.http_url, health_interval_s=3600, stale_after_s=600
    )
    yield simulator
    await DriftClientManager.shutdown()


def _wallet_with_accounts(sim: Simulator, subs: dict[int, dict[str, Any]]) -> Keypair:
    wallet = Keypair()
    put_user_stats(sim, wallet.pubkey())
    for sub, spec in subs.items():
        put_user(sim, wallet.pubkey(), sub, **spec)
    return wallet


async def _driftpy(sim: Simulator, wallet: Keypair, subs: list[int]) -> DriftClient:
    """The reference: driftpy's own DriftClient reading the same accounts once."""
    client = DriftClient(
        AsyncClient(sim.http_url),
        wallet,
        env="mainnet",
        account_subscription=AccountSubscriptionConfig("cached"),
        sub_account_ids=subs,
        active_sub_account_id=subs[0],
    )
    await asyncio.wait_for(client.subscribe(), 30)
    return client


async def _close_driftpy(client: DriftClient) -> None:
    await client.unsubscribe()
    await client.connection.close()


def _expected_info(user: DriftUser) -> dict[str, Any]:
    liabilities = user.get_total_liability_value()
    assets = user.get_total_collateral(margin_category=None)
    return {
        "collateral": user.get_total_collateral() / QUOTE_PRECISION,
        "free_collateral": user.get_free_collateral() / QUOTE_PRECISION,
        "leverage": user.get_leverage() / 10_000,
        "unrealized_pnl": user.get_unrealized_pnl(True) / QUOTE_PRECISION,
        "margin_ratio": None if liabilities == 0 else (assets * 10_000 // liabilities) / 10_000,
    }


def _expected_positions(user: DriftUser) -> list[dict[str, Any]]:
    rows = []
    for p in sorted(user.get_active_perp_positions(), key=lambda p: p.market_index):
        liq = user.get_perp_liq_price(p.market_index)
        rows.append(
            {
                "market_index": p.market_index,
                "size": p.base_asset_amount / BASE_PRECISION,
                "entry_price": calculate_entry_price(p) / PRICE_PRECISION,
                "unrealized_pnl": user.get_unrealized_pnl(True, p.market_index) / QUOTE_PRECISION,
                "liquidation_price": None if liq == -1 else liq / PRICE_PRECISION,
            }
        )
    return rows


_POSITION_FIELDS = ("market_index", "size", "entry_price", "unrealized_pnl", "liquidation_price")


def _fresh(row: dict[str, Any]) -> None:
    assert row["slot"] > 0
    assert 0.0 <= row["data_age_s"] < math.inf
    assert row["stale"] is False


def _subscriptions(sim: Simulator) -> int:
    active: int = sim.stats()["subscriptions"]["active"]
    return active


def _sockets(sim: Simulator) -> int:
    open_: int = sim.stats()["ws_connections"]["open"]
    return open_


def _client_tasks() -> list[asyncio.Task[object]]:
    """The tasks driftshare's clients and driftpy's subscribers run now (not the simulator's;
    driftpy names none of its tasks, so they are told by their code's file)."""
    found = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        where = "" if code is None else code.co_filename
        if ("/driftpy/" in where or "/driftshare/" in where) and "/driftshare/sim/" not in where:
            found.append(task)
    return found


def _calls(sim: Simulator, method: str) -> int:
    calls: int = sim.stats()["calls"]["by_method"].get(method, 0)
    return calls


async def test_five_engines_two_wallets_share_one_client_and_one_subscription_per_user(
    sim: Simulator,
) -> None:
    first = _wallet_with_accounts(sim, _ENGINE_ACCOUNTS)
    second = _wallet_with_accounts(sim, {0: {"usdc": 750.0}})
    reader = DriftAdapter()  # a market-data engine: no signer
    assert await reader.connect()
    markets_only = subscriptions_per_client(sim)
    await eventually(lambda: _subscriptions(sim) == markets_only, "markets subscribed")
    sockets = _sockets(sim)
    reads_before = _calls(sim, "getMultipleAccounts")

    engines = [DriftAdapter() for _ in range(6)]
    wallets = [(first, 0), (first, 1), (first, 2), (first, 3), (second, 0), (first, 0)]
    assert (
        await asyncio.gather(*(e.connect(w, s) for e, (w, s) in zip(engines, wallets, strict=True)))
        == [True] * 6
    )
    shared = DriftClientManager.shared_state()
    assert shared is not None
    assert DriftClientManager.stats()["references"] == 7
    assert DriftClientManager.stats()["initializations"] == 1
    # Five User accounts and two UserStats, once each, on the sockets already open.
    await eventually(lambda: _subscriptions(sim) == markets_only + 5 + 2, "users subscribed")
    assert _sockets(sim) == sockets
    assert len(shared.accounts.watched()) == 7
    registered = DriftClientManager.stats()["accounts"]
    assert (registered["signers"], registered["watched"]) == (2, 7)
    assert sorted((a["sub_account_id"], a["references"]) for a in registered["sub_accounts"]) == [
        (0, 1),
        (0, 2),
        (1, 1),
        (2, 1),
        (3, 1),
    ]
    # One batched read per new registration (the repeated one reads nothing).
    assert _calls(sim, "getMultipleAccounts") - reads_before == 5 + shared.confirmer.requests
    # One DriftClient per authority, the repeated sub-account one handle with two references.
    assert engines[0].account is engines[5].account
    assert engines[0].account is not None
    assert engines[0].account.refs == 2
    clients = {id(e.account.client) for e in engines if e.account is not None}
    assert len(clients) == 2

    calls = sim.stats()["calls"]["total"]
    for engine in engines:
        _fresh(await engine.get_account_info() or {})
        for row in await engine.get_positions() + await engine.get_open_orders():
            _fresh(row)
        assert (await engine.verify_drift_account())["ready"]
    assert sim.stats()["calls"]["total"] == calls  # no RPC request per read

    for engine in engines[:5]:
        await engine.disconnect()
    # Sub-account 0 of the first wallet is still used by the sixth engine.
    await eventually(lambda: _subscriptions(sim) == markets_only + 2, "users unsubscribed")
    assert engines[5].can_trade
    await engines[5].disconnect()
    await eventually(lambda: _subscriptions(sim) == markets_only, "last user unsubscribed")
    assert shared.accounts.watched() == {}
    assert shared.accounts.accounts() == []
    await reader.disconnect()
    await eventually(lambda: _subscriptions(sim) == 0 and _sockets(sim) == 0, "all closed")
    await eventually(lambda: _client_tasks() == [], "every task ended")


@pytest.mark.parametrize("use_singleton", [True, False], ids=["singleton", "private"])
async def test_reads_equal_driftpys_drift_user_math(sim: Simulator, use_singleton: bool) -> None:
    wallet = _wallet_with_accounts(sim, _ENGINE_ACCOUNTS)
    reference = await _driftpy(sim, wallet, sorted(_ENGINE_ACCOUNTS))
    engines = {sub: DriftAdapter(use_singleton=use_singleton) for sub in _ENGINE_ACCOUNTS}
    try:
        for sub, engine in engines.items():
            assert await engine.connect(wallet, sub)
        for sub, engine in engines.items():
            user = reference.get_user(sub)
            info = await engine.get_account_info()
            assert info is not None
            _fresh(info)
            assert {k: info[k] for k in _expected_info(user)} == _expected_info(user)
            assert info["user_account"] == str(user.user_public_key)
            positions = await engine.get_positions()
            expected = _expected_positions(user)
            assert [{k: p[k] for k in _POSITION_FIELDS} for p in positions] == expected
            for row in positions:
                _fresh(row)
                market = reference.get_perp_market_account(row["market_index"])
                assert row["symbol"] == bytes(market.name).decode().strip()
            orders = await engine.get_open_orders()
            assert [(o["order_id"], o["user_order_id"], o["size"], o["price"]) for o in orders] == [
                (
                    o.order_id,
                    o.user_order_id,
                    o.base_asset_amount / BASE_PRECISION,
                    o.price / PRICE_PRECISION,
                )
                for o in user.get_open_orders()
            ]
            status = await engine.verify_drift_account()
            assert status["ready"]
            assert status["positions"] == len(expected)
            assert status["collateral"] == info["collateral"]
            assert status["address"] == engine.address == str(wallet.pubkey())
    finally:
        for engine in engines.values():
            await engine.disconnect()
        await _close_driftpy(reference)


@pytest.mark.parametrize("use_singleton", [True, False], ids=["singleton", "private"])
async def test_a_missing_user_answers_false_and_says_how_to_initialize_it(
    sim: Simulator, use_singleton: bool
) -> None:
    wallet = Keypair()
    address = get_user_account_public_key(DRIFT_PROGRAM_ID, wallet.pubkey(), 2)
    engine = DriftAdapter(use_singleton=use_singleton)
    try:
        assert not await engine.connect(wallet, 2)
        status = await engine.verify_drift_account()
        assert status["ready"] is False
        assert "initialize_user(sub_account_id=2)" in status["message"]
        assert status["user_account"] == str(address)
        assert status["address"] == str(wallet.pubkey())
        assert status["stale"] is True
        assert not engine.can_trade
        assert await engine.get_account_info() is None
        assert await engine.get_positions() == []
        assert sim.store.get(address) is None  # never created
        if use_singleton:
            shared = DriftClientManager.shared_state()
            assert shared is not None
            assert shared.accounts.watched() == {}
        # Once the wallet has initialized it, connecting again registers it.
        put_user(sim, wallet.pubkey(), 2)
        assert await engine.connect(wallet, 2)
        assert engine.can_trade
        assert (await engine.verify_drift_account())["ready"]
    finally:
        await engine.disconnect()


@pytest.mark.parametrize("mode", ["websocket", "polling"])
async def test_a_write_reaches_the_reads_by_the_slot_waited_for(sim: Simulator, mode: str) -> None:
    DriftClientManager.configure(
        rpc_url=sim.http_url,
        health_interval_s=3600,
        stale_after_s=600,
        subscription=mode,
        poll_interval_s=0.05,
    )
    wallet = _wallet_with_accounts(sim, {0: {"usdc": 1_000.0}})
    engine = DriftAdapter()
    try:
        assert await engine.connect(wallet, 0)
        account = engine.account
        assert account is not None
        tasks = len(_client_tasks())
        # What a confirmed deposit and fill would leave, at a new slot.
        slot = await sim.step()
        put_user(sim, wallet.pubkey(), 0, usdc=4_000.0, perps=(Perp(_SOL, 1.0, 150.0),))
        assert await account.wait_for_slot(slot, 5.0)
        assert account.confirmed_slot() >= slot
        reference = await _driftpy(sim, wallet, [0])
        try:
            user = reference.get_user(0)
            info = await engine.get_account_info()
            assert info is not None
            assert {k: info[k] for k in _expected_info(user)} == _expected_info(user)
            positions = await engine.get_positions()
            assert [{k: p[k] for k in _POSITION_FIELDS} for p in positions] == (
                _expected_positions(user)
            )
        finally:
            await _close_driftpy(reference)
        # A slot the account never reaches: False at the timeout, and reads stale after it.
        assert not await account.wait_for_slot(slot + 1_000, 0.2)
        info = await engine.get_account_info()
        assert info is not None
        assert info["stale"] is True
        # A rebuild while the user is watched: the replaced subscription stops everything.
        assert await DriftClientManager.force_reconnect()
        await eventually(lambda: len(_client_tasks()) == tasks, "tasks of the old one ended")
    finally:
        await engine.disconnect()
    await DriftClientManager.shutdown()
    # driftpy cancels its loader's task without waiting for it: it ends within a turn or two.
    await eventually(lambda: _client_tasks() == [], "every task ended")


async def test_instructions_are_built_for_the_explicit_sub_account(sim: Simulator) -> None:
    wallet = _wallet_with_accounts(
        sim, {0: {"usdc": 1_000.0}, 2: {"usdc": 5_000.0, "perps": (Perp(_BTC, -0.05, 99_000.0),)}}
    )
    first, second = DriftAdapter(), DriftAdapter()
    try:
        assert await first.connect(wallet, 0)
        assert await second.connect(wallet, 2)
        zero, two = first.account, second.account
        assert zero is not None
        assert two is not None
        client = zero.client
        assert two.client is client
        active = client.active_sub_account_id
        params = OrderParams(
            order_type=OrderType.Limit(),
            base_asset_amount=BASE_PRECISION,
            market_index=_SOL,
            direction=PositionDirection.Long(),
            market_type=MarketType.Perp(),
            price=100 * PRICE_PRECISION,
            user_order_id=5,
        )
        seen: list[int] = []

        def build(c: DriftClient) -> Any:
            seen.append(c.active_sub_account_id)
            return c.get_place_perp_order_ix(params, two.sub_account_id)

        ix = two.build_ixs(build)
        assert seen == [2]
        assert client.active_sub_account_id == active
        keys = [meta.pubkey for meta in ix.accounts]
        assert get_user_account_public_key(DRIFT_PROGRAM_ID, wallet.pubkey(), 2) in keys
        assert get_user_account_public_key(DRIFT_PROGRAM_ID, wallet.pubkey(), 0) not in keys
        # Remaining accounts come from sub-account 2's own positions (BTC).
        assert client.get_perp_market_account(_BTC).pubkey in keys

        async def later(c: DriftClient) -> None:
            """A coroutine would run under whatever sub-account is active when awaited."""

        with pytest.raises(TypeError, match="synchronous"):
            # It raises instead of returning the coroutine mypy expects.
            two.build_ixs(later)  # type: ignore[unused-coroutine]
        assert client.active_sub_account_id == active
    finally:
        await first.disconnect()
        await second.disconnect()


async def test_manager_level_reads_for_engines_without_an_adapter(sim: Simulator) -> None:
    wallet = _wallet_with_accounts(sim, {1: _ENGINE_ACCOUNTS[1]})
    account = await DriftClientManager.open_account(wallet, 1)
    assert account is not None
    assert DriftClientManager.stats()["references"] == 1
    reference = await _driftpy(sim, wallet, [1])
    try:
        user = reference.get_user(1)
        info = await DriftClientManager.get_account_info(wallet.pubkey(), 1)
        assert info is not None
        assert {k: getattr(info, k) for k in _expected_info(user)} == _expected_info(user)
        positions = await DriftClientManager.get_positions(str(wallet.pubkey()), 1)
        assert [{k: getattr(p, k) for k in _POSITION_FIELDS} for p in positions] == (
            _expected_positions(user)
        )
        orders = await DriftClientManager.get_open_orders(wallet.pubkey(), 1)
        assert [o.order_id for o in orders] == [o.order_id for o in user.get_open_orders()]
        assert (await DriftClientManager.verify_account(wallet.pubkey(), 1)).ready
    finally:
        await _close_driftpy(reference)
    put_user(sim, wallet.pubkey(), 2, usdc=0.0)
    empty = await DriftClientManager.open_account(wallet, 2)
    assert empty is not None
    status = await DriftClientManager.verify_account(wallet.pubkey(), 2)
    assert not status.ready
    assert "deposit" in status.message
    await DriftClientManager.close_account(empty)
    unregistered = await DriftClientManager.verify_account(wallet.pubkey(), 3)
    assert not unregistered.ready
    assert "open_account" in unregistered.message
    assert await DriftClientManager.open_account(wallet, 3) is None
    assert DriftClientManager.stats()["references"] == 1
    missing = await DriftClientManager.verify_account(wallet.pubkey(), 3)
    assert "initialize_user(sub_account_id=3)" in missing.message
    put_user(sim, wallet.pubkey(), 3, usdc=0.0)
    created = await DriftClientManager.open_account(wallet, 3)
    assert created is not None
    await DriftClientManager.close_account(created)
    # The failure before it was created is no longer why it is not ready.
    closed = await DriftClientManager.verify_account(wallet.pubkey(), 3)
    assert "open_account" in closed.message
    assert "initialize_user" not in closed.message
    await DriftClientManager.close_account(account)
    assert DriftClientManager.stats()["references"] == 0
    assert DriftClientManager.account(wallet.pubkey(), 1) is None


async def test_sync_wrappers_for_callers_without_an_event_loop(sim: Simulator) -> None:
    wallet = _wallet_with_accounts(sim, {0: {"usdc": 1_000.0}})
    engine = DriftAdapter()
    # Inside a running loop a sync wrapper cannot wait: it answers at once.
    assert engine.connect_sync(wallet, 0) is False
    assert engine.verify_drift_account_sync()["ready"] is False

    def trade_script() -> tuple[bool, dict[str, Any], bool]:
        connected = engine.connect_sync(wallet, 0)
        status = engine.verify_drift_account_sync()
        can_trade = engine.can_trade
        engine.disconnect_sync()
        return connected, status, can_trade

    connected, status, can_trade = await asyncio.to_thread(trade_script)
    assert connected
    assert can_trade
    assert status["ready"]
    reference = await _driftpy(sim, wallet, [0])
    try:
        assert status["collateral"] == _expected_info(reference.get_user(0))["collateral"]
    finally:
        await _close_driftpy(reference)
    await eventually(lambda: _subscriptions(sim) == 0 and _sockets(sim) == 0, "closed")


async def test_a_rebuilt_subscription_keeps_each_user_subscribed_once(sim: Simulator) -> None:
    wallet = _wallet_with_accounts(sim, {0: {"usdc": 1_000.0}})
    engine = DriftAdapter()
    try:
        assert await engine.connect(wallet, 0)
        markets_only = subscriptions_per_client(sim)
        await eventually(lambda: _subscriptions(sim) == markets_only + 2, "user subscribed")
        assert await DriftClientManager.force_reconnect()
        await eventually(lambda: _subscriptions(sim) == markets_only + 2, "user resubscribed")
        account = engine.account
        assert account is not None
        reads = _calls(sim, "getMultipleAccounts")
        slot = await sim.step()
        put_user(sim, wallet.pubkey(), 0, usdc=2_500.0)
        assert await account.wait_for_slot(slot, 5.0)
        # A notification on the new subscription brought it: no account was read.
        assert _calls(sim, "getMultipleAccounts") == reads
        info = await engine.get_account_info()
        assert info is not None
        assert info["stale"] is False
        assert info["collateral"] > 2_000.0
    finally:
        await engine.disconnect()


async def test_users_the_program_initialized_read_as_driftpy_reads_them(sim: Simulator) -> None:
    """Users created, funded and trading through the simulator's Drift program."""
    wallet = Keypair()
    trader = DriftClient(
        AsyncClient(sim.http_url),
        wallet,
        env="mainnet",
        account_subscription=AccountSubscriptionConfig("cached"),
        sub_account_ids=[0, 1],
    )
    await trader.connection.request_airdrop(wallet.pubkey(), 10**9)
    async with httpx.AsyncClient() as http:
        funded = await http.post(
            f"{sim.http_url}/_sim/usdc", json={"owner": str(wallet.pubkey()), "amount": 10_000}
        )
    assert funded.status_code == 200
    await trader.subscribe()
    engines = [DriftAdapter(), DriftAdapter()]
    try:
        usdc = associated_token_address(wallet.pubkey())
        for sub, amount in ((0, 1_000), (1, 500)):
            await trader.initialize_user(sub)
            await trader.get_user(sub).account_subscriber.fetch()  # driftpy reads it once
            await trader.deposit(amount * QUOTE_PRECISION, 0, usdc, sub_account_id=sub)
            await trader.get_user(sub).account_subscriber.fetch()
        market = OrderParams(
            order_type=OrderType.Market(),
            base_asset_amount=BASE_PRECISION,
            market_index=_SOL,
            direction=PositionDirection.Long(),
            market_type=MarketType.Perp(),
        )
        await trader.place_and_take_perp_order(market, sub_account_id=0)
        for sub, engine in enumerate(engines):
            assert await engine.connect(wallet, sub)
        account = engines[1].account
        assert account is not None
        # Read your writes: an order sent by driftpy itself, then the slot it landed at.
        bid = OrderParams(
            order_type=OrderType.Limit(),
            base_asset_amount=2 * BASE_PRECISION,
            market_index=_SOL,
            direction=PositionDirection.Long(),
            market_type=MarketType.Perp(),
            price=100 * PRICE_PRECISION,
            user_order_id=3,
        )
        sent = await trader.send_ixs([trader.get_place_perp_order_ix(bid, 1)])
        assert await account.wait_for_slot(sent.slot, 5.0)
        await trader.account_subscriber.fetch()
        for sub, engine in enumerate(engines):
            user = trader.get_user(sub)
            await user.account_subscriber.fetch()
            info = await engine.get_account_info()
            assert info is not None
            _fresh(info)
            assert {k: info[k] for k in _expected_info(user)} == _expected_info(user)
            positions = await engine.get_positions()
            assert [{k: p[k] for k in _POSITION_FIELDS} for p in positions] == (
                _expected_positions(user)
            )
            orders = await engine.get_open_orders()
            assert [(o["user_order_id"], o["size"]) for o in orders] == [
                (o.user_order_id, o.base_asset_amount / BASE_PRECISION)
                for o in user.get_open_orders()
            ]
        assert [o["user_order_id"] for o in await engines[1].get_open_orders()] == [3]
        assert [p["size"] for p in await engines[0].get_positions()] == [1.0]
    finally:
        for engine in engines:
            await engine.disconnect()
        await _close_driftpy(trader)
