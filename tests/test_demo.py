"""``driftshare demo``: the same engines cost one client shared and one client each legacy."""

from __future__ import annotations

import pytest

from driftshare import _cli as cli
from driftshare._demo import run_mode


async def test_shared_mode_uses_one_client_where_legacy_uses_one_per_engine(
    manager_settings: None,
) -> None:
    shared = await run_mode("shared", engines=4, duration_s=1.0, markets=8, rate_limit=None)
    legacy = await run_mode("legacy", engines=4, duration_s=1.0, markets=8, rate_limit=None)
    assert (shared.drift_clients, shared.initializations) == (1, 1)
    assert (legacy.drift_clients, legacy.initializations) == (4, 0)
    # Every legacy client opens exactly what the one shared client opens.
    assert legacy.ws_connections == 4 * shared.ws_connections
    assert legacy.ws_subscriptions == 4 * shared.ws_subscriptions
    assert legacy.rpc_requests == 4 * shared.rpc_requests
    assert shared.engine_errors == legacy.engine_errors == 0
    assert shared.signals > 0
    assert legacy.signals > 0
    assert shared.peak_rss_mb > 0


async def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        await run_mode("both")


def test_demo_command_prints_both_modes_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["demo", "--engines", "2", "--duration", "1", "--markets", "4"])
    out = capsys.readouterr().out
    assert code == 0
    header = next(line for line in out.splitlines() if "shared" in line)
    assert "legacy" in header
    assert "DriftClients alive" in out
    assert "errors seen by engines" in out


@pytest.mark.parametrize("args", [["--engines", "0"], ["--duration", "-1"], ["--engines", "x"]])
def test_demo_rejects_bad_options(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", *args])
    assert exit_info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err
