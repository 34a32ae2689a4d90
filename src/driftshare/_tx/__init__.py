"""The transaction path: signing, sending and confirming writes for every engine."""

from driftshare._tx.driftpy_sender import (
    PathTxSender,
    TransactionFailed,
    TransactionNotConfirmed,
    TransactionUnknown,
    install_path,
)
from driftshare._tx.path import TransactionPath, TxShare
from driftshare._tx.rpc import ConnectionRpc, RpcError, TxRpc

__all__ = [
    "ConnectionRpc",
    "PathTxSender",
    "RpcError",
    "TransactionFailed",
    "TransactionNotConfirmed",
    "TransactionPath",
    "TransactionUnknown",
    "TxRpc",
    "TxShare",
    "install_path",
]
