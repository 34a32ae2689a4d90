"""Stopping a fleet task for certain."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["stop_task"]

_RETRY_S = 0.1


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` until it has ended.

    One ``cancel()`` is not enough on Python 3.11: a cancellation that races a timeout
    inside the Redis client (``wait_for``, ``asyncio.timeout``) can surface as a
    TimeoutError, which the task's own error handling then takes for a Redis fault.
    """
    if task is None or task is asyncio.current_task():
        return
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=_RETRY_S)
