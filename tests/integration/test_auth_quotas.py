"""Authentication, tenant isolation and quotas on a cluster started with `tributary up
--api-key` (auth on) and an HS256 JWT secret.

The auth matrix walks every operation of the OpenAPI document that needs a credential
(router.openapi.build_document; a cross-check holds it equal to the non-exempt routes the app
registers) and every RPC of the deeplake.v1 service descriptors, so new routes and RPCs are
covered without touching this file. Each is called with: no credentials, a forged JWT, an
expired JWT (401 / UNAUTHENTICATED), a read-only key on a write (403 / PERMISSION_DENIED), and
tenant A's key naming tenant B (403). A's key naming B's dataset by name alone gets 404, exactly
as a dataset that does not exist: B's datasets cannot be inferred.
Health and metrics are exempt. The admin API is covered over REST (/admin/...) and gRPC
(tributary.admin.v1.AdminService). Quotas: 429 + Retry-After for max_batch_size,
max_results_per_query, max_dimension, max_vectors, max_requests_per_second (also split across
the cluster's two routers); statuses read_only / suspended; hostile bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import uuid

import grpc
import httpx
import jwt
import pytest
from google.protobuf import message_factory

from cluster import Cluster, wait_for
from proto import deeplake_service_pb2 as pb
from router import auth
from router.openapi import app_routes, build_document
from router.rest import make_app

pytestmark = pytest.mark.integration

ADMIN_KEY = "admin-" + uuid.uuid4().hex
JWT_SECRET = "jwt-secret-" + "x" * 32
DIM = 4
VEC = [0.1, 0.2, 0.3, 0.4]


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    # Two routers: rate limits are shared between them.
    c = Cluster(tmp_path_factory.mktemp("auth-cluster"), meta=1, nodes=1, routers=2,
                extra_args=["--api-key", ADMIN_KEY],
                env={"TRIBUTARY_JWT_SECRET": JWT_SECRET}).start()
    yield c
    c.stop()


def bearer(credential: str) -> dict:
    return {"Authorization": f"Bearer {credential}"}


ADMIN = bearer(ADMIN_KEY)


class Env:
    """Tenants alpha and beta, their keys and one dataset each."""

    def __init__(self, cluster: Cluster):
        self.c = cluster
        self.root = cluster.rest.removesuffix("/api/v1")
        self.http = httpx.Client(timeout=30)

    def admin(self, method, path, **kw):
        return self.http.request(method, self.root + path, headers=ADMIN, **kw)

    def tenant(self, tenant_id, quotas=None):
        r = self.admin("POST", "/admin/tenants", json={"tenant_id": tenant_id,
                                                       "quotas": quotas or {}})
        assert r.status_code == 201, r.text
        return r.json()["tenant"]

    def key(self, tenant_id, **body):
        r = self.admin("POST", "/admin/keys", json={"tenant_id": tenant_id, **body})
        assert r.status_code == 201, r.text
        return r.json()["key"]

    def call(self, method, path, credential=None, headers=None, **kw):
        h = dict(headers or {})
        if credential:
            h.update(bearer(credential))
        return self.http.request(method, self.c.rest + path, headers=h, **kw)


@pytest.fixture(scope="module")
def env(up):
    e = Env(up)
    e.tenant("alpha")
    e.tenant("beta")
    e.a_key = e.key("alpha")
    e.a_ro = e.key("alpha", access="read_only")
    e.b_key = e.key("beta")
    for key, name in ((e.a_key, "a-docs"), (e.b_key, "b-docs")):
        r = e.call("POST", "/datasets", key, json={"name": name, "dimensions": DIM})
        assert r.status_code == 201, r.text
        r = e.call("POST", f"/datasets/{name}/vectors", key,
                   json={"vectors": [{"id": "v1", "values": VEC, "content": "hello"}]})
        assert r.status_code == 201, r.text
    now = time.time()
    e.forged = jwt.encode({"tenant_id": "alpha", "exp": now + 600}, "not-the-secret" * 4,
                          algorithm="HS256")
    e.expired = jwt.encode({"tenant_id": "alpha", "exp": now - 3600}, JWT_SECRET,
                           algorithm="HS256")
    yield e
    e.http.close()


# ---- the REST matrix ----------------------------------------------------------------------------

class DummyCore:
    """make_app only stores the core; building the router needs no cluster."""


APP = make_app(DummyCore())


def documented_routes() -> list[tuple[str, str]]:
    """(method, path template) of every operation of the OpenAPI document that needs a
    credential: the ones without their own `security: []`."""
    document = build_document(APP)
    return sorted((method.upper(), path) for path, operations in document["paths"].items()
                  for method, operation in operations.items()
                  if operation.get("security", document["security"]))


ROUTES = documented_routes()

# Valid bodies, so the "A names B's dataset" case reaches the dataset lookup.
BODIES = {
    "/api/v1/datasets": {"name": "b-docs", "dimensions": DIM},
    "/api/v1/datasets/{dataset_id}": {"description": "x"},
    "/api/v1/datasets/{dataset_id}/vectors": {"vectors": [{"id": "x", "values": VEC}]},
    "/api/v1/datasets/{dataset_id}/vectors/batch": {"vectors": [{"id": "x", "values": VEC}]},
    "/api/v1/datasets/{dataset_id}/vectors/{vector_id}": {"content": "x"},
    "/api/v1/datasets/{dataset_id}/search": {"query_vector": VEC},
    "/api/v1/datasets/{dataset_id}/search/text": {"query_text": "hello"},
    "/api/v1/datasets/{dataset_id}/search/hybrid": {"query_vector": VEC, "query_text": "hello"},
    "/api/v1/search/multi-dataset": {"dataset_ids": ["b-docs"], "query_vector": VEC},
}


def fill(template: str, dataset: str = "b-docs") -> str:
    return (template.replace("{dataset_id}", dataset).replace("{vector_id}", "v1")
            .replace("{tenant_id}", "beta").replace("{key_id}", "nokey"))


def body_for(method: str, template: str):
    if (method, template) == ("DELETE", "/api/v1/datasets/{dataset_id}/vectors/batch"):
        return {"vector_ids": ["x"]}
    if method in ("POST", "PUT", "DELETE"):
        return BODIES.get(template)
    return None


def is_admin(template: str) -> bool:
    """The admin API: /admin/... and the cluster-wide /api/v1/admin/... (backups, restores)."""
    return template.startswith(("/admin/", "/api/v1/admin/"))


def is_write(method: str, template: str) -> bool:
    return is_admin(template) or not (
        method == "GET" or (method == "POST" and "/search" in template))


def test_the_matrix_covers_the_admin_api_and_every_data_route():
    default_auth = auth.Authenticator(auth.AuthConfig(enabled=True))
    registered = {(method, path) for method, path in app_routes(APP)
                  if not default_auth.is_exempt(path)}
    assert set(ROUTES) == registered
    templates = {t for _, t in ROUTES}
    assert {"/admin/keys", "/admin/tenants/{tenant_id}/quotas",
            "/api/v1/datasets/{dataset_id}/vectors"} <= templates
    assert len(ROUTES) >= 30


def test_rest_auth_matrix(env):
    failures = []
    url = env.root.__add__
    for method, template in ROUTES:
        path = fill(template)
        body = body_for(method, template)

        def status(credential=None, headers=None, target=path, json_body=body):
            r = env.http.request(method, url(target), json=json_body,
                                 headers={**(headers or {}),
                                          **(bearer(credential) if credential else {})})
            return r.status_code, r

        for case, credential in (("none", None), ("forged", env.forged),
                                 ("expired", env.expired), ("garbage key", "trb_nope")):
            code, r = status(credential)
            if code != 401 or r.json()["error"]["type"] != "Unauthenticated":
                failures.append((method, template, case, code))
            elif "WWW-Authenticate" not in r.headers:
                failures.append((method, template, case, "no WWW-Authenticate"))
        code, r = status(env.a_ro)
        if is_write(method, template):
            if code != 403 or r.json()["error"]["type"] != "PermissionDenied":
                failures.append((method, template, "read-only on write", code))
        elif code in (401, 403):
            failures.append((method, template, "read-only on read", code, r.text[:200]))
        if is_admin(template):
            code, _ = status(env.a_key)
            if code != 403:
                failures.append((method, template, "tenant key on admin", code))
            continue
        code, r = status(env.a_key, headers={"X-Tenant-Id": "beta"})
        if code != 403:
            failures.append((method, template, "A names tenant B", code))
        code, r = status(env.a_key, target=fill(template) + "?tenant_id=beta")
        if code != 403:
            failures.append((method, template, "A names tenant B (query)", code))
    assert not failures, failures


def test_a_tenant_cannot_infer_another_tenants_dataset(env):
    """A's key on B's dataset name is the 404 of a name that does not exist anywhere (on an
    admin route, the 403 that any name gets from a tenant key)."""
    failures = []
    for method, template in ROUTES:
        if "{dataset_id}" not in template or template.endswith("/search/stream"):
            continue
        body = body_for(method, template)
        answers = []
        for dataset in ("b-docs", f"nothing-{uuid.uuid4().hex[:6]}"):
            r = env.http.request(method, env.root + fill(template, dataset), json=body,
                                 headers=bearer(env.a_key))
            answers.append((r.status_code, r.json()["error"]["type"] if r.status_code >= 400
                            else None))
        expected = ((403, "PermissionDenied") if is_admin(template)
                    else (404, "NotFound"))
        if answers[0] != expected or answers[0] != answers[1]:
            failures.append((method, template, answers))
    r = env.call("POST", "/search/multi-dataset", env.a_key,
                 json={"dataset_ids": ["a-docs", "b-docs"], "query_vector": VEC})
    assert r.status_code == 404, r.text
    listing = env.call("GET", "/datasets", env.a_key).json()
    assert [d["name"] for d in listing["datasets"]] == ["a-docs"]
    stats = env.call("GET", "/stats", env.a_key).json()
    assert "datasets_per_tenant" not in stats and stats["tenant_id"] == "alpha"
    # B's data is untouched by everything A tried.
    r = env.call("GET", "/datasets/b-docs/vectors/v1", env.b_key)
    assert r.status_code == 200 and r.json()["vector"]["id"] == "v1"
    assert not failures, failures


# ---- the gRPC matrix ----------------------------------------------------------------------------

def rpcs():
    for service in pb.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            yield service, method


READ_RPCS = {"GetDataset", "ListDatasets", "GetDatasetStats", "GetVector", "ListVectors",
             "SearchVectors", "SearchByText", "HybridSearch", "MultiDatasetSearch",
             "ListVersions"}


async def _grpc_matrix(env) -> list:
    failures = []
    async with grpc.aio.insecure_channel(env.c.grpc_target) as channel:
        for service, method in rpcs():
            if service.name == "HealthService":
                continue
            request_cls = message_factory.GetMessageClass(method.input_type)
            response_cls = message_factory.GetMessageClass(method.output_type)
            path = f"/{service.full_name}/{method.name}"
            if method.client_streaming:
                stub = channel.stream_unary(path, request_serializer=request_cls.SerializeToString,
                                            response_deserializer=response_cls.FromString)
            else:
                stub = channel.unary_unary(path, request_serializer=request_cls.SerializeToString,
                                           response_deserializer=response_cls.FromString)

            async def code_of(metadata, **fields):
                request = request_cls(**{k: v for k, v in fields.items()
                                         if k in request_cls.DESCRIPTOR.fields_by_name})
                try:
                    if method.client_streaming:
                        await stub(iter([request]), metadata=metadata, timeout=20)
                    else:
                        await stub(request, metadata=metadata, timeout=20)
                    return grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    return exc.code()

            for case, metadata in (("none", ()), ("forged", (("authorization",
                                                              f"Bearer {env.forged}"),)),
                                   ("expired", (("api-key", env.expired),))):
                code = await code_of(metadata, dataset_id="b-docs")
                if code != grpc.StatusCode.UNAUTHENTICATED:
                    failures.append((method.name, case, code))
            code = await code_of((("api-key", env.a_ro),), dataset_id="a-docs")
            if method.name in READ_RPCS:
                if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    failures.append((method.name, "read-only on read", code))
            elif code != grpc.StatusCode.PERMISSION_DENIED:
                failures.append((method.name, "read-only on write", code))
            code = await code_of((("authorization", f"Bearer {env.a_key}"),),
                                 dataset_id="b-docs", tenant_id="beta",
                                 dataset_ids=["b-docs"], query_vector=VEC,
                                 vectors=[pb.Vector(id="x", values=VEC)])
            if code != grpc.StatusCode.PERMISSION_DENIED:
                failures.append((method.name, "A names tenant B", code))
        # Exempt: health needs no credentials.
        health = channel.unary_unary("/deeplake.v1.HealthService/Check",
                                     request_serializer=pb.HealthCheckRequest.SerializeToString,
                                     response_deserializer=pb.HealthCheckResponse.FromString)
        assert (await health(pb.HealthCheckRequest(), timeout=10)).status
        # Not inferable over gRPC either.
        get = channel.unary_unary("/deeplake.v1.DatasetService/GetDataset",
                                  request_serializer=pb.GetDatasetRequest.SerializeToString,
                                  response_deserializer=pb.GetDatasetResponse.FromString)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await get(pb.GetDatasetRequest(dataset_id="b-docs"),
                      metadata=(("api-key", env.a_key),), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        answer = await get(pb.GetDatasetRequest(dataset_id="a-docs"),
                           metadata=(("api-key", env.a_key),), timeout=10)
        assert answer.dataset.tenant_id == "alpha"
    return failures


def test_grpc_auth_matrix(env):
    assert not asyncio.run(_grpc_matrix(env))


# ---- credentials and keys -----------------------------------------------------------------------

def test_jwts_carry_tenant_and_per_dataset_access(env):
    def token(**claims):
        return jwt.encode({"exp": time.time() + 600, **claims}, JWT_SECRET, algorithm="HS256")

    reader = token(tenant_id="alpha", datasets={"a-docs": "read_only"})
    assert env.call("GET", "/datasets/a-docs", reader).status_code == 200
    r = env.call("POST", "/datasets/a-docs/vectors", reader,
                 json={"vectors": [{"id": "j1", "values": VEC}]})
    assert r.status_code == 403
    r = env.call("GET", "/datasets/a-docs", token(tenant_id="beta"))
    assert r.status_code == 404  # beta has no a-docs
    assert env.call("GET", "/datasets", token(tenant_id="alpha"),
                    headers={"X-Tenant-Id": "beta"}).status_code == 403
    admin_jwt = token(role="admin")
    assert env.call("GET", "/datasets", admin_jwt,
                    headers={"X-Tenant-Id": "beta"}).json()["datasets"][0]["name"] == "b-docs"


def test_keys_are_listed_without_secrets_and_revocation_is_immediate(env):
    from tributary import cli

    out = io.StringIO()
    base = ["--url", env.root, "--api-key", ADMIN_KEY]
    with contextlib.redirect_stdout(out):
        cli.main(["admin", "keys", "create", "--tenant", "alpha", "--read-only",
                  "--datasets", "a-docs"] + base)
    import json
    created = json.loads(out.getvalue())
    key, key_id = created["key"], created["key_id"]
    assert key.startswith("trb_") and created["access"] == "read_only"
    assert env.call("GET", "/datasets/a-docs", key).status_code == 200
    assert env.call("GET", "/datasets/other", key).status_code == 403  # not in its allow-list
    listed = env.admin("GET", "/admin/keys", params={"tenant_id": "alpha"}).json()["keys"]
    mine = [k for k in listed if k["key_id"] == key_id]
    assert mine and key not in str(listed) and "key_hash" not in mine[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli.main(["admin", "keys", "revoke", key_id] + base)
    assert json.loads(out.getvalue())["revoked"] is True
    assert env.call("GET", "/datasets/a-docs", key).status_code == 401


# ---- quotas and statuses ------------------------------------------------------------------------

def test_quotas_answer_429_with_retry_after(env):
    env.tenant("gamma", {"max_batch_size": 2, "max_results_per_query": 3, "max_dimension": 8,
                         "max_vectors": 5})
    key = env.key("gamma")

    def exhausted(r, needle):
        assert r.status_code == 429, r.text
        assert int(r.headers["Retry-After"]) >= 1
        error = r.json()["error"]
        assert error["type"] == "ResourceExhausted" and error["retriable"] is True
        assert needle in error["message"], error["message"]

    exhausted(env.call("POST", "/datasets", key, json={"name": "wide", "dimensions": 16}),
              "Dimension quota exceeded: 16 / 8")
    assert env.call("POST", "/datasets", key,
                    json={"name": "g", "dimensions": DIM}).status_code == 201

    def insert(ids):
        return env.call("POST", "/datasets/g/vectors", key, json={
            "vectors": [{"id": i, "values": VEC} for i in ids]})

    exhausted(insert(["a", "b", "c"]), "Batch size quota exceeded: 3 / 2")
    assert insert(["a", "b"]).status_code == 201
    assert insert(["c", "d"]).status_code == 201
    exhausted(insert(["e", "f"]), "Vector quota exceeded: 4 / 5")
    assert insert(["e"]).status_code == 201
    exhausted(env.call("POST", "/datasets/g/search", key,
                       json={"query_vector": VEC, "options": {"top_k": 4}}),
              "Result quota exceeded: top_k 4 / 3")
    assert env.call("POST", "/datasets/g/search", key,
                    json={"query_vector": VEC, "options": {"top_k": 3}}).status_code == 200
    stats = env.admin("GET", "/admin/tenants/gamma/stats").json()
    assert stats["vector_count"] == 5 and stats["quota_utilization"]["max_vectors"] == 1.0
    assert stats["this_router"]["throttled"] >= 4

    async def grpc_batch():
        async with grpc.aio.insecure_channel(env.c.grpc_target) as channel:
            stub = channel.unary_unary(
                "/deeplake.v1.VectorService/InsertVectors",
                request_serializer=pb.InsertVectorsRequest.SerializeToString,
                response_deserializer=pb.InsertVectorsResponse.FromString)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub(pb.InsertVectorsRequest(dataset_id="g", vectors=[
                    pb.Vector(id=f"z{i}", values=VEC) for i in range(3)]),
                    metadata=(("api-key", key),), timeout=10)
            return info.value
    error = asyncio.run(grpc_batch())
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(error.trailing_metadata())["retry-after"] == "1"


def test_rate_limit_answers_429_with_retry_after(env):
    env.tenant("delta", {"max_requests_per_second": 2})
    key = env.key("delta")
    answers = [env.call("GET", "/datasets", key) for _ in range(8)]
    limited = [r for r in answers if r.status_code == 429]
    assert limited and all(r.status_code in (200, 429) for r in answers)
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert "Rate limit exceeded: 2 requests/second" in limited[0].json()["error"]["message"]
    time.sleep(1.1)
    assert env.call("GET", "/datasets", key).status_code == 200


def test_rate_limit_holds_across_routers(env):
    """Each of the N live routers admits rate/N: together at most rate*T + max(N, rate)."""
    rate = 4
    env.tenant("eta", {"max_requests_per_second": rate})
    key = env.key("eta")
    wait_for(lambda: env.admin("GET", "/admin/tenants/eta/stats").json()["live_routers"] == 2,
             20, 0.5, "both routers counted by the meta leader")
    rests = [f"http://127.0.0.1:{env.c.http_port + i}/api/v1" for i in range(2)]
    time.sleep(1.0)  # full buckets
    started = time.monotonic()
    codes = [env.http.get(rests[i % 2] + "/datasets", headers=bearer(key)).status_code
             for i in range(16)]
    elapsed = time.monotonic() - started
    assert set(codes) <= {200, 429} and 429 in codes
    assert codes.count(200) <= rate * elapsed + max(2, rate), (codes, elapsed)
    # One router alone gives only its share (2/s, bursts of 2).
    time.sleep(1.0)
    started = time.monotonic()
    codes = [env.http.get(rests[1] + "/datasets", headers=bearer(key)).status_code
             for _ in range(8)]
    assert codes.count(200) <= 2 * (time.monotonic() - started) + 2, codes


def test_statuses_read_only_and_suspended(env):
    env.tenant("epsilon")
    key = env.key("epsilon")
    assert env.call("POST", "/datasets", key, json={"name": "e", "dimensions": DIM}
                    ).status_code == 201

    def status(value):
        r = env.admin("PUT", "/admin/tenants/epsilon/status", json={"status": value})
        assert r.status_code == 200 and r.json()["tenant"]["status"] == value

    status("read_only")
    r = env.call("POST", "/datasets/e/vectors", key, json={"vectors": [{"id": "a",
                                                                        "values": VEC}]})
    assert r.status_code == 403 and "read-only" in r.json()["error"]["message"]
    assert env.call("GET", "/datasets/e", key).status_code == 200
    status("suspended")
    assert env.call("GET", "/datasets/e", key).status_code == 403
    status("active")
    assert env.call("GET", "/datasets/e", key).status_code == 200
    r = env.admin("PUT", "/admin/tenants/epsilon/quotas", json={"max_vectors": 0})
    assert r.json()["tenant"]["quotas"] == {"max_vectors": 0}
    r = env.call("POST", "/datasets/e/vectors", key, json={"vectors": [{"id": "a",
                                                                        "values": VEC}]})
    assert r.status_code == 429
    r = env.admin("DELETE", "/admin/tenants/epsilon")
    assert r.status_code == 200 and r.json()["datasets_deleted"] == 1
    assert env.call("GET", "/datasets/e", key).status_code == 401  # its keys went with it
    assert env.admin("GET", "/admin/tenants/epsilon").status_code == 404


def test_hostile_bodies_are_400_before_anything_else(env):
    r = env.http.post(env.c.rest + "/datasets/a-docs/search", content=b"[" * 50_000,
                      headers=bearer(env.a_key))
    assert r.status_code == 400 and "json_depth_max" in r.json()["error"]["message"]
    r = env.call("POST", "/datasets", env.a_key,
                 json={"name": "long", "dimensions": DIM, "description": "d" * 70_000})
    assert r.status_code == 400 and "description" in r.json()["error"]["message"]


@pytest.mark.parametrize("path,body,needle", [
    ("/admin/keys", {"tenant_id": "alpha", "description": {}}, "description must be a string"),
    ("/admin/keys", {"tenant_id": "alpha", "datasets": "a-docs"}, "datasets must be a list"),
    ("/admin/keys", {"tenant_id": ["alpha"]}, "tenant_id must be a string"),
    ("/admin/keys", {"tenant_id": "alpha", "role": 1}, "role must be a string"),
    ("/admin/keys", {"tenant_id": "alpha", "access": False}, "access must be a string"),
    ("/admin/tenants", {"tenant_id": "zeta", "name": 7}, "name must be a string"),
    ("/admin/tenants", {"tenant_id": "zeta", "status": {}}, "status must be a string"),
])
def test_admin_bodies_of_the_wrong_type_are_400_and_create_nothing(env, path, body, needle):
    keys_before = env.admin("GET", "/admin/keys").json()["keys"]
    r = env.admin("POST", path, json=body)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]["message"]
    assert env.admin("GET", "/admin/keys").json()["keys"] == keys_before
    assert env.admin("GET", "/admin/tenants/zeta").status_code == 404


def test_python_client_sends_its_credential(env):
    from tributary import errors
    from tributary.client import TributaryClient

    for transport, url in (("rest", env.c.rest), ("grpc", env.c.grpc_target)):
        with TributaryClient(url, transport=transport, api_key=env.a_key) as client:
            assert client.get_dataset("a-docs")["dataset"]["tenant_id"] == "alpha"
        with TributaryClient(url, transport=transport) as client:
            with pytest.raises(errors.Unauthenticated):
                client.get_dataset("a-docs")
        with TributaryClient(url, transport=transport, api_key=env.a_ro) as client:
            with pytest.raises(errors.PermissionDenied):
                client.delete_dataset("a-docs")


async def _grpc_admin(env) -> list:
    from proto import admin_pb2
    failures = []
    service = admin_pb2.DESCRIPTOR.services_by_name["AdminService"]
    admin_md = (("authorization", f"Bearer {ADMIN_KEY}"),)
    async with grpc.aio.insecure_channel(env.c.grpc_target) as channel:
        def stub(name):
            method = service.methods_by_name[name]
            return channel.unary_unary(
                f"/{service.full_name}/{name}",
                request_serializer=message_factory.GetMessageClass(
                    method.input_type).SerializeToString,
                response_deserializer=message_factory.GetMessageClass(
                    method.output_type).FromString)

        for method in service.methods:
            request = message_factory.GetMessageClass(method.input_type)()
            for case, metadata, expected in (
                    ("none", (), grpc.StatusCode.UNAUTHENTICATED),
                    ("expired", (("api-key", env.expired),), grpc.StatusCode.UNAUTHENTICATED),
                    ("tenant key", (("api-key", env.a_key),), grpc.StatusCode.PERMISSION_DENIED),
                    ("read-only", (("api-key", env.a_ro),), grpc.StatusCode.PERMISSION_DENIED)):
                try:
                    await stub(method.name)(request, metadata=metadata, timeout=10)
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
                if code != expected:
                    failures.append((method.name, case, code))
        created = await stub("CreateTenant")(admin_pb2.CreateTenantRequest(
            tenant_id="zeta", quotas=admin_pb2.TenantQuotas(max_batch_size=1)),
            metadata=admin_md, timeout=10)
        assert created.tenant.quotas.max_batch_size == 1
        assert not created.tenant.quotas.HasField("max_vectors")
        key = await stub("CreateApiKey")(admin_pb2.CreateApiKeyRequest(tenant_id="zeta"),
                                         metadata=admin_md, timeout=10)
        assert key.key.startswith("trb_") and key.api_key.tenant_id == "zeta"
        updated = await stub("UpdateTenantQuotas")(admin_pb2.UpdateTenantQuotasRequest(
            tenant_id="zeta", quotas=admin_pb2.TenantQuotas(max_vectors=7),
            clear=["max_batch_size"]), metadata=admin_md, timeout=10)
        assert updated.tenant.quotas.max_vectors == 7
        assert not updated.tenant.quotas.HasField("max_batch_size")
        keys = await stub("ListApiKeys")(admin_pb2.ListApiKeysRequest(tenant_id="zeta"),
                                         metadata=admin_md, timeout=10)
        assert [k.key_id for k in keys.keys] == [key.api_key.key_id]
        await stub("RevokeApiKey")(admin_pb2.RevokeApiKeyRequest(key_id=key.api_key.key_id),
                                   metadata=admin_md, timeout=10)
    assert env.call("GET", "/datasets", key.key).status_code == 401
    return failures


def test_grpc_admin_service(env):
    assert not asyncio.run(_grpc_admin(env))
