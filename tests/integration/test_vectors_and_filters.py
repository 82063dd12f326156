"""Update, list with a stable cursor, filtered search and the seed's search options, through the
router on a real cluster."""

from __future__ import annotations

import uuid

import grpc
import httpx
import numpy as np
import pytest

from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def catalog_ds(cluster):
    """600 vectors over 3 shards with category/year metadata and documents of 3 chunks."""
    name = f"filters-{uuid.uuid4().hex[:6]}"
    rng = np.random.default_rng(42)
    data = rng.standard_normal((600, 16)).astype(np.float32)
    with httpx.Client(base_url=cluster.rest, timeout=60) as client:
        assert client.post("/datasets", json={"name": name, "dimensions": 16,
                                              "metric_type": "l2", "shard_count": 3}
                           ).status_code == 201
        vectors = [{"id": f"v{i}", "values": data[i].tolist(), "document_id": f"doc{i // 3}",
                    "chunk_index": i % 3, "content": f"chunk {i}",
                    "content_hash": f"h{i // 2}",
                    "metadata": {"category": ["tech", "art", "food"][i % 3],
                                 "year": 2000 + i % 30}} for i in range(600)]
        r = client.post(f"/datasets/{name}/vectors", json={"vectors": vectors})
        assert r.status_code == 201, r.text
    return name, data


def brute_force(data, query, allowed):
    distances = np.linalg.norm(data - query, axis=1)
    order = [i for i in np.argsort(distances) if allowed(i)]
    return [f"v{i}" for i in order]


def search(cluster, name, body):
    r = httpx.post(f"{cluster.rest}/datasets/{name}/search", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("expression,allowed", [
    ("category = 'tech'", lambda i: i % 3 == 0),
    ("category = 'art' AND year >= 2020", lambda i: i % 3 == 1 and 2000 + i % 30 >= 2020),
    ("year IN (2001, 2002) OR category = 'food'",
     lambda i: 2000 + i % 30 in (2001, 2002) or i % 3 == 2),
    ("NOT (category = 'tech') AND chunk_index = 2", lambda i: i % 3 != 0 and i % 3 == 2),
    ("id = 'v17'", lambda i: i == 17),
])
def test_filtered_search_returns_exactly_the_best_matching_rows(cluster, catalog_ds, expression,
                                                               allowed):
    name, data = catalog_ds
    query = np.random.default_rng(7).standard_normal(16).astype(np.float32)
    body = search(cluster, name, {"query_vector": query.tolist(), "options": {
        "top_k": 10, "filter": expression, "include_metadata": True}})
    expected = brute_force(data, query, allowed)[:10]
    assert [h["vector"]["id"] for h in body["results"]] == expected


def test_filters_map_is_equality_on_each_key(cluster, catalog_ds):
    name, data = catalog_ds
    query = data[5]
    body = search(cluster, name, {"query_vector": query.tolist(), "options": {
        "top_k": 5, "filters": {"category": "food", "year": "2005"}, "include_metadata": True}})
    assert body["results"], body
    for hit in body["results"]:
        assert hit["vector"]["metadata"]["category"] == "food"
        assert hit["vector"]["metadata"]["year"] == "2005"


@pytest.mark.parametrize("expression", ["category = ", "year >> 3", "(category = 'a'",
                                        "category = 'unterminated"])
def test_a_bad_filter_is_a_400_that_points_at_the_problem(cluster, catalog_ds, expression):
    name, _ = catalog_ds
    r = httpx.post(f"{cluster.rest}/datasets/{name}/search", timeout=30, json={
        "query_vector": [0.0] * 16, "options": {"filter": expression}})
    assert r.status_code == 400
    assert "column" in r.json()["error"]["message"]


def test_group_by_document_keeps_the_best_chunk_per_document(cluster, catalog_ds):
    name, data = catalog_ds
    body = search(cluster, name, {"query_vector": data[30].tolist(), "options": {
        "top_k": 8, "group_by_document": True}})
    documents = [h["vector"]["document_id"] for h in body["results"]]
    assert len(documents) == 8 and len(set(documents)) == 8
    assert body["results"][0]["vector"]["id"] == "v30"


def test_deduplicate_drops_repeated_content_hashes(cluster, catalog_ds):
    name, data = catalog_ds
    body = search(cluster, name, {"query_vector": data[40].tolist(), "options": {
        "top_k": 10, "deduplicate": True}})
    hashes = [h["vector"]["content_hash"] for h in body["results"]]
    assert len(hashes) == 10 and len(set(hashes)) == 10


def test_min_score_and_max_distance_cut_results(cluster, catalog_ds):
    name, data = catalog_ds
    body = search(cluster, name, {"query_vector": data[3].tolist(), "options": {
        "top_k": 50, "max_distance": 4.0}})
    assert body["results"] and all(h["distance"] <= 4.0 for h in body["results"])
    body = search(cluster, name, {"query_vector": data[3].tolist(), "options": {
        "top_k": 50, "min_score": 0.99}})
    assert [h["vector"]["id"] for h in body["results"]] == ["v3"]


def test_content_is_returned_only_when_asked(cluster, catalog_ds):
    name, data = catalog_ds
    plain = search(cluster, name, {"query_vector": data[9].tolist(), "options": {"top_k": 1}})
    assert plain["results"][0]["vector"]["content"] == ""
    rich = search(cluster, name, {"query_vector": data[9].tolist(), "options": {
        "top_k": 1, "include_content": True}})
    assert rich["results"][0]["vector"]["content"] == "chunk 9"


def test_list_vectors_pages_through_every_vector_once(cluster, catalog_ds):
    name, _ = catalog_ds
    seen, token, pages = [], "", 0
    with httpx.Client(base_url=cluster.rest, timeout=60) as client:
        while True:
            r = client.get(f"/datasets/{name}/vectors", params={"page_size": 70,
                                                                "page_token": token})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["total_count"] == 600
            seen.extend(v["id"] for v in body["vectors"])
            pages += 1
            token = body["next_page_token"]
            if not token:
                break
        assert client.get(f"/datasets/{name}/vectors",
                          params={"page_token": "garbage!"}).status_code == 400
    assert sorted(seen) == sorted(f"v{i}" for i in range(600))
    assert pages >= 600 // 70


def test_update_vector_replaces_fields_and_unknown_ids_are_404(cluster):
    name = f"upd-{uuid.uuid4().hex[:6]}"
    with httpx.Client(base_url=cluster.rest, timeout=60) as client:
        assert client.post("/datasets", json={"name": name, "dimensions": 4,
                                              "metric_type": "l2"}).status_code == 201
        client.post(f"/datasets/{name}/vectors", json={"vectors": [
            {"id": "a", "values": [1, 2, 3, 4], "content": "old", "metadata": {"v": "1"}}]})
        created = client.get(f"/datasets/{name}/vectors/a").json()["vector"]
        r = client.put(f"/datasets/{name}/vectors/a", json={"content": "new",
                                                            "metadata": {"v": 2}})
        assert r.status_code == 200, r.text
        updated = r.json()["vector"]
        assert updated["content"] == "new" and updated["metadata"] == {"v": "2"}
        assert updated["values"] == [1, 2, 3, 4]          # omitted values are kept
        assert updated["created_at"] == created["created_at"]
        r = client.put(f"/datasets/{name}/vectors/a", json={"values": [4, 3, 2, 1]})
        assert r.json()["vector"]["values"] == [4, 3, 2, 1]
        assert client.put(f"/datasets/{name}/vectors/nope", json={"values": [1, 1, 1, 1]}
                          ).status_code == 404
        assert client.get(f"/datasets/{name}/vectors/nope").status_code == 404
        assert client.put(f"/datasets/{name}/vectors/a", json={"values": [1, 1]}
                          ).status_code == 400


def test_update_and_list_over_grpc(cluster, catalog_ds):
    name, _ = catalog_ds
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        stub = pb_grpc.VectorServiceStub(channel)
        page = stub.ListVectors(pb.ListVectorsRequest(dataset_id=name, page_size=5,
                                                      include_values=True))
        assert len(page.vectors) == 5 and page.next_page_token
        assert all(len(v.values) == 16 for v in page.vectors)
        with pytest.raises(grpc.RpcError) as info:
            stub.UpdateVector(pb.UpdateVectorRequest(dataset_id=name, vector_id="missing",
                                                     vector=pb.Vector(values=[0.0] * 16)))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
