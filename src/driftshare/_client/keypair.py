"""The signer a shared client starts with: ``DRIFT_KEYPAIR``, or a throwaway for reads."""

from __future__ import annotations

from pathlib import Path

from solders.keypair import Keypair

from driftshare.config import ConfigError, Settings

__all__ = ["load_keypair"]

_BASE58 = frozenset("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")


def load_keypair(settings: Settings) -> Keypair:
    """The configured signer, or a throwaway keypair for read-only use.

    A bad ``DRIFT_KEYPAIR`` is a :class:`ConfigError` whose message never shows the value:
    a mistyped path may be a secret with a typo in it.
    """
    if settings.keypair is None:
        return Keypair()
    secret = settings.keypair.get_secret_value().strip()
    path = Path(secret).expanduser()
    if path.is_file():
        try:
            return Keypair.from_json(path.read_text())
        except (ValueError, OSError) as exc:
            raise ConfigError(
                f"DRIFT_KEYPAIR: the keypair file cannot be read as a JSON keypair "
                f"({type(exc).__name__})"
            ) from None
    if not set(secret) <= _BASE58:  # "/", ".", "~"…: meant as a path, not base58
        raise ConfigError("DRIFT_KEYPAIR: no such keypair file")
    try:
        return Keypair.from_base58_string(secret)
    except ValueError:
        raise ConfigError(
            "DRIFT_KEYPAIR: not a base58 secret key (64 bytes), and no such keypair file"
        ) from None
