"""Fixtures of the fleet tests: a real redis-server on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from driftshare._fleet._redis_server import RedisServer


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[None]:
    """Keep each phase's report on the test item, so fixtures can tell a failed test."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A started redis-server without persistence; ``kill()``/``restart()`` it at will."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()
