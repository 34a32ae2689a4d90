"""Trading through the shared client against the simulator's Drift program.

Truth is the chain's: the User accounts in the simulator's store (orders placed, orders
open) and the simulator's own transaction counts, never the sender's word.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
import pytest_asyncio
from driftpy.constants.numeric_constants import BASE_PRECISION, PRICE_PRECISION
from driftpy.types import MarketType, OrderParams, OrderType, PositionDirection
from solders.keypair import Keypair

from conftest import eventually
from driftshare import DriftAdapter
from driftshare._engines import FundingEngine
from driftshare._tx import PathTxSender
from driftshare.manager import DriftClientManager
from driftshare.sim import Simulator
from driftshare.sim.pytest_plugin import SimulatorFactory
from driftshare.sim.wallets import open_wallet
from sim_trading import open_user_order_ids, orders_placed, ticking, user_account

TX_SETTINGS: dict[str, Any] = {
    "health_interval_s": 3600,
    "rpc_rps": 10,
    "tx_blockhash_interval_s": 0.05,
    "tx_status_interval_s": 0.05,
    "tx_resend_s": 0.3,
    "tx_timeout_s": 30.0,
    "tx_read_timeout_s": 5.0,
}


@pytest_asyncio.fixture
async def chain(
    simulator_factory: SimulatorFactory, manager_settings: None
) -> AsyncIterator[Simulator]:
    """A ticking two-market simulator, the manager pointed at it."""
    sim = await simulator_factory(markets=2)
    DriftClientManager.configure(rpc_url=sim.http_url, **TX_SETTINGS)
    async with ticking(sim):
        yield sim
        await DriftClientManager.shutdown()


async def connected(wallet: Keypair, sub: int, *, use_singleton: bool = True) -> DriftAdapter:
    adapter = DriftAdapter(use_singleton=use_singleton)
    assert await adapter.connect(wallet, sub), adapter.verify_drift_account
    return adapter


@asynccontextmanager
async def funded_engine(chain: Simulator) -> AsyncIterator[tuple[Keypair, DriftAdapter]]:
    """A new wallet's sub-account 0 with 500 USDC deposited, its adapter connected."""
    wallet = await open_wallet(chain.http_url, DriftClientManager.settings(), subs=1, usdc=1_000)
    adapter = await connected(wallet, 0)
    try:
        assert (await adapter.deposit(500))["status"] == "confirmed"
        yield wallet, adapter
    finally:
        await adapter.disconnect()


async def resting_bid(adapter: DriftAdapter) -> float:
    """A bid price far under the market: the order rests instead of filling."""
    mark = await adapter.get_mark_price(0)
    assert mark is not None
    return round(mark / 2, 2)


@pytest.mark.parametrize("use_singleton", [True, False], ids=["shared", "private"])
async def test_writes_land_once_and_the_next_read_reflects_them(
    chain: Simulator, use_singleton: bool
) -> None:
    settings = DriftClientManager.settings()
    wallet = await open_wallet(chain.http_url, settings, subs=1, usdc=1_000)
    adapter = await connected(wallet, 0, use_singleton=use_singleton)
    try:
        deposit = await adapter.deposit(500)
        assert deposit["status"] == "confirmed", deposit
        assert deposit["reflected"] is True
        info = await adapter.get_account_info()
        assert info is not None
        assert info["slot"] >= deposit["slot"]
        assert not info["stale"]
        # The deposit is in (before it, none): 500 plus the little interest accrued since.
        assert info["collateral"] == pytest.approx(500, rel=1e-3)

        bid = await adapter.place_perp_order(
            0, "long", 0.5, "LIMIT", price=await resting_bid(adapter), user_order_id=7
        )
        assert bid["status"] == "confirmed", bid
        assert bid["user_order_id"] == 7
        assert open_user_order_ids(chain, wallet, 0) == [7]
        orders = await adapter.get_open_orders()
        assert [o["user_order_id"] for o in orders] == [7]

        cancel = await adapter.cancel_order(user_order_id=7)
        assert cancel["status"] == "confirmed", cancel
        assert open_user_order_ids(chain, wallet, 0) == []
        assert await adapter.get_open_orders() == []
        assert orders_placed(chain, wallet, 0) == 1
    finally:
        await adapter.disconnect()


def _landed(sim: Simulator, wallet: Keypair) -> int:
    counts = sim.stats()["transactions"]["by_signer"].get(str(wallet.pubkey()), {})
    return int(counts.get("landed", 0)) + int(counts.get("failed", 0))


async def _dropped_then_resent(sim: Simulator) -> None:
    sim.faults.drop_transactions(2)


async def _landed_then_429(sim: Simulator) -> None:
    sim.faults.lose_replies(1, "429")


async def _landed_then_no_answer(sim: Simulator) -> None:
    sim.faults.lose_replies(1, "timeout")


async def _landing_late(sim: Simulator) -> None:
    sim.faults.delay_landing(1.0)


def _refused(sim: Simulator) -> int:
    by_signer = sim.stats()["transactions"]["by_signer"].values()
    return sum(int(counts.get("refused", 0)) for counts in by_signer)


async def _blockhash_refused_for_a_while(sim: Simulator) -> None:
    refused_before = _refused(sim)
    sim.faults.expire_blockhashes(0)
    # Lifted once the chain has refused a send for its blockhash, not after a fixed wait.
    await eventually(lambda: _refused(sim) > refused_before, "a send refused for its blockhash")
    sim.faults.expire_blockhashes(150)


FAULTS: dict[str, tuple[Callable[[Simulator], Coroutine[Any, Any, None]], int]] = {
    "dropped": (_dropped_then_resent, 3),
    "landed-then-429": (_landed_then_429, 1),
    "landed-then-timeout": (_landed_then_no_answer, 1),
    "late-landing": (_landing_late, 2),
    "early-blockhash-expiry": (_blockhash_refused_for_a_while, 2),
}
"""Each sets its fault (and lifts it, where it lasts a while) while the order is placed, and
the fewest sends the fault forces (resends of the same bytes)."""


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_every_trading_fault_lands_the_order_exactly_once(
    chain: Simulator, fault: str
) -> None:
    DriftClientManager.configure(
        rpc_url=chain.http_url, request_timeout_s=1.0, call_deadline_s=2.0, **TX_SETTINGS
    )
    async with funded_engine(chain) as (wallet, adapter):
        price = await resting_bid(adapter)
        landed_before = _landed(chain, wallet)
        inject, fewest_sends = FAULTS[fault]
        faulty = asyncio.create_task(inject(chain))
        await asyncio.sleep(0)  # the fault is on before the order leaves
        bid = await adapter.place_perp_order(0, "long", 0.5, "LIMIT", price=price)
        await faulty
        await chain.faults.clear()
        # The chain holds the order exactly once, and the result says so.
        assert bid["status"] == "confirmed", bid
        assert open_user_order_ids(chain, wallet, 0) == [bid["user_order_id"]]
        assert orders_placed(chain, wallet, 0) == 1
        assert _landed(chain, wallet) == landed_before + 1
        assert bid["signatures"] == [bid["signature"]]
        assert bid["sends"] >= fewest_sends


async def test_a_write_whose_sends_all_vanish_is_unknown_and_never_signed_again(
    chain: Simulator,
) -> None:
    async with funded_engine(chain) as (wallet, adapter):
        price = await resting_bid(adapter)
        shared = DriftClientManager.shared_state()
        assert shared is not None
        shared.tx.sender.timeout_s = 1.5  # well inside the blockhash's 150 blocks
        chain.faults.drop_transactions(1_000)
        bid = await adapter.place_perp_order(0, "long", 0.5, "LIMIT", price=price)
        await chain.faults.clear()
        assert bid["status"] == "unknown", bid
        assert bid["signature"] is not None
        assert bid["signatures"] == [bid["signature"]]
        assert bid["sends"] > 1  # resent, always the same bytes: one signature
        assert orders_placed(chain, wallet, 0) == 0


async def test_a_refused_order_is_failed_with_drifts_error_name(chain: Simulator) -> None:
    wallet = await open_wallet(chain.http_url, DriftClientManager.settings(), subs=1, usdc=1_000)
    adapter = await connected(wallet, 0)
    try:
        # No collateral: the program refuses the order for margin.
        bid = await adapter.place_perp_order(
            0, "long", 5.0, "LIMIT", price=await resting_bid(adapter)
        )
        assert bid["status"] == "failed", bid
        assert bid["error"] == "InsufficientCollateral"
        assert orders_placed(chain, wallet, 0) == 0
        # Writes that cannot be built fail before anything is signed, never raising.
        nan = float("nan")
        refused = {
            "InvalidDirection": adapter.place_perp_order(0, "sideways", 1.0),
            "InvalidOrderType": adapter.place_perp_order(0, "long", 1.0, "STOP"),
            "InvalidOrderPrice": adapter.place_perp_order(0, "long", 1.0, "LIMIT", price=nan),
            "InvalidOrderSize": adapter.place_perp_order(0, "long", float("inf")),
            "UnknownMarket": adapter.place_perp_order("NOPE-PERP", "long", 1.0),
            "InvalidAmount": adapter.deposit(nan),
            "NoPosition": adapter.close_position(0),
        }
        for name, write in refused.items():
            result = await write
            assert result["status"] == "failed", result
            assert result["error"].startswith(name), result
            assert result["signatures"] == []
    finally:
        await adapter.disconnect()


def _tx_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("driftshare-tx-")]


async def test_five_engines_on_two_wallets_trade_at_once_through_one_client(
    chain: Simulator,
) -> None:
    settings = DriftClientManager.settings()
    first = await open_wallet(chain.http_url, settings, subs=4, usdc=4_000)
    second = await open_wallet(chain.http_url, settings, subs=1, usdc=1_000)
    engines = [(first, sub) for sub in range(4)] + [(second, 0)]
    adapters = [await connected(wallet, sub) for wallet, sub in engines]
    try:
        deposits = await asyncio.gather(*(a.deposit(500) for a in adapters))
        assert [d["status"] for d in deposits] == ["confirmed"] * 5
        price = await resting_bid(adapters[0])
        bids = await asyncio.gather(
            *(a.place_perp_order(0, "long", 0.5, "LIMIT", price=price) for a in adapters)
        )
        assert [b["status"] for b in bids] == ["confirmed"] * 5, bids
        for (wallet, sub), bid, adapter in zip(engines, bids, adapters, strict=True):
            # Each order is on its own sub-account, once, and that engine reads it.
            assert open_user_order_ids(chain, wallet, sub) == [bid["user_order_id"]]
            assert orders_placed(chain, wallet, sub) == 1
            orders = await adapter.get_open_orders()
            assert [o["user_order_id"] for o in orders] == [bid["user_order_id"]]
        cancels = await asyncio.gather(*(a.cancel_all_orders() for a in adapters))
        assert [c["status"] for c in cancels] == ["confirmed"] * 5
        assert all(open_user_order_ids(chain, w, s) == [] for w, s in engines)
        assert DriftClientManager.stats()["references"] == 5
        # Every write landed once: the set-up (UserStats and 4 users: 2 transactions), then
        # a deposit, an order and a cancel each.
        assert _landed(chain, first) == 2 + 4 * 3
        assert _landed(chain, second) == 1 + 3
    finally:
        for adapter in adapters:
            await adapter.disconnect()
    assert DriftClientManager.stats()["references"] == 0
    await eventually(lambda: not _tx_tasks(), "the transaction path's tasks end")


async def test_an_engine_calling_driftpy_itself_takes_the_shared_path(chain: Simulator) -> None:
    wallet = await open_wallet(chain.http_url, DriftClientManager.settings(), subs=1, usdc=1_000)
    adapter = await connected(wallet, 0)
    try:
        account = adapter.account
        assert account is not None
        # Registered: its signer's DriftClient sends through the path before any write.
        assert isinstance(account.client.tx_sender, PathTxSender)
        assert (await adapter.deposit(500))["status"] == "confirmed"
        params = OrderParams(
            order_type=OrderType.Limit(),
            base_asset_amount=BASE_PRECISION // 2,
            market_index=0,
            direction=PositionDirection.Long(),
            market_type=MarketType.Perp(),
            price=round(await resting_bid(adapter) * PRICE_PRECISION),
            user_order_id=9,
        )
        before = dict(chain.stats()["calls"]["by_method"])
        signature = await account.client.place_perp_order(params, sub_account_id=0)
        after = chain.stats()["calls"]["by_method"]
        assert open_user_order_ids(chain, wallet, 0) == [9]
        assert signature is not None
        # driftpy's own sender would have read both lookup tables and a blockhash for it.
        assert after.get("getAccountInfo", 0) == before.get("getAccountInfo", 0)
    finally:
        await adapter.disconnect()


@pytest.mark.parametrize("order_type", ["MARKET", "LIMIT"])
async def test_an_order_landing_after_its_max_ts_does_not_act(
    chain: Simulator, order_type: str
) -> None:
    DriftClientManager.configure(rpc_url=chain.http_url, **{**TX_SETTINGS, "tx_timeout_s": 1.0})
    async with funded_engine(chain) as (wallet, adapter):
        price = await resting_bid(adapter)
        landed = _landed(chain, wallet)
        chain.faults.delay_landing(2.5)  # past max_ts, within the blockhash
        # A market order's max_ts is DRIFT_TX_TIMEOUT_S after signing; a limit order's is
        # the expiry it is given.
        expiry = {"price": price, "expires_in_s": 1.0} if order_type == "LIMIT" else {}
        order = await adapter.place_perp_order(0, "long", 0.5, order_type, **expiry)
        assert order["status"] == "unknown", order  # the sender gave up before it landed
        await eventually(lambda: _landed(chain, wallet) == landed + 1, "the late copy lands")
        assert orders_placed(chain, wallet, 0) == 0
        assert not any(p.base_asset_amount for p in user_account(chain, wallet, 0).perp_positions)


async def test_a_limit_order_rests_until_cancelled_unless_given_an_expiry(
    chain: Simulator,
) -> None:
    async with funded_engine(chain) as (wallet, adapter):
        price = await resting_bid(adapter)
        resting = await adapter.place_perp_order(0, "long", 0.5, "LIMIT", price=price)
        before = int(time.time())
        timed = await adapter.place_perp_order(
            0, "long", 0.5, "LIMIT", price=price, expires_in_s=600
        )
        after = int(time.time())
        assert resting["status"] == timed["status"] == "confirmed"
        max_ts = {o.user_order_id: o.max_ts for o in user_account(chain, wallet, 0).orders}
        # 0: no expiry, the program's own for a limit order (DRIFT_TX_TIMEOUT_S is 30 s here).
        assert max_ts[resting["user_order_id"]] == 0
        assert before + 600 <= max_ts[timed["user_order_id"]] <= after + 600
        refused = await adapter.place_perp_order(
            0, "long", 0.5, "LIMIT", price=price, expires_in_s=-1
        )
        assert refused["status"] == "failed"
        assert refused["error"].startswith("InvalidExpiry")


async def test_the_funding_engine_opens_and_closes_delta_neutral_legs(chain: Simulator) -> None:
    wallet = await open_wallet(chain.http_url, DriftClientManager.settings(), subs=1, usdc=10_000)
    engine = FundingEngine()
    engine.trade_with(wallet)
    assert await engine.adapter.connect(wallet)  # as start() does, without the ticking task
    try:
        await engine.run_once()  # deposits
        await engine.run_once()  # opens two legs, opposite sides of the same notional
        assert engine.orders == {"confirmed": 3, "failed": 0, "unknown": 0}, engine.last_error
        held = {
            p.market_index: p.base_asset_amount > 0
            for p in user_account(chain, wallet, 0).perp_positions
            if p.base_asset_amount
        }
        assert sorted(held) == [0, 1]
        assert held[0] != held[1]
        await engine.run_once()  # closes them
        assert engine.orders["confirmed"] == 5
        assert not any(p.base_asset_amount for p in user_account(chain, wallet, 0).perp_positions)
        assert engine.errors == 0
    finally:
        await engine.adapter.disconnect()


async def test_the_path_survives_a_reconnect(chain: Simulator) -> None:
    async with funded_engine(chain) as (wallet, adapter):
        shared = DriftClientManager.shared_state()
        assert shared is not None
        path = shared.tx
        assert await DriftClientManager.force_reconnect()
        bid = await adapter.place_perp_order(
            0, "long", 0.5, "LIMIT", price=await resting_bid(adapter)
        )
        assert bid["status"] == "confirmed", bid
        assert open_user_order_ids(chain, wallet, 0) == [bid["user_order_id"]]
        assert shared.tx is path


def _sim_counts(sim: Simulator) -> tuple[int, Counter[str], Counter[str]]:
    """HTTP requests, JSON-RPC calls by method and WebSocket subscriptions by method."""
    stats = sim.stats()
    return (
        stats["http_requests"]["total"],
        Counter(stats["calls"]["by_method"]),
        Counter(stats["subscriptions"]["by_method"]),
    )


async def test_a_confirmed_order_costs_one_http_request_at_one_engine(chain: Simulator) -> None:
    # The blockhash, block height and fee refresh once per minute here, the accounts'
    # confirmation reads once per ten: per order, only the send is left (the bench measures
    # the refreshes' share at their defaults). Nor is it resent: on a loaded machine the
    # notification can come later than TX_SETTINGS' 0.3 s resend pace.
    DriftClientManager.configure(
        rpc_url=chain.http_url,
        **{
            **TX_SETTINGS,
            "tx_blockhash_interval_s": 60.0,
            "tx_blockhash_max_age_s": 60.0,
            "tx_fee_interval_s": 60.0,
            "tx_resend_s": 60.0,
            "stale_after_s": 1200.0,
        },
    )
    async with funded_engine(chain) as (wallet, adapter):
        price = await resting_bid(adapter)
        requests, calls, subscriptions = _sim_counts(chain)
        bid = await adapter.place_perp_order(0, "long", 0.5, "LIMIT", price=price)
        after_requests, after_calls, after_subscriptions = _sim_counts(chain)
        assert bid["status"] == "confirmed", bid
        assert bid["reflected"] is True
        assert open_user_order_ids(chain, wallet, 0) == [bid["user_order_id"]]
        # Confirmed by its notification on the shared socket: the send was the only request.
        assert after_requests - requests == 1
        assert after_calls - calls == Counter({"sendTransaction": 1})
        assert after_subscriptions - subscriptions == Counter({"signatureSubscribe": 1})


async def test_a_notification_lost_with_its_socket_ends_truthfully_through_the_poll(
    chain: Simulator,
) -> None:
    # The safety poll of a covered signature comes only after an hour: what confirms the
    # order below is the poll of a signature whose socket dropped.
    DriftClientManager.configure(
        rpc_url=chain.http_url, **{**TX_SETTINGS, "tx_status_safety_s": 3600.0}
    )
    async with funded_engine(chain) as (wallet, adapter):
        price = await resting_bid(adapter)
        shared = DriftClientManager.shared_state()
        assert shared is not None
        assert shared.tx.feed is not None
        feed, watcher = shared.tx.feed, shared.tx.watcher
        notifications, polls = feed.notifications, watcher.polls
        chain.faults.delay_landing(1.0)  # it lands after the socket dropped
        order = asyncio.create_task(adapter.place_perp_order(0, "long", 0.5, "LIMIT", price=price))
        await eventually(lambda: feed.live == 1, "the signature subscribed on the socket")
        assert await chain.faults.drop_ws() > 0
        bid = await order
        assert bid["status"] == "confirmed", bid
        assert open_user_order_ids(chain, wallet, 0) == [bid["user_order_id"]]
        assert orders_placed(chain, wallet, 0) == 1
        assert bid["signatures"] == [bid["signature"]]
        assert feed.notifications == notifications  # its notification went with the socket
        assert watcher.polls > polls
