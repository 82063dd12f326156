"""Plain searches answered as columns (issue 18): ShardReplica.search_batch(packed=...) gives
HitColumns instead of a record per hit, the node packs them into PackedHits with one bytes copy
per column (node/server.py _pack_columns), and the router reads them back (router/core.py
_shard_hits). The answer must be the one the per-hit path gives: same ids (unicode included),
scores, distances, times and short fields; soft-deleted rows never, pending rows found."""

from __future__ import annotations

import numpy as np
import pytest

from node.server import _search_response
from proto import node_pb2
from router.core import _shard_hits
from shard.records import HitColumns, SearchOutcome, VectorRecord
from shard.replica import ShardReplica
from tributary.validation import as_vector

DIM = 8
QUERIES = 6


def _id(i: int) -> str:
    # Ids beyond ASCII: accents, CJK, an emoji (4 bytes in UTF-8), a space.
    return f"vé-日本-{i}" if i % 3 else f"row 🚀 {i}"


def _records(metric: str, count: int, start: int = 0) -> list[VectorRecord]:
    rng = np.random.default_rng(7 + start)
    return [VectorRecord(id=_id(i), values=as_vector(rng.normal(size=DIM).tolist(), DIM, metric),
                         document_id=f"doc-{i % 5}" if i % 4 == 0 else "",
                         language="fr" if i % 6 == 0 else "",
                         chunk_index=i % 3, chunk_count=3 if i % 2 else 0)
            for i in range(start, start + count)]


@pytest.fixture(params=["cosine", "l2", "ip"])
def replica(request, tmp_path):
    metric = request.param
    replica = ShardReplica(str(tmp_path / "shard"), DIM, metric)
    replica.write(_records(metric, 500), [])
    replica.wait_indexed()
    # More rows, likely still in the pending buffer (scanned exactly) when the searches run,
    # hard deletes (graph and pending) and soft deletes.
    replica.write(_records(metric, 60, start=500), [_id(3)])
    replica.write([], [_id(520)])
    replica.soft_delete([_id(i) for i in range(0, 500, 7)] + [_id(530)])
    yield replica
    replica.close()


def _twice(replica: ShardReplica, queries: np.ndarray, top_ks: list[int]):
    """Each query in one batch twice, packed and per hit: one graph state for both answers."""
    count = len(queries)
    outcomes = replica.search_batch(np.concatenate([queries, queries]), top_ks * 2, 40,
                                    packed=[True] * count + [False] * count)
    return outcomes[:count], outcomes[count:]


def _queries(replica: ShardReplica) -> np.ndarray:
    rng = np.random.default_rng(19)
    rows = [as_vector(rng.normal(size=DIM).tolist(), DIM, replica.metric)
            for _ in range(QUERIES - 1)]
    # A pending row's own vector: it must come back first (found by the exact pending scan,
    # or by the graph once the indexer took it).
    rows.append(_records(replica.metric, 60, start=500)[45].values)
    return np.stack(rows)


SHORT = ("document_id", "chunk_id", "content_hash", "content_type", "language", "model",
         "chunk_index", "chunk_count")


def test_packed_columns_carry_exactly_what_the_per_hit_answer_carries(replica):
    top_ks = [1, 5, 10, 30, 10, 3]
    packed, per_hit = _twice(replica, _queries(replica), top_ks)
    soft_deleted = set(replica.soft_deleted_ids())
    assert soft_deleted
    for columns_outcome, hits_outcome, top_k in zip(packed, per_hit, top_ks):
        columns = columns_outcome.columns
        assert isinstance(columns, HitColumns) and columns_outcome.hits == []
        assert hits_outcome.columns is None
        hits = hits_outcome.hits
        assert len(columns) == len(hits) == top_k == columns_outcome.index_hits
        assert columns.ids == [h.record.id for h in hits]
        assert columns.scores.dtype == np.float32 and columns.distances.dtype == np.float32
        assert columns.scores.tolist() == np.float32([h.score for h in hits]).tolist()
        assert columns.distances.tolist() == np.float32([h.distance for h in hits]).tolist()
        assert columns.created_at_ms.tolist() == [h.record.created_at_ms for h in hits]
        assert columns.updated_at_ms.tolist() == [h.record.updated_at_ms for h in hits]
        expected_fields = [{name: getattr(h.record, name) for name in SHORT
                            if getattr(h.record, name)} for h in hits]
        assert (columns.fields or [{}] * len(hits)) == expected_fields
        assert not soft_deleted & set(columns.ids)
        assert not {_id(3), _id(520)} & set(columns.ids)
    if replica.metric != "ip":  # under inner product a row need not be its own nearest
        assert packed[-1].columns.ids[0] == _id(545)


def test_a_packed_answer_built_from_columns_is_the_message_built_from_hits(replica):
    packed, per_hit = _twice(replica, _queries(replica), [10] * QUERIES)
    for columns_outcome, hits_outcome in zip(packed, per_hit):
        from_columns = _search_response(columns_outcome, DIM, packed=True)
        from_hits = _search_response(hits_outcome, DIM, packed=True)
        assert from_columns.packed == from_hits.packed
        assert len(from_columns.packed.ids) == 10 and not from_columns.hits
        # Through the wire and the router's reading: the hits the per-hit answer gives.
        wire = node_pb2.ShardSearchResponse.FromString(from_columns.SerializeToString())
        assert _shard_hits(wire) == _shard_hits(from_hits)
        assert [h.vector.id for h in _shard_hits(wire)] == columns_outcome.columns.ids


def test_a_search_whose_every_row_is_soft_deleted_answers_empty_columns(tmp_path):
    replica = ShardReplica(str(tmp_path / "shard"), DIM, "l2")
    try:
        replica.write(_records("l2", 40), [])
        replica.wait_indexed()
        replica.soft_delete([_id(i) for i in range(40)])
        queries = np.stack([r.values for r in _records("l2", 3)])
        packed, per_hit = _twice(replica, queries, [5, 5, 5])
        for outcome in packed:
            assert outcome.columns is not None and outcome.columns.ids == []
            response = _search_response(outcome, DIM, packed=True)
            assert response.packed == node_pb2.PackedHits() and not response.hits
            assert _shard_hits(response) == []
        assert all(outcome.hits == [] for outcome in per_hit)
    finally:
        replica.close()


def test_a_batch_whose_first_candidates_are_all_live_is_answered_without_the_window_walk(
        tmp_path, monkeypatch):
    """No deleted, hidden or pending rows: every packed query takes the located first-k way
    (the window walk of _live_labels would raise), and answers what the per-hit way does."""
    replica = ShardReplica(str(tmp_path / "shard"), DIM, "cosine")
    try:
        replica.write(_records("cosine", 300), [])
        replica.wait_indexed()
        queries = np.stack([r.values for r in _records("cosine", 8, start=1000)])
        top_ks = [1, 2, 5, 10, 10, 20, 3, 7]
        per_hit = replica.search_batch(queries, top_ks, 40, packed=[False] * 8)
        walked = ShardReplica._live_labels

        def refused(self, labels, k):
            raise AssertionError("a query with k live candidates walked the windows")
        monkeypatch.setattr(ShardReplica, "_live_labels", refused)
        packed = replica.search_batch(queries, top_ks, 40, packed=[True] * 8)
        monkeypatch.setattr(ShardReplica, "_live_labels", walked)
        for columns_outcome, hits_outcome, top_k in zip(packed, per_hit, top_ks):
            columns = columns_outcome.columns
            assert columns.ids == [h.record.id for h in hits_outcome.hits]
            assert len(columns.ids) == top_k
            assert columns.scores.tolist() == np.float32(
                [h.score for h in hits_outcome.hits]).tolist()
            assert columns.created_at_ms.tolist() == [h.record.created_at_ms
                                                      for h in hits_outcome.hits]
            assert (columns.fields or [{}] * top_k) == [
                {name: getattr(h.record, name) for name in SHORT if getattr(h.record, name)}
                for h in hits_outcome.hits]
    finally:
        replica.close()


def test_packing_columns_writes_little_endian_columns_and_fields_only_when_some_hit_has_one():
    columns = HitColumns(ids=["a", "日本", "🚀"], scores=np.float32([0.9, 0.5, 0.25]),
                         distances=np.float32([0.1, 0.5, 0.75]),
                         created_at_ms=np.int64([1, 2**40, 3]),
                         updated_at_ms=np.int64([4, 5, 2**41]))
    outcome = SearchOutcome([], vectors_scanned=9, index_hits=3, database_time_ms=0.5,
                            columns=columns)
    bare = _search_response(outcome, DIM, packed=True)
    assert list(bare.packed.ids) == ["a", "日本", "🚀"]
    assert np.frombuffer(bare.packed.scores, "<f4").tolist() == \
        np.float32([0.9, 0.5, 0.25]).tolist()
    assert np.frombuffer(bare.packed.distances, "<f4").tolist() == \
        np.float32([0.1, 0.5, 0.75]).tolist()
    assert np.frombuffer(bare.packed.created_at_ms, "<i8").tolist() == [1, 2**40, 3]
    assert np.frombuffer(bare.packed.updated_at_ms, "<i8").tolist() == [4, 5, 2**41]
    assert len(bare.packed.fields) == 0
    assert (bare.vectors_scanned, bare.index_hits) == (9, 3)

    columns.fields = [{}, {"document_id": "d", "chunk_count": 2}, {"language": "ja"}]
    full = _search_response(outcome, DIM, packed=True)
    assert [f.document_id for f in full.packed.fields] == ["", "d", ""]
    assert [f.chunk_count for f in full.packed.fields] == [0, 2, 0]
    assert [f.language for f in full.packed.fields] == ["", "", "ja"]
    hits = _shard_hits(node_pb2.ShardSearchResponse.FromString(full.SerializeToString()))
    assert [(h.vector.id, h.vector.document_id, h.vector.language) for h in hits] == \
        [("a", "", ""), ("日本", "d", ""), ("🚀", "", "ja")]
    assert hits[1].vector.created_at.seconds == 2**40 // 1000
