"""User accounts and collateral: ``initialize_user_stats``, ``initialize_user``, ``deposit`` and
``withdraw`` as protocol-v2's ``instructions/user.rs`` runs them.

Accounts are created at the PDAs driftpy derives, paid for by the payer as Anchor's ``init``
does. Deposits and withdrawals move USDC (spot market 0) between the user's token account and
the market's vault with the Token program's transfer, and move the user's spot position and the
market's deposit or borrow balance with Drift's scaling.
"""

from __future__ import annotations

import copy
import dataclasses
from functools import cache
from typing import Any

from driftpy.addresses import (
    get_spot_market_vault_public_key,
    get_user_account_public_key,
    get_user_stats_account_public_key,
)
from solders.pubkey import Pubkey

from driftshare.sim import _codec, tokens
from driftshare.sim._codec import DRIFT_PROGRAM_ID, rent_exempt_lamports, variant_name
from driftshare.sim.drift.balances import signed_token_amount, update_spot_balance
from driftshare.sim.drift.call import Call
from driftshare.sim.drift.errors import ACCOUNT_IN_USE, anchor_error, drift_error, unsupported
from driftshare.sim.drift.margin import require_margin
from driftshare.sim.drift.positions import spot_position
from driftshare.sim.programs import InstructionFailed

__all__ = ["deposit", "initialize_user", "initialize_user_stats", "withdraw"]

_QUOTE_MARKET = 0
_NEGATIVE_LAMPORTS = {"Custom": 1}
"""The system program's ``ResultWithNegativeLamports``: a payer short of the rent."""


def _init(call: Call, pubkey: Pubkey, name: str, obj: Any) -> None:
    """Create the ``name`` account at ``pubkey``, its rent paid by the signing payer, as
    Anchor's ``init`` does."""
    payer = call.signer("payer")
    if call.books.exists(pubkey):
        raise InstructionFailed(ACCOUNT_IN_USE, f"Allocate: account {pubkey} already in use")
    rent = rent_exempt_lamports(_size(name))
    payer_account = call.tx.get(payer)
    if payer_account is None or payer_account.lamports < rent:
        raise InstructionFailed(_NEGATIVE_LAMPORTS, f"payer {payer} cannot pay {rent} lamports")
    call.tx.put(payer, dataclasses.replace(payer_account, lamports=payer_account.lamports - rent))
    call.books.create(pubkey, name, obj, rent)


@cache
def _size(name: str) -> int:
    """Bytes of a ``name`` account: 4376 for a User, 240 for UserStats."""
    return len(_codec.encode(name, _codec.blank(name)))


def _blank(name: str) -> Any:
    return copy.deepcopy(_codec.blank(name))


def _check_room(state: Any, count: int) -> None:
    """Drift's ``MaxNumberOfUsers`` once ``count`` passes the State's limit."""
    limit: int = state.max_number_of_sub_accounts
    limit = limit if limit <= 5 else limit * 100
    if limit != 0 and count > limit:
        raise drift_error("MaxNumberOfUsers")


def initialize_user_stats(call: Call) -> None:
    books = call.books
    authority = call.key("authority")
    stats_key = call.key("userStats")
    if stats_key != get_user_stats_account_public_key(DRIFT_PROGRAM_ID, authority):
        raise anchor_error("ConstraintSeeds", f"userStats {stats_key}")
    stats = _blank("UserStats")
    stats.authority = authority
    now = books.now
    stats.last_taker_volume30d_ts = now
    stats.last_maker_volume30d_ts = now
    stats.last_filler_volume30d_ts = now
    stats.last_fuel_if_bonus_update_ts = now
    _init(call, stats_key, "UserStats", stats)
    state = books.state()
    state.number_of_authorities += 1
    books.mark(call.key("state"))
    _check_room(state, state.number_of_authorities)


def initialize_user(call: Call) -> None:
    books = call.books
    sub_account_id: int = call.args.sub_account_id
    authority = call.key("authority")
    user_key = call.key("user")
    if user_key != get_user_account_public_key(DRIFT_PROGRAM_ID, authority, sub_account_id):
        raise anchor_error("ConstraintSeeds", f"user {user_key}")
    user = _blank("User")
    user.authority = authority
    user.sub_account_id = sub_account_id
    user.name = list(call.args.name)
    user.next_order_id = 1
    user.next_liquidation_id = 1
    user.last_fuel_bonus_update_ts = books.now
    _init(call, user_key, "User", user)
    stats = books.load(call.key("userStats"), "UserStats")
    if stats.authority != authority:
        raise anchor_error("ConstraintHasOne", "userStats.authority != authority")
    if call.remaining and stats.number_of_sub_accounts_created == 0:
        raise unsupported("referrers in initialize_user")
    stats.number_of_sub_accounts += 1
    if sub_account_id != stats.number_of_sub_accounts_created:
        raise drift_error(
            "InvalidUserSubAccountId",
            f"sub account id {sub_account_id} must be {stats.number_of_sub_accounts_created}",
        )
    stats.number_of_sub_accounts_created += 1
    books.mark(call.key("userStats"))
    state = books.state()
    state.number_of_sub_accounts += 1
    books.mark(call.key("state"))
    _check_room(state, state.number_of_sub_accounts)


def _vault_and_market(call: Call) -> tuple[Any, tokens.TokenAccount]:
    """The spot market the instruction moves tokens of, its vault checked (only USDC is), and
    the user's token account of its mint."""
    market_index: int = call.args.market_index
    vault = call.key("spotMarketVault")
    if vault != get_spot_market_vault_public_key(DRIFT_PROGRAM_ID, market_index):
        raise anchor_error("ConstraintSeeds", f"spotMarketVault {vault}")
    if market_index != _QUOTE_MARKET:
        raise unsupported(f"{call.name} of spot market {market_index} (only USDC, market 0)")
    market = call.books.spot_market(market_index)
    token_account = tokens.read_token_account(call.tx.get(call.key("userTokenAccount")))
    if token_account is None:
        raise anchor_error("AccountNotInitialized", "userTokenAccount")
    if token_account.mint != market.mint:
        raise anchor_error("ConstraintRaw", "userTokenAccount mint is not the vault's")
    return market, token_account


def _usd_value(amount: int, price: int, decimals: int) -> int:
    return int(amount * price // 10**decimals)


def deposit(call: Call) -> None:
    books = call.books
    authority = call.signer("authority")
    user_key = call.key("user")
    user = books.load(user_key, "User")
    stats = books.load(call.key("userStats"), "UserStats")
    if stats.authority != user.authority:
        raise anchor_error("ConstraintRaw", "userStats is not the user's")
    market, token_account = _vault_and_market(call)
    if token_account.owner != authority:
        raise anchor_error("ConstraintTokenOwner", "userTokenAccount is not the authority's")
    amount: int = call.args.amount
    if amount == 0:
        raise drift_error("InsufficientDeposit")
    if authority not in (user.authority, user.delegate):
        # Mainnet's program takes deposits into another's account only from a whitelist.
        raise drift_error("DefaultError", "Not whitelisted external depositor")
    if variant_name(market.status) == "Initialized":
        raise drift_error("MarketBeingInitialized")
    position = spot_position(user, market.market_index)
    reduce_only = call.args.reduce_only or variant_name(market.status) == "ReduceOnly"
    if reduce_only and variant_name(position.balance_type) == "Borrow":
        amount = min(amount, -signed_token_amount(position, market))
    price = books.spot_oracle(market.market_index).price
    user.total_deposits += _usd_value(amount, price, market.decimals)
    update_spot_balance(amount, "Deposit", market, position)
    position.cumulative_deposits += amount
    user.last_active_slot = books.slot
    user.idle = False
    tokens.transfer(call.tx, call.key("userTokenAccount"), market.vault, authority, amount)
    market.next_deposit_record_id += 1
    books.mark(user_key)
    books.mark_spot_market(market.market_index)


def withdraw(call: Call) -> None:
    books = call.books
    authority = call.signer("authority")
    user_key = call.key("user")
    user = books.load(user_key, "User")
    if user.authority != authority:
        raise anchor_error("ConstraintHasOne", "user.authority != authority")
    stats = books.load(call.key("userStats"), "UserStats")
    if stats.authority != authority:
        raise anchor_error("ConstraintHasOne", "userStats.authority != authority")
    market, _ = _vault_and_market(call)
    if call.key("driftSigner") != books.state().signer:
        raise anchor_error("ConstraintRaw", "driftSigner is not the State's signer")
    position = spot_position(user, market.market_index)
    amount: int = call.args.amount
    status = variant_name(market.status)
    if call.args.reduce_only or status == "ReduceOnly":
        if variant_name(position.balance_type) != "Deposit":
            raise drift_error("ReduceOnlyWithdrawIncreasedRisk")
        amount = min(amount, signed_token_amount(position, market))
    price = books.spot_oracle(market.market_index).price
    user.total_withdraws += _usd_value(amount, price, market.decimals)
    update_spot_balance(amount, "Borrow", market, position)
    position.cumulative_deposits -= amount
    if status not in ("Active", "ReduceOnly", "Settlement"):
        raise drift_error("MarketWithdrawPaused", f"spot market {market.market_index}")
    require_margin(books, user_key, user, initial=True)
    user.last_active_slot = books.slot
    user.idle = False
    market.next_deposit_record_id += 1
    destination = call.key("userTokenAccount")
    tokens.transfer(call.tx, market.vault, destination, books.state().signer, amount)
    books.mark(user_key)
    books.mark_spot_market(market.market_index)
