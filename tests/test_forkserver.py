"""The suite's fork server (``bench/_forkserver.py``) hands back what a subprocess would: the
module's own output and exit code, a signal as a negative code, and a real interpreter where
a fork could differ."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

from bench import _forkserver


def test_a_forked_child_runs_its_module_with_its_own_argv_and_exit_code() -> None:
    helped = _forkserver.run(["-m", "driftshare", "--help"], timeout=60)
    assert (helped.returncode, helped.stderr) == (0, "")
    assert helped.stdout.startswith("usage: driftshare")
    refused = _forkserver.run(["-m", "driftshare", "nonsense"], timeout=60)
    assert refused.returncode == 2
    assert "invalid choice: 'nonsense'" in refused.stderr


def test_a_forked_child_gets_its_own_environment(closed_port_url: str) -> None:
    env = {**os.environ, "DRIFT_RPC_URL": closed_port_url, "DRIFT_MAX_RETRIES": "0"}
    done = _forkserver.run(["-m", "driftshare", "funding"], env=env, timeout=60)
    assert done.returncode == 1
    assert f"cannot reach the RPC at {closed_port_url}" in done.stderr


async def test_a_signal_ends_a_forked_child_as_it_ends_a_subprocess() -> None:
    child = await _forkserver.create(
        ["-m", "driftshare", "sim", "--port", "0", "--markets", "1"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert isinstance(child, _forkserver.AsyncForked)
    assert child.stdout is not None
    assert b"driftshare sim ready" in await asyncio.wait_for(child.stdout.readline(), 60)
    child.send_signal(signal.SIGKILL)
    assert await asyncio.wait_for(child.wait(), 60) == -signal.SIGKILL


def test_what_a_fork_could_get_wrong_starts_a_real_interpreter() -> None:
    # Not `-m module`, or another interpreter set-up: a real process.
    script = _forkserver.popen(["-c", "print(1)"], stdout=subprocess.PIPE)
    other = _forkserver.popen(
        ["-m", "driftshare", "--help"],
        env={**os.environ, "PYTHONHASHSEED": "7"},
        stdout=subprocess.DEVNULL,
    )
    for child in (script, other):
        assert isinstance(child, subprocess.Popen)
        assert child.wait(60) == 0
        if child.stdout is not None:
            child.stdout.close()
