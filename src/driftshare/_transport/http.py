"""The rate-limited, retrying httpx transport that every JSON-RPC request goes through."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, RetryCallState

from driftshare._transport.arguments import require
from driftshare._transport.jsonrpc import drop_false_gzip_label, rpc_method
from driftshare._transport.limits import SharedLimits
from driftshare._transport.retry import (
    full_jitter,
    is_retryable,
    last_outcome,
    retry_after_seconds,
    should_retry,
)
from driftshare._transport.stats import RpcStats
from driftshare.config import Settings

__all__ = ["RateLimitedTransport", "tls_context"]


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default TLS context, made once per process: loading the CA bundle costs about
    40 ms of CPU, which each new transport (every connection and rebuild) paid again."""
    return httpx.create_ssl_context()


_log = logging.getLogger(__name__)


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
        require(
            isinstance(max_retries, int) and max_retries >= 0,
            f"max_retries must be an int >= 0, got {max_retries!r}",
        )
        require(backoff_base > 0, f"backoff_base must be > 0, got {backoff_base!r}")
        require(backoff_cap > 0, f"backoff_cap must be > 0, got {backoff_cap!r}")
        require(timeout_s > 0, f"timeout_s must be > 0, got {timeout_s!r}")
        require(deadline_s is None or deadline_s > 0, f"deadline_s must be > 0, got {deadline_s!r}")
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
        self._on_result = on_result
        self._budget = limits.budget
        self._pressure = limits.pressure
        self._states: dict[asyncio.AbstractEventLoop, _LoopState] = {}
        self._rate_limited_log = _Throttled(log_interval_s, clock)
        self._failure_log = _Throttled(log_interval_s, clock)

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
        drop_false_gzip_label(request)
        method, idempotent = rpc_method(request.content)
        call = _Call(method, idempotent, self._clock())
        self.stats.record_call()
        self._budget.note_call()
        retrying = AsyncRetrying(
            stop=lambda retry_state: self._stop(call, retry_state),
            wait=lambda retry_state: self._backoff(call, retry_state),
            retry=lambda retry_state: should_retry(call.idempotent, retry_state),
            sleep=self._sleep,
            before_sleep=lambda retry_state: self._before_retry(method, retry_state),
            retry_error_callback=last_outcome,
        )
        try:
            response: httpx.Response = await retrying(self._attempt, state, request, call)
        except Exception as exc:
            self._report(request, False)
            self.stats.record_failure(method)
            self._failure_log.warn(
                "RPC %s to %s failed: %s: %s", method, request.url, type(exc).__name__, exc
            )
            raise
        self._report(request, not is_retryable(response))
        if response.status_code >= 400:
            self.stats.record_failure(method)
            self._failure_log.warn(
                "RPC %s to %s failed: HTTP %d", method, request.url, response.status_code
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
                inner=self._inner
                if self._inner is not None
                else httpx.AsyncHTTPTransport(verify=tls_context())
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
        self._budget.note_outcome(served=not is_retryable(response))
        self._note_push_back(response, call)
        if response.status_code == 429:
            self._rate_limited_log.warn(
                "RPC provider %s answered HTTP 429 to %s; backing off", request.url, method
            )
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
        delay = full_jitter(
            self._rng, retry_state.attempt_number, self.backoff_base, self.backoff_cap
        )
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


class _Throttled:
    """Warnings of one kind: the first at once, then at most one per interval (with how many
    were held back since), the rest at debug level. An outage or a 429 storm would otherwise
    write a line per request."""

    def __init__(self, interval_s: float, clock: Callable[[], float]) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._last: float | None = None
        self._held = 0

    def warn(self, message: str, *args: object) -> None:
        now = self._clock()
        last = self._last
        if last is not None and now - last < self._interval_s:
            self._held += 1
            _log.debug(message, *args)
            return
        if last is not None and self._held:
            message += " (%d more like it in the last %.0fs)"
            args = (*args, self._held, now - last)
        _log.warning(message, *args)
        self._last = now
        self._held = 0


async def _read_raw(response: httpx.Response) -> bytes:
    # The stream itself, not aiter_raw(): a response built with content is already "consumed".
    stream = response.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        raise TypeError(f"inner transport returned a sync stream: {type(stream).__name__}")
    return b"".join([chunk async for chunk in stream])
