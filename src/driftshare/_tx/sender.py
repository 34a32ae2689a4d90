"""TransactionSender: lands one write at most once, and says truthfully how it ended.

The rules (Drift's ``RetryTxSender`` and the Solana status cache make them safe):

* A transaction is signed once. Until it is confirmed or its blockhash has expired, a resend
  is the identical signed bytes: one signature lands at most once, however many copies leave.
* Nothing is signed again while an earlier signature might still land: only once the chain's
  block height has passed its ``lastValidBlockHeight`` *and* the node (searching its history)
  holds no status for it.
* A send whose answer never came (a timeout, a 429, a 5xx, a dropped connection after the
  request left) may have landed: the write is ``unknown`` until the chain says otherwise,
  never ``failed``. Only the RPC's preflight refusal of a transaction no copy of which can
  have left, or an expiry without a status, is a failure that did not land.
* ``confirmed`` only on a confirmed (or finalized) status without ``err``; a status with
  ``err`` is ``failed`` with the program's error name.
* Before a write ends ``unknown`` (its deadline) or is signed again (its blockhash expired),
  the node is asked for the signature's status, searching its history: the final truth.
"""

from __future__ import annotations

import base64
import enum
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from solders.transaction import VersionedTransaction

from driftshare import _metrics as metrics
from driftshare._transport.retry import NOT_SENT_ERRORS
from driftshare._tx.blockhash import Blockhash, BlockhashKeeper
from driftshare._tx.errors import error_code, error_name
from driftshare._tx.riders import Rider, ride
from driftshare._tx.rpc import RpcError, TxRpc
from driftshare._tx.statuses import SignatureStatus, SignatureWatcher
from driftshare.models import TxResult

__all__ = ["Build", "TransactionSender", "failed_before_sending"]

log = logging.getLogger(__name__)

Build = Callable[[Blockhash], VersionedTransaction]
"""Compiles and signs the write's transaction with the given blockhash."""

_PREFLIGHT_FAILURE = -32002
_SIGNATURE_VERIFICATION_FAILURE = -32003
# Preflight answers that say nothing final: the node does not know the blockhash yet (it
# lags), or the very same signature has already landed.
_NOT_YET = frozenset({"BlockhashNotFound"})
_ALREADY = frozenset({"AlreadyProcessed"})


def failed_before_sending(error: str, user_order_id: int | None = None) -> TxResult:
    """The result of a write refused before anything was signed: it cannot land."""
    metrics.TX_RESULTS.labels(status="failed").inc()
    return TxResult(success=False, status="failed", error=error, user_order_id=user_order_id)


class _Sent(enum.Enum):
    LEFT = "left"
    """The node accepted it."""
    MAYBE = "maybe"
    """No answer, or an answer that does not say: it may have left."""
    NOT_SENT = "not_sent"
    """It never left (no connection)."""
    REFUSED = "refused"
    """The node's preflight refused it: this copy was not forwarded."""


@dataclass(frozen=True, slots=True)
class _SendAnswer:
    kind: _Sent
    err: Any = None


@dataclass(slots=True)
class _Landing:
    """One write's progress across its signatures."""

    started: float
    deadline: float
    signatures: list[str] = field(default_factory=list)
    sends: int = 0
    refusal: Any = None
    """The last preflight refusal's ``err`` (or message)."""
    left: bool = False
    """Whether any copy of any signature may have left."""


@dataclass(frozen=True, slots=True)
class _Verdict:
    """How one signature ended: landed (a settled status), refused, expired or unknown."""

    status: SignatureStatus | None = None
    refused: Any = None
    expired: bool = False


_UNKNOWN = _Verdict()


class TransactionSender:
    """Sends and confirms writes through ``rpc`` with the shared blockhash ``keeper`` and
    signature ``watcher``.

    A pending signature is resent (same bytes) every ``resend_s``; a write gets an answer
    within ``timeout_s`` (then ``unknown`` if its signature may still land) and is signed at
    most ``max_signings`` times, each after the previous one provably expired. ``riders``
    ride in a send's request when due.
    """

    def __init__(
        self,
        rpc: TxRpc,
        keeper: BlockhashKeeper,
        watcher: SignatureWatcher,
        *,
        resend_s: float,
        timeout_s: float,
        max_signings: int,
        riders: Sequence[Rider] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rpc = rpc
        self._keeper = keeper
        self._watcher = watcher
        self._riders = list(riders)
        self.resend_s = resend_s
        self.timeout_s = timeout_s
        self.max_signings = max_signings
        self._clock = clock

    async def land(
        self,
        build: Build | None,
        *,
        signed: tuple[VersionedTransaction, Blockhash | None] | None = None,
        user_order_id: int | None = None,
    ) -> TxResult:
        """Sign with ``build``, send, confirm; the result as the chain tells it.

        ``signed`` is a transaction already signed (with that blockhash, None if not known),
        sent first; ``build`` signs any later one (None: never sign again).
        """
        now = self._clock()
        landing = _Landing(started=now, deadline=now + self.timeout_s)
        while True:
            if signed is not None:
                (tx, blockhash), signed = signed, None
            elif build is None:
                return self._end(landing, "failed", error=self._no_landing_error(landing))
            else:
                try:
                    blockhash = await self._keeper.current()
                except Exception as exc:  # no blockhash, nothing signed: nothing can land
                    return self._end(landing, "failed", error=f"NotSent: no blockhash ({exc!r})")
                try:
                    tx = build(blockhash)
                except Exception as exc:  # a transaction that cannot be built was never sent
                    return self._end(landing, "failed", error=f"BuildError: {exc}")
            signature = str(tx.signatures[0])
            landing.signatures.append(signature)
            last_valid = None if blockhash is None else blockhash.last_valid_block_height
            verdict = await self._drive(bytes(tx), signature, last_valid, landing)
            result = self._result(landing, verdict, signature, user_order_id)
            if result is not None:
                return result
            # This signature can never land: signing again cannot make a duplicate.
            if self._clock() >= landing.deadline or len(landing.signatures) >= self.max_signings:
                return self._end(landing, "failed", error=self._no_landing_error(landing))
            log.info("transaction %s expired without landing: signing again", signature)

    def _result(
        self, landing: _Landing, verdict: _Verdict, signature: str, user_order_id: int | None
    ) -> TxResult | None:
        status = verdict.status
        if status is not None:
            if status.err is None:
                return self._end(
                    landing, "confirmed", signature, status.slot, user_order_id=user_order_id
                )
            return self._end(
                landing,
                "failed",
                signature,
                status.slot,
                error=error_name(status.err),
                code=error_code(status.err),
                user_order_id=user_order_id,
            )
        if verdict.refused is not None:
            # Refused by preflight while no copy of this signature had left, and every
            # earlier signature provably expired: nothing of this write can land.
            return self._end(
                landing,
                "failed",
                error=error_name(verdict.refused),
                code=error_code(verdict.refused),
                user_order_id=user_order_id,
            )
        if verdict.expired:
            return None
        return self._end(landing, "unknown", signature, user_order_id=user_order_id)

    def _no_landing_error(self, landing: _Landing) -> str:
        if landing.refusal is not None:
            return error_name(landing.refusal)
        return "TransactionExpired" if landing.left else "NotSent"

    def _end(
        self,
        landing: _Landing,
        status: str,
        signature: str | None = None,
        slot: int | None = None,
        *,
        error: str | None = None,
        code: int | None = None,
        user_order_id: int | None = None,
    ) -> TxResult:
        elapsed = self._clock() - landing.started
        metrics.TX_RESULTS.labels(status=status).inc()
        if status == "confirmed":
            metrics.TX_CONFIRM_SECONDS.observe(elapsed)
        return TxResult(
            success=status == "confirmed",
            status=status,  # type: ignore[arg-type]
            signature=signature,
            slot=slot,
            error=error,
            error_code=code,
            signatures=list(landing.signatures),
            sends=landing.sends,
            elapsed_s=elapsed,
            user_order_id=user_order_id,
        )

    async def _drive(
        self, raw: bytes, signature: str, last_valid: int | None, landing: _Landing
    ) -> _Verdict:
        """Send ``raw`` (again every ``resend_s``) until its signature settles, is refused,
        provably expires, or the deadline passes (then unknown, or expired if it never left)."""
        watcher = self._watcher

        def expired() -> bool:
            # A blockhash not known here never counts as expired: that signature ends unknown.
            return last_valid is not None and self._keeper.expired(last_valid)

        await watcher.watch(signature)
        may_land = False
        next_send = self._clock()
        try:
            while True:
                now = self._clock()
                if not expired() and now >= next_send and now < landing.deadline:
                    answer = await self._send(raw, preflight=not may_land)
                    landing.sends += 1
                    if answer.kind is _Sent.REFUSED and _named(answer.err, _ALREADY):
                        may_land = True
                    elif answer.kind is _Sent.REFUSED and not may_land:
                        landing.refusal = answer.err
                        if not _named(answer.err, _NOT_YET):
                            return _Verdict(refused=answer.err)
                    elif answer.kind in (_Sent.LEFT, _Sent.MAYBE):
                        may_land = True
                    landing.left = landing.left or may_land
                    next_send = self._clock() + self.resend_s
                status = watcher.status(signature)
                if status is not None and status.settled:
                    return _Verdict(status=status)
                if status is None and expired():
                    if not may_land:
                        return _Verdict(expired=True)
                    final = await self._final_status(signature)
                    if final is None:
                        return _Verdict(expired=True)
                    if final.status is not None:
                        if final.status.settled:
                            return final
                        watcher.record(signature, final.status)
                if self._clock() >= landing.deadline:
                    if not may_land:
                        return _Verdict(expired=True)
                    final = await self._final_status(signature)
                    if final is not None and final.status is not None and final.status.settled:
                        return final
                    return _UNKNOWN
                wait = min(next_send, landing.deadline) - self._clock()
                await watcher.wait(signature, max(0.0, min(wait, watcher.interval_s)))
        finally:
            await watcher.forget(signature)

    async def _final_status(self, signature: str) -> _Verdict | None:
        """After expiry: the status the node finds searching its history, None if it finds
        none (the signature can never land), unknown if it cannot be asked now."""
        try:
            found = await self._watcher.lookup([signature], history=True)
        except Exception as exc:  # the RPC cannot tell now: ask again next round
            log.debug("status lookup of %s failed: %r", signature, exc)
            return _UNKNOWN
        status = found.get(signature)
        return None if status is None else _Verdict(status=status)

    async def _send(self, raw: bytes, *, preflight: bool) -> _SendAnswer:
        # maxRetries 0: the node does not rebroadcast on its own; resends are ours, same bytes.
        options = {
            "encoding": "base64",
            "skipPreflight": not preflight,
            "preflightCommitment": "confirmed",
            "maxRetries": 0,
        }
        call = ("sendTransaction", [base64.b64encode(raw).decode("ascii"), options])
        try:
            (answer,) = await ride(self._rpc, [call], self._riders)
            if isinstance(answer, Exception):
                raise answer
        except RpcError as exc:
            data = exc.data if isinstance(exc.data, dict) else {}
            if exc.code in (_PREFLIGHT_FAILURE, _SIGNATURE_VERIFICATION_FAILURE):
                return _SendAnswer(_Sent.REFUSED, data.get("err") or exc.message)
            return _SendAnswer(_Sent.MAYBE)
        except NOT_SENT_ERRORS:
            return _SendAnswer(_Sent.NOT_SENT)
        except Exception as exc:  # any other failure may come after the request left
            log.debug("sendTransaction answer lost: %r", exc)
            return _SendAnswer(_Sent.MAYBE)
        return _SendAnswer(_Sent.LEFT)


def _named(err: Any, names: frozenset[str]) -> bool:
    return isinstance(err, str) and err in names
