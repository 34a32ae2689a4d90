"""Real parts on loopback for the tests and the benchmarks: Debian's ``redis-server`` and
``driftshare serve`` processes.

Redis runs without persistence, so a restart starts empty, as a wiped Redis would. Every
port is safe under pytest-xdist and beside other test runs: serve listens on port 0 and
reports its URL; :func:`free_port` hands out ports below the kernel's ephemeral range, so
no outgoing connection takes one between the pick and the bind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import _forkserver

__all__ = [
    "RedisServer",
    "RedisServerError",
    "ServeProcess",
    "TcpProxy",
    "TlsFiles",
    "all_ready",
    "free_port",
    "fresh_after",
    "stop_all",
]

_START_TIMEOUT_S = 10.0


# Below Linux's default ephemeral range (32768-60999), where bind(0) and outgoing
# connections take their ports: a port picked here stays free until its user binds it.
_PORTS = range(20000, 32768)
# Each process walks the range from its own random start, so xdist workers and concurrent
# test runs rarely meet; a port someone else holds fails the bind check and is skipped.
_next_port = itertools.count(random.SystemRandom().randrange(len(_PORTS)))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing holds now and no outgoing connection will take."""
    for _ in range(len(_PORTS)):
        port = _PORTS[next(_next_port) % len(_PORTS)]
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError("no free port on 127.0.0.1")


class RedisServerError(RuntimeError):
    """redis-server is not installed or did not start."""


@dataclass(frozen=True)
class TlsFiles:
    """A self-signed certificate for 127.0.0.1 and its key; the certificate is its own CA."""

    cert: Path
    key: Path

    @classmethod
    def make(cls, directory: Path) -> TlsFiles:
        """Generate them with ``openssl`` in ``directory`` (RedisServerError without it)."""
        executable = shutil.which("openssl")
        if executable is None:
            raise RedisServerError("openssl is not installed")
        files = cls(directory / "redis.crt", directory / "redis.key")
        command = [executable, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        command += ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        command += ["-keyout", str(files.key), "-out", str(files.cert)]
        subprocess.run(command, check=True, capture_output=True)
        return files


class RedisServer:
    """``start()``, ``kill()`` (SIGKILL), ``pause()``/``resume()``, ``restart()`` (same port,
    empty), ``stop()``.

    With ``tls`` it serves TLS only (``rediss://``), with ``password`` it requires AUTH.
    """

    def __init__(
        self, port: int | None = None, password: str | None = None, tls: TlsFiles | None = None
    ) -> None:
        executable = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not shutil.which(executable):
            raise RedisServerError("redis-server is not installed (apt-get install redis-server)")
        self.executable = executable
        self._port_chosen = port is None
        self.port = port or free_port()
        self.password = password
        self.tls = tls
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls is None:
            return f"redis://{auth}127.0.0.1:{self.port}/0"
        return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.cert}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start and wait until it answers as Redis. On a port of its own choosing, one that
        another process took meanwhile is given up for the next free one."""
        for _ in range(5):
            try:
                self._start_once()
                return
            except RedisServerError:
                if not self._port_chosen:
                    raise
                self.port = free_port()
        raise RedisServerError("redis-server found no free port")

    def _start_once(self) -> None:
        command = [self.executable, "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
        if self.tls is None:
            command += ["--port", str(self.port)]
        else:
            command += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            command += ["--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)]
            command += ["--tls-ca-cert-file", str(self.tls.cert)]
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
                # Redis's own answer (PONG, or NOAUTH with a password) from our live process:
                # anything else is another server on the port.
                if self._answers() and self._process.poll() is None:
                    return
            except OSError:
                # Not listening yet: poll the port, there is no readiness event to wait on.
                time.sleep(0.02)
        self.kill()
        raise RedisServerError("redis-server did not start in time")

    def _answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as raw:
            sock = raw
            if self.tls is not None:
                context = ssl.create_default_context(cafile=self.tls.cert)
                sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
            if answer.startswith((b"+PONG", b"-NOAUTH")):
                return True
            self.kill()
            raise RedisServerError(f"another server answers on port {self.port}: {answer[:40]!r}")

    def kill(self) -> None:
        """SIGKILL, as a crash would; wait until it is gone."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused one too
            process.kill()
            process.wait()

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, as a hung server would."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

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


class TcpProxy:
    """A TCP proxy to a loopback port that can fail the way networks do.

    :meth:`cut` silently drops every byte of each connection that has sent a Redis
    SUBSCRIBE (a half-open pub/sub connection after a NAT drop or a partition: nothing is
    closed, nothing arrives); other connections and later ones pass. :meth:`down` closes
    every connection and refuses new ones until :meth:`up`. Runs on the caller's loop.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._connections: list[tuple[list[bool], asyncio.StreamWriter, asyncio.StreamWriter]] = []

    def url(self, scheme: str = "redis", path: str = "/0") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def start(self, port: int = 0) -> None:
        """Listen on ``port`` (any free one by default; OSError if it is taken)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port or self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        """Every connection that has subscribed goes silent for good."""
        for state, _, _ in self._connections:
            if state[0]:
                state[1] = True

    async def down(self) -> None:
        """Close every connection and stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for _, downstream, upstream in self._connections:
            downstream.close()
            upstream.close()
        self._connections.clear()

    async def up(self) -> None:
        """Listen again on the same port."""
        await self.start(self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            writer.close()
            return
        state = [False, False]  # subscribed, cut
        self._connections.append((state, writer, upstream_writer))
        await asyncio.gather(
            self._pipe(reader, upstream_writer, state, sniff=True),
            self._pipe(upstream_reader, writer, state, sniff=False),
            return_exceptions=True,
        )

    @staticmethod
    async def _pipe(
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        state: list[bool],
        *,
        sniff: bool,
    ) -> None:
        with contextlib.suppress(OSError):
            while chunk := await source.read(65536):
                if sniff and b"SUBSCRIBE" in chunk.upper():
                    state[0] = True
                if not state[1]:
                    sink.write(chunk)
                    await sink.drain()
        if not state[1]:
            sink.close()


_LISTENING = re.compile(r"dashboard listening on (http://\S+?)/?\s*$")
_SERVE_START_TIMEOUT_S = 60.0
_SERVE_STOP_TIMEOUT_S = 10.0


class ServeProcess:
    """``driftshare serve`` on a port of its choosing (port 0), optionally a fleet member or
    restarted on a snapshot folder; the one way the tests and the benchmarks run it.

    ``await start()`` returns once it listens (:attr:`url`); its stderr is kept in
    :attr:`log` for a failing test to show. ``await stop()`` is SIGTERM and an await of the
    exit, so the event loop (and a simulator on it) keeps serving the child's clean shutdown.
    """

    def __init__(
        self,
        rpc_url: str,
        share_url: str | None = None,
        *,
        engines: Sequence[str] = (),
        snapshot: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.rpc_url = rpc_url
        self.share_url = share_url
        self.engines = list(engines)
        self.snapshot = snapshot
        self.env = dict(env or {})
        self.url = ""
        self.log: list[str] = []
        self.process: asyncio.subprocess.Process | _forkserver.AsyncForked | None = None
        self._drain: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    def _environ(self) -> dict[str, str]:
        env = {**os.environ, "COLUMNS": "400"}  # log lines do not wrap
        if self.share_url is None:
            env.pop("DRIFT_SHARE_URL", None)  # a standalone process, whatever the caller's env
        if self.snapshot is not None:
            # The snapshot is written at a clean shutdown only; start-up gives up soon and
            # retries quickly, so a start with the RPC down answers from the snapshot at once.
            env |= {
                "DRIFT_SNAPSHOT_PATH": str(self.snapshot),
                "DRIFT_SNAPSHOT_INTERVAL_S": "3600",
                "DRIFT_MAX_RETRIES": "0",
                "DRIFT_RETRY_BACKOFF": "0.2",
                "DRIFT_RETRY_BACKOFF_CAP": "0.5",
                "DRIFT_INIT_TIMEOUT_S": "5",
            }
        return env | self.env

    async def spawn(self) -> None:
        """Start the process; :meth:`listening` awaits its URL."""
        command = ["-m", "driftshare", "serve", "--rpc-url", self.rpc_url, "--port", "0"]
        if self.share_url is not None:
            command += ["--share-url", self.share_url]
        if self.engines:
            command += ["--engines", ",".join(self.engines)]
        env = self._environ()
        quiet, piped = asyncio.subprocess.DEVNULL, asyncio.subprocess.PIPE
        self.process = await _forkserver.create(
            command, env=env, stdin=quiet, stdout=quiet, stderr=piped
        )
        self._drain = asyncio.get_running_loop().create_task(self._read_log())

    async def _read_log(self) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            self.log.append(text)
            match = _LISTENING.search(text)
            if match and not self.url:
                self.url = match.group(1)
                self._listening.set()

    async def listening(self, within: float = _SERVE_START_TIMEOUT_S) -> None:
        """Wait until the dashboard listens; AssertionError with the log if it ends first."""
        assert self._drain is not None, "spawn() first"
        heard = asyncio.ensure_future(self._listening.wait())
        try:
            await asyncio.wait({heard, self._drain}, timeout=within, return_when="FIRST_COMPLETED")
        finally:
            heard.cancel()
        if not self.url:
            ended = "ended" if self._drain.done() else f"did not listen within {within:g} s"
            raise AssertionError(f"serve {ended}:\n{self.log_text()}")

    async def start(self) -> None:
        """Spawn and wait until it listens."""
        await self.spawn()
        await self.listening()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def get(self, client: httpx.AsyncClient, path: str) -> Any | None:
        """The JSON at ``path``, or None while the process does not answer."""
        try:
            response = await client.get(self.url + path, timeout=2.0)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    async def stats(self, client: httpx.AsyncClient) -> dict[str, Any]:
        """``GET /api/stats``, or ``{}`` while the process does not answer."""
        found = await self.get(client, "/api/stats")
        return found if isinstance(found, dict) else {}

    async def metrics(self, client: httpx.AsyncClient) -> str:
        try:
            return (await client.get(self.url + "/metrics", timeout=2.0)).text
        except httpx.HTTPError:
            return ""

    def rss_bytes(self) -> int:
        """Resident memory now, from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def log_text(self) -> str:
        return "\n".join(self.log)

    async def kill(self) -> None:
        """SIGKILL, as a crash would, and wait until it is gone."""
        if self.alive():
            assert self.process is not None
            self.process.kill()
        await self._finish()

    async def stop(self, within: float = _SERVE_STOP_TIMEOUT_S) -> int | None:
        """SIGTERM and await the exit (SIGKILL after ``within`` s); the exit code, 0 for a
        clean shutdown, -9 for one that hung."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), within)
            except TimeoutError:
                self.process.kill()
        await self._finish()
        return self.returncode

    async def _finish(self) -> None:
        if self.process is not None:
            await self.process.wait()
        if self._drain is not None:
            await self._drain


async def stop_all(procs: Iterable[ServeProcess]) -> list[int | None]:
    """Stop every process at once; their exit codes, in order."""
    return list(await asyncio.gather(*(p.stop() for p in procs)))


async def all_ready(
    client: httpx.AsyncClient, procs: Sequence[ServeProcess], *, fleet: bool = True
) -> bool:
    """Every process has its shared client up and, in a fleet, exactly one leads."""
    found = [await p.stats(client) for p in procs]
    if not all(s.get("manager", {}).get("initialized") for s in found):
        return False
    return not fleet or [s["fleet"]["role"] for s in found].count("leader") == 1


async def fresh_after(client: httpx.AsyncClient, procs: Sequence[ServeProcess], slot: int) -> bool:
    """One of ``procs`` leads, the rest follow, and every one serves data newer than ``slot``."""
    found = [await p.stats(client) for p in procs]
    roles = [s.get("fleet", {}).get("role") for s in found]
    slots = [s.get("manager", {}).get("data_slot") or 0 for s in found]
    return (
        roles.count("leader") == 1
        and roles.count("follower") == len(procs) - 1
        and (min(slots) > slot)
    )
