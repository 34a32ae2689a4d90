"""The public API (``driftshare.__all__``) documents itself: every name and its methods."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import pytest

import driftshare


def _documented() -> Iterator[tuple[str, object]]:
    for name in driftshare.__all__:
        obj = getattr(driftshare, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue  # a value (METRICS_REGISTRY) carries its type's docstring, not its own
        yield name, obj
        if inspect.isclass(obj):
            for base in obj.__mro__:
                if base.__module__.startswith("driftshare"):
                    for attr, member in vars(base).items():
                        if not attr.startswith("_"):
                            function = _function(member)
                            if function is not None:
                                yield f"{name}.{attr}", function


def _function(member: object) -> object | None:
    """The function behind a method, classmethod, staticmethod or property; else None."""
    if isinstance(member, classmethod | staticmethod):
        member = member.__func__
    if isinstance(member, property):
        member = member.fget
    return member if inspect.isfunction(member) else None


@pytest.mark.parametrize("obj", [pytest.param(obj, id=name) for name, obj in _documented()])
def test_every_public_name_and_method_has_a_docstring(obj: object) -> None:
    assert (inspect.getdoc(obj) or "").strip()
