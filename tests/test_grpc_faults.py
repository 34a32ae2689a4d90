"""Every gRPC fault of the simulator against the shared client in grpc mode: reads never
raise, a value served unflagged is never stale, the client falls back and comes back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from bench.reliability_truth import ChainTruth
from conftest import eventually
from driftshare.manager import DriftClientManager
from driftshare.sim import Simulator
from driftshare.sim.pytest_plugin import SimulatorFactory

STALE_AFTER_S = 2.0
MARGIN_S = 1.0
"""A read unflagged more than this past DRIFT_STALE_AFTER_S behind the chain is a stale read."""


@dataclass
class Reads:
    """What four engines' reads saw while a fault was on and after."""

    count: int = 0
    exceptions: list[BaseException] = field(default_factory=list)
    unflagged_stale: list[str] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)


async def _read_forever(truth: ChainTruth, reads: Reads) -> None:
    loop = asyncio.get_running_loop()
    while True:
        for index in truth.indexes:
            try:
                funding = await DriftClientManager.get_funding_rate(index)
            except Exception as exc:  # what the test counts: an engine must never see one
                reads.exceptions.append(exc)
                continue
            reads.count += 1
            if funding is None or funding.stale:
                continue
            lag = truth.lag("oracle", index, funding.oracle_price, loop.time())
            if lag is None or lag > STALE_AFTER_S + MARGIN_S:
                reads.unflagged_stale.append(f"market {index}: {funding.oracle_price} lag {lag}")
        mode = DriftClientManager.stats().get("subscription_mode")
        if isinstance(mode, str) and (not reads.modes or reads.modes[-1] != mode):
            reads.modes.append(mode)
        await asyncio.sleep(0.05)


@pytest.fixture
async def sim(simulator_factory: SimulatorFactory) -> Simulator:
    # A clock fast enough that the chain moves, and stalls are seen, within a test.
    return await simulator_factory(markets=3, grpc_port=0, tick_s=0.1)


@pytest.fixture
async def reads(sim: Simulator, manager_settings: None) -> AsyncIterator[Reads]:
    DriftClientManager.configure(
        rpc_url=sim.http_url,
        subscription="grpc",
        grpc_url=sim.grpc_url,
        grpc_stall_s=1.0,
        stale_after_s=STALE_AFTER_S,
        health_interval_s=0.2,
        ws_stall_s=1.0,
    )
    truth = ChainTruth(sim, clock=asyncio.get_running_loop().time)
    assert await DriftClientManager.get_client() is not None
    seen = Reads()
    reader = asyncio.create_task(_read_forever(truth, seen))
    yield seen
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    truth.close()
    await DriftClientManager.release_client()
    await DriftClientManager.shutdown()
    assert seen.exceptions == []
    assert seen.unflagged_stale == []
    assert seen.count > 0


def _stats() -> dict[str, Any]:
    return DriftClientManager.stats()


def _mode() -> str | None:
    mode = _stats().get("subscription_mode")
    return mode if isinstance(mode, str) else None


async def _fresh_again(sim: Simulator) -> None:
    """Every market served unflagged with the chain's current oracle price."""
    world = sim.world
    assert world is not None

    async def fresh() -> bool:
        for index in world.perp_indexes():
            funding = await DriftClientManager.get_funding_rate(index)
            if funding is None or funding.stale:
                return False
        return True

    await eventually(fresh, "every market fresh again", within=20)


async def test_a_dropped_stream_is_reopened_and_every_account_reread(
    sim: Simulator, reads: Reads
) -> None:
    before = _stats()["freshness"]["requests"]
    assert await sim.faults.drop_grpc() == 1
    await eventually(lambda: sim.stats()["grpc"]["streams"]["total"] == 2, "stream reopened")
    await eventually(lambda: sim.stats()["grpc"]["streams"]["open"] == 1, "one stream open")
    # The reconnect's full re-read (getMultipleAccounts) of every account.
    await eventually(lambda: _stats()["freshness"]["requests"] > before, "accounts re-read")
    await _fresh_again(sim)
    assert _mode() == "grpc"
    assert reads.modes == ["grpc"]


Fault = Callable[[Simulator], Awaitable[None]]


async def _refuse(sim: Simulator, status: str) -> None:
    sim.faults.refuse_grpc(10_000, status)  # type: ignore[arg-type]
    await sim.faults.drop_grpc()


@pytest.mark.parametrize(
    ("fault", "fallback"),
    [
        pytest.param(lambda sim: _refuse(sim, "UNAVAILABLE"), "websocket", id="unavailable"),
        pytest.param(
            lambda sim: _refuse(sim, "RESOURCE_EXHAUSTED"), "websocket", id="resource-exhausted"
        ),
        # A stall stops WebSocket notifications too: websocket, then polling.
        pytest.param(lambda sim: sim.faults.apply({"stall": True}), "polling", id="stall"),
    ],
)
async def test_a_failing_grpc_endpoint_falls_back_and_comes_back(
    sim: Simulator, reads: Reads, fault: Fault, fallback: str
) -> None:
    await fault(sim)
    await eventually(lambda: _mode() == fallback, f"fell back to {fallback}", within=20)
    await sim.faults.clear()
    await eventually(lambda: _mode() == "grpc", "back on gRPC", within=20)
    await _fresh_again(sim)
    await eventually(lambda: reads.modes[-1] == "grpc", "engines read on gRPC again")
    assert reads.modes[:2] == ["grpc", "websocket"]
    assert fallback in reads.modes
    assert _stats()["mode_switches"] >= 2
    await eventually(lambda: sim.stats()["grpc"]["streams"]["open"] == 1, "one stream open")


async def test_everything_down_recovers_on_grpc(sim: Simulator, reads: Reads) -> None:
    await sim.faults.down(2)
    await eventually(lambda: not sim.faults.is_down, "the simulator up again")
    await _fresh_again(sim)
    await eventually(lambda: _mode() == "grpc", "on gRPC")
    await eventually(lambda: sim.stats()["grpc"]["streams"]["open"] == 1, "one stream open")


async def test_an_undecodable_market_is_served_stale_until_it_decodes_again(
    sim: Simulator, reads: Reads
) -> None:
    world = sim.world
    assert world is not None
    key = world.perp_market_pubkey(0)
    sim.faults.corrupt(key, "garble")
    world.set_oracle_price(0, world.oracle_price(0) * 1.5)  # the market account is rewritten
    await eventually(lambda: 0 in _stats()["unavailable_markets"], "market 0 unavailable")
    funding = await DriftClientManager.get_funding_rate(0)
    assert funding is not None
    assert funding.stale
    sim.faults.restore(key)
    world.set_oracle_price(0, world.oracle_price(0) / 1.5)
    await eventually(lambda: 0 not in _stats()["unavailable_markets"], "market 0 decoded")
    await _fresh_again(sim)
    assert _mode() == "grpc"
