"""The node's end of the search-frame hop (tributary/frames.py): a TCP server whose
connections carry routers' plain searches as signed frames, answered as SearchStream answers
them (node/server.py ShardNodeService): inline by answer_message_now when it can, else by
answer_message in a task, each answer under its message's ticket as soon as it is done.

A connection that does not open with the preamble (within search_frames_connect_ms), or sends
a frame over grpc_message_bytes_max, a frame without a valid cluster proof (unless
--insecure-dev) or one that does not parse, is closed: the router's unanswered messages then go
again as unary calls.
While the router does not read its answers, the connection stops reading its searches (the
transport's write buffer is the bound)."""

from __future__ import annotations

import asyncio
import logging

from google.protobuf.message import DecodeError

from proto import node_pb2
from tributary import cluster_auth, frames, limits, netaddr

log = logging.getLogger("tributary.node.search_frames")


class _Connection(asyncio.Protocol):
    def __init__(self, service, token: cluster_auth.ClusterToken | None, open_ones: set):
        self._service = service
        self._open = open_ones
        self._token = token
        self._reader = frames.FrameReader(limits.grpc_message_bytes_max, expect_magic=True)
        self._transport: asyncio.Transport | None = None
        self._running: set[asyncio.Task] = set()
        self._peer = "?"

    def connection_made(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._peer = str(transport.get_extra_info("peername"))
        frames.tune_socket(transport)
        self._open.add(self)
        # A connection that does not say what it is within the connect bound is not kept.
        asyncio.get_running_loop().call_later(limits.search_frames_connect_ms / 1000,
                                              self._check_greeted)

    def _check_greeted(self) -> None:
        if not self._reader.greeted and not self._transport.is_closing():
            self._refuse("no search-frame preamble within "
                         f"{limits.search_frames_connect_ms} ms")

    def _refuse(self, reason: str) -> None:
        log.warning("search-frame connection from %s closed: %s", self._peer, reason)
        self._transport.abort()

    def data_received(self, data: bytes) -> None:
        try:
            payloads = self._reader.feed(data)
        except frames.FrameError as exc:
            self._refuse(str(exc))
            return
        out = []
        for payload in payloads:
            if self._token is not None:
                try:
                    payload = self._token.verify(frames.FRAMES_METHOD, payload)
                except cluster_auth.ProofError as exc:
                    self._refuse(f"internal call refused: {exc}")
                    return
            try:
                message = node_pb2.ShardSearchStreamRequest.FromString(payload)
            except DecodeError:
                self._refuse("a frame that is not a ShardSearchStreamRequest")
                return
            response = node_pb2.ShardSearchStreamResponse(ticket=message.ticket)
            if self._service.answer_message_now(message, response.batch):
                out.append(frames.encode(response.SerializeToString()))
                continue
            task = asyncio.ensure_future(self._answer(message))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        if out:
            self._transport.write(b"".join(out))

    async def _answer(self, message: node_pb2.ShardSearchStreamRequest) -> None:
        batch = await self._service.answer_message(message)
        if not self._transport.is_closing():
            response = node_pb2.ShardSearchStreamResponse(ticket=message.ticket, batch=batch)
            self._transport.write(frames.encode(response.SerializeToString()))

    def pause_writing(self) -> None:
        self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._transport.resume_reading()

    def abort(self) -> None:
        self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._open.discard(self)
        for task in list(self._running):
            task.cancel()


class SearchFrameServer:
    """Serves search frames for `service` (a ShardNodeService) on `listen` (host:port; port 0
    picks one). `start` returns what the node reports in Status: `advertise` when given, else
    the host of `advertise_grpc` with the bound port."""

    def __init__(self, service, token: cluster_auth.ClusterToken | None):
        self._service = service
        self._token = token
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[_Connection] = set()

    async def start(self, listen: str, advertise: str | None, advertise_grpc: str) -> str:
        try:
            host, port = netaddr.split_host_port(listen)
            if advertise:
                netaddr.split_host_port(advertise)
        except ValueError as exc:
            raise SystemExit(f"bad search-frame address: {exc}") from None
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Connection(self._service, self._token, self._connections), host or None,
                port)
        except OSError as exc:
            raise SystemExit(f"cannot bind the search-frame address {listen}: {exc}") from None
        bound = self._server.sockets[0].getsockname()[1]
        return advertise or netaddr.join_host_port(netaddr.split_host_port(advertise_grpc)[0],
                                                   bound)

    async def stop(self) -> None:
        """Stops listening and closes every connection (their routers resend what was not
        answered as unary calls, which the gRPC server's grace still takes)."""
        if self._server is not None:
            self._server.close()
            for connection in list(self._connections):
                connection.abort()
            await self._server.wait_closed()
