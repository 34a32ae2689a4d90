"""serve's terminal output: text from URLs and errors shown as is, never read as markup; no
"ready" before market data; a command whose extra is missing names it."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys

import pytest
from rich.console import Console

from conftest import eventually
from driftshare._serve import Runtime, ServeConfig, run_serve
from driftshare.sim import Simulator


async def test_markup_in_an_rpc_url_or_error_is_printed_literally(
    manager_settings: None, closed_port_url: str
) -> None:
    host = closed_port_url
    url = f"{host}/[/yellow][b"
    terminal = io.StringIO()
    console = Console(file=terminal, width=500, highlight=False)
    config = ServeConfig(
        rpc_url=url,
        port=0,
        settings_overrides={"max_retries": 0, "init_timeout_s": 2, "health_interval_s": 3600},
    )
    runtime = Runtime(config)
    try:
        await runtime.start(console.print)
    finally:
        await runtime.stop()
    output = terminal.getvalue()
    assert f"to {host}/***" in output  # the path is redacted, its markup with it
    assert runtime.waiting is not None
    console.print(runtime.waiting)
    assert "no market data yet (" in terminal.getvalue()


class _Printed:
    """What ``run_serve`` has written to stderr so far, read from pytest's capture."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self.text = ""

    def shows(self, text: str) -> bool:
        self.text += self._capsys.readouterr().err
        return text in self.text


async def test_serve_waits_for_the_rpc_without_a_check_mark_until_data_arrives(
    manager_settings: None, simulator: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    await simulator.faults.down(3600)
    config = ServeConfig(
        rpc_url=simulator.http_url,
        port=0,
        settings_overrides={
            "retry_backoff": 0.05,
            "retry_backoff_cap": 0.2,
            "health_interval_s": 3600,
        },
    )
    serving = asyncio.create_task(run_serve(config))
    stderr = _Printed(capsys)
    await eventually(lambda: stderr.shows("waiting for the RPC"), "waiting said", within=30)
    assert "ready" not in stderr.text
    await simulator.faults.clear()
    await eventually(lambda: stderr.shows("ready (live RPC)"), "ready said", within=30)
    os.kill(os.getpid(), signal.SIGINT)
    assert await serving == 0
    output = stderr.text
    waiting_line = next(line for line in output.splitlines() if "no market data yet" in line)
    assert "✓" not in waiting_line
    assert waiting_line.startswith("waiting for the RPC")
    # One message, one line, however narrow the output: a log keeps URLs and reasons whole.
    assert waiting_line.endswith("retrying in the background")
    assert output.index("waiting for the RPC") < output.index("ready (live RPC)")


async def test_a_warning_gets_no_check_mark(
    manager_settings: None, closed_port_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ServeConfig(
        rpc_url=closed_port_url,
        port=0,
        trade=True,  # ignored: it trades on the embedded simulator only
        settings_overrides={"max_retries": 0, "health_interval_s": 3600},
    )
    serving = asyncio.create_task(run_serve(config))
    stderr = _Printed(capsys)
    await eventually(lambda: stderr.shows("press Ctrl+C to stop"), "started", within=30)
    os.kill(os.getpid(), signal.SIGINT)
    assert await serving == 0
    output = stderr.text
    ignored = next(line for line in output.splitlines() if "--trade ignored" in line)
    assert ignored.startswith("--trade ignored")
    assert "✓ dashboard listening on" in output


# driftpy 0.8.89 itself depends on the extras' packages, so one is made missing: None in
# sys.modules fails its import as an absent package would, after the library has loaded.
_WITHOUT = "import sys; from driftshare._cli import main; sys.modules[{module!r}] = None; "
_WITHOUT += "raise SystemExit(main({argv!r}))"


@pytest.mark.parametrize(
    ("argv", "module", "extra"),
    [
        (["serve", "--port", "0"], "aiohttp.web", "serve"),
        (["sim", "--port", "0"], "aiohttp.web", "sim"),
    ],
)
def test_a_command_without_its_extra_names_the_extra(
    argv: list[str], module: str, extra: str
) -> None:
    code = _WITHOUT.format(module=module, argv=argv)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2, done.stderr
    assert f"needs the {extra} extra ({module} is missing)" in done.stderr
    assert f"pip install 'driftshare[{extra}]'" in done.stderr
    assert "Traceback" not in done.stderr
