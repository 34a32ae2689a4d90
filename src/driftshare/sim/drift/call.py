"""One Drift instruction as its handler sees it: decoded arguments and the IDL's named accounts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from solders.instruction import AccountMeta
from solders.pubkey import Pubkey

from driftshare.sim.drift.books import Books
from driftshare.sim.drift.errors import anchor_error
from driftshare.sim.programs import TxAccounts

__all__ = ["Call"]


@dataclass
class Call:
    """A decoded instruction: ``args`` from driftpy's IDL coder, accounts by their IDL names."""

    name: str
    args: Any
    accounts: dict[str, AccountMeta]
    remaining: list[AccountMeta]
    tx: TxAccounts
    books: Books

    def key(self, name: str) -> Pubkey:
        """The address passed as the IDL account ``name``."""
        return self.accounts[name].pubkey

    def signer(self, name: str) -> Pubkey:
        """The address of account ``name``, which must have signed (Anchor's ``Signer``)."""
        meta = self.accounts[name]
        if not meta.is_signer or meta.pubkey not in self.tx.signers:
            raise anchor_error("AccountNotSigner", f"{name} {meta.pubkey}")
        return meta.pubkey
