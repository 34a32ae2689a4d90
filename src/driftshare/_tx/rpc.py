"""The JSON-RPC calls of the transaction path, through the shared client's transport."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import httpx
from solana.rpc.async_api import AsyncClient

__all__ = ["ConnectionRpc", "RpcError", "TxRpc"]


class RpcError(Exception):
    """A JSON-RPC error answer: the node received the call and refused it."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"RPC error {code}: {message}")
        self.code = code
        self.message = message
        self.data = data

    @classmethod
    def from_answer(cls, error: Any) -> RpcError:
        if not isinstance(error, dict):
            return cls(0, str(error)[:200])
        code = error.get("code")
        return cls(
            code if isinstance(code, int) else 0, str(error.get("message"))[:500], error.get("data")
        )


class TxRpc(Protocol):
    """What the transaction path asks of the RPC."""

    async def call(self, method: str, params: list[Any]) -> Any:
        """``method``'s result; :class:`RpcError` for an error answer, httpx's errors for
        transport failures (an HTTP error status raises ``httpx.HTTPStatusError``)."""

    async def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """The results of ``calls`` sent as one JSON-RPC batch, in order; an error answer is
        an :class:`RpcError` in its place."""


class ConnectionRpc:
    """:class:`TxRpc` over the HTTP session of the connection ``connection()`` returns now, so
    every call goes through that session's rate-limited transport and follows reconnects."""

    def __init__(self, connection: Callable[[], AsyncClient | None]) -> None:
        self._connection = connection

    async def _post(self, payload: Any) -> Any:
        connection = self._connection()
        if connection is None:
            raise httpx.ConnectError("no connection")
        provider: Any = connection._provider
        response = await provider.session.post(provider.endpoint_uri, json=payload)
        response.raise_for_status()
        try:
            return response.json()
        except ValueError:
            raise RpcError(0, "the RPC answered something other than JSON") from None

    async def call(self, method: str, params: list[Any]) -> Any:
        answer = await self._post({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        return _result(answer)

    async def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        payload = [
            {"jsonrpc": "2.0", "id": number, "method": method, "params": params}
            for number, (method, params) in enumerate(calls)
        ]
        answers = await self._post(payload)
        if not isinstance(answers, list):
            raise RpcError(0, "the RPC answered a batch with something other than a list")
        # A batch's answers may come in any order.
        by_id = {a.get("id"): a for a in answers if isinstance(a, dict)}
        results: list[Any] = []
        for number in range(len(calls)):
            try:
                results.append(_result(by_id.get(number)))
            except RpcError as exc:
                results.append(exc)
        return results


def _result(answer: Any) -> Any:
    if not isinstance(answer, dict):
        raise RpcError(0, "no answer")
    if "error" in answer:
        raise RpcError.from_answer(answer["error"])
    if "result" not in answer:
        raise RpcError(0, "an answer without a result")
    return answer["result"]
