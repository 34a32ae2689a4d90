"""PathTxSender: driftpy's ``TxSender`` over the transaction path, for engines that call
driftpy themselves (``client.place_perp_order(params, sub_account_id=...)``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from driftpy.tx.types import TxSender, TxSigAndSlot
from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from driftshare._tx.blockhash import Blockhash
from driftshare._tx.path import TransactionPath
from driftshare._tx.sender import Build
from driftshare.models import TxResult

__all__ = [
    "PathTxSender",
    "TransactionFailed",
    "TransactionNotConfirmed",
    "TransactionUnknown",
    "install_path",
]


_BUILDS_KEPT = 256
"""Builds kept for :meth:`PathTxSender.send` (driftpy sends each right after building it)."""


class TransactionNotConfirmed(Exception):
    """A driftpy write that did not end ``confirmed``; ``result`` says how it ended."""

    def __init__(self, result: TxResult) -> None:
        super().__init__(f"transaction {result.status}: {result.error or result.signature}")
        self.result = result


class TransactionFailed(TransactionNotConfirmed):
    """It did not land, or landed with an error (``result.error``): it will not act."""


class TransactionUnknown(TransactionNotConfirmed):
    """It may still land: check ``result.signature`` before sending it again."""


class PathTxSender(TxSender):  # type: ignore[misc]
    """Builds driftpy's transactions with the path's blockhash, fee and compute limit, and
    sends them through it: a confirmed write returns driftpy's ``TxSigAndSlot`` with the
    transaction's own slot, any other ends in :class:`TransactionFailed` or
    :class:`TransactionUnknown`. ``wallet.payer`` is passed per call, so one sender serves
    every wallet."""

    def __init__(self, path: TransactionPath) -> None:
        self.path = path
        self._built: dict[str, tuple[Build, Blockhash]] = {}
        """The newest builds not sent yet, by signature (at most :data:`_BUILDS_KEPT`)."""

    async def get_versioned_tx(
        self,
        ixs: Sequence[Instruction],
        payer: Keypair,
        lookup_tables: Sequence[AddressLookupTableAccount],
        additional_signers: Sequence[Keypair] | None = None,
    ) -> VersionedTransaction:
        build = self.path.builder(ixs, payer, lookup_tables or (), additional_signers or ())
        blockhash = await self.path.keeper.current()
        tx = build(blockhash)
        # Kept for send(): it may sign again, but only after this one provably expired.
        self._built[str(tx.signatures[0])] = (build, blockhash)
        if len(self._built) > _BUILDS_KEPT:
            # An engine that builds and never sends must not grow this: a forgotten build
            # is sent as signed elsewhere (as is, never signed again), which is always safe.
            del self._built[next(iter(self._built))]
        return tx

    async def get_legacy_tx(
        self,
        ixs: Sequence[Instruction],
        payer: Keypair,
        additional_signers: Sequence[Keypair] | None = None,
    ) -> VersionedTransaction:
        """A version 0 transaction without lookup tables: the path sends only those."""
        return await self.get_versioned_tx(ixs, payer, (), additional_signers)

    async def fetch_latest_blockhash(self) -> Any:
        return (await self.path.keeper.current()).blockhash

    async def send(self, tx: VersionedTransaction) -> TxSigAndSlot:
        self.path.start()
        built = self._built.pop(str(tx.signatures[0]), None)
        if built is None:  # signed elsewhere: sent as is, never signed again
            result = await self.path.sender.land(None, signed=(tx, None))
        else:
            build, blockhash = built
            result = await self.path.sender.land(build, signed=(tx, blockhash))
        # driftpy does not say which sub-account it wrote: the fee payer is the authority.
        self.path.history.add("driftpy", result, authority=str(tx.message.account_keys[0]))
        if result.status == "confirmed":
            assert result.signature is not None
            assert result.slot is not None
            return TxSigAndSlot(Signature.from_string(result.signature), result.slot)
        if result.status == "failed":
            raise TransactionFailed(result)
        raise TransactionUnknown(result)


def install_path(client: Any, path: TransactionPath) -> None:
    """Make a driftpy ``DriftClient`` send through ``path`` and fetch its lookup tables once
    (driftpy fetches them again for every transaction)."""
    client.tx_sender = PathTxSender(path)

    async def lookup_tables() -> list[AddressLookupTableAccount]:
        tables = await path.lookup_tables.get(client.market_lookup_tables or [])
        client.market_lookup_table_accounts = tables
        return tables

    client.fetch_market_lookup_table_accounts = lookup_tables
