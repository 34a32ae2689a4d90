"""Freshness against the simulator: the account ledger, data-keyed cache, staleness, repairs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from conftest import subscribed
from driftshare._ledger import AccountLedger
from driftshare.manager import DriftClientManager
from driftshare.sim import Simulator

FAST: dict[str, Any] = {
    "health_interval_s": 0.1,
    "poll_interval_s": 0.1,
    "retry_backoff": 0.05,
    "retry_backoff_cap": 0.2,
    "rpc_rps": 200.0,
    "rpc_burst": 50,
}


@pytest_asyncio.fixture(autouse=True)
async def _clean_manager(simulator_factory: object) -> AsyncIterator[None]:
    yield
    await DriftClientManager.shutdown()
    DriftClientManager._settings = None


async def eventually(
    predicate: Callable[[], bool], *, sim: Simulator | None = None, within: float = 10.0
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("timed out")
        if sim is not None:
            await sim.step()
        await asyncio.sleep(0.02)


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
