"""The interface the router core needs from shard nodes, and its gRPC implementation."""

from __future__ import annotations

from typing import Protocol

import grpc

from proto import node_pb2, node_pb2_grpc
from tributary import errors, limits


class ShardClient(Protocol):
    async def call(self, address: str, method: str, request): ...


class GrpcShardClient:
    """One channel per node address, reused across requests."""

    def __init__(self):
        self._stubs: dict[str, node_pb2_grpc.ShardNodeStub] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, address: str) -> node_pb2_grpc.ShardNodeStub:
        stub = self._stubs.get(address)
        if stub is None:
            channel = grpc.aio.insecure_channel(address, options=[
                ("grpc.max_receive_message_length", limits.grpc_message_bytes_max),
                ("grpc.max_send_message_length", limits.grpc_message_bytes_max)])
            self._channels[address] = channel
            stub = self._stubs[address] = node_pb2_grpc.ShardNodeStub(channel)
        return stub

    async def call(self, address: str, method: str, request):
        try:
            return await getattr(self._stub(address), method)(
                request, timeout=limits.node_rpc_timeout_ms / 1000)
        except grpc.aio.AioRpcError as exc:
            raise errors.from_wire(exc.code(), exc.details()) from None

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


__all__ = ["ShardClient", "GrpcShardClient", "node_pb2"]
