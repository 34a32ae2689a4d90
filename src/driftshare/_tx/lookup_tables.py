"""LookupTables: Drift's address lookup tables, fetched once for every transaction."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Sequence

from driftpy.address_lookup_table import decode_address_lookup_table
from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.pubkey import Pubkey

from driftshare._tx.rpc import TxRpc

__all__ = ["LookupTables"]

log = logging.getLogger(__name__)


class LookupTables:
    """The decoded lookup tables per list of addresses, fetched by one ``getMultipleAccounts``
    on first use and kept (driftpy fetches them again for every transaction). A table the
    chain does not hold is left out and asked for again next time."""

    def __init__(self, rpc: TxRpc) -> None:
        self._rpc = rpc
        self._tables: dict[tuple[Pubkey, ...], list[AddressLookupTableAccount]] = {}
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def get(self, keys: Sequence[Pubkey]) -> list[AddressLookupTableAccount]:
        key = tuple(keys)
        tables = self._tables.get(key)
        if tables is not None:
            return tables
        async with self._lock:
            tables = self._tables.get(key)
            if tables is None:
                tables = await self._fetch(key)
        return tables

    async def _fetch(self, keys: tuple[Pubkey, ...]) -> list[AddressLookupTableAccount]:
        if not keys:
            return []
        answer = await self._rpc.call(
            "getMultipleAccounts",
            [[str(k) for k in keys], {"encoding": "base64", "commitment": "confirmed"}],
        )
        self.fetches += 1
        tables = []
        try:
            values = list(answer["value"])
        except (KeyError, TypeError):
            raise ValueError(f"a malformed lookup table answer: {str(answer)[:200]}") from None
        for pubkey, value in zip(keys, values, strict=False):
            try:
                data = base64.b64decode(value["data"][0], validate=True)
            except (KeyError, TypeError, IndexError, binascii.Error):
                log.warning("lookup table %s is missing or unreadable: left out", pubkey)
                continue
            tables.append(decode_address_lookup_table(pubkey, data))
        if len(tables) == len(keys):
            self._tables[keys] = tables
        return tables
