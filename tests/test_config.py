"""Settings from DRIFT_* variables, and API-key redaction."""

from __future__ import annotations

import logging

import pytest

from driftshare._logging import install_log_redaction
from driftshare.config import ConfigError, load_settings, redact_text, redact_url, split_rpc_urls

KEY = "not-a-real-key"


def test_defaults_connect_nothing_and_match_the_design(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DRIFT_RPC_URL", "DRIFT_NETWORK", "DRIFT_RPC_RPS"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.rpc_url is None
    assert settings.rpc_rps == 10
    assert (settings.max_retries, settings.retry_backoff, settings.retry_backoff_cap) == (
        5,
        2.0,
        30,
    )
    ttls = (
        settings.cache_ttl_funding,
        settings.cache_ttl_price,
        settings.cache_ttl_markets,
        settings.cache_ttl_oi,
    )
    assert ttls == (30, 10, 60, 60)
    assert settings.effective_rpc_url() == "https://api.mainnet-beta.solana.com"


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFT_RPC_RPS", "2.5")
    monkeypatch.setenv("DRIFT_PERP_MARKETS", "0, 1,2")
    monkeypatch.setenv("DRIFT_NETWORK", "devnet")
    settings = load_settings()
    assert settings.rpc_rps == 2.5
    assert settings.perp_markets == [0, 1, 2]
    assert settings.network == "devnet"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DRIFT_RPC_RPS", "fast"),
        ("DRIFT_RPC_RPS", "0"),
        ("DRIFT_NETWORK", "testnet"),
        ("DRIFT_RPC_URL", "ftp://example"),
        ("DRIFT_PERP_MARKETS", "1,x"),
        ("DRIFT_SUBSCRIPTION", "grpc"),
    ],
)
def test_a_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://rpc.example/?api-key=not-a-real-key", "https://rpc.example/?***"),
        ("https://rpc.example/?token=s3cr3t&commitment=confirmed", "https://rpc.example/?***"),
        ("https://rpc.example/?k3y", "https://rpc.example/?***"),
        ("https://rpc.example/?c=1#k3y", "https://rpc.example/?***#***"),
        (
            "https://solana-mainnet.g.alchemy.com/v2/AbCdEfGhIjKlMnOpQrStUv",
            "https://solana-mainnet.g.alchemy.com/***/***",
        ),
        ("https://rpc.example:8443/v2/k3y/", "https://rpc.example:8443/***/***/"),
        ("https://user:pa55word@rpc.example/", "https://***@rpc.example/"),
        ("https://k3y@rpc.example", "https://***@rpc.example"),
        ("redis://:hunter2@127.0.0.1:6379/0", "redis://***@127.0.0.1:6379/***"),
        ("rediss://default:hunter2@[::1]:6380", "rediss://***@[::1]:6380"),
        ("/?api-key=k3y", "/?***"),
        ("https://rpc.example:99999/k3y", "<unparseable url>"),
    ],
)
def test_redact_url_keeps_only_scheme_host_and_port(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize("tail", ["", ")", ".", ",", ";", ":", "!", "?", "]", ")."])
def test_redact_text_hides_a_key_followed_by_punctuation(tail: str) -> None:
    key = "AbCdEfGhIjKlMnOpQrStUv"
    text = redact_text(f"RPC (https://rpc.example/v2/{key}{tail} is down")
    assert key not in text
    assert text == f"RPC (https://rpc.example/***/***{tail} is down"


@pytest.mark.parametrize("url", ["http://127.0.0.1:8899/", "https://api.mainnet-beta.solana.com"])
def test_redact_url_keeps_a_url_with_nothing_past_the_host(url: str) -> None:
    assert redact_url(url) == url


def test_settings_repr_hides_the_rpc_key() -> None:
    settings = load_settings(rpc_url=f"https://rpc.example/?api-key={KEY}", keypair="[1, 2, 3]")
    for text in (repr(settings), str(settings)):
        assert KEY not in text
        assert "[1, 2, 3]" not in text
        assert "rpc_url='https://rpc.example/?***'" in text
    assert settings.rpc_url == f"https://rpc.example/?api-key={KEY}"


@pytest.mark.parametrize("name", ["httpx", "websockets.client", "driftshare.adapter"])
def test_log_records_of_http_and_driftshare_loggers_are_redacted(
    caplog: pytest.LogCaptureFixture, name: str
) -> None:
    caplog.set_level(logging.DEBUG, logger=name)
    log = logging.getLogger(name)
    log.info('HTTP Request: POST %s "HTTP/1.1 200 OK"', f"https://rpc.example/?api-key={KEY}")
    log.debug("> GET %s HTTP/1.1", f"/?api-key={KEY}")
    log.warning("lost %s", "wss://rpc.example/v2/AbCdEfGhIjKlMnOpQrStUv")
    try:
        raise RuntimeError(f"Server error for url 'https://rpc.example/?api-key={KEY}'")
    except RuntimeError:
        log.exception("request failed")

    assert [record.getMessage() for record in caplog.records] == [
        'HTTP Request: POST https://rpc.example/?*** "HTTP/1.1 200 OK"',
        "> GET /?*** HTTP/1.1",
        "lost wss://rpc.example/***/***",
        "request failed",
    ]
    assert "RuntimeError: Server error for url 'https://rpc.example/?***'" in caplog.text
    assert KEY not in caplog.text


def test_other_loggers_are_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="someone.else")
    logging.getLogger("someone.else").info("%s", f"https://rpc.example/?api-key={KEY}")
    assert caplog.records[0].getMessage() == f"https://rpc.example/?api-key={KEY}"


def test_installing_log_redaction_again_changes_nothing() -> None:
    factory = logging.getLogRecordFactory()
    install_log_redaction()
    assert logging.getLogRecordFactory() is factory


def test_rpc_url_takes_a_comma_separated_list_of_endpoints() -> None:
    settings = load_settings(rpc_url=" http://a.test:8899 , https://b.test/?api-key=SECRET ")

    assert settings.rpc_url == "http://a.test:8899,https://b.test/?api-key=SECRET"
    assert split_rpc_urls(settings.effective_rpc_url()) == [
        "http://a.test:8899",
        "https://b.test/?api-key=SECRET",
    ]
    assert redact_url(settings.rpc_url) == "http://a.test:8899,https://b.test/?***"
    assert "SECRET" not in repr(settings)


@pytest.mark.parametrize("value", ["http://a.test,ws://b.test", ",", "http://a.test,b.test"])
def test_rpc_url_lists_with_a_bad_entry_are_rejected(value: str) -> None:
    with pytest.raises(ConfigError, match="DRIFT_RPC_URL"):
        load_settings(rpc_url=value)


def test_call_deadline_is_a_setting() -> None:
    assert load_settings().call_deadline_s == 30.0
    assert load_settings(call_deadline_s=5).call_deadline_s == 5.0
    with pytest.raises(ConfigError, match="DRIFT_CALL_DEADLINE_S"):
        load_settings(call_deadline_s=0)
