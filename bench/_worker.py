"""One measurement in a fresh process: ``python -m bench._worker '<json>'``.

A fresh process per measurement keeps its RSS, caches and the manager's state clean. The
JSON parameters name the ``kind`` (engines, latency, cold, stampede, idle) and its settings; the
result is one JSON object on the last stdout line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import sys
import time
from array import array
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import httpx
import psutil  # type: ignore[import-untyped]
from driftpy.account_subscription_config import AccountSubscriptionConfig
from driftpy.drift_client import DriftClient
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair

from bench._harness import counted, percentiles
from driftshare._data.discovery import discover_markets
from driftshare._data.ledger import AccountLedger
from driftshare._data.marketdata import (
    ClientSource,
    MarketDataReader,
    MarketSource,
    newest_data_slot,
)
from driftshare._data.polling_subscription import PollingSubscriber, ResilientLoader
from driftshare._data.tap import AccountTap
from driftshare.adapter import DriftAdapter
from driftshare.config import Settings
from driftshare.manager import DriftClientManager

__all__ = ["main"]

_ROUND_S = 0.1
"""Each engine reads the funding of every market once per round."""
_LAG_SAMPLE_S = 0.5
_DISCONNECT_TIMEOUT_S = 30.0


class _Engine(Protocol):
    async def connect(self) -> bool: ...

    async def get_funding_rate(self, market: str | int) -> dict[str, Any] | None: ...

    async def disconnect(self) -> None: ...


class _LegacyPollingEngine:
    """The legacy path in polling mode: one private connection, DriftClient and poller.

    DriftAdapter(use_singleton=False) only subscribes by websocket; this is its polling
    twin, built from the same parts, for the polling column of the RPC-cost case.
    """

    def __init__(self, url: str, settings: Settings) -> None:
        self.settings = settings
        # A plain solana-py client, as every legacy engine had: no shared transport.
        self.connection = AsyncClient(url, commitment=Confirmed, timeout=settings.request_timeout_s)
        self.client = DriftClient(
            self.connection,
            Keypair(),
            env="mainnet",
            account_subscription=AccountSubscriptionConfig("websocket", commitment=Confirmed),
            perp_market_indexes=[],
            spot_market_indexes=[],
            oracle_infos=[],
        )
        self.subscriber: PollingSubscriber | None = None
        self.ledger = AccountLedger()
        self.reader = MarketDataReader(self._source, settings=settings)

    async def _source(self) -> MarketSource | None:
        return None if self.subscriber is None else ClientSource(self.client, self.ledger)

    async def connect(self) -> bool:
        try:
            discovery = await discover_markets(self.client.program, self.settings.perp_markets)
            loader = ResilientLoader(self.connection, Confirmed, self.settings.poll_interval_s)
            # Each poll confirms the accounts it reads, so values carry their real age.
            loader.attach(AccountTap(self.ledger, discovery.records))
            subscriber = PollingSubscriber(self.client.program, loader, discovery)
            await subscriber.subscribe()
        except Exception as exc:  # the engine sees a failed connect, as with the adapter
            logging.getLogger(__name__).warning("legacy polling connect failed: %r", exc)
            return False
        self.client.account_subscriber = self.subscriber = subscriber
        return True

    async def get_funding_rate(self, market: str | int) -> dict[str, Any] | None:
        rate = await self.reader.get_funding_rate(market)
        return None if rate is None else rate.to_dict()

    async def disconnect(self) -> None:
        subscriber, self.subscriber = self.subscriber, None
        if subscriber is not None:
            with suppress(Exception):
                await subscriber.unsubscribe()
            task = subscriber.bulk_account_loader.task
            if task is not None:
                task.cancel()
        with suppress(Exception):
            await self.connection.close()


def _engine_client(engine: _Engine) -> Any:
    """The DriftClient a legacy engine reads from, or None."""
    if isinstance(engine, _LegacyPollingEngine):
        return engine.client
    # DriftAdapter exposes no client; the benchmark looks inside to measure data age.
    private = getattr(engine, "_private", None)
    return None if private is None else private.client


def _make_engines(params: dict[str, Any], settings: Settings) -> list[_Engine]:
    count = int(params["engines"])
    if params["path"] == "shared":
        return [DriftAdapter(use_singleton=True) for _ in range(count)]
    if params["mode"] == "polling":
        return [_LegacyPollingEngine(params["url"], settings) for _ in range(count)]
    return [DriftAdapter(use_singleton=False) for _ in range(count)]


@dataclass
class _Tally:
    reads: int = 0
    errors: int = 0
    ages: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)


async def _read_rounds(engine: _Engine, markets: int, deadline: float, tally: _Tally) -> None:
    loop = asyncio.get_running_loop()
    next_round = loop.time()
    while next_round < deadline:
        for index in range(markets):
            if loop.time() >= deadline:
                # A read can wait on a reconnect; the window must end all the same.
                return
            rate = await engine.get_funding_rate(index)
            tally.reads += 1
            if rate is None:
                tally.errors += 1
            elif index == 0:
                # One market per round keeps the sample (and its memory) small.
                tally.ages.append(time.time() - float(rate["timestamp"]))
        next_round += _ROUND_S
        await asyncio.sleep(max(0.0, next_round - loop.time()))


async def _sample_lag(
    engines: list[_Engine], params: dict[str, Any], deadline: float, tally: _Tally
) -> None:
    """Every half second: how many seconds the engines' data is behind the chain."""
    loop = asyncio.get_running_loop()
    shared = params["path"] == "shared"
    async with httpx.AsyncClient(timeout=10) as http:
        while loop.time() < deadline:
            await asyncio.sleep(_LAG_SAMPLE_S)
            try:
                chain_slot = (await http.get(f"{params['url']}/_sim/stats")).json()["slot"]
            except httpx.HTTPError:
                continue
            if shared:
                state = DriftClientManager.shared_state()
                clients = [None if state is None else state.client]
            else:
                clients = [_engine_client(engine) for engine in engines]
            for client in clients:
                slot = None if client is None else newest_data_slot(client.account_subscriber)
                if slot is not None:
                    tally.lags.append(max(0, chain_slot - slot) * float(params["tick_s"]))


async def _engines(params: dict[str, Any]) -> dict[str, Any]:
    """N engines connect, then each reads every market's funding every 100 ms for a window."""
    settings = DriftClientManager.configure(rpc_url=params["url"], subscription=params["mode"])
    engines = _make_engines(params, settings)
    loop = asyncio.get_running_loop()
    started = loop.time()
    connected = await asyncio.gather(*(engine.connect() for engine in engines))
    connect_s = loop.time() - started
    tally = _Tally()
    deadline = loop.time() + float(params["window_s"])
    await asyncio.gather(
        _sample_lag(engines, params, deadline, tally),
        *(_read_rounds(engine, int(params["markets"]), deadline, tally) for engine in engines),
    )
    elapsed = loop.time() - started
    rss = psutil.Process().memory_info().rss
    shared_rpc = DriftClientManager.stats().get("rpc", {}) if params["path"] == "shared" else {}
    with suppress(TimeoutError):
        async with asyncio.timeout(_DISCONNECT_TIMEOUT_S):
            await asyncio.gather(*(engine.disconnect() for engine in engines))
    await DriftClientManager.shutdown()
    return {
        "connect_s": connect_s,
        "connect_failures": connected.count(False),
        "elapsed_s": elapsed,
        "reads": tally.reads,
        "read_errors": tally.errors,
        "reads_per_s": tally.reads / max(elapsed - connect_s, 1e-9),
        "value_age_s": percentiles(tally.ages),
        "data_lag_s": percentiles(tally.lags),
        "rss_mib": rss / 2**20,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "client_rpc": {
            key: shared_rpc.get(key, 0)
            for key in ("requests", "retries", "rate_limited", "failures")
        },
    }


async def _time_calls(call: Callable[[int], Awaitable[Any]], calls: int, markets: int) -> Any:
    """Latencies in µs of ``calls`` calls of ``call(market_index)``; they must answer."""
    samples = array("q")
    clock = time.perf_counter_ns
    for k in range(calls):
        begin = clock()
        value = await call(k % markets)
        samples.append(clock() - begin)
        if not value:
            raise RuntimeError(f"a read answered {value!r}: not connected")
    return percentiles([ns / 1000 for ns in samples])


async def _latency(params: dict[str, Any]) -> dict[str, Any]:
    """Read latency of one API; ``miss`` sets the TTLs to 0 so that every read computes."""
    ttl: dict[str, Any] = (
        {"cache_ttl_funding": 0.0, "cache_ttl_markets": 0.0} if params["miss"] else {}
    )
    DriftClientManager.configure(None, rpc_url=params["url"], **ttl)
    markets = int(params["markets"])
    funding: Callable[[int], Awaitable[Any]]
    all_markets: Callable[[int], Awaitable[Any]]
    adapter: DriftAdapter | None = None
    if params["api"] == "manager":
        if await DriftClientManager.get_client() is None:
            raise RuntimeError("the shared client did not start")

        async def funding(index: int) -> Any:
            return await DriftClientManager.get_funding_rate(index)

        async def all_markets(_: int) -> Any:
            return await DriftClientManager.get_all_perp_markets()

    else:
        adapter = DriftAdapter(use_singleton=params["path"] == "shared")
        if not await adapter.connect():
            raise RuntimeError("the adapter did not connect")
        funding = adapter.get_funding_rate

        async def all_markets(_: int) -> Any:
            assert adapter is not None
            return await adapter.get_all_perp_markets()

    # One untimed round fills the cache (and the resolver) for the hit runs.
    await _time_calls(funding, markets, markets)
    await _time_calls(all_markets, 1, markets)
    result = {
        "get_funding_rate": await _time_calls(funding, int(params["calls_funding"]), markets),
        "get_all_perp_markets": await _time_calls(
            all_markets, int(params["calls_markets"]), markets
        ),
    }
    if adapter is not None:
        await adapter.disconnect()
    await DriftClientManager.shutdown()
    return result


async def _cold(params: dict[str, Any]) -> dict[str, Any]:
    """Connect and read one funding rate; times in unix seconds, for the parent to compare."""
    DriftClientManager.configure(rpc_url=params["url"])
    imported_at = time.time()
    began = time.perf_counter()
    if params["path"] == "shared":
        ready = await DriftClientManager.get_client() is not None
        adapter = DriftAdapter()
    else:
        adapter = DriftAdapter(use_singleton=False)
        ready = await adapter.connect()
    ready_s = time.perf_counter() - began
    rate = await adapter.get_funding_rate(0)
    first_rate_at = time.time()
    await adapter.disconnect()
    if params["path"] == "shared":
        await DriftClientManager.release_client()
    await DriftClientManager.shutdown()
    return {
        "ready": ready,
        "got_rate": rate is not None,
        "imported_at": imported_at,
        "first_rate_at": first_rate_at,
        "client_ready_s": ready_s,
    }


async def _stampede(params: dict[str, Any]) -> dict[str, Any]:
    """``callers`` engines ask for funding at the same moment, before anything is connected."""
    DriftClientManager.configure(rpc_url=params["url"])
    shared = params["path"] == "shared"
    adapters = [DriftAdapter(use_singleton=shared) for _ in range(int(params["callers"]))]
    began = time.perf_counter()
    rates = await asyncio.gather(*(adapter.get_funding_rate(0) for adapter in adapters))
    served_s = time.perf_counter() - began
    clients = (
        DriftClientManager.stats()["initializations"]
        if shared
        else sum(adapter.is_connected for adapter in adapters)
    )
    with suppress(TimeoutError):
        async with asyncio.timeout(_DISCONNECT_TIMEOUT_S):
            await asyncio.gather(*(adapter.disconnect() for adapter in adapters))
    await DriftClientManager.shutdown()
    return {
        "callers": len(adapters),
        "served": sum(rate is not None for rate in rates),
        "all_served_s": served_s,
        "clients_started": clients,
    }


async def _idle(params: dict[str, Any]) -> dict[str, Any]:
    """Connect, read nothing, and measure this process's CPU over ``window_s`` seconds after
    ``warmup_s``: a bare driftpy WebSocket client, or the shared client holding one reference."""
    if params["client"] == "driftpy":
        connection = AsyncClient(params["url"], commitment=Confirmed)
        client = DriftClient(
            connection,
            Keypair(),
            env="mainnet",
            account_subscription=AccountSubscriptionConfig("websocket", commitment=Confirmed),
        )
        await client.subscribe()
    else:
        DriftClientManager.configure(rpc_url=params["url"])
        if await DriftClientManager.get_client() is None:
            raise RuntimeError("the shared client did not start")
    await asyncio.sleep(params["warmup_s"])
    cpu_before, wall_before = _cpu_s(), time.perf_counter()
    await asyncio.sleep(params["window_s"])
    cpu_pct = 100 * (_cpu_s() - cpu_before) / (time.perf_counter() - wall_before)
    if params["client"] == "driftpy":
        await client.unsubscribe()
        await connection.close()
    else:
        await DriftClientManager.shutdown()
    return {"client": params["client"], "cpu_pct": cpu_pct, "window_s": params["window_s"]}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


_KINDS: dict[str, Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]] = {
    "idle": _idle,
    "engines": _engines,
    "latency": _latency,
    "cold": _cold,
    "stampede": _stampede,
}


def _batch(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each run in turn in this process, with what the simulator served during it."""
    return {"results": [counted(partial(_sim_stats, p["url"]), partial(_run, p)) for p in runs]}


def _sim_stats(url: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{url}/_sim/stats", timeout=30).json()
    return answer


def _run(params: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_KINDS[params["kind"]](params))


def main(argv: list[str] | None = None) -> int:
    """Run the measurement described by the JSON argument and print its JSON result; kind
    ``batch`` runs a list of them (``runs``) in this one process."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    try:
        params = json.loads(args[0])
        if params["kind"] == "batch":
            runs = list(params["runs"])
            if not all(run["kind"] in _KINDS for run in runs):
                raise KeyError("kind")
        else:
            kind = _KINDS[params["kind"]]
    except (IndexError, ValueError, KeyError, TypeError):
        print(
            f"usage: python -m bench._worker '<json, kind in {[*_KINDS, 'batch']}>'",
            file=sys.stderr,
        )
        return 2
    result = _batch(runs) if params["kind"] == "batch" else asyncio.run(kind(params))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
