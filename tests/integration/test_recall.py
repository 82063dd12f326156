"""recall@10 through the router against brute force, on 20k random vectors."""

from __future__ import annotations

import numpy as np
import httpx
import pytest

pytestmark = pytest.mark.integration


def test_recall_at_10_through_the_router_is_at_least_0_95(cluster):
    rng = np.random.default_rng(20_000)
    dims, count, queries = 64, 20_000, 100
    data = rng.standard_normal((count, dims)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    name = "recall-20k"
    with httpx.Client(base_url=cluster.rest, timeout=120) as client:
        assert client.post("/datasets", json={"name": name, "dimensions": dims,
                                              "metric_type": "cosine"}).status_code == 201
        for start in range(0, count, 2_000):
            batch = [{"id": str(i), "values": data[i].tolist()}
                     for i in range(start, start + 2_000)]
            r = client.post(f"/datasets/{name}/vectors", json={"vectors": batch})
            assert r.status_code == 201, r.text
        query_vectors = rng.standard_normal((queries, dims)).astype(np.float32)
        query_vectors /= np.linalg.norm(query_vectors, axis=1, keepdims=True)
        truth = np.argsort(-(query_vectors @ data.T), axis=1)[:, :10]
        found = 0
        for q, expected in zip(query_vectors, truth):
            hits = client.post(f"/datasets/{name}/search", json={
                "query_vector": q.tolist(), "options": {"top_k": 10}}).json()["results"]
            found += len({int(h["vector"]["id"]) for h in hits} & set(expected.tolist()))
    recall = found / (queries * 10)
    print(f"recall@10 = {recall:.4f}")
    assert recall >= 0.95
