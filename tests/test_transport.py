"""RateLimitedTransport: retries, Retry-After, timeouts, rate limit, accounting, solana-py."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import itertools
import json
import logging
import random
import selectors
import ssl
import time
import warnings
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from solana.rpc.async_api import AsyncClient

from conftest import FakeClock
from driftshare._metrics import REGISTRY
from driftshare._transport import (
    RateLimitedTransport,
    RpcStats,
    SharedLimits,
    install_transport,
    make_async_client,
    retry_after_seconds,
    tls_context,
)
from driftshare.config import load_settings

URL = "http://rpc.test/"
Step = httpx.Response | Exception


class _Sleeps:
    """A fake ``sleep`` recording each requested wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _script(*steps: Step, then: Step | None = None) -> tuple[httpx.MockTransport, list[bytes]]:
    """A mock upstream answering ``steps`` in order, then ``then`` forever; logs request bodies."""
    queue = list(steps)
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        step = queue.pop(0) if queue else then
        assert step is not None, "upstream script ran out"
        if isinstance(step, Exception):
            raise step
        return step

    return httpx.MockTransport(handler), seen


def _transport(
    inner: httpx.AsyncBaseTransport,
    sleeps: _Sleeps,
    clock: Callable[[], float] = time.monotonic,
    **kw: Any,
) -> RateLimitedTransport:
    # Room for every scripted retry: the budget has tests of its own.
    limits = SharedLimits(rps=1e6, burst=1000, retry_budget_min=100, retry_streak=100, clock=clock)
    kw.setdefault("max_retries", 5)
    return RateLimitedTransport(
        limits, inner=inner, sleep=sleeps, rng=random.Random(7), clock=clock, **kw
    )


def _rpc(method: str = "getSlot") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": []}


def _ok(result: Any = 1) -> httpx.Response:
    return httpx.Response(200, json={"jsonrpc": "2.0", "id": 1, "result": result})


async def _post(transport: RateLimitedTransport, body: Any = None, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(transport=transport) as client:
        return await client.post(URL, json=_rpc() if body is None else body, **kw)


def _assert_full_jitter(waits: list[float], base: float, cap: float, n: int) -> None:
    """``n`` waits, each full jitter: within [0, min(cap, base * 2**attempt)]."""
    assert len(waits) == n
    for attempt, wait in enumerate(waits):
        assert 0.0 <= wait <= min(cap, base * 2.0**attempt)


async def test_429_is_retried_after_at_least_retry_after() -> None:
    sleeps = _Sleeps()
    inner, seen = _script(httpx.Response(429, headers={"Retry-After": "7"}), _ok(42))
    transport = _transport(inner, sleeps, backoff_base=0.5)

    response = await _post(transport)

    assert response.status_code == 200
    assert response.json()["result"] == 42
    assert len(seen) == 2
    assert sleeps.waits == [7.0]
    snap = transport.stats.snapshot()
    assert snap["rate_limited"] == 1
    assert snap["retries"] == 1
    assert snap["failures"] == 0
    assert snap["by_status"] == {"200": 1, "429": 1}


async def test_retry_after_longer_jitter_wins_over_short_retry_after() -> None:
    sleeps = _Sleeps()
    inner, _ = _script(httpx.Response(429, headers={"Retry-After": "0"}), _ok())
    transport = _transport(inner, sleeps, backoff_base=4.0, backoff_cap=30.0)

    await _post(transport)

    _assert_full_jitter(sleeps.waits, 4.0, 30.0, 1)
    assert sleeps.waits[0] > 0.0


async def test_retry_after_http_date_is_counted_from_the_wall_clock() -> None:
    sleeps = _Sleeps()
    now = 1_445_412_450.25  # 2015-10-21 07:27:30.25 UTC
    inner, _ = _script(
        httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), _ok()
    )
    transport = _transport(inner, sleeps, backoff_base=0.1, wall_clock=lambda: now)

    await _post(transport)

    assert sleeps.waits == [29.75]


@pytest.mark.parametrize("header", ["86400", "Wed, 22 Oct 2015 07:27:30 GMT"])
async def test_retry_after_is_capped_at_backoff_cap(header: str) -> None:
    sleeps = _Sleeps()
    inner, seen = _script(httpx.Response(429, headers={"Retry-After": header}), _ok())
    transport = _transport(
        inner, sleeps, backoff_base=0.1, backoff_cap=12.0, wall_clock=lambda: 1_445_412_450.0
    )

    response = await _post(transport)

    assert response.status_code == 200
    assert len(seen) == 2
    assert sleeps.waits == [12.0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30", 30.0),
        (" 1.5 ", 1.5),
        ("-3", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 27, 30, tzinfo=UTC)
    assert retry_after_seconds(value, now=now) == expected


async def test_5xx_is_retried_with_full_jitter_backoff() -> None:
    sleeps = _Sleeps()
    inner, seen = _script(httpx.Response(503), httpx.Response(502), httpx.Response(500), _ok())
    transport = _transport(inner, sleeps, backoff_base=2.0, backoff_cap=5.0)

    response = await _post(transport)

    assert response.status_code == 200
    assert len(seen) == 4
    _assert_full_jitter(sleeps.waits, 2.0, 5.0, 3)
    assert transport.stats.snapshot()["by_status"] == {"200": 1, "500": 1, "502": 1, "503": 1}


async def test_backoff_is_capped() -> None:
    sleeps = _Sleeps()
    inner, _ = _script(then=httpx.Response(500))
    transport = _transport(inner, sleeps, max_retries=8, backoff_base=1.0, backoff_cap=3.0)

    await _post(transport)

    _assert_full_jitter(sleeps.waits, 1.0, 3.0, 8)
    assert len(set(sleeps.waits)) > 1, "the waits are drawn, not fixed"


async def test_inner_timeout_and_connection_errors_are_retried() -> None:
    sleeps = _Sleeps()
    inner, seen = _script(httpx.ConnectTimeout("slow"), httpx.ConnectError("refused"), _ok())
    transport = _transport(inner, sleeps)

    response = await _post(transport)

    assert response.status_code == 200
    assert len(seen) == 3
    assert len(sleeps.waits) == 2
    assert transport.stats.snapshot()["by_status"] == {"200": 1, "error": 1, "timeout": 1}


async def test_own_timeout_cuts_a_hung_request_and_retries() -> None:
    never = asyncio.Event()
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            await never.wait()
        return _ok()

    transport = _transport(httpx.MockTransport(handler), _Sleeps(), timeout_s=0.01)

    response = await _post(transport)

    assert response.status_code == 200
    assert calls == 2
    assert transport.stats.snapshot()["by_status"] == {"200": 1, "timeout": 1}


async def test_gives_up_after_max_retries_and_returns_last_response() -> None:
    sleeps = _Sleeps()
    inner, seen = _script(then=httpx.Response(429, text="slow down"))
    transport = _transport(inner, sleeps, max_retries=3)

    response = await _post(transport)

    assert response.status_code == 429
    assert response.text == "slow down"
    assert len(seen) == 4
    assert len(sleeps.waits) == 3
    snap = transport.stats.snapshot()
    assert (snap["requests"], snap["retries"], snap["failures"], snap["rate_limited"]) == (
        4,
        3,
        1,
        4,
    )


async def test_gives_up_after_max_retries_and_reraises_last_exception() -> None:
    inner, seen = _script(then=httpx.ConnectError("refused"))
    transport = _transport(inner, _Sleeps(), max_retries=2)

    with pytest.raises(httpx.ConnectError, match="refused"):
        await _post(transport)

    assert len(seen) == 3
    assert transport.stats.snapshot()["methods"]["getSlot"] == {
        "requests": 3,
        "by_status": {"error": 3},
        "retries": 2,
        "failures": 1,
    }


async def test_zero_retries_sends_once() -> None:
    sleeps = _Sleeps()
    inner, seen = _script(then=httpx.Response(503))
    transport = _transport(inner, sleeps, max_retries=0)

    assert (await _post(transport)).status_code == 503
    assert len(seen) == 1
    assert sleeps.waits == []


async def test_client_errors_are_not_retried() -> None:
    sleeps = _Sleeps()
    inner, seen = _script(httpx.Response(400), _ok())
    transport = _transport(inner, sleeps)

    assert (await _post(transport)).status_code == 400
    assert len(seen) == 1
    assert sleeps.waits == []
    assert transport.stats.snapshot()["failures"] == 1


async def test_methods_are_counted_including_batch_and_unknown() -> None:
    inner, _ = _script(then=_ok())
    transport = _transport(inner, _Sleeps())

    async with httpx.AsyncClient(transport=transport) as client:
        await client.post(URL, json=_rpc("getSlot"))
        await client.post(URL, json=_rpc("getSlot"))
        await client.post(URL, json=_rpc("getMultipleAccounts"))
        await client.post(URL, json=[_rpc("getSlot"), _rpc("getBalance")])
        await client.post(URL, content=b"{not json")
        await client.post(URL, json={"method": "x" * 200})
        await client.post(URL, json={"method": 5})

    snap = transport.stats.snapshot()
    assert {m: v["requests"] for m, v in snap["methods"].items()} == {
        "batch": 1,
        "getMultipleAccounts": 1,
        "getSlot": 2,
        "unknown": 3,
    }
    assert snap["requests"] == 7
    json.dumps(snap)


async def test_prometheus_metrics_follow_the_stats() -> None:
    def sample(name: str, labels: dict[str, str] | None = None) -> float:
        return REGISTRY.get_sample_value(name, labels or {}) or 0.0

    method = "getMetricsProbe"
    before = (
        sample("drift_rpc_requests_total", {"method": method, "status": "429"}),
        sample("drift_rpc_requests_total", {"method": method, "status": "200"}),
        sample("drift_rpc_retries_total", {"method": method}),
        sample("drift_rate_limited_total"),
        sample("drift_rpc_errors_total", {"method": method}),
    )
    inner, _ = _script(httpx.Response(429), httpx.Response(429), _ok(), then=httpx.Response(500))
    transport = _transport(inner, _Sleeps(), max_retries=2)

    await _post(transport, _rpc(method))
    await _post(transport, _rpc(method))

    after = (
        sample("drift_rpc_requests_total", {"method": method, "status": "429"}),
        sample("drift_rpc_requests_total", {"method": method, "status": "200"}),
        sample("drift_rpc_retries_total", {"method": method}),
        sample("drift_rate_limited_total"),
        sample("drift_rpc_errors_total", {"method": method}),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 4, 2, 1]


def _rate_limit_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "answered HTTP 429" in r.getMessage()]


async def test_429_storm_logs_once_then_one_summary_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    inner, _ = _script(then=httpx.Response(429))
    transport = _transport(inner, _Sleeps(), max_retries=9, clock=clock, log_interval_s=10.0)
    secret_url = "http://rpc.test/?api-key=SECRETKEY123"
    caplog.set_level(logging.WARNING, logger="driftshare._transport.http")

    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(3):
            await client.post(secret_url, json=_rpc())

        assert len(_rate_limit_lines(caplog)) == 1
        clock.now = 12.0
        await client.post(secret_url, json=_rpc())

    storm = _rate_limit_lines(caplog)
    assert len(storm) == 2
    # 30 answers (3 posts of 1 + 9 retries) before the clock moved: 1 line, 29 held back.
    assert "(29 more like it in the last 12s)" in storm[1]
    assert "SECRETKEY123" not in caplog.text
    assert transport.stats.rate_limited == 40


async def test_an_outage_logs_its_first_failure_then_one_line_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    inner, _ = _script(then=httpx.ConnectError("refused"))
    transport = _transport(inner, _Sleeps(), max_retries=0, clock=clock, log_interval_s=10.0)
    caplog.set_level(logging.DEBUG, logger="driftshare._transport.http")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    for _ in range(5):
        with pytest.raises(httpx.ConnectError):
            await _post(transport)
    assert len(warnings()) == 1
    assert "failed: ConnectError: refused" in warnings()[0]
    clock.now = 10.0
    with pytest.raises(httpx.ConnectError):
        await _post(transport)
    assert len(warnings()) == 2
    assert "(4 more like it in the last 10s)" in warnings()[1]
    # Nothing is lost: the held-back failures are at debug level, and all are counted.
    assert sum("failed: ConnectError" in r.getMessage() for r in caplog.records) == 6


class _VirtualClockSelector(selectors.DefaultSelector):
    """Jumps a virtual clock over every select timeout instead of waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None:
            # A hair of time even for a zero timeout, as a real clock would give: aiolimiter
            # re-arms a timer for a float rounding remainder and would otherwise spin.
            self.now += max(timeout, 1e-13)
            timeout = 0
        return super().select(timeout)


class _VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: timers fire in order, at once (as the looptime plugin)."""

    def __init__(self) -> None:
        self._virtual = _VirtualClockSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


def _run_virtual(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    loop = _VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro_fn())
    finally:
        loop.close()


def test_limiter_spaces_requests_at_rps_after_burst() -> None:
    arrivals: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        arrivals.append(asyncio.get_running_loop().time())
        return _ok()

    transport = RateLimitedTransport(
        SharedLimits(rps=10.0, burst=2), inner=httpx.MockTransport(handler)
    )

    async def burst_of_six() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            await asyncio.gather(*(client.post(URL, json=_rpc()) for _ in range(6)))

    _run_virtual(burst_of_six)

    assert arrivals == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3, 0.4], abs=1e-9)


def test_retries_also_pass_the_limiter() -> None:
    arrivals: list[float] = []
    answers = iter([httpx.Response(503), httpx.Response(503), _ok()])

    def handler(request: httpx.Request) -> httpx.Response:
        arrivals.append(asyncio.get_running_loop().time())
        return next(answers)

    transport = RateLimitedTransport(
        SharedLimits(rps=2.0, retry_budget_min=2, retry_streak=2),
        inner=httpx.MockTransport(handler),
        sleep=_Sleeps(),
        rng=random.Random(1),
    )

    async def one_request() -> int:
        async with httpx.AsyncClient(transport=transport) as client:
            return (await client.post(URL, json=_rpc())).status_code

    assert _run_virtual(one_request) == 200
    assert arrivals == pytest.approx([0.0, 0.5, 1.0], abs=1e-9)


def test_works_across_successive_event_loops() -> None:
    inner, seen = _script(then=_ok())
    transport = RateLimitedTransport(SharedLimits(rps=1000.0), inner=inner)
    limiters = []

    async def three_requests() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(3):
                assert (await client.post(URL, json=_rpc())).status_code == 200
        limiters.append(transport.limiter)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        asyncio.run(three_requests())
        asyncio.run(three_requests())

    assert len(seen) == 6
    assert limiters[0] is not limiters[1]
    assert transport.stats.snapshot()["by_status"] == {"200": 6}


async def test_transports_load_the_ca_bundle_once(
    monkeypatch: pytest.MonkeyPatch, closed_port_url: str
) -> None:
    """A TLS context costs about 40 ms of CPU to make: every connection and rebuild of the
    process shares one."""
    made: list[ssl.SSLContext] = []
    make = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append(make(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(ssl, "create_default_context", counted)
    # httpx's own, not the suite's shared default (conftest).
    monkeypatch.setattr(
        httpx._transports.default, "create_ssl_context", httpx._config.create_ssl_context
    )
    tls_context.cache_clear()
    try:
        transports = [
            RateLimitedTransport.from_settings(load_settings(max_retries=0)) for _ in range(3)
        ]
        async with contextlib.AsyncExitStack() as stack:
            for transport in transports:
                client = await stack.enter_async_context(httpx.AsyncClient(transport=transport))
                with contextlib.suppress(httpx.HTTPError):
                    await client.post(closed_port_url, json={"method": "getSlot"}, timeout=0.5)
        assert len(made) == 1
    finally:
        tls_context.cache_clear()


def test_from_settings() -> None:
    settings = load_settings(
        rpc_rps=4.5,
        rpc_burst=3,
        max_retries=2,
        retry_backoff=0.25,
        retry_backoff_cap=9.0,
        request_timeout_s=7.0,
    )
    stats = RpcStats()

    transport = RateLimitedTransport.from_settings(settings, stats=stats)

    assert (
        transport.limits.rps,
        transport.limits.burst,
        transport.max_retries,
        transport.backoff_base,
        transport.backoff_cap,
        transport.timeout_s,
    ) == (4.5, 3, 2, 0.25, 9.0, 7.0)
    assert transport.stats is stats


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rps": 0}, "rps must be > 0"),
        ({"rps": 1, "burst": 0}, "burst must be an int >= 1"),
        ({"rps": 1, "retry_window_s": 0}, "retry_window_s must be > 0"),
        ({"rps": 1, "retry_streak": -1}, "retry_streak must be an int >= 0"),
    ],
)
def test_bad_limits_are_rejected_clearly(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SharedLimits(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_retries": -1}, "max_retries must be an int >= 0"),
        ({"backoff_base": 0}, "backoff_base must be > 0"),
        ({"backoff_cap": -1}, "backoff_cap must be > 0"),
        ({"timeout_s": 0}, "timeout_s must be > 0"),
    ],
)
def test_bad_arguments_are_rejected_clearly(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimitedTransport(SharedLimits(rps=1), **kwargs)


def test_install_transport_rejects_non_http_clients() -> None:
    with pytest.raises(TypeError, match=r"needs a solana\.rpc\.async_api\.AsyncClient"):
        install_transport(object(), RateLimitedTransport(SharedLimits(rps=1)))


async def test_solana_client_and_driftpy_style_posts_go_through_the_transport() -> None:
    rpc_log: list[str] = []

    async def rpc(request: web.Request) -> web.Response:
        body = await request.json()
        method = body["method"]
        rpc_log.append(method)
        if method == "getSlot" and rpc_log.count("getSlot") == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        result: Any = 4242 if method == "getSlot" else []
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": result})

    app = web.Application()
    app.router.add_post("/", rpc)
    sleeps = _Sleeps()
    transport = RateLimitedTransport(SharedLimits(rps=1000.0), sleep=sleeps, rng=random.Random(0))
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        client = make_async_client(str(server.make_url("/")), transport)
        try:
            slot = await client.get_slot()
            # As driftpy's MarketMap does: straight on the session, plain JSON labelled gzip.
            posted = await client._provider.session.post(
                client._provider.endpoint_uri,
                json={"jsonrpc": "2.0", "id": 7, "method": "getProgramAccounts", "params": []},
                headers={"content-encoding": "gzip"},
            )
        finally:
            await client.close()

    assert slot.value == 4242
    assert posted.json()["result"] == []
    assert rpc_log == ["getSlot", "getSlot", "getProgramAccounts"]
    assert sleeps.waits[0] >= 1.0
    snap = transport.stats.snapshot()
    assert snap["methods"]["getSlot"]["by_status"] == {"200": 1, "429": 1}
    assert snap["methods"]["getProgramAccounts"]["by_status"] == {"200": 1}
    assert snap["requests"] == len(rpc_log)


async def test_real_gzip_bodies_keep_their_label() -> None:
    labels: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        labels.append(request.headers.get("content-encoding"))
        return _ok()

    transport = _transport(httpx.MockTransport(handler), _Sleeps())
    body = json.dumps(_rpc()).encode()
    async with httpx.AsyncClient(transport=transport) as client:
        await client.post(URL, content=gzip.compress(body), headers={"content-encoding": "gzip"})
        await client.post(URL, content=body, headers={"content-encoding": "gzip"})

    assert labels == ["gzip", None]


def test_install_transport_keeps_timeout_and_headers() -> None:
    client = AsyncClient(URL, timeout=3.5)
    original = client._provider.session
    transport = RateLimitedTransport(SharedLimits(rps=1))

    install_transport(client, transport)

    session = client._provider.session
    assert session is not original
    assert session.timeout == original.timeout == httpx.Timeout(3.5)
    assert session.headers == original.headers
    assert session._transport is transport


# -- back-pressure, retry budget, deadline, idempotency ---------------------------------------


def _loop_clock() -> float:
    return asyncio.get_running_loop().time()


def test_a_429_cools_down_the_whole_client() -> None:
    arrivals: list[tuple[str, float]] = []

    rate_limited = asyncio.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        method = json.loads(request.content)["method"]
        arrivals.append((method, asyncio.get_running_loop().time()))
        if method == "first" and len(arrivals) == 1:
            rate_limited.set()
            return httpx.Response(429, headers={"Retry-After": "3"})
        return _ok()

    async def two_calls() -> None:
        transport = RateLimitedTransport(
            SharedLimits(rps=1000.0, clock=_loop_clock),
            inner=httpx.MockTransport(handler),
            clock=_loop_clock,
        )
        async with httpx.AsyncClient(transport=transport) as client:
            first = asyncio.create_task(client.post(URL, json=_rpc("first")))
            await rate_limited.wait()
            await client.post(URL, json=_rpc("second"))
            await first

    _run_virtual(two_calls)

    # The second call was not sent while the provider asked to wait, though it never got a 429.
    second = [t for m, t in arrivals if m == "second"]
    assert len(second) == 1
    assert second[0] >= 3.0


def test_a_429_halves_the_rate_which_creeps_back() -> None:
    arrivals: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        arrivals.append(asyncio.get_running_loop().time())
        if len(arrivals) == 3:
            return httpx.Response(429, headers={"Retry-After": "1"})
        return _ok()

    rates: list[float] = []

    async def calls() -> None:
        transport = RateLimitedTransport(
            SharedLimits(rps=10.0, clock=_loop_clock),
            max_retries=0,
            inner=httpx.MockTransport(handler),
            clock=_loop_clock,
        )
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(8):
                await client.post(URL, json=_rpc())
            rates.append(transport.rate)
            await asyncio.sleep(60.0)
            rates.append(transport.rate)

    _run_virtual(calls)

    assert arrivals[3] == pytest.approx(1.2, abs=1e-6)  # the cool-down of Retry-After: 1
    after_429 = [b - a for a, b in itertools.pairwise(arrivals[3:])]
    assert len(after_429) == 4
    assert all(gap == pytest.approx(0.2, abs=1e-6) for gap in after_429)
    assert rates == [5.0, 10.0]


def test_transports_sharing_limits_share_the_rate_and_the_cool_down() -> None:
    """A renewed session (a new transport on the same limits) keeps the 429's cool-down and
    halved rate, and old and new sessions together send within one ``rps``."""
    arrivals: list[tuple[str, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        arrivals.append((request.url.host, asyncio.get_running_loop().time()))
        if len(arrivals) == 1:
            return httpx.Response(429, headers={"Retry-After": "1"})
        return _ok()

    async def calls() -> None:
        limits = SharedLimits(rps=10.0, clock=_loop_clock)
        old = RateLimitedTransport(limits, max_retries=0, inner=httpx.MockTransport(handler))
        new = RateLimitedTransport(limits, max_retries=0, inner=httpx.MockTransport(handler))
        async with httpx.AsyncClient(transport=old) as first:
            assert (await first.post("http://old.test/", json=_rpc())).status_code == 429
            async with httpx.AsyncClient(transport=new) as second:
                assert new.rate == 5.0
                await asyncio.gather(
                    *(first.post("http://old.test/", json=_rpc()) for _ in range(3)),
                    *(second.post("http://new.test/", json=_rpc()) for _ in range(3)),
                )

    _run_virtual(calls)

    hosts = {host for host, _ in arrivals[1:]}
    assert hosts == {"old.test", "new.test"}
    times = [at for _, at in arrivals[1:]]
    assert times[0] == pytest.approx(1.0, abs=1e-6)  # the cool-down holds the new session too
    # Six calls from both sessions leave 0.2 s apart: one limiter at the halved rate.
    assert all(b - a == pytest.approx(0.2, abs=1e-6) for a, b in itertools.pairwise(sorted(times)))


async def test_retry_budget_caps_retries_at_a_fifth_of_calls() -> None:
    inner, seen = _script(then=httpx.Response(503))
    transport = RateLimitedTransport(
        SharedLimits(rps=1e6, burst=1000, retry_budget_min=0, retry_streak=100),
        max_retries=5,
        inner=inner,
        sleep=_Sleeps(),
    )

    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(20):
            await client.post(URL, json=_rpc())

    # Without a budget every call would be sent six times: 120 requests.
    assert len(seen) <= 20 * 1.2
    snap = transport.stats.snapshot()
    assert snap["calls"] == 20
    assert snap["amplification"] <= 1.2
    assert snap["budget_exhausted"] > 0


def test_a_5xx_burst_under_steady_traffic_is_retried_at_most_a_fifth() -> None:
    # One call a second, as a polling client makes: 10 s served, 10 s of 503, 10 s served.
    sent: list[tuple[float, int]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        now = asyncio.get_running_loop().time()
        status = 503 if 10.0 <= now < 20.0 else 200
        sent.append((now, status))
        return httpx.Response(status) if status == 503 else _ok()

    answers: list[tuple[float, int]] = []

    async def poll() -> None:
        loop = asyncio.get_running_loop()
        transport = RateLimitedTransport(
            SharedLimits(rps=10.0, clock=_loop_clock),
            backoff_base=1.0,
            inner=httpx.MockTransport(handler),
            clock=_loop_clock,
        )
        async with httpx.AsyncClient(transport=transport) as client:
            while loop.time() < 30.0:
                started = loop.time()
                answers.append((started, (await client.post(URL, json=_rpc())).status_code))
                await asyncio.sleep(max(0.0, started + 1.0 - loop.time()))

    _run_virtual(poll)

    in_burst = [t for t, _ in answers if 10.0 <= t < 20.0]
    sent_in_burst = [t for t, _ in sent if 10.0 <= t < 20.0]
    assert len(in_burst) >= 5
    assert len(sent_in_burst) <= 1.2 * len(in_burst)
    # Retrying resumes with the provider: every call after the burst is served.
    assert all(status == 200 for t, status in answers if t >= 20.0)


async def test_a_blip_is_still_retried() -> None:
    inner, seen = _script(httpx.Response(503), then=_ok())
    transport = RateLimitedTransport(SharedLimits(rps=1e6), inner=inner, sleep=_Sleeps())

    assert (await _post(transport)).status_code == 200
    assert (await _post(transport)).status_code == 200
    assert len(seen) == 3


def test_a_call_ends_at_its_deadline_however_many_attempts_remain() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    ended: list[float] = []

    async def one_call() -> None:
        transport = RateLimitedTransport(
            SharedLimits(rps=1000.0, clock=_loop_clock),
            timeout_s=10.0,
            deadline_s=4.0,
            inner=httpx.MockTransport(hang),
            clock=_loop_clock,
        )
        async with httpx.AsyncClient(transport=transport) as client:
            with pytest.raises(httpx.ReadTimeout, match="deadline"):
                await client.post(URL, json=_rpc())
        ended.append(asyncio.get_running_loop().time())

    _run_virtual(one_call)

    assert ended[0] == pytest.approx(4.0, abs=1e-6)


async def test_no_retry_whose_wait_would_cross_the_deadline() -> None:
    sleeps = _Sleeps()
    inner, seen = _script(then=httpx.Response(503, headers={"Retry-After": "20"}))
    transport = _transport(inner, sleeps, deadline_s=5.0)

    response = await _post(transport)

    assert response.status_code == 503
    assert len(seen) == 1
    assert sleeps.waits == []
    assert transport.stats.snapshot()["deadline_exceeded"] == 1


@pytest.mark.parametrize("method", ["sendTransaction", "sendRawTransaction", "requestAirdrop"])
@pytest.mark.parametrize(
    "failure",
    [httpx.ReadTimeout("slow"), httpx.Response(503), httpx.Response(429), httpx.ReadError("cut")],
    ids=["timeout", "503", "429", "read-error"],
)
async def test_non_idempotent_calls_are_never_sent_twice(method: str, failure: Step) -> None:
    inner, seen = _script(failure, then=_ok())
    transport = _transport(inner, _Sleeps())

    if isinstance(failure, Exception):
        with pytest.raises(type(failure)):
            await _post(transport, _rpc(method))
    else:
        assert (await _post(transport, _rpc(method))).status_code == failure.status_code
    assert len(seen) == 1


async def test_a_batch_holding_a_send_is_not_sent_twice() -> None:
    inner, seen = _script(httpx.Response(503), then=_ok())
    transport = _transport(inner, _Sleeps())

    await _post(transport, [_rpc("getSlot"), _rpc("sendTransaction")])

    assert len(seen) == 1


@pytest.mark.parametrize("error", [httpx.ConnectError("refused"), httpx.ConnectTimeout("syn")])
async def test_a_send_that_never_left_is_retried(error: Exception) -> None:
    inner, seen = _script(error, then=_ok())
    transport = _transport(inner, _Sleeps())

    assert (await _post(transport, _rpc("sendTransaction"))).status_code == 200
    assert len(seen) == 2


async def test_on_result_hears_whether_each_call_was_served() -> None:
    heard: list[tuple[str, bool]] = []
    inner, _ = _script(_ok(), httpx.Response(400), then=httpx.ConnectError("refused"))
    transport = _transport(
        inner, _Sleeps(), max_retries=1, on_result=lambda url, ok: heard.append((str(url), ok))
    )

    await _post(transport)
    await _post(transport)
    with pytest.raises(httpx.ConnectError):
        await _post(transport)

    assert heard == [(URL, True), (URL, True), (URL, False)]


def test_a_send_overtakes_the_reads_queued_at_the_limiter() -> None:
    arrivals: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        arrivals.append(json.loads(request.content)["method"])
        return _ok()

    transport = RateLimitedTransport(SharedLimits(rps=10.0), inner=httpx.MockTransport(handler))

    async def reads_then_a_send() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            reads = [asyncio.create_task(client.post(URL, json=_rpc())) for _ in range(8)]
            await asyncio.sleep(0.05)  # virtual time: every read is queued by now
            send = asyncio.create_task(client.post(URL, json=_rpc("sendTransaction")))
            await asyncio.gather(*reads, send)

    _run_virtual(reads_then_a_send)

    # The first read took the only slot at once and the second was waiting at the limiter
    # for the next; the send goes right after them, before the 6 reads queued behind.
    assert arrivals[:3] == ["getSlot", "getSlot", "sendTransaction"]
    assert len(arrivals) == 9


def test_a_cancelled_waiter_passes_its_turn_on() -> None:
    arrivals: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        arrivals.append(json.loads(request.content)["id"])
        return _ok()

    transport = RateLimitedTransport(SharedLimits(rps=10.0), inner=httpx.MockTransport(handler))

    async def cancel_some() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            calls = [
                asyncio.create_task(client.post(URL, json={**_rpc(), "id": n})) for n in range(5)
            ]
            await asyncio.sleep(0.05)
            calls[1].cancel()
            calls[2].cancel()
            await asyncio.gather(*calls, return_exceptions=True)

    _run_virtual(cancel_some)

    assert arrivals == [0, 3, 4]


def test_a_flood_of_sends_lets_every_other_turn_go_to_a_read() -> None:
    arrivals: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        arrivals.append(json.loads(request.content)["method"])
        return _ok()

    transport = RateLimitedTransport(SharedLimits(rps=10.0), inner=httpx.MockTransport(handler))

    async def sends_then_reads() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            sends = [
                asyncio.create_task(client.post(URL, json=_rpc("sendTransaction")))
                for _ in range(6)
            ]
            await asyncio.sleep(0.05)
            reads = [asyncio.create_task(client.post(URL, json=_rpc())) for _ in range(2)]
            await asyncio.gather(*sends, *reads)

    _run_virtual(sends_then_reads)

    # Two sends were out (one sent, one at the limiter) when the reads queued: from then on
    # the lanes alternate, so the reads are not left behind the four sends still queued.
    assert arrivals == [
        "sendTransaction",
        "sendTransaction",
        "getSlot",
        "sendTransaction",
        "getSlot",
        "sendTransaction",
        "sendTransaction",
        "sendTransaction",
    ]
