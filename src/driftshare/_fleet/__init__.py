"""A fleet on Redis: many processes share one upstream subscription through one leader.

The leader runs the ordinary shared client and publishes every account update and
confirmation of its ledger; followers feed their ledger from Redis and open no upstream
connection. See :class:`FleetMember`.
"""

from driftshare._fleet._member import FleetMember, Role, standalone_stats
from driftshare._fleet._records import Chain

__all__ = ["Chain", "FleetMember", "Role", "standalone_stats"]
