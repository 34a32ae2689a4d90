"""LoopThread: an event loop running in a thread of its own, for callers without one."""

from __future__ import annotations

import asyncio
import threading

__all__ = ["LoopThread"]


class LoopThread:
    """A new event loop running forever in a daemon thread until :meth:`stop`.

    What is connected on it (sockets, subscription tasks) keeps running between the calls
    a synchronous caller makes with ``asyncio.run_coroutine_threadsafe``.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def stop(self) -> None:
        """Stop the loop, wait for its thread and close it (what still runs on it ends)."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()
