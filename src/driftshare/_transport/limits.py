"""One client's sending limits: the rate limiter with its send and read lanes, the
provider's pushback and the retry budget, shared by every transport built with them."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aiolimiter import AsyncLimiter

from driftshare._transport.arguments import require
from driftshare._transport.backpressure import Backpressure
from driftshare._transport.budget import RetryBudget
from driftshare.config import Settings

__all__ = ["SharedLimits"]


@dataclass(slots=True)
class _Limiter:
    limiter: AsyncLimiter
    rate: float
    busy: bool = False
    """Whether a call is taking its turn at the limiter now."""
    last_was_send: bool = False
    sends: deque[asyncio.Future[None]] = field(default_factory=deque)
    reads: deque[asyncio.Future[None]] = field(default_factory=deque)
    """Calls waiting for their turn, by lane."""


class SharedLimits:
    """The rate limit, the provider's pushback and the retry budget of one client.

    At most ``rps`` requests per second leave, with bursts of up to ``burst``. A
    ``Retry-After`` holds all new attempts until it has passed, and a 429 halves the sending
    rate, which creeps back while no 429 comes. Retries are at most ``retry_budget`` of the
    calls of the last ``retry_window_s`` seconds (but ``retry_budget_min`` are always
    allowed), none while more than ``retry_streak`` attempts in a row have failed (an outage,
    until one is served).

    Every transport built with the same ``SharedLimits`` sends within one ``rps`` and honours
    one cool-down, adaptive rate and retry budget, so renewing an HTTP session (a reconnect,
    an endpoint fail-over) neither resets them nor lets old and new sessions each send at
    ``rps``. The limiter is kept per running event loop.
    """

    def __init__(
        self,
        *,
        rps: float,
        burst: int = 1,
        retry_budget: float = 0.2,
        retry_window_s: float = 10.0,
        retry_budget_min: int = 1,
        retry_streak: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        require(rps > 0, f"rps must be > 0, got {rps!r}")
        require(isinstance(burst, int) and burst >= 1, f"burst must be an int >= 1, got {burst!r}")
        require(retry_budget >= 0, f"retry_budget must be >= 0, got {retry_budget!r}")
        require(retry_window_s > 0, f"retry_window_s must be > 0, got {retry_window_s!r}")
        require(
            isinstance(retry_streak, int) and retry_streak >= 0,
            f"retry_streak must be an int >= 0, got {retry_streak!r}",
        )
        self.rps = rps
        self.burst = burst
        self.budget = RetryBudget(
            retry_budget, retry_window_s, retry_budget_min, retry_streak, clock
        )
        self.pressure = Backpressure(rps, clock)
        self._limiters: dict[asyncio.AbstractEventLoop, _Limiter] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> SharedLimits:
        """Limits configured by ``DRIFT_RPC_RPS`` and ``DRIFT_RPC_BURST``."""
        return cls(rps=settings.rpc_rps, burst=settings.rpc_burst)

    @property
    def rate(self) -> float:
        """The requests per second sent now: ``rps``, or less after a 429."""
        return self.pressure.rate()

    @property
    def limiter(self) -> AsyncLimiter:
        """The rate limiter of the running event loop."""
        return self._limiter().limiter

    def cooling_down(self) -> bool:
        """Whether the provider's last ``Retry-After`` (or 429) holds new requests now."""
        return self.pressure.cooldown_until > self.pressure.clock()

    async def acquire(self, *, send: bool = False) -> None:
        """Wait for a slot at today's rate. A ``send`` (a transaction) waits for at most one
        read, however many are queued, and a read for at most one send: an order is never
        stuck behind a backlog of reads, nor are the reads that confirm it behind resends."""
        state = self._limiter()
        await self._turn(state, send)
        try:
            while True:
                rate = self.pressure.rate()
                if rate != state.rate:
                    # aiolimiter's rate is fixed at construction: a new rate is a new limiter.
                    state.limiter = AsyncLimiter(self.burst, self.burst / rate)
                    state.rate = rate
                limiter = state.limiter
                await limiter.acquire()
                if limiter is state.limiter:
                    return
        finally:
            self._pass_turn(state)

    async def _turn(self, state: _Limiter, send: bool) -> None:
        # Hand-written: aiolimiter serves waiters first come, first served, with no lanes.
        # One call at a time waits at the limiter; the others queue here in their lane.
        if not state.busy and not state.sends and not state.reads:
            state.busy, state.last_was_send = True, send
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (state.sends if send else state.reads).append(woken)
        try:
            await woken
        except asyncio.CancelledError:
            if woken.done() and not woken.cancelled():  # handed the turn, then cancelled
                self._pass_turn(state)
            raise

    @staticmethod
    def _pass_turn(state: _Limiter) -> None:
        # The lanes alternate while both wait; otherwise the one waiting goes.
        lanes = (state.reads, state.sends) if state.last_was_send else (state.sends, state.reads)
        for lane in lanes:
            while lane:
                woken = lane.popleft()
                if not woken.done():
                    woken.set_result(None)  # the turn passes on: still busy
                    state.last_was_send = lane is state.sends
                    return
        state.busy = False

    def _limiter(self) -> _Limiter:
        loop = asyncio.get_running_loop()
        state = self._limiters.get(loop)
        if state is None:
            for dead in [lp for lp in self._limiters if lp.is_closed()]:
                del self._limiters[dead]
            rate = self.pressure.rate()
            state = _Limiter(AsyncLimiter(self.burst, self.burst / rate), rate)
            self._limiters[loop] = state
        return state
