"""The JSON API of ``driftshare serve`` on the simulated chain: every route, its errors, and a
schemathesis run over the served OpenAPI document."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
from collections.abc import Awaitable, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import DataGenerationMethod, experimental
from schemathesis.checks import not_a_server_error

from conftest import eventually
from driftshare import _cli as cli
from driftshare._serve import Runtime, ServeConfig
from driftshare._web import LiveState, create_app
from driftshare._web.api import OPENAPI
from driftshare.manager import DriftClientManager
from driftshare.models import FundingRateData, MarketData
from driftshare.sim import Simulator
from driftshare.sim.world import World

MARKETS = 8


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    """serve on its embedded simulator, in a thread of its own so sync clients can call it.

    The simulator's clock does not tick on its own here, so values stay put between calls.
    """
    started = threading.Event()
    box: dict[str, object] = {}

    async def serve() -> None:
        stop = box["stop"] = asyncio.Event()
        config = ServeConfig(
            port=0,
            sim_markets=MARKETS,
            sim_tick_s=3600,
            # The chain stands still on purpose: its data must not turn stale mid-module.
            stale_after_s=3600,
            settings_overrides={"health_interval_s": 3600},
        )
        try:
            async with Runtime(config) as rt:
                box["runtime"], box["loop"] = rt, asyncio.get_running_loop()
                started.set()
                await stop.wait()
        finally:
            started.set()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(30)
    assert "runtime" in box, "serve did not start"
    yield box["runtime"]  # type: ignore[misc]
    loop: asyncio.AbstractEventLoop = box["loop"]  # type: ignore[assignment]
    loop.call_soon_threadsafe(box["stop"].set)  # type: ignore[attr-defined]
    thread.join(30)
    DriftClientManager._settings = None


@pytest.fixture
def api(runtime: Runtime) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=runtime.url, timeout=10) as client:
        yield client


def _world(runtime: Runtime) -> World:
    assert runtime.simulator is not None
    assert runtime.simulator.world is not None
    return runtime.simulator.world


def test_markets_lists_every_simulated_market(api: httpx.Client, runtime: Runtime) -> None:
    response = api.get("/api/markets")
    assert response.status_code == 200
    body = response.json()
    world = _world(runtime)
    assert body["simulated"] is True
    assert body["count"] == MARKETS
    assert [m["market_index"] for m in body["markets"]] == world.perp_indexes()
    for row in body["markets"]:
        assert set(row) == {f.name for f in dataclasses.fields(MarketData)}
        assert row["oracle_price"] == pytest.approx(world.oracle_price(row["market_index"]))


def test_funding_lists_every_market_with_the_model_fields(api: httpx.Client) -> None:
    body = api.get("/api/funding").json()
    assert body["count"] == MARKETS
    fields = {f.name for f in dataclasses.fields(FundingRateData)}
    assert all(set(row) == fields for row in body["funding"])
    for row in body["funding"]:
        assert row["rate_8h"] == pytest.approx(row["rate_hourly"] * 8 * 100)


def test_funding_sorts_filters_and_limits(api: httpx.Client) -> None:
    everything = api.get("/api/funding").json()["funding"]
    body = api.get("/api/funding", params={"sort": "rate_annual", "order": "desc", "limit": 3})
    assert body.status_code == 200
    top = body.json()["funding"]
    expected = sorted(everything, key=lambda r: r["rate_annual"], reverse=True)[:3]
    assert [r["market"] for r in top] == [r["market"] for r in expected]
    active = api.get("/api/funding", params={"status": "active"}).json()
    assert active["count"] == sum(r["status"] == "active" for r in everything)
    assert {r["status"] for r in active["funding"]} == {"active"}


def test_markets_sort_ascending_by_price(api: httpx.Client) -> None:
    rows = api.get("/api/markets", params={"sort": "oracle_price"}).json()["markets"]
    prices = [r["oracle_price"] for r in rows]
    assert prices == sorted(prices)


@pytest.mark.parametrize(
    ("sort", "field"), [("symbol", "symbol"), ("rate_hourly", "funding_rate"), ("mark_price", None)]
)
def test_markets_and_funding_sort_by_one_vocabulary(
    api: httpx.Client, sort: str, field: str | None
) -> None:
    query = {"sort": sort, "order": "desc"}
    markets = api.get("/api/markets", params=query).json()["markets"]
    funding = api.get("/api/funding", params=query).json()["funding"]
    assert [m["market_index"] for m in markets] == [f["market_index"] for f in funding]
    values = [m[field or sort] for m in markets]
    assert values == sorted(values, reverse=True)


@pytest.mark.parametrize("symbol", ["SOL-PERP", "sol-perp", "SOL", "0"])
def test_market_by_symbol_or_index(api: httpx.Client, runtime: Runtime, symbol: str) -> None:
    response = api.get(f"/api/markets/{symbol}")
    assert response.status_code == 200
    body = response.json()
    assert body["market"]["market_index"] == 0
    assert body["market"]["symbol"] == "SOL-PERP"
    assert body["funding"]["market"] == "SOL-PERP"
    assert body["market"]["oracle_price"] == pytest.approx(_world(runtime).oracle_price(0))


@pytest.mark.parametrize("symbol", ["NOPE-PERP", "999", "<script>"])
def test_unknown_market_is_a_json_404(api: httpx.Client, symbol: str) -> None:
    response = api.get(f"/api/markets/{symbol}")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("path", "query", "mentions"),
    [
        ("/api/funding", "sort=nope", "sort"),
        ("/api/funding", "order=up", "order"),
        ("/api/funding", "status=open", "status"),
        ("/api/funding", "limit=0", "limit"),
        ("/api/funding", "limit=1001", "limit"),
        ("/api/funding", "limit=ten", "limit"),
        ("/api/funding", "limit=1&limit=2", "limit"),
        ("/api/funding", "colour=red", "colour"),
        ("/api/markets", "sort=rate_8h", "sort"),
        ("/api/markets", "limit=-1", "limit"),
    ],
)
def test_bad_query_is_a_json_400(api: httpx.Client, path: str, query: str, mentions: str) -> None:
    response = api.get(f"{path}?{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "bad_request"
    assert mentions in body["message"]


def test_stats_show_one_shared_client(api: httpx.Client) -> None:
    body = api.get("/api/stats").json()
    assert body["simulated"] is True
    assert body["manager"]["initializations"] == 1
    assert body["manager"]["initialized"] is True
    assert body["dashboard"]["markets"] == MARKETS
    assert body["dashboard"]["subscription_mode"] == "websocket"
    assert body["engines"] == []


def test_health_and_readiness(api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "alive"}
    ready = api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_metrics_are_prometheus_text(api: httpx.Client) -> None:
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'drift_client_initializations_total{network="mainnet"}' in response.text
    assert 'drift_data_age_seconds{market="SOL-PERP"}' in response.text


def test_openapi_document_describes_every_route(api: httpx.Client) -> None:
    document = api.get("/api/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {
        "/api/markets",
        "/api/markets/{symbol}",
        "/api/funding",
        "/api/stats",
        "/api/accounts",
        "/api/orders",
        "/api/openapi.json",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    assert document == OPENAPI


def test_unknown_path_and_method_are_json_errors(api: httpx.Client) -> None:
    missing = api.get("/api/nothing")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    wrong = api.post("/api/markets")
    assert (wrong.status_code, wrong.json()["error"]) == (405, "method_not_allowed")


def test_dashboard_page_embeds_data_and_says_simulated(api: httpx.Client) -> None:
    page = api.get("/")
    assert page.status_code == 200
    assert "simulated chain" in page.text
    assert '"symbol": "SOL-PERP"' in page.text
    assert api.get("/static/app.js").status_code == 200


def test_events_stream_pushes_snapshots(runtime: Runtime) -> None:
    with (
        httpx.Client(base_url=runtime.url, timeout=10) as client,
        client.stream("GET", "/api/events") as stream,
    ):
        assert stream.headers["content-type"] == "text/event-stream"
        lines = stream.iter_lines()
        assert next(lines) == "event: snapshot"
        data = next(lines)
    assert data.startswith("data: ")
    assert '"markets": [' in data


@pytest.fixture
def openapi_schema(runtime: Runtime) -> schemathesis.BaseSchema:
    """The OpenAPI document as the running server serves it."""
    return schemathesis.from_uri(
        f"{runtime.url}api/openapi.json",
        base_url=runtime.url,
        data_generation_methods=[DataGenerationMethod.positive, DataGenerationMethod.negative],
    )


# schemathesis' coverage phase (values covering every parameter's schema, derived from it) and
# its random phase, valid and invalid input alike; valid answers are checked against the document.
experimental.COVERAGE_PHASE.enable()
served_schema = schemathesis.from_pytest_fixture("openapi_schema")


@served_schema.parametrize()
@settings(
    phases=[Phase.explicit, Phase.generate],
    max_examples=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_schemathesis_finds_no_server_error(case: schemathesis.Case) -> None:
    response = case.call()
    # /readyz answers 503 by design once the module's still chain has aged past 30 s.
    not_ready = case.path == "/readyz" and response.status_code == 503
    assert response.status_code < 500 or not_ready, response.text
    if case.data_generation_method == DataGenerationMethod.positive:
        # A designed 503 is still held to the documented status codes and schema.
        excluded = (not_a_server_error,) if not_ready else ()
        case.validate_response(response, excluded_checks=excluded)


_QUERY_KEYS = st.sampled_from(["sort", "order", "status", "limit", "x"])


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.sampled_from(["/api/funding", "/api/markets"]),
    query=st.lists(st.tuples(_QUERY_KEYS, st.text(max_size=12)), max_size=4),
    symbol=st.text(min_size=1, max_size=16),
)
def test_arbitrary_queries_never_fail_the_server(
    runtime: Runtime, path: str, query: list[tuple[str, str]], symbol: str
) -> None:
    with httpx.Client(base_url=runtime.url, timeout=10) as client:
        listed = client.get(path, params=query)
        one = client.get(f"/api/markets/{quote(symbol, safe='')}")
    assert listed.status_code in (200, 400), listed.text
    assert one.status_code in (200, 404), one.text
    assert listed.status_code == 200 or listed.json()["error"] == "bad_request"


async def test_not_ready_before_any_data() -> None:
    # An endpoint nobody serves: the live view never gets data from it.
    live = LiveState(network="mainnet", simulated=False, rpc_url="http://127.0.0.1:9/")
    async with TestClient(TestServer(create_app(live))) as client:
        response = await client.get("/readyz")
        assert response.status == 503
        body = await response.json()
    assert body["status"] == "not_ready"
    assert "not connected" in body["reason"]


async def test_not_ready_while_every_market_is_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fleet follower holding a dead leader's records: its shared client is up and some
    # account (the State) was confirmed just now, yet every market is served stale.
    live = LiveState(network="mainnet", simulated=False, rpc_url="http://127.0.0.1:9/")
    stats = {"initialized": True, "health": "healthy", "last_update_age_s": 0.1}
    monkeypatch.setattr(live, "manager_stats", lambda: stats)
    market = MarketData(0, "SOL-PERP", "active", 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    live.markets = [dataclasses.replace(market, stale=True)]
    assert live.readiness() == (False, "every market's data is stale")
    live.markets = [
        dataclasses.replace(market, stale=True),
        dataclasses.replace(market, market_index=1),
    ]
    assert live.readiness() == (True, "fresh data")


async def test_index_page_is_read_from_disk_once(monkeypatch: pytest.MonkeyPatch) -> None:
    live = LiveState(network="mainnet", simulated=True, rpc_url="http://127.0.0.1:9/")
    app = create_app(live)

    def no_disk(*args: object, **kwargs: object) -> str:
        raise AssertionError("index.html read again while serving")

    monkeypatch.setattr(Path, "read_text", no_disk)
    async with TestClient(TestServer(app)) as client:
        for _ in range(2):
            response = await client.get("/")
            assert response.status == 200
            assert 'class="pill chain sim">simulated chain</span>' in await response.text()


async def test_unexpected_exception_is_a_json_500_without_traceback() -> None:
    live = LiveState(network="mainnet", simulated=True, rpc_url="http://127.0.0.1:9/")
    app = create_app(live)

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    app.router.add_get("/broken", broken)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/broken")
        assert response.status == 500
        text = await response.text()
    assert "secret internals" not in text
    assert "Traceback" not in text
    assert '"error": "internal"' in text


def test_serve_reports_a_busy_port_with_exit_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = cli.main(["serve", "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args",
    [["--rpc-url", "ftp://example.invalid"], ["--port", "70000"], ["--engines", "hft"]],
)
def test_serve_rejects_bad_options_with_exit_status_2(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "Traceback" not in err
    assert args[0] in err


async def test_readyz_turns_503_when_the_data_goes_stale_and_200_when_it_flows_again(
    simulator: Simulator, manager_settings: None
) -> None:
    config = ServeConfig(
        rpc_url=simulator.http_url,
        port=0,
        stale_after_s=1.0,
        settings_overrides={"health_interval_s": 0.1, "stale_after_s": 1.0},
    )
    async with Runtime(config) as runtime, httpx.AsyncClient(base_url=runtime.url) as http:

        async def status() -> int:
            return (await http.get("/readyz")).status_code

        await eventually(lambda: _is(status(), 200), sim=simulator, what="ready")
        # The RPC keeps answering getSlot, but no account is notified or can be read.
        shared = DriftClientManager.shared_state()
        assert shared is not None
        keys = list(shared.tap.pubkeys())  # type: ignore[union-attr]
        simulator.faults.set_stall(True)
        for key in keys:
            simulator.faults.hide(key)
        await eventually(lambda: _is(status(), 503), sim=simulator, what="not ready")
        simulator.faults.set_stall(False)
        for key in keys:
            simulator.faults.restore(key)
        await eventually(lambda: _is(status(), 200), sim=simulator, what="ready again")


async def _is(answer: Awaitable[int], expected: int) -> bool:
    return await answer == expected
