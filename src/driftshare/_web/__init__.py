"""The dashboard web app and JSON API of ``driftshare serve``."""

from driftshare._web.app import create_app
from driftshare._web.live import LiveState

__all__ = ["LiveState", "create_app"]
