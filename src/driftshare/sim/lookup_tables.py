"""Address lookup tables: Drift's market tables, served where driftpy looks for them on mainnet."""

from __future__ import annotations

from driftpy.addresses import get_drift_client_signer_public_key
from driftpy.constants.config import configs
from solders.address_lookup_table_account import (
    ADDRESS_LOOKUP_TABLE_ID,
    LOOKUP_TABLE_MAX_ADDRESSES,
    LOOKUP_TABLE_META_SIZE,
    AddressLookupTable,
    LookupTableMeta,
)
from solders.pubkey import Pubkey

from driftshare.sim._codec import DRIFT_PROGRAM_ID, rent_exempt_lamports
from driftshare.sim.store import Account
from driftshare.sim.world import World

__all__ = ["MARKET_LOOKUP_TABLES", "lookup_table_account", "read_lookup_table", "world_tables"]

MARKET_LOOKUP_TABLES: list[Pubkey] = configs["mainnet"].market_lookup_tables
"""The tables driftpy's mainnet ``DriftClient`` fetches for every v0 transaction it sends."""
_ACTIVE = 2**64 - 1
"""``deactivation_slot`` of a table that was never deactivated."""
_LOOKUP_TABLE_STATE = (1).to_bytes(4, "little")
"""The ``ProgramState::LookupTable`` tag leading every table account."""
_AUTHORITY = Pubkey.find_program_address([b"driftshare_sim_tables"], DRIFT_PROGRAM_ID)[0]


def lookup_table_account(addresses: list[Pubkey]) -> Account:
    """A table account holding ``addresses``, laid out as the lookup table program writes it."""
    if len(addresses) > LOOKUP_TABLE_MAX_ADDRESSES:
        raise ValueError(f"a lookup table holds at most {LOOKUP_TABLE_MAX_ADDRESSES} addresses")
    meta = LookupTableMeta(
        deactivation_slot=_ACTIVE,
        last_extended_slot=0,
        last_extended_slot_start_index=0,
        authority=_AUTHORITY,
        padding=0,
    )
    header = (_LOOKUP_TABLE_STATE + bytes(meta)).ljust(LOOKUP_TABLE_META_SIZE, b"\0")
    data = header + b"".join(bytes(address) for address in addresses)
    return Account(data, ADDRESS_LOOKUP_TABLE_ID, rent_exempt_lamports(len(data)))


def read_lookup_table(account: Account | None) -> AddressLookupTable | None:
    """The table ``account`` holds; None unless it is a lookup table account."""
    if account is None or account.owner != ADDRESS_LOOKUP_TABLE_ID:
        return None
    try:
        return AddressLookupTable.deserialize(account.data)
    except ValueError:
        return None


def world_tables(world: World) -> dict[Pubkey, list[Pubkey]]:
    """Drift's market tables for ``world``: State, signer, spot markets and their vaults and perp
    markets in the first; every market's oracle in the second (each capped at 256 keys)."""
    spots = [world.spot_market(i) for i in world.spot_indexes()]
    perps = [world.perp_market(i) for i in world.perp_indexes()]
    markets = [world.state_pubkey, get_drift_client_signer_public_key(DRIFT_PROGRAM_ID)]
    markets += [spot.pubkey for spot in spots] + [spot.vault for spot in spots]
    markets += [perp.pubkey for perp in perps]
    oracles = list(dict.fromkeys([spot.oracle for spot in spots] + [p.amm.oracle for p in perps]))
    first, second = MARKET_LOOKUP_TABLES
    return {
        first: markets[:LOOKUP_TABLE_MAX_ADDRESSES],
        second: oracles[:LOOKUP_TABLE_MAX_ADDRESSES],
    }
