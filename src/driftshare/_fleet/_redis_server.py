"""RedisServer: Debian's ``redis-server`` on a free loopback port, for tests and benchmarks.

Persistence is off, so a restart starts empty, as a wiped Redis would.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

__all__ = ["RedisServer", "RedisServerError"]

_START_TIMEOUT_S = 10.0


class RedisServerError(RuntimeError):
    """redis-server is not installed or did not start."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """``start()``, ``kill()`` (SIGKILL), ``restart()`` (same port, empty), ``stop()``."""

    def __init__(self, port: int | None = None, password: str | None = None) -> None:
        executable = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not shutil.which(executable):
            raise RedisServerError("redis-server is not installed (apt-get install redis-server)")
        self.executable = executable
        self.port = port or _free_port()
        self.password = password
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        command = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
        if self.password:
            command += ["--requirepass", self.password]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RedisServerError(f"redis-server exited with {self._process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64):
                        return
            except OSError:
                # Not listening yet: poll the port, there is no readiness event to wait on.
                time.sleep(0.02)
        self.kill()
        raise RedisServerError("redis-server did not start in time")

    def kill(self) -> None:
        """SIGKILL, as a crash would; wait until it is gone."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Kill and start again on the same port, empty."""
        self.kill()
        self.start()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
