"""Trading: the shared client's transaction path vs one private DriftClient per engine.

N engines (sub-accounts 0 to N-1 of one wallet) each place a resting limit order and cancel
it, once a second, for a while. **shared** is ``DriftAdapter()`` on one shared client;
**private** is one driftpy ``DriftClient`` per engine as driftpy builds it (websocket
subscription, ``StandardTxSender``), calling ``place_perp_order`` and
``cancel_order_by_user_id`` itself. Each measurement runs in a fresh worker process
(:mod:`bench.trading.worker`) against a simulator in its own process.
"""

from __future__ import annotations

import json
from typing import Any

from bench import BenchError, Context
from bench._harness import simulator, spawn_worker

__all__ = ["TITLE", "run"]

TITLE = "Trading: one transaction path vs one DriftClient per engine"

_FULL = {"engines": (1, 4, 16), "duration_s": 20.0}
_QUICK = {"engines": (1, 2), "duration_s": 4.0}
_TARGET_REQUESTS_PER_TX = 1.2


def _measure(url: str, mode: str, engines: int, duration_s: float) -> dict[str, Any]:
    params = {"mode": mode, "engines": engines, "duration_s": duration_s, "url": url}
    return spawn_worker({"kind": f"trading-{mode}", **params}, module="bench.trading.worker")


def run(ctx: Context) -> str:
    sizes = _QUICK if ctx.quick else _FULL
    duration = float(sizes["duration_s"])  # type: ignore[arg-type]
    results: list[dict[str, Any]] = []
    for engines in sizes["engines"]:  # type: ignore[attr-defined]
        for mode in ("shared", "private"):
            # A fresh simulator per run: its counters and chain belong to that run alone.
            with simulator(markets=2) as sim:
                result = _measure(sim.http_url, mode, engines, duration)
            results.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "samples"}), flush=True)
    ctx.write_json({"duration_s": duration, "results": results})
    return _report(results, duration)


def _row(r: dict[str, Any]) -> str:
    c, read = r["order_to_confirmed"], r["confirmed_to_read"]
    per_tx = r["ws_subscriptions"] / max(1, r["transactions"])
    return (
        f"| {r['engines']} | {r['mode']} | {r['transactions']} | {r['failed']} | "
        f"{r['requests']} | {r['requests_per_tx']:.2f} | {r['calls_per_tx']:.2f} | "
        f"{r['ws_subscriptions']} | {per_tx:.2f} | {r['websockets']} | "
        f"{c['p50'] * 1000:.0f} / {c['p99'] * 1000:.0f} | "
        f"{read['p50'] * 1000:.0f} / {read['p99'] * 1000:.0f} |"
    )


def _report(results: list[dict[str, Any]], duration: float) -> str:
    if not results:
        raise BenchError("no trading measurement")
    shared = [r for r in results if r["mode"] == "shared"]
    lines = [
        f"Each engine places a resting limit order and cancels it every second for "
        f"{duration:.0f} s (every place and cancel is one transaction). The simulator counts "
        "the HTTP requests, the WebSocket subscribe messages and the WebSockets open while the "
        "engines trade (set-up excluded); a simulated slot lasts 0.4 s and a transaction is "
        "confirmed one slot after it lands. **Order to confirmed**: from the call to the "
        "chain's confirmation (shared: the result's `elapsed_s`; private: driftpy's "
        "`place_perp_order` returning). **Confirmed to read**: from then until the engine's "
        "own read (shared: `get_open_orders()`, private: its `DriftUser`) shows the order. "
        "The shared client runs with `DRIFT_RPC_RPS=100` (16 engines send 32 transactions a "
        "second) and the other settings at their defaults.",
        "",
        "| engines | mode | transactions | not confirmed | HTTP requests | requests / tx | "
        "JSON-RPC calls / tx | WebSocket subscriptions | subscriptions / tx | WebSockets | "
        "order to confirmed p50 / p99 ms | confirmed to read p50 / p99 ms |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(_row(r) for r in results),
        "",
        "| figure | target | measured | verdict |",
        "|---|---|---|---|",
        *(
            f"| shared HTTP requests per transaction, {r['engines']} engine(s) | "
            f"≤ {_TARGET_REQUESTS_PER_TX} | {r['requests_per_tx']:.2f} | "
            f"{'met' if r['requests_per_tx'] <= _TARGET_REQUESTS_PER_TX else '**missed**'} |"
            for r in shared
        ),
        "",
        "**HTTP requests** is what the simulator received over HTTP (a JSON-RPC batch is "
        "one); **JSON-RPC calls** counts each call of a batch, as providers that bill per "
        "call do; **WebSocket subscriptions** are the subscribe messages sent while trading "
        "(a message on a socket, not an HTTP request, but a call a provider may count).",
        "",
        "The shared path confirms each transaction by `signatureSubscribe` (commitment "
        "`confirmed`) on the WebSocket the shared client already holds for its User accounts "
        "and oracles: no socket of its own (the WebSockets column does not move with the "
        "engines), one subscribe message per transaction, and the node's one notification "
        "(its `err` checked) ends the subscription. The batched `getSignatureStatuses` poll "
        "stays as the safety net: every `DRIFT_TX_STATUS_INTERVAL_S` (0.8 s) for a signature "
        "no live subscription covers (the socket is down or dropped, the subscription was "
        "refused), every `DRIFT_TX_STATUS_SAFETY_S` (10 s) for one that is covered, and once "
        "more, searching the node's history, before a write ends `unknown` or is signed "
        "again. The blockhash and block height (every 5 s) and the fee estimate (every 5 s) "
        "ride in the JSON-RPC batch of the next send or poll that is due to go anyway, so "
        "they add calls, not HTTP requests. So a shared transaction costs one HTTP request "
        "(its send) and one subscribe message, whatever the number of engines; the rest is "
        "fixed per interval. " + " ".join(_breakdown(r) for r in shared),
        "",
        "Private clients confirm by polling: driftpy's `StandardTxSender` asks "
        "`getSignatureStatuses` for its own transaction, and each send fetches a blockhash "
        "and, to build it, two lookup tables (`getAccountInfo`). The latencies are not the "
        "same measure: driftpy returns once the transaction is *processed* (its default "
        "`TxOpts`), the shared path once it is *confirmed* (a slot later) and notified. A "
        "shared write also returns only once the engine's reads reflect it. Latencies are "
        "wall times on a shared 2-core machine (see the load average above).",
    ]
    return "\n".join(lines)


def _breakdown(r: dict[str, Any]) -> str:
    """Where one shared run's HTTP requests went, measured."""
    by_method = r["by_method"]
    sends = by_method.get("sendTransaction", 0)
    polls = by_method.get("getSignatureStatuses", 0)
    confirmations = by_method.get("getMultipleAccounts", 0)
    refreshes = by_method.get("getLatestBlockhash", 0)
    fees = by_method.get("getRecentPrioritizationFees", 0)
    alone = r["requests"] - sends - polls - confirmations
    return (
        f"With {r['engines']} engine(s): {r['requests']} requests for {r['transactions']} "
        f"transactions, {sends} of them sends, {polls} status polls, {confirmations} "
        f"account confirmation reads (`getMultipleAccounts`, the market data's freshness "
        f"check) and {alone} other; the {refreshes} blockhash and {fees} fee refreshes rode "
        f"in them ({r['calls'] - r['requests']} calls more than requests)."
    )
