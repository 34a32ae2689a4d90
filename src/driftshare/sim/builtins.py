"""The programs every simulated chain runs besides Drift: System, ComputeBudget, SPL Token and
Associated Token Account, each the part of it that wallets and Drift deposits use."""

from __future__ import annotations

import dataclasses

from solders.compute_budget import ID as COMPUTE_BUDGET_ID
from solders.instruction import Instruction
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.system_program import decode_transfer
from spl.token.constants import ACCOUNT_LEN
from spl.token.instructions import decode_transfer as decode_token_transfer
from spl.token.instructions import decode_transfer_checked

from driftshare.sim._codec import rent_exempt_lamports
from driftshare.sim.programs import InstructionFailed, Programs, TxAccounts
from driftshare.sim.store import Account
from driftshare.sim.tokens import (
    ASSOCIATED_TOKEN_PROGRAM_ID,
    MINT_MISMATCH,
    TOKEN_PROGRAM_ID,
    associated_token_address,
    read_mint,
    read_token_account,
    token_account,
    transfer,
)

__all__ = ["register_builtins"]

_SYSTEM_TRANSFER = 2
_TOKEN_TRANSFER = 3
_TOKEN_TRANSFER_CHECKED = 12
_SYSTEM_INSUFFICIENT_LAMPORTS = 1
"""SystemError::ResultWithNegativeLamports."""
_SYSTEM_ACCOUNT_IN_USE = 0
"""SystemError::AccountAlreadyInUse, what creating an existing associated account fails with."""
_TOKEN_DECIMALS_MISMATCH = 18


def register_builtins(programs: Programs) -> None:
    """Register the builtin programs' handlers in ``programs``."""
    programs.register(SYSTEM_PROGRAM_ID, _system)
    # Compute budget instructions are read by the runner (limit, price) and do nothing here.
    programs.register(COMPUTE_BUDGET_ID, lambda tx, ix: None)
    programs.register(TOKEN_PROGRAM_ID, _token)
    programs.register(ASSOCIATED_TOKEN_PROGRAM_ID, _associated_token)


def _unsupported(program: str, ix: Instruction) -> InstructionFailed:
    tag = ix.data[:1].hex() or "empty"
    return InstructionFailed(
        "InvalidInstructionData",
        f"unsupported instruction: the simulator's {program} program does not run "
        f"instruction tag {tag}",
    )


def _system(tx: TxAccounts, ix: Instruction) -> None:
    if ix.data[:4] != _SYSTEM_TRANSFER.to_bytes(4, "little"):
        raise _unsupported("System", ix)
    try:
        params = decode_transfer(ix)
    except (ValueError, IndexError):
        raise InstructionFailed("InvalidInstructionData", "malformed transfer") from None
    sender = params["from_pubkey"]
    recipient = params["to_pubkey"]
    lamports: int = params["lamports"]
    if sender not in tx.signers:
        raise InstructionFailed("MissingRequiredSignature", f"Transfer: {sender} did not sign")
    source = tx.get(sender) or Account(b"", SYSTEM_PROGRAM_ID, 0)
    if source.data:
        raise InstructionFailed("InvalidArgument", "Transfer: `from` must not carry data")
    if lamports > source.lamports:
        raise InstructionFailed(
            {"Custom": _SYSTEM_INSUFFICIENT_LAMPORTS},
            f"Transfer: insufficient lamports {source.lamports}, need {lamports}",
        )
    tx.put(sender, dataclasses.replace(source, lamports=source.lamports - lamports))
    target = tx.get(recipient) or Account(b"", SYSTEM_PROGRAM_ID, 0)
    tx.put(recipient, dataclasses.replace(target, lamports=target.lamports + lamports))


def _token(tx: TxAccounts, ix: Instruction) -> None:
    tag = ix.data[0] if ix.data else None
    try:
        if tag == _TOKEN_TRANSFER:
            plain = decode_token_transfer(ix)
            transfer(tx, plain.source, plain.dest, plain.owner, plain.amount)
            return
        if tag == _TOKEN_TRANSFER_CHECKED:
            checked = decode_transfer_checked(ix)
        else:
            raise _unsupported("Token", ix)
    except (ValueError, IndexError) as exc:
        message = f"malformed token instruction: {exc}"
        raise InstructionFailed("InvalidInstructionData", message) from None
    mint = read_mint(tx.get(checked.mint))
    source = read_token_account(tx.get(checked.source))
    if mint is None or source is None or source.mint != checked.mint:
        raise InstructionFailed(
            {"Custom": MINT_MISMATCH}, "Error: Account not associated with this Mint"
        )
    if mint.decimals != checked.decimals:
        raise InstructionFailed({"Custom": _TOKEN_DECIMALS_MISMATCH}, "Error: decimals mismatch")
    transfer(tx, checked.source, checked.dest, checked.owner, checked.amount)


def _associated_token(tx: TxAccounts, ix: Instruction) -> None:
    """``Create`` (no data or 0) and ``CreateIdempotent`` (1): payer, account, owner, mint."""
    if ix.data not in (b"", b"\x00", b"\x01") or len(ix.accounts) < 4:
        raise _unsupported("Associated Token Account", ix)
    payer, address, owner, mint = (meta.pubkey for meta in ix.accounts[:4])
    if address != associated_token_address(owner, mint):
        raise InstructionFailed("InvalidSeeds", "Associated address does not match seed derivation")
    if read_mint(tx.get(mint)) is None:
        raise InstructionFailed("InvalidAccountData", f"{mint} is not a token mint")
    existing = tx.get(address)
    if existing is not None:
        held = read_token_account(existing)
        if ix.data == b"\x01" and held is not None and (held.owner, held.mint) == (owner, mint):
            return
        raise InstructionFailed(
            {"Custom": _SYSTEM_ACCOUNT_IN_USE}, f"Create Account: account {address} already in use"
        )
    _pay_rent(tx, payer)
    tx.put(address, token_account(mint, owner, 0))


def _pay_rent(tx: TxAccounts, payer: Pubkey) -> None:
    rent = rent_exempt_lamports(ACCOUNT_LEN)
    account = tx.get(payer)
    if payer not in tx.signers or account is None:
        raise InstructionFailed("MissingRequiredSignature", f"payer {payer} did not sign")
    if account.lamports < rent:
        raise InstructionFailed(
            {"Custom": _SYSTEM_INSUFFICIENT_LAMPORTS},
            f"Transfer: insufficient lamports {account.lamports}, need {rent}",
        )
    tx.put(payer, dataclasses.replace(account, lamports=account.lamports - rent))
