"""One generation of a shared client: what it opened and every task it started."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from contextlib import suppress
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair

from driftshare._tasks import cancel_all

if TYPE_CHECKING:
    from driftshare._fleet import FleetMember

__all__ = ["Generation", "unsubscribe_fully"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


async def unsubscribe_fully(subscriber: Any) -> None:
    """Unsubscribe ``subscriber`` to the end even if the caller is cancelled meanwhile.

    A subscriber left half-unsubscribed keeps sockets and tasks open for good, so the
    caller's cancellation is re-raised only once the unsubscription has finished.
    """
    task: asyncio.Future[Any] = asyncio.ensure_future(subscriber.unsubscribe())
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            # The caller was cancelled (the unsubscription was not), even when the task
            # ended in the same step: the cancellation is owed to the caller all the same.
            if not task.cancelled():
                cancelled = cancelled or exc
        except Exception:  # reported below, from the task itself
            break
    if not task.cancelled() and task.exception() is not None:
        log.debug("unsubscribe failed: %r", task.exception())
    if cancelled is not None:
        raise cancelled


async def _close_session(session: httpx.AsyncClient) -> None:
    with suppress(Exception):
        await session.aclose()


class Generation:
    """One life of a shared client: from the first reference to the close after the last.

    It owns what that life opened (client, connection, HTTP sessions) and every task it
    started, so its close finds all of them. Once retired it starts no task and publishes
    nothing: work still under way sees :meth:`check` raise and ends.
    """

    def __init__(self, keypair: Keypair, after: asyncio.Task[None] | None) -> None:
        self.keypair = keypair
        self.after = after
        self.client: Any = None
        self.connection: AsyncClient | None = None
        self.genesis: str | None = None
        """The RPC's chain (its genesis hash), asked once per life: by the fleet or the snapshot."""
        self.created_at = time.monotonic()
        self.ready_at: float | None = None
        self.retired = False
        self.attempt: asyncio.Future[Any] | None = None
        self.init_task: asyncio.Task[None] | None = None
        self.health_task: asyncio.Task[None] | None = None
        self.reconnecting: asyncio.Task[bool] | None = None
        self.failover_task: asyncio.Task[None] | None = None
        self.old_sessions: list[httpx.AsyncClient] = []
        self.fleet: FleetMember | None = None
        """This life's fleet membership when ``DRIFT_SHARE_URL`` is set."""
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, _T], name: str) -> asyncio.Task[_T] | None:
        """Run ``coro`` as a task of this generation; None (and not run) once retired."""
        if self.retired:
            coro.close()
            return None
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def check(self) -> None:
        """Raise CancelledError in a retired generation: its close cancels the work anyway."""
        if self.retired:
            raise asyncio.CancelledError

    def settle(self, result: Any) -> None:
        """Answer the callers waiting for the current start-up attempt."""
        if self.attempt is not None and not self.attempt.done():
            self.attempt.set_result(result)
        self.attempt = None

    def retire(self) -> None:
        self.retired = True
        self.ready_at = None
        self.settle(None)

    async def close_old_sessions(self) -> None:
        """Close the HTTP sessions a reconnect replaced, once their requests have ended."""
        while self.old_sessions:
            session = self.old_sessions[0]
            await _close_session(session)
            # A concurrent call (a fail-over's during a rebuild's) may have let it go already.
            if self.old_sessions and self.old_sessions[0] is session:
                self.old_sessions.pop(0)

    async def close(self) -> None:
        """Cancel every task of this (retired) generation and close what it opened.

        Never raises: a later generation waits for this close before it starts.
        """
        await cancel_all(list(self._tasks))
        fleet, self.fleet = self.fleet, None
        if fleet is not None:
            try:
                await fleet.close()
            except Exception as exc:  # what follows must still be closed
                log.warning("closing the fleet membership failed: %r", exc)
        if self.client is not None:
            await unsubscribe_fully(self.client.account_subscriber)
        await self.close_old_sessions()
        if self.connection is not None:
            with suppress(Exception):
                await self.connection.close()
        self.client = None
        self.connection = None
