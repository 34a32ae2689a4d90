"""A bad ``DRIFT_KEYPAIR`` fails once, clearly, with one message everywhere, never the secret."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from solders.keypair import Keypair

from driftshare import _cli as cli
from driftshare._client.keypair import load_keypair
from driftshare._serve import Runtime, ServeConfig, ServeError
from driftshare.config import ConfigError, load_settings
from driftshare.manager import DriftClientManager

CLOSED_PORT_URL = "http://127.0.0.1:9/"
SECRET_LOOKING = "5KQwrPbwdL6PhXujxW37FSSQZ1JiwsST4cqQzDeyXtP79zkvFD3fLfAgt6v9"


def test_a_missing_keypair_file_is_named_as_such(tmp_path: Path) -> None:
    missing = tmp_path / "id.json"
    with pytest.raises(ConfigError) as raised:
        load_keypair(load_settings(keypair=str(missing)))
    assert str(raised.value) == "DRIFT_KEYPAIR: no such keypair file"
    assert str(missing) not in str(raised.value)


def test_a_bad_base58_secret_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as raised:
        load_keypair(load_settings(keypair=SECRET_LOOKING))
    assert "not a base58 secret key" in str(raised.value)
    assert SECRET_LOOKING not in str(raised.value)


def test_a_keypair_file_and_its_base58_load_the_same_signer(tmp_path: Path) -> None:
    keypair = Keypair()
    file = tmp_path / "id.json"
    file.write_text(keypair.to_json())
    assert load_keypair(load_settings(keypair=str(file))).pubkey() == keypair.pubkey()
    assert load_keypair(load_settings(keypair=str(keypair))).pubkey() == keypair.pubkey()


async def test_a_bad_keypair_is_refused_once_counted_and_logged_once(
    manager_settings: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    DriftClientManager.configure(rpc_url=CLOSED_PORT_URL, keypair=str(tmp_path / "nope.json"))
    try:
        with caplog.at_level(logging.DEBUG, logger="driftshare"):
            for _ in range(5):
                assert await DriftClientManager.get_client() is None
                assert await DriftClientManager.get_funding_rate("SOL-PERP") is None
        stats = DriftClientManager.stats()
        assert stats["init_failures"] == 1
        assert stats["config_error"] == "DRIFT_KEYPAIR: no such keypair file"
        assert stats["last_error"] == stats["config_error"]
        assert stats["health"] == "down"
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        assert "no such keypair file" in errors[0].getMessage()
    finally:
        await DriftClientManager.shutdown()


@pytest.mark.parametrize(
    "command", [["funding", "--rpc-url", CLOSED_PORT_URL], ["demo", "--duration", "1"]]
)
def test_a_command_prints_the_keypair_error_and_exits_2(
    monkeypatch: pytest.MonkeyPatch,
    manager_settings: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    monkeypatch.setenv("DRIFT_KEYPAIR", str(tmp_path / "nope.json"))
    assert cli.main(command) == 2
    err = capsys.readouterr().err
    assert f"driftshare {command[0]}: DRIFT_KEYPAIR: no such keypair file" in err
    assert "cannot reach" not in err


def test_serve_refuses_a_bad_keypair_before_starting_anything(
    monkeypatch: pytest.MonkeyPatch, manager_settings: None
) -> None:
    monkeypatch.setenv("DRIFT_KEYPAIR", SECRET_LOOKING)
    with pytest.raises(ServeError) as raised:
        Runtime(ServeConfig(port=0, rpc_url=CLOSED_PORT_URL))
    assert str(raised.value).startswith("DRIFT_KEYPAIR: not a base58 secret key")
    assert SECRET_LOOKING not in str(raised.value)
