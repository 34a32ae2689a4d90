"""The market subscriptions let the loop's readers run between notifications they decode.

A market account takes about a millisecond to decode and a slot's notifications arrive
together; the write-to-read latency this buys is measured in ``bench/freshness.py``.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from driftpy.accounts.types import DataAndSlot

from driftshare._data.ledger import AccountLedger
from driftshare._data.tap import AccountTap
from driftshare._data.websocket_subscription import _ProgramSubscriber


def _notification(slot: int, data: bytes) -> list[Any]:
    account = SimpleNamespace(data=data)
    value = SimpleNamespace(account=account, pubkey="Key1111111111111111111111111111111111111111")
    return [
        SimpleNamespace(result=SimpleNamespace(context=SimpleNamespace(slot=slot), value=value))
    ]


async def test_a_reader_runs_before_each_market_notification_is_decoded() -> None:
    events: list[str] = []

    def decode(data: bytes) -> bytes:
        events.append(f"decode {data.decode()}")
        return data

    async def on_update(key: str, update: DataAndSlot) -> None:
        events.append(f"apply {update.data.decode()}")

    subscriber = _ProgramSubscriber(
        AccountTap(AccountLedger(), []), "perpMarketMap", None, None, on_update, decode
    )

    async def reader() -> None:
        while True:
            events.append("read")
            await asyncio.sleep(0)

    reading = asyncio.create_task(reader())
    try:
        for slot, data in ((5, b"a"), (6, b"b")):
            await subscriber._process_message(_notification(slot, data))
    finally:
        reading.cancel()

    first, second = events.index("decode a"), events.index("decode b")
    assert events[first + 1] == "apply a"
    assert "read" in events[first + 2 : second]
    assert "read" in events[:first]
