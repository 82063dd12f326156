"""tributary/cluster_auth.py on real in-process gRPC servers (asyncio and thread-pool): unary and
streaming methods refuse a missing or wrong token, the health service stays open for probes, and
bad secrets stop a process with a clear message."""

from __future__ import annotations

import asyncio
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from tributary import cluster_auth
from tributary.cluster_auth import ClusterToken

TOKEN = ClusterToken.from_secret("s" * 40)
WRONG = ClusterToken.from_secret("t" * 40)


def _reflection_request():
    yield reflection_pb2.ServerReflectionRequest(list_services="")


def _codes(channel) -> dict[str, grpc.StatusCode]:
    """Calls a unary method that is open (health) and a streaming one that is not (reflection)
    with each kind of credential; returns the status code per case."""
    results = {}
    for name, md in (("none", ()), ("wrong", WRONG.metadata), ("good", TOKEN.metadata)):
        for method, call in (
                ("health", lambda md=md: health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5, metadata=md)),
                ("reflection", lambda md=md: list(reflection_pb2_grpc.ServerReflectionStub(
                    channel).ServerReflectionInfo(_reflection_request(), timeout=5,
                                                  metadata=md)))):
            try:
                call()
                results[f"{method}/{name}"] = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                results[f"{method}/{name}"] = exc.code()
    return results


EXPECTED = {
    "health/none": grpc.StatusCode.OK, "health/wrong": grpc.StatusCode.OK,
    "health/good": grpc.StatusCode.OK,
    "reflection/none": grpc.StatusCode.UNAUTHENTICATED,
    "reflection/wrong": grpc.StatusCode.UNAUTHENTICATED,
    "reflection/good": grpc.StatusCode.OK,
}


def test_thread_pool_server_refuses_calls_without_the_token():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         interceptors=[cluster_auth.ServerInterceptor(TOKEN)])
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    reflection.enable_server_reflection([health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert _codes(channel) == EXPECTED
    finally:
        server.stop(0)


def test_asyncio_server_refuses_calls_without_the_token():
    async def scenario():
        server = grpc.aio.server(interceptors=[cluster_auth.AioServerInterceptor(TOKEN)])
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        reflection.enable_server_reflection([health.SERVICE_NAME, reflection.SERVICE_NAME],
                                            server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                return await asyncio.to_thread(_codes, channel)
        finally:
            await server.stop(0)
    assert asyncio.run(scenario()) == EXPECTED


def test_the_wire_carries_a_derived_token_not_the_secret():
    secret = "my-cluster-secret-0123456789"
    token = ClusterToken.from_secret(secret)
    assert secret not in token.value and len(token.value) == 64
    assert ClusterToken.from_secret(secret + "\n") == token  # a trailing newline in a file


def test_secret_sources_and_refusals(tmp_path, monkeypatch):
    monkeypatch.delenv(cluster_auth.ENV_SECRET, raising=False)
    monkeypatch.delenv(cluster_auth.ENV_SECRET_FILE, raising=False)
    assert cluster_auth.load() is None
    assert cluster_auth.metadata_from_env() == ()
    monkeypatch.setenv(cluster_auth.ENV_SECRET, "e" * 20)
    assert cluster_auth.load() == ClusterToken.from_secret("e" * 20)
    path = tmp_path / "secret"
    path.write_text("f" * 20 + "\n")
    assert cluster_auth.load(str(path)) == ClusterToken.from_secret("f" * 20)  # file wins
    with pytest.raises(SystemExit, match="at least 16"):
        monkeypatch.setenv(cluster_auth.ENV_SECRET, "short")
        cluster_auth.load()
    with pytest.raises(SystemExit, match="cannot read the cluster secret file"):
        cluster_auth.load(str(tmp_path / "missing"))
