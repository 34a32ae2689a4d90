"""The `driftshare` command: simulator, dashboard, funding table and demo."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "run"]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        if default is None or default is False or default == [] or default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _subcommand(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str
) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=summary, description=summary, formatter_class=_HelpFormatter)
    # SUPPRESS: an unset -v here must not undo a -v given before the subcommand.
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
    )
    return parser


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
    p = _subcommand(sub, "sim", "run the local Solana RPC simulator serving Drift accounts")
    p.add_argument("--host", default="127.0.0.1", help="listen address")
    p.add_argument("--port", type=_port, default=8899, help="HTTP port; WebSocket is port+1")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated world")
    p.add_argument(
        "--accounts",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="replay `solana account --output json` files or folders (repeatable)",
    )
    p.add_argument("--markets", type=int, default=30, help="number of simulated perp markets")
    p.add_argument(
        "--rate-limit",
        type=_positive_float,
        default=None,
        metavar="RPS",
        help="requests per second per client, answered 429 beyond (default: no limit)",
    )
    p.add_argument("--burst", type=int, default=None, help="requests at once within the limit")
    p.add_argument(
        "--funding-period-s",
        type=_positive_float,
        default=60.0,
        help="seconds between funding settlements",
    )
    p.add_argument(
        "--fill-spread-bps",
        type=float,
        default=10.0,
        help="half-spread around the oracle at which Drift orders take (basis points)",
    )
    p.add_argument("--tick-s", type=_positive_float, default=0.4, help="seconds per slot")
    p.add_argument(
        "--max-ws-per-client", type=int, default=64, help="WebSocket connections per client"
    )
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="start with a fault, e.g. fail=429:5, latency=200, stall, down=10",
    )
    p.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        metavar="PORT",
        help="also serve Yellowstone Geyser gRPC on PORT (0: a free port)",
    )
    p.add_argument(
        "--grpc-token",
        default=None,
        metavar="TOKEN",
        help="require this x-token on every gRPC call (or set DRIFT_SIM_GRPC_TOKEN)",
    )
    p.add_argument("--grpc-tls-cert", type=Path, default=None, metavar="PEM")
    p.add_argument("--grpc-tls-key", type=Path, default=None, metavar="PEM")
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
        fill_spread_bps=ns.fill_spread_bps,
        tick_s=ns.tick_s,
        max_ws_per_client=ns.max_ws_per_client,
        faults=list(ns.fault),
        grpc_port=ns.grpc_port,
        grpc_token=ns.grpc_token or os.environ.get("DRIFT_SIM_GRPC_TOKEN"),
        grpc_tls_cert=ns.grpc_tls_cert,
        grpc_tls_key=ns.grpc_tls_key,
    )
    asyncio.run(run_simulator(config))
    return 0


def _add_funding(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _subcommand(sub, "funding", "print the funding rate of every perp market")
    p.add_argument("--json", action="store_true", help="a JSON array of FundingRateData")
    p.add_argument("--market", help="only this market: SOL-PERP, sol or an index")
    p.add_argument("--rpc-url", help="default DRIFT_RPC_URL, else an embedded simulator")
    p.add_argument("--network", choices=["mainnet", "devnet"], help="default DRIFT_NETWORK")
    p.set_defaults(func=_cmd_funding)


def _cmd_funding(ns: argparse.Namespace) -> int:
    return asyncio.run(_funding(ns))


async def _funding(ns: argparse.Namespace) -> int:
    from contextlib import AsyncExitStack

    from driftshare._client.keypair import load_keypair
    from driftshare.config import ConfigError, load_settings
    from driftshare.manager import DriftClientManager
    from driftshare.sim import Simulator

    overrides = {"rpc_url": ns.rpc_url, "network": ns.network}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    try:
        settings = load_settings(**overrides)
        load_keypair(settings)  # a bad DRIFT_KEYPAIR is said now, not as "cannot reach"
    except ConfigError as exc:
        print(f"driftshare funding: {exc}", file=sys.stderr)
        return 2
    async with AsyncExitStack() as stack:
        if settings.rpc_url is None:
            sim = await stack.enter_async_context(Simulator())
            print(
                "driftshare funding: no --rpc-url or DRIFT_RPC_URL; reading the embedded "
                f"simulator at {sim.http_url}",
                file=sys.stderr,
            )
            settings = load_settings(**{**overrides, "rpc_url": sim.http_url})
        DriftClientManager.configure(settings)
        stack.push_async_callback(DriftClientManager.shutdown)
        return await _print_funding(ns)


async def _print_funding(ns: argparse.Namespace) -> int:
    import json

    from driftshare.config import redact_url
    from driftshare.manager import DriftClientManager

    settings = DriftClientManager.settings()
    if await DriftClientManager.get_client() is None:
        url = redact_url(settings.effective_rpc_url())
        print(f"driftshare funding: cannot reach the RPC at {url}", file=sys.stderr)
        return 1
    reader = DriftClientManager.market_data()
    markets = await reader.get_all_perp_markets()
    if ns.market is None:
        rates = await reader.get_all_funding_rates()
    else:
        index = reader.resolver.resolve(ns.market)
        if index is None or index not in {m.market_index for m in markets}:
            known = ", ".join(m.symbol for m in markets)
            print(
                f"driftshare funding: unknown perp market {ns.market!r}; known: {known}",
                file=sys.stderr,
            )
            return 2
        rate = await reader.get_funding_rate(index)
        rates = [] if rate is None else [rate]
    if not rates:
        why = "; ".join(DriftClientManager.stats()["unavailable_markets"].values())
        print(
            f"driftshare funding: no funding data available{f': {why}' if why else ''}",
            file=sys.stderr,
        )
        return 1
    if ns.json:
        print(json.dumps([rate.to_dict() for rate in rates], indent=2))
        return 0
    from datetime import UTC, datetime

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Drift funding ({len(rates)} of {len(markets)} perp markets)")
    table.add_column("Market", no_wrap=True)
    for column in ("8h %", "Annual %", "Pred. 8h %", "Mark", "Oracle", "Next (UTC)"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    for r in rates:
        predicted = r.predicted_rate_hourly
        table.add_row(
            r.market,
            f"{r.rate_8h:.4f}",
            f"{r.rate_annual:.2f}",
            "-" if predicted is None else f"{predicted * 8 * 100:.4f}",
            f"{r.mark_price:,.4f}",
            f"{r.oracle_price:,.4f}",
            datetime.fromtimestamp(r.next_funding_ts, UTC).strftime("%H:%M:%S"),
            r.status + (" (stale)" if r.stale else ""),
        )
    console = Console()
    if not console.is_terminal:
        # Rich assumes 80 columns when piped, which would cut the columns short.
        console.width = 120
    console.print(table)
    return 0


def _rpc_url(text: str) -> str:
    from urllib.parse import urlsplit

    from driftshare.config import redact_url, split_rpc_urls

    urls = split_rpc_urls(text)
    for url in urls or [text]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise argparse.ArgumentTypeError(
                f"must be an http(s) URL or a comma-separated list, got {redact_url(text)!r}"
            )
    return ",".join(urls)


def _engine_names(text: str) -> list[str]:
    from driftshare._serve import parse_engines

    try:
        return parse_engines(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _engine_count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"must be 1..64, got {text}")
    return value


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _subcommand(sub, "serve", "run the shared client, the live dashboard and the engines")
    p.add_argument("--rpc-url", type=_rpc_url, help="default DRIFT_RPC_URL, else a simulator")
    p.add_argument("--network", choices=["mainnet", "devnet"], help="default DRIFT_NETWORK")
    p.add_argument("--host", default="127.0.0.1", help="listen address")
    p.add_argument("--port", type=_port, default=8080, help="dashboard and API port")
    p.add_argument(
        "--share-url",
        metavar="REDIS_URL",
        help="join the fleet sharing one upstream on this Redis (default DRIFT_SHARE_URL)",
    )
    p.add_argument(
        "--engines",
        type=_engine_names,
        default=[],
        metavar="LIST",
        help="sample engines to run: funding,lst,scalp,arb or all",
    )
    p.add_argument(
        "--trade",
        action="store_true",
        help="the funding engine trades small delta-neutral positions (embedded simulator only)",
    )
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(ns: argparse.Namespace) -> int:
    from driftshare._serve import ServeConfig, run_serve

    config = ServeConfig(
        rpc_url=ns.rpc_url,
        network=ns.network,
        host=ns.host,
        port=ns.port,
        engines=ns.engines,
        share_url=ns.share_url,
        trade=ns.trade,
    )
    return asyncio.run(run_serve(config))


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _subcommand(sub, "demo", "the engines on the simulator: shared client vs one each")
    p.add_argument("--engines", type=_engine_count, default=4, help="engines per run (1..64)")
    p.add_argument("--duration", type=_positive_float, default=30.0, help="seconds per run")
    p.add_argument("--markets", type=int, default=30, help="simulated perp markets")
    p.add_argument(
        "--rate-limit",
        type=_positive_float,
        default=10.0,
        metavar="RPS",
        help="the simulator's request limit, like a public RPC",
    )
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(ns: argparse.Namespace) -> int:
    from driftshare._client.keypair import load_keypair
    from driftshare._demo import print_results, run_demo
    from driftshare.config import ConfigError, load_settings

    try:
        load_keypair(load_settings())  # the shared run's engines would all get None
    except ConfigError as exc:
        print(f"driftshare demo: {exc}", file=sys.stderr)
        return 2

    print(
        f"running {ns.engines} engines for {ns.duration:g}s, shared then legacy, "
        "each on its own simulated chain…",
        file=sys.stderr,
    )
    try:
        results = asyncio.run(
            run_demo(
                engines=ns.engines,
                duration_s=ns.duration,
                markets=ns.markets,
                rate_limit=ns.rate_limit,
            )
        )
    except RuntimeError as exc:
        print(f"driftshare demo: {exc}", file=sys.stderr)
        return 1
    print_results(results, ns.rate_limit)
    return 0


_EXTRAS = {"sim": "sim", "demo": "sim", "serve": "serve"}
"""The extra each subcommand needs beyond the library."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driftshare", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_sim(sub)
    _add_funding(sub)
    _add_serve(sub)
    _add_demo(sub)
    return parser


def run() -> int:
    """The ``driftshare`` program: :func:`main`, then a quick exit.

    Everything is closed when a command returns, yet the interpreter's teardown would take
    1 to 5 s on this project's machine: each module it clears sets off a garbage collection
    over the ~55,000 objects anchorpy's and driftpy's imports create. Frozen, they are
    freed without those passes (about 0.1 s). Not in :func:`main`, which tests call in
    their own process.
    """
    code = main()
    gc.freeze()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.command == "funding" and not ns.verbose:
        # Its table or JSON goes to stdout and it says what went wrong itself: no log lines.
        logging.basicConfig(handlers=[logging.NullHandler()])
    else:
        logging.basicConfig(
            level=logging.DEBUG if ns.verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    if not ns.verbose:
        # One INFO line per HTTP request drowns the terminal (polling sends one a second).
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return int(ns.func(ns))
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        extra = _EXTRAS.get(ns.command)
        if extra is None or exc.name is None or exc.name.startswith("driftshare"):
            raise
        print(
            f"driftshare {ns.command} needs the {extra} extra ({exc.name} is missing): "
            f"pip install 'driftshare[{extra}]'",
            file=sys.stderr,
        )
        return 2
