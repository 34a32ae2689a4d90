"""SignatureWatcher: every pending signature's status, by notification or one batched poll.

Where a :class:`Feed` covers a signature (``signatureSubscribe`` on the shared WebSocket), its
notification brings the status and the poll asks only as a safety net, every
``covered_interval_s``. Every other pending signature is asked about every ``interval_s``, all
in the same JSON-RPC batch of ``getSignatureStatuses`` calls (256 signatures a call, the
method's limit), so the cost is per interval, shared by all the transactions in flight. The
path's other periodic reads (blockhash, block height, priority fee) ride in a poll's batch
when due.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

from driftshare._tx.riders import Call, Rider, ride
from driftshare._tx.rpc import RpcError, TxRpc

__all__ = ["Feed", "SignatureStatus", "SignatureWatcher"]

log = logging.getLogger(__name__)

SIGNATURES_PER_CALL = 256
_SETTLED = frozenset({"confirmed", "finalized"})


@dataclass(frozen=True, slots=True)
class SignatureStatus:
    """What the chain says of a landed signature."""

    slot: int
    err: Any
    """The ``TransactionError`` JSON, None when the transaction succeeded."""
    confirmation: str
    """``processed``, ``confirmed`` or ``finalized``."""

    @property
    def settled(self) -> bool:
        """Confirmed or finalized: the chain has voted on it, its outcome holds."""
        return self.confirmation in _SETTLED

    @classmethod
    def parse(cls, value: Any) -> SignatureStatus | None:
        """The status in one entry of a ``getSignatureStatuses`` answer (None: no status)."""
        if value is None:
            return None
        try:
            confirmation = value.get("confirmationStatus") or (
                "finalized" if value.get("confirmations") is None else "processed"
            )
            return cls(int(value["slot"]), value.get("err"), str(confirmation))
        except (AttributeError, KeyError, TypeError, ValueError):
            raise RpcError(0, f"a malformed signature status: {str(value)[:200]}") from None


class Feed(Protocol):
    """Notifications of signatures' statuses (see ``driftshare._tx.signature_feed``)."""

    def covered(self, signature: str) -> bool:
        """Whether a notification of ``signature``'s status is owed on a live socket."""

    async def subscribe(self, signature: str) -> None: ...

    async def unsubscribe(self, signature: str) -> None: ...


@dataclass(slots=True)
class _Watched:
    since: float
    asked: float | None = None
    """When a poll last asked about it."""
    status: SignatureStatus | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class SignatureWatcher:
    """The statuses of the watched signatures: from the notifications of the feed given to
    :meth:`attach`, and from a poll while any is watched.

    A signature the feed does not cover is first polled once it has been out for
    ``interval_s`` (before that it can hardly have landed and been confirmed), then every
    ``interval_s``; a covered one likewise every ``covered_interval_s``. A poll also asks about
    every signature due within half ``interval_s``. :meth:`wait` returns when a status
    changes. ``riders`` ride in each poll's batch when due.
    """

    def __init__(
        self,
        rpc: TxRpc,
        *,
        interval_s: float,
        covered_interval_s: float,
        riders: Sequence[Rider] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rpc = rpc
        self.interval_s = interval_s
        self.covered_interval_s = covered_interval_s
        self._riders = list(riders)
        self._clock = clock
        self.feed: Feed | None = None
        self._watched: dict[str, _Watched] = {}
        self._wake = asyncio.Event()
        self.polls = 0
        self.failures = 0

    def attach(self, feed: Feed) -> None:
        """Take statuses from ``feed`` too (it calls :meth:`record` and :meth:`wake`)."""
        self.feed = feed

    def wake(self) -> None:
        """Look at the poll schedule again: a signature's coverage changed."""
        self._wake.set()

    async def watch(self, signature: str) -> None:
        """Follow ``signature``: subscribed on the feed, polled as due."""
        if signature not in self._watched:
            self._watched[signature] = _Watched(self._clock())
            if self.feed is not None:
                await self.feed.subscribe(signature)
        self._wake.set()

    async def forget(self, signature: str) -> None:
        if self._watched.pop(signature, None) is not None and self.feed is not None:
            await self.feed.unsubscribe(signature)

    def status(self, signature: str) -> SignatureStatus | None:
        watched = self._watched.get(signature)
        return None if watched is None else watched.status

    async def wait(self, signature: str, seconds: float) -> None:
        """Until ``signature``'s status changes, or ``seconds`` have passed."""
        watched = self._watched.get(signature)
        if watched is None or seconds <= 0:
            return
        watched.changed.clear()
        with suppress(TimeoutError):
            await asyncio.wait_for(watched.changed.wait(), seconds)

    async def lookup(
        self, signatures: Sequence[str], *, history: bool
    ) -> dict[str, SignatureStatus | None]:
        """The statuses of ``signatures`` now; with ``history`` the node also searches past
        its recent status cache. Raises on an RPC failure."""
        calls = _status_calls(signatures, history)
        if not calls:
            return {}
        return _statuses(calls, await self._rpc.batch(calls))

    def _next_ask(self, signature: str, watched: _Watched) -> float:
        covered = self.feed is not None and self.feed.covered(signature)
        interval = self.covered_interval_s if covered else self.interval_s
        return (watched.since if watched.asked is None else watched.asked) + interval

    async def poll(self) -> None:
        """Ask for every watched signature due within half ``interval_s``, with the riders
        that are due, in one batch; record the answers. Nothing to ask, no request: riders
        only ride. (Half: a signature just short of due would otherwise wait a whole extra
        interval.)"""
        now = self._clock()
        due = [
            s for s, w in self._watched.items() if self._next_ask(s, w) <= now + self.interval_s / 2
        ]
        calls = _status_calls(due, False)
        if not calls:
            return
        for signature in due:
            self._watched[signature].asked = now
        self.polls += 1
        for signature, status in _statuses(
            calls, await ride(self._rpc, calls, self._riders)
        ).items():
            self.record(signature, status)

    def record(self, signature: str, status: SignatureStatus | None) -> None:
        """Note ``signature``'s status (from a notification, a poll or a lookup) and wake its
        waiters."""
        watched = self._watched.get(signature)
        if watched is None or status is None or status == watched.status:
            return
        watched.status = status
        watched.changed.set()

    async def run(self) -> None:
        """Poll while signatures are watched, until cancelled: once the first is due, and at
        most once per ``interval_s``."""
        last_poll = -math.inf
        while True:
            self._wake.clear()
            if not self._watched:
                await self._wake.wait()
                continue
            due = min(self._next_ask(s, w) for s, w in self._watched.items())
            delay = max(last_poll + self.interval_s, due) - self._clock()
            if delay > 0:
                # Woken early when a signature comes or goes uncovered.
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            last_poll = self._clock()
            try:
                await self.poll()
            except Exception as exc:  # an RPC failure: the next round asks again
                self.failures += 1
                log.debug("signature status poll failed: %r", exc)


def _status_calls(signatures: Sequence[str], history: bool) -> list[Call]:
    return [
        (
            "getSignatureStatuses",
            [list(signatures[i : i + SIGNATURES_PER_CALL]), {"searchTransactionHistory": history}],
        )
        for i in range(0, len(signatures), SIGNATURES_PER_CALL)
    ]


def _statuses(calls: list[Call], answers: list[Any]) -> dict[str, SignatureStatus | None]:
    """The statuses in the answers to ``calls``; raises on a failed or malformed answer."""
    found: dict[str, SignatureStatus | None] = {}
    for (_, params), answer in zip(calls, answers, strict=True):
        if isinstance(answer, Exception):
            raise answer
        try:
            values = list(answer["value"])
        except (KeyError, TypeError):
            raise RpcError(0, f"a malformed status answer: {str(answer)[:200]}") from None
        if len(values) != len(params[0]):
            raise RpcError(0, "a status answer of the wrong length")
        for signature, value in zip(params[0], values, strict=True):
            found[signature] = SignatureStatus.parse(value)
    return found
