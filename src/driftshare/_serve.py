"""``driftshare serve``: the shared client, the dashboard and the sample engines in one process.

Without an RPC URL (``--rpc-url`` or ``DRIFT_RPC_URL``) it starts the embedded simulator and
says so in the terminal and on every page. A live dashboard wants fresh numbers, so serve
sets the funding, price, market and open-interest cache TTLs to :data:`LIVE_CACHE_TTL_S`
unless the matching ``DRIFT_CACHE_TTL_*`` variable is set: reads still come from the
subscribed accounts, so shorter TTLs cost CPU, not RPC requests.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from rich.markup import escape

from driftshare._client.keypair import load_keypair
from driftshare._engines import ENGINES, Engine, FundingEngine, make_engines
from driftshare._web import LiveState, create_app
from driftshare.config import ConfigError, Network, Settings, load_settings, redact_url
from driftshare.manager import DriftClientManager
from driftshare.sim import SimConfigError, Simulator
from driftshare.sim.wallets import open_wallet

__all__ = [
    "LIVE_CACHE_TTL_S",
    "Runtime",
    "ServeConfig",
    "ServeError",
    "run_serve",
    "serve_settings",
]

LIVE_CACHE_TTL_S = 0.5
"""Cache TTL of funding, prices, markets and open interest under serve (see the module doc)."""

_IDLE_REFRESH_S = 5.0
"""How often the dashboard reads while no page listens (see LiveState)."""

_TTL_FIELDS = ("cache_ttl_funding", "cache_ttl_price", "cache_ttl_markets", "cache_ttl_oi")

Progress = Callable[[str], None]


class ServeError(Exception):
    """Serve cannot start as asked; the message says why (exit status 2)."""


@dataclass(frozen=True)
class ServeConfig:
    """What ``driftshare serve`` runs; each field has the option of the same name."""

    rpc_url: str | None = None
    """None: ``DRIFT_RPC_URL``, else the embedded simulator."""
    network: Network | None = None
    """None: ``DRIFT_NETWORK`` (default mainnet)."""
    host: str = "127.0.0.1"
    port: int = 8080
    """0 picks a free port."""
    engines: Sequence[str] = ()
    engine_interval_s: float | None = None
    """None: each engine's own cadence."""
    sim_markets: int = 30
    sim_tick_s: float = 0.4
    sim_funding_period_s: float = 60.0
    refresh_s: float = 0.25
    """How often the dashboard reads the shared client."""
    stale_after_s: float | None = None
    """None: ``DRIFT_WS_STALL_S``, the manager's own stall limit."""
    share_url: str | None = None
    """None: ``DRIFT_SHARE_URL``, else no fleet."""
    trade: bool = False
    """The funding engine trades with a funded wallet of the embedded simulator's (ignored,
    with a warning, on a real RPC)."""
    settings_overrides: dict[str, Any] = field(default_factory=dict)


def serve_settings(config: ServeConfig, environ: dict[str, str] | None = None) -> Settings:
    """The settings serve runs with: env and options, and live TTLs where env sets none."""
    environ = dict(os.environ) if environ is None else environ
    overrides: dict[str, Any] = {
        name: LIVE_CACHE_TTL_S for name in _TTL_FIELDS if f"DRIFT_{name.upper()}" not in environ
    }
    if config.rpc_url is not None:
        overrides["rpc_url"] = config.rpc_url
    if config.network is not None:
        overrides["network"] = config.network
    if config.share_url is not None:
        overrides["share_url"] = config.share_url
    overrides.update(config.settings_overrides)
    try:
        settings = load_settings(**overrides)
        load_keypair(settings)  # a bad DRIFT_KEYPAIR stops serve at once, with its one message
        return settings
    except ConfigError as exc:
        raise ServeError(str(exc)) from None


class Runtime:
    """One serve process: ``async with Runtime(config) as rt:`` then ``rt.url``.

    Start order: listen (so a busy port fails before anything else starts), the embedded
    simulator when no RPC URL is set, the shared client, the engines. :meth:`stop` undoes it
    all in reverse and is safe to call twice.
    """

    def __init__(self, config: ServeConfig | None = None) -> None:
        self.config = config or ServeConfig()
        unknown = [name for name in self.config.engines if name not in ENGINES]
        if unknown:
            raise ServeError(f"unknown engine {unknown[0]!r}; known: {', '.join(ENGINES)}")
        self.settings = serve_settings(self.config)
        self.simulator: Simulator | None = None
        self.engines: list[Engine] = []
        self.live: LiveState | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._managing = False
        self.url = ""
        self.started_at = time.time()
        self.waiting: str | None = None
        """Rich markup: why no market data was read at start (None once some was)."""

    @property
    def simulated(self) -> bool:
        """Whether this runtime reads from its embedded simulator."""
        return self.settings.rpc_url is None

    async def start(self, progress: Progress | None = None) -> None:
        """Start everything, reporting each step to ``progress``; :class:`ServeError` if not."""
        say = progress or (lambda _: None)
        try:
            await self._start(say)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, say: Progress) -> None:
        config, settings = self.config, self.settings
        network: Network = settings.network
        rpc_url = settings.rpc_url
        if rpc_url is None:
            try:
                self.simulator = Simulator(
                    markets=config.sim_markets,
                    tick_s=config.sim_tick_s,
                    funding_period_s=config.sim_funding_period_s,
                )
            except SimConfigError as exc:
                raise ServeError(str(exc)) from None
        self.engines = make_engines(
            config.engines, network=network, interval_s=config.engine_interval_s
        )
        self.live = LiveState(
            network=network,
            simulated=rpc_url is None,
            engines=self.engines,
            refresh_s=config.refresh_s,
            # Often enough that reads alone keep the shared client open.
            idle_refresh_s=min(_IDLE_REFRESH_S, settings.idle_close_s / 2),
            stale_after_s=settings.ws_stall_s
            if config.stale_after_s is None
            else config.stale_after_s,
        )
        await self._listen(create_app(self.live))
        say(f"dashboard listening on {escape(self.url)}")
        if self.simulator is not None:
            await self.simulator.start()
            rpc_url = self.simulator.http_url
            say(
                f"no RPC URL set: started the embedded [b]simulated chain[/b] "
                f"({config.sim_markets} perp markets) at {escape(rpc_url)}"
            )
        DriftClientManager.configure(self.settings.model_copy(update={"rpc_url": rpc_url}))
        self._managing = True
        self.live.started_at = self.started_at
        say(f"connecting the shared {network} DriftClient to {escape(redact_url(str(rpc_url)))}")
        await self.live.start()
        markets = await self.live.reader.get_all_perp_markets()
        stats = self.live.manager_stats()
        if markets and not stats.get("initialized"):
            say(
                f"[yellow]serving {len(markets)} perp markets from the snapshot, stale, "
                "while connecting[/yellow]"
            )
        elif markets and stats.get("subscription_mode") == "fleet":
            say(f"following the fleet's leader: {len(markets)} perp markets through Redis")
        elif markets:
            say(
                f"subscribed {len(markets)} perp markets by {stats.get('subscription_mode')} "
                f"in {stats.get('time_to_ready_s') or 0:.2f}s"
            )
        else:
            reasons = "; ".join(stats.get("unavailable_markets", {}).values())
            cause = escape(str(stats.get("last_error") or reasons or "connecting"))
            self.waiting = f"no market data yet ({cause}); retrying in the background"
        await self._trading(say)
        for engine in self.engines:
            await engine.start()
        if self.engines:
            say(f"engines running: {', '.join(e.name for e in self.engines)}")

    async def first_data(self) -> None:
        """Return once the dashboard has read some market data."""
        if self.live is not None:
            await self.live.first_data.wait()

    async def _trading(self, say: Progress) -> None:
        """Give the funding engine a funded wallet of the simulator's, if asked to trade."""
        traders = [e for e in self.engines if isinstance(e, FundingEngine)]
        if not self.config.trade:
            return
        if self.simulator is None or not traders:
            say(
                "[yellow]--trade ignored: it trades only with the funding engine, on the "
                "embedded simulator[/yellow]"
            )
            return
        try:
            wallet = await open_wallet(
                self.simulator.http_url, DriftClientManager.settings(), subs=1, usdc=10_000
            )
        except RuntimeError as exc:
            raise ServeError(f"cannot fund a trading wallet on the simulator: {exc}") from None
        for engine in traders:
            engine.trade_with(wallet)
        say(f"the funding engine trades on the simulator as {wallet.pubkey()}")

    async def _listen(self, app: web.Application) -> None:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError as exc:
            raise ServeError(
                f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror or exc}"
            ) from None
        self._site = site
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}/"

    async def stop(self) -> None:
        """Stop the engines, the dashboard, the shared client and the simulator."""
        for engine in self.engines:
            await engine.stop()
        if self.live is not None:
            await self.live.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._managing:
            self._managing = False
            await DriftClientManager.shutdown()
        if self.simulator is not None:
            await self.simulator.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def _first_of(*waits: Coroutine[Any, Any, Any]) -> None:
    """Wait until one of ``waits`` returns; the others are cancelled."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def parse_engines(text: str) -> list[str]:
    """``funding,lst`` → ``["funding", "lst"]``; ``all`` → every engine; ValueError if unknown."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if names == ["all"]:
        return list(ENGINES)
    unknown = [name for name in names if name not in ENGINES]
    if unknown:
        raise ValueError(f"unknown engine {unknown[0]!r}; choose from {', '.join(ENGINES)}, all")
    return list(dict.fromkeys(names))


async def run_serve(config: ServeConfig) -> int:
    """Run until SIGINT or SIGTERM, showing progress on stderr; the exit status."""
    from rich.console import Console

    # soft_wrap: no line breaks of rich's own (it assumes 80 columns when piped), so a log
    # keeps each URL and message whole; a terminal wraps long lines itself.
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        runtime = Runtime(config)
        with console.status("starting driftshare serve…") as status:

            def progress(text: str) -> None:
                # A warning (yellow) is no step done: it gets no check mark.
                done = "" if text.startswith("[yellow]") else "[green]✓[/green] "
                console.print(f"{done}{text}")
                status.update(text)

            await runtime.start(progress)
        url = escape(runtime.url)
        try:
            if runtime.waiting is not None:
                # No check mark and no "ready" while nothing answers: only data makes it ready.
                console.print(f"[yellow]waiting for the RPC: {runtime.waiting}[/yellow]")
                console.print(f"dashboard at [link]{url}[/link]; press Ctrl+C to stop")
                await _first_of(runtime.first_data(), stopping.wait())
                if stopping.is_set():
                    return 0
            label = "[b yellow]SIMULATED CHAIN[/b yellow]" if runtime.simulated else "live RPC"
            console.print(f"[b]ready[/b] ({label}): dashboard at [link]{url}[/link]")
            console.print("press Ctrl+C to stop")
            await stopping.wait()
        finally:
            console.print("stopping…")
            await runtime.stop()
    except ServeError as exc:
        print(f"driftshare serve: {exc}", file=sys.stderr)
        return 2
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0
