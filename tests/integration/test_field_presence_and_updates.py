"""Numeric options whose zero means something keep it (alpha 0, min_score 0), PUT of a vector
changes only the fields it names (AIP-134 update masks), and the errors say what happened
(restore of a purged vector, unknown search options), over REST and gRPC."""

from __future__ import annotations

import uuid

import grpc
import httpx
import numpy as np
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

DOCS = ["the river flows into the sea", "mountains and snow", "a quiet sea at night",
        "database engines are fast", "river boats on the river", "sea sea sea storms",
        "forest trails", "night trains"]


@pytest.fixture(scope="module")
def hybrid_ds(cluster):
    name = f"presence-{uuid.uuid4().hex[:6]}"
    data = np.random.default_rng(17).standard_normal((len(DOCS), 8)).astype(np.float32)
    with httpx.Client(base_url=cluster.rest, timeout=60) as client:
        assert client.post("/datasets", json={"name": name, "dimensions": 8,
                                              "metric_type": "cosine"}).status_code == 201
        r = client.post(f"/datasets/{name}/vectors", json={"vectors": [
            {"id": f"d{i}", "values": data[i].tolist(), "content": text}
            for i, text in enumerate(DOCS)]})
        assert r.status_code == 201, r.text
    return name, data


def _text_ranking(cluster, name: str, text: str) -> list[str]:
    r = httpx.post(f"{cluster.rest}/datasets/{name}/search/text", timeout=60,
                   json={"query_text": text, "options": {"top_k": 10}})
    assert r.status_code == 200, r.text
    return [hit["vector"]["id"] for hit in r.json()["results"]]


def test_hybrid_alpha_zero_over_rest_ranks_by_text_alone_and_says_so(cluster, hybrid_ds):
    name, data = hybrid_ds
    text_order = _text_ranking(cluster, name, "sea")
    assert len(text_order) == 3           # d0, d2 and d5 hold "sea"
    # The query vector is the "database" document, which holds no "sea": any weight on the
    # vector part would lift it into the top 2.
    body = {"query_vector": data[3].tolist(), "query_text": "sea", "fusion": "alpha",
            "alpha": 0, "options": {"top_k": 2}}
    r = httpx.post(f"{cluster.rest}/datasets/{name}/search/hybrid", json=body, timeout=60)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    # The last text hit normalizes to 0 and ties with vector-only hits: compare the top 2.
    assert [hit["vector"]["id"] for hit in results] == text_order[:2]
    assert results[0]["score"] == pytest.approx(1.0)
    for hit in results:
        assert hit["explanation"]["fusion"] == "alpha=0"
        assert hit["explanation"]["alpha"] == "0"
    # alpha 1 is the other pure end: the vector match comes first.
    r = httpx.post(f"{cluster.rest}/datasets/{name}/search/hybrid", timeout=60,
                   json={**body, "alpha": 1})
    assert r.json()["results"][0]["vector"]["id"] == "d3"
    # Unset still means 0.5.
    unset = {k: v for k, v in body.items() if k != "alpha"}
    r = httpx.post(f"{cluster.rest}/datasets/{name}/search/hybrid", json=unset, timeout=60)
    assert r.json()["results"][0]["explanation"]["alpha"] == "0.5"


def test_hybrid_alpha_zero_over_grpc_ranks_by_text_alone_and_says_so(cluster, hybrid_ds):
    name, data = hybrid_ds
    text_order = _text_ranking(cluster, name, "sea")
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        found = pb_grpc.SearchServiceStub(channel).HybridSearch(pb.HybridSearchRequest(
            dataset_id=name, query_vector=data[3].tolist(), query_text="sea", fusion="alpha",
            alpha=0.0, options=pb.SearchOptions(top_k=2)), timeout=60)
    assert [r.vector.id for r in found.results] == text_order[:2]
    assert all(r.explanation["alpha"] == "0" for r in found.results)


def test_hybrid_rrf_k_zero_is_kept_and_out_of_range_is_refused(cluster, hybrid_ds):
    name, data = hybrid_ds
    body = {"query_vector": data[2].tolist(), "query_text": "sea", "rrf_k": 0,
            "options": {"top_k": 1}}
    r = httpx.post(f"{cluster.rest}/datasets/{name}/search/hybrid", json=body, timeout=60)
    assert r.status_code == 200, r.text
    top = r.json()["results"][0]
    assert top["explanation"]["rrf_k"] == "0"
    # With k = 0 each list adds 1 / rank: d2 is the vector match, and holds "sea".
    explanation = top["explanation"]
    assert top["vector"]["id"] == "d2" and explanation["vector_rank"] == "1"
    assert top["score"] == pytest.approx(1 + 1 / int(explanation["text_rank"]))
    r = httpx.post(f"{cluster.rest}/datasets/{name}/search/hybrid", timeout=60,
                   json={**body, "rrf_k": -1})
    assert r.status_code == 400 and "rrf_k" in r.json()["error"]["message"]


def test_min_score_and_threshold_of_zero_drop_negative_scores(cluster, hybrid_ds):
    name, data = hybrid_ds
    query = (-data[0]).tolist()           # opposite of d0: some cosine scores are negative
    everything = httpx.post(f"{cluster.rest}/datasets/{name}/search", timeout=60, json={
        "query_vector": query, "options": {"top_k": 100}}).json()["results"]
    negative = [hit for hit in everything if hit["score"] < 0]
    assert negative, "the query should score some documents below 0"
    for option in ("min_score", "threshold"):
        r = httpx.post(f"{cluster.rest}/datasets/{name}/search", timeout=60, json={
            "query_vector": query, "options": {"top_k": 100, option: 0}})
        assert r.status_code == 200, r.text
        kept = r.json()["results"]
        assert all(hit["score"] >= 0 for hit in kept), option
        assert len(kept) == len(everything) - len(negative), option
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        found = pb_grpc.SearchServiceStub(channel).SearchVectors(pb.SearchVectorsRequest(
            dataset_id=name, query_vector=query,
            options=pb.SearchOptions(top_k=100, min_score=0.0)), timeout=60)
    assert len(found.results) == len(everything) - len(negative)


# ---- updates (AIP-134) --------------------------------------------------------------------------

ORIGINAL = {"id": "a1", "document_id": "doc1", "values": [3.0, 1.0, 2.0, 5.0],
            "content": "rivers join", "metadata": {"lang": "en"}, "chunk_index": 2}


@pytest.fixture()
def update_ds(cluster):
    name = f"upd-mask-{uuid.uuid4().hex[:6]}"
    with httpx.Client(base_url=cluster.rest, timeout=60) as client:
        assert client.post("/datasets", json={"name": name, "dimensions": 4,
                                              "metric_type": "l2"}).status_code == 201
        assert client.post(f"/datasets/{name}/vectors",
                           json={"vectors": [ORIGINAL]}).status_code == 201
    yield name
    httpx.delete(f"{cluster.rest}/datasets/{name}", timeout=60)


def _get(cluster, name: str, vector_id: str = "a1") -> dict:
    r = httpx.get(f"{cluster.rest}/datasets/{name}/vectors/{vector_id}", timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["vector"]


def test_rest_put_of_content_only_keeps_document_id_metadata_and_values(cluster, update_ds):
    before = _get(cluster, update_ds)
    r = httpx.put(f"{cluster.rest}/datasets/{update_ds}/vectors/a1", timeout=60,
                  json={"content": "rivers merge"})
    assert r.status_code == 200, r.text
    for answer in (r.json()["vector"], _get(cluster, update_ds)):
        assert answer["content"] == "rivers merge"
        assert answer["document_id"] == "doc1"
        assert answer["metadata"] == {"lang": "en"}
        assert answer["chunk_index"] == 2
        assert answer["values"] == ORIGINAL["values"]
        assert answer["created_at"] == before["created_at"]


def test_rest_update_mask_naming_metadata_absent_from_the_body_clears_it(cluster, update_ds):
    r = httpx.put(f"{cluster.rest}/datasets/{update_ds}/vectors/a1", timeout=60,
                  params={"update_mask": "metadata"}, json={"content": "not in the mask"})
    assert r.status_code == 200, r.text
    after = _get(cluster, update_ds)
    assert after["metadata"] == {}
    # Fields outside the mask keep their stored values, even when the body sends them.
    assert after["content"] == "rivers join" and after["document_id"] == "doc1"
    # Without a mask, a field the body sends as null is cleared too.
    r = httpx.put(f"{cluster.rest}/datasets/{update_ds}/vectors/a1", timeout=60,
                  json={"document_id": None, "language": "fr"})
    assert r.status_code == 200, r.text
    after = _get(cluster, update_ds)
    assert "document_id" not in after or after["document_id"] == ""
    assert after["language"] == "fr" and after["content"] == "rivers join"


def test_rest_bad_update_mask_path_is_400_naming_it_and_changes_nothing(cluster, update_ds):
    before = _get(cluster, update_ds)
    for mask, named in (("content,bogus", "bogus"), ("created_at", "created_at"),
                        ("metadata.lang", "metadata.lang")):
        r = httpx.put(f"{cluster.rest}/datasets/{update_ds}/vectors/a1", timeout=60,
                      params={"update_mask": mask}, json={"content": "changed"})
        assert r.status_code == 400, (mask, r.text)
        assert f"'{named}'" in r.json()["error"]["message"]
    r = httpx.put(f"{cluster.rest}/datasets/{update_ds}/vectors/a1", timeout=60,
                  params={"update_mask": "values"}, json={"content": "changed"})
    assert r.status_code == 400 and "values cannot be cleared" in r.json()["error"]["message"]
    assert _get(cluster, update_ds) == before
    r = httpx.put(f"{cluster.rest}/datasets/{update_ds}/vectors/nope", timeout=60,
                  json={"content": "x"})
    assert r.status_code == 404


def test_grpc_update_without_mask_keeps_unnamed_fields_and_mask_clears(cluster, update_ds):
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        vectors = pb_grpc.VectorServiceStub(channel)
        updated = vectors.UpdateVector(pb.UpdateVectorRequest(
            dataset_id=update_ds, vector_id="a1", vector=pb.Vector(content="over grpc")),
            timeout=60).vector
        assert updated.content == "over grpc" and updated.document_id == "doc1"
        assert dict(updated.metadata) == {"lang": "en"}
        assert list(updated.values) == ORIGINAL["values"]
        cleared = vectors.UpdateVector(pb.UpdateVectorRequest(
            dataset_id=update_ds, vector_id="a1", vector=pb.Vector(),
            update_mask=FieldMask(paths=["metadata"])), timeout=60).vector
        assert dict(cleared.metadata) == {} and cleared.content == "over grpc"
        assert cleared.document_id == "doc1"
        before = vectors.GetVector(pb.GetVectorRequest(dataset_id=update_ds, vector_id="a1"),
                                   timeout=60).vector
        with pytest.raises(grpc.RpcError) as info:
            vectors.UpdateVector(pb.UpdateVectorRequest(
                dataset_id=update_ds, vector_id="a1", vector=pb.Vector(content="no"),
                update_mask=FieldMask(paths=["content", "no_such_field"])), timeout=60)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'no_such_field'" in info.value.details()
        after = vectors.GetVector(pb.GetVectorRequest(dataset_id=update_ds, vector_id="a1"),
                                  timeout=60).vector
        assert after == before


# ---- messages ---------------------------------------------------------------------------------

def test_restore_of_a_purged_or_unknown_vector_says_not_found(cluster, update_ds):
    base = f"{cluster.rest}/datasets/{update_ds}/vectors"
    with httpx.Client(timeout=60) as client:
        assert client.post(f"{base}/a1/soft-delete").status_code == 200
        assert client.post(f"{cluster.rest}/datasets/{update_ds}/compact").json()[
            "purged_count"] == 1
        for vector_id in ("a1", "never-written"):
            r = client.post(f"{base}/{vector_id}/restore")
            assert r.status_code == 404
            message = r.json()["error"]["message"]
            assert "not found" in message and "soft-deleted" not in message, message
        assert client.post(base, json={"vectors": [{"id": "live", "values": [1, 1, 1, 1]}]}
                           ).status_code == 201
        r = client.post(f"{base}/live/restore")
        assert r.status_code == 404 and "is not soft-deleted" in r.json()["error"]["message"]
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        answer = pb_grpc.VectorServiceStub(channel).RestoreVectors(pb.RestoreVectorsRequest(
            dataset_id=update_ds, vector_ids=["live", "a1", "never-written"]), timeout=60)
    # The live vector is neither restored nor missing.
    assert (answer.restored_count, answer.not_found_count) == (0, 2)


def test_unknown_search_option_is_named_with_snake_case_suggestions(cluster, hybrid_ds):
    name, data = hybrid_ds
    r = httpx.post(f"{cluster.rest}/datasets/{name}/search", timeout=60, json={
        "query_vector": data[0].tolist(), "options": {"topk": 3}})
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert "'options.topk'" in message and "did you mean 'top_k'?" in message
    assert "ef_search" in message and "min_score" in message
    assert "topK" not in message and "efSearch" not in message
