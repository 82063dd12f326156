"""Field-by-field vector updates (AIP-134) in the shard engine and the router's mask rules, field
presence for numeric options whose zero means something, and error messages that speak the
API's snake_case names."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from node.convert import update_records_from_protos
from proto import deeplake_service_pb2 as pb
from router.core import fuse_rankings, resolve_update_paths
from router.rest import unknown_field_message
from shard.records import UPDATABLE_FIELDS, VectorRecord
from shard.replica import ShardReplica
from tributary.errors import Internal, InvalidArgument, NotFound

DIM = 4


def stored(vector_id: str = "a", value: float = 1.0) -> VectorRecord:
    return VectorRecord(id=vector_id, values=np.full(DIM, value, dtype=np.float32),
                        document_id="doc1", content="old text", metadata={"lang": "en"},
                        chunk_index=3, model="m1")


def snapshot(shard: ShardReplica, vector_id: str = "a") -> dict:
    """Every stored field of one vector, values as a list (records hold numpy arrays)."""
    [record] = shard.get([vector_id])
    return {**record.__dict__, "values": record.values.tolist()}


@pytest.fixture()
def replica(tmp_path):
    shard = ShardReplica(str(tmp_path / "s"), DIM, "l2")
    shard.write([stored("a"), stored("b", 2.0)], [])
    yield shard
    shard.close()


# ---- ShardReplica.update -------------------------------------------------------------------


def test_update_of_content_keeps_every_other_stored_field(replica):
    [before] = replica.get(["a"])
    replica.update([VectorRecord(id="a", values=None, content="new text")],
                   frozenset({"content"}))
    [after] = replica.get(["a"])
    assert after.content == "new text"
    assert (after.document_id, after.metadata, after.chunk_index, after.model) == \
        ("doc1", {"lang": "en"}, 3, "m1")
    assert np.array_equal(after.values, before.values)
    assert after.created_at_ms == before.created_at_ms
    # The search index still finds it by its kept values.
    assert replica.search(np.full(DIM, 1.0, dtype=np.float32), 1).hits[0].record.id == "a"


def test_update_naming_an_empty_field_clears_it_and_values_can_change(replica):
    replica.update([VectorRecord(id="a", values=np.full(DIM, 5.0, dtype=np.float32))],
                   frozenset({"metadata", "values"}))
    [after] = replica.get(["a"])
    assert after.metadata == {} and after.content == "old text"
    assert np.array_equal(after.values, np.full(DIM, 5.0))
    assert replica.search(np.full(DIM, 5.0, dtype=np.float32), 1).hits[0].record.id == "a"


def test_update_refuses_unknown_paths_and_missing_ids_before_touching_the_store(replica):
    before = snapshot(replica)
    with pytest.raises(InvalidArgument, match="created_at_ms"):
        replica.update([VectorRecord(id="a", values=None)], frozenset({"created_at_ms"}))
    with pytest.raises(NotFound, match="'nope'"):
        replica.update([VectorRecord(id="a", values=None, content="x"),
                        VectorRecord(id="nope", values=None, content="x")],
                       frozenset({"content"}))
    replica.soft_delete(["b"])
    with pytest.raises(NotFound, match="'b'"):
        replica.update([VectorRecord(id="b", values=None, content="x")], frozenset({"content"}))
    assert snapshot(replica) == before


class _FailNextCommit:
    """Wraps the replica's Deep Lake dataset so that the next commit fails like a full disk."""

    def __init__(self, ds):
        self._real = ds
        self.failed = False

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __getitem__(self, key):
        return self._real[key]

    def __len__(self):
        return len(self._real)

    def commit(self, *args):
        if not self.failed:
            self.failed = True
            raise OSError("disk full")
        return self._real.commit(*args)


def test_an_update_whose_commit_fails_leaves_the_stored_row_as_it_was(replica):
    before = snapshot(replica)
    replica._ds = _FailNextCommit(replica._ds)
    with pytest.raises(Internal, match="disk full"):
        replica.update([VectorRecord(id="a", values=None, content="lost")],
                       frozenset({"content"}))
    assert snapshot(replica) == before
    assert replica.count() == 2


def test_concurrent_updates_of_different_fields_both_survive(replica):
    """Each update merges under the replica lock, so neither rewrites the other's field with
    the value it read before (the lost update a read-modify-write outside the lock allows)."""
    rounds = 15

    def writer(field: str):
        for i in range(rounds):
            replica.update([VectorRecord(id="a", values=None, **{field: f"{field}-{i}"})],
                           frozenset({field}))

    threads = [threading.Thread(target=writer, args=(f,)) for f in ("content", "language")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [after] = replica.get(["a"])
    assert (after.content, after.language) == (f"content-{rounds - 1}",
                                               f"language-{rounds - 1}")
    assert after.document_id == "doc1"


def test_node_builds_update_records_without_values_unless_the_paths_name_them():
    [record] = update_records_from_protos([pb.Vector(id="a", content="c")],
                                          frozenset({"content", "metadata"}), DIM, "l2")
    assert record.values is None and record.content == "c" and record.metadata == {}
    with pytest.raises(InvalidArgument):
        update_records_from_protos([pb.Vector(id="a", values=[1, 2, 3, 4])],
                                   frozenset({"content"}), DIM, "l2")
    [record] = update_records_from_protos([pb.Vector(id="a", values=[1, 2, 3, 4])],
                                          frozenset({"values"}), DIM, "l2")
    assert record.values.tolist() == [1, 2, 3, 4]


# ---- the router's mask rules ---------------------------------------------------------------


def test_without_a_mask_the_populated_or_present_fields_are_the_paths():
    vector = pb.Vector(id="a", content="c", created_at={"seconds": 5})
    assert resolve_update_paths(None, vector) == {"content"}
    # A REST body's keys, JSON names included; output-only ones are ignored.
    assert resolve_update_paths(None, vector, ["content", "documentId", "id", "updated_at"]) \
        == {"content", "document_id"}
    assert resolve_update_paths([], vector) == {"content"}


def test_a_mask_names_the_paths_and_star_names_them_all():
    assert resolve_update_paths(["metadata", "content"], pb.Vector()) == {"metadata", "content"}
    assert resolve_update_paths(["*"], pb.Vector(values=[1.0])) == set(UPDATABLE_FIELDS)


@pytest.mark.parametrize("path", ["bogus", "metadata.lang", "created_at", "id", ""])
def test_a_mask_path_that_is_unknown_or_not_updatable_is_refused_by_name(path):
    with pytest.raises(InvalidArgument, match=f"'{path}'"):
        resolve_update_paths(["content", path], pb.Vector(content="x"))


def test_values_cannot_be_cleared():
    with pytest.raises(InvalidArgument, match="values cannot be cleared"):
        resolve_update_paths(["values"], pb.Vector())
    with pytest.raises(InvalidArgument, match="values cannot be cleared"):
        resolve_update_paths(None, pb.Vector(), ["values"])


# ---- presence and fusion -------------------------------------------------------------------


def test_zero_is_told_apart_from_unset_for_meaningful_numeric_options():
    assert pb.HybridSearchRequest(alpha=0.0).HasField("alpha")
    assert not pb.HybridSearchRequest().HasField("alpha")
    assert pb.HybridSearchRequest(rrf_k=0).HasField("rrf_k")
    for name in ("threshold", "min_score", "max_distance"):
        assert pb.SearchOptions(**{name: 0.0}).HasField(name)
        assert not pb.SearchOptions().HasField(name)
    # The presence survives the wire (the labels add no bytes: an explicit 0 is sent as 0).
    again = pb.HybridSearchRequest.FromString(pb.HybridSearchRequest(alpha=0.0)
                                              .SerializeToString())
    assert again.HasField("alpha") and again.alpha == 0.0


def test_alpha_zero_fuses_to_the_text_ranking_and_one_to_the_vector_ranking():
    vector_hits = [("v1", 0.9), ("t2", 0.5), ("t1", 0.1)]
    text_hits = [("t1", 9.0), ("t2", 4.0), ("t3", 1.0)]
    text_only = fuse_rankings(vector_hits, text_hits, "alpha", 0.0, 60)
    assert [vid for vid, _, _ in text_only][:2] == ["t1", "t2"]
    assert text_only[0][2]["alpha"] == "0" and text_only[0][2]["fusion"] == "alpha=0"
    vector_only = fuse_rankings(vector_hits, text_hits, "alpha", 1.0, 60)
    assert [vid for vid, _, _ in vector_only][:2] == ["v1", "t2"]
    rrf = fuse_rankings(vector_hits, text_hits, "rrf", 0.5, 0)
    assert rrf[0][2]["rrf_k"] == "0"
    assert dict((vid, score) for vid, score, _ in rrf)["t2"] == pytest.approx(1 / 2 + 1 / 2)


# ---- messages ------------------------------------------------------------------------------


def test_unknown_field_message_names_snake_case_fields_and_the_closest_one():
    message = unknown_field_message(pb.SearchVectorsRequest.DESCRIPTOR,
                                    {"query_vector": [1.0], "options": {"topk": 3}})
    assert "'options.topk'" in message and "did you mean 'top_k'?" in message
    assert "ef_search" in message and "efSearch" not in message and "topK" not in message
    message = unknown_field_message(pb.InsertVectorsRequest.DESCRIPTOR,
                                    {"vectors": [{"id": "a"}, {"id": "b", "meta_data": {}}]})
    assert "'vectors[1].meta_data'" in message and "did you mean 'metadata'?" in message
    # JSON names are accepted by the parser, so they are not unknown.
    assert unknown_field_message(pb.SearchVectorsRequest.DESCRIPTOR,
                                 {"options": {"topK": 3}}) is None


def test_a_rest_body_naming_no_vector_field_is_refused_not_a_server_error():
    """The fuzzer sent {"": null, "chunk_count": 0}: the empty name reached setattr (500)."""
    from router.core import resolve_update_paths
    from proto import deeplake_service_pb2 as pb
    from tributary import errors
    with pytest.raises(errors.InvalidArgument, match="'' is not a vector field"):
        resolve_update_paths(None, pb.Vector(chunk_count=0), present=["", "chunk_count"])
    assert resolve_update_paths(None, pb.Vector(), present=["chunk_count", "chunkId"]) == \
        frozenset({"chunk_count", "chunk_id"})
