"""The seed's HTTP and gRPC flows (seed 000, tests/integration/test_end_to_end.py), through a real
cluster, plus the error table of the walking-cluster contract."""

from __future__ import annotations

import uuid

import grpc
import httpx
import numpy as np
import pytest

from proto import deeplake_service_pb2, deeplake_service_pb2_grpc

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_rest_create_insert_search_finds_the_inserted_vector(cluster):
    name = unique("integration-test")
    with httpx.Client(base_url=cluster.rest.removesuffix("/api/v1"), timeout=30) as client:
        dataset_response = client.post("/api/v1/datasets", json={
            "name": name, "dimensions": 128, "metric_type": "cosine"})
        assert dataset_response.status_code == 201
        assert dataset_response.json()["dataset"]["name"] == name

        vectors_response = client.post(f"/api/v1/datasets/{name}/vectors", json={
            "vectors": [{"id": "vec1", "document_id": "doc1", "values": [0.1] * 128,
                         "content": "test content"}]})
        assert vectors_response.status_code == 201
        assert vectors_response.json()["inserted_count"] == 1

        search_response = client.post(f"/api/v1/datasets/{name}/search", json={
            "query_vector": [0.1] * 128, "options": {"top_k": 5}})
        assert search_response.status_code == 200
        results = search_response.json()
        assert len(results["results"]) == 1
        assert results["results"][0]["vector"]["id"] == "vec1"
        assert results["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_grpc_create_insert_search_finds_the_inserted_vector(cluster):
    name = unique("grpc-test")
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        dataset_client = deeplake_service_pb2_grpc.DatasetServiceStub(channel)
        vector_client = deeplake_service_pb2_grpc.VectorServiceStub(channel)
        search_client = deeplake_service_pb2_grpc.SearchServiceStub(channel)

        dataset_response = dataset_client.CreateDataset(deeplake_service_pb2.CreateDatasetRequest(
            name=name, dimensions=128, metric_type="cosine"))
        assert dataset_response.dataset.name == name

        vectors_response = vector_client.InsertVectors(deeplake_service_pb2.InsertVectorsRequest(
            dataset_id=name, vectors=[deeplake_service_pb2.Vector(
                id="vec1", document_id="doc1", values=[0.1] * 128, content="test content")]))
        assert vectors_response.inserted_count == 1

        search_response = search_client.SearchVectors(deeplake_service_pb2.SearchVectorsRequest(
            dataset_id=name, query_vector=[0.1] * 128,
            options=deeplake_service_pb2.SearchOptions(top_k=5)))
        assert len(search_response.results) == 1
        assert search_response.results[0].vector.id == "vec1"


def test_dataset_lifecycle_over_rest(cluster):
    name = unique("life")
    with httpx.Client(base_url=cluster.rest, timeout=30) as client:
        created = client.post("/datasets", json={"name": name, "dimensions": 8,
                                                 "metric_type": "l2", "shard_count": 3,
                                                 "description": "d", "metadata": {"team": "x"}})
        assert created.status_code == 201, created.text
        dataset = created.json()["dataset"]
        assert dataset["shard_count"] == 3 and dataset["metric_type"] == "l2"
        listed = client.get("/datasets").json()["datasets"]
        assert name in [d["name"] for d in listed]
        got = client.get(f"/datasets/{name}").json()["dataset"]
        assert got["metadata"] == {"team": "x"} and got["vector_count"] == 0

        rng = np.random.default_rng(1)
        vectors = [{"id": f"v{i}", "values": rng.standard_normal(8).tolist(),
                    "metadata": {"i": i}} for i in range(50)]
        inserted = client.post(f"/datasets/{name}/vectors/batch", json={"vectors": vectors})
        assert inserted.status_code == 201 and inserted.json()["inserted_count"] == 50
        assert client.get(f"/datasets/{name}").json()["dataset"]["vector_count"] == 50

        one = client.get(f"/datasets/{name}/vectors/v7").json()["vector"]
        assert one["metadata"] == {"i": "7"}
        assert one["values"] == pytest.approx(vectors[7]["values"], rel=1e-5)

        deleted = client.request("DELETE", f"/datasets/{name}/vectors/batch",
                                 json={"vector_ids": ["v1", "v2", "nope"]})
        assert deleted.json() == {"deleted_count": 2, "not_found_count": 1}
        assert client.delete(f"/datasets/{name}/vectors/v3").status_code == 200
        assert client.get(f"/datasets/{name}/vectors/v3").status_code == 404
        assert client.delete(f"/datasets/{name}/vectors/v3").status_code == 404
        assert client.get(f"/datasets/{name}").json()["dataset"]["vector_count"] == 47

        hits = client.post(f"/datasets/{name}/search", json={
            "query_vector": vectors[10]["values"],
            "options": {"top_k": 3, "include_metadata": True}}).json()["results"]
        assert hits[0]["vector"]["id"] == "v10"
        assert hits[0]["distance"] == pytest.approx(0.0, abs=1e-4)
        assert hits[0]["vector"]["metadata"] == {"i": "10"}
        assert [h["rank"] for h in hits] == [1, 2, 3]
        assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]

        assert client.delete(f"/datasets/{name}").status_code == 200
        assert client.get(f"/datasets/{name}").status_code == 404
        assert name not in [d["name"] for d in client.get("/datasets").json()["datasets"]]


def test_search_merges_shards_into_global_top_k(cluster):
    """Every shard answers with its own top-k; the router must return the global top-k."""
    name = unique("merge")
    rng = np.random.default_rng(7)
    data = rng.standard_normal((400, 16)).astype(np.float32)
    with httpx.Client(base_url=cluster.rest, timeout=60) as client:
        assert client.post("/datasets", json={"name": name, "dimensions": 16,
                                              "metric_type": "ip", "shard_count": 4}
                           ).status_code == 201
        body = {"vectors": [{"id": f"v{i}", "values": data[i].tolist()} for i in range(400)]}
        assert client.post(f"/datasets/{name}/vectors", json=body).status_code == 201
        query = rng.standard_normal(16).astype(np.float32)
        hits = client.post(f"/datasets/{name}/search", json={
            "query_vector": query.tolist(), "options": {"top_k": 10, "ef_search": 400}}
        ).json()["results"]
    expected = [f"v{i}" for i in np.argsort(-(data @ query))[:10]]
    assert [h["vector"]["id"] for h in hits] == expected


def test_dataset_names_are_per_tenant(cluster):
    name = unique("shared-name")
    with httpx.Client(base_url=cluster.rest, timeout=30) as client:
        for tenant in ("acme", "globex"):
            r = client.post("/datasets", headers={"X-Tenant-Id": tenant},
                            json={"name": name, "dimensions": 4})
            assert r.status_code == 201, r.text
        client.post(f"/datasets/{name}/vectors", headers={"X-Tenant-Id": "acme"},
                    json={"vectors": [{"id": "a", "values": [1, 0, 0, 0]}]})
        assert client.get(f"/datasets/{name}", headers={"X-Tenant-Id": "globex"}
                          ).json()["dataset"]["vector_count"] == 0
        assert client.get(f"/datasets/{name}").status_code == 404


def test_health_reports_leader_and_live_nodes(cluster):
    body = httpx.get(f"{cluster.rest}/health", timeout=10)
    assert body.status_code == 200
    doc = body.json()
    assert doc["status"] == "healthy"
    assert doc["dependencies"]["nodes"].startswith("2/2 live")
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        check = deeplake_service_pb2_grpc.HealthServiceStub(channel).Check(
            deeplake_service_pb2.HealthCheckRequest())
        assert check.status == "healthy"


def test_standard_grpc_health_and_reflection_are_served(cluster):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(
            service="deeplake.v1.SearchService"))
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        responses = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for r in responses for s in r.list_services_response.service}
        assert {"deeplake.v1.DatasetService", "deeplake.v1.SearchService"} <= names
