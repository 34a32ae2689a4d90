"""LedgerSubscriber: a driftpy account subscriber whose accounts come from an AccountLedger.

A DriftClient reading through it needs no upstream connection: whoever fills the ledger
(the upstream tap, a snapshot, a fleet leader) decides what it serves. Each record is
decoded once, when its data changes, and on its own: a record that cannot be decoded makes
only its own account unavailable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from driftpy.account_subscription_config import AccountSubscriptionConfig
from driftpy.accounts.oracle import DRIFT_CODER, get_oracle_decode_fn
from driftpy.accounts.types import DataAndSlot, DriftClientAccountSubscriber
from driftpy.addresses import (
    get_perp_market_public_key,
    get_spot_market_public_key,
    get_state_public_key,
)
from driftpy.constants.config import DRIFT_PROGRAM_ID
from driftpy.drift_client import DriftClient
from driftpy.oracles.oracle_id import get_oracle_id
from driftpy.types import OracleSource
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from driftshare._data.ledger import MARKET_KINDS, AccountLedger, AccountRecord, LedgerEntry

__all__ = ["UNREACHABLE_RPC", "LedgerSubscriber", "ledger_client", "oracle_source"]

log = logging.getLogger(__name__)

UNREACHABLE_RPC = "http://127.0.0.1:9"
"""The discard port: a DriftClient needs a connection object, never used by a ledger client."""

_ACCOUNT_TYPE = {"perp": "PerpMarket", "spot": "SpotMarket", "state": "State"}
"""The IDL account each record kind must decode to."""

_ORACLE_SOURCES: frozenset[str] = frozenset(
    name for name in dir(OracleSource) if not name.startswith("_") and name != "getitem"
)


def oracle_source(name: str | None) -> Any:
    """driftpy's OracleSource variant called ``name``; ValueError for anything else."""
    if name not in _ORACLE_SOURCES:
        raise ValueError(f"unknown oracle source {name!r}")
    return getattr(OracleSource, name)()


class _Unavailable(ValueError):
    """A record that cannot be served: the message says why."""


class LedgerSubscriber(DriftClientAccountSubscriber):  # type: ignore[misc]
    """driftpy's DriftClientAccountSubscriber over an :class:`AccountLedger`.

    Serves every perp market, spot market and oracle the ledger holds, and the State
    account, each with its record's slot. Perp and spot markets are mapped to their oracle
    from the market account itself, as driftpy's subscribers do.
    """

    def __init__(self, program: Any, ledger: AccountLedger) -> None:
        self.program = program
        self.ledger = ledger
        self._decode_account: Callable[[bytes], Any] = program.coder.accounts.decode
        self.state: DataAndSlot[Any] | None = None
        self.perp_markets: dict[int, DataAndSlot[Any]] = {}
        self.spot_markets: dict[int, DataAndSlot[Any]] = {}
        self.oracle: dict[str, DataAndSlot[Any]] = {}
        """Oracle id (``pubkey-sourcenum``, as driftpy's polling subscriber) → price data."""
        self.unavailable: dict[str, str] = {}
        """Pubkey → why its newest record is not served."""
        self._served: dict[str, tuple[str, Any]] = {}
        """Pubkey → (where it is served, its key there), to drop it when it turns bad."""
        self._remove_listener: Callable[[], None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def subscribe(self) -> None:
        """Serve what the ledger holds now and follow it from here on."""
        self.follow()

    def follow(self) -> None:
        """:meth:`subscribe` without an event loop: it waits for nothing."""
        if self._remove_listener is not None:
            return
        for entry in self.ledger:
            self._on_entry(entry, True)
        self._remove_listener = self.ledger.add_listener(self._on_entry)

    def is_subscribed(self) -> bool:
        return self._remove_listener is not None

    async def unsubscribe(self) -> None:
        """Stop following the ledger; the accounts already decoded stay readable."""
        self.unfollow()

    def unfollow(self) -> None:
        """:meth:`unsubscribe` without an event loop."""
        remove, self._remove_listener = self._remove_listener, None
        if remove is not None:
            remove()

    async def fetch(self) -> None:
        """Nothing to fetch: the ledger's writers bring the data."""

    # -- decoding -------------------------------------------------------------------------

    def _on_entry(self, entry: LedgerEntry, changed: bool) -> None:
        record = entry.record
        if record.kind not in MARKET_KINDS:
            return  # a signer's User or UserStats: read by its own subscriber
        served = self._served.get(record.pubkey)
        if not changed and served is not None:
            # Same bytes at a newer slot: move the slot, keep the decoded value.
            store = self._store(served[0])
            current = store.get(served[1]) if isinstance(store, dict) else self.state
            if current is not None and record.slot > current.slot:
                self._put(served[0], served[1], DataAndSlot(record.slot, current.data))
            return
        if not changed and record.pubkey in self.unavailable:
            return
        try:
            where, key, value = self._decode(record)
        except Exception as exc:  # one bad record makes only its own account unavailable
            self._drop(record.pubkey, f"cannot decode {record.kind} account: {exc}")
            return
        if served is not None and served != (where, key):
            self._remove(*served)
        self.unavailable.pop(record.pubkey, None)
        self._served[record.pubkey] = (where, key)
        self._put(where, key, DataAndSlot(record.slot, value))

    def _decode(self, record: AccountRecord) -> tuple[str, Any, Any]:
        if record.kind == "oracle":
            source = oracle_source(record.oracle_source)
            price = get_oracle_decode_fn(source)(record.data)
            return "oracle", get_oracle_id(Pubkey.from_string(record.pubkey), source), price
        decoded = self._decode_account(record.data)
        expected = _ACCOUNT_TYPE.get(record.kind)
        if type(decoded).__name__ != expected:
            raise _Unavailable(f"holds a {type(decoded).__name__}, not a {expected}")
        program_id = self.program.program_id
        pubkey = Pubkey.from_string(record.pubkey)
        if record.kind == "state":
            if pubkey != get_state_public_key(program_id):
                raise _Unavailable("is not the program's State address")
            return "state", None, decoded
        index = decoded.market_index
        derive = get_perp_market_public_key if record.kind == "perp" else get_spot_market_public_key
        if pubkey != derive(program_id, index):
            raise _Unavailable(f"is not the address of {record.kind} market {index}")
        return record.kind, index, decoded

    def _drop(self, pubkey: str, reason: str) -> None:
        if pubkey not in self.unavailable:
            log.warning("account %s unavailable: %s", pubkey, reason)
        self.unavailable[pubkey] = reason
        served = self._served.pop(pubkey, None)
        if served is not None:
            self._remove(*served)

    def _store(self, where: str) -> dict[Any, DataAndSlot[Any]] | None:
        stores: dict[str, dict[Any, DataAndSlot[Any]]] = {
            "perp": self.perp_markets,
            "spot": self.spot_markets,
            "oracle": self.oracle,
        }
        return stores.get(where)

    def _put(self, where: str, key: Any, value: DataAndSlot[Any]) -> None:
        store = self._store(where)
        if store is None:
            self.state = value
        else:
            store[key] = value

    def _remove(self, where: str, key: Any) -> None:
        store = self._store(where)
        if store is None:
            self.state = None
        else:
            store.pop(key, None)

    # -- driftpy's reads ------------------------------------------------------------------

    def get_state_account_and_slot(self) -> DataAndSlot[Any] | None:
        return self.state

    def get_perp_market_and_slot(self, market_index: int) -> DataAndSlot[Any] | None:
        return self.perp_markets.get(market_index)

    def get_spot_market_and_slot(self, market_index: int) -> DataAndSlot[Any] | None:
        return self.spot_markets.get(market_index)

    def get_oracle_price_data_and_slot(self, oracle_id: str) -> DataAndSlot[Any] | None:
        return self.oracle.get(oracle_id)

    def get_market_accounts_and_slots(self) -> list[DataAndSlot[Any]]:
        return [self.perp_markets[i] for i in sorted(self.perp_markets)]

    def get_spot_market_accounts_and_slots(self) -> list[DataAndSlot[Any]]:
        return [self.spot_markets[i] for i in sorted(self.spot_markets)]

    def get_oracle_price_data_and_slot_for_perp_market(
        self, market_index: int
    ) -> DataAndSlot[Any] | None:
        market = self.perp_markets.get(market_index)
        if market is None:
            return None
        amm = market.data.amm
        return self._oracle_for(amm.oracle, amm.oracle_source)

    def get_oracle_price_data_and_slot_for_spot_market(
        self, market_index: int
    ) -> DataAndSlot[Any] | None:
        market = self.spot_markets.get(market_index)
        if market is None:
            return None
        return self._oracle_for(market.data.oracle, market.data.oracle_source)

    def _oracle_for(self, oracle: Pubkey, source: Any) -> DataAndSlot[Any] | None:
        # The market account names its oracle, so the map is never out of date.
        try:
            return self.oracle.get(get_oracle_id(oracle, source))
        except ValueError:  # a source driftpy cannot number
            return None


DRIFT_PROGRAM = SimpleNamespace(coder=DRIFT_CODER, program_id=DRIFT_PROGRAM_ID)
"""What a LedgerSubscriber needs of Drift's program: driftpy's coder, its IDL already parsed."""


class LedgerReads:
    """DriftClient's market reads over a :class:`LedgerSubscriber`, without a DriftClient.

    Building a DriftClient parses driftpy's IDL again (hundreds of milliseconds); a process
    answering from its snapshot at start cannot spare that before its first answer.
    """

    def __init__(self, ledger: AccountLedger) -> None:
        self.account_subscriber = LedgerSubscriber(DRIFT_PROGRAM, ledger)
        self.account_subscriber.follow()

    def get_perp_market_accounts(self) -> list[Any]:
        return [ds.data for ds in self.account_subscriber.get_market_accounts_and_slots()]

    def get_perp_market_account(self, market_index: int) -> Any | None:
        found = self.account_subscriber.get_perp_market_and_slot(market_index)
        return None if found is None else found.data

    def get_oracle_price_data_for_perp_market(self, market_index: int) -> Any | None:
        subscriber = self.account_subscriber
        found = subscriber.get_oracle_price_data_and_slot_for_perp_market(market_index)
        return None if found is None else found.data


def ledger_client(ledger: AccountLedger, *, env: str = "mainnet") -> DriftClient:
    """A DriftClient serving ``ledger`` through a subscribed :class:`LedgerSubscriber`.

    Its connection points at the discard port and is never used for reads; the caller owns
    nothing to close.
    """
    client = DriftClient(
        AsyncClient(UNREACHABLE_RPC),
        Keypair(),
        env=env,
        account_subscription=AccountSubscriptionConfig("cached"),
        perp_market_indexes=[],
        spot_market_indexes=[],
        oracle_infos=[],
    )
    subscriber = LedgerSubscriber(client.program, ledger)
    subscriber.follow()
    client.account_subscriber = subscriber
    return client
