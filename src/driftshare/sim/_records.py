"""The simulated world's accounts as the AccountLedger records an upstream tap would make."""

from __future__ import annotations

from solders.pubkey import Pubkey

from driftshare._data.ledger import AccountKind, AccountRecord
from driftshare.sim._codec import variant_name
from driftshare.sim.world import World

__all__ = ["world_records"]


def world_records(world: World, slot: int | None = None) -> list[AccountRecord]:
    """The State, every market and every distinct oracle of ``world``, read at ``slot``.

    ``slot`` defaults to the store's current slot.
    """
    store = world.store
    slot = store.slot if slot is None else slot
    records: dict[Pubkey, AccountRecord] = {}

    def add(pubkey: Pubkey, kind: AccountKind, source: str | None = None) -> None:
        account = store.get(pubkey)
        if account is not None and pubkey not in records:
            records[pubkey] = AccountRecord(str(pubkey), kind, slot, bytes(account.data), source)

    add(world.state_pubkey, "state")
    for index in world.perp_indexes():
        market = world.perp_market(index)
        add(world.perp_market_pubkey(index), "perp")
        add(market.amm.oracle, "oracle", variant_name(market.amm.oracle_source))
    for index in world.spot_indexes():
        market = world.spot_market(index)
        add(market.pubkey, "spot")
        add(market.oracle, "oracle", variant_name(market.oracle_source))
    return list(records.values())
