"""The ``driftshare`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65534:
        raise argparse.ArgumentTypeError(f"port must be 0..65534 (P+1 is used too), got {text}")
    return value


def _add_sim(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sim", help="run the local Solana RPC simulator serving Drift accounts")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8899, help="HTTP port; WebSocket is port+1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--accounts", type=Path, action="append", default=[], metavar="PATH",
                   help="replay `solana account --output json` files or folders (repeatable)")
    p.add_argument("--markets", type=int, default=30, help="number of simulated perp markets")
    p.add_argument("--rate-limit", type=_positive_float, default=None, metavar="RPS")
    p.add_argument("--burst", type=int, default=None)
    p.add_argument("--funding-period-s", type=_positive_float, default=60.0)
    p.add_argument("--tick-s", type=_positive_float, default=0.4, help="seconds per slot")
    p.add_argument("--max-ws-per-client", type=int, default=64)
    p.add_argument("--fault", action="append", default=[], metavar="SPEC",
                   help="start with a fault, e.g. fail=429:5, latency=200, stall, down=10")
    p.set_defaults(func=_cmd_sim)


def _cmd_sim(ns: argparse.Namespace) -> int:
    from driftshare.sim import SimConfig, run_simulator

    config = SimConfig(
        host=ns.host,
        port=ns.port,
        seed=ns.seed,
        accounts=list(ns.accounts),
        markets=ns.markets,
        rate_limit=ns.rate_limit,
        burst=ns.burst,
        funding_period_s=ns.funding_period_s,
        tick_s=ns.tick_s,
        max_ws_per_client=ns.max_ws_per_client,
        faults=list(ns.fault),
    )
    asyncio.run(run_simulator(config))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driftshare", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_sim(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if ns.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(ns.func(ns))
    except KeyboardInterrupt:
        return 130
