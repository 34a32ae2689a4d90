"""The simulator as one object: a store, a Drift world evolving in it, and the RPC server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from driftshare.sim._codec import DRIFT_PROGRAM_ID
from driftshare.sim.builtins import register_builtins
from driftshare.sim.faults import FaultError, Faults, check_spec
from driftshare.sim.geyser import GeyserServer, TlsPair
from driftshare.sim.lookup_tables import lookup_table_account, world_tables
from driftshare.sim.programs import Programs
from driftshare.sim.server import SimServer
from driftshare.sim.store import AccountStore
from driftshare.sim.tokens import spot_token_accounts
from driftshare.sim.world import World

__all__ = ["SimConfig", "SimConfigError", "Simulator", "run_simulator"]

_log = logging.getLogger(__name__)


class SimConfigError(ValueError):
    """A :class:`SimConfig` the simulator cannot run with; the message names the field."""


@dataclass(frozen=True)
class SimConfig:
    """How to run a simulator; every field has the ``driftshare sim`` option of the same name."""

    host: str = "127.0.0.1"
    port: int = 0
    """HTTP port; WebSocket is ``port + 1``. 0 picks a free pair."""
    seed: int = 0
    accounts: list[Path] = field(default_factory=list)
    """``solana account --output json`` files or folders to replay."""
    markets: int = 30
    """Perp markets of the simulated Drift world; 0 serves no world, only what is put in
    :attr:`Simulator.store`."""
    rate_limit: float | None = None
    """Requests per second allowed per client; None for no limit."""
    burst: int | None = None
    """Token bucket size; default ``max(1, int(rate_limit))``."""
    funding_period_s: float = 60.0
    fill_spread_bps: float = 10.0
    """Half-spread, in basis points of the oracle price, at which Drift orders take from the
    simulated market (see :mod:`driftshare.sim.drift.pricing`)."""
    tick_s: float = 0.4
    """Seconds per slot of the background clock."""
    max_ws_per_client: int = 64
    faults: list[str] = field(default_factory=list)
    """Start-up fault specs, e.g. ``fail=429:5`` (see :func:`driftshare.sim.faults.parse_spec`)."""
    grpc_port: int | None = None
    """Yellowstone Geyser gRPC port; None serves no gRPC, 0 picks a free port."""
    grpc_token: str | None = field(default=None, repr=False)
    """The ``x-token`` every gRPC call must carry; None accepts any call."""
    grpc_tls_cert: Path | None = None
    """PEM certificate (chain) to serve gRPC over TLS, with :attr:`grpc_tls_key`."""
    grpc_tls_key: Path | None = None

    def check(self) -> None:
        """Raise :class:`SimConfigError` naming the first unusable field."""
        problems: list[str] = []
        if not self.host:
            problems.append("host: must not be empty")
        if not 0 <= self.port <= 65534:
            problems.append(f"port: must be 0..65534 (port+1 is used too), got {self.port}")
        if self.markets < 0:
            problems.append(f"markets: must be >= 0, got {self.markets}")
        if self.rate_limit is not None and not self.rate_limit > 0:
            problems.append(f"rate_limit: must be > 0, got {self.rate_limit}")
        if self.burst is not None and self.burst < 1:
            problems.append(f"burst: must be >= 1, got {self.burst}")
        if not self.funding_period_s > 0:
            problems.append(f"funding_period_s: must be > 0, got {self.funding_period_s}")
        if not 0 <= self.fill_spread_bps < 10_000:
            problems.append(f"fill_spread_bps: must be 0..10000, got {self.fill_spread_bps}")
        if not self.tick_s > 0:
            problems.append(f"tick_s: must be > 0, got {self.tick_s}")
        if self.max_ws_per_client < 1:
            problems.append(f"max_ws_per_client: must be >= 1, got {self.max_ws_per_client}")
        problems.extend(
            f"accounts: {path} does not exist" for path in self.accounts if not path.exists()
        )
        if self.accounts and self.markets == 0:
            problems.append("accounts: replaying needs a world, so markets must be >= 1")
        for spec in self.faults:
            try:
                check_spec(spec)
            except FaultError as exc:
                problems.append(f"faults: {exc}")
        if self.grpc_port is not None and not 0 <= self.grpc_port <= 65535:
            problems.append(f"grpc_port: must be 0..65535, got {self.grpc_port}")
        if (self.grpc_tls_cert is None) != (self.grpc_tls_key is None):
            problems.append("grpc_tls_cert, grpc_tls_key: give both or neither")
        problems.extend(
            f"grpc_tls: {path} does not exist"
            for path in (self.grpc_tls_cert, self.grpc_tls_key)
            if path is not None and not path.exists()
        )
        if self.grpc_token == "":
            problems.append("grpc_token: must not be empty")
        if problems:
            raise SimConfigError("invalid simulator config: " + "; ".join(problems))


class Simulator:
    """A local Solana RPC serving a live Drift state: ``async with Simulator(markets=10) as sim``.

    HTTP JSON-RPC listens on :attr:`http_url` (port P) and PubSub on :attr:`ws_url` (P+1, as
    driftpy derives it). A background task advances one slot every ``tick_s``; tests that must
    not wait for it call :meth:`step`.
    """

    def __init__(self, config: SimConfig | None = None, **overrides: Any) -> None:
        try:
            config = dataclasses.replace(config or SimConfig(), **overrides)
        except TypeError:
            known = ", ".join(f.name for f in dataclasses.fields(SimConfig))
            raise SimConfigError(
                f"unknown simulator option in {sorted(overrides)}; known: {known}"
            ) from None
        config.check()
        self.config = config
        self.store = AccountStore()
        self.world: World | None = self._make_world()
        self.programs = Programs()
        """The programs transactions run: System, ComputeBudget, Token and Associated Token
        Account are registered; Drift registers with ``sim.programs.register(id, handler)``."""
        register_builtins(self.programs)
        if self.world is not None:
            self.programs.register(DRIFT_PROGRAM_ID, self.world.program)
            self._serve_chain_accounts(self.world)
        self._server = SimServer(
            self.store,
            host=config.host,
            port=config.port,
            programs=self.programs,
            rate_limit=config.rate_limit,
            burst=config.burst,
            max_ws_per_client=config.max_ws_per_client,
            oracle_writer=None if self.world is None else self.world.set_oracle_price,
        )
        self._geyser = self._make_geyser()
        self._ticker: asyncio.Task[None] | None = None
        self._started = False

    def _make_geyser(self) -> GeyserServer | None:
        config = self.config
        if config.grpc_port is None:
            return None
        tls = None
        if config.grpc_tls_cert is not None and config.grpc_tls_key is not None:
            tls = TlsPair(config.grpc_tls_cert.read_bytes(), config.grpc_tls_key.read_bytes())
        return GeyserServer(
            self.store,
            self._server.faults,
            self._server.stats.grpc,
            host=config.host,
            port=config.grpc_port,
            blocks=self._server.rpc.blocks,
            token=config.grpc_token,
            tls=tls,
        )

    def _make_world(self) -> World | None:
        """The Drift world filling the store; None for ``markets=0``."""
        if self.config.markets == 0:
            return None
        try:
            world = World(
                self.store,
                seed=self.config.seed,
                markets=self.config.markets,
                funding_period_s=self.config.funding_period_s,
                fill_spread_bps=self.config.fill_spread_bps,
            )
            if self.config.accounts:
                world.replay(self.config.accounts)
        except ValueError as exc:
            raise SimConfigError(f"invalid simulator config: {exc}") from None
        return world

    def _serve_chain_accounts(self, world: World) -> None:
        """Write the token mints and vaults of ``world``'s spot markets and Drift's market
        lookup tables, at the addresses driftpy reads them from."""
        spots = (world.spot_market(index) for index in world.spot_indexes())
        for pubkey, account in spot_token_accounts(spots).items():
            self.store.put(pubkey, account)
        for pubkey, addresses in world_tables(world).items():
            self.store.put(pubkey, lookup_table_account(addresses))

    @property
    def faults(self) -> Faults:
        """Runtime fault switches, the Python twin of ``POST /_sim/faults``."""
        return self._server.faults

    @property
    def http_url(self) -> str:
        self._check_started()
        return self._server.http_url

    @property
    def ws_url(self) -> str:
        self._check_started()
        return self._server.ws_url

    @property
    def grpc_url(self) -> str:
        """The Geyser endpoint, ``http://`` or (with TLS) ``https://``; see :attr:`grpc_address`."""
        return self._grpc().url

    @property
    def grpc_address(self) -> str:
        """The Geyser endpoint as ``host:port`` (driftpy's ``GrpcConfig.endpoint``)."""
        return self._grpc().address

    def _grpc(self) -> GeyserServer:
        self._check_started()
        if self._geyser is None:
            raise RuntimeError("this simulator serves no gRPC; set grpc_port")
        return self._geyser

    def _check_started(self) -> None:
        if not self._started:
            raise RuntimeError("the simulator is not started; use `async with` or start()")

    def stats(self) -> dict[str, Any]:
        """Everything served so far, as ``GET /_sim/stats`` shows it."""
        return self._server.stats.snapshot()

    async def start(self) -> None:
        """Listen on both ports, apply the start-up faults and start the slot clock."""
        if self._started:
            return
        await self._server.start()
        self._started = True
        try:
            if self._geyser is not None:
                await self._geyser.start()
            for spec in self.config.faults:
                await self.faults.apply_spec(spec)
        except BaseException:
            await self.stop()
            raise
        self._ticker = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        """Stop the clock and close every connection, subscription and listening socket."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._started:
            if self._geyser is not None:
                await self._geyser.stop()
            await self._server.stop()
            self._started = False

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

    async def step(self) -> int:
        """Advance one slot now, queueing its notifications; returns the new slot."""
        if self.world is not None:
            self.world.step()
        else:
            self.store.slot += 1
        self._server.pubsub.notify_slot(self.store.slot)
        self._server.pubsub.notify_signatures()
        if self._geyser is not None:
            self._geyser.notify_slot(self.store.slot)
        return self.store.slot

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_s)
            try:
                await self.step()
            except Exception:
                _log.exception("simulated slot %d failed; the clock keeps going", self.store.slot)


async def run_simulator(config: SimConfig) -> None:
    """Run a simulator in the foreground until SIGINT or SIGTERM (``driftshare sim``).

    Prints one ready line with both URLs to stdout; bad settings or a busy port end the
    program with a one-line message on stderr and exit status 2 or 1.
    """
    try:
        sim = Simulator(config)
    except (SimConfigError, OSError) as exc:
        print(f"driftshare sim: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        try:
            await sim.start()
        except OSError as exc:
            print(
                f"driftshare sim: cannot listen on {config.host} ports {config.port} and "
                f"{config.port + 1}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            raise SystemExit(1) from None
        grpc = "" if config.grpc_port is None else f" grpc={sim.grpc_url}"
        print(
            f"driftshare sim ready: http={sim.http_url} ws={sim.ws_url}{grpc} "
            f"markets={config.markets} seed={config.seed}",
            flush=True,
        )
        await stopping.wait()
    finally:
        await sim.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
