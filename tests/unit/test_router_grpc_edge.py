"""The router's public gRPC edge (tracing, authentication, undecodable requests) on a real
grpc.aio server over loopback: the same answers as ever, without per-call handler building or
per-request metric label look-ups."""

from __future__ import annotations

import asyncio
import gc

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from consensus.state import MetaState
from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc
from router import admission, auth, metrics, quotas, server as router_server
from router.grpc_api import ProtocolErrorInterceptor, add_services
from tributary import limits, tracing

ADMIN_KEY = "edge-test-admin-key-0123456789"


class FakeCatalog:
    def __init__(self):
        self.state = MetaState()

    async def refresh(self, linearizable: bool = False):
        return self.state


class RecordingCore:
    """The core behind the edge: answers searches and remembers the request id it ran under."""

    def __init__(self):
        self.catalog = FakeCatalog()
        self.request_ids: list[str] = []

    async def search_vectors(self, request):
        self.request_ids.append(tracing.request_id_var.get())
        return pb.SearchVectorsResponse(results=[pb.SearchResult(
            vector=pb.Vector(id="a"), score=1.0)])

    async def health(self):
        return True, pb.HealthCheckResponse(status="healthy")


def _authenticator(enabled: bool) -> auth.Authenticator:
    config = auth.AuthConfig(enabled=enabled,
                             admin_key_hashes=frozenset({auth.sha256_hex(ADMIN_KEY)}))
    return auth.Authenticator(config, FakeCatalog())


async def _start(core: RecordingCore, authenticator: auth.Authenticator, registrar: bool):
    guarded = admission.GuardedCore(core, authenticator, quotas.QuotaEnforcer(core))
    if registrar:
        server = grpc.aio.server()
        target = router_server.EdgeRegistrar(server, router_server.public_edge(authenticator))
    else:
        server = grpc.aio.server(interceptors=[tracing.AioServerInterceptor(),
                                               auth.AuthInterceptor(authenticator),
                                               ProtocolErrorInterceptor()])
        target = server
    add_services(target, guarded)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        router_server.reflection.aio.ReflectionServicer(
            [pb.DESCRIPTOR.services_by_name["SearchService"].full_name]), target)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


SEARCH = pb.SearchVectorsRequest(dataset_id="docs", query_vector=[1.0, 0.0],
                                 options=pb.SearchOptions(top_k=1))
BEARER = (("authorization", f"Bearer {ADMIN_KEY}"),)


async def _raw_search(channel, payload: bytes, metadata=()):
    call = channel.unary_unary("/deeplake.v1.SearchService/SearchVectors",
                               request_serializer=lambda b: b,
                               response_deserializer=pb.SearchVectorsResponse.FromString)
    return await call(payload, metadata=metadata, timeout=5)


@pytest.mark.parametrize("registrar", [True, False], ids=["registrar", "interceptors"])
def test_public_edge_builds_each_method_handler_once_not_per_call(monkeypatch, registrar):
    """grpc.aio server interceptors that build a new method handler on every call cost a tenth
    of the router's CPU at 16 search threads; the edge builds each method's handler once."""
    built = []
    original = grpc.unary_unary_rpc_method_handler

    def counting(*args, **kwargs):
        built.append(1)
        return original(*args, **kwargs)

    async def go():
        core = RecordingCore()
        server, address = await _start(core, _authenticator(enabled=True), registrar)
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                stub = pb_grpc.SearchServiceStub(channel)
                await stub.SearchVectors(SEARCH, metadata=BEARER, timeout=5)  # first call
                monkeypatch.setattr(grpc, "unary_unary_rpc_method_handler", counting)
                for _ in range(20):
                    response = await stub.SearchVectors(SEARCH, metadata=BEARER, timeout=5)
                    assert response.results[0].vector.id == "a"
        finally:
            await server.stop(None)
    asyncio.run(go())
    assert built == []


def test_search_metrics_count_every_request_with_one_label_lookup_per_status(monkeypatch):
    lookups = []
    original = metrics.REQUESTS.labels

    def counting(*labels):
        lookups.append(labels)
        return original(*labels)

    before = metrics.REQUESTS.labels("grpc", "search_vectors", "OK")._value.get()

    async def go():
        server, address = await _start(RecordingCore(), _authenticator(enabled=False), False)
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                stub = pb_grpc.SearchServiceStub(channel)
                await stub.SearchVectors(SEARCH, timeout=5)  # the route's first request
                monkeypatch.setattr(metrics.REQUESTS, "labels", counting)
                for _ in range(20):
                    await stub.SearchVectors(SEARCH, timeout=5)
        finally:
            await server.stop(None)
    asyncio.run(go())
    assert lookups == []
    after = original("grpc", "search_vectors", "OK")._value.get()
    assert after - before == 21


def test_registered_edge_keeps_the_auth_matrix_decoding_errors_and_request_ids():
    async def go():
        core = RecordingCore()
        server, address = await _start(core, _authenticator(enabled=True), True)
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                stub = pb_grpc.SearchServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as missing:
                    await stub.SearchVectors(SEARCH, timeout=5)
                assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(grpc.aio.AioRpcError) as wrong:
                    await stub.SearchVectors(SEARCH, metadata=(("api-key", "nope"),),
                                             timeout=5)
                assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
                # Undecodable bytes: UNAUTHENTICATED without credentials, then
                # INVALID_ARGUMENT with them.
                with pytest.raises(grpc.aio.AioRpcError) as garbage_anonymous:
                    await _raw_search(channel, b"\xff\xff\xff")
                assert garbage_anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(grpc.aio.AioRpcError) as garbage:
                    await _raw_search(channel, b"\xff\xff\xff", BEARER)
                assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "malformed request message" in garbage.value.details()
                # Exempt without credentials: the health check and server reflection.
                health = await pb_grpc.HealthServiceStub(channel).Check(
                    pb.HealthCheckRequest(), timeout=5)
                assert health.status == "healthy"
                listing = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
                names = [s.name async for r in listing for s in r.list_services_response.service]
                assert "deeplake.v1.SearchService" in names
                response = await stub.SearchVectors(
                    SEARCH, metadata=BEARER + (("x-request-id", "req-42"),), timeout=5)
                assert response.results[0].vector.id == "a"
                await stub.SearchVectors(SEARCH, metadata=BEARER, timeout=5)
        finally:
            await server.stop(None)
        # The caller's request id reaches the core; a call without one runs with none.
        assert core.request_ids == ["req-42", ""]
    asyncio.run(go())


def test_router_settles_the_collector_after_start_up():
    threshold = gc.get_threshold()
    try:
        router_server.settle_garbage_collector()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == limits.router_gc_gen0_allocations_max
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_rest_requests_are_counted_with_one_label_lookup_per_route_and_status(monkeypatch):
    from aiohttp.test_utils import TestClient, TestServer
    from router.rest import make_app

    core = RecordingCore()
    guarded = admission.GuardedCore(core, _authenticator(enabled=False),
                                    quotas.QuotaEnforcer(core))
    original = metrics.REQUESTS.labels
    route = "/api/v1/datasets/{dataset_id}/search"
    lookups = []

    async def go():
        async with TestClient(TestServer(make_app(guarded))) as client:
            body = {"query_vector": [1.0, 0.0], "options": {"top_k": 1}}
            first = await client.post("/api/v1/datasets/docs/search", json=body)
            assert first.status == 200
            before = original("rest", route, "200")._value.get()
            monkeypatch.setattr(metrics.REQUESTS, "labels",
                                lambda *labels: lookups.append(labels) or original(*labels))
            for _ in range(10):
                response = await client.post("/api/v1/datasets/docs/search", json=body)
                assert (await response.json())["results"][0]["vector"]["id"] == "a"
            monkeypatch.undo()
            return before
    before = asyncio.run(go())
    assert lookups == []
    assert original("rest", route, "200")._value.get() - before == 10


def test_router_metrics_remember_children_and_forget_removed_ones(monkeypatch):
    from prometheus_client.metrics import MetricWrapperBase

    histogram = metrics.SHARD_CALL_SECONDS
    first = histogram.labels("edge-test")
    slow_lookups = []
    original = MetricWrapperBase.labels
    monkeypatch.setattr(MetricWrapperBase, "labels",
                        lambda self, *a, **k: slow_lookups.append(a) or original(self, *a, **k))
    for _ in range(10):
        histogram.labels("edge-test").observe(0.001)
    assert slow_lookups == []
    assert first is histogram.labels("edge-test")
    assert first._sum.get() == pytest.approx(0.01)
    histogram.remove("edge-test")
    again = histogram.labels("edge-test")
    assert again is not first and again._sum.get() == 0
    histogram.remove("edge-test")
