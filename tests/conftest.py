"""Fixtures and helpers shared by the tests.

The suite runs under pytest-xdist (``make test``: ``-n 4 --dist loadfile``, one file per
worker). A test stays safe there when it takes every port, folder and process from these
fixtures or from ``bench._processes``:

- ports: a simulator (``simulator``/``simulator_factory``) and ``driftshare serve``
  (:func:`serve`) bind port 0 and report what they got; a redis-server takes
  ``bench._processes.free_port()``, which stays below the ephemeral range; a URL where
  nothing listens is :func:`closed_port_url`. Never hard-code a port.
- files: ``tmp_path`` (per test, per worker), never a fixed path.
- processes: :func:`serve` and :func:`redis_server` stop what they start, and ``serve``
  fails the test on an unclean exit.
- waiting: :func:`eventually` for a state without an event, never ``sleep`` and a check.
- the shared client: :func:`manager_settings` (settings forgotten) or :func:`sim_manager`
  (configured on a simulator and shut down after).
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import pytest_asyncio
from driftpy.accounts.oracle import decode_oracle
from driftpy.types import OraclePriceData

from bench._processes import RedisServer, ServeProcess, stop_all
from driftshare import models
from driftshare._fleet._store import FleetStore
from driftshare.manager import DriftClientManager
from driftshare.models import (
    FundingRateData,
    MarketData,
    funding_rate_from_market,
    market_data_from_market,
)
from driftshare.sim import Simulator
from driftshare.sim.pytest_plugin import SimulatorFactory

WaitUntil = Callable[[Callable[[], bool]], Awaitable[float]]
StartServe = Callable[..., Awaitable[ServeProcess]]


async def eventually(
    predicate: Callable[[], object],
    what: str = "condition",
    *,
    within: float = 10.0,
    every_s: float = 0.02,
    sim: Simulator | None = None,
) -> float:
    """Poll ``predicate`` (plain or async) every ``every_s`` until true, advancing the
    simulator's slots meanwhile when given one; the seconds it took. Fails after ``within``.

    For states that raise no event a test can await: another process, Redis, a chain, a clock.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        async with asyncio.timeout(within):
            while True:
                answer = predicate()
                if inspect.isawaitable(answer):
                    answer = await answer
                if answer:
                    return loop.time() - start
                if sim is not None:
                    await sim.step()
                await asyncio.sleep(every_s)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {within:g} s") from None


def subscriptions_per_client(sim: Simulator) -> int:
    """Websocket subscriptions one subscribed DriftClient holds: the State, each distinct
    oracle, and one program subscription per market map (perp, spot)."""
    world = sim.world
    assert world is not None
    oracles = {world.perp_market(i).amm.oracle for i in world.perp_indexes()}
    oracles |= {world.spot_market(i).oracle for i in world.spot_indexes()}
    return 1 + len(oracles) + 2


def subscribed(sim: Simulator) -> bool:
    """Whether exactly one DriftClient's subscriptions are all active on ``sim``."""
    active: int = sim.stats()["subscriptions"]["active"]
    return active == subscriptions_per_client(sim)


@dataclass(frozen=True)
class GroundTruth:
    """What models.py computes straight from the simulator's accounts at a fixed time."""

    sim: Simulator
    now: float

    def oracle(self, index: int) -> OraclePriceData:
        """The perp market's oracle as driftpy decodes it from the simulator's account."""
        market = self.sim.world.perp_market(index)  # type: ignore[union-attr]
        account = self.sim.store.get(market.amm.oracle)
        assert account is not None
        return decode_oracle(bytes(account.data), market.amm.oracle_source)

    def funding(self, index: int) -> FundingRateData:
        market = self.sim.world.perp_market(index)  # type: ignore[union-attr]
        return funding_rate_from_market(market, oracle_price_data=self.oracle(index), now=self.now)

    def market(self, index: int) -> MarketData:
        market = self.sim.world.perp_market(index)  # type: ignore[union-attr]
        return market_data_from_market(market, oracle_price_data=self.oracle(index), now=self.now)

    def indexes(self) -> list[int]:
        return self.sim.world.perp_indexes()  # type: ignore[union-attr]

    def subscriptions_per_client(self) -> int:
        return subscriptions_per_client(self.sim)

    def active_subscriptions(self) -> int:
        active: int = self.sim.stats()["subscriptions"]["active"]
        return active


@pytest.fixture
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> float:
    """A fixed unix time for every computation in models.py, so results are reproducible."""
    now = float(int(time.time()))
    monkeypatch.setattr(models, "time", SimpleNamespace(time=lambda: now))
    return now


@pytest.fixture
def manager_settings() -> Iterator[None]:
    """Forget DriftClientManager's settings before and after the test."""
    DriftClientManager._settings = None
    yield
    DriftClientManager._settings = None


@pytest_asyncio.fixture
async def sim_manager(simulator: Simulator, manager_settings: None) -> AsyncIterator[Simulator]:
    """The simulator, with DriftClientManager pointed at it and shut down afterwards.

    The health check is pushed out of the test's way so it sends no RPC request.
    """
    DriftClientManager.configure(rpc_url=simulator.http_url, health_interval_s=3600)
    yield simulator
    await DriftClientManager.shutdown()


@pytest_asyncio.fixture
async def wide_truth(
    simulator_factory: SimulatorFactory, manager_settings: None, frozen_now: float
) -> AsyncIterator[GroundTruth]:
    """30 markets, so settlement, reduce-only and prediction markets are among them."""
    sim = await simulator_factory(markets=30)
    DriftClientManager.configure(rpc_url=sim.http_url, health_interval_s=3600)
    yield GroundTruth(sim, frozen_now)
    await DriftClientManager.shutdown()


@pytest.fixture
def truth(simulator: Simulator, frozen_now: float) -> GroundTruth:
    return GroundTruth(simulator, frozen_now)


@pytest.fixture
def wait_until() -> WaitUntil:
    """``await wait_until(condition)``: :func:`eventually` with its 10 s deadline."""
    return eventually


# -- the fleet tests: a real redis-server --------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[None]:
    """Keep each phase's report on the test item, so fixtures can tell a failed test."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A started redis-server without persistence; ``kill()``/``restart()`` it at will."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


async def last_values(store: FleetStore) -> tuple[list[bytes], list[bytes]]:
    """What ``store`` keeps in Redis: every record, then every confirmation."""
    return [r async for r in store.records()], [c async for c in store.confirmations()]


@pytest.fixture
def closed_port_url() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` where every connection is refused for the whole test: the
    port is bound and never listened on, so no other test or worker can take it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest_asyncio.fixture
async def serve(
    request: pytest.FixtureRequest, simulator_factory: SimulatorFactory
) -> AsyncIterator[StartServe]:
    """``await serve(rpc_url, share_url=None, *, engines=(), snapshot=None, env=None)``: a
    ``driftshare serve`` child that listens (:class:`bench._processes.ServeProcess`).

    After the test, every one still running gets SIGTERM at once and is awaited on the
    test's event loop, which keeps serving the simulators (stopped after them); each must
    exit with 0. A failed test prints their logs.
    """
    started: list[ServeProcess] = []

    async def start(*args: object, **kwargs: object) -> ServeProcess:
        process = ServeProcess(*args, **kwargs)  # type: ignore[arg-type]
        started.append(process)
        await process.start()
        return process

    yield start
    running = [p for p in started if p.alive()]
    codes = await stop_all(running)
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for process in started:
            print(f"--- driftshare serve at {process.url}\n{process.log_text()[-4000:]}")
    unclean = {p.url: code for p, code in zip(running, codes, strict=True) if code != 0}
    assert not unclean, f"serve did not exit cleanly: {unclean}"
