"""Dataset admin through a real cluster, over REST and gRPC: UpdateDataset, GetDatasetStats,
GET /stats and multi-dataset search (tenant isolation, dimension and metric checks)."""

from __future__ import annotations

import uuid

import grpc
import httpx
import pytest

from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture()
def rest(cluster):
    with httpx.Client(base_url=cluster.rest, timeout=60) as client:
        yield client


@pytest.fixture()
def channel(cluster):
    with grpc.insecure_channel(cluster.grpc_target) as ch:
        yield ch


def create(rest, name, tenant="", **fields):
    body = {"name": name, "dimensions": 4, "metric_type": "cosine", **fields}
    r = rest.post("/datasets", json=body, headers={"X-Tenant-Id": tenant} if tenant else {})
    assert r.status_code == 201, r.text
    return r.json()["dataset"]


def insert(rest, name, vectors, tenant=""):
    r = rest.post(f"/datasets/{name}/vectors", json={"vectors": [
        {"id": i, "values": v} for i, v in vectors.items()]},
        headers={"X-Tenant-Id": tenant} if tenant else {})
    assert r.status_code == 201, r.text


# ---- UpdateDataset ---------------------------------------------------------------------------------

def test_update_dataset_over_rest(rest):
    name = unique("upd")
    created = create(rest, name, description="first", metadata={"team": "a"})

    r = rest.put(f"/datasets/{name}", json={"description": "second"})
    assert r.status_code == 200, r.text
    dataset = r.json()["dataset"]
    assert dataset["description"] == "second" and dataset["metadata"] == {"team": "a"}
    assert dataset["updated_at"] != created["updated_at"]

    r = rest.put(f"/datasets/{name}", json={"metadata": {"team": "b", "n": 2}})
    assert r.status_code == 200, r.text
    assert r.json()["dataset"]["description"] == "second"
    assert r.json()["dataset"]["metadata"] == {"team": "b", "n": "2"}

    # null and absent keep; the update is visible to a later GET.
    r = rest.put(f"/datasets/{name}", json={"description": None})
    assert r.status_code == 200 and r.json()["dataset"]["description"] == "second"
    got = rest.get(f"/datasets/{name}").json()["dataset"]
    assert got["description"] == "second" and got["metadata"] == {"team": "b", "n": "2"}

    # An explicit "" / {} clears.
    r = rest.put(f"/datasets/{name}", json={"description": "", "metadata": {}})
    assert r.status_code == 200, r.text
    assert r.json()["dataset"]["description"] == "" and r.json()["dataset"]["metadata"] == {}

    # The dataset read back, with a new description, is a valid update body.
    got = rest.get(f"/datasets/{name}").json()["dataset"]
    r = rest.put(f"/datasets/{name}", json={**got, "description": "third"})
    assert r.status_code == 200, r.text
    assert r.json()["dataset"]["description"] == "third"


@pytest.mark.parametrize("body,needle", [
    ({"dimensions": 8}, "dimensions cannot be changed"),
    ({"metric_type": "l2", "description": "x"}, "metric_type cannot be changed"),
    ({"shard_count": 7}, "shard_count cannot be changed"),
    ({"name": "renamed"}, "name cannot be changed"),
    ({"colour": "red"}, "unknown field(s) colour"),
    ({"metadata": {"k": [1]}}, "metadata 'k'"),
    ({"description": 5}, "invalid request"),
])
def test_update_dataset_refuses_bad_bodies_over_rest(rest, body, needle):
    name = unique("upd-bad")
    create(rest, name, description="keep", shard_count=2)
    r = rest.put(f"/datasets/{name}", json=body)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]["message"]
    assert rest.get(f"/datasets/{name}").json()["dataset"]["description"] == "keep"


def test_update_dataset_is_tenant_scoped_and_404_for_unknown(rest):
    name = unique("upd-tenant")
    create(rest, name, tenant=unique("tenant-a"), description="mine")
    r = rest.put(f"/datasets/{name}", json={"description": "stolen"},
                 headers={"X-Tenant-Id": unique("tenant-b")})
    assert r.status_code == 404
    assert rest.put(f"/datasets/{unique('nope')}", json={"description": "x"}).status_code == 404


def test_update_dataset_over_grpc(rest, channel):
    name = unique("upd-grpc")
    create(rest, name, description="first", metadata={"team": "a"})
    stub = pb_grpc.DatasetServiceStub(channel)
    response = stub.UpdateDataset(pb.UpdateDatasetRequest(dataset_id=name, description="second"))
    assert response.dataset.description == "second"
    assert dict(response.dataset.metadata) == {"team": "a"}
    # Empty fields keep (proto3 cannot tell them from absent ones).
    response = stub.UpdateDataset(pb.UpdateDatasetRequest(dataset_id=name,
                                                          metadata={"team": "b"}))
    assert response.dataset.description == "second"
    assert dict(response.dataset.metadata) == {"team": "b"}
    assert rest.get(f"/datasets/{name}").json()["dataset"]["metadata"] == {"team": "b"}

    with pytest.raises(grpc.RpcError) as exc:
        stub.UpdateDataset(pb.UpdateDatasetRequest(dataset_id=unique("nope"), description="x"))
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as exc:
        stub.UpdateDataset(pb.UpdateDatasetRequest(dataset_id=name, metadata={"": "x"}))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# ---- GetDatasetStats and /stats ------------------------------------------------------------------

def test_dataset_stats_over_rest_and_grpc(rest, channel):
    name = unique("stats")
    create(rest, name, metric_type="l2", shard_count=3, index_type="flat")
    insert(rest, name, {f"v{i}": [i, 1, 2, 3] for i in range(20)})

    r = rest.get(f"/datasets/{name}/stats")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["dataset_id"] == name and doc["vector_count"] == 20
    assert doc["storage_size"] > 0
    assert doc["dimensions"] == 4 and doc["metric_type"] == "l2" and doc["index_type"] == "flat"
    stats = doc["stats"]
    assert stats["shard_count"] == "3" and int(stats["placement_epoch"]) >= 1
    assert sum(int(stats[f"shard.{s}.vectors"]) for s in range(3)) == 20
    assert sum(int(stats[f"shard.{s}.storage_bytes"]) for s in range(3)) == doc["storage_size"]
    nodes = set(rest.get("/stats").json()["nodes"])
    assert {stats[f"shard.{s}.node"] for s in range(3)} <= nodes
    assert rest.get(f"/datasets/{name}").json()["dataset"]["storage_size"] == doc["storage_size"]

    response = pb_grpc.DatasetServiceStub(channel).GetDatasetStats(
        pb.GetDatasetStatsRequest(dataset_id=name))
    assert response.vector_count == 20 and response.storage_size == doc["storage_size"]
    assert dict(response.stats) == stats

    assert rest.get(f"/datasets/{unique('nope')}/stats").status_code == 404
    with pytest.raises(grpc.RpcError) as exc:
        pb_grpc.DatasetServiceStub(channel).GetDatasetStats(
            pb.GetDatasetStatsRequest(dataset_id=name, tenant_id=unique("other")))
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


def test_service_stats(rest):
    tenant = unique("stats-tenant")
    create(rest, unique("s1"), tenant=tenant)
    create(rest, unique("s2"), tenant=tenant)
    r = rest.get("/stats")
    assert r.status_code == 200
    doc = r.json()
    assert doc["datasets_per_tenant"][tenant] == 2
    assert doc["tenants"] >= 1 and doc["datasets"] >= 2
    assert doc["node_count"] == len(doc["nodes"]) == 2
    assert doc["live_node_count"] == 2 and sorted(doc["live_nodes"]) == sorted(doc["nodes"])
    assert doc["catalog_version"] > 0 and doc["router_uptime_s"] > 0
    assert doc["meta"] == "ok" and doc["limits"]["top_k_max"] > 0
    assert sum(doc["datasets_per_tenant"].values()) == doc["datasets"]


# ---- multi-dataset search ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tenants(cluster):
    """Tenant A: a, b (4-d cosine), wide (8-d cosine), euclid (4-d l2), shared.
    Tenant B: shared (same name as A's), holding the vector closest to every query."""
    a, b = unique("ta"), unique("tb")
    names = {"a": unique("a"), "b": unique("b"), "wide": unique("wide"),
             "euclid": unique("euclid"), "shared": unique("shared")}
    with httpx.Client(base_url=cluster.rest, timeout=60) as rest:
        create(rest, names["a"], tenant=a, shard_count=2)
        create(rest, names["b"], tenant=a, shard_count=1)
        create(rest, names["wide"], tenant=a, dimensions=8)
        create(rest, names["euclid"], tenant=a, metric_type="l2")
        create(rest, names["shared"], tenant=a)
        create(rest, names["shared"], tenant=b)
        insert(rest, names["a"], {"a1": [1, 0, 0, 0], "a2": [0, 1, 0, 0]}, tenant=a)
        insert(rest, names["b"], {"b1": [0.9, 0.1, 0, 0], "b2": [0, 0, 1, 0]}, tenant=a)
        insert(rest, names["shared"], {"only-a": [0, 0, 0, 1]}, tenant=a)
        insert(rest, names["shared"], {"only-b": [1, 0, 0, 0]}, tenant=b)
    return a, b, names


def test_multi_dataset_search_merges_over_rest(rest, tenants):
    a, _, names = tenants
    r = rest.post("/search/multi-dataset", headers={"X-Tenant-Id": a}, json={
        "dataset_ids": [names["b"], names["a"]], "query_vector": [1, 0, 0, 0],
        "options": {"top_k": 4}})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [(h["vector"]["dataset_id"], h["vector"]["id"]) for h in results] == [
        (names["a"], "a1"), (names["b"], "b1"),
        # a2 and b2 both score 0: ties break by (dataset, id).
        *sorted([(names["a"], "a2"), (names["b"], "b2")])]
    assert [h["rank"] for h in results] == [1, 2, 3, 4]
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert results[0]["score"] >= results[1]["score"] >= results[2]["score"]
    assert r.json()["total_found"] == 4

    top1 = rest.post("/search/multi-dataset", headers={"X-Tenant-Id": a}, json={
        "dataset_ids": [names["a"], names["b"]], "query_vector": [1, 0, 0, 0],
        "options": {"top_k": 1}}).json()
    assert [h["vector"]["id"] for h in top1["results"]] == ["a1"] and top1["has_more"]


def test_multi_dataset_search_never_searches_another_tenant(rest, tenants):
    a, b, names = tenants
    r = rest.post("/search/multi-dataset", headers={"X-Tenant-Id": a}, json={
        "dataset_ids": [names["shared"], names["a"]], "query_vector": [1, 0, 0, 0],
        "options": {"top_k": 10}})
    assert r.status_code == 200, r.text
    ids = {(h["vector"]["dataset_id"], h["vector"]["id"]) for h in r.json()["results"]}
    assert ids == {(names["shared"], "only-a"), (names["a"], "a1"), (names["a"], "a2")}
    assert all(h["vector"]["tenant_id"] == a for h in r.json()["results"])

    # Tenant B's only dataset is "shared"; A's other names do not exist for B.
    r = rest.post("/search/multi-dataset", headers={"X-Tenant-Id": b}, json={
        "dataset_ids": [names["shared"], names["a"]], "query_vector": [1, 0, 0, 0]})
    assert r.status_code == 404 and names["a"] in r.json()["error"]["message"]


@pytest.mark.parametrize("pick,status,needles", [
    (("a", "wide"), 400, ["equal dimensions", ": 4", ": 8"]),
    (("a", "euclid"), 400, ["equal metric_type", "cosine", "l2"]),
    (("a", "missing"), 404, ["not found"]),
])
def test_multi_dataset_search_refusals_over_rest(rest, tenants, pick, status, needles):
    a, _, names = tenants
    ids = [names.get(p, unique("missing")) for p in pick]
    r = rest.post("/search/multi-dataset", headers={"X-Tenant-Id": a}, json={
        "dataset_ids": ids, "query_vector": [1, 0, 0, 0]})
    assert r.status_code == status, r.text
    message = r.json()["error"]["message"]
    for needle in needles:
        assert needle in message
    if status == 400:
        assert all(i in message for i in ids), "the message lists every dataset"


@pytest.mark.parametrize("body,needle", [
    ({"query_vector": [1, 0, 0, 0]}, "dataset_ids"),
    ({"dataset_ids": [], "query_vector": [1, 0, 0, 0]}, "dataset_ids is empty"),
    ({"dataset_ids": "a", "query_vector": [1, 0, 0, 0]}, "dataset_ids"),
    ({"dataset_ids": ["A", "A"], "query_vector": [1, 0, 0, 0]}, "appears twice"),
    ({"dataset_ids": ["A"], "query_vector": [1, 0]}, "query_vector has dimension 2"),
    ({"dataset_ids": ["A"], "query_vector": [1, 0, 0, 0], "options": {"top_k": 0,
                                                                      "ef_search": -1}},
     "ef_search"),
])
def test_multi_dataset_search_bad_bodies_over_rest(rest, tenants, body, needle):
    a, _, names = tenants
    if isinstance(body.get("dataset_ids"), list):
        body = {**body, "dataset_ids": [names["a"] if i == "A" else i
                                        for i in body["dataset_ids"]]}
    r = rest.post("/search/multi-dataset", headers={"X-Tenant-Id": a}, json=body)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]["message"]


def test_multi_dataset_search_over_grpc(channel, tenants):
    a, b, names = tenants
    stub = pb_grpc.SearchServiceStub(channel)
    response = stub.MultiDatasetSearch(pb.MultiDatasetSearchRequest(
        dataset_ids=[names["a"], names["b"], names["shared"]], query_vector=[1, 0, 0, 0],
        options=pb.SearchOptions(top_k=2), tenant_id=a))
    assert [(h.vector.dataset_id, h.vector.id) for h in response.results] == [
        (names["a"], "a1"), (names["b"], "b1")]

    for ids, code, needle in [
            ([names["a"], names["wide"]], grpc.StatusCode.INVALID_ARGUMENT, "equal dimensions"),
            ([names["a"], names["euclid"]], grpc.StatusCode.INVALID_ARGUMENT,
             "equal metric_type"),
            ([names["a"], unique("missing")], grpc.StatusCode.NOT_FOUND, "not found")]:
        with pytest.raises(grpc.RpcError) as exc:
            stub.MultiDatasetSearch(pb.MultiDatasetSearchRequest(
                dataset_ids=ids, query_vector=[1, 0, 0, 0], tenant_id=a))
        assert exc.value.code() == code and needle in exc.value.details()

    # Tenant B sees only its own "shared", whatever tenant A holds under that name.
    response = stub.MultiDatasetSearch(pb.MultiDatasetSearchRequest(
        dataset_ids=[names["shared"]], query_vector=[1, 0, 0, 0], tenant_id=b))
    assert [h.vector.id for h in response.results] == ["only-b"]
    with pytest.raises(grpc.RpcError) as exc:
        stub.MultiDatasetSearch(pb.MultiDatasetSearchRequest(
            dataset_ids=[names["a"]], query_vector=[1, 0, 0, 0], tenant_id=b))
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
