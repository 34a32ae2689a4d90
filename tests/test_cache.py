"""TTLCache: TTL hits, single flight, cancellation, stale-on-error, several event loops."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FakeClock
from driftshare._data.cache import Cached, TTLCache
from driftshare._metrics import REGISTRY

# Integer-valued clock ticks keep every age exact, so ages can be compared with ==.
_ticks = st.integers(min_value=0, max_value=10**9).map(float)
_ttls = st.integers(min_value=1, max_value=10**6).map(float)
_property = settings(max_examples=200, deadline=None)


class _Upstream:
    """A compute function returning 1, 2, 3, … or failing when told to."""

    def __init__(self) -> None:
        self.calls = 0
        self.failure: str | None = None

    async def __call__(self) -> int | None:
        self.calls += 1
        if self.failure == "raise":
            raise ConnectionError("upstream down")
        if self.failure == "none":
            return None
        return self.calls


class _Gate:
    """A compute function that signals its start and finishes once opened."""

    def __init__(self, value: int = 99) -> None:
        self.calls = 0
        self.started = asyncio.Event()
        self.opened = asyncio.Event()
        self.finished = asyncio.Event()
        self.value = value

    async def __call__(self) -> int:
        self.calls += 1
        self.started.set()
        await self.opened.wait()
        # The cache stores the value in this same step, before anyone waiting on this runs.
        self.finished.set()
        return self.value


def _run(fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(fn())


@_property
@given(t0=_ticks, ttl=_ttls, data=st.data())
def test_within_ttl_nothing_is_recomputed(t0: float, ttl: float, data: st.DataObject) -> None:
    offsets = sorted(data.draw(st.lists(st.integers(0, int(ttl) - 1).map(float), max_size=20)))
    clock = FakeClock(t0)
    cache = TTLCache(clock=clock)
    upstream = _Upstream()

    async def scenario() -> None:
        first = await cache.get("k", ttl=ttl, compute=upstream, kind="p")
        assert first == Cached(1, False, 0.0)
        for offset in offsets:
            clock.now = t0 + offset
            hit = await cache.get("k", ttl=ttl, compute=upstream, kind="p")
            assert hit == Cached(1, False, offset)

    _run(scenario)
    assert upstream.calls == 1
    assert cache.stats()["hits"] == ({"p": len(offsets)} if offsets else {})
    assert cache.stats()["misses"] == {"p": 1}


@_property
@given(t0=_ticks, ttl=_ttls, extra=_ticks)
def test_after_ttl_a_fresh_value_is_computed(t0: float, ttl: float, extra: float) -> None:
    clock = FakeClock(t0)
    cache = TTLCache(clock=clock)
    upstream = _Upstream()

    async def scenario() -> tuple[Cached[int] | None, Cached[int] | None]:
        await cache.get("k", ttl=ttl, compute=upstream, kind="p")
        clock.now = t0 + ttl + extra
        refreshed = await cache.get("k", ttl=ttl, compute=upstream, kind="p")
        clock.now += ttl - 1
        return refreshed, await cache.get("k", ttl=ttl, compute=upstream, kind="p")

    refreshed, later = _run(scenario)
    assert refreshed == Cached(2, False, 0.0)
    assert later == Cached(2, False, ttl - 1)
    assert upstream.calls == 2


@_property
@given(
    t0=_ticks,
    ttl=_ttls,
    max_staleness=_ticks,
    extra=_ticks,
    failure=st.sampled_from(["raise", "none"]),
)
def test_stale_value_is_served_on_failure_until_max_staleness(
    t0: float, ttl: float, max_staleness: float, extra: float, failure: str
) -> None:
    clock = FakeClock(t0)
    cache = TTLCache(clock=clock, max_staleness_s=max_staleness)
    upstream = _Upstream()

    async def scenario() -> tuple[Cached[int] | None, Cached[int] | None]:
        await cache.get("k", ttl=ttl, compute=upstream, kind="p")
        upstream.failure = failure
        clock.now = t0 + ttl + extra
        served = await cache.get("k", ttl=ttl, compute=upstream, kind="p")
        clock.now = t0 + max(ttl, max_staleness) + 1
        return served, await cache.get("k", ttl=ttl, compute=upstream, kind="p")

    served, past_staleness = _run(scenario)
    age = ttl + extra
    assert served == (Cached(1, True, age) if age <= max_staleness else None)
    assert past_staleness is None
    assert cache.peek("k") is None
    assert upstream.calls == 3


@_property
@given(callers=st.integers(min_value=1, max_value=40), fail=st.booleans())
def test_concurrent_misses_compute_once(callers: int, fail: bool) -> None:
    cache = TTLCache(clock=FakeClock())

    async def scenario() -> list[Cached[int] | None]:
        gate = _Gate()

        async def compute() -> int:
            value = await gate()
            if fail:
                raise ConnectionError("upstream down")
            return value

        tasks = [
            asyncio.create_task(cache.get("k", ttl=5.0, compute=compute, kind="p"))
            for _ in range(callers)
        ]
        await gate.started.wait()
        assert cache.stats()["inflight"] == 1
        gate.opened.set()
        results = await asyncio.gather(*tasks)
        assert gate.calls == 1
        return results

    results = _run(scenario)
    assert results == [None if fail else Cached(99, False, 0.0)] * callers
    assert cache.stats()["misses"] == {"p": callers}
    assert cache.stats()["inflight"] == 0


@_property
@given(data=st.data(), callers=st.integers(min_value=1, max_value=30))
def test_cancelling_waiters_does_not_affect_the_others(callers: int, data: st.DataObject) -> None:
    cancelled = data.draw(st.sets(st.integers(0, callers - 1)))
    cache = TTLCache(clock=FakeClock())

    async def scenario() -> list[Any]:
        gate = _Gate()
        tasks = [
            asyncio.create_task(cache.get("k", ttl=5.0, compute=gate, kind="p"))
            for _ in range(callers)
        ]
        await gate.started.wait()
        for i in cancelled:
            tasks[i].cancel()
        gate.opened.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        # Even with every waiter gone the computation finishes and stores its value.
        await gate.finished.wait()
        assert gate.calls == 1
        return results

    results = _run(scenario)
    for i, result in enumerate(results):
        if i in cancelled:
            assert isinstance(result, asyncio.CancelledError)
        else:
            assert result == Cached(99, False, 0.0)
    assert cache.peek("k") == Cached(99, False, 0.0)


def test_hit_completes_without_suspending() -> None:
    cache = TTLCache(clock=FakeClock())
    upstream = _Upstream()
    _run(lambda: cache.get("k", ttl=5.0, compute=upstream, kind="p"))

    coro = cache.get("k", ttl=5.0, compute=upstream, kind="p")
    # A hit returns on the first step: no await suspends it, and no event loop is needed.
    with pytest.raises(StopIteration) as done:
        coro.send(None)
    assert done.value.value == Cached(1, False, 0.0)


async def test_a_miss_that_need_not_wait_completes_without_suspending() -> None:
    cache = TTLCache(clock=FakeClock())
    upstream = _Upstream()

    coro = cache.get("k", ttl=5.0, compute=upstream, kind="p")
    # Computed in the caller's own step: no task queued behind the loop's other callbacks.
    with pytest.raises(StopIteration) as done:
        coro.send(None)
    assert done.value.value == Cached(1, False, 0.0)
    assert cache.peek("k") == Cached(1, False, 0.0)
    assert cache.stats()["inflight"] == 0


async def test_a_computation_that_waits_goes_on_after_its_first_caller_is_cancelled() -> None:
    cache = TTLCache(clock=FakeClock())
    gate = _Gate()
    first = asyncio.create_task(cache.get("k", ttl=5.0, compute=gate, kind="p"))
    await gate.started.wait()
    second = asyncio.create_task(cache.get("k", ttl=5.0, compute=gate, kind="p"))
    first.cancel()
    gate.opened.set()

    assert await second == Cached(99, False, 0.0)
    with pytest.raises(asyncio.CancelledError):
        await first
    assert gate.calls == 1
    assert cache.peek("k") == Cached(99, False, 0.0)


def test_get_fresh_and_peek() -> None:
    clock = FakeClock()
    cache = TTLCache(clock=clock)
    assert cache.get_fresh("k") is None
    assert cache.peek("k") is None

    _run(lambda: cache.get("k", ttl=5.0, compute=_Upstream(), kind="p"))
    clock.now = 4.0
    assert cache.get_fresh("k", kind="p") == Cached(1, False, 4.0)
    assert cache.get_fresh("k") == Cached(1, False, 4.0)
    clock.now = 5.0
    assert cache.get_fresh("k", kind="p") is None
    assert cache.peek("k") == Cached(1, True, 5.0)
    assert cache.stats()["hits"] == {"p": 1}


def test_refresh_computes_a_miss_without_looking_for_a_hit() -> None:
    cache = TTLCache(clock=FakeClock())
    upstream = _Upstream()

    async def fill_then_refresh() -> tuple[Cached[int] | None, Cached[int] | None]:
        first = await cache.refresh("k", ttl=5.0, compute=upstream, kind="p")
        return first, await cache.refresh("k", ttl=5.0, compute=upstream, kind="p")

    assert _run(fill_then_refresh) == (Cached(1, False, 0.0), Cached(2, False, 0.0))
    assert cache.stats()["hits"] == {}
    assert cache.stats()["misses"] == {"p": 2}
    upstream.failure = "raise"
    assert _run(lambda: cache.refresh("k", ttl=5.0, compute=upstream, kind="p")) == Cached(
        2, True, 0.0
    )


def test_each_entry_keeps_the_ttl_it_was_stored_with() -> None:
    clock = FakeClock()
    cache = TTLCache(clock=clock)
    upstream = _Upstream()

    async def scenario() -> Cached[int] | None:
        await cache.get("k", ttl=10.0, compute=upstream, kind="p")
        clock.now = 8.0
        return await cache.get("k", ttl=1.0, compute=upstream, kind="p")

    assert _run(scenario) == Cached(1, False, 8.0)
    assert upstream.calls == 1


def test_invalidate_and_clear() -> None:
    cache = TTLCache(clock=FakeClock())
    upstream = _Upstream()

    async def scenario() -> None:
        for key in ("a", "b", "c"):
            await cache.get(key, ttl=5.0, compute=upstream, kind="p")
        assert cache.stats()["entries"] == 3
        cache.invalidate("a")
        cache.invalidate("missing")
        assert cache.peek("a") is None
        assert await cache.get("a", ttl=5.0, compute=upstream, kind="p") == Cached(4, False, 0.0)
        cache.clear()
        assert cache.stats()["entries"] == 0

    _run(scenario)
    assert upstream.calls == 4


async def test_invalidated_computation_does_not_store_its_result() -> None:
    cache = TTLCache(clock=FakeClock())
    gate = _Gate(value=7)
    waiter = asyncio.create_task(cache.get("k", ttl=5.0, compute=gate, kind="p"))
    await gate.started.wait()

    cache.invalidate("k")
    gate.opened.set()

    assert await waiter == Cached(7, False, 0.0)
    assert cache.peek("k") is None


async def test_compute_errors_are_logged_not_raised_and_urls_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = TTLCache(clock=FakeClock())

    async def broken() -> int:
        raise RuntimeError("HTTP 500 from https://rpc.example/?api-key=SECRETKEY123")

    with caplog.at_level(logging.WARNING, logger="driftshare._data.cache"):
        assert await cache.get("k", ttl=5.0, compute=broken, kind="funding") is None

    assert "computing funding 'k' failed: RuntimeError" in caplog.text
    assert "https://rpc.example/?***" in caplog.text
    assert "SECRETKEY123" not in caplog.text


async def test_computation_cancelled_from_inside_counts_as_failure() -> None:
    clock = FakeClock()
    cache = TTLCache(clock=clock)
    await cache.get("k", ttl=1.0, compute=_Upstream(), kind="p")
    clock.now = 2.0

    async def cancelled_inside() -> int:
        raise asyncio.CancelledError

    assert await cache.get("k", ttl=1.0, compute=cancelled_inside, kind="p") == Cached(1, True, 2.0)


def test_inflight_computation_of_a_dead_loop_does_not_block_a_later_loop() -> None:
    cache = TTLCache(clock=FakeClock())
    dead = asyncio.new_event_loop()
    try:
        gate = _Gate()
        abandoned = {dead.create_task(cache.get("k", ttl=5.0, compute=gate, kind="p"))}
        dead.run_until_complete(gate.started.wait())
        abandoned |= asyncio.all_tasks(dead)
    finally:
        dead.close()
    for task in abandoned:
        # Abandoned on purpose, like a loop torn down mid-request; spare the GC warning.
        task._log_destroy_pending = False  # type: ignore[attr-defined]
    assert cache.stats()["inflight"] == 1

    upstream = _Upstream()
    result = asyncio.run(asyncio.wait_for(cache.get("k", ttl=5.0, compute=upstream, kind="p"), 5))

    assert result == Cached(1, False, 0.0)
    assert cache.peek("k") == Cached(1, False, 0.0)


def test_prometheus_counters_follow_hits_and_misses() -> None:
    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"kind": "metrics-probe"}) or 0.0

    hits, misses = sample("drift_cache_hits_total"), sample("drift_cache_misses_total")
    cache = TTLCache(clock=FakeClock())

    async def scenario() -> None:
        for _ in range(3):
            await cache.get("k", ttl=5.0, compute=_Upstream(), kind="metrics-probe")

    _run(scenario)
    assert sample("drift_cache_hits_total") - hits == 2
    assert sample("drift_cache_misses_total") - misses == 1


@pytest.mark.parametrize("ttl", [-1.0, float("nan")])
async def test_bad_ttl_is_rejected(ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl must be >= 0"):
        await TTLCache().get("k", ttl=ttl, compute=_Upstream(), kind="p")


def test_bad_max_staleness_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_staleness_s must be >= 0"):
        TTLCache(max_staleness_s=-1.0)
