"""The interface the router core needs from shard nodes, and its gRPC implementation.

One method per ShardNode RPC the router sends (proto/node.proto), each typed by its request
and response messages, so a misspelt RPC is an AttributeError at import-time tests rather than
a string that fails on the wire. The replication RPCs between nodes (Replicate, FetchOps) are
not the router's business and are not here; the node's Status serves the deep health."""

from __future__ import annotations

import asyncio
import itertools
from typing import AsyncIterator, Awaitable, Callable, Protocol

import grpc

from proto import node_pb2
from router.search_frames import FrameLink
from tributary import errors, limits
from tributary import cluster_auth, tracing
from tributary.cluster_auth import ClusterToken
from tributary.grpc_options import internal_channel_options


_SERVICE = node_pb2.DESCRIPTOR.services_by_name["ShardNode"]


class ShardClient(Protocol):
    """What the router core, the 2PC coordinator and the operator's view send to a node. Every
    method raises a `tributary.errors.TributaryError` (mapped from the node's status) on
    failure; a call that was never sent because the channel was reconnecting is retried once."""

    async def write(self, address: str, request: node_pb2.WriteRequest
                    ) -> node_pb2.WriteResponse: ...
    async def get(self, address: str, request: node_pb2.GetRequest
                  ) -> node_pb2.GetResponse: ...
    async def search(self, address: str, request: node_pb2.ShardSearchRequest
                     ) -> node_pb2.ShardSearchResponse: ...
    async def text_search(self, address: str, request: node_pb2.ShardTextSearchRequest
                          ) -> node_pb2.ShardSearchResponse: ...
    async def list(self, address: str, request: node_pb2.ListRequest
                   ) -> node_pb2.ListResponse: ...
    async def stats(self, address: str, request: node_pb2.ShardStatsRequest
                    ) -> node_pb2.ShardStatsResponse: ...
    async def soft_delete(self, address: str, request: node_pb2.IdsRequest
                          ) -> node_pb2.IdsResponse: ...
    async def restore(self, address: str, request: node_pb2.IdsRequest
                      ) -> node_pb2.IdsResponse: ...
    async def compact(self, address: str, request: node_pb2.CompactRequest
                      ) -> node_pb2.CompactResponse: ...
    async def drop_shard(self, address: str, request: node_pb2.DropShardRequest
                         ) -> node_pb2.DropShardResponse: ...
    async def prepare(self, address: str, request: node_pb2.PrepareRequest
                      ) -> node_pb2.PrepareResponse: ...
    async def commit(self, address: str, request: node_pb2.TxnRequest
                     ) -> node_pb2.TxnResponse: ...
    async def abort(self, address: str, request: node_pb2.TxnRequest
                    ) -> node_pb2.TxnResponse: ...
    async def cut_shard(self, address: str, request: node_pb2.CutShardRequest
                        ) -> node_pb2.CutShardResponse: ...
    async def copy_status(self, address: str, request: node_pb2.CopyStatusRequest
                          ) -> node_pb2.CopyStatusResponse: ...
    async def status(self, address: str, timeout_s: float
                          ) -> node_pb2.NodeStatusResponse: ...
    def export_shard(self, address: str, request: node_pb2.ExportShardRequest
                     ) -> AsyncIterator[node_pb2.SnapshotChunk]: ...
    async def restore_chunk(self, address: str, request: node_pb2.RestoreChunkRequest
                            ) -> node_pb2.RestoreChunkResponse: ...
    async def install_restore(self, address: str, request: node_pb2.InstallRestoreRequest
                              ) -> node_pb2.InstallRestoreResponse: ...


class GrpcShardClient:
    """One channel per node address, reused across requests. Implements `ShardClient`."""

    def __init__(self, token: ClusterToken | None = None):
        self._token = token
        self._stubs: dict = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._batchers: dict[str, SearchBatcher] = {}
        self._streams: dict[str, SearchStream] = {}

    def _stub(self, address: str):
        stub = self._stubs.get(address)
        if stub is None:
            channel = grpc.aio.insecure_channel(address, options=internal_channel_options())
            self._channels[address] = channel
            stub = self._stubs[address] = cluster_auth.stub(_SERVICE, channel, self._token)
        return stub

    async def write(self, address, request):
        return await _send(self._stub(address).Write, request)

    async def get(self, address, request):
        return await _send(self._stub(address).Get, request)

    async def search(self, address, request):
        """Plain searches ride SearchBatcher (concurrent ones to a node share one message on
        the node's search stream); the others (filtered, exact, at a version) go alone."""
        if not batchable(request):
            return await _send(self._stub(address).Search, request)
        return await self._batcher(address).search(request)

    def search_soon(self, address, request) -> asyncio.Future:
        """search(), started now: the future of its answer. A plain search outside a sampled
        trace is handed to the node's search stream without a task of its own (the core's
        scatter of one query over its shards, RouterCore._scatter); cancelling the future
        gives it up."""
        if batchable(request) and not tracing.recording():
            batcher = self._batcher(address)
            if batcher.streams():
                return batcher.submit(request)
        return asyncio.ensure_future(self.search(address, request))

    def _batcher(self, address: str) -> "SearchBatcher":
        batcher = self._batchers.get(address)
        if batcher is None:
            stub = self._stub(address)
            frames = FrameLink(address, lambda: self._frames_address(address), self._token,
                               deliver, lose)
            stream = self._streams[address] = SearchStream(stub.SearchStream, frames)
            batcher = self._batchers[address] = SearchBatcher(
                lambda one: _send(stub.Search, one),
                lambda many: _send(stub.SearchBatch, many), stream)
        return batcher

    async def _frames_address(self, address: str) -> str:
        status = await self.status(address, limits.search_frames_connect_ms / 1000)
        return status.search_frames_address

    async def text_search(self, address, request):
        return await _send(self._stub(address).TextSearch, request)

    async def list(self, address, request):
        return await _send(self._stub(address).List, request)

    async def stats(self, address, request):
        return await _send(self._stub(address).Stats, request)

    async def soft_delete(self, address, request):
        return await _send(self._stub(address).SoftDelete, request)

    async def restore(self, address, request):
        return await _send(self._stub(address).Restore, request)

    async def compact(self, address, request):
        return await _send(self._stub(address).Compact, request)

    async def drop_shard(self, address, request):
        return await _send(self._stub(address).DropShard, request)

    async def prepare(self, address, request):
        return await _send(self._stub(address).Prepare, request)

    async def commit(self, address, request):
        return await _send(self._stub(address).Commit, request)

    async def abort(self, address, request):
        return await _send(self._stub(address).Abort, request)

    async def cut_shard(self, address, request):
        return await _send(self._stub(address).CutShard, request)

    async def copy_status(self, address, request):
        return await _send(self._stub(address).CopyStatus, request)

    async def status(self, address, timeout_s):
        """The node's Status within `timeout_s`, once, without waiting for a reconnecting
        channel: the deep health asks whether this router reaches the node right now."""
        try:
            return await self._stub(address).Status(node_pb2.NodeStatusRequest(),
                                                    timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise errors.from_wire(exc.code(), exc.details()) from None

    # Backups and restores (router/backups_admin.py, node/backup.py).
    async def export_shard(self, address, request):
        """The shard's SnapshotChunks at the request's version, as they arrive."""
        call = self._stub(address).ExportShard(
            request, timeout=limits.backup_export_timeout_ms / 1000)
        try:
            async for chunk in call:
                yield chunk
        except grpc.aio.AioRpcError as exc:
            raise errors.from_wire(exc.code(), exc.details()) from None
        finally:
            call.cancel()

    async def restore_chunk(self, address, request):
        return await _send(self._stub(address).RestoreChunk, request)

    async def install_restore(self, address, request):
        return await _send(self._stub(address).InstallRestore, request)

    async def close(self) -> None:
        for stream in self._streams.values():
            stream.close()
        for channel in self._channels.values():
            await channel.close()


async def _send(rpc: Callable[..., Awaitable], request):
    """One call under `node_rpc_timeout_ms`, errors mapped through tributary.errors."""
    try:
        return await rpc(request, timeout=limits.node_rpc_timeout_ms / 1000)
    except grpc.aio.AioRpcError as exc:
        if not _never_sent(exc):
            raise errors.from_wire(exc.code(), exc.details()) from None
    # The channel was still backing off from a peer that restarted, so the call was never
    # sent. Waiting for the channel (briefly) is then safe for every method, even writes.
    try:
        return await rpc(request, timeout=limits.grpc_reconnect_backoff_max_ms / 1000 * 2,
                         wait_for_ready=True)
    except grpc.aio.AioRpcError as exc:
        raise errors.from_wire(exc.code(), exc.details()) from None


def batchable(request: node_pb2.ShardSearchRequest) -> bool:
    """A search the node can run in a knn_query batch (node/server.py _batchable)."""
    return not (request.as_of_tag or request.exact or request.include_values
                or request.filter_expression or request.filters)


_CODES = {code.value[0]: code for code in grpc.StatusCode}


class SearchStream:
    """The long-lived SearchStream of one router to one node (node.proto): the router's plain
    searches go as ticketed messages on one call, so gRPC's per-call set-up and the node's
    interceptors run once per stream instead of once per search (bench.hop_floor --transports:
    about a third less CPU per search on both sides).

    `post` hands a message over without a task or a coroutine of its own: each search of the
    message has a future, settled by the stream's reader from the search's outcome (its answer
    or its error, through the one table). Every message is signed like any internal request
    (cluster_auth signs each message of a stream) and its searches name dataset uuid, shard and
    epoch, so the node fences each as it does for Search. Every message has a deadline:
    `node_rpc_timeout_ms`, sent along as timeout_ms and enforced here by a timer
    (DeadlineExceeded). A caller that gives up (a hedge that lost) just stops waiting; the
    answer, when it comes, is dropped.

    When the stream fails or ends, the messages it had not answered go to their `resend`
    callback (the searches go again as unary calls: reads, so safe) and the next message opens
    a new stream; a node that answers UNIMPLEMENTED (an older release) is not asked again.
    Searches inside a sampled trace do not come here: they keep the unary calls, which carry
    the trace context and a client span each (a stream carries one context for its whole
    life)."""

    def __init__(self, open_call: Callable, frames: "FrameLink | None" = None):
        self._open_call = open_call
        # The node's search-frame link, preferred while it is up (router/search_frames.py).
        self.frames = frames
        self._call = None
        self._outbox: asyncio.Queue | None = None
        # ticket -> (searches, their futures, deadline timer, done callback, resend callback)
        self._waiting: dict[int, tuple] = {}
        self._reader: asyncio.Task | None = None
        self._tickets = itertools.count(1)
        self.unsupported = False
        # Figures for tests and the bench: streams opened, messages sent.
        self.opened = 0
        self.messages = 0

    def usable(self) -> bool:
        return not self.unsupported and not tracing.recording()

    def _open(self) -> None:
        outbox: asyncio.Queue = asyncio.Queue()

        async def messages():
            while True:
                message = await outbox.get()
                if message is None:
                    return
                yield message
        # The stream outlives the request that opens it: it must not carry its request id.
        request_id = tracing.request_id_var.set("")
        try:
            call = self._open_call(messages())
            self._call, self._outbox, self._waiting = call, outbox, {}
            self._reader = asyncio.ensure_future(self._read(call, outbox, self._waiting))
        finally:
            tracing.request_id_var.reset(request_id)
        self.opened += 1

    async def _read(self, call, outbox: asyncio.Queue, waiting: dict) -> None:
        try:
            async for response in call:
                deliver(response, waiting)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                self.unsupported = True
        except asyncio.CancelledError:
            pass
        finally:
            if self._call is call:
                self._call = None
            outbox.put_nowait(None)
            call.cancel()
            lose(waiting)

    def post(self, searches: list, futures: list, done: Callable[[], None],
             resend: Callable[[list, list], None]) -> None:
        """Sends `searches` as one message; settles futures[i] with the answer (or error) of
        searches[i], or with DeadlineExceeded after node_rpc_timeout_ms. `done()` is called
        once the message is answered, timed out or lost with the stream; a message lost with
        the stream is also handed to `resend(searches, futures)`. The message goes as a
        search frame while the node's frame link is up (router/search_frames.py), else on
        the gRPC stream."""
        frames = self.frames if self.frames is not None and self.frames.ready() else None
        if frames is None and self._call is None:
            self._open()
        ticket = next(self._tickets)
        message = node_pb2.ShardSearchStreamRequest(ticket=ticket,
                                                    timeout_ms=limits.node_rpc_timeout_ms,
                                                    merged_answers=True)
        message.batch.searches.extend(searches)
        waiting = self._waiting if frames is None else frames.waiting
        timer = asyncio.get_running_loop().call_later(
            limits.node_rpc_timeout_ms / 1000, self._expire, waiting, ticket)
        waiting[ticket] = (searches, futures, timer, done, resend)
        if frames is None:
            self._outbox.put_nowait(message)
        else:
            frames.send(message)
        self.messages += 1

    @staticmethod
    def _expire(waiting: dict, ticket: int) -> None:
        entry = waiting.pop(ticket, None)
        if entry is None:
            return
        _, futures, _, done, _ = entry
        for future in futures:
            _settle(future, error=errors.DeadlineExceeded(
                "the node did not answer the search in time"))
        done()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.frames is not None:
            self.frames.close()


def deliver(response: node_pb2.ShardSearchStreamResponse, waiting: dict) -> None:
    """Settles the searches of every message `response` answers (a node may answer several
    in one response: merged_answers) and takes them out of `waiting` (ticket -> searches,
    futures, deadline timer, done callback, resend callback)."""
    for answer in (response, *response.more):
        entry = waiting.pop(answer.ticket, None)
        if entry is None:
            continue        # answered after its deadline
        _, futures, timer, done, _ = entry
        timer.cancel()
        outcomes = answer.batch.outcomes
        for future, outcome in zip(futures, outcomes):
            if future.done():
                continue    # its caller gave up
            if outcome.error:
                future.set_exception(errors.from_wire(
                    _CODES.get(outcome.error_code, grpc.StatusCode.UNKNOWN), outcome.error))
            else:
                future.set_result(outcome.response)
        for future in futures[len(outcomes):]:
            _settle(future, error=errors.Internal("the node answered too few searches"))
        done()


def lose(waiting: dict, error: errors.TributaryError | None = None) -> None:
    """The link that carried the messages in `waiting` is gone: each goes to its resend
    callback (the searches go again as unary calls: reads, so safe), or, with `error` (the
    router is closing), each of its searches fails with it."""
    entries = list(waiting.values())
    waiting.clear()
    for searches, futures, timer, done, resend in entries:
        timer.cancel()
        if error is None:
            done()
            resend(searches, futures)
            continue
        for future in futures:
            _settle(future, error=error)
        done()


class SearchBatcher:
    """Adaptive batching of the searches one router sends to one node.

    On the node's search stream (`stream`, a SearchStream the node supports): every search
    queues, and `submit` returns its future at once (nothing runs a task per search or per
    batch). While the node has no message in flight (idle), the searches queued during one
    turn of the event loop go together as one message when the turn ends: no added wait, and
    the shards of one query on the node, and queries that came in together, share a message.
    While one is in flight (load), the queue goes when its first search has waited
    search_batch_wait_max_ms or when it holds search_batch_queries_max.

    Without a stream (or for a node of an older release), lone searches are `send_one` calls
    (Search) and batches `send_many` calls (SearchBatch; a node that answers UNIMPLEMENTED gets
    each search alone): while no call to the node is in flight from an earlier turn, a search
    goes at once, alone; otherwise it queues, and the queue goes at the bound, when full, or
    when the node has nothing in flight any more. A search inside a sampled trace goes alone as
    `send_one`, with its own span.

    Either way a node under load gets fewer, larger messages or calls, and runs each as one
    knn_query batch. Each search keeps its own answer or error; a search whose caller gave up
    (a hedge that lost, a deadline) is dropped from the queue, or its answer is ignored."""

    def __init__(self, send_one: Callable[[node_pb2.ShardSearchRequest], Awaitable],
                 send_many: Callable[[node_pb2.ShardSearchBatchRequest], Awaitable],
                 stream: SearchStream | None = None):
        self._send_one = send_one
        self._send_many = send_many
        self._stream = stream
        self._in_flight = 0
        # Messages or RPCs sent alone during the current turn of the event loop (reset at the
        # next turn).
        self._sent_this_turn = 0
        self._queue: list[tuple[node_pb2.ShardSearchRequest, asyncio.Future]] = []
        self._timer: asyncio.Handle | None = None
        self._sending: set[asyncio.Task] = set()    # held, so no send is collected midway
        # Set once the node answered SearchBatch with UNIMPLEMENTED (an older release).
        self._no_batches = False
        # Figures for tests and the bench: messages or RPCs sent, and searches they carried.
        self.rpcs = 0
        self.searches = 0

    def streams(self) -> bool:
        """True while searches ride the node's search stream (see SearchStream)."""
        return self._stream is not None and not self._stream.unsupported

    def submit(self, request: node_pb2.ShardSearchRequest) -> asyncio.Future:
        """The future of `request`'s answer (or error), sent at once or queued as above.
        Cancelling the future gives the search up."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        streams = self.streams()
        if not streams and self._in_flight <= self._sent_this_turn and not self._queue:
            if not self._sent_this_turn:
                loop.call_soon(self._next_turn)
            self._sent_this_turn += 1
            self._post([(request, future)])
            return future
        self._queue.append((request, future))
        if len(self._queue) >= limits.search_batch_queries_max:
            self._flush()
        elif self._timer is None:
            if streams and not self._in_flight:
                # An idle node: the searches handed over during this turn of the event loop
                # go together, as one message, as soon as the turn ends (no added wait). A
                # message costs a write (a sendmsg on the router, a read on the node) whatever
                # it carries, so the shards of one query on one node, and queries that arrived
                # together, share one.
                self._timer = loop.call_soon(self._flush)
            else:
                self._timer = loop.call_later(limits.search_batch_wait_max_ms / 1000,
                                              self._flush)
        return future

    async def search(self, request: node_pb2.ShardSearchRequest
                     ) -> node_pb2.ShardSearchResponse:
        if self.streams():
            if tracing.recording():
                return await self._send_one(request)
            return await self.submit(request)
        loop = asyncio.get_running_loop()
        if self._in_flight <= self._sent_this_turn and not self._queue:
            if not self._sent_this_turn:
                loop.call_soon(self._next_turn)
            self._sent_this_turn += 1
            self._in_flight += 1
            self.rpcs += 1
            self.searches += 1
            try:
                return await self._send_one(request)
            finally:
                self._message_done()
        return await self.submit(request)

    def _next_turn(self) -> None:
        self._sent_this_turn = 0

    def _message_done(self) -> None:
        self._in_flight -= 1
        # Unary calls: a queue goes as soon as the node has nothing in flight. On the stream it
        # waits for its bound (or to fill): an answer coming back does not send it early, so
        # under load a message carries what arrived within search_batch_wait_max_ms (bench, at
        # 2 ms: about 2 searches per message instead of 1.3, and less CPU per search on router
        # and nodes alike, as each message costs a signed write and a read on both sides).
        if not self._in_flight and self._queue and not self.streams():
            self._flush()

    def _post(self, batch: list[tuple[node_pb2.ShardSearchRequest, asyncio.Future]]) -> None:
        """Sends `batch` (searches and their futures) as one message or RPC."""
        self._in_flight += 1
        self.rpcs += 1
        self.searches += len(batch)
        if self.streams():
            self._stream.post([request for request, _ in batch],
                              [future for _, future in batch], self._message_done,
                              self._resend)
            return
        task = asyncio.ensure_future(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def _resend(self, searches: list, futures: list) -> None:
        """Searches the stream lost before the node answered: they go again as unary calls."""
        batch = [(request, future) for request, future in zip(searches, futures)
                 if not future.done()]
        if not batch:
            return
        self._in_flight += 1
        task = asyncio.ensure_future(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send_alone(self, request, future: asyncio.Future) -> None:
        await _alone(self._send_one, request, future)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        queued = [(request, future) for request, future in self._queue if not future.done()]
        self._queue = []
        while queued:
            batch = queued[:limits.search_batch_queries_max]
            queued = queued[limits.search_batch_queries_max:]
            self._post(batch)

    async def _send(self, batch: list[tuple[node_pb2.ShardSearchRequest, asyncio.Future]]
                    ) -> None:
        """`batch` as unary calls: one Search, or one SearchBatch."""
        try:
            if len(batch) == 1:
                await self._send_alone(*batch[0])
                return
            if self._no_batches:
                await asyncio.gather(*(self._send_alone(request, future)
                                       for request, future in batch))
                return
            try:
                answer = await self._send_many(node_pb2.ShardSearchBatchRequest(
                    searches=[request for request, _ in batch]))
            except errors.Unimplemented:
                # A node of an older release, without SearchBatch: each search goes alone.
                self._no_batches = True
                await asyncio.gather(*(self._send_alone(request, future)
                                       for request, future in batch))
                return
            except Exception as exc:  # noqa: BLE001 - every caller's error
                for _, future in batch:
                    _settle(future, error=exc)
                return
            for (_, future), outcome in zip(batch, answer.outcomes):
                if outcome.error:
                    _settle(future, error=errors.from_wire(
                        _CODES.get(outcome.error_code, grpc.StatusCode.UNKNOWN), outcome.error))
                else:
                    _settle(future, outcome.response)
            for _, future in batch[len(answer.outcomes):]:
                _settle(future, error=errors.Internal("the node answered too few searches"))
        finally:
            self._message_done()


async def _alone(send_one, request, future: asyncio.Future) -> None:
    try:
        response = await send_one(request)
    except Exception as exc:  # noqa: BLE001 - the caller's error
        _settle(future, error=exc)
    else:
        _settle(future, response)


def _settle(future: asyncio.Future, result=None, error: BaseException | None = None) -> None:
    if future.done():
        return      # its caller gave up
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _never_sent(exc: grpc.aio.AioRpcError) -> bool:
    details = (exc.details() or "").lower()
    return exc.code() == grpc.StatusCode.UNAVAILABLE and (
        "failed to connect" in details or "connection refused" in details)


__all__ = ["ShardClient", "GrpcShardClient", "node_pb2"]
