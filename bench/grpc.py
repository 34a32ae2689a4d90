"""gRPC subscriptions: write-to-read latency in every subscription mode, and the connections
and streams of driftshare's one Geyser stream against driftpy's own gRPC mode.

A section of BENCHMARKS.md (see ``bench/__init__.py``): ``python -m bench --only grpc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from typing import Any

import grpc
from driftpy.account_subscription_config import AccountSubscriptionConfig
from driftpy.drift_client import DriftClient
from driftpy.types import GrpcConfig
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair

from bench import BenchError, Context
from bench._harness import SimProcess, grpc_test_tls, percentiles, simulator
from bench._processes import TlsFiles
from bench.freshness import Stats, shared_client, write_remote
from driftshare.manager import DriftClientManager
from driftshare.sim import Simulator

TITLE = "gRPC subscriptions"

MODES = ("grpc", "websocket", "polling")
_MARKET = 0
_TOKEN = "bench-x-token"
"""A made-up token: the simulator checks it like a provider would."""
_ENGINES = 4
_SETTLE_S = 1.0
"""driftpy's streams open in the background: counted once none opened for this long."""


async def _shared(mode: str, http_url: str, grpc_url: str, stats: Stats) -> Any:
    """The shared client in ``mode`` at the simulator, once every account is subscribed."""
    settings = {"subscription": mode, "grpc_url": grpc_url, "grpc_token": _TOKEN}
    shared = await shared_client(http_url, stats, **settings)
    if shared.mode != mode:
        raise BenchError(f"grpc: the shared client is not in {mode} mode")
    return shared


async def _write_to_read_in(mode: str, chain: SimProcess, samples: int) -> list[float]:
    """Seconds from each oracle write on the simulator (its own process) to a read of it."""
    grpc_url = chain.grpc_url
    if grpc_url is None:
        raise BenchError("grpc: the simulator serves no gRPC")

    async def subscribe(http_url: str, stats: Stats) -> Any:
        return await _shared(mode, http_url, grpc_url, stats)

    return (await write_remote(chain.http_url, samples, subscribe)).from_write


async def _driftshare_counts(sim: Simulator) -> dict[str, int]:
    """Connections and streams of the shared client in grpc mode with four engines."""

    async def stats() -> dict[str, Any]:
        return sim.stats()

    shared = await _shared("grpc", sim.http_url, sim.grpc_url, stats)
    for _ in range(_ENGINES - 1):
        await DriftClientManager.get_client()
    counted = sim.stats()["grpc"]
    counts = {
        "accounts": len(shared.ledger),
        "connections": counted["connections"]["total"],
        "streams": counted["streams"]["open"],
    }
    await DriftClientManager.shutdown()
    return counts


async def _driftpy_counts(sim: Simulator) -> dict[str, int]:
    """Connections and streams of one DriftClient in driftpy's own grpc mode."""
    connection = AsyncClient(sim.http_url)
    config = AccountSubscriptionConfig(
        "grpc", grpc_config=GrpcConfig(endpoint=sim.grpc_address, token=_TOKEN)
    )
    client = DriftClient(connection, Keypair(), env="mainnet", account_subscription=config)
    # driftpy 0.8.89's gRPC subscriber reads and fills ``oracle_subscribers`` without ever
    # creating it (AttributeError at the first oracle); given the empty dict it subscribes.
    client.account_subscriber.oracle_subscribers = {}
    try:
        await asyncio.wait_for(client.subscribe(), 120)
        opened = -1
        while sim.stats()["grpc"]["streams"]["open"] != opened:
            opened = sim.stats()["grpc"]["streams"]["open"]
            await asyncio.sleep(_SETTLE_S)
        counted = sim.stats()["grpc"]
        subscriber = client.account_subscriber
        return {
            "accounts": 1
            + len(subscriber.perp_market_indexes)
            + len(subscriber.spot_market_indexes)
            + len(subscriber.oracle_subscribers),
            "connections": counted["connections"]["total"],
            "streams": counted["streams"]["open"],
        }
    finally:
        await client.unsubscribe()
        await connection.close()


def _driftpy_leftovers(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # driftpy's unsubscribe leaves some of its streams' tasks running: they fail when the
    # simulator stops, and nobody retrieves their error.
    if not isinstance(context.get("exception"), grpc.aio.AioRpcError):
        loop.default_exception_handler(context)


async def _counts(markets: int, tls: TlsFiles) -> dict[str, dict[str, int]]:
    asyncio.get_running_loop().set_exception_handler(_driftpy_leftovers)
    results = {}
    for who, count in (("driftshare", _driftshare_counts), ("driftpy", _driftpy_counts)):
        # driftpy prints a line for every update it skips and every stream that ends.
        with contextlib.redirect_stdout(io.StringIO()):
            async with Simulator(
                markets=markets,
                tick_s=3600.0,
                grpc_port=0,
                grpc_token=_TOKEN,
                grpc_tls_cert=tls.cert,
                grpc_tls_key=tls.key,
            ) as sim:
                results[who] = await count(sim)
    return results


def run(ctx: Context) -> str:
    """Measure (small sizes when ``ctx.quick``), store the raw numbers, return the markdown."""
    samples = 5 if ctx.quick else 200
    latencies: dict[str, list[float]] = {}
    with simulator(markets=30, tick_s=3600.0, grpc=True) as chain:
        for mode in MODES:
            latencies[mode] = asyncio.run(_write_to_read_in(mode, chain, samples))
    tls = grpc_test_tls()
    counts = {m: asyncio.run(_counts(m, tls)) for m in ((10,) if ctx.quick else (30, 100))}
    ms = {mode: percentiles([v * 1000 for v in values]) for mode, values in latencies.items()}
    ctx.write_json(
        {
            "write_to_read_ms": {m: [v * 1000 for v in vs] for m, vs in latencies.items()},
            "connections_and_streams": {str(m): c for m, c in counts.items()},
        }
    )
    lines = [
        "### Write to read, by subscription mode",
        "",
        "The simulator in its own process (30 perp markets, no slot ticking meanwhile),",
        "serving Yellowstone Geyser gRPC beside HTTP and WebSocket; the shared client with",
        "default settings in each mode in turn, on the same simulator. Oracle writes through",
        "`POST /_sim/oracle`, 0.01% up or down, each 10 ms after the previous one was read;",
        "one engine reads `get_funding_rate` of that market in a loop, and its first read",
        "returning the new price is timed from the write (the simulator's",
        "`time.monotonic()`), as in *Freshness* above. Polling reads every",
        "`DRIFT_POLL_INTERVAL_S` (1 s).",
        "",
        "| mode | samples | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
    ]
    for mode in MODES:
        m = ms[mode]
        lines.append(
            f"| {mode} | {m['count']:.0f} | {m['p50']:.3f} | {m['p99']:.3f} | {m['max']:.3f} |"
        )
    lines += [
        "",
        "### Connections and streams",
        "",
        "What the simulator's Geyser server counted (TLS, with an `x-token`): driftshare's",
        f"shared client in grpc mode with {_ENGINES} engines, against one DriftClient in",
        "driftpy's own grpc mode (`AccountSubscriptionConfig('grpc')`), each on a fresh",
        "simulator. *Connections*: distinct client addresses (one per HTTP/2 connection);",
        "*streams*: `Subscribe` streams open once subscribed; *accounts*: the accounts",
        "subscribed (driftpy: the State, each perp and spot market, each oracle; its two",
        "market maps add a program stream each).",
        "",
        "| perp markets | client | accounts | connections | streams |",
        "|---|---|---|---|---|",
    ]
    for markets, by_client in counts.items():
        for who, c in by_client.items():
            lines.append(
                f"| {markets} | {who} | {c['accounts']} | {c['connections']} | {c['streams']} |"
            )
    lines += [
        "",
        "driftpy 0.8.89's gRPC mode opens a channel and a stream per account (and fails at its",
        "first oracle unless given the `oracle_subscribers` dict it never creates, which this",
        "bench does); driftshare's grpc mode carries every account on one stream, whatever",
        "the number of engines and markets. Polling's write-to-read is its full interval here:",
        "each write follows the previous read, so it lands just after a poll.",
    ]
    return "\n".join(lines) + "\n"
