"""What the ``driftshare`` commands say: defaults in ``--help``, settings errors in plain words,
an index ``DRIFT_PERP_MARKETS`` names that the chain lacks, and no log lines from ``funding``
unless ``-v``."""

from __future__ import annotations

import os

import pytest

from bench import _forkserver
from driftshare import _cli as cli
from driftshare.config import ConfigError, load_settings


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (
            "serve",
            [
                "--port PORT",
                "dashboard and API port (default: 8080)",
                "(default: 127.0.0.1)",
                "funding,lst,scalp,arb or all (default: none)",
            ],
        ),
        (
            "sim",
            [
                "(default: 8899)",
                "(default: 30)",
                "seconds per slot (default: 0.4)",
                "within the limit (default: the rate, at least 1)",
            ],
        ),
        ("demo", ["(default: 4)", "(default: 30.0)", "(default: 10.0)"]),
    ],
)
def test_help_shows_the_defaults(
    capsys: pytest.CaptureFixture[str], command: str, shown: list[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the terminal
    for text in shown:
        assert text in out
    assert "(default: None)" not in out


def test_a_settings_error_reads_without_pydantics_prefix() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(rpc_url="ftp://rpc.example")
    assert str(raised.value) == (
        "invalid configuration: DRIFT_RPC_URL: must be an http(s) URL or a comma-separated "
        "list of them"
    )


def test_funding_names_a_perp_market_the_chain_lacks(
    monkeypatch: pytest.MonkeyPatch, manager_settings: None, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DRIFT_RPC_URL", raising=False)
    monkeypatch.setenv("DRIFT_PERP_MARKETS", "999")
    assert cli.main(["funding"]) == 1
    err = capsys.readouterr().err
    assert "DRIFT_PERP_MARKETS names perp market 999, which does not exist on chain" in err


def test_funding_writes_no_log_lines_without_verbose() -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DRIFT_")}
    done = _forkserver.run(["-m", "driftshare", "funding", "--json"], env=environ, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    assert "reading the embedded simulator" in lines[0]
