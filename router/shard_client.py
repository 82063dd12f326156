"""The interface the router core needs from shard nodes, and its gRPC implementation."""

from __future__ import annotations

from typing import Protocol

import grpc

from proto import node_pb2
from tributary import errors, limits
from tributary import cluster_auth
from tributary.cluster_auth import ClusterToken
from tributary.grpc_options import internal_channel_options


_SERVICE = node_pb2.DESCRIPTOR.services_by_name["ShardNode"]


class ShardClient(Protocol):
    async def call(self, address: str, method: str, request): ...


class GrpcShardClient:
    """One channel per node address, reused across requests."""

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

    async def call(self, address: str, method: str, request):
        rpc = getattr(self._stub(address), method)
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

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


def _never_sent(exc: grpc.aio.AioRpcError) -> bool:
    details = (exc.details() or "").lower()
    return exc.code() == grpc.StatusCode.UNAVAILABLE and (
        "failed to connect" in details or "connection refused" in details)


__all__ = ["ShardClient", "GrpcShardClient", "node_pb2"]
