"""A fork server for the test suite's ``python -m driftshare …`` and ``python -m bench…``
children.

Each child is a real process of its own: its module runs as ``__main__`` with its own argv,
environment, working directory and standard streams, and its exit code (negative for a
signal) comes back as a subprocess's would. What it skips is the interpreter's start and the
imports, about 2 CPU-seconds a process, most of them driftpy building its IDL coders: the
server imported them once, and every child is forked from it. On a 2-core machine that is
the difference between a suite that waits on CPU and one that does not.

:func:`popen`, :func:`run` and :func:`create` stand for their :mod:`subprocess` and
:mod:`asyncio` namesakes with ``[sys.executable, *argv]``. They fork only once the test suite
has called :func:`enable`: the benchmarks time real process starts. A child whose
interpreter set-up (``PYTHON*`` variables, module path) differs from the server's, or whose
``argv`` is not ``-m module …``, gets a real interpreter.

``multiprocessing``'s forkserver runs a function, not a module's ``__main__`` with its own
standard streams and environment, hence this one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import json
import os
import runpy
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = ["AsyncForked", "Forked", "checkout_environ", "create", "enable", "popen", "run"]

_REPO = Path(__file__).resolve().parent.parent
# What `driftshare serve`, `driftshare sim` and the bench workers import, on start or on first
# use: a child that needs a module the server did not import imports it itself.
_PRELOAD = (
    "driftshare._cli",
    "driftshare._serve",
    "driftshare._demo",
    "driftshare.sim",
    "driftshare.sim.server",
    "driftshare._fleet",
    "driftshare._web",
    "driftshare._engines",
    "driftpy.drift_client",
    "driftpy.accounts.grpc.account_subscriber",
    "redis.asyncio",
    "aiohttp.web",
    "bench._worker",
    "bench.trading.worker",
)
_MAX_MESSAGE = 1 << 20
_ADDRESS = "DRIFTSHARE_TEST_FORKSERVER"
"""The environment variable that hands the server's address to pytest-xdist's workers."""
# Not `-m bench._forkserver`: `bench` imports this module first, and runpy warns of it.
_SERVER = "import sys; from bench._forkserver import _serve; _serve(int(sys.argv[1]))"


def checkout_environ() -> dict[str, str]:
    """This process's environment with the checkout on ``PYTHONPATH``: ``bench`` is not
    installed, and ``python -m bench…`` children import it from here."""
    pythonpath = os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": pythonpath}


def _python_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The variables that set up an interpreter (PYTHONPATH apart: see :func:`_paths`)."""
    return {k: v for k, v in env.items() if k.startswith("PYTHON") and k != "PYTHONPATH"}


def _paths(env: Mapping[str, str]) -> set[str]:
    return {
        os.path.abspath(entry) for entry in env.get("PYTHONPATH", "").split(os.pathsep) if entry
    }


# ---------------------------------------------------------------------------------------------
# The server process, started by :func:`enable` with its listening socket as an inherited fd.


def _serve(listening_fd: int) -> None:
    for name in _PRELOAD:
        with contextlib.suppress(ImportError):  # an extra this checkout lacks
            importlib.import_module(name)
    # Each request's supervisor is reaped by the kernel; the supervisor waits for its child.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    listener = socket.socket(fileno=listening_fd)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj != listener:
                # The process that started us closed our stdin: it is gone, and so are we.
                path = listener.getsockname()
                os.unlink(path)
                os.rmdir(os.path.dirname(path))
                return
            conn, _ = listener.accept()
            message, fds, _, _ = socket.recv_fds(conn, _MAX_MESSAGE, 3)
            sys.stdout.flush()
            sys.stderr.flush()
            if os.fork() == 0:
                selector.close()
                listener.close()
                _supervise(conn, json.loads(message), fds)
            conn.close()
            for fd in fds:
                os.close(fd)


def _supervise(conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
    """Fork the child, report its pid, wait for it and report its exit code."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _become(request, fds)
    try:
        for fd in fds:
            os.close(fd)
        conn.send(json.dumps({"pid": pid}).encode())
        _, status = os.waitpid(pid, 0)
        conn.send(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode())
    finally:
        os._exit(0)  # never back into the server's loop


def _become(request: dict[str, Any], fds: list[int]) -> None:
    """Turn this fork into ``python -m module args…``. It leaves by an exception only, which
    no frame of the server catches: it ends this interpreter as it would end the module's own
    (traceback, atexit handlers, threads joined, streams flushed, the exit code)."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        if fd > 2:
            os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[0] = os.getcwd()
    sys.argv = [request["module"], *request["args"]]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    sys.exit(0)


# ---------------------------------------------------------------------------------------------
# The client, in the test process.


@dataclass(frozen=True)
class _Server:
    """Where the fork server listens, and the interpreter set-up its children get."""

    path: str
    executable: str
    python_env: dict[str, str]
    paths: frozenset[str]

    def request(
        self, module: str, args: Sequence[str], env: Mapping[str, str], cwd: str, fds: list[int]
    ) -> socket.socket:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conn.connect(self.path)
        message = {"module": module, "args": list(args), "env": dict(env), "cwd": cwd}
        socket.send_fds(conn, [json.dumps(message).encode()], fds)
        return conn


class _State:
    server: _Server | None = None
    process: subprocess.Popen[bytes] | None = None
    """The server this process started, kept: its stdin closes when this process ends."""


def enable() -> None:
    """Fork this process's ``python -m`` children from now on.

    The first process to call it (pytest-xdist's controller) starts the server, and its
    workers, which inherit :data:`_ADDRESS` in their environment, share it. The listening
    socket exists before this returns; connections wait in its backlog while the server
    imports. The server exits with the process that started it (its stdin closes).
    """
    if _ADDRESS not in os.environ:
        folder = tempfile.mkdtemp(prefix="driftshare-fork-")
        path = os.path.join(folder, "socket")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(path)
        listener.listen(64)
        env = checkout_environ()
        address = {
            "path": path,
            "executable": sys.executable,
            "python_env": _python_environment(env),
            "paths": sorted(_paths(env)),
        }
        os.environ[_ADDRESS] = json.dumps(address)
        _State.process = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(listener.fileno())],
            stdin=subprocess.PIPE,
            pass_fds=[listener.fileno()],
            env={**env, _ADDRESS: os.environ[_ADDRESS]},
        )
        listener.close()
    address = json.loads(os.environ[_ADDRESS])
    _State.server = _Server(
        address["path"], address["executable"], address["python_env"], frozenset(address["paths"])
    )


def _server_for(argv: Sequence[str], env: Mapping[str, str]) -> _Server | None:
    server = _State.server
    if server is None or len(argv) < 2 or argv[0] != "-m":
        return None
    # The server's interpreter was set up by its PYTHON* variables: a child asking for
    # others, or for a module path the server lacks, needs an interpreter of its own.
    if sys.executable != server.executable or _python_environment(env) != server.python_env:
        return None
    return server if _paths(env) <= server.paths else None


class _Child:
    """What a forked child shares with a subprocess: ``pid``, ``returncode``, ``poll()``,
    ``send_signal()``, ``terminate()`` and ``kill()``."""

    def __init__(self, conn: socket.socket, started: bytes) -> None:
        self._conn = conn
        self.pid: int = json.loads(started)["pid"]
        self.returncode: int | None = None

    def _got(self, message: bytes) -> int:
        if self.returncode is None:
            # No message: the supervisor itself was killed; the child's fate is unknown,
            # reported as the kill it most likely shared.
            self.returncode = json.loads(message)["returncode"] if message else -signal.SIGKILL
            self._conn.close()
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None:
            with contextlib.suppress(BlockingIOError):
                self._got(self._conn.recv(_MAX_MESSAGE, socket.MSG_DONTWAIT))
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Forked(_Child):
    """A forked child as a :class:`subprocess.Popen`; ``stdout`` and ``stderr`` read the
    streams that were piped."""

    stdout: IO[Any] | None = None
    stderr: IO[Any] | None = None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._conn.settimeout(timeout)
            try:
                self._got(self._conn.recv(_MAX_MESSAGE))
            except TimeoutError:
                raise subprocess.TimeoutExpired(f"forked {self.pid}", timeout or 0) from None
        assert self.returncode is not None
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[Any, Any]:
        """Read the piped streams to their end and wait for the exit (both within
        ``timeout``)."""
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            reads = [pool.submit(s.read) if s else None for s in (self.stdout, self.stderr)]
            self.wait(timeout)
            out, err = (None if read is None else read.result(timeout) for read in reads)
        return out, err


class AsyncForked(_Child):
    """A forked child as an :class:`asyncio.subprocess.Process`; ``stdout`` and ``stderr``
    read the streams that were piped."""

    stdout: asyncio.StreamReader | None = None
    stderr: asyncio.StreamReader | None = None

    async def wait(self) -> int:
        if self.returncode is None:
            loop = asyncio.get_running_loop()
            self._got(await loop.sock_recv(self._conn, _MAX_MESSAGE))
        assert self.returncode is not None
        return self.returncode

    async def communicate(self) -> tuple[bytes | None, bytes | None]:
        """Read the piped streams to their end, then wait for the exit."""

        async def read(stream: asyncio.StreamReader | None) -> bytes | None:
            return None if stream is None else await stream.read()

        out, err = await asyncio.gather(read(self.stdout), read(self.stderr))
        await self.wait()
        return out, err


Stream = int | IO[Any] | None


def _request(
    argv: Sequence[str],
    env: Mapping[str, str] | None,
    cwd: str | os.PathLike[str] | None,
    streams: tuple[Stream, Stream, Stream],
) -> tuple[socket.socket, list[int | None]] | None:
    """Ask the server for ``python *argv``; the connection, and our read end of each
    stream given as PIPE (stdout and stderr only)."""
    environ = dict(os.environ if env is None else env)
    server = _server_for(argv, environ)
    if server is None:
        return None
    theirs: list[int] = []
    ours: list[int | None] = []
    opened: list[int] = []  # closed once sent: the message carries copies of the descriptors
    for target, stream in enumerate(streams):
        read_end = None
        if stream is None:
            fd = target
        elif stream == subprocess.DEVNULL:
            fd = os.open(os.devnull, os.O_RDWR)
            opened.append(fd)
        elif stream == subprocess.PIPE and target > 0:
            read_end, fd = os.pipe()
            opened.append(fd)
        elif isinstance(stream, int) and stream >= 0:
            fd = stream
        elif not isinstance(stream, int):
            fd = stream.fileno()
        else:
            raise ValueError(f"stream {target}: {stream} is not supported")
        theirs.append(fd)
        ours.append(read_end)
    try:
        conn = server.request(argv[1], argv[2:], environ, os.fspath(cwd or os.getcwd()), theirs)
    finally:
        for fd in opened:
            os.close(fd)
    return conn, ours


def popen(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdin: Stream = None,
    stdout: Stream = None,
    stderr: Stream = None,
    text: bool = False,
) -> subprocess.Popen[Any] | Forked:
    """``subprocess.Popen([python, *argv], …)``, forked when it can be (see the module)."""
    made = _request(argv, env, cwd, (stdin, stdout, stderr))
    if made is None:
        return subprocess.Popen(
            [sys.executable, *argv],
            env=env,
            cwd=cwd,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            text=text,
        )
    conn, ours = made
    child = Forked(conn, conn.recv(_MAX_MESSAGE))
    mode = "r" if text else "rb"
    child.stdout = None if ours[1] is None else os.fdopen(ours[1], mode)
    child.stderr = None if ours[2] is None else os.fdopen(ours[2], mode)
    return child


def run(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([python, *argv], capture_output=True, text=True, timeout=…)``,
    forked when it can be; a child still running at ``timeout`` is killed
    (:class:`subprocess.TimeoutExpired`)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = popen(argv, env=env, stdout=out, stderr=err)
        try:
            returncode = child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            raise
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(argv, returncode, out.read(), err.read())


async def create(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin: Stream = None,
    stdout: Stream = None,
    stderr: Stream = None,
) -> asyncio.subprocess.Process | AsyncForked:
    """``asyncio.create_subprocess_exec(python, *argv, …)``, forked when it can be; piped
    stdout and stderr are stream readers."""
    made = _request(argv, env, None, (stdin, stdout, stderr))
    if made is None:
        return await asyncio.create_subprocess_exec(
            sys.executable, *argv, env=env, stdin=stdin, stdout=stdout, stderr=stderr
        )
    conn, ours = made
    conn.setblocking(False)
    child = AsyncForked(conn, await asyncio.get_running_loop().sock_recv(conn, _MAX_MESSAGE))
    child.stdout = None if ours[1] is None else await _reader(ours[1])
    child.stderr = None if ours[2] is None else await _reader(ours[2])
    return child


async def _reader(fd: int) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    protocol = asyncio.StreamReaderProtocol(reader)
    pipe = os.fdopen(fd, "rb", buffering=0)  # the transport closes it
    await asyncio.get_running_loop().connect_read_pipe(lambda: protocol, pipe)
    return reader
