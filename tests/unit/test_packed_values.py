"""Vector values on the hot paths: packed float32 between router and node, the REST parser that
reads plain vectors straight into a matrix, and the staged 2PC plan that stores each vector once.
Each fast path must give the answer (or the error) the general path gives."""

from __future__ import annotations

import json

import numpy as np
import pytest

from node.convert import records_from_protos
from node.txn import _locked_ids, _staged_txn
from proto import deeplake_service_pb2 as pb
from proto import node_pb2
from router import rest
from router.core import shard_batches
from router.quotas import estimate_bytes
from router.routing import shard_of
from tributary.errors import InvalidArgument
from tributary.validation import (as_matrix, as_vector, pack_values, unpack_matrix,
                                  unpack_vector)


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return as_matrix(np.random.default_rng(seed).normal(size=(n, dim)).tolist(), dim, "cosine")


# ---- pack / unpack -------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_unpacking_gives_back_exactly_the_validated_matrix(metric):
    matrix = as_matrix(np.random.default_rng(1).normal(size=(6, 5)).tolist(), 5, metric)
    assert np.array_equal(unpack_matrix(pack_values(matrix), 6, 5, metric), matrix)
    assert np.array_equal(unpack_vector(pack_values(matrix[2]), 5, metric), matrix[2])


def test_as_matrix_of_an_array_equals_as_matrix_of_its_lists():
    raw = np.random.default_rng(2).normal(size=(4, 3)) * 1e3
    for metric in ("cosine", "l2"):
        assert np.array_equal(as_matrix(raw, 3, metric), as_matrix(raw.tolist(), 3, metric))


def test_unpacking_checks_the_byte_count_and_the_values_again():
    packed = pack_values(unit_rows(3, 4))
    with pytest.raises(InvalidArgument, match="expected 3 vectors of dimension 4"):
        unpack_matrix(packed[:-4], 3, 4, "cosine")
    bad = unit_rows(3, 4).copy()
    bad[1, 2] = np.nan
    with pytest.raises(InvalidArgument, match=r"vector 1 \('b'\) contains NaN or Inf"):
        unpack_matrix(pack_values(bad), 3, 4, "l2", names=["a", "b", "c"])
    with pytest.raises(InvalidArgument, match="zero vector"):
        unpack_vector(pack_values(np.zeros(4)), 4, "cosine", what="query_vector")
    with pytest.raises(InvalidArgument, match="query_vector has dimension 3"):
        unpack_vector(pack_values(np.ones(3)), 4, "cosine", what="query_vector")


def test_unpacking_normalizes_rows_a_sender_left_unnormalized():
    rows = np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float32)
    assert np.array_equal(unpack_matrix(pack_values(rows), 2, 2, "cosine"),
                          as_matrix(rows.tolist(), 2, "cosine"))


def test_as_vector_of_an_array_skips_no_check():
    for bad, message in ((np.array([1.0, np.inf]), "NaN or Inf"),
                         (np.array([1.0, 1e39]), "float32 range"),
                         (np.array([0.0, 0.0]), "zero vector")):
        with pytest.raises(InvalidArgument, match=message):
            as_vector(bad, 2, "cosine")


# ---- node side -----------------------------------------------------------------------------


def test_records_from_packed_and_from_per_vector_values_are_the_same():
    matrix = unit_rows(3, 4)
    vectors = [pb.Vector(id="a", document_id="d", metadata={"k": "v"}, chunk_index=2),
               pb.Vector(id="b", content="text", model="m"), pb.Vector(id="c")]
    packed = records_from_protos(vectors, 4, "cosine", pack_values(matrix))
    old = [pb.Vector() for _ in vectors]
    for o, v, row in zip(old, vectors, matrix):
        o.CopyFrom(v)
        o.values.extend(row.tolist())
    per_vector = records_from_protos(old, 4, "cosine")
    assert [(r.id, r.document_id, r.metadata, r.chunk_index, r.content, r.model)
            for r in packed] == [(r.id, r.document_id, r.metadata, r.chunk_index, r.content,
                                  r.model) for r in per_vector]
    assert np.array_equal(np.stack([r.values for r in packed]),
                          np.stack([r.values for r in per_vector]))


def test_a_batch_carrying_values_both_ways_is_refused():
    vector = pb.Vector(id="a", values=[1.0, 0.0])
    with pytest.raises(InvalidArgument, match="both packed and per vector"):
        records_from_protos([vector], 2, "l2", pack_values(np.ones((1, 2))))


@pytest.mark.parametrize("skip", [set(), {"b"}])
def test_the_staged_plan_holds_each_vector_once_and_every_locked_id(skip):
    matrix = unit_rows(3, 4)
    request = node_pb2.PrepareRequest(
        txn_id="t1", upserts=[pb.Vector(id=i) for i in "abc"], delete_ids=["x"],
        participants=["u/0", "u/1"], upsert_values=pack_values(matrix))
    records = records_from_protos(request.upserts, 4, "cosine", request.upsert_values)
    apply = [r for r in records if r.id not in skip]
    vote = node_pb2.PrepareResponse(skipped_ids=sorted(skip))
    staged = node_pb2.StagedTxn.FromString(
        _staged_txn(request, apply, ["x"], vote).SerializeToString())
    assert not staged.request.upserts and not staged.request.upsert_values
    assert list(staged.request.participants) == ["u/0", "u/1"]
    assert [v.id for v in staged.apply_upserts] == [r.id for r in apply]
    again = records_from_protos(staged.apply_upserts, 4, "cosine", staged.apply_values)
    assert np.array_equal(np.stack([r.values for r in again]),
                          np.stack([r.values for r in apply]))
    assert sorted(_locked_ids(staged)) == ["a", "b", "c", "x"]


def test_locked_ids_of_a_file_in_the_older_encoding_come_from_its_request():
    staged = node_pb2.StagedTxn(request=node_pb2.PrepareRequest(
        txn_id="t", upserts=[pb.Vector(id="a", values=[1.0]), pb.Vector(id="b", values=[1.0])],
        delete_ids=["c"]), apply_upserts=[pb.Vector(id="a", values=[1.0])])
    assert sorted(_locked_ids(staged)) == ["a", "b", "c"]


# ---- router side ---------------------------------------------------------------------------


def test_shard_batches_pack_each_shards_rows_in_its_vectors_order():
    ids = [f"v{i}" for i in range(40)]
    matrix = unit_rows(40, 3)
    batches = shard_batches([pb.Vector(id=i) for i in ids], matrix, 3)
    seen = 0
    for shard, batch in batches.items():
        rows = [ids.index(v.id) for v in batch.upserts]
        assert all(shard_of(v.id, 3) == shard for v in batch.upserts)
        assert np.array_equal(unpack_matrix(batch.values, len(rows), 3, "cosine"),
                              matrix[rows])
        seen += len(rows)
    assert seen == 40


def test_quota_bytes_count_dimensions_for_vectors_whose_values_travel_apart():
    assert estimate_bytes([pb.Vector(id="a")], 128) == \
        estimate_bytes([pb.Vector(id="a", values=[0.0] * 128)])


def parsed(body: dict):
    return rest._parse_insert(dict(rest.loads(json.dumps(body).encode()), dataset_id="d"))


def test_rest_reads_plain_vectors_values_into_one_matrix():
    request, values = parsed({"vectors": [
        {"id": "a", "values": [1, 2.5, -3]},
        {"id": "b", "values": [0.5, 0, 1], "document_id": "doc", "metadata": {"k": "v"}}]})
    assert [v.id for v in request.vectors] == ["a", "b"]
    assert request.vectors[1].document_id == "doc"
    assert all(not v.values for v in request.vectors)
    assert values.dtype == np.float64
    assert values.tolist() == [[1.0, 2.5, -3.0], [0.5, 0.0, 1.0]]


@pytest.mark.parametrize("values", [[None, 2.0, 3.0], [[1.0], 2.0, 3.0]])
def test_rest_sends_odd_values_down_the_general_path_and_its_error(values):
    with pytest.raises(InvalidArgument, match="invalid vector 1"):
        parsed({"vectors": [{"id": "a", "values": [1.0, 2.0, 3.0]},
                            {"id": "b", "values": values}]})


def test_rest_refuses_numbers_in_strings_naming_the_vector_and_field():
    """proto3's JSON mapping reads "1.5" as a float (ParseDict), and numpy would too; the fast
    path never converts a string, and the general path refuses it: REST takes JSON numbers
    only, as its OpenAPI document says."""
    with pytest.raises(InvalidArgument, match=r"vectors\[1\]\.values"):
        parsed({"vectors": [{"id": "a", "values": [1.0, 2.0, 3.0]},
                            {"id": "b", "values": ["1.5", 2.0, 3.0]}]})


def test_rest_keeps_ragged_rows_for_the_cores_dimension_check():
    request, values = parsed({"vectors": [{"id": "a", "values": [1.0, 2.0, 3.0]},
                                          {"id": "b", "values": [1.0, 2.0]}]})
    assert values is None
    assert [len(v.values) for v in request.vectors] == [3, 2]


def test_rest_body_parser_falls_back_to_json_for_what_orjson_refuses():
    assert rest.loads(b'{"a": [1.5, 2]}') == {"a": [1.5, 2]}
    nan = rest.loads(b'{"values": [NaN, Infinity]}')["values"]
    assert np.isnan(nan[0]) and nan[1] == float("inf")
    with pytest.raises(ValueError):
        rest.loads(b'{"a": ')
