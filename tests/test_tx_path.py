"""The transaction path's state machine against a scripted chain at the HTTP boundary.

The fake chain answers JSON-RPC through httpx.MockTransport behind the real rate-limited
transport, so a send that timed out or got a 429 is also never retried by the transport.
Expected outcomes come from the script (what the chain did), never from the sender.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import driftpy
import httpx
import pytest
from driftpy.tx.types import TxSigAndSlot
from solders import compute_budget
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from driftshare._metrics import REGISTRY
from driftshare._transport import RateLimitedTransport, SharedLimits, make_async_client
from driftshare._tx import (
    ConnectionRpc,
    PathTxSender,
    TransactionFailed,
    TransactionPath,
    TransactionUnknown,
)
from driftshare.config import Settings
from driftshare.models import TxResult

URL = "http://chain.test"
PROGRAM = Pubkey.new_unique()

# What the chain does with one sendTransaction request.
LAND = "land"
DROP = "drop"
"""Accepted, answered with the signature, never lands."""
LAND_THEN_429 = "land_then_429"
TIMEOUT = "timeout"
"""Never answered (the request left)."""
RATE_LIMITED = "429"
"""Answered 429 without landing."""
LAND_THEN_BREAK = "land_then_break"
"""Lands, then the answer is lost to a failure that is not an HTTP error."""


def refuse(err: Any) -> str:
    return "refuse:" + json.dumps(err)


@dataclass
class Chain:
    """A scripted chain: blockhashes valid for ``validity`` block heights, heights advancing
    one per ``getBlockHeight``, and what each send does from ``script``."""

    script: Callable[[str, int], str] = lambda sig, n: LAND
    validity: int = 10**6
    height: int = 100
    slot: int = 1000
    landed: dict[str, dict[str, Any]] = field(default_factory=dict)
    sends: list[tuple[str, bytes, int]] = field(default_factory=list)
    """(signature, raw bytes, block height when sent) of every sendTransaction received."""
    hashes: dict[str, int] = field(default_factory=dict)
    land_err: Any = None
    hide_statuses: bool = False
    """Recent-status polls answer nothing; only a history search finds landed ones."""
    status_polls: list[int] = field(default_factory=list)
    """Signatures asked per getSignatureStatuses call."""
    requests: list[list[str]] = field(default_factory=list)
    """The methods called in each HTTP request."""

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(
            [c["method"] for c in body] if isinstance(body, list) else [body["method"]]
        )
        if isinstance(body, list):
            answers = []
            for call in body:
                if call["method"] != "sendTransaction":
                    answers.append(self.answer(call))
                    continue
                sent = self.send(call)  # a send's fate is the whole request's
                if sent.status_code != 200:
                    return sent
                answers.append(json.loads(sent.content))
            return httpx.Response(200, json=answers)
        if body["method"] == "sendTransaction":
            return self.send(body)
        return httpx.Response(200, json=self.answer(body))

    def answer(self, call: dict[str, Any]) -> dict[str, Any]:
        method, params = call["method"], call["params"]
        result: Any
        if method == "getLatestBlockhash":
            blockhash = str(Hash.new_unique())
            self.hashes[blockhash] = self.height + self.validity
            value = {"blockhash": blockhash, "lastValidBlockHeight": self.height + self.validity}
            result = {"context": {"slot": self.slot}, "value": value}
        elif method == "getBlockHeight":
            self.height += 1
            self.slot += 1
            result = self.height
        elif method == "getRecentPrioritizationFees":
            result = [{"slot": self.slot - i, "prioritizationFee": i * 10} for i in range(10)]
        elif method == "getSignatureStatuses":
            history = params[1].get("searchTransactionHistory", False)
            self.status_polls.append(len(params[0]))
            hidden = self.hide_statuses and not history
            result = {
                "context": {"slot": self.slot},
                "value": [None if hidden else self.landed.get(s) for s in params[0]],
            }
        else:
            return {"jsonrpc": "2.0", "id": call["id"], "error": {"code": -32601, "message": "no"}}
        return {"jsonrpc": "2.0", "id": call["id"], "result": result}

    def send(self, call: dict[str, Any]) -> httpx.Response:
        raw = base64.b64decode(call["params"][0])
        tx = VersionedTransaction.from_bytes(raw)
        sig = str(tx.signatures[0])
        assert str(tx.message.recent_blockhash) in self.hashes
        self.sends.append((sig, raw, self.height))
        action = self.script(sig, sum(1 for s, _, _ in self.sends if s == sig))
        if action.startswith("refuse:"):
            error = {"code": -32002, "message": "Transaction simulation failed"}
            error["data"] = {"err": json.loads(action.removeprefix("refuse:"))}
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": call["id"], "error": error})
        if action in (LAND, LAND_THEN_429, LAND_THEN_BREAK) and sig not in self.landed:
            self.slot += 1
            self.landed[sig] = {
                "slot": self.slot,
                "confirmations": None,
                "err": self.land_err,
                "confirmationStatus": "confirmed",
            }
        if action == TIMEOUT:
            raise httpx.ReadTimeout("no answer")
        if action == LAND_THEN_BREAK:
            raise RuntimeError("the connection broke after the request left")
        if action in (LAND_THEN_429, RATE_LIMITED):
            return httpx.Response(429, json={"error": "too many requests"})
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": call["id"], "result": sig})


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "tx_blockhash_interval_s": 0.01,
        "tx_status_interval_s": 0.01,
        "tx_fee_interval_s": 0.05,
        "tx_resend_s": 0.03,
        "tx_timeout_s": 5.0,
        "rpc_rps": 10_000,
        "rpc_burst": 100,
        "max_retries": 3,
        "retry_backoff": 0.001,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def make_path() -> AsyncIterator[Callable[..., TransactionPath]]:
    """Builds paths over a chain; every one is closed at the end, whatever the test did."""
    paths: list[TransactionPath] = []

    def make(chain: Chain, **overrides: Any) -> TransactionPath:
        paths.append(path_over(chain, **overrides))
        return paths[-1]

    yield make
    for path in paths:
        await path.aclose()


MakePath = Callable[..., TransactionPath]


def path_over(chain: Chain, **overrides: Any) -> TransactionPath:
    config = settings(**overrides)
    transport = RateLimitedTransport(
        SharedLimits(rps=config.rpc_rps, burst=config.rpc_burst),
        inner=httpx.MockTransport(chain.handler),
        max_retries=config.max_retries,
        backoff_base=config.retry_backoff,
        timeout_s=2.0,
    )
    connection = make_async_client(URL, transport)
    return TransactionPath(ConnectionRpc(lambda: connection), config)


def instruction(tag: int = 0) -> Instruction:
    return Instruction(PROGRAM, bytes([tag]), [AccountMeta(Pubkey.new_unique(), False, True)])


async def submit(path: TransactionPath, tag: int = 0) -> TxResult:
    return await path.submit([instruction(tag)], Keypair())


def drift_error(code: int) -> str:
    idl = Path(next(iter(driftpy.__path__))) / "idl" / "drift.json"
    names = {e["code"]: e["name"] for e in json.loads(idl.read_text())["errors"]}
    return str(names[code])


async def test_a_landed_write_is_confirmed_at_its_own_slot(make_path: MakePath) -> None:
    chain = Chain()
    result = await submit(make_path(chain))
    assert result.status == "confirmed"
    assert result.success
    assert result.signature is not None
    assert result.slot == chain.landed[result.signature]["slot"]
    assert result.signatures == [result.signature]


async def test_a_resend_is_the_same_signed_bytes(make_path: MakePath) -> None:
    chain = Chain(script=lambda sig, n: LAND if n == 3 else DROP)
    result = await submit(make_path(chain))
    assert result.status == "confirmed"
    assert len(chain.sends) >= 3
    assert len({raw for _, raw, _ in chain.sends}) == 1
    assert len(chain.landed) == 1


async def test_nothing_is_signed_again_while_the_blockhash_is_valid(make_path: MakePath) -> None:
    chain = Chain(script=lambda sig, n: DROP)
    result = await submit(make_path(chain, tx_timeout_s=0.3))
    assert result.status == "unknown"
    assert result.signature == chain.sends[0][0]
    assert len({raw for _, raw, _ in chain.sends}) == 1
    assert result.signatures == [result.signature]
    assert not chain.landed


@pytest.mark.parametrize("answer", [TIMEOUT, RATE_LIMITED])
async def test_a_send_without_an_answer_is_unknown_never_failed(
    make_path: MakePath, answer: str
) -> None:
    chain = Chain(script=lambda sig, n: answer)
    # One send only: the transport must not have sent it again on its own.
    result = await submit(make_path(chain, tx_timeout_s=0.3, tx_resend_s=10.0))
    assert result.status == "unknown"
    assert not result.success
    assert result.signature == chain.sends[0][0]
    assert len(chain.sends) == 1


async def test_a_write_that_landed_then_got_a_429_is_confirmed_once(make_path: MakePath) -> None:
    chain = Chain(script=lambda sig, n: LAND_THEN_429)
    result = await submit(make_path(chain))
    assert result.status == "confirmed"
    assert list(chain.landed) == [result.signature]


async def test_a_send_lost_to_any_failure_is_followed_to_its_fate(make_path: MakePath) -> None:
    # Not an httpx error, yet the request left and landed: confirmed, never raised.
    chain = Chain(script=lambda sig, n: LAND_THEN_BREAK)
    result = await submit(make_path(chain))
    assert result.status == "confirmed"
    assert list(chain.landed) == [result.signature]


async def test_landed_with_a_drift_error_is_failed_with_its_idl_name(
    make_path: MakePath,
) -> None:
    chain = Chain(land_err={"InstructionError": [2, {"Custom": 6010}]})
    result = await submit(make_path(chain))
    assert result.status == "failed"
    assert result.error == drift_error(6010)
    assert result.error_code == 6010
    assert result.signature in chain.landed
    assert result.slot == chain.landed[str(result.signature)]["slot"]


async def test_a_preflight_refusal_is_failed_and_nothing_lands(make_path: MakePath) -> None:
    err = {"InstructionError": [2, {"Custom": 6003}]}
    chain = Chain(script=lambda sig, n: refuse(err))
    result = await submit(make_path(chain))
    assert result.status == "failed"
    assert result.error == drift_error(6003)
    assert len(chain.sends) == 1
    assert not chain.landed


async def test_a_node_that_lacks_the_blockhash_is_asked_again(
    make_path: MakePath,
) -> None:
    chain = Chain(script=lambda sig, n: LAND if n >= 2 else refuse("BlockhashNotFound"))
    result = await submit(make_path(chain))
    assert result.status == "confirmed"
    assert len(chain.sends) >= 2
    assert len({raw for _, raw, _ in chain.sends}) == 1


async def test_expired_without_status_is_signed_again_and_lands_once(
    make_path: MakePath,
) -> None:
    signed: list[str] = []

    def script(sig: str, n: int) -> str:
        if not signed:
            signed.append(sig)
        return DROP if sig == signed[0] else LAND

    chain = Chain(script=script, validity=3)
    result = await submit(make_path(chain))
    assert result.status == "confirmed"
    assert len(result.signatures) == 2
    assert result.signature == result.signatures[1]
    assert list(chain.landed) == [result.signature]
    expired_at = chain.hashes[
        str(VersionedTransaction.from_bytes(chain.sends[0][1]).message.recent_blockhash)
    ]
    resigned = [height for sig, _, height in chain.sends if sig == result.signature]
    assert min(resigned) > expired_at


async def test_expired_but_found_in_history_is_not_signed_again(
    make_path: MakePath,
) -> None:
    chain = Chain(validity=3, hide_statuses=True)
    result = await submit(make_path(chain))
    assert result.status == "confirmed"
    assert result.signatures == [result.signature]
    assert len(chain.landed) == 1


async def test_at_its_deadline_a_write_asks_the_history_before_answering_unknown(
    make_path: MakePath,
) -> None:
    # Landed, but no poll ever sees it (as when its notification was lost) and its blockhash
    # is valid long after the deadline: only the final lookup can tell.
    chain = Chain(hide_statuses=True)
    result = await submit(make_path(chain, tx_timeout_s=0.3))
    assert result.status == "confirmed"
    assert result.slot == chain.landed[result.signature]["slot"]
    assert result.signatures == [result.signature]


async def test_every_signature_expired_unlanded_is_failed(make_path: MakePath) -> None:
    chain = Chain(script=lambda sig, n: DROP, validity=2)
    result = await submit(make_path(chain, tx_max_signings=2))
    assert result.status == "failed"
    assert result.error == "TransactionExpired"
    assert len(result.signatures) == 2
    assert not chain.landed


async def test_an_unreachable_rpc_fails_before_anything_is_signed(make_path: MakePath) -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    chain = Chain()
    chain.handler = refused  # type: ignore[method-assign]
    result = await submit(make_path(chain))
    assert result.status == "failed"
    assert result.signatures == []
    assert result.error is not None
    assert result.error.startswith("NotSent")


async def test_concurrent_writes_share_status_polls(make_path: MakePath) -> None:
    chain = Chain()
    path = make_path(chain)
    results = await asyncio.gather(*(path.submit([instruction(i)], Keypair()) for i in range(20)))
    assert all(r.status == "confirmed" for r in results)
    assert len(chain.landed) == 20
    # One poll asks about many signatures: fewer polls than if each write polled alone.
    assert max(chain.status_polls) > 1
    assert len(chain.status_polls) < sum(chain.status_polls)


async def test_the_blockhash_and_fee_ride_in_the_sends_and_status_polls(
    make_path: MakePath,
) -> None:
    chain = Chain()
    # Both always due: every request that may carry them does.
    path = make_path(chain, tx_blockhash_interval_s=1e-9, tx_fee_interval_s=1e-9)
    for tag in range(3):
        assert (await submit(path, tag)).status == "confirmed"
    refresh = ["getLatestBlockhash", "getBlockHeight", "getRecentPrioritizationFees"]
    first, *rest = chain.requests
    assert first == refresh  # fetched before the first signing, the fee with it
    # Three writes; a loaded machine may resend their identical bytes while they are pending.
    assert len({signature for signature, _, _ in chain.sends}) == 3
    assert "sendTransaction" in [r[0] for r in rest]
    assert "getSignatureStatuses" in [r[0] for r in rest]
    # No request of their own: each refresh rode in a send or a status poll.
    assert all(r[1:] == refresh for r in rest)


async def test_the_priority_fee_and_compute_limit_replace_the_callers(make_path: MakePath) -> None:
    chain = Chain()
    path = make_path(chain, tx_fee_percentile=50, tx_compute_units=123_000)
    await path.fees.refresh()
    # Fees paid in the last 10 slots: 0, 10, ..., 90; the nearest-rank median is 40.
    assert path.fees.price == 40
    caller_budget = compute_budget.set_compute_unit_price(999)
    await path.submit([caller_budget, instruction()], Keypair())
    tx = VersionedTransaction.from_bytes(chain.sends[0][1])
    programs = [tx.message.account_keys[ix.program_id_index] for ix in tx.message.instructions]
    assert programs == [compute_budget.ID, compute_budget.ID, PROGRAM]
    datas = [bytes(ix.data) for ix in tx.message.instructions[:2]]
    assert datas == [
        bytes(compute_budget.set_compute_unit_limit(123_000).data),
        bytes(compute_budget.set_compute_unit_price(40).data),
    ]


async def test_driftpy_sender_returns_the_slot_or_raises_the_result(
    make_path: MakePath,
) -> None:
    chain = Chain()
    path = make_path(chain)
    sender = PathTxSender(path)
    payer = Keypair()
    tx = await sender.get_versioned_tx([instruction()], payer, [])
    landed = await sender.send(tx)
    assert isinstance(landed, TxSigAndSlot)
    assert landed.slot == chain.landed[str(landed.tx_sig)]["slot"]

    chain.land_err = {"InstructionError": [0, {"Custom": 6010}]}
    with pytest.raises(TransactionFailed) as failed:
        await sender.send(await sender.get_versioned_tx([instruction(1)], payer, []))
    assert failed.value.result.error == drift_error(6010)

    chain.script = lambda sig, n: DROP
    path.sender.timeout_s = 0.2
    with pytest.raises(TransactionUnknown) as unknown:
        await sender.send(await sender.get_versioned_tx([instruction(2)], payer, []))
    assert unknown.value.result.signature == chain.sends[-1][0]


async def test_builds_never_sent_are_not_kept_forever(make_path: MakePath) -> None:
    chain = Chain()
    sender = PathTxSender(make_path(chain))
    # A payer each: 300 different signatures.
    built = [await sender.get_versioned_tx([instruction()], Keypair(), []) for _ in range(300)]
    assert len(sender._built) < len(built)
    oldest, newest = str(built[0].signatures[0]), str(built[-1].signatures[0])
    # The oldest build is forgotten: it is sent as signed elsewhere, as is, and lands once.
    # (A loaded machine may resend a pending write's identical bytes.)
    landed = await sender.send(built[0])
    assert {sig for sig, _, _ in chain.sends} == {oldest}
    assert landed.slot == chain.landed[str(landed.tx_sig)]["slot"]
    # The newest is still known to the sender: sent as signed too, never signed again.
    await sender.send(built[-1])
    assert {sig for sig, _, _ in chain.sends} == {oldest, newest}


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_count_writes_by_status_and_time_confirmations(make_path: MakePath) -> None:
    confirmed = _sample("drift_transactions_total", status="confirmed")
    failed = _sample("drift_transactions_total", status="failed")
    timed = _sample("drift_transaction_confirm_seconds_count")
    chain = Chain()
    path = make_path(chain)
    assert (await submit(path)).status == "confirmed"
    chain.script = lambda sig, n: refuse({"InstructionError": [0, {"Custom": 6003}]})
    assert (await submit(path, tag=1)).status == "failed"
    assert _sample("drift_transactions_total", status="confirmed") == confirmed + 1
    assert _sample("drift_transactions_total", status="failed") == failed + 1
    assert _sample("drift_transaction_confirm_seconds_count") == timed + 1
    age = path.keeper.age_s()
    assert age is not None
    assert 0 <= _sample("drift_blockhash_age_seconds") <= age


async def test_a_closed_client_fails_writes_unsent_and_starts_no_task() -> None:
    path = TransactionPath(ConnectionRpc(lambda: None), settings(), active=lambda: False)
    result = await submit(path)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.startswith("NotSent")
    assert not path.running
