"""Keeps API keys out of log output: RPC URLs in log records are redacted as records are made."""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

from driftshare._redaction import redact_text, redact_url

__all__ = ["REDACTED_LOGGERS", "RedactingFilter", "install_log_redaction"]

REDACTED_LOGGERS = ("httpx", "httpcore", "websockets", "aiohttp", "solanaweb3", "driftshare")
"""Loggers (and their children) whose records may quote an RPC URL: httpx logs every request
URL at INFO, websockets the request target of its handshake at DEBUG."""

# An HTTP request line quotes the target without scheme and host ("> GET /?api-key=K HTTP/1.1").
_REQUEST_TARGET = re.compile(r"(\b(?:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) )(/[^\s'\"<>]*)")


def _redact(text: str) -> str:
    text = redact_text(text)
    return _REQUEST_TARGET.sub(lambda m: m.group(1) + redact_url(m.group(2)), text)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message, and its formatted traceback, with every URL redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it for the handler to report
            return True
        redacted = _redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text, so the traceback is printed as redacted here.
            record.exc_text = _redact(logging.Formatter().formatException(record.exc_info))
        return True


_FILTER = RedactingFilter()


@functools.cache  # once per process: later calls return at once
def install_log_redaction() -> None:
    """Redact every record of :data:`REDACTED_LOGGERS` and their children; safe to repeat.

    A filter added to a logger sees only records logged on that very logger, not those of
    its children (``websockets.client``, ``driftshare.adapter``), so the filter runs in the
    log record factory instead, which every logger goes through. The factory installed
    before is kept and called first.
    """
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if record.name.split(".", 1)[0] in REDACTED_LOGGERS:
            _FILTER.filter(record)
        return record

    logging.setLogRecordFactory(factory)
