"""Argument checks of the transport's constructors: one clear ``ValueError`` each."""

from __future__ import annotations

__all__ = ["require"]


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
