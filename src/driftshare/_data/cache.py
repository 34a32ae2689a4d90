"""A TTL cache for market data: single flight per key, and stale values while upstream is down."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Generator, Hashable
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

from driftshare import _metrics as metrics

__all__ = ["Cached", "TTLCache"]

T = TypeVar("T")

_log = logging.getLogger(__name__)


# A named tuple, not a frozen dataclass: each hit answered by get() makes one, and a frozen
# dataclass costs twice as much to construct.
class Cached(NamedTuple, Generic[T]):
    """A value read from :class:`TTLCache`."""

    value: T
    stale: bool
    """True when computing failed and this is the last known value."""
    age_s: float
    """Seconds since the value was computed."""


@dataclass(slots=True)
class _Entry:
    value: Any
    computed_at: float
    ttl: float


# Hand-written: cachetools (global TTL, sync), async-lru (no stale-on-error, loop clock) and
# aiocache (no single flight) each lack one of per-entry TTL, single flight, stale-on-error
# and an injectable clock.
class TTLCache:
    """Values by key, each fresh for the TTL of the call that stored it and while ``valid``.

    :meth:`get` answers a fresh value without computing; otherwise one computation per key
    runs however many callers wait for it. When it raises or returns ``None`` the last
    known value is served as stale for up to ``max_staleness_s`` seconds after it was
    computed. ``clock`` gives the time in seconds.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_staleness_s: float = 300.0
    ) -> None:
        if not max_staleness_s >= 0:
            raise ValueError(f"max_staleness_s must be >= 0, got {max_staleness_s!r}")
        self._clock = clock
        self.max_staleness_s = max_staleness_s
        self._entries: dict[Hashable, _Entry] = {}
        self._inflight: dict[Hashable, asyncio.Future[_Entry | None]] = {}
        self._running: set[asyncio.Task[Any]] = set()
        self._hits: Counter[str] = Counter()
        self._misses: Counter[str] = Counter()

    async def get(
        self,
        key: Hashable,
        *,
        ttl: float,
        compute: Callable[[], Awaitable[T | None]],
        kind: str,
        valid: Callable[[T], bool] | None = None,
    ) -> Cached[T] | None:
        """The value for ``key``: cached if fresh, else computed (once for all callers).

        A stored value within its TTL is fresh only while ``valid(value)`` (when given) is
        true: the data it was computed from has not changed. ``None`` when the computation
        fails and no value younger than ``max_staleness_s`` is known. A computation's
        exception is logged, never raised.
        """
        if not ttl >= 0:
            raise ValueError(f"ttl must be >= 0, got {ttl!r}")
        fresh: Cached[T] | None = self.get_fresh(key, kind=kind, valid=valid)
        if fresh is not None:
            return fresh
        return await self.refresh(key, ttl=ttl, compute=compute, kind=kind)

    async def refresh(
        self,
        key: Hashable,
        *,
        ttl: float,
        compute: Callable[[], Awaitable[T | None]],
        kind: str,
    ) -> Cached[T] | None:
        """:meth:`get` after :meth:`get_fresh` missed: a miss, computed once for all callers.

        For a caller that answers its hits with :meth:`get_fresh` before making ``compute``.
        """
        if not ttl >= 0:
            raise ValueError(f"ttl must be >= 0, got {ttl!r}")
        self._misses[kind] += 1
        metrics.CACHE_MISSES.labels(kind=kind).inc()
        flight = self._inflight.get(key)
        loop = asyncio.get_running_loop()
        # A computation of another (possibly closed) loop can never be awaited here.
        if flight is None or flight.get_loop() is not loop:
            flight = self._start(key, ttl, compute, kind, loop)
        if flight.done():
            result = flight.result()
        else:
            try:
                result = await asyncio.shield(flight)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                # The computation was cancelled, not this caller: that is a failed computation.
                result = None
        if result is not None:
            return Cached(result.value, False, self._clock() - result.computed_at)
        return self._stale(key)

    def get_fresh(
        self,
        key: Hashable,
        *,
        kind: str | None = None,
        valid: Callable[[Any], bool] | None = None,
    ) -> Cached[Any] | None:
        """The value for ``key`` if within its TTL and ``valid``, not waiting; a hit if ``kind``."""
        fresh = self.fresh_value(key, kind=kind, valid=valid)
        return None if fresh is None else Cached(fresh[0], False, fresh[1])

    def fresh_value(
        self,
        key: Hashable,
        *,
        kind: str | None = None,
        valid: Callable[[Any], bool] | None = None,
    ) -> tuple[Any, float] | None:
        """:meth:`get_fresh` as ``(value, age_s)``: a hit path's plain tuple, no :class:`Cached`."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        age = self._clock() - entry.computed_at
        if age >= entry.ttl or (valid is not None and not valid(entry.value)):
            return None
        if kind is not None:  # counted inline: a call more would cost every hit
            self._hits[kind] += 1
            metrics.CACHE_HITS.counts[kind] += 1
        return entry.value, age

    def peek(self, key: Hashable) -> Cached[Any] | None:
        """The stored value for ``key`` however old, marked stale past its TTL; not counted."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        age = self._clock() - entry.computed_at
        return Cached(entry.value, age >= entry.ttl, age)

    def invalidate(self, key: Hashable) -> None:
        """Forget ``key``; a computation already running for it will not store its result."""
        self._entries.pop(key, None)
        self._inflight.pop(key, None)

    def clear(self) -> None:
        """Forget every key, as :meth:`invalidate` does."""
        self._entries.clear()
        self._inflight.clear()

    def stats(self) -> dict[str, Any]:
        """Hits and misses by kind, stored entries and running computations."""
        return {
            "hits": dict(sorted(self._hits.items())),
            "misses": dict(sorted(self._misses.items())),
            "entries": len(self._entries),
            "inflight": len(self._inflight),
        }

    def _start(
        self,
        key: Hashable,
        ttl: float,
        compute: Callable[[], Awaitable[Any]],
        kind: str,
        loop: asyncio.AbstractEventLoop,
    ) -> asyncio.Future[_Entry | None]:
        """Start computing ``key``: its first step runs here, in the caller's task.

        Most computations finish without suspending. A task (asyncio's own single flight)
        would first wait behind every callback already queued, such as the decoding of
        other accounts' notifications: the read of a changed value would wait for all of
        them. Python 3.12's eager tasks do the same; this runs on 3.11.
        """
        flight: asyncio.Future[_Entry | None] = loop.create_future()
        self._inflight[key] = flight
        steps = self._compute(key, ttl, compute, kind, flight)
        try:
            suspended_on = steps.send(None)
        except StopIteration:
            return flight
        task = loop.create_task(_resume(steps, suspended_on))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return flight

    async def _compute(
        self,
        key: Hashable,
        ttl: float,
        compute: Callable[[], Awaitable[Any]],
        kind: str,
        flight: asyncio.Future[_Entry | None],
    ) -> None:
        """Compute ``key`` and resolve ``flight`` with the stored entry (None on failure)."""
        value: Any = None
        try:
            value = await compute()
        except asyncio.CancelledError:
            pass  # cancelled from inside the computation: a failed computation
        except Exception as exc:
            _log.warning("computing %s %r failed: %s: %s", kind, key, type(exc).__name__, exc)
        finally:
            registered = self._inflight.get(key) is flight
            if registered:
                del self._inflight[key]
            entry = None if value is None else _Entry(value, self._clock(), ttl)
            if entry is not None and registered:
                self._entries[key] = entry
            if not flight.done() and not flight.get_loop().is_closed():
                flight.set_result(entry)

    def _stale(self, key: Hashable) -> Cached[Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        age = self._clock() - entry.computed_at
        if age > self.max_staleness_s:
            del self._entries[key]
            return None
        return Cached(entry.value, True, age)


async def _resume(steps: Coroutine[Any, Any, None], suspended_on: Any) -> None:
    """Run ``steps`` on from where it suspended, awaiting ``suspended_on``, as a task would."""
    await _Continuation(steps, suspended_on)


class _Continuation:
    """Awaitable driving a coroutine whose first step already ran elsewhere."""

    def __init__(self, steps: Coroutine[Any, Any, None], suspended_on: Any) -> None:
        self._steps = steps
        self._suspended_on = suspended_on

    def __await__(self) -> Generator[Any, Any, None]:
        waiting_on = self._suspended_on
        while True:
            try:
                sent = yield waiting_on
            except GeneratorExit:  # closed, as ``yield from`` does
                self._steps.close()
                raise
            except BaseException as exc:  # a cancellation thrown in by the task: pass it on
                try:
                    waiting_on = self._steps.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting_on = self._steps.send(sent)
                except StopIteration:
                    return
