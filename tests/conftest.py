"""Fixtures and helpers shared by the tests.

The suite runs under pytest-xdist (``make test``: ``-n 5 --dist loadscope``, a file or a test
class per worker). A test stays safe there when it takes every port, folder and process from these
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
import contextlib
import copy
import functools
import inspect
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import anchorpy.program.core
import driftpy.math.amm
import httpx
import hypothesis
import pytest
import pytest_asyncio
from anchorpy.coder.coder import Coder
from anchorpy.program.namespace.account import AccountClient, _build_account
from anchorpy.program.namespace.types import _build_types
from anchorpy.provider import Provider
from anchorpy_core.idl import Idl
from driftpy.accounts.oracle import decode_oracle
from driftpy.constants.numeric_constants import (
    BASE_PRECISION,
    FUNDING_RATE_PRECISION,
    PRICE_PRECISION,
)
from driftpy.math.amm import calculate_bid_ask_price
from driftpy.math.funding import calculate_long_short_funding_and_live_twaps
from driftpy.math.utils import time_remaining_until_update
from driftpy.types import OraclePriceData, PerpMarketAccount
from solders.pubkey import Pubkey

from bench import _forkserver
from bench._processes import RedisServer, ServeProcess, stop_all
from driftshare import models
from driftshare._fleet import Chain
from driftshare._fleet._store import FleetStore
from driftshare._transport import tls_context
from driftshare.manager import DriftClientManager
from driftshare.models import FundingRateData, MarketData
from driftshare.sim import Simulator
from driftshare.sim.pytest_plugin import SimulatorFactory

# Hypothesis's per-example deadline is a timing assertion: a loaded machine (the suite runs on
# xdist workers beside other work) would fail an example for being slow, not wrong.
hypothesis.settings.register_profile("driftshare", deadline=None)
hypothesis.settings.load_profile("driftshare")

# The `python -m driftshare …` and `python -m bench…` children that bench's helpers start are
# forked from a server that imported them once: about 2 CPU-s saved per process.
_forkserver.enable()


# anchorpy's Program builds, for every DriftClient, a Coder (about 0.1 s of CPU), its IDL's
# types and an account client per account type with its size (35 ms more): some 400 times in
# a run of the suite. All of it is fixed by the IDL and never changed (driftshare itself decodes
# with driftpy's one module-level DRIFT_CODER), so the DriftClients of one test process share
# it per IDL; each Program's account clients still hold its own provider.


@functools.cache
def _coder(idl_json: str) -> Coder:
    return Coder(Idl.from_json(idl_json))


@functools.cache
def _types(idl_json: str) -> dict[str, Any]:
    return _build_types(Idl.from_json(idl_json))


@functools.cache
def _accounts(idl_json: str, program_id: Pubkey) -> dict[str, AccountClient]:
    idl = Idl.from_json(idl_json)
    return _build_account(idl, _coder(idl_json), program_id, None)  # type: ignore[arg-type]


def _shared_accounts(
    idl: Idl, coder: Coder, program_id: Pubkey, provider: Provider
) -> dict[str, AccountClient]:
    clients = {}
    for name, shared in _accounts(idl.to_json(), program_id).items():
        clients[name] = copy.copy(shared)
        clients[name]._provider = provider
    return clients


anchorpy.program.core.Coder = lambda idl: _coder(idl.to_json())  # type: ignore[assignment,misc]
anchorpy.program.core._build_types = lambda idl: _types(idl.to_json())
anchorpy.program.core._build_account = _shared_accounts


def _default_tls(
    verify: ssl.SSLContext | str | bool = True, cert: Any = None, trust_env: bool = True
) -> ssl.SSLContext:
    if verify is True and cert is None and trust_env:
        return tls_context()
    return httpx._config.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)


# solana-py's provider makes an httpx client, and with it a TLS context (about 40 ms of CPU to
# load the CA bundle), for every AsyncClient: some 400 in a run, each dropped at once for
# driftshare's transport. Default contexts are interchangeable: the suite's share driftshare's
# one (test_transport undoes this to check that driftshare shares it by itself).
httpx._transports.default.create_ssl_context = _default_tls

WaitUntil = Callable[[Callable[[], bool]], Awaitable[float]]
StartServe = Callable[..., Awaitable[ServeProcess]]
ManagerOn = Callable[..., Awaitable[Simulator]]

# Fast health checks and stall detection so the fallbacks happen within a test.
FAST: dict[str, Any] = {
    "health_interval_s": 0.1,
    "ws_stall_s": 0.5,
    "stale_after_s": 1.0,
    "poll_interval_s": 0.1,
    "retry_backoff": 0.05,
    "retry_backoff_cap": 0.2,
    "max_retries": 100,
    "rpc_rps": 200.0,
    "rpc_burst": 50,
}
QUIET: dict[str, Any] = {**FAST, "health_interval_s": 3600.0, "ws_stall_s": 3600.0}
"""FAST without the health loop's timers: on a loaded machine a late notification or a slow
health check may rightly switch modes or rebuild, so tests counting start-ups use this."""


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


class _ClosingEventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """The default policy, closing an idle loop it is told to replace.

    pytest-asyncio installs a fresh loop after each async test, and ``asyncio.run`` or the
    next test's loop replaces it unclosed: the garbage collector then reports its self-pipe
    socket (``ResourceWarning``) inside whichever test runs then, failing it.
    """

    def set_event_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        old = self._local._loop  # type: ignore[attr-defined]
        if old is not None and old is not loop and not old.is_running() and not old.is_closed():
            old.close()
        super().set_event_loop(loop)


asyncio.set_event_loop_policy(_ClosingEventLoopPolicy())


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


_CAMEL_BOUNDARY = re.compile(r"(?<!^)(?=[A-Z])")


@dataclass(frozen=True)
class GroundTruth:
    """What the served numbers must be for the simulator's markets at a fixed time, from the
    simulator's own state and driftpy's math, never from :mod:`driftshare.models` (the code
    under test): driftpy decodes the oracle and prices the AMM (``calculate_bid_ask_price``)
    and predicts funding (``calculate_long_short_funding_and_live_twaps``); the simulator
    holds the names, statuses and amounts; the rate units are Drift's (funding in
    ``FUNDING_RATE_PRECISION`` quote per base, over the oracle twap in ``PRICE_PRECISION``).
    ``tests/test_models.py`` holds models to the TypeScript SDK on mainnet bytes.
    """

    sim: Simulator
    now: float

    def _market(self, index: int) -> PerpMarketAccount:
        world = self.sim.world
        assert world is not None
        return world.perp_market(index)

    def oracle(self, index: int) -> OraclePriceData:
        """The perp market's oracle as driftpy decodes it from the simulator's account."""
        market = self._market(index)
        account = self.sim.store.get(market.amm.oracle)
        assert account is not None
        return decode_oracle(bytes(account.data), market.amm.oracle_source)

    def status(self, index: int) -> str:
        return _CAMEL_BOUNDARY.sub("_", type(self._market(index).status).__name__).lower()

    def name(self, index: int) -> str:
        return bytes(self._market(index).name).decode().strip(" \x00")

    def rate_hourly(self, index: int) -> float:
        amm = self._market(index).amm
        if self.status(index) in ("settlement", "delisted") or amm.last_funding_rate == 0:
            return 0.0
        twap = amm.last_funding_oracle_twap or amm.historical_oracle_data.last_oracle_price_twap
        return float(amm.last_funding_rate / FUNDING_RATE_PRECISION / (twap / PRICE_PRECISION))

    def _mark(self, index: int) -> int:
        market, oracle = self._market(index), self.oracle(index)
        prediction = type(market.contract_type).__name__ == "Prediction"
        with _driftpy_clock(self.now):
            bid, ask = calculate_bid_ask_price(market.amm, oracle, is_prediction=prediction)
        return int(bid + ask) // 2

    def _predicted(self, index: int) -> float | None:
        market = self._market(index)
        if self.status(index) in ("settlement", "delisted", "initialized", "funding_paused"):
            return None
        if market.paused_operations & 1:  # PerpOperation::UpdateFunding
            return None
        estimate = calculate_long_short_funding_and_live_twaps(
            market, self.oracle(index), self._mark(index), int(self.now)
        )
        try:  # an ``async def`` that awaits nothing: one step returns its value
            estimate.send(None)
        except StopIteration as done:
            return float(done.value[2] / (PRICE_PRECISION * 100))
        estimate.close()
        raise AssertionError("driftpy's funding estimate awaited something")

    def funding(self, index: int) -> FundingRateData:
        market = self._market(index)
        hourly = self.rate_hourly(index)
        last, period = market.amm.last_funding_rate_ts, market.amm.funding_period
        return FundingRateData(
            market=self.name(index),
            market_index=index,
            rate_hourly=hourly,
            rate_8h=hourly * 8 * 100,
            rate_annual=hourly * 8766 * 100,  # 24 h x 365.25 days
            is_positive=hourly > 0,
            mark_price=self._mark(index) / PRICE_PRECISION,
            oracle_price=self.oracle(index).price / PRICE_PRECISION,
            predicted_rate_hourly=self._predicted(index),
            next_funding_ts=last + int(time_remaining_until_update(last, last, period)),
            status=self.status(index),
            timestamp=self.now,
        )

    def market(self, index: int) -> MarketData:
        amm = self._market(index).amm
        long_base, short_base = amm.base_asset_amount_long, amm.base_asset_amount_short
        open_interest = (long_base + abs(short_base)) / BASE_PRECISION
        oracle_price = self.oracle(index).price / PRICE_PRECISION
        return MarketData(
            market_index=index,
            symbol=self.name(index),
            status=self.status(index),
            mark_price=self._mark(index) / PRICE_PRECISION,
            oracle_price=oracle_price,
            funding_rate=self.rate_hourly(index),
            open_interest=open_interest,
            open_interest_usd=open_interest * oracle_price,
            base_asset_amount_long=long_base / BASE_PRECISION,
            base_asset_amount_short=short_base / BASE_PRECISION,
            timestamp=self.now,
        )

    def indexes(self) -> list[int]:
        world = self.sim.world
        assert world is not None
        return world.perp_indexes()

    def subscriptions_per_client(self) -> int:
        return subscriptions_per_client(self.sim)

    def active_subscriptions(self) -> int:
        active: int = self.sim.stats()["subscriptions"]["active"]
        return active


@contextlib.contextmanager
def _driftpy_clock(now: float) -> Iterator[None]:
    """driftpy's AMM spread reads ``time.time()``: pin it to ``now`` meanwhile."""
    real = driftpy.math.amm.time
    driftpy.math.amm.time = SimpleNamespace(time=lambda: float(now))  # type: ignore[assignment]
    try:
        yield
    finally:
        driftpy.math.amm.time = real


class FakeClock:
    """A clock that stands still until a test sets ``now``; call it for the time."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


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
async def clean_manager(simulator_factory: SimulatorFactory) -> AsyncIterator[None]:
    """After the test, shut DriftClientManager down and forget its settings (before the
    test's simulators stop, so its clients close first)."""
    yield
    await DriftClientManager.shutdown()
    DriftClientManager._settings = None


@pytest_asyncio.fixture
async def manager_on(
    simulator_factory: SimulatorFactory, clean_manager: None
) -> AsyncIterator[ManagerOn]:
    """``await manager_on(settings=FAST, *, markets=8, **simulator_options)``: a started
    simulator with DriftClientManager configured on it with ``settings``; shut down after."""

    async def make(
        settings: dict[str, Any] = FAST, *, markets: int = 8, **options: Any
    ) -> Simulator:
        sim = await simulator_factory(markets=markets, **options)
        DriftClientManager.configure(rpc_url=sim.http_url, **settings)
        return sim

    yield make


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


# -- scheduling -----------------------------------------------------------------------------

_LONGEST_FIRST = (
    "test_bench_smoke.py",
    "test_reliability.py",
    "test_bench_warmstart.py",
    "test_trading_sim.py",
    "test_sim_world.py",
    "test_fleet_member.py",
    "test_fleet_processes.py",
    "test_grpc_faults.py",
    "test_bench_idle.py",
    "test_manager_sim.py",
    "test_web_api.py",
    "test_bench_trading.py",
    "test_demo.py",
    "test_web_browser.py",
    "test_freshness_sim.py",
    "test_wheel_install.py",
    "test_bench_freshness.py",
    "test_warmstart.py",
    "test_accounts_sim.py",
    "test_bench_grpc.py",
    "test_transport_sim.py",
    "test_failover_sim.py",
    "test_fleet_trading.py",
)
"""The files that take longest on a loaded worker, longest first (measured 2026-12-07): started
first, so that under xdist the short files fill the other workers meanwhile instead of leaving
one worker a long tail. ``make test`` passes ``--no-loadscope-reorder``: by default xdist sorts
the files by their number of tests, which starts the one-test benchmark files last."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return _LONGEST_FIRST.index(name) if name in _LONGEST_FIRST else len(_LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file stays


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


CHAIN = Chain(
    "mainnet", "11111111111111111111111111111111", "dRiftyHA39MWEi3m9aunc5MzRF1JYuBsbn6VPcn33UH"
)
"""The chain of the fleet tests that run no upstream (FleetMember, the wire format)."""


async def last_values(store: FleetStore) -> tuple[list[bytes], list[bytes]]:
    """What ``store`` keeps in Redis: every record, then every confirmation (values too
    large to read left out)."""
    records = [r async for r in store.records() if r is not None]
    return records, [c async for c in store.confirmations() if c is not None]


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
