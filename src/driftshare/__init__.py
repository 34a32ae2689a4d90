"""driftshare: one shared, rate-limit-safe Drift DriftClient per network."""

from driftshare._logging import install_log_redaction
from driftshare._metrics import REGISTRY as METRICS_REGISTRY
from driftshare._tx import TransactionFailed, TransactionNotConfirmed, TransactionUnknown
from driftshare.adapter import DriftAdapter
from driftshare.config import ConfigError, Settings, load_settings, redact_url
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

install_log_redaction()
