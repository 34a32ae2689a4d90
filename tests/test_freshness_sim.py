"""Freshness against the simulator: the account ledger, data-keyed cache, staleness, repairs."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from conftest import FAST, eventually, subscribed
from driftshare import DriftAdapter, DriftFundingFeed
from driftshare._data.ledger import AccountLedger
from driftshare.manager import DriftClientManager
from driftshare.sim import Simulator

pytestmark = pytest.mark.usefixtures("clean_manager")


async def _start(sim: Simulator, **settings: Any) -> AccountLedger:
    DriftClientManager.configure(rpc_url=sim.http_url, **{**FAST, **settings})
    assert await DriftClientManager.get_client() is not None
    shared = DriftClientManager.shared_state()
    assert shared is not None
    return shared.ledger


def _matches_store(ledger: AccountLedger, sim: Simulator) -> bool:
    for entry in ledger:
        stored = sim.store.get(_pubkey(entry.record.pubkey))
        if stored is None or stored.data != entry.record.data:
            return False
    return True


def _pubkey(text: str) -> Any:
    from solders.pubkey import Pubkey

    return Pubkey.from_string(text)


def _expected_kinds(sim: Simulator) -> dict[str, str]:
    world = sim.world
    assert world is not None
    kinds = {str(world.state_pubkey): "state"}
    for i in world.perp_indexes():
        kinds[str(world.perp_market_pubkey(i))] = "perp"
        kinds[str(world.perp_market(i).amm.oracle)] = "oracle"
    for i in world.spot_indexes():
        market = world.spot_market(i)
        kinds[str(market.pubkey)] = "spot"
        kinds.setdefault(str(market.oracle), "oracle")
    return kinds


@pytest.mark.parametrize("mode", ["websocket", "polling"])
async def test_ledger_holds_every_subscribed_account_and_follows_updates(
    simulator: Simulator, mode: str
) -> None:
    ledger = await _start(simulator, subscription=mode)
    expected = _expected_kinds(simulator)
    expected.pop("11111111111111111111111111111111", None)
    assert {e.record.pubkey: e.record.kind for e in ledger} == expected
    assert _matches_store(ledger, simulator)
    oracles = [e.record for e in ledger if e.record.kind == "oracle"]
    assert all(r.oracle_source for r in oracles)
    changes: list[tuple[str, bool]] = []
    ledger.add_listener(lambda entry, changed: changes.append((entry.record.pubkey, changed)))
    if mode == "websocket":
        await eventually(lambda: subscribed(simulator))
    slot = await simulator.step()
    # Every account the step rewrote reaches the ledger with its bytes and a slot >= the step's.
    await eventually(lambda: _matches_store(ledger, simulator) and any(c for _, c in changes))
    assert _matches_store(ledger, simulator)
    changed = {pubkey for pubkey, c in changes if c}
    assert all(ledger.get(p).record.slot >= slot for p in changed)  # type: ignore[union-attr]


STALE_AFTER_S = 1.0


async def _subscribed_client(sim: Simulator, **settings: Any) -> Any:
    await _start(sim, **{"stale_after_s": STALE_AFTER_S, **settings})
    if settings.get("subscription", "websocket") == "websocket":
        await eventually(lambda: subscribed(sim))
    shared = DriftClientManager.shared_state()
    assert shared is not None
    return shared


async def test_account_that_stops_updating_turns_stale_one_that_stops_changing_does_not(
    simulator: Simulator,
) -> None:
    # Twice the suite's staleness: a confirmation round (every stale_after_s / 2) that a loaded
    # xdist worker delays by half a second must not flag the frozen market, rightly, as stale.
    stale_after_s = 2 * STALE_AFTER_S
    shared = await _subscribed_client(simulator, stale_after_s=stale_after_s)
    world = simulator.world
    assert world is not None
    hidden, frozen = world.perp_indexes()[:2]
    # Market `frozen` only stops changing: its account and oracle keep their bytes.
    for key in (world.perp_market_pubkey(frozen), world.perp_market(frozen).amm.oracle):
        account = simulator.store.get(key)
        assert account is not None
        simulator.store.put(key, dataclasses.replace(account, frozen=True), force=True)
    # Market `hidden` keeps changing on chain, but the node stops serving its account.
    simulator.faults.hide(world.perp_market_pubkey(hidden))
    seen_fresh_frozen: list[bool] = []

    async def hidden_is_stale() -> bool:
        rate = await DriftClientManager.get_funding_rate(hidden)
        steady = await DriftClientManager.get_funding_rate(frozen)
        assert steady is not None
        seen_fresh_frozen.append(not steady.stale)
        return rate is not None and rate.stale

    await eventually(hidden_is_stale, sim=simulator, what="hidden market stale")
    rate = await DriftClientManager.get_funding_rate(hidden)
    assert rate is not None
    assert rate.data_age_s > stale_after_s
    # The frozen market stays fresh through three more confirmation rounds.
    rounds = shared.confirmer.requests

    async def three_more_rounds() -> bool:
        await hidden_is_stale()
        return bool(shared.confirmer.requests >= rounds + 3)

    await eventually(three_more_rounds, sim=simulator, what="three more confirmation rounds")
    assert all(seen_fresh_frozen)
    steady = await DriftClientManager.get_funding_rate(frozen)
    assert steady is not None
    assert steady.data_age_s <= stale_after_s
    assert steady.slot > shared.ledger.get(str(world.perp_market_pubkey(frozen))).record.slot


async def test_private_adapter_flags_an_account_that_stops_updating(
    simulator: Simulator,
) -> None:
    DriftClientManager.configure(
        rpc_url=simulator.http_url, **{**FAST, "stale_after_s": STALE_AFTER_S}
    )
    world = simulator.world
    assert world is not None
    hidden, other = world.perp_indexes()[:2]
    adapter = DriftAdapter(use_singleton=False)
    try:
        assert await adapter.connect()
        await eventually(lambda: subscribed(simulator))
        fresh = await adapter.get_funding_rate(hidden)
        assert fresh is not None
        assert not fresh["stale"]
        assert fresh["slot"] > 0
        assert fresh["data_age_s"] <= STALE_AFTER_S
        # The chain goes on and the market keeps changing; the node stops serving it.
        simulator.faults.hide(world.perp_market_pubkey(hidden))

        async def hidden_is_stale() -> bool:
            rate = await adapter.get_funding_rate(hidden)
            assert rate is not None
            return bool(rate["stale"])

        within = 4 * STALE_AFTER_S + 2.0
        await eventually(hidden_is_stale, sim=simulator, within=within, what="hidden market stale")
        rate = await adapter.get_funding_rate(hidden)
        assert rate is not None
        assert rate["data_age_s"] > STALE_AFTER_S
        # The confirmer keeps the served account current: only the hidden one ages.
        steady = await adapter.get_funding_rate(other)
        assert steady is not None
        assert not steady["stale"]
        assert steady["data_age_s"] <= STALE_AFTER_S
    finally:
        await adapter.disconnect()


async def test_the_feed_flags_what_the_adapter_flags(simulator: Simulator) -> None:
    await _subscribed_client(simulator)
    world = simulator.world
    assert world is not None
    hidden, other = world.perp_indexes()[:2]
    feed = DriftFundingFeed(DriftAdapter())
    try:
        fresh = await feed.get_funding_rate(hidden)
        assert fresh is not None
        assert not fresh.stale
        simulator.faults.hide(world.perp_market_pubkey(hidden))

        async def flagged() -> bool:
            info = await feed.get_funding_rate(hidden)
            assert info is not None
            return info.stale

        await eventually(flagged, sim=simulator, within=4 * STALE_AFTER_S + 2.0, what="flagged")
        info = await feed.get_funding_rate(hidden)
        assert info is not None
        assert info.data_age_s > STALE_AFTER_S
        steady = await feed.get_funding_rate(other)
        assert steady is not None
        assert not steady.stale
        assert steady.data_age_s <= STALE_AFTER_S
    finally:
        await feed.close()


def _driftpy_is_current(shared: Any, sim: Simulator) -> bool:
    """Whether the shared client's perp markets and oracles hold the simulator's bytes."""
    world = sim.world
    assert world is not None
    decode = shared.client.program.coder.accounts.decode
    for index in world.perp_indexes():
        stored = sim.store.get(world.perp_market_pubkey(index))
        if decode(stored.data) != shared.client.get_perp_market_account(index):
            return False
        oracle = shared.client.get_oracle_price_data_for_perp_market(index)
        if oracle.price != round(world.oracle_price(index) * 1e6):
            return False
    return True


@pytest.mark.parametrize("drops", [1, 2])
async def test_changes_made_while_the_websocket_is_down_are_applied_after_reconnect(
    simulator: Simulator, drops: int
) -> None:
    shared = await _subscribed_client(simulator)
    for _ in range(drops):
        assert await simulator.faults.drop_ws() > 0
        for _ in range(3):
            await simulator.step()  # changes no notification will carry
    assert not _driftpy_is_current(shared, simulator)
    await eventually(lambda: subscribed(simulator), within=30.0)
    # No further change on chain: only the re-read after the reconnect can bring these in.
    await eventually(
        lambda: _driftpy_is_current(shared, simulator) and _matches_store(shared.ledger, simulator),
        what="the changes missed while down",
    )
    for index in simulator.world.perp_indexes():  # type: ignore[union-attr]
        rate = await DriftClientManager.get_funding_rate(index)
        assert rate is not None
        assert not rate.stale


@pytest.mark.parametrize("mode", ["websocket", "polling"])
@pytest.mark.parametrize("corruption", ["truncate", "garble"])
async def test_undecodable_market_is_never_served_fresh(
    simulator: Simulator, mode: str, corruption: str
) -> None:
    shared = await _subscribed_client(simulator, subscription=mode)
    world = simulator.world
    assert world is not None
    index = world.perp_indexes()[2]
    key = world.perp_market_pubkey(index)
    before = await DriftClientManager.get_funding_rate(index)
    assert before is not None
    assert not before.stale
    simulator.faults.corrupt(key, corruption)  # type: ignore[arg-type]
    served = simulator.faults.serve(key, simulator.store.get(key))  # type: ignore[arg-type]
    await eventually(
        lambda: shared.ledger.get(str(key)).record.data == served.data,  # type: ignore[union-attr]
        sim=simulator,
    )
    assert index in shared.unavailable
    # The last account that decoded is served, flagged: neither dropped nor passed off as new.
    rate = await DriftClientManager.get_funding_rate(index)
    assert rate is not None
    assert rate.stale
    assert rate.rate_hourly == before.rate_hourly
    market = await DriftClientManager.get_market(index)
    assert market is not None
    assert market.stale
    rows = {m.market_index: m for m in await DriftClientManager.get_all_perp_markets()}
    assert rows[index].stale
    assert all(not m.stale for i, m in rows.items() if i != index)


async def test_connect_answers_at_the_first_refusal_not_after_the_retries(
    simulator_factory: Any,
) -> None:
    sim = await simulator_factory(faults=["down=600"])
    # Default retries: the transport alone would go on retrying the refused request.
    DriftClientManager.configure(rpc_url=sim.http_url, request_timeout_s=2.0)
    adapter = DriftAdapter()
    assert await adapter.connect() is False
    # Answered while the refused request's retries were still under way: none gave up yet.
    rpc = DriftClientManager.stats()["rpc"]
    assert rpc["requests"] >= 1
    assert rpc["by_status"].get("error", 0) >= 1
    assert rpc["failures"] == 0
    assert await DriftClientManager.get_client() is None
    assert DriftClientManager.stats()["rpc"]["failures"] == 0
    assert DriftClientManager.stats()["health"] == "down"
    await DriftClientManager.release_client()
    await adapter.disconnect()


async def test_health_follows_data_not_a_get_slot(simulator: Simulator) -> None:
    shared = await _subscribed_client(simulator)
    assert shared.health == "healthy"
    assert await DriftClientManager.get_funding_rate(0) is not None
    keys = list(shared.tap.pubkeys())
    # The RPC still answers getSlot, but no account can be read or is notified.
    simulator.faults.set_stall(True)
    for key in keys:
        simulator.faults.hide(key)
    await eventually(lambda: shared.health == "degraded", sim=simulator)
    rate = await DriftClientManager.get_funding_rate(0)
    assert rate is not None
    assert rate.stale
    # getSlot answers three more health checks; health stays degraded through them.
    slots_asked = simulator.stats()["calls"]["by_method"].get("getSlot", 0)

    def three_more_checks() -> bool:
        assert shared.health == "degraded"
        return bool(simulator.stats()["calls"]["by_method"].get("getSlot", 0) >= slots_asked + 3)

    await eventually(three_more_checks, sim=simulator, what="three more health checks")
    simulator.faults.set_stall(False)
    for key in keys:
        simulator.faults.restore(key)
    await eventually(lambda: shared.health == "healthy", sim=simulator)
    assert shared.last_confirmed_at is not None

    async def fresh_again() -> bool:
        rate = await DriftClientManager.get_funding_rate(0)
        return rate is not None and not rate.stale

    await eventually(fresh_again, sim=simulator, within=STALE_AFTER_S + 2.0, what="fresh again")


async def test_second_change_within_one_slot_is_read(simulator: Simulator) -> None:
    shared = await _subscribed_client(simulator)
    world = simulator.world
    assert world is not None
    before = await DriftClientManager.get_funding_rate(0)
    assert before is not None
    slot = simulator.store.slot
    world.set_oracle_price(0, world.oracle_price(0) * 1.01)  # same slot, new bytes
    expected = round(world.oracle_price(0) * 1e6)
    await eventually(
        lambda: shared.client.get_oracle_price_data_for_perp_market(0).price == expected
    )
    assert simulator.store.slot == slot
    after = await DriftClientManager.get_funding_rate(0)
    assert after is not None
    assert after.oracle_price == expected / 1e6
