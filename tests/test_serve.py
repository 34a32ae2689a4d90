"""serve's terminal output: text from URLs and errors is shown as is, never read as markup."""

from __future__ import annotations

import io
import socket

from rich.console import Console

from driftshare._serve import Runtime, ServeConfig


async def test_markup_in_an_rpc_url_or_error_is_printed_literally(manager_settings: None) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        host = f"http://127.0.0.1:{probe.getsockname()[1]}"
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
    assert "no market data yet (" in output
