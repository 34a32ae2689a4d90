"""driftshare: one shared, rate-limit-safe Drift DriftClient per network."""

from driftshare.config import ConfigError, Settings, load_settings, redact_url

__all__ = ["ConfigError", "Settings", "load_settings", "redact_url"]
__version__ = "0.1.0"
