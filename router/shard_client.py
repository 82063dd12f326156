"""The interface the router core needs from shard nodes, and its gRPC implementation.

One method per ShardNode RPC the router sends (proto/node.proto), each typed by its request
and response messages, so a misspelt RPC is an AttributeError at import-time tests rather than
a string that fails on the wire. The replication RPCs between nodes (Replicate, FetchOps) are
not the router's business and are not here; the node's Status serves the deep health."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Awaitable, Callable, Protocol

import grpc

from proto import node_pb2
from tributary import errors, limits
from tributary import cluster_auth
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
        """Plain searches ride SearchBatcher (concurrent ones to a node share one RPC); the
        others (filtered, exact, at a version) go alone."""
        if not batchable(request):
            return await _send(self._stub(address).Search, request)
        batcher = self._batchers.get(address)
        if batcher is None:
            stub = self._stub(address)
            batcher = self._batchers[address] = SearchBatcher(
                lambda one: _send(stub.Search, one), lambda many: _send(stub.SearchBatch, many))
        return await batcher.search(request)

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


class SearchBatcher:
    """Adaptive batching of the searches one router sends to one node.

    While no search RPC to the node is in flight from an earlier turn of the event loop (an idle
    node), a search goes at once, alone, as a plain Search: no added wait, and the shards of one
    query go side by side, each its own call and span. While one is (load), searches queue, and
    the queue goes as one SearchBatch when its first search has waited
    search_batch_wait_max_ms, when it holds search_batch_queries_max, or when the node has
    nothing in flight any more, whichever comes first. So under load a node gets fewer, larger
    calls, and runs each as one knn_query batch. Each search keeps its own answer or error; a
    search whose caller gave up (a hedge that lost, a deadline) is dropped from the queue, or
    its answer is ignored. A batch carries the trace context of the search that sent it."""

    def __init__(self, send_one: Callable[[node_pb2.ShardSearchRequest], Awaitable],
                 send_many: Callable[[node_pb2.ShardSearchBatchRequest], Awaitable]):
        self._send_one = send_one
        self._send_many = send_many
        self._in_flight = 0
        # RPCs sent alone during the current turn of the event loop (reset at the next turn).
        self._sent_this_turn = 0
        self._queue: list[tuple[node_pb2.ShardSearchRequest, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task] = set()    # held, so no send is collected midway
        # Set once the node answered SearchBatch with UNIMPLEMENTED (an older release).
        self._no_batches = False
        # Figures for tests and the bench: RPCs sent, and searches they carried.
        self.rpcs = 0
        self.searches = 0

    async def search(self, request: node_pb2.ShardSearchRequest
                     ) -> node_pb2.ShardSearchResponse:
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
                self._in_flight -= 1
                if not self._in_flight and self._queue:
                    self._flush()
        future = loop.create_future()
        self._queue.append((request, future))
        if len(self._queue) >= limits.search_batch_queries_max:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(limits.search_batch_wait_max_ms / 1000, self._flush)
        return await future

    def _next_turn(self) -> None:
        self._sent_this_turn = 0

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
            self._in_flight += 1
            self.rpcs += 1
            self.searches += len(batch)
            task = asyncio.ensure_future(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[node_pb2.ShardSearchRequest, asyncio.Future]]
                    ) -> None:
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
            self._in_flight -= 1
            if not self._in_flight and self._queue:
                self._flush()


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
