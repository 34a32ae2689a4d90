"""LedgerSubscriber: a DriftClient with no upstream serves what an AccountLedger holds."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from driftpy.account_subscription_config import AccountSubscriptionConfig
from driftpy.accounts.oracle import DRIFT_CODER, decode_oracle
from driftpy.drift_client import DriftClient
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair

from conftest import WaitUntil
from driftshare._data.ledger import AccountLedger, AccountRecord
from driftshare._data.ledger_subscriber import LedgerReads, LedgerSubscriber, ledger_client
from driftshare.manager import DriftClientManager
from driftshare.sim import Simulator, _codec
from driftshare.sim._records import world_records
from driftshare.sim.pytest_plugin import SimulatorFactory
from driftshare.sim.store import AccountStore
from driftshare.sim.world import World


@pytest.fixture
def world() -> World:
    return World(AccountStore(), seed=3, markets=6)


def _ledger(records: list[AccountRecord]) -> AccountLedger:
    ledger = AccountLedger()
    for record in records:
        ledger.apply(record)
    return ledger


def _record(world: World, pubkey: object) -> AccountRecord:
    return next(r for r in world_records(world) if r.pubkey == str(pubkey))


def test_a_client_without_upstream_reads_every_account(world: World) -> None:
    ledger = _ledger(world_records(world, slot=77))
    client = ledger_client(ledger)
    reads = LedgerReads(ledger)
    assert reads.get_perp_market_accounts() == client.get_perp_market_accounts()
    assert [m.market_index for m in client.get_perp_market_accounts()] == world.perp_indexes()
    for index in world.perp_indexes():
        market = world.perp_market(index)
        assert client.get_perp_market_account(index) == market
        assert reads.get_perp_market_account(index) == market
        oracle = world.store.get(market.amm.oracle)
        assert oracle is not None
        expected = decode_oracle(bytes(oracle.data), market.amm.oracle_source)
        assert client.get_oracle_price_data_for_perp_market(index) == expected
        assert reads.get_oracle_price_data_for_perp_market(index) == expected
        slot = client.account_subscriber.get_perp_market_and_slot(index).slot
        assert slot == 77
    for index in world.spot_indexes():
        assert client.get_spot_market_account(index) == world.spot_market(index)
        market = world.spot_market(index)
        oracle = world.store.get(market.oracle)
        if oracle is not None:
            expected = decode_oracle(bytes(oracle.data), market.oracle_source)
            assert client.get_oracle_price_data_for_spot_market(index) == expected
    assert client.get_state_account() == world.state()


def test_one_undecodable_record_hides_only_its_account(world: World) -> None:
    records = world_records(world)
    bad_market = str(world.perp_market_pubkey(2))
    bad_oracle = str(world.perp_market(4).amm.oracle)
    records = [
        dataclasses.replace(r, data=r.data[:100]) if r.pubkey == bad_market else r for r in records
    ]
    records = [
        dataclasses.replace(r, data=b"\x00" * 7) if r.pubkey == bad_oracle else r for r in records
    ]
    client = ledger_client(_ledger(records))
    subscriber = client.account_subscriber
    assert client.get_perp_market_account(2) is None
    assert client.get_oracle_price_data_for_perp_market(4) is None
    assert client.get_perp_market_account(4) == world.perp_market(4)
    others = [i for i in world.perp_indexes() if i not in (2, 4)]
    assert all(client.get_perp_market_account(i) == world.perp_market(i) for i in others)
    assert all(client.get_oracle_price_data_for_perp_market(i) is not None for i in others)
    assert set(subscriber.unavailable) == {bad_market, bad_oracle}


@pytest.mark.parametrize(
    "mislabel",
    ["state bytes as a perp market", "market 1 at market 0's address", "unknown oracle source"],
)
def test_a_record_that_is_not_what_it_claims_is_unavailable(world: World, mislabel: str) -> None:
    records = world_records(world)
    perp0 = str(world.perp_market_pubkey(0))
    state = _record(world, world.state_pubkey)
    market1 = _record(world, world.perp_market_pubkey(1))
    oracle0 = str(world.perp_market(0).amm.oracle)

    def swap(record: AccountRecord) -> AccountRecord:
        if mislabel == "state bytes as a perp market" and record.pubkey == perp0:
            return dataclasses.replace(record, data=state.data)
        if mislabel == "market 1 at market 0's address" and record.pubkey == perp0:
            return dataclasses.replace(record, data=market1.data)
        if mislabel == "unknown oracle source" and record.pubkey == oracle0:
            return dataclasses.replace(record, oracle_source="__class__")
        return record

    client = ledger_client(_ledger([swap(r) for r in records]))
    if mislabel == "unknown oracle source":
        assert client.get_oracle_price_data_for_perp_market(0) is None
        assert oracle0 in client.account_subscriber.unavailable
    else:
        assert client.get_perp_market_account(0) is None
        assert perp0 in client.account_subscriber.unavailable
    # Market 1 is still served at its own index, whatever was written at market 0's address.
    assert client.get_perp_market_account(1) == world.perp_market(1)


def test_newer_records_replace_older_ones_and_a_bad_one_withdraws_the_value(
    world: World,
) -> None:
    ledger = _ledger(world_records(world, slot=10))
    client = ledger_client(ledger)
    before = client.get_oracle_price_data_for_perp_market(0)
    world.set_oracle_price(0, 123.25)
    world.store.slot = 11
    ledger.apply(_record(world, world.perp_market(0).amm.oracle))
    after = client.get_oracle_price_data_for_perp_market(0)
    assert after is not None
    assert before is not None
    assert after.price == 123_250_000 != before.price
    assert client.account_subscriber.get_oracle_price_data_and_slot_for_perp_market(0).slot == 11

    # An older record never replaces a newer one.
    stale = dataclasses.replace(_record(world, world.perp_market(0).amm.oracle), slot=9)
    stale = dataclasses.replace(stale, data=world_records(world)[0].data)
    ledger.apply(stale)
    assert client.get_oracle_price_data_for_perp_market(0) == after

    # A newer record that cannot be decoded: the account is unavailable, not its old value.
    market = _record(world, world.perp_market_pubkey(3))
    ledger.apply(dataclasses.replace(market, slot=12, data=market.data[:50]))
    assert client.get_perp_market_account(3) is None
    ledger.apply(dataclasses.replace(market, slot=13))
    assert client.get_perp_market_account(3) == world.perp_market(3)
    assert str(world.perp_market_pubkey(3)) not in client.account_subscriber.unavailable


def test_each_record_is_decoded_once(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = _ledger(world_records(world, slot=5))
    calls: list[bytes] = []

    def counting(data: bytes) -> Any:
        calls.append(data)
        return DRIFT_CODER.accounts.decode(data)

    client = ledger_client(AccountLedger())
    subscriber = LedgerSubscriber(client.program, ledger)
    monkeypatch.setattr(subscriber, "_decode_account", counting)
    subscriber.follow()
    decoded = len(calls)
    assert decoded == 1 + len(world.perp_indexes()) + len(world.spot_indexes())
    for _ in range(3):
        client.get_perp_market_account(0)
    market = _record(world, world.perp_market_pubkey(0))
    ledger.apply(dataclasses.replace(market, slot=6))  # same bytes, newer slot
    ledger.confirm(market.pubkey, 7)
    assert len(calls) == decoded
    stored = subscriber.get_perp_market_and_slot(0)
    assert stored is not None
    assert stored.slot == 6


def test_a_market_that_changes_oracle_reads_the_new_one(world: World) -> None:
    ledger = _ledger(world_records(world, slot=1))
    client = ledger_client(ledger)
    market0, market1 = world.perp_market(0), world.perp_market(1)
    moved = dataclasses.replace(
        market0,
        amm=dataclasses.replace(
            market0.amm, oracle=market1.amm.oracle, oracle_source=market1.amm.oracle_source
        ),
    )
    data = _codec.encode("PerpMarket", moved)
    record = _record(world, world.perp_market_pubkey(0))
    ledger.apply(dataclasses.replace(record, slot=2, data=data))
    moved_to = client.get_oracle_price_data_for_perp_market(0)
    assert moved_to is not None
    assert moved_to == client.get_oracle_price_data_for_perp_market(1)


async def _subscribed_driftpy(sim: Simulator) -> tuple[DriftClient, AsyncClient]:
    connection = AsyncClient(sim.http_url)
    client = DriftClient(
        connection,
        Keypair(),
        env="mainnet",
        account_subscription=AccountSubscriptionConfig("websocket"),
    )
    await asyncio.wait_for(client.subscribe(), 30)
    return client, connection


async def test_same_values_as_driftpy_subscribed_to_the_simulator(
    simulator_factory: SimulatorFactory,
) -> None:
    sim = await simulator_factory(markets=12)
    world = sim.world
    assert world is not None
    real, connection = await _subscribed_driftpy(sim)
    try:
        mine = ledger_client(_ledger(world_records(world)))
        assert [m.market_index for m in mine.get_perp_market_accounts()] == [
            m.market_index
            for m in sorted(real.get_perp_market_accounts(), key=lambda m: m.market_index)
        ]
        for index in world.perp_indexes():
            assert mine.get_perp_market_account(index) == real.get_perp_market_account(index)
            assert mine.get_oracle_price_data_for_perp_market(
                index
            ) == real.get_oracle_price_data_for_perp_market(index)
        for index in world.spot_indexes():
            assert mine.get_spot_market_account(index) == real.get_spot_market_account(index)
            assert mine.get_oracle_price_data_for_spot_market(
                index
            ) == real.get_oracle_price_data_for_spot_market(index)
        assert mine.get_state_account() == real.get_state_account()
    finally:
        for user in real.users.values():
            await user.account_subscriber.unsubscribe()
        await real.unsubscribe()
        await connection.close()


async def test_the_shared_clients_ledger_serves_what_its_live_client_serves(
    sim_manager: Simulator, wait_until: WaitUntil
) -> None:
    """The upstream tap fills the ledger; a ledger client reads the same accounts."""
    world = sim_manager.world
    assert world is not None
    live = await DriftClientManager.get_client()
    assert live is not None
    shared = DriftClientManager.shared_state()
    assert shared is not None
    mine = ledger_client(shared.ledger)

    def same() -> bool:
        return (
            all(
                mine.get_perp_market_account(i) == live.get_perp_market_account(i)
                and mine.get_oracle_price_data_for_perp_market(i)
                == live.get_oracle_price_data_for_perp_market(i)
                for i in world.perp_indexes()
            )
            and mine.get_state_account() == live.get_state_account()
        )

    assert same()
    world.set_oracle_price(1, 77.25)
    await sim_manager.step()
    expected = round(world.oracle_price(1) * 1_000_000)

    def arrived() -> bool:
        data = mine.get_oracle_price_data_for_perp_market(1)
        return data is not None and data.price == expected

    await wait_until(arrived)
    await wait_until(same)
