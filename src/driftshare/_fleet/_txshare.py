"""The leader's blockhash and priority fee, shared with every member that trades.

While it leads and any member trades, the leader keeps its transaction path's blockhash
fresh (one ``getLatestBlockhash`` and ``getBlockHeight`` per interval, the fee riding when
due) and publishes it fenced. Members sign their own transactions with it and send them
through their own client; a member whose leader's values stop coming fetches its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from redis.exceptions import RedisError

from driftshare._fleet._records import Signer, TxMessage, encode_tx, wall_time
from driftshare._fleet._store import FencedOut, FleetStore
from driftshare._tasks import cancel_all
from driftshare._tx.path import TxShare

__all__ = ["SharedPath", "TxSharer"]

log = logging.getLogger(__name__)

_RETRY_S = 0.25
"""Pause before sharing again after Redis failed to take it."""


class SharedPath(Protocol):
    """What the fleet shares of a member's transaction path (a TransactionPath)."""

    async def share(self) -> TxShare | None:
        """The blockhash and fee to share, refreshed when an interval old."""

    def share_in(self) -> float:
        """Seconds until the blockhash to share is an interval old (an interval when it
        is already: its refresh failed)."""

    def adopt(self, shared: TxShare) -> None:
        """Sign with the leader's blockhash and fee while they are current."""


class TxSharer:
    """The leader's side: share ``path``'s blockhash and fee while leading and wanted."""

    def __init__(
        self,
        store: FleetStore,
        signer: Signer,
        member: str,
        path: SharedPath,
        on_fenced: Callable[[], None],
    ) -> None:
        self._store = store
        self._signer = signer
        self._member = member
        self._path = path
        self._on_fenced = on_fenced
        self._token: str | None = None
        self._epoch = 0
        self._task: asyncio.Task[None] | None = None
        self.shared = 0
        """How many blockhashes this member has shared."""

    def lead(self, token: str, epoch: int) -> None:
        """Lead as ``token``: share from the next :meth:`want` on."""
        self._token, self._epoch = token, epoch

    def want(self, trading: bool) -> None:
        """Share while some member trades (``trading``), not while none does."""
        running = self._task is not None and not self._task.done()
        if trading and self._token is not None and not running:
            self._task = asyncio.create_task(self._run(self._token), name="driftshare-fleet-tx")
        elif not trading and self._task is not None:
            self._task.cancel()
            self._task = None

    async def stop(self) -> None:
        """Stop sharing (lease lost or member leaving)."""
        self._token = None
        task, self._task = self._task, None
        await cancel_all([task])

    async def _run(self, token: str) -> None:
        last: TxShare | None = None
        while self._token == token:
            shared = await self._path.share()
            if shared is not None and shared != last:
                try:
                    await self._store.publish_tx(
                        token, encode_tx(self._message(shared), self._signer)
                    )
                except FencedOut:
                    self._token = None
                    self._on_fenced()
                    return
                except (RedisError, OSError) as exc:
                    log.debug("fleet: cannot share the blockhash now: %r", exc)
                    await asyncio.sleep(_RETRY_S)
                    continue
                last = shared
                self.shared += 1
            await asyncio.sleep(self._path.share_in())

    def _message(self, shared: TxShare) -> TxMessage:
        blockhash = shared.blockhash
        return TxMessage(
            str(blockhash.blockhash),
            blockhash.last_valid_block_height,
            blockhash.slot,
            shared.block_height,
            wall_time(blockhash.fetched_at),
            shared.fee,
            None if shared.fee_at is None else wall_time(shared.fee_at),
            self._epoch,
            self._member,
        )
