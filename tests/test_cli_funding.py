"""``driftshare funding`` in-process, against its embedded simulator."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from pathlib import Path

import pytest

from bench import _forkserver
from driftshare import _cli as cli
from driftshare.models import FundingRateData
from driftshare.sim import SimConfig
from driftshare.sim.pytest_plugin import SimulatorFactory

FIELDS = [field.name for field in dataclasses.fields(FundingRateData)]


@pytest.fixture(autouse=True)
def _no_configured_rpc(monkeypatch: pytest.MonkeyPatch, manager_settings: None) -> None:
    for name in ("DRIFT_RPC_URL", "DRIFT_NETWORK"):
        monkeypatch.delenv(name, raising=False)


def test_json_lists_every_market_of_the_embedded_simulator(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["funding", "--json"]) == 0
    out, err = capsys.readouterr()
    rows = json.loads(out)
    assert [row["market_index"] for row in rows] == list(range(SimConfig().markets))
    assert all(list(row) == FIELDS for row in rows)
    assert rows[0]["market"] == "SOL-PERP"
    assert {row["status"] for row in rows} >= {"active", "settlement", "reduce_only"}
    assert all(isinstance(row["rate_8h"], float) for row in rows)
    assert "embedded simulator" in err


@pytest.mark.parametrize("market", ["sol", "SOL-PERP", "0"])
def test_one_market(capsys: pytest.CaptureFixture[str], market: str) -> None:
    assert cli.main(["funding", "--json", "--market", market]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(row["market"], row["market_index"]) for row in rows] == [("SOL-PERP", 0)]


def test_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["funding"]) == 0
    out = capsys.readouterr().out
    assert f"Drift funding ({SimConfig().markets} of {SimConfig().markets} perp markets)" in out
    assert "SOL-PERP" in out
    assert "settlement" in out


@pytest.mark.parametrize("market", ["NOPE-PERP", "999"])
def test_unknown_market_exits_2(capsys: pytest.CaptureFixture[str], market: str) -> None:
    assert cli.main(["funding", "--market", market]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"unknown perp market {market!r}" in err
    assert "Traceback" not in err


def test_bad_rpc_url_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["funding", "--rpc-url", "ftp://example"]) == 2
    err = capsys.readouterr().err
    assert "DRIFT_RPC_URL" in err
    assert "http(s)" in err
    assert "Traceback" not in err


def test_unreachable_rpc_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, closed_port_url: str
) -> None:
    monkeypatch.setenv("DRIFT_MAX_RETRIES", "0")
    url = f"{closed_port_url}/secret-api-key-0123456789abcdef"
    assert cli.main(["funding", "--rpc-url", url]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the RPC" in err
    assert "secret-api-key-0123456789abcdef" not in err
    assert "Traceback" not in err


async def test_an_unreachable_rpc_prints_the_warm_start_snapshot_stale(
    simulator_factory: SimulatorFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    closed_port_url: str,
) -> None:
    sim = await simulator_factory(markets=2)
    monkeypatch.setenv("DRIFT_SNAPSHOT_PATH", str(tmp_path))
    # In a thread: the command runs a loop of its own, and the simulator serves on this one.
    live_run = ["funding", "--json", "--rpc-url", sim.http_url]
    assert await asyncio.to_thread(cli.main, live_run) == 0
    live = json.loads(capsys.readouterr().out)
    monkeypatch.setenv("DRIFT_MAX_RETRIES", "0")
    down_run = ["funding", "--json", "--rpc-url", closed_port_url]
    assert await asyncio.to_thread(cli.main, down_run) == 0
    out, err = capsys.readouterr()
    rows = json.loads(out)
    assert [row["market"] for row in rows] == [row["market"] for row in live]
    assert all(row["stale"] for row in rows)
    assert "cannot reach the RPC" in err
    assert "snapshot" in err


async def test_verbose_output_never_shows_the_api_key(simulator_factory: SimulatorFactory) -> None:
    # A process of its own: in-process, pytest's log capture would keep the log off stderr.
    sim = await simulator_factory()
    url = f"{sim.http_url}/?api-key=not-a-real-key"
    env = {name: value for name, value in os.environ.items() if not name.startswith("DRIFT_")}
    process = await _forkserver.create(
        ["-m", "driftshare", "-v", "funding", "--json", "--rpc-url", url],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert len(json.loads(out)) == len(sim.world.perp_indexes())  # type: ignore[union-attr]
    assert b"not-a-real-key" not in out + err
    # The requests and the websocket handshake were logged, with the key redacted.
    assert b"HTTP Request: POST http://" in err
    assert b"> GET /?*** HTTP/1.1" in err


def test_rpc_url_option_takes_a_list_of_endpoints(capsys: pytest.CaptureFixture[str]) -> None:
    parsed = cli._rpc_url(" http://127.0.0.1:9 , http://127.0.0.1:11 ")
    assert parsed == "http://127.0.0.1:9,http://127.0.0.1:11"
    assert cli.main(["funding", "--rpc-url", "http://127.0.0.1:9,ftp://example"]) == 2
    assert "comma-separated" in capsys.readouterr().err
