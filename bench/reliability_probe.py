"""What the reliability suite observes: engines' reads, upstream requests and what is left over.

Four engines each own a :class:`~driftshare.DriftAdapter` and a
:class:`~driftshare.DriftFundingFeed` and read every 100 ms: one market's funding, every perp
market, and the feed's funding of every active market. Each read is judged against the
simulator's ground truth (:mod:`bench.reliability_truth`), never against the library's own age
fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]

from bench.reliability_truth import ChainTruth, account_fingerprint, combined_lag
from driftshare import DriftAdapter, DriftFundingFeed
from driftshare.manager import DriftClientManager

__all__ = [
    "READ_INTERVAL_S",
    "BehindWatch",
    "Engine",
    "LogicalCalls",
    "Resources",
    "Tally",
    "accounts_behind",
    "leftovers",
]

READ_INTERVAL_S = 0.1
_NETWORK = "mainnet"


@dataclass
class Tally:
    """Counts over every read of every engine, and when the last bad one happened."""

    threshold_s: float
    """A read whose data is further behind the chain than this is stale."""
    reads: int = 0
    exceptions: Counter[str] = field(default_factory=Counter)
    none: int = 0
    flagged: int = 0
    unflagged: int = 0
    unmatched: int = 0
    """Reads holding a value the simulator's chain never held (lag unknown)."""
    worst_unflagged_lag_s: float = 0.0
    slowest_call_s: float = 0.0
    last_bad_at: float | None = None
    unflagged_by_kind: Counter[str] = field(default_factory=Counter)
    good_engines: set[int] = field(default_factory=set)
    all_good: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once every engine has had a good read."""
    engines: int = 4

    def note_call(self, seconds: float) -> None:
        self.slowest_call_s = max(self.slowest_call_s, seconds)

    def bad(self, at: float) -> None:
        self.last_bad_at = at

    def judge(self, engine: int, kind: str, flagged: bool, lag: float, at: float) -> None:
        """Count one answered read with ``flagged`` (any part marked stale) and its lag."""
        self.reads += 1
        if math.isinf(lag):
            self.unmatched += 1
        behind = lag > self.threshold_s
        if behind and not flagged:
            self.unflagged += 1
            self.unflagged_by_kind[kind] += 1
            if not math.isinf(lag):
                self.worst_unflagged_lag_s = max(self.worst_unflagged_lag_s, lag)
        elif flagged:
            self.flagged += 1
        if behind or flagged:
            self.bad(at)
        else:
            self.good_engines.add(engine)
            if len(self.good_engines) >= self.engines:
                self.all_good.set()


def _lag_of_parts(
    truths: Sequence[ChainTruth], rows: Sequence[tuple[bool, list[tuple[str, int, Any]]]]
) -> tuple[bool, float]:
    """(any row flagged, worst lag among rows not flagged); a flagged row's lag is forgiven."""
    now = time.monotonic()
    flagged = False
    worst = 0.0
    for stale, parts in rows:
        if stale:
            flagged = True
            continue
        worst = max(worst, combined_lag(truths, parts, now))
    return flagged, worst


class Engine:
    """One engine: a DriftAdapter and a DriftFundingFeed, reading every 100 ms until stopped."""

    def __init__(self, number: int, truths: Sequence[ChainTruth], tally: Tally) -> None:
        self.number = number
        self.truths = truths
        self.tally = tally
        self.adapter = DriftAdapter(_NETWORK)
        self.feed = DriftFundingFeed(self.adapter)
        self.markets = truths[0].indexes
        self.names = truths[0].names

    async def connect(self) -> None:
        started = time.monotonic()
        try:
            await self.adapter.connect()
        except Exception as exc:  # an engine-visible exception is what the suite counts
            self.tally.exceptions[f"connect: {type(exc).__name__}"] += 1
            self.tally.bad(time.monotonic())
        self.tally.note_call(time.monotonic() - started)

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        turn = self.number
        while not stop.is_set():
            due = loop.time() + READ_INTERVAL_S
            market = self.markets[turn % len(self.markets)]
            turn += 1
            await self._read("funding", functools.partial(self.adapter.get_funding_rate, market))
            await self._read("markets", self.adapter.get_all_perp_markets)
            await self._read("feed", self.feed.get_all_funding_rates)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, due - loop.time()))

    async def _read(self, kind: str, call: Callable[[], Awaitable[Any]]) -> None:
        started = time.monotonic()
        try:
            answer = await call()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an engine-visible exception is what the suite counts
            self.tally.exceptions[f"{kind}: {type(exc).__name__}"] += 1
            self.tally.bad(time.monotonic())
            return
        finally:
            self.tally.note_call(time.monotonic() - started)
        if not answer:
            self.tally.none += 1
            self.tally.bad(time.monotonic())
            return
        flagged, lag = _lag_of_parts(self.truths, self._parts(kind, answer))
        self.tally.judge(self.number, kind, flagged, lag, time.monotonic())

    def _parts(self, kind: str, answer: Any) -> list[tuple[bool, list[tuple[str, int, Any]]]]:
        if kind == "funding":
            i = int(answer["market_index"])
            parts = [
                ("oracle", i, answer["oracle_price"]),
                ("next_funding_ts", i, answer["next_funding_ts"]),
            ]
            return [(bool(answer.get("stale")), parts)]
        if kind == "markets":
            return [
                (
                    bool(m.get("stale")),
                    [
                        ("oracle", int(m["market_index"]), m["oracle_price"]),
                        ("rate", int(m["market_index"]), m["funding_rate"]),
                    ],
                )
                for m in answer
            ]
        # {market: FundingInfo}: a feed answer carries a stale flag only if the library gives
        # it one.
        return [
            (
                bool(getattr(info, "stale", False)),
                [("rate_8h", self.names.get(info.market, -1), info.rate_8h)],
            )
            for info in answer.values()
        ]

    async def release(self) -> None:
        try:
            await self.adapter.disconnect()
            await self.feed.close()
        except Exception as exc:  # an engine-visible exception is what the suite counts
            self.tally.exceptions[f"release: {type(exc).__name__}"] += 1


@dataclass
class BehindWatch:
    """The most accounts of the shared client seen behind the chain at once, the worst lag,
    and which accounts were ever behind."""

    truths: Sequence[ChainTruth]
    threshold_s: float
    count: int | None = None
    """None until a sample found a shared client."""
    worst_lag_s: float = 0.0
    accounts: set[str] = field(default_factory=set)

    def sample(self) -> None:
        found = accounts_behind(self.truths, self.threshold_s)
        if found is not None:
            self.count = max(self.count or 0, len(found))
            self.worst_lag_s = max(
                self.worst_lag_s, max((lag for lag in found.values() if lag < math.inf), default=0)
            )
            self.accounts.update(found)


def _held(read: Callable[[int], Any], index: int) -> Any:
    try:
        return read(index)
    except Exception:  # driftpy raises for an account it does not hold
        return None


def accounts_behind(truths: Sequence[ChainTruth], threshold_s: float) -> dict[str, float] | None:
    """The shared client's accounts further behind the chain than ``threshold_s`` (``perp 3``,
    ``oracle 3``) with their lag (``inf``: not held, or a value the chain never held); None
    without a shared client that is up."""
    shared = DriftClientManager.shared_state(_NETWORK)
    if shared is None or not shared.initialized:
        return None
    client = shared.client
    now = time.monotonic()
    lags: dict[str, float] = {}
    for i in truths[0].indexes:
        account = _held(client.get_perp_market_account, i)
        oracle = _held(client.get_oracle_price_data_for_perp_market, i)
        parts = {
            f"perp {i}": None if account is None else ("account", i, account_fingerprint(account)),
            f"oracle {i}": None if oracle is None else ("oracle", i, oracle.price / 1e6),
        }
        for name, part in parts.items():
            lag = math.inf if part is None else combined_lag(truths, [part], now)
            if lag > threshold_s:
                lags[name] = lag
    return lags


class LogicalCalls:
    """Counts HTTP requests handed to httpx for the simulators' ports: the calls the library
    meant to make, before any retry its transport adds underneath ``AsyncClient.send``."""

    def __init__(self) -> None:
        self.ports: set[int] = set()
        self.count = 0
        self.in_flight = 0

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        original = httpx.AsyncClient.send

        async def send(client: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> Any:
            if request.url.port not in self.ports:
                return await original(client, request, **kw)
            self.count += 1
            self.in_flight += 1
            try:
                return await original(client, request, **kw)
            finally:
                self.in_flight -= 1

        httpx.AsyncClient.send = send  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            httpx.AsyncClient.send = original  # type: ignore[method-assign]


def _foreign(task: asyncio.Task[Any]) -> bool:
    """A task of the in-process simulator (its server, its clock): not the library's."""
    code = getattr(task.get_coro(), "cr_code", None)
    filename = getattr(code, "co_filename", "")
    return f"{os.sep}driftshare{os.sep}sim{os.sep}" in filename or "aiohttp" in filename


def _describe(task: asyncio.Task[Any]) -> str:
    name = task.get_name()
    if not name.startswith("Task-"):
        return name
    return str(getattr(task.get_coro(), "__qualname__", name))


@dataclass
class Resources:
    """Descriptors, tasks and sockets to the simulators at one moment."""

    fds: int
    tasks: set[asyncio.Task[Any]]
    sockets: int

    @classmethod
    def take(cls, ports: set[int]) -> Resources:
        process = psutil.Process()
        sockets = sum(
            1 for c in process.connections(kind="inet") if c.raddr and c.raddr.port in ports
        )
        return cls(process.num_fds(), set(asyncio.all_tasks()), sockets)


@dataclass
class Leftovers:
    tasks: list[str]
    sockets: int
    fds: int
    initialized: bool


def _left(baseline: Resources, ports: set[int]) -> Leftovers:
    now = Resources.take(ports)
    current = asyncio.current_task()
    tasks = sorted(
        _describe(t)
        for t in now.tasks - baseline.tasks
        if not t.done() and t is not current and not _foreign(t)
    )
    return Leftovers(
        tasks,
        now.sockets - baseline.sockets,
        now.fds - baseline.fds,
        DriftClientManager.is_initialized(_NETWORK),
    )


async def leftovers(baseline: Resources, ports: set[int], grace_s: float) -> Leftovers:
    """What is still there after release, once closes have had ``grace_s`` to finish."""
    deadline = time.monotonic() + grace_s
    while True:
        left = _left(baseline, ports)
        clean = not (left.tasks or left.sockets > 0 or left.fds > 0 or left.initialized)
        if clean or time.monotonic() >= deadline:
            return left
        await asyncio.sleep(0.05)
