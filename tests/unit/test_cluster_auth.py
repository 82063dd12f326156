"""tributary/cluster_auth.py: the per-message proof (signing, checking, tampering, replay,
clock skew) and real in-process gRPC servers (asyncio and thread-pool) that refuse messages
without a valid proof before any handler runs, while the health service stays open for probes."""

from __future__ import annotations

import argparse
import asyncio
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from tributary import cluster_auth, limits
from tributary.cluster_auth import ClusterToken, ProofError

TOKEN = ClusterToken.from_secret("s" * 40)
WRONG = ClusterToken.from_secret("t" * 40)
METHOD = "/tributary.node.v1.ShardNode/Write"
REFLECTION = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]


def fresh(token: ClusterToken) -> ClusterToken:
    """The same key with an empty replay memory (a server process of its own)."""
    return ClusterToken(token.key)


def test_a_signed_message_verifies_once_and_returns_its_body():
    server = fresh(TOKEN)
    signed = TOKEN.sign(METHOD, b"payload")
    assert len(signed) == len(b"payload") + cluster_auth.PROOF_BYTES
    assert server.verify(METHOD, signed) == b"payload"
    with pytest.raises(ProofError, match="replayed"):
        server.verify(METHOD, signed)


@pytest.mark.parametrize("case", ["no proof", "other secret", "other method", "body changed",
                                  "proof changed", "truncated"])
def test_a_message_without_a_valid_proof_is_refused(case):
    signed = TOKEN.sign(METHOD, b"payload")
    data, method = {
        "no proof": (b"payload", METHOD),
        "other secret": (WRONG.sign(METHOD, b"payload"), METHOD),
        "other method": (signed, "/tributary.meta.v1.Meta/Propose"),
        "body changed": (b"pAyload" + signed[7:], METHOD),
        "proof changed": (signed[:-1] + bytes([signed[-1] ^ 1]), METHOD),
        "truncated": (signed[:-5], METHOD),
    }[case]
    with pytest.raises(ProofError):
        fresh(TOKEN).verify(method, data)


def test_a_proof_outside_the_clock_skew_is_refused():
    now = 1_800_000_000_000
    skew = limits.internal_proof_skew_ms
    old = TOKEN.sign(METHOD, b"x", now_ms=now - skew - 1)
    with pytest.raises(ProofError, match="clock"):
        fresh(TOKEN).verify(METHOD, old, now_ms=now)
    assert fresh(TOKEN).verify(METHOD, TOKEN.sign(METHOD, b"x", now_ms=now - skew + 1000),
                               now_ms=now) == b"x"


def test_the_replay_memory_forgets_nonces_older_than_the_skew_window():
    server = fresh(TOKEN)
    now = 1_800_000_000_000
    for i in range(50):
        server.verify(METHOD, TOKEN.sign(METHOD, b"x", now_ms=now + i), now_ms=now + i)
    later = now + limits.internal_proof_skew_ms + 100
    server.verify(METHOD, TOKEN.sign(METHOD, b"x", now_ms=later), now_ms=later)
    assert len(server._seen) == 1


def test_the_proof_is_an_unknown_field_to_a_parser_that_does_not_check_it():
    from proto import node_pb2
    request = node_pb2.GetRequest(ids=["a", "b"], include_values=True)
    signed = TOKEN.sign(METHOD, request.SerializeToString())
    parsed = node_pb2.GetRequest.FromString(signed)
    assert list(parsed.ids) == ["a", "b"] and parsed.include_values


def test_processes_refuse_to_start_without_a_secret_unless_insecure_dev(monkeypatch):
    monkeypatch.delenv(cluster_auth.ENV_SECRET, raising=False)
    monkeypatch.delenv(cluster_auth.ENV_SECRET_FILE, raising=False)
    args = argparse.Namespace(cluster_secret_file=None, insecure_dev=False)
    with pytest.raises(SystemExit, match="refusing to start the router.*--insecure-dev"):
        cluster_auth.require(args, "router")
    assert cluster_auth.require(argparse.Namespace(cluster_secret_file=None, insecure_dev=True),
                                "router") is None
    monkeypatch.setenv(cluster_auth.ENV_SECRET, "e" * 20)
    assert cluster_auth.require(args, "router") == ClusterToken.from_secret("e" * 20)


def _reflection_request():
    yield reflection_pb2.ServerReflectionRequest(list_services="")


def _codes(channel) -> dict[str, grpc.StatusCode]:
    """Calls a unary method that is open (health) and a streaming one that is not (reflection)
    with each kind of credential; returns the status code per case."""
    results = {}
    for name, token in (("none", None), ("wrong", WRONG), ("good", TOKEN)):
        for method, call in (
                ("health", lambda: health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5)),
                ("reflection", lambda token=token: list(cluster_auth.stub(
                    REFLECTION, channel, token).ServerReflectionInfo(
                        _reflection_request(), timeout=5)))):
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


def test_the_wire_never_carries_the_secret():
    secret = "my-cluster-secret-0123456789"
    token = ClusterToken.from_secret(secret)
    signed = token.sign(METHOD, b"body")
    assert secret.encode() not in signed and token.key not in signed
    assert ClusterToken.from_secret(secret + "\n") == token  # a trailing newline in a file


def test_secret_sources_and_refusals(tmp_path, monkeypatch):
    monkeypatch.delenv(cluster_auth.ENV_SECRET, raising=False)
    monkeypatch.delenv(cluster_auth.ENV_SECRET_FILE, raising=False)
    assert cluster_auth.load() is None
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
