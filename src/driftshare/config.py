"""Settings read from ``DRIFT_*`` environment variables."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from driftshare._redaction import redact_text, redact_url, split_rpc_urls

__all__ = [
    "ConfigError",
    "Network",
    "Settings",
    "load_settings",
    "redact_text",
    "redact_url",
    "split_rpc_urls",
]

Network = Literal["mainnet", "devnet"]
SubscriptionMode = Literal["websocket", "polling", "grpc"]

PUBLIC_RPC_URLS: dict[str, str] = {
    "mainnet": "https://api.mainnet-beta.solana.com",
    "devnet": "https://api.devnet.solana.com",
}


class ConfigError(ValueError):
    """A setting has a value driftshare cannot use; the message names the variable."""


class Settings(BaseSettings):
    """Everything driftshare can be told, each field read from ``DRIFT_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="DRIFT_", extra="ignore", frozen=True)

    rpc_url: str | None = None
    network: Network = "mainnet"
    keypair: SecretStr | None = None

    rpc_rps: float = Field(10.0, gt=0)
    rpc_burst: int = Field(1, ge=1)
    request_timeout_s: float = Field(10.0, gt=0)
    call_deadline_s: float = Field(30.0, gt=0)
    max_retries: int = Field(5, ge=0)
    retry_backoff: float = Field(2.0, gt=0)
    retry_backoff_cap: float = Field(30.0, gt=0)

    init_timeout_s: float = Field(30.0, gt=0)
    idle_close_s: float = Field(30.0, gt=0)

    subscription: SubscriptionMode = "websocket"
    ws_stall_s: float = Field(30.0, gt=0)
    poll_interval_s: float = Field(1.0, gt=0)
    health_interval_s: float = Field(10.0, gt=0)
    perp_markets: Annotated[list[int] | None, NoDecode] = None
    grpc_url: str | None = None
    """Yellowstone Geyser endpoint for ``subscription == "grpc"``: ``https://`` (TLS) or
    ``http://`` (plaintext)."""
    grpc_token: SecretStr | None = None
    """Sent as the ``x-token`` header of every gRPC call."""
    grpc_stall_s: float = Field(5.0, gt=0)
    """A gRPC stream silent this long (no pong), or without a slot update while the chain
    moves on, is reconnected."""

    cache_ttl_funding: float = Field(30.0, ge=0)
    cache_ttl_price: float = Field(10.0, ge=0)
    cache_ttl_markets: float = Field(60.0, ge=0)
    cache_ttl_oi: float = Field(60.0, ge=0)
    max_staleness_s: float = Field(300.0, ge=0)
    stale_after_s: float = Field(10.0, gt=0)
    """A value whose accounts are not known current for this long is served as stale."""

    snapshot_path: Path | None = None
    """A file or folder where each shared client keeps its accounts for a warm start."""
    snapshot_interval_s: float = Field(10.0, gt=0)
    share_url: str | None = None
    """``redis://[:password@]host:port/db``: join the fleet sharing one upstream there."""
    share_group: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    share_lease_s: float = Field(3.0, gt=0)
    share_fallback_s: float = Field(15.0, gt=0)
    share_secret: SecretStr | None = None

    tx_compute_units: int = Field(600_000, gt=0, le=1_400_000)
    """The compute-unit limit of every transaction (driftpy's default ``TxParams``)."""
    tx_max_priority_fee: int = Field(1_000_000, ge=0)
    """The highest compute-unit price paid, in micro-lamports."""
    tx_fee_percentile: float = Field(75.0, ge=0, le=100)
    tx_fee_interval_s: float = Field(5.0, gt=0)
    tx_blockhash_interval_s: float = Field(5.0, gt=0)
    """Blockhash and block height refresh period while signatures are pending: a blockhash is
    valid ~60 s (150 blocks), and a later height only delays a re-signing, never hastens it."""
    tx_blockhash_max_age_s: float = Field(10.0, gt=0)
    tx_status_interval_s: float = Field(0.8, gt=0)
    """A signature no WebSocket notification covers is first asked about this long after it
    left (two slots: landing, then confirmation), then every this long, in one batch with
    every other pending one."""
    tx_status_safety_s: float = Field(10.0, gt=0)
    """A signature whose ``signatureSubscribe`` notification is owed on a live socket is still
    polled this long after it left, then every this long: the safety net for a lost one."""
    tx_resend_s: float = Field(2.0, gt=0)
    """Seconds between sends of the same signed bytes while their signature is pending."""
    tx_timeout_s: float = Field(90.0, gt=0)
    """A write's answer comes within this: ``unknown`` if its signature may still land. Also
    a market order's ``max_ts``: the program skips a copy landing later."""
    tx_read_timeout_s: float = Field(5.0, gt=0)
    """After a confirmed write, the longest wait for the sub-account's reads to reflect it."""
    tx_max_signings: int = Field(3, ge=1)
    """Signatures per write, each signed only after the previous one expired unlanded."""

    @field_validator("perp_markets", mode="before")
    @classmethod
    def _parse_indexes(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p for p in re.split(r"[,\s]+", value.strip()) if p]
            return [int(p) for p in parts] or None
        return value

    @field_validator("rpc_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        urls = split_rpc_urls(value)
        if not urls or any(urlsplit(url).scheme not in ("http", "https") for url in urls):
            raise ValueError("must be an http(s) URL or a comma-separated list of them")
        return ",".join(urls)

    @field_validator("grpc_url")
    @classmethod
    def _check_grpc_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an https:// (TLS) or http:// (plaintext) URL")
        return value

    @model_validator(mode="after")
    def _grpc_needs_url(self) -> Settings:
        if self.subscription == "grpc" and self.grpc_url is None:
            raise ValueError("DRIFT_SUBSCRIPTION=grpc needs DRIFT_GRPC_URL")
        return self

    @field_validator("share_url")
    @classmethod
    def _check_share_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("redis", "rediss"):
            raise ValueError("must be a redis:// or rediss:// URL")
        return value

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # repr() and str() would otherwise show the API key an RPC URL may carry.
        for name, value in super().__repr_args__():
            secret = name in ("rpc_url", "share_url", "grpc_url") and value is not None
            shown = redact_url(value) if secret else value
            yield name, shown

    def effective_rpc_url(self) -> str:
        """The configured RPC URL (or comma-separated list), or the network's public endpoint."""
        return self.rpc_url or PUBLIC_RPC_URLS[self.network]


def load_settings(**overrides: object) -> Settings:
    """Build :class:`Settings`, turning validation errors into one readable :class:`ConfigError`."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            # A validator's own message, without the "Value error, " pydantic puts before it; a
            # check across settings has no field, and its message names the variables.
            f"DRIFT_{str(err['loc'][0]).upper()}: {err['msg'].removeprefix('Value error, ')}"
            if err["loc"]
            else err["msg"].removeprefix("Value error, ")
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
