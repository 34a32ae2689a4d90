"""Signers and sub-accounts on a client: one DriftClient per authority, each User account
subscribed once on the client's own subscription, reads from its ledger.

- :mod:`.registry`: registration and reference counts, watching accounts on the subscription;
- :mod:`.signer`: one authority's DriftClient and safe instruction building;
- :mod:`.account`: one (authority, sub-account) handle, its reads and read-your-writes;
- :mod:`.reads`: driftpy's DriftUser math to typed models, with freshness;
- :mod:`.subscribers`: driftpy's subscriber seams over the ledger;
- :mod:`.hosts`: the shared client and an adapter's private client as hosts.
"""

from driftshare._accounts.account import SubAccount
from driftshare._accounts.host import AccountHost
from driftshare._accounts.registry import (
    AccountMissing,
    AccountRegistry,
    AccountUnavailable,
    missing_message,
)
from driftshare._accounts.signer import Signer

__all__ = [
    "AccountHost",
    "AccountMissing",
    "AccountRegistry",
    "AccountUnavailable",
    "Signer",
    "SubAccount",
    "missing_message",
]
