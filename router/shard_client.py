"""The interface the router core needs from shard nodes, and its gRPC implementation.

One method per ShardNode RPC the router sends (proto/node.proto), each typed by its request
and response messages, so a misspelt RPC is an AttributeError at import-time tests rather than
a string that fails on the wire. The replication RPCs between nodes (Replicate, FetchOps) are
not the router's business and are not here; the node's Status serves the deep health."""

from __future__ import annotations

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
        return await _send(self._stub(address).Search, request)

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


def _never_sent(exc: grpc.aio.AioRpcError) -> bool:
    details = (exc.details() or "").lower()
    return exc.code() == grpc.StatusCode.UNAVAILABLE and (
        "failed to connect" in details or "connection refused" in details)


__all__ = ["ShardClient", "GrpcShardClient", "node_pb2"]
