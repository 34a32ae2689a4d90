"""Fleet settings: URL checks, and the Redis password never shown."""

from __future__ import annotations

import logging

import pytest

from conftest import CHAIN
from driftshare._data.ledger import AccountLedger
from driftshare._fleet import FleetMember
from driftshare.config import ConfigError, load_settings, redact_text, redact_url

URL = "redis://:hunter2-password@127.0.0.1:1/0"


def test_the_redis_password_is_redacted_in_urls_text_and_repr() -> None:
    assert "hunter2" not in redact_url(URL)
    assert redact_url(URL) == "redis://***@127.0.0.1:1/***"
    assert "hunter2" not in redact_text(f"Error connecting to {URL}: refused")
    assert "hunter2" not in repr(load_settings(share_url=URL))


def test_share_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="DRIFT_SHARE_URL"):
        load_settings(share_url="http://127.0.0.1:6379")
    with pytest.raises(ConfigError, match="DRIFT_SHARE_GROUP"):
        load_settings(share_group="a b")
    assert load_settings(share_url="rediss://h:1/2").share_url == "rediss://h:1/2"


async def test_no_secret_in_key_names_stats_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(share_url=URL, share_secret="sign-key", share_lease_s=0.2)
    member = FleetMember(settings, CHAIN, AccountLedger(), lambda: None)
    caplog.set_level(logging.DEBUG)
    await member.join()  # nothing listens on port 1: it falls back, logging why
    await member.close()
    names = [member._store.channel, *member._store.__dict__.values()]
    shown = " ".join(str(n) for n in names) + repr(member.stats()) + caplog.text
    assert member.role == "standalone"
    assert "hunter2" not in shown
    assert "sign-key" not in shown
