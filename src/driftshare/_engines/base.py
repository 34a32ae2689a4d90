"""What every sample engine shares: a DriftAdapter, a cadence, signals and an error count."""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from contextlib import suppress
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from solders.keypair import Keypair

from driftshare.adapter import DriftAdapter

__all__ = ["Engine", "EngineDataError", "Signal"]

log = logging.getLogger(__name__)


class EngineDataError(RuntimeError):
    """The adapter answered without the data an engine needs (it never raises itself)."""


@dataclass(frozen=True, slots=True)
class Signal:
    """One read-only observation of an engine; nothing is ever traded on it."""

    engine: str
    market: str
    action: str
    value: float
    """The figure the action is based on, in the unit ``detail`` names."""
    detail: str
    timestamp: float

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready scalars."""
        return asdict(self)


class Engine(ABC):
    """A read-only engine polling Drift data through its own :class:`DriftAdapter`.

    ``start()`` connects the adapter and evaluates every ``interval_s`` seconds until
    ``stop()``. Each evaluation reads whatever the adapter answers, stale values of a
    reconnecting client included; one that raises, or finds the data missing, counts in
    :attr:`errors` and the engine carries on.
    """

    name: ClassVar[str]
    default_interval_s: ClassVar[float]

    def __init__(
        self,
        *,
        network: str = "mainnet",
        use_singleton: bool = True,
        interval_s: float | None = None,
    ) -> None:
        interval = self.default_interval_s if interval_s is None else interval_s
        if not interval > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.interval_s = interval
        self.adapter = DriftAdapter(network=network, use_singleton=use_singleton)
        self.ticks = 0
        self.errors = 0
        self.signals = 0
        self.last_error: str | None = None
        self.last_signal: Signal | None = None
        self.wallet: Keypair | None = None
        """The signer :meth:`start` registers (sub-account 0); None: ``DRIFT_KEYPAIR``."""
        self._task: asyncio.Task[None] | None = None
        self._ticked = asyncio.Condition()

    async def start(self) -> None:
        """Connect the adapter and start evaluating in the background."""
        if self._task is not None:
            return
        # A failed connect is no error yet: an evaluation counts one if data is missing.
        await self.adapter.connect(self.wallet)
        self._task = asyncio.create_task(self._run(), name=f"driftshare-engine-{self.name}")

    async def stop(self) -> None:
        """Stop evaluating and release the adapter's client."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.adapter.disconnect()

    async def run_once(self) -> Signal | None:
        """Evaluate once now; errors are counted, never raised."""
        try:
            signal = await self._evaluate()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an engine must outlive any bad read: count and go on
            self._record_error(f"{type(exc).__name__}: {exc}")
            signal = None
        else:
            if signal is not None:
                self._record_signal(signal)
        async with self._ticked:
            self.ticks += 1
            self._ticked.notify_all()
        return signal

    async def wait_for_ticks(self, ticks: int) -> None:
        """Wait until the engine has evaluated ``ticks`` times in all."""
        async with self._ticked:
            await self._ticked.wait_for(lambda: self.ticks >= ticks)

    def status(self) -> dict[str, Any]:
        """Counters and the last signal, JSON-ready."""
        return {
            "name": self.name,
            "interval_s": self.interval_s,
            "running": self._task is not None and not self._task.done(),
            "ticks": self.ticks,
            "signals": self.signals,
            "errors": self.errors,
            "last_error": self.last_error,
            "last_signal": None if self.last_signal is None else self.last_signal.to_dict(),
        }

    @abstractmethod
    async def _evaluate(self) -> Signal | None:
        """Read through the adapter and return this tick's signal."""

    def _signal(self, market: str, action: str, value: float, detail: str) -> Signal:
        return Signal(self.name, market, action, value, detail, time.time())

    async def _run(self) -> None:
        while True:
            await self.run_once()
            await asyncio.sleep(self.interval_s)

    def _record_signal(self, signal: Signal) -> None:
        previous = self.last_signal
        self.signals += 1
        self.last_signal = signal
        changed = previous is None or previous.action != signal.action
        log.log(
            logging.INFO if changed else logging.DEBUG,
            "%s: %s %s (%s)",
            self.name,
            signal.action,
            signal.market,
            signal.detail,
        )

    def _record_error(self, message: str) -> None:
        self.errors += 1
        self.last_error = message
        log.warning("%s engine: %s", self.name, message)
