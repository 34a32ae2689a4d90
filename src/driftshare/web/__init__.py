"""The dashboard web app and JSON API of ``driftshare serve``."""

from driftshare.web.app import create_app
from driftshare.web.live import LiveState

__all__ = ["LiveState", "create_app"]
