"""Specification of exact search in ShardReplica: the flat index type (no graph, brute force
over an in-memory matrix) and the per-query `exact` option on HNSW replicas. Answers are checked
against a numpy brute-force oracle (recall@10 must be 1.0)."""

from __future__ import annotations

import os

import hnswlib
import numpy as np
import pytest

from shard import filter_eval, filter_parse
from shard.records import ExistingPolicy, VectorRecord
from shard.replica import ShardReplica
from tributary import limits
from tributary.errors import InvalidArgument
from tributary.validation import as_matrix

DIM = 16
K = 10


def clustered(count: int, dim: int, seed: int, clusters: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)) * 4
    return (centres[rng.integers(0, clusters, count)] +
            rng.normal(size=(count, dim))).astype(np.float32)


def write_all(replica: ShardReplica, values: np.ndarray, metric: str, start: int = 0,
              metadata=None) -> np.ndarray:
    """Writes the rows as ids str(start + i); returns the stored (normalized) matrix."""
    stored = as_matrix(values.tolist(), values.shape[1], metric)
    records = [VectorRecord(id=str(start + i), values=stored[i],
                            metadata=metadata(start + i) if metadata else {})
               for i in range(len(values))]
    for first in range(0, len(records), 2_000):
        replica.write(records[first:first + 2_000], [], ExistingPolicy.ERROR)
    return stored


def oracle(stored: dict[str, np.ndarray], query: np.ndarray, metric: str, k: int) -> list[str]:
    ids = list(stored)
    matrix = np.stack([stored[i] for i in ids]).astype(np.float64)
    q = query.astype(np.float64)
    if metric == "l2":
        distance = ((matrix - q) ** 2).sum(axis=1)
    else:
        distance = -(matrix @ q)
    return [ids[i] for i in np.argsort(distance, kind="stable")[:k]]


def recall(found: list[str], truth: list[str]) -> float:
    return len(set(found) & set(truth)) / len(truth)


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_flat_index_returns_exact_neighbours(tmp_path, metric):
    replica = ShardReplica(str(tmp_path / "flat"), DIM, metric, "flat")
    try:
        values = clustered(3_000, DIM, seed=1)
        stored = dict(zip(map(str, range(len(values))), write_all(replica, values, metric)))
        # Deletes, overwrites and soft deletes must all be reflected in the scan.
        replica.write([], [str(i) for i in range(0, 300, 3)], ExistingPolicy.ERROR)
        for i in range(0, 300, 3):
            stored.pop(str(i))
        moved = as_matrix(clustered(50, DIM, seed=2).tolist(), DIM, metric)
        replica.write([VectorRecord(id=str(1000 + i), values=moved[i]) for i in range(50)], [],
                      ExistingPolicy.OVERWRITE)
        stored.update({str(1000 + i): moved[i] for i in range(50)})
        replica.soft_delete([str(i) for i in range(2000, 2100)])
        for i in range(2000, 2100):
            stored.pop(str(i))
        queries = as_matrix(clustered(40, DIM, seed=3).tolist(), DIM, metric)
        for query in queries:
            outcome = replica.search(query, K)
            assert outcome.strategy == "flat"
            found = [h.record.id for h in outcome.hits]
            assert recall(found, oracle(stored, query, metric, K)) == 1.0
            assert [h.score for h in outcome.hits] == sorted(
                (h.score for h in outcome.hits), reverse=True)
    finally:
        replica.close()


def test_flat_index_applies_the_filter_before_scoring(tmp_path):
    replica = ShardReplica(str(tmp_path / "flat"), DIM, "l2", "flat")
    try:
        values = clustered(2_000, DIM, seed=4)
        matrix = write_all(replica, values, "l2",
                           metadata=lambda i: {"parity": "odd" if i % 2 else "even"})
        odd = {str(i): matrix[i] for i in range(1, len(values), 2)}
        where = filter_eval.compile_filter(filter_parse.build_filter_ast({"parity": "odd"}, None))
        for query in as_matrix(clustered(20, DIM, seed=5).tolist(), DIM, "l2"):
            outcome = replica.search(query, K, where=where)
            found = [h.record.id for h in outcome.hits]
            assert found and all(int(i) % 2 for i in found)
            assert recall(found, oracle(odd, query, "l2", K)) == 1.0
            assert outcome.filtered_out == 1_000
    finally:
        replica.close()


def test_flat_replica_holds_no_hnswlib_index(tmp_path, monkeypatch):
    def no_graph(*args, **kwargs):
        raise AssertionError("a flat replica built an hnswlib index")

    monkeypatch.setattr(hnswlib, "Index", no_graph)
    path = str(tmp_path / "flat")
    replica = ShardReplica(path, DIM, "cosine", "flat")
    write_all(replica, clustered(500, DIM, seed=6), "cosine")
    replica.compact()
    assert replica._index is None and replica.pending_count() == 0
    replica.close()
    assert not any(name.startswith("hnsw") for name in os.listdir(path))
    # Reopened, it serves its rows again, still without a graph.
    reopened = ShardReplica(path, DIM, "cosine", "flat")
    try:
        assert reopened.count() == 500
        query = as_matrix(clustered(1, DIM, seed=7).tolist(), DIM, "cosine")[0]
        assert len(reopened.search(query, K).hits) == K
    finally:
        reopened.close()


def test_unknown_index_type_is_refused(tmp_path):
    with pytest.raises(InvalidArgument):
        ShardReplica(str(tmp_path / "x"), DIM, "l2", "ivf")


def test_exact_option_gives_exact_results_on_an_hnsw_replica(tmp_path, monkeypatch):
    # A sparse graph (small M, low ef_construction) so that HNSW at a low ef misses neighbours
    # that an exact search must find.
    monkeypatch.setattr(limits, "hnsw_m", 4)
    monkeypatch.setattr(limits, "hnsw_ef_construction", 10)
    replica = ShardReplica(str(tmp_path / "hnsw"), 32, "l2")
    try:
        values = clustered(8_000, 32, seed=8, clusters=50)
        stored = dict(zip(map(str, range(len(values))), write_all(replica, values, "l2")))
        assert replica.wait_indexed(120)
        queries = as_matrix(clustered(60, 32, seed=9, clusters=50).tolist(), 32, "l2")
        approx, exact = [], []
        for query in queries:
            truth = oracle(stored, query, "l2", K)
            approx.append(recall([h.record.id for h in replica.search(query, K, 10).hits],
                                 truth))
            outcome = replica.search(query, K, 10, exact=True)
            assert outcome.strategy == "exact"
            exact.append(recall([h.record.id for h in outcome.hits], truth))
        assert np.mean(approx) < 0.99     # the graph alone is not exact here
        assert np.mean(exact) == 1.0
        # Writes after the first exact search are seen by the next one.
        more = write_all(replica, clustered(100, 32, seed=10, clusters=50), "l2", start=10_000)
        stored.update({str(10_000 + i): more[i] for i in range(100)})
        replica.write([], ["0", "1", "2"], ExistingPolicy.ERROR)
        for vid in ("0", "1", "2"):
            stored.pop(vid)
        for query in queries[:20]:
            found = [h.record.id for h in replica.search(query, K, exact=True).hits]
            assert recall(found, oracle(stored, query, "l2", K)) == 1.0
    finally:
        replica.close()
