"""What an on-chain program is to the simulator: a handler of one instruction at a time.

The transaction runner (``driftshare.sim.chain``) gives each instruction of a transaction, in
order, to the handler registered for its program id, over a :class:`TxAccounts` view of that
transaction's writes. A handler that raises :class:`InstructionFailed` fails the whole
transaction and none of its writes land, as on Solana.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from solders.instruction import Instruction
from solders.pubkey import Pubkey

from driftshare.sim.store import Account

__all__ = ["InstructionFailed", "Program", "Programs", "TxAccounts"]


class TxAccounts(Protocol):
    """One transaction's view of the accounts: its own writes over the store's accounts."""

    slot: int
    """The slot the transaction lands in."""
    unix_timestamp: int
    """The cluster clock at that slot (what the Clock sysvar says)."""
    signers: frozenset[Pubkey]
    """Every key whose signature the transaction carries and the runner verified."""

    def get(self, pubkey: Pubkey) -> Account | None: ...

    def put(self, pubkey: Pubkey, account: Account) -> None: ...

    def log(self, line: str) -> None:
        """Add ``Program log: <line>`` to the transaction's log messages."""


class InstructionFailed(Exception):
    """The instruction failed; ``error`` is Solana's ``InstructionError`` detail.

    ``error`` is what a node puts after the instruction index in
    ``{"InstructionError": [index, error]}``: ``{"Custom": 6010}`` for a program's own error
    code (Anchor's codes are the IDL's), or a builtin name such as ``"InvalidArgument"``.
    """

    def __init__(self, error: dict[str, int] | str, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


Program = Callable[[TxAccounts, Instruction], None]
"""Runs one instruction; raises :class:`InstructionFailed` to fail the transaction."""


class Programs:
    """The programs a simulated chain runs, by program id."""

    def __init__(self) -> None:
        self._handlers: dict[Pubkey, Program] = {}

    def register(self, program_id: Pubkey, handler: Program) -> None:
        self._handlers[program_id] = handler

    def get(self, program_id: Pubkey) -> Program | None:
        return self._handlers.get(program_id)
