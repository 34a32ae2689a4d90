"""SignatureWatcher: every pending signature's status, by one batched poll per interval.

Every signature any engine waits on is asked about in the same JSON-RPC batch of
``getSignatureStatuses`` calls (256 signatures a call, the method's limit), so the cost is
per interval, shared by all the transactions in flight, not per transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from driftshare._tx.rpc import RpcError, TxRpc

__all__ = ["SignatureStatus", "SignatureWatcher"]

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


@dataclass(slots=True)
class _Watched:
    since: float
    status: SignatureStatus | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class SignatureWatcher:
    """Polls the statuses of the watched signatures every ``interval_s`` while any is watched.

    A signature is polled once it has been out for ``interval_s`` (before that it can hardly
    have landed). :meth:`wait` returns when its status changes.
    """

    def __init__(
        self, rpc: TxRpc, *, interval_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rpc = rpc
        self.interval_s = interval_s
        self._clock = clock
        self._watched: dict[str, _Watched] = {}
        self._pending = asyncio.Event()
        self.polls = 0
        self.failures = 0

    def watch(self, signature: str) -> None:
        if signature not in self._watched:
            self._watched[signature] = _Watched(self._clock())
        self._pending.set()

    def forget(self, signature: str) -> None:
        self._watched.pop(signature, None)

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
        calls: list[tuple[str, list[Any]]] = [
            (
                "getSignatureStatuses",
                [
                    list(signatures[i : i + SIGNATURES_PER_CALL]),
                    {"searchTransactionHistory": history},
                ],
            )
            for i in range(0, len(signatures), SIGNATURES_PER_CALL)
        ]
        if not calls:
            return {}
        found: dict[str, SignatureStatus | None] = {}
        for (_, params), answer in zip(calls, await self._rpc.batch(calls), strict=True):
            if isinstance(answer, RpcError):
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

    async def poll(self) -> None:
        """Ask for every watched signature out for ``interval_s``, and record the answers."""
        due = self._clock() - self.interval_s
        signatures = [s for s, w in self._watched.items() if w.since <= due]
        if not signatures:
            return
        self.polls += 1
        found = await self.lookup(signatures, history=False)
        for signature, status in found.items():
            self.record(signature, status)

    def record(self, signature: str, status: SignatureStatus | None) -> None:
        """Note ``signature``'s status (from a poll or a lookup) and wake its waiters."""
        watched = self._watched.get(signature)
        if watched is None or status is None or status == watched.status:
            return
        watched.status = status
        watched.changed.set()

    async def run(self) -> None:
        """Poll every ``interval_s`` while signatures are watched, until cancelled."""
        while True:
            if not self._watched:
                self._pending.clear()
                await self._pending.wait()
            await asyncio.sleep(self.interval_s)
            try:
                await self.poll()
            except Exception as exc:  # an RPC failure: the next round asks again
                self.failures += 1
                log.debug("signature status poll failed: %r", exc)
