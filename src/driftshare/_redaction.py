"""Secrets out of what driftshare shows: RPC, gRPC and Redis URLs reduced to scheme, host and port.

Apart from :mod:`driftshare.config` (which re-exports these) so that the log redaction that
``import driftshare`` installs loads no pydantic.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_text", "redact_url", "split_rpc_urls"]


def split_rpc_urls(value: str) -> list[str]:
    """The endpoints of an RPC URL setting: one URL or a comma-separated list, in order."""
    return [url.strip() for url in value.split(",") if url.strip()]


_HIDDEN = "***"


def redact_url(url: str) -> str:
    """A URL (or a comma-separated list of RPC URLs) safe to show: only its scheme, host and
    port are kept; every path segment, the query, the fragment and ``user:password@`` become
    ``***``.

    Providers put API keys in the path (``/v2/KEY``), in the query, under any name or none
    (``?KEY``), and in the user info (Redis passwords), at any length: no part beyond the
    host is shown, since no rule can tell a key from the rest.
    """
    urls = split_rpc_urls(url)
    if len(urls) > 1 and all("://" in part for part in urls):
        return ",".join(redact_url(part) for part in urls)
    try:
        parts = urlsplit(url)
        port = parts.port  # a malformed port raises here
    except ValueError:
        return "<unparseable url>"
    netloc = parts.hostname or ""
    if ":" in netloc:  # an IPv6 address
        netloc = f"[{netloc}]"
    if port is not None:
        netloc = f"{netloc}:{port}"
    if "@" in parts.netloc:
        netloc = f"{_HIDDEN}@{netloc}"
    path = "/".join(_HIDDEN if segment else "" for segment in parts.path.split("/"))
    query = _HIDDEN if parts.query else ""
    fragment = _HIDDEN if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, path, query, fragment))


_URL_IN_TEXT = re.compile(r"(?:https?|wss?|rediss?)://[^\s'\"<>]+")


# Prose punctuation right after a URL ("(see https://h/KEY).") belongs to the sentence.
_SENTENCE_TAIL = re.compile(r"[).,;:!?\]}]+$")


def _redact_found_url(match: re.Match[str]) -> str:
    found = match.group()
    tail = _SENTENCE_TAIL.search(found)
    end = tail.start() if tail else len(found)
    return redact_url(found[:end]) + found[end:]


def redact_text(text: str) -> str:
    """``text`` (an error message, a log line) with every URL in it passed through redact_url."""
    return _URL_IN_TEXT.sub(_redact_found_url, text)
