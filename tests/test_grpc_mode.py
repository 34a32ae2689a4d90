"""The shared client in ``DRIFT_SUBSCRIPTION=grpc`` mode against the simulator's Geyser server."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]
import pytest
from prometheus_client import generate_latest
from solders.keypair import Keypair

from conftest import GroundTruth, eventually
from driftshare import DriftAdapter
from driftshare._metrics import REGISTRY
from driftshare._serve import Runtime, ServeConfig
from driftshare.manager import DriftClientManager
from driftshare.models import FundingRateData, MarketData
from driftshare.sim import Simulator
from driftshare.sim.pytest_plugin import SimulatorFactory
from sim_users import put_user, put_user_stats

TOKEN = "grpc-mode-secret-token-9a8b7c"


def _numbers(value: FundingRateData | MarketData) -> FundingRateData | MarketData:
    # How long a value sat in the cache and when its accounts were last confirmed depend
    # on the moment of the read, not on the mode.
    return dataclasses.replace(value, age_s=0.0, data_age_s=0.0)


@pytest.fixture
async def sim(simulator_factory: SimulatorFactory) -> Simulator:
    return await simulator_factory(markets=6, grpc_port=0, grpc_token=TOKEN)


def configure(sim: Simulator, mode: str = "grpc", **extra: Any) -> None:
    DriftClientManager.configure(
        rpc_url=sim.http_url,
        subscription=mode,
        grpc_url=sim.grpc_url,
        grpc_token=TOKEN,
        health_interval_s=3600,
        **extra,
    )


@pytest.fixture
async def grpc_manager(sim: Simulator, manager_settings: None) -> AsyncIterator[Simulator]:
    configure(sim)
    yield sim
    await DriftClientManager.shutdown()


def grpc_stats(sim: Simulator) -> dict[str, Any]:
    stats: dict[str, Any] = sim.stats()["grpc"]
    return stats


async def test_grpc_serves_the_same_numbers_as_websocket(
    sim: Simulator, manager_settings: None, frozen_now: float
) -> None:
    truth = GroundTruth(sim, frozen_now)
    seen: dict[str, list[Any]] = {}
    for mode in ("grpc", "websocket"):
        configure(sim, mode)
        funding = [await DriftClientManager.get_funding_rate(i) for i in truth.indexes()]
        markets = await DriftClientManager.get_all_perp_markets()
        assert DriftClientManager.stats()["subscription_mode"] == mode
        seen[mode] = [_numbers(v) for v in [*funding, *markets] if v is not None]
        assert len(seen[mode]) == 2 * len(truth.indexes())
        assert not any(v.stale for v in seen[mode])
        await DriftClientManager.shutdown()
    assert seen["grpc"] == seen["websocket"]
    for index in truth.indexes():
        expected = dataclasses.replace(truth.funding(index), slot=seen["grpc"][index].slot)
        assert _numbers(seen["grpc"][index]) == _numbers(expected)


async def test_a_write_reaches_the_reads_through_the_stream(grpc_manager: Simulator) -> None:
    sim = grpc_manager
    assert sim.world is not None
    before = await DriftClientManager.get_funding_rate(0)
    assert before is not None
    await sim.step()
    price = sim.world.oracle_price(0)
    assert price != before.oracle_price

    async def updated() -> bool:
        funding = await DriftClientManager.get_funding_rate(0)
        return funding is not None and funding.oracle_price == price and not funding.stale

    await eventually(updated, "the new oracle price read")
    assert grpc_stats(sim)["updates"]["by_kind"]["account"] > 0
    # Delivered by the stream, not by an HTTP read.
    assert DriftClientManager.stats()["freshness"]["repaired"] == {}


async def test_one_grpc_connection_and_stream_for_every_engine_and_account(
    grpc_manager: Simulator,
) -> None:
    sim = grpc_manager
    clients = await asyncio.gather(*(DriftClientManager.get_client() for _ in range(6)))
    assert all(c is clients[0] and c is not None for c in clients)
    markets = await DriftClientManager.get_all_perp_markets()
    stats = grpc_stats(sim)
    assert stats["connections"]["total"] == 1
    assert stats["streams"]["total"] == 1
    # Markets, spot markets, their oracles and the State: every account on that one stream.
    assert stats["streams"]["accounts"] == DriftClientManager.stats()["grpc"]["accounts"]
    assert stats["streams"]["accounts"] > len(markets) + 1
    for _ in clients:
        await DriftClientManager.release_client()


async def test_the_token_never_shows(
    grpc_manager: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert await DriftClientManager.get_funding_rate(0) is not None
    await grpc_manager.faults.drop_grpc()
    await eventually(
        lambda: grpc_stats(grpc_manager)["streams"]["total"] == 2, "reopened", sim=grpc_manager
    )
    shown = [
        caplog.text,
        repr(DriftClientManager.stats()),
        repr(DriftClientManager.settings()),
        generate_latest(REGISTRY).decode(),
    ]
    assert DriftClientManager.stats()["grpc"]["url"] == grpc_manager.grpc_url
    assert not any(TOKEN in text for text in shown)


async def test_the_dashboard_shows_grpc_and_never_the_token(
    sim: Simulator, manager_settings: None
) -> None:
    config = ServeConfig(
        rpc_url=sim.http_url,
        port=0,
        refresh_s=0.05,
        settings_overrides={
            "subscription": "grpc",
            "grpc_url": sim.grpc_url,
            "grpc_token": TOKEN,
            "health_interval_s": 3600,
        },
    )
    async with Runtime(config) as runtime, httpx.AsyncClient(base_url=runtime.url) as http:

        async def on_grpc() -> bool:
            page = (await http.get("/")).text
            return '"subscription_mode": "grpc"' in page and '"symbol": "SOL-PERP"' in page

        await eventually(on_grpc, "the dashboard shows grpc")
        shown = [(await http.get(path)).text for path in ("/", "/api/stats", "/metrics")]
        assert (await http.get("/api/stats")).json()["manager"]["grpc"]["connected"] is True
    assert not any(TOKEN in text for text in shown)
    assert grpc_stats(sim)["connections"]["total"] == 1


async def test_a_resubscription_changes_the_accounts_on_the_same_stream(
    grpc_manager: Simulator,
) -> None:
    sim = grpc_manager
    assert await DriftClientManager.get_client() is not None
    shared = DriftClientManager.shared_state()
    assert shared is not None
    assert shared.gen is not None
    accounts = grpc_stats(sim)["streams"]["accounts"]
    # A new discovery (as after an endpoint fail-over) with fewer perp markets: the same
    # stream is told the new set of accounts.
    shared.settings = shared.settings.model_copy(update={"perp_markets": [0]})
    await shared._subscribe(shared.gen, "grpc")
    await eventually(lambda: grpc_stats(sim)["streams"]["accounts"] < accounts, "fewer accounts")
    stats = grpc_stats(sim)
    assert stats["streams"] == {"open": 1, "total": 1, "accounts": stats["streams"]["accounts"]}
    assert stats["connections"]["total"] == 1
    assert sim.world is not None
    await sim.step()
    price = sim.world.oracle_price(0)

    async def updated() -> bool:
        funding = await DriftClientManager.get_funding_rate(0)
        return funding is not None and funding.oracle_price == price and not funding.stale

    await eventually(updated, "market 0 still streamed")
    await DriftClientManager.release_client()


def _connected_to(port: int) -> bool:
    return any(c.raddr and c.raddr.port == port for c in psutil.Process().connections())


async def test_no_grpc_connection_is_left_after_a_reopened_stream_closes(
    grpc_manager: Simulator,
) -> None:
    sim = grpc_manager
    port = int(sim.grpc_url.rsplit(":", 1)[1])
    assert await DriftClientManager.get_client() is not None
    await sim.faults.drop_grpc()
    await eventually(lambda: grpc_stats(sim)["streams"]["total"] == 2, "stream reopened")
    await eventually(lambda: grpc_stats(sim)["streams"]["open"] == 1, "one stream open")
    assert _connected_to(port)
    await DriftClientManager.release_client()
    await DriftClientManager.shutdown()
    await eventually(lambda: not _connected_to(port), "the gRPC connection closed")


async def test_a_signers_accounts_join_and_leave_the_same_stream(grpc_manager: Simulator) -> None:
    sim = grpc_manager
    wallet = Keypair()
    put_user_stats(sim, wallet.pubkey())
    put_user(sim, wallet.pubkey(), 0, usdc=1_000.0)
    assert await DriftClientManager.get_client() is not None
    markets_only = grpc_stats(sim)["streams"]["accounts"]
    engine = DriftAdapter()
    try:
        assert await engine.connect(wallet, 0)
        # The User and UserStats, by a new request on the one stream.
        await eventually(
            lambda: grpc_stats(sim)["streams"]["accounts"] == markets_only + 2, "user watched"
        )
        account = engine.account
        assert account is not None
        reads = sim.stats()["calls"]["by_method"].get("getMultipleAccounts", 0)
        slot = await sim.step()
        put_user(sim, wallet.pubkey(), 0, usdc=4_000.0)
        assert await account.wait_for_slot(slot, 5.0)
        # The stream brought it: no account was read.
        assert sim.stats()["calls"]["by_method"].get("getMultipleAccounts", 0) == reads
        info = await engine.get_account_info()
        assert info is not None
        assert info["stale"] is False
        assert info["collateral"] > 3_000.0
    finally:
        await engine.disconnect()
    await eventually(
        lambda: grpc_stats(sim)["streams"]["accounts"] == markets_only, "user unwatched"
    )
    assert grpc_stats(sim)["streams"]["total"] == 1
    assert grpc_stats(sim)["connections"]["total"] == 1
    await DriftClientManager.release_client()
