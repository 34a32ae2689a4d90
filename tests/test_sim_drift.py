"""Drift's program in the simulator, one instruction at a time over an in-memory transaction.

Instructions are built with anchorpy over driftpy's IDL (what ``DriftClient`` itself calls);
accounts are read back with driftpy's decoders and ``DriftUser``. The end-to-end path through
RPC is in ``test_sim_trading.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from anchorpy import Context, Program, Provider, Wallet
from driftpy.accounts.oracle import DRIFT_IDL
from driftpy.addresses import (
    get_drift_client_signer_public_key,
    get_spot_market_vault_public_key,
    get_state_public_key,
    get_user_account_public_key,
    get_user_stats_account_public_key,
)
from driftpy.constants.config import DRIFT_PROGRAM_ID
from driftpy.constants.numeric_constants import (
    BASE_PRECISION,
    PEG_PRECISION,
    PRICE_PRECISION,
    QUOTE_PRECISION,
)
from driftpy.decode.user import decode_user
from driftpy.math.perp_position import calculate_position_funding_pnl
from driftpy.types import (
    MarketType,
    ModifyOrderParams,
    OrderParams,
    OrderType,
    PositionDirection,
    PostOnlyParams,
)
from solana.rpc.async_api import AsyncClient
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.sysvar import RENT

from driftshare.sim import _codec, tokens
from driftshare.sim.drift.books import Books
from driftshare.sim.drift.margin import drift_user
from driftshare.sim.programs import InstructionFailed
from driftshare.sim.store import Account, AccountStore
from driftshare.sim.world import World

START = 1_750_000_000.0
SOL_PERP = 0
USDC = QUOTE_PRECISION
SOL = 10**9
STATE = get_state_public_key(DRIFT_PROGRAM_ID)
VAULT = get_spot_market_vault_public_key(DRIFT_PROGRAM_ID, 0)
CODES = {error.name: error.code for error in DRIFT_IDL.errors}
PROGRAM = Program(
    DRIFT_IDL, DRIFT_PROGRAM_ID, Provider(AsyncClient("http://127.0.0.1:9"), Wallet(Keypair()))
)


def drift(name: str) -> dict[str, int]:
    """How the runner reports Drift's error ``name``: its IDL code."""
    return {"Custom": CODES[name]}


@dataclass
class FakeTx:
    """A transaction's view: writes kept apart until :meth:`land`."""

    store: AccountStore
    signers: frozenset[Pubkey]
    slot: int
    unix_timestamp: int
    writes: dict[Pubkey, Account] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)

    def get(self, pubkey: Pubkey) -> Account | None:
        return self.writes.get(pubkey) or self.store.get(pubkey)

    def put(self, pubkey: Pubkey, account: Account) -> None:
        self.writes[pubkey] = account

    def log(self, line: str) -> None:
        self.logs.append(f"Program log: {line}")

    def land(self) -> None:
        for pubkey, account in self.writes.items():
            self.store.put(pubkey, account)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class Desk:
    """A world of two perp markets, wallets with SOL and USDC, and Drift's program to call."""

    def __init__(self, *, fill_spread_bps: float = 10.0) -> None:
        self.clock = Clock()
        self.store = AccountStore()
        self.world = World(self.store, markets=2, clock=self.clock, fill_spread_bps=fill_spread_bps)
        spots = (self.world.spot_market(index) for index in self.world.spot_indexes())
        for pubkey, account in tokens.spot_token_accounts(spots).items():
            self.store.put(pubkey, account)
        self.world.set_oracle_price(SOL_PERP, 150.0)

    def wallet(self, usdc: int = 10_000) -> Keypair:
        keypair = Keypair()
        self.store.put(keypair.pubkey(), Account(b"", SYSTEM_PROGRAM_ID, 10 * SOL))
        account = tokens.token_account(tokens.USDC_MINT, keypair.pubkey(), usdc * USDC)
        self.store.put(tokens.associated_token_address(keypair.pubkey()), account)
        return keypair

    def run(self, *ixs: Instruction, signers: list[Keypair]) -> InstructionFailed | None:
        """Run ``ixs`` as one transaction; it lands only if every instruction succeeds."""
        tx = FakeTx(
            self.store,
            frozenset(k.pubkey() for k in signers),
            self.store.slot,
            int(self.clock.now),
        )
        try:
            for ix in ixs:
                self.world.program(tx, ix)
        except InstructionFailed as exc:
            return exc
        tx.land()
        return None

    def refused(self, *ixs: Instruction, signers: list[Keypair]) -> InstructionFailed:
        """The failure of ``ixs``, which must fail."""
        failed = self.run(*ixs, signers=signers)
        assert failed is not None, "the transaction landed"
        return failed

    def ok(self, *ixs: Instruction, signers: list[Keypair]) -> None:
        failed = self.run(*ixs, signers=signers)
        assert failed is None, failed.message

    def step(self, seconds: float = 0.4) -> None:
        self.clock.now += seconds
        self.world.step()

    def user(self, owner: Keypair, sub: int = 0) -> Any:
        account = self.store.get(user_key(owner, sub))
        assert account is not None
        return _codec.decode(account.data)

    def reader(self, owner: Keypair, sub: int = 0) -> Any:
        """driftpy's DriftUser over the stored accounts."""
        books = Books(self.store, slot=self.store.slot, now=int(self.clock.now))
        key = user_key(owner, sub)
        return drift_user(books, key, books.load(key, "User"))

    def trader(self, usdc: int = 1_000, *, sub_accounts: int = 1) -> Keypair:
        """A wallet with users 0..``sub_accounts``-1, ``usdc`` deposited into each."""
        owner = self.wallet(usdc=usdc * sub_accounts)
        self.ok(init_stats(owner), signers=[owner])
        for sub in range(sub_accounts):
            self.ok(init_user(owner, sub), deposit(owner, usdc * USDC, sub), signers=[owner])
        return owner

    def token_balance(self, pubkey: Pubkey) -> int:
        found = tokens.read_token_account(self.store.get(pubkey))
        assert found is not None
        return found.amount


def user_key(owner: Keypair, sub: int = 0) -> Pubkey:
    return get_user_account_public_key(DRIFT_PROGRAM_ID, owner.pubkey(), sub)


def stats_key(owner: Keypair) -> Pubkey:
    return get_user_stats_account_public_key(DRIFT_PROGRAM_ID, owner.pubkey())


def _ix(name: str, *args: Any, accounts: dict[str, Pubkey]) -> Instruction:
    built: Instruction = PROGRAM.instruction[name](*args, ctx=Context(accounts=accounts))
    return built


def _creation_accounts(owner: Keypair) -> dict[str, Pubkey]:
    """The accounts Anchor's ``init`` of a user or its stats takes, paid by ``owner``."""
    key = owner.pubkey()
    return {
        "user_stats": stats_key(owner),
        "state": STATE,
        "authority": key,
        "payer": key,
        "rent": RENT,
        "system_program": SYSTEM_PROGRAM_ID,
    }


def init_stats(owner: Keypair) -> Instruction:
    return _ix("initialize_user_stats", accounts=_creation_accounts(owner))


def init_user(owner: Keypair, sub: int) -> Instruction:
    name = list(f"Sub {sub}".encode().ljust(32))
    accounts = _creation_accounts(owner) | {"user": user_key(owner, sub)}
    return _ix("initialize_user", sub, name, accounts=accounts)


def _collateral_accounts(owner: Keypair, sub: int) -> dict[str, Pubkey]:
    return {
        "state": STATE,
        "spot_market_vault": VAULT,
        "user": user_key(owner, sub),
        "user_stats": stats_key(owner),
        "user_token_account": tokens.associated_token_address(owner.pubkey()),
        "authority": owner.pubkey(),
        "token_program": tokens.TOKEN_PROGRAM_ID,
    }


def deposit(owner: Keypair, amount: int, sub: int = 0) -> Instruction:
    return _ix("deposit", 0, amount, False, accounts=_collateral_accounts(owner, sub))


def withdraw(
    owner: Keypair, amount: int, sub: int = 0, *, reduce_only: bool = False
) -> Instruction:
    accounts = _collateral_accounts(owner, sub) | {
        "drift_signer": get_drift_client_signer_public_key(DRIFT_PROGRAM_ID)
    }
    return _ix("withdraw", 0, amount, reduce_only, accounts=accounts)


def _order_accounts(owner: Keypair, sub: int, signer: Keypair | None) -> dict[str, Pubkey]:
    return {
        "state": STATE,
        "user": user_key(owner, sub),
        "authority": (signer or owner).pubkey(),
    }


def place(
    owner: Keypair, params: OrderParams, sub: int = 0, *, signer: Keypair | None = None
) -> Instruction:
    return _ix("place_perp_order", params, accounts=_order_accounts(owner, sub, signer))


def place_many(owner: Keypair, params: list[OrderParams], sub: int = 0) -> Instruction:
    return _ix("place_orders", params, accounts=_order_accounts(owner, sub, None))


def take(
    owner: Keypair, params: OrderParams, sub: int = 0, success: int | None = None
) -> Instruction:
    accounts = _order_accounts(owner, sub, None) | {"user_stats": stats_key(owner)}
    return _ix("place_and_take_perp_order", params, success, accounts=accounts)


def cancel(owner: Keypair, order_id: int | None, sub: int = 0) -> Instruction:
    return _ix("cancel_order", order_id, accounts=_order_accounts(owner, sub, None))


def cancel_by_user_id(owner: Keypair, user_order_id: int) -> Instruction:
    return _ix("cancel_order_by_user_id", user_order_id, accounts=_order_accounts(owner, 0, None))


def cancel_all(
    owner: Keypair, market_index: int | None = None, direction: Any = None
) -> Instruction:
    market_type = MarketType.Perp() if market_index is not None else None
    return _ix(
        "cancel_orders",
        market_type,
        market_index,
        direction,
        accounts=_order_accounts(owner, 0, None),
    )


def modify(owner: Keypair, order_id: int, params: ModifyOrderParams) -> Instruction:
    return _ix("modify_order", order_id, params, accounts=_order_accounts(owner, 0, None))


def settle(owner: Keypair, market_index: int, *, signer: Keypair | None = None) -> Instruction:
    accounts = {
        "state": STATE,
        "user": user_key(owner),
        "authority": (signer or owner).pubkey(),
        "spot_market_vault": VAULT,
    }
    return _ix("settle_pnl", market_index, accounts=accounts)


def order(
    side: str, size: float, price: float = 0.0, *, kind: str = "Limit", **fields: Any
) -> OrderParams:
    return OrderParams(
        order_type=getattr(OrderType, kind)(),
        base_asset_amount=round(size * BASE_PRECISION),
        market_index=fields.pop("market_index", SOL_PERP),
        direction=PositionDirection.Long() if side == "long" else PositionDirection.Short(),
        market_type=MarketType.Perp(),
        price=round(price * PRICE_PRECISION),
        **fields,
    )


def open_orders(user: Any) -> list[Any]:
    return [o for o in user.orders if type(o.status).__name__ == "Open"]


def position(user: Any, market_index: int = SOL_PERP) -> Any:
    found = [
        p
        for p in user.perp_positions
        if p.market_index == market_index
        and (p.base_asset_amount or p.quote_asset_amount or p.open_orders)
    ]
    return found[0] if found else None


def assert_only_canceled(user: Any) -> None:
    """The user's one order was canceled unfilled: no open order, no position."""
    assert open_orders(user) == []
    assert type(user.orders[0].status).__name__ == "Canceled"
    assert position(user) is None


@pytest.fixture
def desk() -> Desk:
    return Desk()


def test_users_are_created_in_order_at_driftpys_addresses(desk: Desk) -> None:
    owner = desk.wallet()
    state_before = _codec.decode(desk.store.get(STATE).data)  # type: ignore[union-attr]
    desk.ok(init_stats(owner), init_user(owner, 0), signers=[owner])

    user_account = desk.store.get(user_key(owner, 0))
    stats_account = desk.store.get(stats_key(owner))
    assert user_account is not None
    assert stats_account is not None
    assert (len(user_account.data), len(stats_account.data)) == (4376, 240)
    assert user_account.owner == DRIFT_PROGRAM_ID
    user = decode_user(user_account.data)
    assert (user.authority, user.sub_account_id, user.next_order_id) == (owner.pubkey(), 0, 1)
    rent = user_account.lamports + stats_account.lamports
    assert rent == _codec.rent_exempt_lamports(4376) + _codec.rent_exempt_lamports(240)
    assert desk.store.get(owner.pubkey()).lamports == 10 * SOL - rent  # type: ignore[union-attr]

    # Sub-account 2 before 1 is refused, as the program requires them in order.
    assert desk.refused(init_user(owner, 2), signers=[owner]).error == drift(  # type: ignore[union-attr]
        "InvalidUserSubAccountId"
    )
    assert desk.store.get(user_key(owner, 2)) is None
    desk.ok(init_user(owner, 1), signers=[owner])
    # Creating an existing account fails in the system program, as Anchor's init does.
    assert desk.refused(init_user(owner, 1), signers=[owner]).error == {"Custom": 0}  # type: ignore[union-attr]

    state = desk.world.state()
    assert state.number_of_authorities == state_before.number_of_authorities + 1
    assert state.number_of_sub_accounts == state_before.number_of_sub_accounts + 2
    stats = _codec.decode(desk.store.get(stats_key(owner)).data)  # type: ignore[union-attr]
    assert (stats.number_of_sub_accounts, stats.number_of_sub_accounts_created) == (2, 2)


def test_deposit_and_withdraw_move_usdc_between_wallet_and_vault(desk: Desk) -> None:
    owner = desk.wallet(usdc=1_000)
    wallet_usdc = tokens.associated_token_address(owner.pubkey())
    vault_before = desk.token_balance(VAULT)
    market_before = desk.world.spot_market(0).deposit_balance
    desk.ok(init_stats(owner), init_user(owner, 0), deposit(owner, 600 * USDC), signers=[owner])

    assert desk.token_balance(wallet_usdc) == 400 * USDC
    assert desk.token_balance(VAULT) == vault_before + 600 * USDC
    spot = desk.user(owner).spot_positions[0]
    assert type(spot.balance_type).__name__ == "Deposit"
    assert spot.cumulative_deposits == 600 * USDC
    assert desk.world.spot_market(0).deposit_balance == market_before + spot.scaled_balance
    # Drift's scaled balance is worth what was deposited, less at most one unit of rounding.
    assert 600 * USDC - 1 <= desk.reader(owner).get_token_amount(0) <= 600 * USDC

    desk.ok(withdraw(owner, 250 * USDC), signers=[owner])
    assert desk.token_balance(wallet_usdc) == 650 * USDC
    assert desk.token_balance(VAULT) == vault_before + 350 * USDC
    assert 350 * USDC - 2 <= desk.reader(owner).get_token_amount(0) <= 350 * USDC
    assert desk.user(owner).total_withdraws == 250 * USDC  # USDC at exactly $1

    # A reduce-only withdrawal takes at most what is deposited.
    desk.ok(withdraw(owner, 10_000 * USDC, reduce_only=True), signers=[owner])
    assert desk.user(owner).spot_positions[0].scaled_balance == 0
    assert desk.token_balance(wallet_usdc) >= 1_000 * USDC - 2


def test_withdrawing_collateral_a_position_needs_is_refused(desk: Desk) -> None:
    owner = desk.trader(usdc=100)
    desk.ok(take(owner, order("long", 3.0, kind="Market")), signers=[owner])
    refused = desk.refused(withdraw(owner, 90 * USDC), signers=[owner])
    assert refused.error == drift("InsufficientCollateral")


def test_deposits_need_a_signer_who_owns_the_token_account(desk: Desk) -> None:
    owner = desk.trader()
    stranger = desk.wallet()
    ix = deposit(owner, USDC)
    assert desk.refused(ix, signers=[stranger]).error == {"Custom": 3010}  # type: ignore[union-attr]


def test_only_the_authority_or_its_delegate_places_orders(desk: Desk) -> None:
    owner = desk.trader()
    stranger = desk.wallet()
    params = order("long", 0.1, 100.0)
    # Not signed at all: Anchor's AccountNotSigner; signed by another wallet: ConstraintRaw.
    assert desk.refused(place(owner, params), signers=[stranger]).error == {"Custom": 3010}  # type: ignore[union-attr]
    refused = desk.refused(place(owner, params, signer=stranger), signers=[stranger])
    assert refused.error == {"Custom": 2003}

    user = desk.user(owner)
    user.delegate = stranger.pubkey()
    stored = desk.store.get(user_key(owner))
    assert stored is not None
    desk.store.put(
        user_key(owner), Account(_codec.encode("User", user), stored.owner, stored.lamports)
    )
    desk.ok(place(owner, params, signer=stranger), signers=[stranger])
    assert len(open_orders(desk.user(owner))) == 1
    # A delegate trades but cannot withdraw.
    accounts = _collateral_accounts(owner, 0) | {
        "authority": stranger.pubkey(),
        "drift_signer": get_drift_client_signer_public_key(DRIFT_PROGRAM_ID),
    }
    refused = desk.refused(_ix("withdraw", 0, USDC, False, accounts=accounts), signers=[stranger])
    assert refused.error == {"Custom": 2001}


def test_what_the_simulator_does_not_implement_fails_clearly(desk: Desk) -> None:
    owner = desk.trader()
    spot = order("long", 1.0, 100.0)
    spot.market_type = MarketType.Spot()
    unsupported = _ix("place_spot_order", spot, accounts=_order_accounts(owner, 0, None))
    refused = desk.refused(unsupported, signers=[owner])
    assert refused.error == "InvalidInstructionData"
    assert "unsupported instruction: place_spot_order" in refused.message

    trigger = order("short", 1.0, kind="TriggerMarket", trigger_price=100 * PRICE_PRECISION)
    assert "unsupported" in desk.refused(place(owner, trigger), signers=[owner]).message

    # Bytes that are no Drift instruction get Anchor's codes, as the real program answers.
    good = place(owner, order("long", 0.1, 100.0))
    for data, code in ((b"\x01\x02", 100), (bytes(8), 101), (bytes(good.data)[:12], 102)):
        bad = Instruction(DRIFT_PROGRAM_ID, data, good.accounts)
        assert desk.refused(bad, signers=[owner]).error == {"Custom": code}  # type: ignore[union-attr]


def test_user_order_ids_are_unique_among_open_orders(desk: Desk) -> None:
    owner = desk.trader()
    desk.ok(place(owner, order("long", 0.1, 100.0, user_order_id=7)), signers=[owner])
    refused = desk.refused(
        place(owner, order("long", 0.1, 101.0, user_order_id=7)), signers=[owner]
    )
    assert refused.error == drift("UserOrderIdAlreadyInUse")
    desk.ok(cancel_by_user_id(owner, 7), signers=[owner])
    desk.ok(place(owner, order("long", 0.1, 101.0, user_order_id=7)), signers=[owner])
    (reused,) = open_orders(desk.user(owner))
    assert (reused.user_order_id, reused.price) == (7, 101 * PRICE_PRECISION)


def test_post_only_orders_never_take(desk: Desk) -> None:
    owner = desk.trader()
    # Oracle 150 and a 10 bps spread: the market sells at 150.15 and buys at 149.85.
    crossing = order("long", 0.1, 151.0, post_only=PostOnlyParams.MustPostOnly())
    refused = desk.refused(place(owner, crossing), signers=[owner])
    assert refused.error == drift("PlacePostOnlyLimitFailure")

    tried = order("long", 0.1, 151.0, post_only=PostOnlyParams.TryPostOnly())
    desk.ok(place(owner, tried), signers=[owner])
    assert open_orders(desk.user(owner)) == []

    slid = order("long", 0.1, 151.0, post_only=PostOnlyParams.Slide())
    desk.ok(place(owner, slid), signers=[owner])
    (resting,) = open_orders(desk.user(owner))
    tick = desk.world.perp_market(SOL_PERP).amm.order_tick_size
    assert resting.price == 150_150_000 - tick
    assert resting.post_only

    refused = desk.refused(
        take(owner, order("long", 0.1, 151.0, post_only=PostOnlyParams.MustPostOnly())),
        signers=[owner],
    )
    assert refused.error == drift("InvalidOrderPostOnly")


def test_immediate_or_cancel_only_takes(desk: Desk) -> None:
    owner = desk.trader()
    ioc = order("long", 0.1, 140.0, bit_flags=1)
    refused = desk.refused(place(owner, ioc), signers=[owner])
    assert refused.error == drift("InvalidOrderIOC")
    desk.ok(take(owner, ioc), signers=[owner])
    assert_only_canceled(desk.user(owner))


def test_max_ts_skips_late_orders_and_expires_resting_ones(desk: Desk) -> None:
    owner = desk.trader()
    now = int(desk.clock.now)
    desk.ok(place(owner, order("long", 0.1, 100.0, max_ts=now - 1)), signers=[owner])
    assert open_orders(desk.user(owner)) == []  # the program skips it and succeeds

    desk.ok(place(owner, order("long", 0.1, 100.0, max_ts=now + 5)), signers=[owner])
    assert len(open_orders(desk.user(owner))) == 1
    desk.step(seconds=10)
    assert_only_canceled(desk.user(owner))


def test_a_placed_market_order_fills_on_the_next_slot_at_oracle_plus_spread(desk: Desk) -> None:
    owner = desk.trader()
    desk.ok(place(owner, order("long", 2.0, kind="Market")), signers=[owner])
    assert len(open_orders(desk.user(owner))) == 1  # placed, not yet filled
    desk.step()
    oracle = round(desk.world.oracle_price(SOL_PERP) * PRICE_PRECISION)
    tick = desk.world.perp_market(SOL_PERP).amm.order_tick_size
    ask = -(-oracle * 10_010 // 10_000 // tick) * tick  # oracle + 10 bps, up to the tick
    held = position(desk.user(owner))
    assert held.base_asset_amount == 2 * SOL
    assert held.quote_asset_amount == -2 * ask
    assert open_orders(desk.user(owner)) == []


def test_a_resting_limit_fills_at_its_price_when_the_oracle_crosses_it(desk: Desk) -> None:
    owner = desk.trader()
    desk.ok(place(owner, order("short", 1.0, 152.0)), signers=[owner])
    desk.step()
    assert len(open_orders(desk.user(owner))) == 1
    desk.world.set_oracle_price(SOL_PERP, 153.0)
    desk.step()
    held = position(desk.user(owner))
    assert (held.base_asset_amount, held.quote_asset_amount) == (-SOL, 152 * USDC)
    market = desk.world.perp_market(SOL_PERP)
    assert market.last_fill_price == 152 * PRICE_PRECISION


def test_fills_move_open_interest_and_the_world_keeps_it(desk: Desk) -> None:
    owner = desk.trader(usdc=2_000)
    before = desk.world.perp_market(SOL_PERP).amm
    desk.ok(take(owner, order("long", 3.0, kind="Market")), signers=[owner])
    desk.ok(take(owner, order("short", 1.0, kind="Market")), signers=[owner])
    for _ in range(5):
        desk.step()
    after = desk.world.perp_market(SOL_PERP).amm
    assert after.base_asset_amount_long == before.base_asset_amount_long + 2 * SOL
    assert after.base_asset_amount_short == before.base_asset_amount_short
    assert after.base_asset_amount_with_amm == before.base_asset_amount_with_amm + 2 * SOL
    stored = desk.store.get(desk.world.perp_market_pubkey(SOL_PERP))
    assert stored is not None
    assert _codec.decode(stored.data).amm == after


def test_reduce_only_orders_fill_at_most_the_position(desk: Desk) -> None:
    owner = desk.trader()
    refused_growth = order("short", 1.0, kind="Market", reduce_only=True)
    desk.ok(take(owner, refused_growth), signers=[owner])
    assert position(desk.user(owner)) is None  # nothing to reduce: canceled, not filled

    desk.ok(take(owner, order("long", 1.0, kind="Market")), signers=[owner])
    desk.ok(take(owner, order("short", 3.0, kind="Market", reduce_only=True)), signers=[owner])
    user = desk.user(owner)
    held = position(user)
    assert held.base_asset_amount == 0
    closing = max(user.orders, key=lambda o: o.order_id)
    assert closing.base_asset_amount_filled == SOL
    assert type(closing.status).__name__ == "Canceled"


def test_place_orders_cancel_orders_and_modify(desk: Desk) -> None:
    owner = desk.trader()
    desk.ok(
        place_many(
            owner,
            [order("long", 0.1, 100.0), order("short", 0.1, 200.0), order("long", 0.1, 101.0)],
        ),
        signers=[owner],
    )
    assert len(open_orders(desk.user(owner))) == 3
    desk.ok(cancel_all(owner, direction=PositionDirection.Short()), signers=[owner])
    bids = open_orders(desk.user(owner))
    assert [o.price for o in bids] == [100 * PRICE_PRECISION, 101 * PRICE_PRECISION]
    held = position(desk.user(owner))
    assert (held.open_bids, held.open_asks, held.open_orders) == (SOL // 5, 0, 2)

    desk.ok(
        modify(
            owner,
            bids[0].order_id,
            ModifyOrderParams(price=99 * PRICE_PRECISION, base_asset_amount=SOL // 2),
        ),
        signers=[owner],
    )
    modified = [o for o in open_orders(desk.user(owner)) if o.price == 99 * PRICE_PRECISION]
    assert [o.base_asset_amount for o in modified] == [SOL // 2]
    assert position(desk.user(owner)).open_bids == SOL // 2 + SOL // 10
    desk.ok(cancel(owner, None), signers=[owner])  # None: the last order placed
    assert [o.price for o in open_orders(desk.user(owner))] == [101 * PRICE_PRECISION]
    desk.ok(cancel_all(owner, market_index=1), signers=[owner])
    assert len(open_orders(desk.user(owner))) == 1
    desk.ok(cancel_all(owner), signers=[owner])
    assert open_orders(desk.user(owner)) == []
    assert position(desk.user(owner)) is None


def test_a_failed_instruction_changes_nothing(desk: Desk) -> None:
    owner = desk.trader(usdc=100)
    wallet_usdc = tokens.associated_token_address(owner.pubkey())
    desk.store.put(wallet_usdc, tokens.token_account(tokens.USDC_MINT, owner.pubkey(), 50 * USDC))
    before = {pubkey: account.data for pubkey, account in desk.store.items()}
    # A deposit that would succeed, then an order the margin refuses: neither lands.
    refused = desk.refused(
        deposit(owner, 50 * USDC), take(owner, order("long", 100.0, kind="Market")), signers=[owner]
    )
    assert refused.error == drift("InsufficientCollateral")
    assert {pubkey: account.data for pubkey, account in desk.store.items()} == before


def test_funding_settles_into_the_position_as_driftpy_computes_it(desk: Desk) -> None:
    owner = desk.trader(usdc=5_000)
    desk.ok(take(owner, order("short", 10.0, kind="Market")), signers=[owner])
    held = position(desk.user(owner))
    market = desk.world.perp_market(SOL_PERP)
    assert held.last_cumulative_funding_rate == market.amm.cumulative_funding_rate_short

    desk.step(seconds=120)  # past the 60 s funding period: the world settles funding
    market = desk.world.perp_market(SOL_PERP)
    assert market.amm.cumulative_funding_rate_short != held.last_cumulative_funding_rate
    owed = calculate_position_funding_pnl(market, held)
    quote_before = held.quote_asset_amount
    desk.ok(settle(owner, SOL_PERP), signers=[owner])

    user = desk.user(owner)
    settled = position(user)
    stored_market = desk.world.perp_market(SOL_PERP)
    assert settled.last_cumulative_funding_rate == stored_market.amm.cumulative_funding_rate_short
    assert user.cumulative_perp_funding == pytest.approx(owed, abs=1)
    # What settle_pnl then moved into USDC came out of the position's quote too.
    assert settled.quote_asset_amount + settled.settled_pnl == pytest.approx(
        quote_before + owed, abs=1
    )


def test_settle_pnl_pays_realized_pnl_only_to_its_owner(desk: Desk) -> None:
    owner = desk.trader()
    keeper = desk.wallet()
    desk.ok(take(owner, order("long", 1.0, kind="Market")), signers=[owner])
    desk.world.set_oracle_price(SOL_PERP, 160.0)
    # Unrealized gains on an open position are not settled (the PnL pool holds no excess).
    refused = desk.refused(settle(owner, SOL_PERP), signers=[owner])
    assert refused.error == drift("NoUnsettledPnl")

    desk.ok(take(owner, order("short", 1.0, kind="Market", reduce_only=True)), signers=[owner])
    gain = 159_840_000 - 150_150_000  # sold at 160 - 10 bps, bought at 150 + 10 bps
    assert position(desk.user(owner)).quote_asset_amount == gain
    refused = desk.refused(settle(owner, SOL_PERP, signer=keeper), signers=[keeper])
    assert refused.error == drift("UserMustSettleTheirOwnPositiveUnsettledPNL")

    before = desk.reader(owner).get_token_amount(0)
    desk.ok(settle(owner, SOL_PERP), signers=[owner])
    user = desk.user(owner)
    assert user.settled_perp_pnl == gain
    assert position(user) is None
    assert before + gain - 1 <= desk.reader(owner).get_token_amount(0) <= before + gain


def test_the_world_reprices_a_market_a_fill_changed_and_keeps_the_fill(desk: Desk) -> None:
    owner = desk.trader()
    longs = desk.world.perp_market(SOL_PERP).amm.base_asset_amount_long
    desk.ok(take(owner, order("long", 1.0, kind="Market")), signers=[owner])
    desk.world.set_oracle_price(SOL_PERP, 180.0)
    market = desk.world.perp_market(SOL_PERP)
    # Re-pegged to the new oracle ...
    assert market.amm.historical_oracle_data.last_oracle_price == 180 * PRICE_PRECISION
    assert market.amm.peg_multiplier == 180 * PEG_PRECISION
    # ... without losing what the fill wrote.
    assert market.amm.base_asset_amount_long == longs + SOL
    assert market.last_fill_price == 150_150_000


def test_a_flip_realizes_the_closed_part_and_enters_the_rest(desk: Desk) -> None:
    owner = desk.trader()
    amm = desk.world.perp_market(SOL_PERP).amm
    desk.ok(take(owner, order("long", 1.0, kind="Market")), signers=[owner])  # at 150.15
    desk.ok(take(owner, order("short", 3.0, kind="Market")), signers=[owner])  # at 149.85
    held = position(desk.user(owner))
    assert held.base_asset_amount == -2 * SOL
    assert held.quote_asset_amount == -150_150_000 + 3 * 149_850_000
    # The 2 SOL left short entered at 149.85; the closed 1 SOL realized 149.85 - 150.15.
    assert held.quote_entry_amount == held.quote_break_even_amount == 2 * 149_850_000
    assert held.quote_asset_amount - held.quote_entry_amount == 149_850_000 - 150_150_000
    after = desk.world.perp_market(SOL_PERP).amm
    assert after.base_asset_amount_long == amm.base_asset_amount_long
    assert after.base_asset_amount_short == amm.base_asset_amount_short - 2 * SOL
    assert after.quote_entry_amount_long == amm.quote_entry_amount_long
    assert after.quote_entry_amount_short == amm.quote_entry_amount_short + 2 * 149_850_000


def test_nobody_deposits_into_another_users_account(desk: Desk) -> None:
    owner = desk.trader()
    stranger = desk.wallet()
    accounts = _collateral_accounts(owner, 0) | {
        "authority": stranger.pubkey(),
        "user_token_account": tokens.associated_token_address(stranger.pubkey()),
    }
    refused = desk.refused(_ix("deposit", 0, USDC, False, accounts=accounts), signers=[stranger])
    assert refused.error == drift("DefaultError")


def test_a_deposit_comes_only_from_the_authoritys_own_token_account(desk: Desk) -> None:
    owner = desk.trader()
    stranger = desk.trader()
    accounts = _collateral_accounts(owner, 0) | {
        "user_token_account": tokens.associated_token_address(stranger.pubkey()),
    }
    refused = desk.refused(_ix("deposit", 0, USDC, False, accounts=accounts), signers=[owner])
    assert refused.error == {"Custom": 2015}  # Anchor's ConstraintTokenOwner


def test_modify_by_user_order_id_keeps_the_id_and_must_modify_fails_when_missing(
    desk: Desk,
) -> None:
    owner = desk.trader()
    desk.ok(place(owner, order("short", 0.2, 180.0, user_order_id=9)), signers=[owner])
    accounts = _order_accounts(owner, 0, None)
    new_price = ModifyOrderParams(price=175 * PRICE_PRECISION)
    desk.ok(_ix("modify_order_by_user_id", 9, new_price, accounts=accounts), signers=[owner])
    (modified,) = open_orders(desk.user(owner))
    assert (modified.user_order_id, modified.price) == (9, 175 * PRICE_PRECISION)
    assert modified.base_asset_amount == SOL // 5

    must_modify = 1  # ModifyOrderParams.policy is a u8 of flags in driftpy's IDL
    missing = ModifyOrderParams(price=1, policy=must_modify)
    refused = desk.refused(
        _ix("modify_order_by_user_id", 4, missing, accounts=accounts), signers=[owner]
    )
    assert refused.error == drift("OrderDoesNotExist")
