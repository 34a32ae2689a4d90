"""SignatureFeed: each pending signature's confirmation by ``signatureSubscribe`` on a WebSocket
the shared client already holds (the one its User accounts and oracles use): no socket of its
own, no HTTP request per transaction.

A node sends one notification per subscription, when the transaction reaches the commitment
(here ``confirmed``), and ends the subscription with it. Whatever the feed cannot vouch for (no
socket, a refused subscription, a socket that dropped with the notification) it reports as
not covered, and the status poll asks for it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol

from solana.rpc.websocket_api import SubscriptionError
from solders.commitment_config import CommitmentLevel
from solders.rpc.config import RpcSignatureSubscribeConfig
from solders.rpc.requests import SignatureSubscribe, SignatureUnsubscribe
from solders.rpc.responses import SignatureNotification, SubscriptionResult
from solders.signature import Signature

from driftshare._tx.statuses import SignatureStatus

__all__ = ["SignatureFeed", "SocketHost"]

log = logging.getLogger(__name__)

_CONFIG = RpcSignatureSubscribeConfig(commitment=CommitmentLevel.Confirmed)


class SocketHost(Protocol):
    """A subscriber whose WebSocket others may share (see ``WebsocketSubscriber``)."""

    def share_socket(self, screen: Any) -> Any | None:
        """The live solana-py connection, None while down; ``screen`` sees its messages."""


@dataclass(slots=True)
class _Subscription:
    socket: Any
    request_id: int
    subscription_id: int | None = None
    """Set by the node's answer: from then on the notification is owed."""


class SignatureFeed:
    """Subscribes signatures on ``host()``'s WebSocket; a notification's status goes to
    ``on_status``, a socket's loss to ``on_lost`` (its signatures are no longer covered)."""

    def __init__(
        self,
        host: Callable[[], SocketHost | None],
        *,
        on_status: Callable[[str, SignatureStatus], None],
        on_lost: Callable[[], None],
    ) -> None:
        self._host = host
        self._on_status = on_status
        self._on_lost = on_lost
        self._by_signature: dict[str, _Subscription] = {}
        self._requests: dict[tuple[Any, int], str] = {}
        """(socket, request id) → signature, until the node answers."""
        self._subscriptions: dict[tuple[Any, int], str] = {}
        """(socket, subscription id) → signature, until its notification."""
        self._orphans: list[tuple[Any, int]] = []
        """Subscriptions answered after their signature was forgotten: unsubscribed next."""
        self.subscribes = 0
        self.notifications = 0
        self.refusals = 0

    @property
    def live(self) -> int:
        """Signatures whose notification is owed on a live socket now."""
        return len(self._subscriptions)

    def covered(self, signature: str) -> bool:
        """Whether the node holds a live subscription for ``signature``: a notification is
        owed on a socket that is up."""
        sub = self._by_signature.get(signature)
        return sub is not None and sub.subscription_id is not None

    async def subscribe(self, signature: str) -> None:
        """Ask for ``signature``'s confirmation on the shared socket, if one is up."""
        host = self._host()
        socket = None if host is None else host.share_socket(self)
        if socket is None or signature in self._by_signature:
            return
        await self.flush()
        request_id: int = socket.increment_counter_and_get_id()
        self._by_signature[signature] = _Subscription(socket, request_id)
        self._requests[(socket, request_id)] = signature
        try:
            await socket.send_data(
                SignatureSubscribe(Signature.from_string(signature), _CONFIG, request_id)
            )
        except Exception as exc:  # a closing socket: the status poll covers it
            log.debug("signatureSubscribe of %s not sent: %r", signature, exc)
            self._by_signature.pop(signature, None)
            self._requests.pop((socket, request_id), None)
            socket.sent_subscriptions.pop(request_id, None)
            return
        self.subscribes += 1

    async def unsubscribe(self, signature: str) -> None:
        """Stop following ``signature``: its live subscription, if any, is ended."""
        sub = self._by_signature.pop(signature, None)
        if sub is not None and sub.subscription_id is not None:
            self._subscriptions.pop((sub.socket, sub.subscription_id), None)
            self._orphans.append((sub.socket, sub.subscription_id))
        # One still awaiting its answer is unsubscribed once the answer comes (see screen).
        await self.flush()

    async def flush(self) -> None:
        """End the subscriptions answered after their signature was forgotten."""
        orphans, self._orphans = self._orphans, []
        for socket, subscription_id in orphans:
            socket.subscriptions.pop(subscription_id, None)
            with suppress(Exception):  # a closed socket took the subscription with it
                await socket.send_data(
                    SignatureUnsubscribe(subscription_id, socket.increment_counter_and_get_id())
                )

    # -- the socket's messages (a SocketScreen) ---------------------------------------------

    def screen(self, socket: Any, messages: list[Any]) -> list[Any]:
        """Take the answers to this feed's subscriptions and their notifications; the rest
        are driftpy's."""
        theirs: list[Any] = []
        for message in messages:
            if isinstance(message, SubscriptionResult) and (socket, message.id) in self._requests:
                self._answered(socket, message.id, message.result)
            elif (
                isinstance(message, SignatureNotification)
                and (socket, message.subscription) in self._subscriptions
            ):
                self._notified(socket, message)
            else:
                theirs.append(message)
        return theirs

    def refused(self, socket: Any, error: SubscriptionError) -> bool:
        request_id = getattr(error.subscription, "id", None)
        if not isinstance(request_id, int):
            return False
        signature = self._requests.pop((socket, request_id), None)
        if signature is None:
            return False
        socket.sent_subscriptions.pop(request_id, None)
        socket.failed_subscriptions.pop(request_id, None)
        self._by_signature.pop(signature, None)
        self.refusals += 1
        log.debug("signatureSubscribe of %s refused: %s", signature, error)
        self._on_lost()
        return True

    def closed(self, socket: Any) -> None:
        lost = [s for s, sub in self._by_signature.items() if sub.socket is socket]
        for signature in lost:
            del self._by_signature[signature]
        self._requests = {k: v for k, v in self._requests.items() if k[0] is not socket}
        self._subscriptions = {k: v for k, v in self._subscriptions.items() if k[0] is not socket}
        self._orphans = [o for o in self._orphans if o[0] is not socket]
        if lost:
            self._on_lost()

    def _answered(self, socket: Any, request_id: int, subscription_id: int) -> None:
        signature = self._requests.pop((socket, request_id))
        socket.sent_subscriptions.pop(request_id, None)
        sub = self._by_signature.get(signature)
        if sub is None or sub.socket is not socket or sub.request_id != request_id:
            self._orphans.append((socket, subscription_id))
            return
        sub.subscription_id = subscription_id
        self._subscriptions[(socket, subscription_id)] = signature

    def _notified(self, socket: Any, message: SignatureNotification) -> None:
        # The node ended the subscription with this notification.
        signature = self._subscriptions.pop((socket, message.subscription))
        socket.subscriptions.pop(message.subscription, None)
        sub = self._by_signature.get(signature)
        if sub is not None:
            sub.subscription_id = None
        self.notifications += 1
        try:
            result = json.loads(message.to_json())["result"]
            slot, err = int(result["context"]["slot"]), result["value"]["err"]
            status = SignatureStatus(slot, err, "confirmed")
        except (KeyError, TypeError, ValueError) as exc:  # untrusted: the poll asks instead
            log.debug("a malformed signature notification for %s: %r", signature, exc)
            self._by_signature.pop(signature, None)
            self._on_lost()
            return
        self._on_status(signature, status)
