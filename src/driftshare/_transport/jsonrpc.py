"""What the transport reads of a JSON-RPC request: its method, and whether sending it twice
is harmless."""

from __future__ import annotations

import json
import re

import httpx

__all__ = ["NON_IDEMPOTENT_METHODS", "drop_false_gzip_label", "rpc_method"]

#: JSON-RPC methods that change state: sent twice, they may act twice.
NON_IDEMPOTENT_METHODS = frozenset({"sendTransaction", "sendRawTransaction", "requestAirdrop"})
# Only plausible JSON-RPC method names become metric labels, keeping label cardinality bounded.
_METHOD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_GZIP_MAGIC = b"\x1f\x8b"


def drop_false_gzip_label(request: httpx.Request) -> None:
    """Drop a ``Content-Encoding: gzip`` from a body that is not gzip."""
    # driftpy's direct session.post calls label plain JSON "Content-Encoding: gzip"; servers
    # that honour the header (aiohttp, so the simulator too) answer those with HTTP 400.
    encoding = request.headers.get("content-encoding", "")
    if encoding.strip().lower() == "gzip" and not request.content.startswith(_GZIP_MAGIC):
        del request.headers["content-encoding"]


def rpc_method(body: bytes) -> tuple[str, bool]:
    """The method label of a JSON-RPC body, and whether sending it twice is harmless."""
    try:
        payload = json.loads(body)
    except ValueError:
        return "unknown", True
    if isinstance(payload, list):
        names = {p.get("method") for p in payload if isinstance(p, dict)}
        return "batch", names.isdisjoint(NON_IDEMPOTENT_METHODS)
    if isinstance(payload, dict):
        method = payload.get("method")
        if isinstance(method, str) and _METHOD_NAME.fullmatch(method):
            return method, method not in NON_IDEMPOTENT_METHODS
    return "unknown", True
