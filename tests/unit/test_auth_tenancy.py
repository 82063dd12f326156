"""Tenants, API keys and quotas without a cluster: consensus/tenancy.py (the state machine part),
router/auth.py (credentials, scopes, the core wrapper), router/quotas.py and
router/input_guard.py."""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from consensus import commands as c
from consensus import tenancy
from consensus.state import MetaState, apply, from_doc, to_doc
from proto import deeplake_service_pb2 as pb
from router import admission, auth, input_guard, operations, quotas
from tributary import errors, limits

HASH = "ab" * 32
SECRET = b"s" * 40


def run(state, *cmds):
    result = None
    for cmd in cmds:
        state, result = apply(state, cmd)
    return state, result


def err(result):
    return result.get("error", {}).get("type")


@pytest.fixture
def base() -> MetaState:
    state, _ = run(MetaState(), c.RegisterNode("n1", "h:1", 1),
                   c.ProvisionTenant("acme", "Acme", {"max_vectors": 10}, "active", 2))
    return state


# ---- the state machine ------------------------------------------------------------------------

def test_provision_then_duplicate_and_bad_quotas(base):
    record = base.tenants["acme"]
    assert (record.name, record.status, record.quotas) == ("Acme", "active", {"max_vectors": 10})
    _, result = apply(base, c.ProvisionTenant("acme", "", {}, "active", 3))
    assert err(result) == "AlreadyExists"
    for quotas in ({"max_vectors": -1}, {"bogus": 1}, {"max_batch_size": 1.5},
                   {"max_vectors": float("nan")}, {"max_vectors": True}, ["max_vectors"]):
        _, result = apply(base, c.ProvisionTenant("x", "", quotas, "active", 3))
        assert err(result) == "InvalidArgument", quotas
    _, result = apply(base, c.ProvisionTenant("x", "", {}, "sleeping", 3))
    assert err(result) == "InvalidArgument"


def test_quotas_merge_and_null_removes_a_limit(base):
    state, result = apply(base, c.SetTenantQuotas("acme", {"max_batch_size": 5.0,
                                                           "max_requests_per_second": 0.5}, 3))
    assert state.tenants["acme"].quotas == {"max_vectors": 10, "max_batch_size": 5,
                                            "max_requests_per_second": 0.5}
    state, _ = apply(state, c.SetTenantQuotas("acme", {"max_vectors": None}, 4))
    assert "max_vectors" not in state.tenants["acme"].quotas
    _, result = apply(state, c.SetTenantQuotas("nobody", {}, 5))
    assert err(result) == "NotFound"


def test_status_blocks_create_dataset_in_the_state_machine(base):
    state, _ = apply(base, c.SetTenantStatus("acme", "read_only", 3))
    create = c.CreateDataset("u1", "acme", "docs", "", 4, "cosine", "hnsw", {}, ("n1",), 4)
    after, result = apply(state, create)
    assert err(result) == "PermissionDenied" and after is state
    state, _ = apply(state, c.SetTenantStatus("acme", "active", 5))
    state, result = apply(state, create)
    assert result == {"uuid": "u1"}


def test_delete_tenant_needs_no_datasets_and_revokes_its_keys(base):
    state, _ = run(base, c.CreateDataset("u1", "acme", "docs", "", 4, "cosine", "hnsw", {},
                                         ("n1",), 3),
                   c.CreateApiKey("k1", HASH, "acme", "tenant", "read_only", (), "", 4),
                   c.CreateApiKey("k2", "cd" * 32, "", "admin", "read_write", (), "", 5))
    _, result = apply(state, c.DeleteTenant("acme", 6))
    assert err(result) == "InvalidArgument"
    state, _ = apply(state, c.DeleteDataset("acme", "docs", 7))
    state, result = apply(state, c.DeleteTenant("acme", 8))
    assert result["revoked_keys"] == ["k1"]
    assert "acme" not in state.tenants and set(state.api_keys) == {"k2"}


def test_api_keys_are_validated_and_revocable(base):
    good = dict(key_id="k1", key_hash=HASH, tenant_id="acme", role="tenant",
                access="read_write", datasets=("docs",), description="d", at_ms=3)
    for change, kind in (({"tenant_id": "nobody"}, "NotFound"),
                         ({"key_hash": "not-a-hash"}, "InvalidArgument"),
                         ({"role": "root"}, "InvalidArgument"),
                         ({"access": "all"}, "InvalidArgument"),
                         ({"role": "admin"}, "InvalidArgument"),  # admin keys name no tenant
                         ({"datasets": ("",)}, "InvalidArgument")):
        _, result = apply(base, c.CreateApiKey(**{**good, **change}))
        assert err(result) == kind, change
    state, result = apply(base, c.CreateApiKey(**good))
    assert result == {"key_id": "k1"}
    _, result = apply(state, c.CreateApiKey(**{**good, "key_id": "k2"}))
    assert err(result) == "AlreadyExists"  # same hash
    state, result = apply(state, c.RevokeApiKey("k1", 4))
    assert state.api_keys == {}
    _, result = apply(state, c.RevokeApiKey("k1", 5))
    assert err(result) == "NotFound"


def test_state_documents_round_trip_tenants_and_keys(base):
    state, _ = apply(base, c.CreateApiKey("k1", HASH, "acme", "tenant", "read_only",
                                          ("a", "b"), "", 3))
    again = from_doc(json.loads(json.dumps(to_doc(state))))
    assert again == state
    # A document written before tenants had quotas and before api_keys existed still loads.
    old = to_doc(state)
    del old["api_keys"]
    old["tenants"]["acme"] = {"tenant_id": "acme", "created_at_ms": 2}
    loaded = from_doc(old)
    assert loaded.api_keys == {} and loaded.tenants["acme"].status == "active"


# ---- credentials ------------------------------------------------------------------------------

class FakeCatalog:
    def __init__(self, state: MetaState):
        self.state = state
        self.refreshes = 0

    async def refresh(self, linearizable: bool = False):
        self.refreshes += 1
        return self.state


def authenticator(state=None, **config) -> auth.Authenticator:
    config.setdefault("enabled", True)
    return auth.Authenticator(auth.AuthConfig(**config), FakeCatalog(state or MetaState()))


def token(claims: dict, key=SECRET, alg="HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


def authenticate(a: auth.Authenticator, credential):
    return asyncio.run(a.authenticate(credential))


def test_hs256_jwt_gives_a_tenant_principal_with_dataset_access():
    a = authenticator(hs256_secret=SECRET)
    p = authenticate(a, token({"tenant_id": "acme", "exp": time.time() + 60,
                               "datasets": {"docs": "read_write", "logs": "read_only"}}))
    assert p.kind == "tenant" and p.tenant_id == "acme" and p.can_write
    assert p.datasets == {"docs": True, "logs": False}
    with pytest.raises(errors.PermissionDenied):
        auth.check_dataset(p, "logs", write=True)
    with pytest.raises(errors.PermissionDenied):
        auth.check_dataset(p, "secret", write=False)


@pytest.mark.parametrize("case", ["forged", "expired", "no exp", "alg none", "no tenant",
                                  "rs256 not configured", "garbage"])
def test_bad_jwts_are_unauthenticated(case):
    a = authenticator(hs256_secret=SECRET)
    claims = {"tenant_id": "acme", "exp": time.time() + 60}
    credential = {
        "forged": lambda: token(claims, key=b"x" * 40),
        "expired": lambda: token({**claims, "exp": time.time() - 3600}),
        "no exp": lambda: token({"tenant_id": "acme"}),
        "alg none": lambda: jwt.encode(claims, None, algorithm="none"),
        "no tenant": lambda: token({"exp": time.time() + 60}),
        "rs256 not configured": lambda: token(claims, key=_rsa()[0], alg="RS256"),
        "garbage": lambda: "eyJhbGciOi.not.ajwt",
    }[case]()
    with pytest.raises(errors.Unauthenticated):
        authenticate(a, credential)


def _rsa():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode()


def test_rs256_jwt_verifies_with_the_public_key_only():
    private, public = _rsa()
    a = authenticator(rs256_public_key=public)
    claims = {"tenant_id": "acme", "exp": time.time() + 60, "access": "read_only"}
    p = authenticate(a, token(claims, key=private, alg="RS256"))
    assert p.tenant_id == "acme" and not p.can_write
    # HS256 signed with the public key text (the classic confusion) is refused.
    with pytest.raises(errors.Unauthenticated):
        authenticate(a, token(claims, key=b"k" * 40, alg="HS256"))


def test_api_keys_resolve_by_hash_and_unknown_keys_refresh_at_most_once_per_interval():
    key = "trb_0123456789ab_" + "A" * 43
    state, _ = run(MetaState(), c.ProvisionTenant("acme", "", {}, "active", 1),
                   c.CreateApiKey("0123456789ab", auth.sha256_hex(key), "acme", "tenant",
                                  "read_only", ("docs",), "", 2))
    a = authenticator(state, admin_key_hashes=frozenset({auth.sha256_hex("bootstrap-admin-1")}))
    p = authenticate(a, key)
    assert (p.kind, p.tenant_id, p.can_write, p.datasets) == ("tenant", "acme", False,
                                                               {"docs": False})
    assert authenticate(a, "bootstrap-admin-1").kind == "admin"
    other = "trb_0123456789ac_" + "B" * 43
    for _ in range(3):
        with pytest.raises(errors.Unauthenticated):
            authenticate(a, other)
    assert a.catalog.refreshes == 1
    with pytest.raises(errors.Unauthenticated):
        authenticate(a, None)
    assert authenticate(authenticator(enabled=False), None) is auth.OPEN


def test_bearer_parsing():
    assert auth._bearer("Bearer abc", None) == "abc"
    assert auth._bearer("bearer  abc ", "zzz") == "abc"
    assert auth._bearer(None, "key") == "key"
    with pytest.raises(errors.Unauthenticated):
        auth._bearer("Basic dXNlcjpwYXNz", None)


def test_router_refuses_to_start_exposed_without_credentials(monkeypatch):
    monkeypatch.delenv("TRIBUTARY_ADMIN_KEY", raising=False)
    monkeypatch.delenv("TRIBUTARY_JWT_SECRET", raising=False)
    args = argparse.Namespace(auth="auto", admin_key_sha256=None, jwt_secret_file=None,
                              jwt_public_key_file=None, jwt_audience=None, jwt_issuer=None,
                              auth_exempt="")
    assert not auth.config_from_args(args, ["127.0.0.1:8000", "localhost:50051"]).enabled
    with pytest.raises(SystemExit):
        auth.config_from_args(args, ["0.0.0.0:8000", "127.0.0.1:50051"])
    args.admin_key_sha256 = HASH
    assert auth.config_from_args(args, ["0.0.0.0:8000"]).enabled
    args.admin_key_sha256, args.auth = None, "off"
    with pytest.raises(SystemExit):
        auth.config_from_args(args, ["10.1.2.3:8000"])


def test_up_passes_only_the_hash_and_refuses_short_keys_and_exposed_hosts(monkeypatch):
    from tributary import up
    for name in ("TRIBUTARY_JWT_SECRET", "TRIBUTARY_ADMIN_KEY", "TRIBUTARY_ADMIN_KEY_SHA256",
                 "TRIBUTARY_JWT_SECRET_FILE", "TRIBUTARY_JWT_PUBLIC_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    key = "k" * 20
    flags = up._router_auth_args(argparse.Namespace(api_key=key, host="127.0.0.1"))
    assert flags == ["--auth", "on", "--admin-key-sha256", auth.sha256_hex(key)]
    assert up._router_auth_args(argparse.Namespace(api_key=None, host="127.0.0.1")) == []
    with pytest.raises(SystemExit):
        up._router_auth_args(argparse.Namespace(api_key="short", host="127.0.0.1"))
    with pytest.raises(SystemExit):
        up._router_auth_args(argparse.Namespace(api_key=None, host="0.0.0.0"))


# ---- the core wrapper, statuses and quotas ----------------------------------------------------

class FakeCore:
    def __init__(self, state: MetaState):
        self.catalog = FakeCatalog(state)
        self.calls = []

    async def get_dataset(self, request):
        self.calls.append(("get_dataset", request.tenant_id))
        return pb.GetDatasetResponse()

    async def insert_vectors(self, request, idempotency_key=""):
        self.calls.append(("insert_vectors", request.tenant_id))
        return pb.InsertVectorsResponse(inserted_count=len(request.vectors))

    async def search_vectors(self, request):
        self.calls.append(("search_vectors", request.tenant_id))
        return pb.SearchVectorsResponse()

    async def list_datasets(self, request):
        return pb.ListDatasetsResponse()

    async def get_dataset_stats(self, request):
        return pb.GetDatasetStatsResponse(vector_count=0)

    async def brand_new_operation(self, request):
        return "done"

    def to_dataset_pb(self, record):
        return pb.Dataset(name=record.name)


def guarded(state: MetaState):
    core = FakeCore(state)
    return admission.GuardedCore(core, authenticator(state), quotas.QuotaEnforcer(core)), core


def call(principal, coroutine_fn, *args):
    async def go():
        token = auth._PRINCIPAL.set(principal)
        try:
            return await coroutine_fn(*args)
        finally:
            auth._PRINCIPAL.reset(token)
    return asyncio.run(go())


TENANT_RW = auth.Principal("tenant", tenant_id="acme")
TENANT_RO = auth.Principal("tenant", tenant_id="acme", can_write=False)


def vectors(n):
    return [pb.Vector(id=f"v{i}", values=[1.0, 2.0]) for i in range(n)]


def test_wrapper_fills_the_tenant_and_refuses_another_tenant_or_a_read_only_write(base):
    g, core = guarded(base)
    call(TENANT_RW, g.get_dataset, pb.GetDatasetRequest(dataset_id="docs"))
    assert core.calls[-1] == ("get_dataset", "acme")
    with pytest.raises(errors.PermissionDenied):
        call(TENANT_RW, g.get_dataset, pb.GetDatasetRequest(dataset_id="docs",
                                                            tenant_id="globex"))
    with pytest.raises(errors.PermissionDenied):
        call(TENANT_RO, g.insert_vectors, pb.InsertVectorsRequest(dataset_id="docs",
                                                                  vectors=vectors(1)))
    with pytest.raises(errors.PermissionDenied):  # a vector naming another tenant
        call(TENANT_RW, g.insert_vectors, pb.InsertVectorsRequest(
            dataset_id="docs", vectors=[pb.Vector(id="x", values=[1, 2], tenant_id="globex")]))
    with pytest.raises(errors.PermissionDenied):  # unknown core operations are admin-only
        call(TENANT_RW, g.brand_new_operation, pb.GetDatasetRequest())
    assert call(auth.Principal("admin"), g.brand_new_operation, pb.GetDatasetRequest()) == "done"
    with pytest.raises(errors.Unauthenticated):  # auth on, no principal bound
        asyncio.run(g.get_dataset(pb.GetDatasetRequest(dataset_id="docs")))


def test_statuses_suspended_refuses_all_read_only_refuses_writes(base):
    state, _ = apply(base, c.SetTenantStatus("acme", "read_only", 3))
    g, _ = guarded(state)
    call(TENANT_RW, g.get_dataset, pb.GetDatasetRequest(dataset_id="docs"))
    with pytest.raises(errors.PermissionDenied, match="read-only"):
        call(TENANT_RW, g.insert_vectors, pb.InsertVectorsRequest(dataset_id="docs",
                                                                  vectors=vectors(1)))
    state, _ = apply(state, c.SetTenantStatus("acme", "suspended", 4))
    g, _ = guarded(state)
    with pytest.raises(errors.PermissionDenied, match="suspended"):
        call(TENANT_RW, g.get_dataset, pb.GetDatasetRequest(dataset_id="docs"))


def test_size_quotas_are_429_with_vecstore_messages(base):
    state, _ = apply(base, c.SetTenantQuotas("acme", {"max_batch_size": 2,
                                                      "max_results_per_query": 5}, 3))
    g, _ = guarded(state)
    with pytest.raises(errors.ResourceExhausted, match=r"Batch size quota exceeded: 3 / 2"):
        call(TENANT_RW, g.insert_vectors, pb.InsertVectorsRequest(dataset_id="d",
                                                                  vectors=vectors(3)))
    with pytest.raises(errors.ResourceExhausted, match=r"top_k 6 / 5"):
        call(TENANT_RW, g.search_vectors, pb.SearchVectorsRequest(
            dataset_id="d", options=pb.SearchOptions(top_k=6)))
    # max_vectors=10 (from the fixture): 8 fit, then 3 more do not.
    call(TENANT_RW, g.insert_vectors, pb.InsertVectorsRequest(dataset_id="d",
                                                              vectors=vectors(2)))
    assert g.quotas.usage_of("acme").vectors == 2
    g.quotas.usage_of("acme").vectors = 9
    with pytest.raises(errors.ResourceExhausted, match=r"Vector quota exceeded: 9 / 10"):
        call(TENANT_RW, g.insert_vectors, pb.InsertVectorsRequest(dataset_id="d",
                                                                  vectors=vectors(2)))
    assert g.quotas.usage_of("acme").inflight_vectors == 0


def test_rate_limit_token_bucket_and_router_share(base):
    state, _ = apply(base, c.SetTenantQuotas("acme", {"max_requests_per_second": 4}, 3))
    g, _ = guarded(state)

    class Two:
        count = 2
    g.quotas.router_count = Two()  # each router gets 2/s, capacity 2
    call(TENANT_RW, g.get_dataset, pb.GetDatasetRequest(dataset_id="d"))
    call(TENANT_RW, g.get_dataset, pb.GetDatasetRequest(dataset_id="d"))
    with pytest.raises(errors.ResourceExhausted, match="Rate limit exceeded: 4 requests/second") \
            as info:
        call(TENANT_RW, g.get_dataset, pb.GetDatasetRequest(dataset_id="d"))
    assert info.value.retry_after_s == 1
    bucket = quotas.TokenBucket()
    assert bucket.take(0.1, 1.0, 0.0) == 0.0
    assert bucket.take(0.1, 1.0, 1.0) == pytest.approx(9.0)


def test_allow_list_narrows_the_listing(base):
    state, _ = run(base, *(c.CreateDataset(f"u{n}", "acme", n, "", 4, "cosine", "hnsw", {},
                                           ("n1",), 3) for n in ("a", "b", "c")))
    g, _ = guarded(state)
    principal = auth.Principal("tenant", tenant_id="acme", datasets={"a": True, "c": True})
    listing = call(principal, g.list_datasets, pb.ListDatasetsRequest())
    assert [d.name for d in listing.datasets] == ["a", "c"] and listing.total_count == 2


def test_rest_route_scopes():
    assert auth.is_read_route("POST", "/api/v1/datasets/{dataset_id}/search/hybrid")
    assert auth.is_read_route("POST", "/api/v1/search/multi-dataset")
    assert not auth.is_read_route("POST", "/api/v1/datasets/{dataset_id}/compact")
    assert not auth.is_read_route("DELETE", "/api/v1/datasets/{dataset_id}")
    with pytest.raises(errors.PermissionDenied):
        auth.grpc_method_check(TENANT_RO, "/deeplake.v1.VectorService/BulkInsertVectors")
    auth.grpc_method_check(TENANT_RO, "/deeplake.v1.SearchService/SearchVectors",
                           pb.SearchVectorsRequest(dataset_id="d"))


# ---- hostile input ----------------------------------------------------------------------------

@pytest.mark.parametrize("text,depth", [
    (b"", 0), (b"{}", 1), (b'{"a": [1, 2, {"b": []}]}', 4),
    (b'{"a": "[[[[[[[[[[[[[["}', 1), (b'{"a": "\\"[[[[[[["}', 1), (b"[" * 5000, 5000),
])
def test_json_depth_ignores_brackets_in_strings(text, depth):
    assert input_guard.json_depth(text) == depth


def test_deep_json_and_nan_options_are_invalid():
    with pytest.raises(errors.InvalidArgument, match="json_depth_max"):
        input_guard.check_json_depth(b"[" * (limits.json_depth_max + 1))
    with pytest.raises(errors.InvalidArgument, match="NaN or Inf"):
        input_guard.check_request(operations.SEARCH_VECTORS, pb.SearchVectorsRequest(
            options=pb.SearchOptions(min_score=float("nan"))))
    with pytest.raises(errors.InvalidArgument, match="description"):
        input_guard.check_request(operations.CREATE_DATASET, pb.CreateDatasetRequest(
            description="x" * (limits.description_bytes_max + 1)))
    with pytest.raises(errors.InvalidArgument, match="document_id"):
        input_guard.check_request(operations.INSERT_VECTORS, pb.InsertVectorsRequest(vectors=[
            pb.Vector(id="a", document_id="d" * (limits.vector_id_bytes_max + 1))]))


def test_error_classes_for_auth_map_to_grpc_codes():
    assert errors.Unauthenticated.grpc_code is grpc.StatusCode.UNAUTHENTICATED
    assert tenancy.QUOTA_NAMES[0] == "max_vectors"


class SlowSearchCore(FakeCore):
    def __init__(self, state):
        super().__init__(state)
        self.gate = None

    async def search_vectors(self, request):
        await self.gate.wait()
        return pb.SearchVectorsResponse()


def test_concurrent_queries_and_storage_quota(base):
    state, _ = apply(base, c.SetTenantQuotas("acme", {"max_concurrent_queries": 1,
                                                      "max_storage_bytes": 1000}, 3))
    core = SlowSearchCore(state)
    g = admission.GuardedCore(core, authenticator(state), quotas.QuotaEnforcer(core))

    async def go():
        core.gate = asyncio.Event()
        token = auth._PRINCIPAL.set(TENANT_RW)
        try:
            request = pb.SearchVectorsRequest(dataset_id="d")
            first = asyncio.create_task(g.search_vectors(request))
            await asyncio.sleep(0.01)
            with pytest.raises(errors.ResourceExhausted, match="Concurrent query limit "
                                                              "exceeded: 1 / 1"):
                await g.search_vectors(request)
            core.gate.set()
            await first
            await g.search_vectors(request)  # the slot was released
            usage = g.quotas.usage_of("acme")
            usage.bytes, usage.read_at = 990, time.monotonic()  # a fresh reading
            with pytest.raises(errors.ResourceExhausted, match="Storage quota exceeded"):
                await g.insert_vectors(pb.InsertVectorsRequest(dataset_id="d",
                                                               vectors=vectors(1)))
        finally:
            auth._PRINCIPAL.reset(token)
    asyncio.run(go())
    assert g.quotas.counters_of("acme").active_queries == 0


def test_meta_leader_counts_live_routers_and_settles():
    from consensus.member import MetaService

    class Machine:
        leader = True
        stopping = threading.Event()

        def _isLeader(self):
            return self.leader

    class Context:
        def abort(self, code, details):
            raise RuntimeError(code)

    service = MetaService(Machine(), {})
    from proto import meta_pb2
    first = service.RouterHeartbeat(meta_pb2.RouterHeartbeatRequest(router_id="r1"), Context())
    second = service.RouterHeartbeat(meta_pb2.RouterHeartbeatRequest(router_id="r2"), Context())
    assert (first.live_routers, second.live_routers) == (1, 2)
    assert not second.settled  # just became leader: some routers may not have reached it
    service.__dict__["router_leading_since"] -= limits.router_liveness_timeout_ms / 1000
    service.__dict__["router_seen"]["r1"] -= limits.router_liveness_timeout_ms / 1000
    third = service.RouterHeartbeat(meta_pb2.RouterHeartbeatRequest(router_id="r2"), Context())
    assert (third.live_routers, third.settled) == (1, True)
    service.machine.leader = False
    with pytest.raises(RuntimeError):
        service.RouterHeartbeat(meta_pb2.RouterHeartbeatRequest(router_id="r2"), Context())
