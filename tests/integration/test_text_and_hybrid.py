"""Text search (BM25 through Deep Lake's index) and hybrid search with explained fusion."""

from __future__ import annotations

import uuid

import grpc
import httpx
import numpy as np
import pytest

from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc
from router.core import fuse_rankings

pytestmark = pytest.mark.integration

DOCS = ["the river flows into the sea", "mountains and snow", "a quiet sea at night",
        "database engines are fast", "river boats on the river", "sea sea sea storms",
        "forest trails", "night trains"]


@pytest.fixture(scope="module")
def text_ds(cluster):
    name = f"text-{uuid.uuid4().hex[:6]}"
    rng = np.random.default_rng(5)
    data = rng.standard_normal((len(DOCS), 8)).astype(np.float32)
    with httpx.Client(base_url=cluster.rest, timeout=60) as client:
        assert client.post("/datasets", json={"name": name, "dimensions": 8,
                                              "shard_count": 2}).status_code == 201
        r = client.post(f"/datasets/{name}/vectors", json={"vectors": [
            {"id": f"d{i}", "values": data[i].tolist(), "content": text,
             "metadata": {"odd": str(i % 2)}} for i, text in enumerate(DOCS)]})
        assert r.status_code == 201
    return name, data


def test_text_search_ranks_documents_that_contain_the_words(cluster, text_ds):
    name, _ = text_ds
    r = httpx.post(f"{cluster.rest}/datasets/{name}/search/text", timeout=60, json={
        "query_text": "river", "options": {"top_k": 5, "include_content": True}})
    assert r.status_code == 200, r.text
    hits = r.json()["results"]
    assert {h["vector"]["id"] for h in hits} == {"d0", "d4"}
    # Both shards score with their own BM25 statistics, so only the order by score is fixed.
    assert hits[0]["score"] >= hits[1]["score"] > 0
    assert all("river" in h["vector"]["content"] for h in hits)


def test_text_search_honours_filters_and_rejects_empty_queries(cluster, text_ds):
    name, _ = text_ds
    r = httpx.post(f"{cluster.rest}/datasets/{name}/search/text", timeout=60, json={
        "query_text": "sea", "options": {"top_k": 10, "filter": "odd = '1'"}})
    assert [h["vector"]["id"] for h in r.json()["results"]] == ["d5"]
    for bad in ("", "   ", "!!!"):
        r = httpx.post(f"{cluster.rest}/datasets/{name}/search/text", timeout=60,
                       json={"query_text": bad})
        assert r.status_code == 400


def test_hybrid_search_fuses_and_explains(cluster, text_ds):
    name, data = text_ds
    body = {"query_vector": data[2].tolist(), "query_text": "sea",
            "options": {"top_k": 3}}
    r = httpx.post(f"{cluster.rest}/datasets/{name}/search/hybrid", json=body, timeout=60)
    assert r.status_code == 200, r.text
    top = r.json()["results"][0]
    # d2 is the vector match and contains "sea": first under RRF.
    assert top["vector"]["id"] == "d2"
    assert top["explanation"]["fusion"] == "rrf"
    assert top["explanation"]["vector_rank"] == "1" and "text_rank" in top["explanation"]
    r = httpx.post(f"{cluster.rest}/datasets/{name}/search/hybrid", timeout=60,
                   json={**body, "fusion": "alpha", "alpha": 0.9})
    assert r.json()["results"][0]["explanation"]["fusion"] == "alpha=0.9"
    r = httpx.post(f"{cluster.rest}/datasets/{name}/search/hybrid", timeout=60,
                   json={**body, "fusion": "max"})
    assert r.status_code == 400


def test_text_and_hybrid_search_over_grpc_match_rest(cluster, text_ds):
    name, data = text_ds
    rest = httpx.post(f"{cluster.rest}/datasets/{name}/search/text", timeout=60, json={
        "query_text": "sea night", "options": {"top_k": 4}}).json()["results"]
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        stub = pb_grpc.SearchServiceStub(channel)
        over_grpc = stub.SearchByText(pb.SearchByTextRequest(
            dataset_id=name, query_text="sea night", options=pb.SearchOptions(top_k=4)))
        assert [r.vector.id for r in over_grpc.results] == [h["vector"]["id"] for h in rest]
        hybrid = stub.HybridSearch(pb.HybridSearchRequest(
            dataset_id=name, query_vector=data[7].tolist(), query_text="night",
            options=pb.SearchOptions(top_k=2)))
        assert hybrid.results[0].vector.id == "d7"


def test_fuse_rankings_rrf_and_alpha_are_exact():
    vector = [("a", 0.9), ("b", 0.5), ("c", 0.1)]
    text = [("c", 12.0), ("a", 3.0)]
    rrf = fuse_rankings(vector, text, "rrf", 0.5, 60)
    assert [i for i, _, _ in rrf] == ["a", "c", "b"]
    assert rrf[0][1] == pytest.approx(1 / 61 + 1 / 62)
    alpha = fuse_rankings(vector, text, "alpha", 0.75, 60)
    scores = {i: s for i, s, _ in alpha}
    assert scores["a"] == pytest.approx(0.75 * 1.0 + 0.25 * 0.0)
    assert scores["c"] == pytest.approx(0.75 * 0.0 + 0.25 * 1.0)
    assert scores["b"] == pytest.approx(0.75 * 0.5)
