"""SPL Token accounts and mints on the simulated chain, in the Token program's own layouts.

Programs (the Token program here, Drift's deposit and withdraw in ``driftshare.sim.drift``) move
tokens with :func:`transfer` over one transaction's :class:`~driftshare.sim.programs.TxAccounts`;
:func:`token_account` and :func:`mint_account` make accounts to put in a store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

from construct import ConstructError
from driftpy.addresses import get_drift_client_signer_public_key
from driftpy.constants.spot_markets import mainnet_spot_market_configs
from driftpy.math.spot_market import get_token_amount
from driftpy.types import SpotBalanceType, SpotMarketAccount
from solders.pubkey import Pubkey

# solana-py's own SPL Token layouts (a private module, but the only published Python copy).
from spl.token._layouts import ACCOUNT_LAYOUT, MINT_LAYOUT
from spl.token.constants import (
    ACCOUNT_LEN,
    ASSOCIATED_TOKEN_PROGRAM_ID,
    MINT_LEN,
    TOKEN_PROGRAM_ID,
    WRAPPED_SOL_MINT,
)
from spl.token.instructions import get_associated_token_address

from driftshare.sim._codec import DRIFT_PROGRAM_ID, rent_exempt_lamports
from driftshare.sim.programs import InstructionFailed, TxAccounts
from driftshare.sim.store import Account, AccountStore

__all__ = [
    "ASSOCIATED_TOKEN_PROGRAM_ID",
    "TOKEN_PROGRAM_ID",
    "USDC_DECIMALS",
    "USDC_MINT",
    "WRAPPED_SOL_MINT",
    "Mint",
    "TokenAccount",
    "associated_token_address",
    "mint_account",
    "mint_to_owner",
    "read_mint",
    "read_token_account",
    "spot_token_accounts",
    "token_account",
    "token_json_parser",
    "transfer",
    "ui_amount_string",
    "with_amount",
]

USDC_MINT: Pubkey = mainnet_spot_market_configs[0].mint
"""The mint of spot market 0 (USDC), the simulated world's quote and collateral token."""
USDC_DECIMALS = 6
MINT_AUTHORITY = Pubkey.find_program_address([b"driftshare_sim_mint"], DRIFT_PROGRAM_ID)[0]
"""Mint authority of the simulated USDC (``POST /_sim/usdc`` mints as it)."""

_INITIALIZED = 1
_FROZEN = 2

# spl-token's TokenError codes, as ``{"Custom": code}``.
INSUFFICIENT_FUNDS = 1
MINT_MISMATCH = 3
OWNER_MISMATCH = 4
ACCOUNT_FROZEN = 17


@dataclass(frozen=True, slots=True)
class TokenAccount:
    """The fields of an SPL Token account a program reads."""

    mint: Pubkey
    owner: Pubkey
    amount: int
    frozen: bool


@dataclass(frozen=True, slots=True)
class Mint:
    """The fields of an SPL Token mint a client reads."""

    supply: int
    decimals: int
    authority: Pubkey | None
    """Who may mint more; None for nobody."""


def associated_token_address(owner: Pubkey, mint: Pubkey = USDC_MINT) -> Pubkey:
    """``owner``'s associated token account for ``mint`` (Token program)."""
    return get_associated_token_address(owner, mint)


def token_account(mint: Pubkey, owner: Pubkey, amount: int) -> Account:
    """A new initialized token account holding ``amount``, rent-exempt, owned by Token."""
    data = ACCOUNT_LAYOUT.build(
        {
            "mint": bytes(mint),
            "owner": bytes(owner),
            "amount": amount,
            "delegate_option": 0,
            "delegate": bytes(32),
            "state": _INITIALIZED,
            "is_native_option": 0,
            "is_native": 0,
            "delegated_amount": 0,
            "close_authority_option": 0,
            "close_authority": bytes(32),
        }
    )
    return Account(data, TOKEN_PROGRAM_ID, rent_exempt_lamports(ACCOUNT_LEN))


def mint_account(decimals: int, supply: int, authority: Pubkey | None) -> Account:
    """An initialized mint with ``supply``; ``authority`` may mint more (None: nobody)."""
    data = MINT_LAYOUT.build(
        {
            "mint_authority_option": 0 if authority is None else 1,
            "mint_authority": bytes(32) if authority is None else bytes(authority),
            "supply": supply,
            "decimals": decimals,
            "is_initialized": 1,
            "freeze_authority_option": 0,
            "freeze_authority": bytes(32),
        }
    )
    return Account(data, TOKEN_PROGRAM_ID, rent_exempt_lamports(MINT_LEN))


def read_token_account(account: Account | None) -> TokenAccount | None:
    """The token account ``account`` holds; None unless it is an initialized one."""
    if account is None or account.owner != TOKEN_PROGRAM_ID or len(account.data) != ACCOUNT_LEN:
        return None
    try:
        parsed = ACCOUNT_LAYOUT.parse(account.data)
    except ConstructError:
        return None
    if parsed.state not in (_INITIALIZED, _FROZEN):
        return None
    return TokenAccount(
        Pubkey.from_bytes(parsed.mint),
        Pubkey.from_bytes(parsed.owner),
        parsed.amount,
        parsed.state == _FROZEN,
    )


def read_mint(account: Account | None) -> Mint | None:
    """The mint ``account`` holds; None unless it is an initialized one."""
    if account is None or account.owner != TOKEN_PROGRAM_ID or len(account.data) != MINT_LEN:
        return None
    parsed = MINT_LAYOUT.parse(account.data)
    if not parsed.is_initialized:
        return None
    authority = Pubkey.from_bytes(parsed.mint_authority) if parsed.mint_authority_option else None
    return Mint(parsed.supply, parsed.decimals, authority)


def with_amount(account: Account, amount: int) -> Account:
    """``account`` (a token account) holding ``amount`` instead; every other field kept."""
    if not 0 <= amount < 1 << 64:
        raise ValueError(f"token amount must fit a u64, got {amount}")
    offset = ACCOUNT_LAYOUT.subcons[0].sizeof() + ACCOUNT_LAYOUT.subcons[1].sizeof()
    data = account.data[:offset] + amount.to_bytes(8, "little") + account.data[offset + 8 :]
    return dataclasses.replace(account, data=data)


def mint_to_owner(store: AccountStore, owner: Pubkey, amount: int) -> tuple[Pubkey, int]:
    """Mint ``amount`` simulated USDC (base units) to ``owner``'s associated token account,
    creating it (and the mint) if missing; the account and its new balance."""
    address = associated_token_address(owner, USDC_MINT)
    mint = read_mint(store.get(USDC_MINT)) or Mint(0, USDC_DECIMALS, MINT_AUTHORITY)
    held = read_token_account(store.get(address))
    if held is not None and (held.owner, held.mint) != (owner, USDC_MINT):
        raise ValueError(f"{address} is not {owner}'s USDC account")
    balance = (0 if held is None else held.amount) + amount
    if balance >= 1 << 64 or mint.supply + amount >= 1 << 64:
        raise ValueError("the balance would overflow a u64")
    store.put(USDC_MINT, mint_account(mint.decimals, mint.supply + amount, mint.authority))
    store.put(address, token_account(USDC_MINT, owner, balance))
    return address, balance


def transfer(
    tx: TxAccounts, source: Pubkey, destination: Pubkey, authority: Pubkey, amount: int
) -> None:
    """Move ``amount`` tokens as the Token program's Transfer does, its checks in its order.

    ``authority`` must own ``source`` and sign the transaction, unless it is a program address
    (off the curve): programs sign for their own PDAs, as Drift's signer does for withdrawals.
    """
    source_account, src = _token(tx, source, "source")
    destination_account, dst = _token(tx, destination, "destination")
    if src.frozen or dst.frozen:
        raise InstructionFailed({"Custom": ACCOUNT_FROZEN}, "Error: Account is frozen")
    if amount > src.amount:
        raise InstructionFailed({"Custom": INSUFFICIENT_FUNDS}, "Error: insufficient funds")
    if src.mint != dst.mint:
        raise InstructionFailed(
            {"Custom": MINT_MISMATCH}, "Error: Account not associated with this Mint"
        )
    if src.owner != authority:
        raise InstructionFailed({"Custom": OWNER_MISMATCH}, "Error: owner does not match")
    if authority.is_on_curve() and authority not in tx.signers:
        raise InstructionFailed("MissingRequiredSignature", f"{authority} did not sign")
    if source == destination:
        return
    tx.put(source, with_amount(source_account, src.amount - amount))
    tx.put(destination, with_amount(destination_account, dst.amount + amount))


def _token(tx: TxAccounts, pubkey: Pubkey, role: str) -> tuple[Account, TokenAccount]:
    account = tx.get(pubkey)
    token = read_token_account(account)
    if account is None or token is None:
        raise InstructionFailed("InvalidAccountData", f"{role} {pubkey} is not a token account")
    return account, token


def spot_token_accounts(markets: Iterable[SpotMarketAccount]) -> dict[Pubkey, Account]:
    """The mints of the spot ``markets`` and their vaults, owned by Drift's signer and holding
    what each market's balances say is deposited and not lent out."""
    signer = get_drift_client_signer_public_key(DRIFT_PROGRAM_ID)
    accounts: dict[Pubkey, Account] = {}
    supplies: dict[Pubkey, int] = {}
    for market in markets:
        deposits = get_token_amount(market.deposit_balance, market, SpotBalanceType.Deposit())
        borrows = get_token_amount(market.borrow_balance, market, SpotBalanceType.Borrow())
        held = max(0, deposits - borrows)
        accounts[market.vault] = token_account(market.mint, signer, held)
        supplies[market.mint] = supplies.get(market.mint, 0) + held
        authority = None if market.mint == WRAPPED_SOL_MINT else MINT_AUTHORITY
        accounts[market.mint] = mint_account(market.decimals, supplies[market.mint], authority)
    return accounts


def token_json_parser(store: AccountStore) -> Callable[[Account], dict[str, object] | None]:
    """``jsonParsed`` data of SPL Token accounts and mints in ``store``, as agave's
    ``spl-token`` parser writes it; None for any other account."""

    def parse(account: Account) -> dict[str, object] | None:
        token = read_token_account(account)
        if token is not None:
            mint = read_mint(store.get(token.mint))
            if mint is None:
                return None
            ui = ui_amount_string(token.amount, mint.decimals)
            info: dict[str, object] = {
                "isNative": False,
                "mint": str(token.mint),
                "owner": str(token.owner),
                "state": "frozen" if token.frozen else "initialized",
                "tokenAmount": {
                    "amount": str(token.amount),
                    "decimals": mint.decimals,
                    "uiAmount": float(ui),
                    "uiAmountString": ui,
                },
            }
            kind = "account"
        else:
            own = read_mint(account)
            if own is None:
                return None
            info = {
                "decimals": own.decimals,
                "freezeAuthority": None,
                "isInitialized": True,
                "mintAuthority": None if own.authority is None else str(own.authority),
                "supply": str(own.supply),
            }
            kind = "mint"
        return {
            "parsed": {"info": info, "type": kind},
            "program": "spl-token",
            "space": len(account.data),
        }

    return parse


def ui_amount_string(amount: int, decimals: int) -> str:
    """``amount`` base units in whole tokens as agave prints ``uiAmountString``: no trailing
    zeros."""
    text = f"{Decimal(amount).scaleb(-decimals):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
