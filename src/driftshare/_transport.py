"""The one HTTP transport for JSON-RPC traffic: client-side rate limit, retries and accounting."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import re
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from aiolimiter import AsyncLimiter
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Commitment
from tenacity import AsyncRetrying, RetryCallState

from driftshare import _metrics as metrics
from driftshare.config import Settings

__all__ = [
    "NON_IDEMPOTENT_METHODS",
    "RateLimitedTransport",
    "RpcStats",
    "SharedLimits",
    "install_transport",
    "make_async_client",
    "retry_after_seconds",
]

_log = logging.getLogger(__name__)

_RETRYABLE_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
# Errors raised before a byte of the request left: the only ones after which a
# non-idempotent call may be sent again.
_NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
#: JSON-RPC methods that change state: sent twice, they may act twice.
NON_IDEMPOTENT_METHODS = frozenset({"sendTransaction", "sendRawTransaction", "requestAirdrop"})
# Only plausible JSON-RPC method names become metric labels, keeping label cardinality bounded.
_METHOD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_MAX_BACKOFF_EXPONENT = 62
_GZIP_MAGIC = b"\x1f\x8b"


class RpcStats:
    """Upstream RPC requests by method and status, retries, 429 answers and final failures.

    A status is the HTTP status code as text, ``"timeout"`` or ``"error"``. Every update
    also feeds the Prometheus metrics in :mod:`driftshare._metrics`.
    """

    def __init__(self) -> None:
        self._requests: Counter[tuple[str, str]] = Counter()
        self._retries: Counter[str] = Counter()
        self._failures: Counter[str] = Counter()
        self.rate_limited = 0
        self.calls = 0
        self.budget_exhausted = 0
        self.deadline_exceeded = 0

    def record_call(self) -> None:
        """Count one logical call (its first attempt; retries are not calls)."""
        self.calls += 1

    def record_request(self, method: str, status: str) -> None:
        """Count one request sent upstream and how it ended."""
        self._requests[method, status] += 1
        metrics.RPC_REQUESTS.labels(method=method, status=status).inc()
        if status == "429":
            self.rate_limited += 1
            metrics.RATE_LIMITED.inc()

    def record_retry(self, method: str) -> None:
        """Count one retry of ``method``."""
        self._retries[method] += 1
        metrics.RPC_RETRIES.labels(method=method).inc()

    def record_failure(self, method: str) -> None:
        """Count one request of ``method`` that failed for good."""
        self._failures[method] += 1
        metrics.RPC_ERRORS.labels(method=method).inc()

    @property
    def requests(self) -> int:
        """Requests sent upstream, retries included."""
        return sum(self._requests.values())

    def snapshot(self) -> dict[str, Any]:
        """Totals and per-method counts as plain, JSON-ready data."""
        by_status: Counter[str] = Counter()
        methods: dict[str, dict[str, Any]] = {}
        for (method, status), count in sorted(self._requests.items()):
            by_status[status] += count
            entry = methods.setdefault(method, _empty_method_entry())
            entry["requests"] += count
            entry["by_status"][status] = count
        for method in self._retries.keys() | self._failures.keys():
            entry = methods.setdefault(method, _empty_method_entry())
            entry["retries"] = self._retries[method]
            entry["failures"] = self._failures[method]
        return {
            "calls": self.calls,
            "requests": self.requests,
            "amplification": round(self.requests / self.calls, 4) if self.calls else None,
            "budget_exhausted": self.budget_exhausted,
            "deadline_exceeded": self.deadline_exceeded,
            "retries": sum(self._retries.values()),
            "rate_limited": self.rate_limited,
            "failures": sum(self._failures.values()),
            "by_status": dict(sorted(by_status.items())),
            "methods": dict(sorted(methods.items())),
        }


def _empty_method_entry() -> dict[str, Any]:
    return {"requests": 0, "by_status": {}, "retries": 0, "failures": 0}


class _RetryBudget:
    """Retries allowed as a share of calls over a sliding window, and none during an outage.

    Hand-written: tenacity bounds the retries of one call, not of a client. The share is
    Finagle's RetryBudget (a retry storm can add at most ``ratio`` to the load); its floor of
    ``minimum`` retries per window lets a client with little traffic retry a blip. A retry is
    for a blip: once more than ``streak`` attempts in a row (of any calls) have failed, the
    provider is failing, not blipping, and nothing is retried until an answer is served, as
    gRPC's retry throttling stops retries while failures outweigh successes. Without that, a
    burst's first failed call alone spends the floor and the share banked before it.
    """

    def __init__(
        self,
        ratio: float,
        window_s: float,
        minimum: int,
        streak: int,
        clock: Callable[[], float],
    ) -> None:
        self._ratio = ratio
        self._window_s = window_s
        self._minimum = minimum
        self._streak = streak
        self._clock = clock
        self._calls: deque[float] = deque()
        self._retries: deque[float] = deque()
        self._failed_in_a_row = 0

    def note_call(self) -> None:
        self._calls.append(self._clock())

    def note_outcome(self, served: bool) -> None:
        """Count one attempt's end: served by the provider, or failed (retryably or not)."""
        self._failed_in_a_row = 0 if served else self._failed_in_a_row + 1

    def try_retry(self) -> bool:
        """Spend one retry if no outage is on and the window allows it."""
        if self._failed_in_a_row > self._streak:
            return False
        now = self._clock()
        for times in (self._calls, self._retries):
            while times and now - times[0] > self._window_s:
                times.popleft()
        # The retry itself counts: spending it must leave retries within the share.
        if len(self._retries) + 1 > max(self._minimum, self._ratio * len(self._calls)):
            return False
        self._retries.append(now)
        return True


class _Backpressure:
    """The provider's pushback, shared by every call: a cool-down and an adaptive rate.

    A 429 (or any ``Retry-After``) holds every new attempt until the cool-down ends. A 429
    also halves the rate (once per cut: answers to requests sent before the cut do not cut
    again, as TCP congestion control), which then creeps back by ``rps / 20`` every
    ``step_s`` seconds without a 429.
    """

    def __init__(self, rps: float, clock: Callable[[], float], step_s: float = 2.0) -> None:
        self._rps = rps
        self._floor = rps / 16
        self.clock = clock
        self._step_s = step_s
        self._rate = rps
        self._since = clock()
        self._last_cut = -math.inf
        self.cooldown_until = -math.inf

    def rate(self) -> float:
        """The rate to send at now, crept back since the last change."""
        if self._rate < self._rps:
            steps = math.floor((self.clock() - self._since) / self._step_s)
            if steps > 0:
                self._rate = min(self._rps, self._rate + steps * self._rps / 20)
                self._since += steps * self._step_s
        return self._rate

    def push_back(self, delay: float, *, rate_limited: bool, sent_at: float) -> None:
        now = self.clock()
        self.cooldown_until = max(self.cooldown_until, now + delay)
        if rate_limited and sent_at >= self._last_cut:
            self._rate = max(self._floor, self.rate() / 2)
            self._since = self._last_cut = now


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
        _require(rps > 0, f"rps must be > 0, got {rps!r}")
        _require(isinstance(burst, int) and burst >= 1, f"burst must be an int >= 1, got {burst!r}")
        _require(retry_budget >= 0, f"retry_budget must be >= 0, got {retry_budget!r}")
        _require(retry_window_s > 0, f"retry_window_s must be > 0, got {retry_window_s!r}")
        _require(
            isinstance(retry_streak, int) and retry_streak >= 0,
            f"retry_streak must be an int >= 0, got {retry_streak!r}",
        )
        self.rps = rps
        self.burst = burst
        self.budget = _RetryBudget(
            retry_budget, retry_window_s, retry_budget_min, retry_streak, clock
        )
        self.pressure = _Backpressure(rps, clock)
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


@dataclass(slots=True)
class _LoopState:
    inner: httpx.AsyncBaseTransport
    in_flight: int = 0
    drained: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True)
class _Call:
    """One logical call: what it is and how far it got."""

    method: str
    idempotent: bool
    started: float
    cooldown_seen: float = -math.inf
    sent_at: float = -math.inf


class RateLimitedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that rate limits, retries and counts JSON-RPC requests.

    Requests leave within ``limits`` (:class:`SharedLimits`: the rate limit, the provider's
    back-pressure and the retry budget), shared with every other transport built with the
    same ones. HTTP 429, 5xx, timeouts and connection errors are retried up to
    ``max_retries`` times with full-jitter exponential backoff (``backoff_base`` doubling
    per retry, capped at ``backoff_cap`` seconds). A ``Retry-After`` header is waited out
    up to ``backoff_cap`` seconds too: a longer ask is retried sooner than asked, at most
    ``max_retries`` times. ``wall_clock`` gives the unix time a ``Retry-After`` date is
    counted from. Each attempt, response body included, must finish within ``timeout_s``.
    When retries run out the last response is returned, or the last exception raised.

    A retry also needs the limits' retry budget, a call retries only while it can end
    within ``deadline_s`` of its start, and a call in :data:`NON_IDEMPOTENT_METHODS` is sent
    again only if it never left. ``on_result`` hears, for every call, its URL and whether
    the provider served it.

    The rate limiter (and the default inner transport, whose connections belong to one
    event loop) is kept per running event loop, so one transport serves successive
    ``asyncio.run`` calls.
    """

    def __init__(
        self,
        limits: SharedLimits,
        *,
        max_retries: int = 5,
        backoff_base: float = 2.0,
        backoff_cap: float = 30.0,
        timeout_s: float = 10.0,
        deadline_s: float | None = None,
        stats: RpcStats | None = None,
        inner: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        log_interval_s: float = 10.0,
        on_result: Callable[[httpx.URL, bool], None] | None = None,
    ) -> None:
        _require(
            isinstance(max_retries, int) and max_retries >= 0,
            f"max_retries must be an int >= 0, got {max_retries!r}",
        )
        _require(backoff_base > 0, f"backoff_base must be > 0, got {backoff_base!r}")
        _require(backoff_cap > 0, f"backoff_cap must be > 0, got {backoff_cap!r}")
        _require(timeout_s > 0, f"timeout_s must be > 0, got {timeout_s!r}")
        _require(
            deadline_s is None or deadline_s > 0, f"deadline_s must be > 0, got {deadline_s!r}"
        )
        self.limits = limits
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.stats = stats if stats is not None else RpcStats()
        self._inner = inner
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._wall_clock = wall_clock
        self._log_interval_s = log_interval_s
        self._on_result = on_result
        self._budget = limits.budget
        self._pressure = limits.pressure
        self._states: dict[asyncio.AbstractEventLoop, _LoopState] = {}
        self._last_429_log: float | None = None
        self._unlogged_429s = 0

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        stats: RpcStats | None = None,
        on_result: Callable[[httpx.URL, bool], None] | None = None,
        limits: SharedLimits | None = None,
    ) -> RateLimitedTransport:
        """A transport configured by the ``DRIFT_RPC_*``, retry, timeout and deadline settings,
        sending within ``limits`` (new ones from the settings if None)."""
        return cls(
            limits if limits is not None else SharedLimits.from_settings(settings),
            max_retries=settings.max_retries,
            backoff_base=settings.retry_backoff,
            backoff_cap=settings.retry_backoff_cap,
            timeout_s=settings.request_timeout_s,
            deadline_s=settings.call_deadline_s,
            stats=stats,
            on_result=on_result,
        )

    @property
    def limiter(self) -> AsyncLimiter:
        """The rate limiter of the running event loop."""
        return self.limits.limiter

    @property
    def rate(self) -> float:
        """The requests per second sent now: ``rps``, or less after a 429."""
        return self.limits.rate

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        state = self._state()
        state.in_flight += 1
        state.drained.clear()
        try:
            return await self._handle(state, request)
        finally:
            state.in_flight -= 1
            if state.in_flight == 0:
                state.drained.set()

    async def _handle(self, state: _LoopState, request: httpx.Request) -> httpx.Response:
        await request.aread()
        _drop_false_gzip_label(request)
        method, idempotent = _rpc_method(request.content)
        call = _Call(method, idempotent, self._clock())
        self.stats.record_call()
        self._budget.note_call()
        retrying = AsyncRetrying(
            stop=lambda retry_state: self._stop(call, retry_state),
            wait=lambda retry_state: self._backoff(call, retry_state),
            retry=lambda retry_state: _should_retry(call, retry_state),
            sleep=self._sleep,
            before_sleep=lambda retry_state: self._before_retry(method, retry_state),
            retry_error_callback=_last_outcome,
        )
        try:
            response: httpx.Response = await retrying(self._attempt, state, request, call)
        except Exception as exc:
            self._report(request, False)
            self.stats.record_failure(method)
            _log.warning(
                "RPC %s to %s failed: %s: %s",
                method,
                request.url,
                type(exc).__name__,
                exc,
            )
            raise
        self._report(request, not _is_retryable(response))
        if response.status_code >= 400:
            self.stats.record_failure(method)
            _log.warning(
                "RPC %s to %s failed: HTTP %d",
                method,
                request.url,
                response.status_code,
            )
        return response

    async def aclose(self) -> None:
        """Close the inner transport (the running loop's one if it is the default) once the
        requests in flight on this loop have ended: closing it under them would fail them."""
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is not None and state.in_flight:
            await state.drained.wait()
        if self._inner is not None:
            await self._inner.aclose()
            return
        state = self._states.pop(loop, None)
        if state is not None:
            await state.inner.aclose()

    def _report(self, request: httpx.Request, served: bool) -> None:
        if self._on_result is not None:
            self._on_result(request.url, served)

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            for dead in [lp for lp in self._states if lp.is_closed()]:
                del self._states[dead]
            state = _LoopState(
                inner=self._inner if self._inner is not None else httpx.AsyncHTTPTransport()
            )
            self._states[loop] = state
        return state

    def _remaining(self, call: _Call) -> float:
        if self.deadline_s is None:
            return math.inf
        return self.deadline_s - (self._clock() - call.started)

    async def _admit(self, call: _Call, request: httpx.Request) -> None:
        """Wait out the shared cool-down (once per new one) and the limiter at today's rate."""
        until = self._pressure.cooldown_until
        if until > call.cooldown_seen:
            call.cooldown_seen = until
            wait = until - self._pressure.clock()  # the clock the cool-down was set by
            if wait > 0:
                if wait >= self._remaining(call):
                    raise self._deadline_exceeded(call, request)
                await self._sleep(wait)
        await self.limits.acquire(send=not call.idempotent)

    def _deadline_exceeded(self, call: _Call, request: httpx.Request) -> httpx.ReadTimeout:
        self.stats.deadline_exceeded += 1
        return httpx.ReadTimeout(f"call deadline of {self.deadline_s:g}s exceeded", request=request)

    async def _attempt(
        self, state: _LoopState, request: httpx.Request, call: _Call
    ) -> httpx.Response:
        method = call.method
        await self._admit(call, request)
        remaining = self._remaining(call)
        if remaining <= 0:
            raise self._deadline_exceeded(call, request)
        timeout = min(self.timeout_s, remaining)
        call.sent_at = self._clock()
        try:
            async with asyncio.timeout(timeout):
                response = await state.inner.handle_async_request(request)
                try:
                    body = await _read_raw(response)
                finally:
                    await response.aclose()
        except TimeoutError as exc:
            self.stats.record_request(method, "timeout")
            self._budget.note_outcome(served=False)
            if timeout < self.timeout_s:
                raise self._deadline_exceeded(call, request) from exc
            raise httpx.ReadTimeout(
                f"no response within {self.timeout_s:g}s", request=request
            ) from exc
        except httpx.TimeoutException:
            self.stats.record_request(method, "timeout")
            self._budget.note_outcome(served=False)
            raise
        except Exception:
            self.stats.record_request(method, "error")
            self._budget.note_outcome(served=False)
            raise
        self.stats.record_request(method, str(response.status_code))
        self._budget.note_outcome(served=not _is_retryable(response))
        self._note_push_back(response, call)
        if response.status_code == 429:
            self._log_rate_limited(method, request)
        # The body is buffered so a retried or returned response never holds a connection.
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=httpx.ByteStream(body),
            extensions=response.extensions,
        )

    def _retry_after(self, response: httpx.Response) -> float | None:
        now = datetime.fromtimestamp(self._wall_clock(), UTC)
        retry_after = retry_after_seconds(response.headers.get("retry-after"), now=now)
        # Capped: a "Retry-After: 86400" must not park a request for a day.
        return None if retry_after is None else min(retry_after, self.backoff_cap)

    def _note_push_back(self, response: httpx.Response, call: _Call) -> None:
        rate_limited = response.status_code == 429
        delay = self._retry_after(response)
        if delay is None and not rate_limited:
            return
        if delay is None:
            delay = min(self.backoff_base, self.backoff_cap)
        self._pressure.push_back(delay, rate_limited=rate_limited, sent_at=call.sent_at)
        # This call's own backoff covers the cool-down it caused.
        call.cooldown_seen = self._pressure.cooldown_until

    def _backoff(self, call: _Call, retry_state: RetryCallState) -> float:
        exponent = min(retry_state.attempt_number - 1, _MAX_BACKOFF_EXPONENT)
        delay = self._rng.uniform(0.0, min(self.backoff_cap, self.backoff_base * 2.0**exponent))
        outcome = retry_state.outcome
        if outcome is not None and not outcome.failed:
            retry_after = self._retry_after(outcome.result())
            if retry_after is not None:
                delay = max(delay, retry_after)
        return delay

    def _stop(self, call: _Call, retry_state: RetryCallState) -> bool:
        if retry_state.attempt_number > self.max_retries:
            return True
        if retry_state.upcoming_sleep >= self._remaining(call):
            self.stats.deadline_exceeded += 1
            return True
        if not self._budget.try_retry():
            self.stats.budget_exhausted += 1
            return True
        return False

    def _before_retry(self, method: str, retry_state: RetryCallState) -> None:
        self.stats.record_retry(method)
        if _log.isEnabledFor(logging.DEBUG):
            outcome = retry_state.outcome
            why = "no outcome"
            if outcome is not None:
                why = (
                    type(outcome.exception()).__name__
                    if outcome.failed
                    else f"HTTP {outcome.result().status_code}"
                )
            upcoming = retry_state.upcoming_sleep
            _log.debug("retrying RPC %s after %s in %.2fs", method, why, upcoming)

    def _log_rate_limited(self, method: str, request: httpx.Request) -> None:
        # One line per interval at most: a 429 storm would otherwise flood the log.
        now = self._clock()
        last = self._last_429_log
        if last is not None and now - last < self._log_interval_s:
            self._unlogged_429s += 1
            return
        url = request.url
        if last is not None and self._unlogged_429s:
            _log.warning(
                "RPC provider %s answered HTTP 429 %d more times in the last %.0fs "
                "(latest: %s); backing off",
                url,
                self._unlogged_429s + 1,
                now - last,
                method,
            )
        else:
            _log.warning("RPC provider %s answered HTTP 429 to %s; backing off", url, method)
        self._last_429_log = now
        self._unlogged_429s = 0


def retry_after_seconds(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay seconds or HTTP date), if valid."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - now).total_seconds())
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def install_transport(connection: AsyncClient, transport: RateLimitedTransport) -> None:
    """Send every HTTP request of a solana-py ``AsyncClient`` through ``transport``.

    Replaces the provider's ``httpx.AsyncClient`` session, which driftpy also uses directly
    (``connection._provider.session.post``), keeping its timeout and headers. Call it
    before the client has been used: the old session is dropped, not closed.
    """
    provider: Any = getattr(connection, "_provider", None)
    session = getattr(provider, "session", None)
    if not isinstance(session, httpx.AsyncClient):
        raise TypeError(
            "install_transport needs a solana.rpc.async_api.AsyncClient with an HTTP "
            f"provider, got {type(connection).__name__}"
        )
    provider.session = httpx.AsyncClient(
        transport=transport, timeout=session.timeout, headers=session.headers
    )


def make_async_client(
    url: str, transport: RateLimitedTransport, commitment: Commitment | None = None
) -> AsyncClient:
    """A solana-py ``AsyncClient`` for ``url`` whose HTTP traffic goes through ``transport``."""
    client = AsyncClient(url, commitment=commitment, timeout=transport.timeout_s)
    install_transport(client, transport)
    return client


def _drop_false_gzip_label(request: httpx.Request) -> None:
    # driftpy's direct session.post calls label plain JSON "Content-Encoding: gzip"; servers
    # that honour the header (aiohttp, so the simulator too) answer those with HTTP 400.
    encoding = request.headers.get("content-encoding", "")
    if encoding.strip().lower() == "gzip" and not request.content.startswith(_GZIP_MAGIC):
        del request.headers["content-encoding"]


def _rpc_method(body: bytes) -> tuple[str, bool]:
    """The method label of a JSON-RPC body, and whether sending it twice is harmless."""
    try:
        payload = json.loads(body)
    except ValueError:
        return "unknown", True
    if isinstance(payload, list):
        names = {p.get("method") for p in payload if isinstance(p, dict)}
        return "batch", names.isdisjoint(NON_IDEMPOTENT_METHODS)
    if isinstance(payload, dict):
        method = payload.get("method")
        if isinstance(method, str) and _METHOD_NAME.fullmatch(method):
            return method, method not in NON_IDEMPOTENT_METHODS
    return "unknown", True


async def _read_raw(response: httpx.Response) -> bytes:
    # The stream itself, not aiter_raw(): a response built with content is already "consumed".
    stream = response.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        raise TypeError(f"inner transport returned a sync stream: {type(stream).__name__}")
    return b"".join([chunk async for chunk in stream])


def _is_retryable(response: httpx.Response) -> bool:
    return response.status_code == 429 or 500 <= response.status_code <= 599


def _should_retry(call: _Call, retry_state: RetryCallState) -> bool:
    outcome = retry_state.outcome
    assert outcome is not None
    if outcome.failed:
        errors = _RETRYABLE_ERRORS if call.idempotent else _NOT_SENT_ERRORS
        return isinstance(outcome.exception(), errors)
    # A non-idempotent call that got an answer was sent: never again.
    return call.idempotent and _is_retryable(outcome.result())


def _last_outcome(retry_state: RetryCallState) -> httpx.Response:
    # Out of retries: hand back the last response, or raise the last exception, unwrapped.
    outcome = retry_state.outcome
    assert outcome is not None
    result: httpx.Response = outcome.result()
    return result


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
