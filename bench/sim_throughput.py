"""Benchmark the simulator: getMultipleAccounts(100 keys) per second on loopback, transactions
from ``sendTransaction`` to a status in ``getSignatureStatuses`` per second, and its RSS.

Starts ``driftshare sim`` in a subprocess (so client and server each get a core), finds the
perp market accounts with a ``getProgramAccounts`` as driftpy does, then hammers them from
this process with a persistent aiohttp session. For transactions, each worker has its own
airdropped wallet and sends signed System transfers (with preflight, as clients do by
default), polling ``getSignatureStatuses`` until each has a status. Run::

    .venv/bin/python -m bench.sim_throughput --out sim.json

A standalone measurement of the simulator, not a section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]
from driftpy.constants.config import DRIFT_PROGRAM_ID
from solders.hash import Hash
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from bench._harness import percentiles

PERP_MARKET_DISCRIMINATOR_B58 = "2pTyMkwXuti"
"""Base58 of the PerpMarket account discriminator, the filter driftpy uses."""
VERIFY_EVERY = 50
"""Parse and check one answer in this many; parsing every 100-account answer would make
the benchmark measure this client's JSON decoder instead of the simulator."""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--markets", type=int, default=100)
    p.add_argument("--keys", type=int, default=100, help="accounts per getMultipleAccounts")
    p.add_argument("--seconds", type=float, default=10.0, help="measured duration")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--tx-seconds", type=float, default=10.0, help="measured transaction time")
    p.add_argument("--tick-s", type=float, default=0.4, help="simulator slot time")
    p.add_argument("--out", type=Path, required=True, help="JSON results file")
    return p.parse_args(argv)


def _start_simulator(markets: int, tick_s: float) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "driftshare", "sim", "--port", "0"]
    command += ["--markets", str(markets), "--tick-s", str(tick_s)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ready = proc.stdout.readline()
    if not ready.startswith("driftshare sim ready:"):
        proc.kill()
        raise SystemExit(f"simulator did not start: {ready!r}")
    fields = dict(item.split("=", 1) for item in ready.split()[3:])
    return proc, fields["http"]


async def _perp_market_keys(session: aiohttp.ClientSession, url: str) -> list[str]:
    config = {
        "encoding": "base64",
        "dataSlice": {"offset": 0, "length": 0},
        "filters": [{"memcmp": {"offset": 0, "bytes": PERP_MARKET_DISCRIMINATOR_B58}}],
    }
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "getProgramAccounts",
        "params": [str(DRIFT_PROGRAM_ID), config],
    }
    async with session.post(url, json=body) as response:
        answer = await response.json()
    return [entry["pubkey"] for entry in answer["result"]]


async def _load(
    session: aiohttp.ClientSession, url: str, keys: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "getMultipleAccounts",
            "params": [keys, {"encoding": "base64", "commitment": "confirmed"}],
        }
    ).encode()
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    sizes: list[int] = []
    errors = 0
    done = 0

    async def worker(window: _Window) -> None:
        nonlocal errors, done
        while True:
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                raw = await response.read()
            if not window.measuring:
                continue
            if response.status != 200:
                errors += 1
                continue
            done += 1
            latencies.append(time.perf_counter() - started)
            sizes.append(len(raw))
            if done % VERIFY_EVERY == 0:
                values = json.loads(raw)["result"]["value"]
                if len(values) != len(keys) or any(v is None for v in values):
                    errors += 1

    elapsed = await _measure(worker, args.concurrency, args.warmup, args.seconds)
    latency = percentiles(latencies)
    return {
        "requests": done,
        "errors": errors,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(done / elapsed, 1),
        "accounts_per_s": round(done * len(keys) / elapsed, 1),
        "mb_per_s": round(sum(sizes) / elapsed / 1e6, 1),
        "response_bytes": int(statistics.mean(sizes)) if sizes else 0,
        "latency_p50_ms": round(latency["p50"] * 1000, 2),
        "latency_p99_ms": round(latency["p99"] * 1000, 2),
    }


class _Window:
    """Whether workers are inside the measured window (warm-up and wind-down are not)."""

    measuring = False


async def _measure(
    worker: Callable[[_Window], Coroutine[Any, Any, None]],
    concurrency: int,
    warmup: float,
    seconds: float,
) -> float:
    """Run ``concurrency`` workers for a warm-up, then a measured window; its length."""
    window = _Window()
    tasks = [asyncio.create_task(worker(window)) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    window.measuring = True
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    window.measuring = False
    elapsed = time.perf_counter() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return elapsed


async def _call(session: aiohttp.ClientSession, url: str, method: str, params: list[Any]) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    async with session.post(url, json=body) as response:
        answer = await response.json()
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


async def _tx_load(
    session: aiohttp.ClientSession, url: str, args: argparse.Namespace
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    destination = Pubkey.new_unique()

    async def worker(window: _Window) -> None:
        nonlocal errors
        wallet = Keypair()
        await _call(session, url, "requestAirdrop", [str(wallet.pubkey()), 10**12])
        latest = await _call(session, url, "getLatestBlockhash", [])
        blockhash = Hash.from_string(latest["value"]["blockhash"])
        lamports = 0
        while True:
            lamports += 1  # a new amount each time, so a new signature
            ix = transfer(
                TransferParams(
                    from_pubkey=wallet.pubkey(), to_pubkey=destination, lamports=lamports
                )
            )
            tx = Transaction.new_signed_with_payer([ix], wallet.pubkey(), [wallet], blockhash)
            wire = base64.b64encode(bytes(tx)).decode()
            started = time.perf_counter()
            try:
                signature = await _call(
                    session, url, "sendTransaction", [wire, {"encoding": "base64"}]
                )
                while True:
                    statuses = await _call(session, url, "getSignatureStatuses", [[signature]])
                    if statuses["value"][0] is not None:
                        break
            except RuntimeError:
                if window.measuring:
                    errors += 1
                continue
            if window.measuring:
                latencies.append(time.perf_counter() - started)

    elapsed = await _measure(worker, args.concurrency, args.warmup, args.tx_seconds)
    latency = percentiles(latencies)
    return {
        "tx_landed": len(latencies),
        "tx_errors": errors,
        "tx_per_s": round(len(latencies) / elapsed, 1),
        "tx_latency_p50_ms": round(latency["p50"] * 1000, 2),
        "tx_latency_p99_ms": round(latency["p99"] * 1000, 2),
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    proc, url = _start_simulator(args.markets, args.tick_s)
    server = psutil.Process(proc.pid)
    try:
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            markets = await _perp_market_keys(session, url)
            if len(markets) < args.keys:
                raise SystemExit(f"simulator serves {len(markets)} perp markets, need {args.keys}")
            rss_idle = server.memory_info().rss
            load = await _load(session, url, markets[: args.keys], args)
            rss_loaded = server.memory_info().rss
            transactions = await _tx_load(session, url, args)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {
        "markets": args.markets,
        "keys_per_request": args.keys,
        "concurrency": args.concurrency,
        "tick_s": args.tick_s,
        "cpu_count": psutil.cpu_count(),
        **load,
        "rss_idle_mb": round(rss_idle / 2**20, 1),
        "rss_after_load_mb": round(rss_loaded / 2**20, 1),
        **transactions,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    results = asyncio.run(_run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print("| metric | value |\n|---|---|")
    for key, value in results.items():
        print(f"| {key} | {value} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
