"""Exact search through the router: a flat dataset, and `exact: true` on an HNSW dataset, both
give recall@10 = 1.0 against numpy brute force (over REST, across two shards)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.integration

DIMS = 32


def _clustered(rng, count: int) -> np.ndarray:
    centres = rng.standard_normal((40, DIMS)) * 4
    data = centres[rng.integers(0, 40, count)] + rng.standard_normal((count, DIMS))
    return (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float32)


def _load(client: httpx.Client, name: str, data: np.ndarray, **dataset) -> None:
    r = client.post("/datasets", json={"name": name, "dimensions": DIMS, "metric_type": "cosine",
                                       "shard_count": 2, **dataset})
    assert r.status_code == 201, r.text
    for start in range(0, len(data), 2_000):
        batch = [{"id": str(i), "values": data[i].tolist(),
                  "metadata": {"parity": "odd" if i % 2 else "even"}}
                 for i in range(start, min(start + 2_000, len(data)))]
        r = client.post(f"/datasets/{name}/vectors", json={"vectors": batch})
        assert r.status_code == 201, r.text


def _recall(client, name, data, queries, body_extra: dict, options_extra: dict,
            candidates: np.ndarray | None = None) -> tuple[float, set[str]]:
    ids = np.arange(len(data)) if candidates is None else candidates
    found, strategies = 0, set()
    for q in queries:
        truth = ids[np.argsort(-(data[ids] @ q), kind="stable")[:10]]
        r = client.post(f"/datasets/{name}/search", json={
            "query_vector": q.tolist(), "options": {"top_k": 10, **options_extra},
            **body_extra})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        strategies.update(h["explanation"].get("shard_strategy", "") for h in results)
        found += len({int(h["vector"]["id"]) for h in results} & set(truth.tolist()))
    return found / (len(queries) * 10), strategies


def test_flat_dataset_and_exact_option_return_exact_neighbours_through_the_router(cluster):
    rng = np.random.default_rng(17)
    data = _clustered(rng, 6_000)
    queries = _clustered(rng, 40)
    with httpx.Client(base_url=cluster.rest, timeout=120) as client:
        _load(client, "exact-flat", data, index_type="flat")
        _load(client, "exact-hnsw", data)
        assert client.get("/datasets/exact-flat").json()["dataset"]["index_type"] == "flat"

        flat, strategies = _recall(client, "exact-flat", data, queries, {}, {})
        assert flat == 1.0 and strategies == {"flat"}

        exact, strategies = _recall(client, "exact-hnsw", data, queries, {"exact": True},
                                    {"ef_search": 10})
        assert exact == 1.0 and strategies == {"exact"}

        odd = np.arange(1, len(data), 2)
        filtered, _ = _recall(client, "exact-hnsw", data, queries, {"exact": True},
                              {"filters": {"parity": "odd"}}, candidates=odd)
        assert filtered == 1.0

        # Without the option the HNSW dataset is served by the graph.
        _, strategies = _recall(client, "exact-hnsw", data, queries[:3], {}, {})
        assert strategies == {"hnsw"}
        for name in ("exact-flat", "exact-hnsw"):
            client.delete(f"/datasets/{name}")
