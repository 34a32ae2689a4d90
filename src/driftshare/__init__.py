"""driftshare: one shared, rate-limit-safe Drift DriftClient per network.

The names below load on first use (PEP 562 ``__getattr__``): ``import driftshare`` alone
installs the log redaction and loads neither driftpy nor pydantic nor prometheus_client;
``from driftshare import DriftClientManager`` loads what a read needs, and nothing of the
fleet, the snapshot, the web app, the simulator or the sample engines.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from driftshare._logging import install_log_redaction

if TYPE_CHECKING:
    from driftshare._metrics import REGISTRY as METRICS_REGISTRY
    from driftshare._redaction import redact_url
    from driftshare._tx import TransactionFailed, TransactionNotConfirmed, TransactionUnknown
    from driftshare.adapter import DriftAdapter
    from driftshare.config import ConfigError, Settings, load_settings
    from driftshare.feed import DriftFundingFeed, FundingInfo
    from driftshare.manager import DriftClientManager
    from driftshare.models import (
        AccountInfo,
        AccountStatus,
        FundingRateData,
        MarketData,
        OrderInfo,
        PositionInfo,
        TxResult,
    )

__all__ = [
    "METRICS_REGISTRY",
    "AccountInfo",
    "AccountStatus",
    "ConfigError",
    "DriftAdapter",
    "DriftClientManager",
    "DriftFundingFeed",
    "FundingInfo",
    "FundingRateData",
    "MarketData",
    "OrderInfo",
    "PositionInfo",
    "Settings",
    "TransactionFailed",
    "TransactionNotConfirmed",
    "TransactionUnknown",
    "TxResult",
    "load_settings",
    "redact_url",
]
__version__ = "0.1.0"

_HOMES: dict[str, tuple[str, str]] = {
    "METRICS_REGISTRY": ("driftshare._metrics", "REGISTRY"),
    **{
        name: ("driftshare._tx", name)
        for name in ("TransactionFailed", "TransactionNotConfirmed", "TransactionUnknown")
    },
    "DriftAdapter": ("driftshare.adapter", "DriftAdapter"),
    **{name: ("driftshare.config", name) for name in ("ConfigError", "Settings", "load_settings")},
    "redact_url": ("driftshare._redaction", "redact_url"),  # from its home: no pydantic
    **{name: ("driftshare.feed", name) for name in ("DriftFundingFeed", "FundingInfo")},
    "DriftClientManager": ("driftshare.manager", "DriftClientManager"),
    **{
        name: ("driftshare.models", name)
        for name in (
            "AccountInfo",
            "AccountStatus",
            "FundingRateData",
            "MarketData",
            "OrderInfo",
            "PositionInfo",
            "TxResult",
        )
    },
}
"""Each exported name's module and name there."""

_MODULES = frozenset({"adapter", "config", "feed", "manager", "models"})
"""The public modules, reachable as attributes as when this package imported them eagerly."""


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        module, attribute = _HOMES[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value  # later look-ups find it without coming here
        return value
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES, *_MODULES})


install_log_redaction()
