"""The router's end of the search-frame hop (tributary/frames.py): one TCP connection per
node, over which SearchStream (router/shard_client.py) posts its messages while the link is up.

The link finds the node's frame address from the node's Status (node.proto
search_frames_address; a node that reports none, an older release among them, is not asked
again), connects within search_frames_connect_ms and sends the preamble. Until then, and
whenever the link is down, messages go on the gRPC SearchStream as before, so a search never
waits for the link. A link that fails (refused, reset, the node restarting) hands its
unanswered messages to their resend callbacks (the unary calls) and is tried again
search_frames_retry_ms later, from a fresh Status. While the node does not read (its
transport's buffer is over the high-water mark), the link reports itself down and messages
take the gRPC stream, whose flow control then applies."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from typing import Awaitable, Callable

from google.protobuf.message import DecodeError

from proto import node_pb2
from tributary import errors, frames, limits, netaddr
from tributary.cluster_auth import ClusterToken

log = logging.getLogger("tributary.router.search_frames")


class _Connection(asyncio.Protocol):
    def __init__(self, link: "FrameLink"):
        self._link = link
        self._reader = frames.FrameReader(limits.grpc_message_bytes_max)
        self.transport: asyncio.Transport | None = None
        self.writable = True
        self.lost = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        frames.tune_socket(transport)
        transport.write(frames.MAGIC)

    def data_received(self, data: bytes) -> None:
        try:
            for payload in self._reader.feed(data):
                self._link.answered(node_pb2.ShardSearchStreamResponse.FromString(payload))
        except (frames.FrameError, DecodeError) as exc:
            log.warning("search-frame link to %s closed: %s", self._link.node, exc)
            self.transport.abort()

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._link.lost(self, exc)


class FrameLink:
    """The search-frame link of one router to one node (`node`, its gRPC address, for logs).
    `find_address()` returns the node's frame address ("" for none); `deliver(response,
    waiting)` and `lose(waiting, error=None)` settle, resend or fail messages as for the gRPC
    stream."""

    def __init__(self, node: str, find_address: Callable[[], Awaitable[str]],
                 token: ClusterToken | None, deliver: Callable, lose: Callable):
        self.node = node
        self._find_address = find_address
        self._token = token
        self._deliver = deliver
        self._lose = lose
        self._connection: _Connection | None = None
        self._connecting: asyncio.Task | None = None
        self._retry_at = 0.0
        self._closed = False
        # ticket -> (searches, futures, deadline timer, done, resend) of messages on the link.
        self.waiting: dict[int, tuple] = {}
        # The node takes no search frames: not asked again.
        self.unsupported = False
        # Figures for tests and the bench: connections made, frames sent.
        self.opened = 0
        self.sent = 0

    def ready(self) -> bool:
        """True while a message can go as a frame; otherwise starts connecting (when it is
        time to) and returns False."""
        connection = self._connection
        if connection is not None and not connection.lost:
            return connection.writable
        if (self._connecting is None and not self.unsupported and not self._closed
                and time.monotonic() >= self._retry_at):
            # A fresh context: the link outlives the request that starts it, and must not log
            # under its request id.
            self._connecting = asyncio.get_running_loop().create_task(
                self._connect(), context=contextvars.Context())
        return False

    async def _connect(self) -> None:
        try:
            async with asyncio.timeout(limits.search_frames_connect_ms / 1000):
                address = await self._find_address()
                if not address:
                    self.unsupported = True
                    log.info("node %s takes no search frames; its searches stay on gRPC",
                             self.node)
                    return
                host, port = netaddr.split_host_port(address)
                _, connection = await asyncio.get_running_loop().create_connection(
                    lambda: _Connection(self), host, port)
            if self._closed:
                connection.transport.abort()
                return
            self._connection = connection
            self.opened += 1
            log.info("search-frame link to %s up (%s)", self.node, address)
        except Exception as exc:  # noqa: BLE001 - any failure: gRPC until the next try
            self._retry_at = time.monotonic() + limits.search_frames_retry_ms / 1000
            log.info("no search-frame link to %s yet (%s: %s); searching over gRPC",
                     self.node, type(exc).__name__, exc)
        finally:
            self._connecting = None

    def send(self, message: node_pb2.ShardSearchStreamRequest) -> None:
        """Writes `message` (its entry already in `waiting`) as one frame."""
        payload = message.SerializeToString()
        if self._token is not None:
            payload = self._token.sign(frames.FRAMES_METHOD, payload)
        self._connection.transport.write(frames.encode(payload))
        self.sent += 1

    def answered(self, response: node_pb2.ShardSearchStreamResponse) -> None:
        self._deliver(response, self.waiting)

    def lost(self, connection: _Connection, exc: Exception | None) -> None:
        if connection is self._connection:
            self._connection = None
            self._retry_at = time.monotonic() + limits.search_frames_retry_ms / 1000
            if not self._closed:
                log.info("search-frame link to %s lost (%s); searching over gRPC",
                         self.node, exc or "closed by the node")
        self._lose(self.waiting)

    def close(self) -> None:
        """Closes the link for good (the router is stopping): what it carried fails with
        Unavailable rather than going again over channels that are closing too."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self._connection is not None:
            self._connection.transport.abort()
        self._lose(self.waiting, errors.Unavailable("the router closed its search link to the "
                                                    "node"))
