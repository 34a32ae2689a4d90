"""Rider: a periodic read that rides in another request's JSON-RPC batch when it is due.

The blockhash, block height and priority fee are refreshed this way, in a send's or a status
poll's HTTP request, so they cost no request of their own while transactions are sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

from driftshare._tx.rpc import RpcError, TxRpc

__all__ = ["Call", "Rider", "ride"]

Call = tuple[str, list[Any]]
"""One JSON-RPC call: method and params."""


class Rider:
    """Asks its :meth:`calls` once ``interval_s`` has passed since it last asked, and keeps
    what :meth:`take` parses of the answers."""

    def __init__(self, *, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._asked_at: float | None = None
        self.refreshes = 0
        self.failures = 0

    def calls(self) -> list[Call]:
        """The calls to make, now (noted as asked)."""
        self._asked_at = self._clock()
        return self._calls()

    def due(self) -> list[Call]:
        """:meth:`calls` once ``interval_s`` has passed since last asked, else none."""
        asked = self._asked_at
        return self.calls() if asked is None or self._clock() - asked >= self.interval_s else []

    def take(self, answers: list[Any]) -> None:
        """The answers to :meth:`calls`, in order (an exception for a failed call or batch);
        counts and raises a failed or malformed one."""
        try:
            for answer in answers:
                if isinstance(answer, Exception):
                    raise answer
            self._take(*answers)
        except Exception:
            self.failures += 1
            raise
        self.refreshes += 1

    def _calls(self) -> list[Call]:
        raise NotImplementedError

    def _take(self, *answers: Any) -> None:
        raise NotImplementedError


async def ride(rpc: TxRpc, calls: list[Call], riders: Sequence[Rider]) -> list[Any]:
    """Send ``calls`` with every due rider's in one batch; hand each rider its answers and
    return those to ``calls`` (each the batch's exception if the batch failed). One call with
    nothing riding goes alone, not as a batch of one."""
    riding = [(rider, theirs) for rider in riders if (theirs := rider.due())]
    try:
        if len(calls) == 1 and not riding:
            try:
                answers = [await rpc.call(*calls[0])]
            except RpcError as exc:  # an error answer, in its place as a batch gives it
                answers = [exc]
        else:
            answers = await rpc.batch([*calls, *(c for _, cs in riding for c in cs)])
    except Exception as exc:
        answers = [exc] * (len(calls) + sum(len(cs) for _, cs in riding))
    rest = answers[len(calls) :]
    for rider, theirs in riding:
        mine, rest = rest[: len(theirs)], rest[len(theirs) :]
        with suppress(Exception):  # the rider counted it; it is due again later
            rider.take(mine)
    return answers[: len(calls)]
