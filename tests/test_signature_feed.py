"""SignatureFeed against a scripted solana-py socket: what the node answers, as solders parses
it, and what the feed sends back."""

from __future__ import annotations

import itertools
import json
from typing import Any

from solana.rpc.websocket_api import SubscriptionError
from solders.rpc.requests import SignatureSubscribe, SignatureUnsubscribe
from solders.rpc.responses import parse_websocket_message
from solders.signature import Signature

from driftshare._data.websocket_subscription import _screen_messages
from driftshare._tx.signature_feed import SignatureFeed
from driftshare._tx.statuses import SignatureStatus


class Socket:
    """The parts of solana-py's ``SolanaWsClientProtocol`` the feed uses."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.sent_subscriptions: dict[int, Any] = {}
        self.failed_subscriptions: dict[int, Any] = {}
        self.subscriptions: dict[int, Any] = {}
        self._ids = itertools.count(1)

    def increment_counter_and_get_id(self) -> int:
        return next(self._ids)

    async def send_data(self, message: Any) -> None:
        self.sent.append(message)
        self.sent_subscriptions[message.id] = message


class Host:
    def __init__(self, socket: Socket | None) -> None:
        self.socket = socket
        self.screens: list[Any] = []

    def share_socket(self, screen: Any) -> Socket | None:
        if screen not in self.screens:
            self.screens.append(screen)
        return self.socket


class Feed:
    def __init__(self, socket: Socket | None) -> None:
        self.host = Host(socket)
        self.statuses: dict[str, SignatureStatus] = {}
        self.lost = 0
        self.feed = SignatureFeed(
            lambda: self.host, on_status=self.statuses.__setitem__, on_lost=self._lost
        )

    def _lost(self) -> None:
        self.lost += 1


def node(text: dict[str, Any]) -> list[Any]:
    return list(parse_websocket_message(json.dumps({"jsonrpc": "2.0", **text})))


SIG = str(Signature.new_unique())


async def refused_subscription() -> tuple[Socket, Feed, Any, Any]:
    """A feed that subscribed ``SIG``, its request, and the node's refusal of it (unsent)."""
    socket = Socket()
    f = Feed(socket)
    await f.feed.subscribe(SIG)
    (request,) = socket.sent
    (refusal,) = node({"error": {"code": -32602, "message": "Invalid params"}, "id": request.id})
    return socket, f, request, refusal


async def test_a_notification_brings_the_status_with_its_err_and_slot() -> None:
    socket = Socket()
    f = Feed(socket)
    await f.feed.subscribe(SIG)
    (request,) = socket.sent
    assert isinstance(request, SignatureSubscribe)
    assert not f.feed.covered(SIG)  # the node has not answered yet
    other = node({"result": 1, "id": 99})  # an answer of driftpy's own
    assert f.feed.screen(socket, [*node({"result": 7, "id": request.id}), *other]) == other
    assert f.feed.covered(SIG)
    err = {"InstructionError": [0, {"Custom": 6010}]}
    notification = {
        "method": "signatureNotification",
        "params": {"result": {"context": {"slot": 42}, "value": {"err": err}}, "subscription": 7},
    }
    assert f.feed.screen(socket, node(notification)) == []
    assert f.statuses[SIG] == SignatureStatus(42, err, "confirmed")
    await f.feed.unsubscribe(SIG)
    assert len(socket.sent) == 1  # the node ended the subscription with its notification
    assert socket.sent_subscriptions == {}  # no bookkeeping left per signature


async def test_a_refused_subscription_is_not_covered_and_not_driftpys() -> None:
    socket, f, request, refusal = await refused_subscription()
    assert f.feed.refused(socket, SubscriptionError(refusal, request))
    assert not f.feed.covered(SIG)
    assert f.lost == 1  # the watcher is told to poll it
    unknown = SubscriptionError(refusal, SignatureSubscribe(Signature.new_unique(), None, 500))
    assert not f.feed.refused(socket, unknown)  # not its own: driftpy's loop sees it


async def test_an_answer_after_the_signature_was_forgotten_is_unsubscribed() -> None:
    socket = Socket()
    f = Feed(socket)
    await f.feed.subscribe(SIG)
    (request,) = socket.sent
    await f.feed.unsubscribe(SIG)  # the write ended before the node answered
    assert f.feed.screen(socket, node({"result": 7, "id": request.id})) == []
    await f.feed.flush()
    assert isinstance(socket.sent[-1], SignatureUnsubscribe)
    assert socket.sent[-1].subscription_id == 7


async def test_a_closed_socket_uncovers_its_signatures() -> None:
    socket = Socket()
    f = Feed(socket)
    await f.feed.subscribe(SIG)
    f.feed.screen(socket, node({"result": 7, "id": socket.sent[0].id}))
    assert f.feed.live == 1
    f.feed.closed(socket)
    assert not f.feed.covered(SIG)
    assert f.feed.live == 0
    assert f.lost == 1


async def test_without_a_socket_nothing_is_subscribed() -> None:
    f = Feed(None)
    await f.feed.subscribe(SIG)
    assert not f.feed.covered(SIG)
    assert f.feed.subscribes == 0


async def test_the_shared_socket_hands_driftpy_only_its_own_messages() -> None:
    socket, f, request, refusal = await refused_subscription()
    driftpys = node({"result": 3, "id": 50})
    script: list[Any] = [
        SubscriptionError(refusal, request),  # solana-py raises a refusal from recv
        node({"result": True, "id": 51}),  # an unsubscription's answer
        driftpys,
    ]

    async def recv() -> list[Any]:
        item = script.pop(0)
        if isinstance(item, Exception):
            raise item
        return list(item)

    socket.recv = recv  # type: ignore[attr-defined]
    _screen_messages(socket, [f.feed])
    assert await socket.recv() == driftpys  # type: ignore[attr-defined]
    assert f.feed.refusals == 1
    assert not script
