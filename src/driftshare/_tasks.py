"""Ending tasks for good: the one cancellation helper every part of the client uses."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_all"]

_RECANCEL_S = 0.1


async def cancel_all(tasks: list[asyncio.Task[Any] | None]) -> None:
    """Cancel ``tasks`` (never the caller itself) until every one has ended.

    One ``cancel()`` is not enough on Python 3.11: a cancellation that races a timeout
    (``wait_for``, ``asyncio.timeout``) can surface as a TimeoutError, which a loop's own
    error handling then takes for an ordinary failure and carries on.
    """
    current = asyncio.current_task()
    pending = [t for t in tasks if t is not None and t is not current]
    while unfinished := [t for t in pending if not t.done()]:
        for task in unfinished:
            task.cancel()
        await asyncio.wait(unfinished, timeout=_RECANCEL_S)
    for task in pending:
        if not task.cancelled():
            task.exception()  # retrieved: a failure at cancellation is not "never retrieved"
