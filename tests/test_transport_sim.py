"""RateLimitedTransport against the simulator: a provider that allows less than DRIFT_RPC_RPS."""

from __future__ import annotations

import asyncio

from driftshare._transport import RateLimitedTransport, SharedLimits, make_async_client
from driftshare.sim.pytest_plugin import SimulatorFactory

PROVIDER_RPS = 20.0
CLIENT_RPS = 40.0  # twice what the provider allows
ENGINES = 4
CALLS_PER_ENGINE = 40


async def test_a_provider_slower_than_rpc_rps_sees_few_429s_and_little_amplification(
    simulator_factory: SimulatorFactory,
) -> None:
    sim = await simulator_factory(markets=0, rate_limit=PROVIDER_RPS)
    transport = RateLimitedTransport(
        SharedLimits(rps=CLIENT_RPS), backoff_base=0.5, backoff_cap=5.0
    )
    client = make_async_client(sim.http_url, transport)
    slots: list[int] = []

    async def engine() -> None:
        for _ in range(CALLS_PER_ENGINE):
            slots.append((await client.get_slot()).value)

    try:
        await asyncio.gather(*(engine() for _ in range(ENGINES)))
    finally:
        await client.close()

    calls = ENGINES * CALLS_PER_ENGINE
    served = sim.stats()
    upstream = served["http_requests"]["total"]
    amplification = upstream / calls
    print(
        f"\n429 amplification: {calls} calls, {upstream} upstream requests "
        f"({amplification:.3f}x), {served['rate_limited']} answered 429, "
        f"rate now {transport.rate:g}/s"
    )
    assert len(slots) == calls  # every call was answered in the end
    assert amplification <= 1.2
    # The first 429s (those already in flight) cut the rate; later ones are rare probes.
    assert served["rate_limited"] <= ENGINES + 3
    assert transport.rate < CLIENT_RPS
