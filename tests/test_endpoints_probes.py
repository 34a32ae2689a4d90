"""Fail-over probes: within the client's rate limit, and a 429 means "alive, back off"."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx

from conftest import FakeClock
from driftshare._client.endpoints import EndpointSelector
from driftshare._client.health import _Probes
from driftshare._transport import RpcStats, SharedLimits
from driftshare.config import load_settings

A, B = "http://a.test/", "http://b.test/"


def _shared(clock: FakeClock) -> Any:
    return SimpleNamespace(
        endpoints=EndpointSelector([A, B], clock=clock),
        limits=SharedLimits(rps=1000.0, burst=10, clock=clock),
        rpc=RpcStats(),
        settings=load_settings(retry_backoff=0.5, retry_backoff_cap=30.0),
    )


def _prober(seen: list[str], response: httpx.Response) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return response

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_a_rate_limited_preferred_endpoint_is_alive_and_left_alone_as_asked() -> None:
    clock = FakeClock(100.0)
    shared = _shared(clock)
    selector: EndpointSelector = shared.endpoints
    selector.report(A, False)
    selector.report(A, False)
    clock.now += 3.0
    assert selector.choose() == B

    seen: list[str] = []
    refusal = httpx.Response(429, headers={"Retry-After": "5"})
    async with _prober(seen, refusal) as prober:
        probes = _Probes(shared, prober, clock)
        every = selector.recover_after_s / 4
        await probes.probe(A, every)
        clock.now += every + 0.1
        await probes.probe(A, every)  # Retry-After: 5 is not over yet
        assert seen == [A]
        clock.now += 5.0 - every
        await probes.probe(A, every)
        assert seen == [A, A]

    # Refusing, not failing: once it has been alive for the recover period, it is preferred.
    clock.now += selector.recover_after_s
    assert selector.choose() == A
    assert shared.rpc.snapshot()["by_status"] == {"429": 2}


async def test_the_active_endpoint_is_not_probed_while_it_asks_for_quiet() -> None:
    clock = FakeClock(100.0)
    shared = _shared(clock)
    shared.limits.pressure.push_back(5.0, rate_limited=True, sent_at=clock.now)
    seen: list[str] = []
    async with _prober(seen, httpx.Response(200, json={"result": 1})) as prober:
        probes = _Probes(shared, prober, clock)
        await probes.probe(A, 0.5)
        assert seen == []
        clock.now += 5.1
        await probes.probe(A, 0.5)
        assert seen == [A]
