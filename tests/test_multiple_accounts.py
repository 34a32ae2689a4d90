"""Reading a getMultipleAccounts answer, as the confirmer and the poller both do: it is
untrusted input, so a bad answer is a ValueError and a garbled account is left out."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from driftshare._data.freshness import multiple_accounts


def _value(data: bytes) -> dict[str, Any]:
    return {"data": [base64.b64encode(data).decode(), "base64"], "owner": "x", "lamports": 1}


def test_accounts_present_and_readable_come_back_with_the_answers_slot() -> None:
    answer = {
        "jsonrpc": "2.0",
        "id": 0,
        "result": {
            "context": {"slot": 42},
            "value": [_value(b"one"), None, {"data": ["not base64!", "base64"]}, {}, _value(b"")],
        },
    }
    slot, accounts = multiple_accounts(["a", "b", "c", "d", "e"], answer)
    assert slot == 42
    assert accounts == [("a", b"one"), ("e", b"")]


@pytest.mark.parametrize(
    "answer",
    [
        None,
        [],
        {"jsonrpc": "2.0", "id": 0, "error": {"code": 429, "message": "slow down"}},
        {"result": {"context": {}, "value": []}},
        {"result": {"context": {"slot": "soon"}, "value": []}},
        {"result": {"context": {"slot": 1}, "value": None}},
    ],
)
def test_an_answer_without_a_result_is_a_value_error(answer: Any) -> None:
    with pytest.raises(ValueError, match="bad getMultipleAccounts answer"):
        multiple_accounts(["a"], answer)
