"""InsertVectorsRequest.packed_values: a batch's values as one packed float32 block (the cheap
form for the router) must store exactly what the repeated form stores, across shards (2PC), and
be refused with the repeated form's errors, changing nothing."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc
from router.routing import shard_of

pytestmark = pytest.mark.integration

DIMS = 8
SHARDS = 2


def ids_on_both_shards(prefix: str, count: int) -> list[str]:
    """`count` ids taking turns between the shards, so every batch is a 2PC txn."""
    by_shard: dict[int, list[str]] = {s: [] for s in range(SHARDS)}
    i = 0
    while min(len(v) for v in by_shard.values()) < count:
        by_shard[shard_of(f"{prefix}-{i}", SHARDS)].append(f"{prefix}-{i}")
        i += 1
    return [by_shard[n % SHARDS][n // SHARDS] for n in range(count)]


@pytest.fixture(scope="module")
def stubs(cluster):
    channel = grpc.insecure_channel(cluster.grpc_target)
    datasets = pb_grpc.DatasetServiceStub(channel)
    for name, metric in (("packed-cos", "cosine"), ("packed-l2", "l2")):
        datasets.CreateDataset(pb.CreateDatasetRequest(
            name=name, dimensions=DIMS, metric_type=metric, shard_count=SHARDS), timeout=60)
    yield pb_grpc.VectorServiceStub(channel)
    channel.close()


def stored_values(vectors, dataset: str, ids: list[str]) -> np.ndarray:
    return np.array([vectors.GetVector(pb.GetVectorRequest(dataset_id=dataset, vector_id=i),
                                       timeout=30).vector.values for i in ids], np.float32)


@pytest.mark.parametrize("dataset", ["packed-cos", "packed-l2"])
def test_packed_values_store_what_the_repeated_form_stores_across_shards(stubs, dataset):
    rows = np.random.default_rng(7).standard_normal((12, DIMS)).astype(np.float32)
    packed_ids = ids_on_both_shards(f"{dataset}-p", 12)
    repeated_ids = ids_on_both_shards(f"{dataset}-r", 12)
    answer = stubs.InsertVectors(pb.InsertVectorsRequest(
        dataset_id=dataset, vectors=[pb.Vector(id=i, content=f"c {i}") for i in packed_ids],
        packed_values=rows.astype("<f4").tobytes()), timeout=60)
    assert answer.inserted_count == 12
    stubs.InsertVectors(pb.InsertVectorsRequest(
        dataset_id=dataset,
        vectors=[pb.Vector(id=i, values=r.tolist()) for i, r in zip(repeated_ids, rows)]),
        timeout=60)
    packed = stored_values(stubs, dataset, packed_ids)
    assert np.array_equal(packed, stored_values(stubs, dataset, repeated_ids))
    if dataset == "packed-cos":
        assert np.allclose(np.linalg.norm(packed, axis=1), 1.0, atol=1e-5)
    else:
        assert np.array_equal(packed, rows)
    got = stubs.GetVector(pb.GetVectorRequest(dataset_id=dataset, vector_id=packed_ids[3]),
                          timeout=30)
    assert got.vector.content == f"c {packed_ids[3]}"


def refusal(stubs, request: pb.InsertVectorsRequest) -> str:
    with pytest.raises(grpc.RpcError) as raised:
        stubs.InsertVectors(request, timeout=60)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    return raised.value.details()


def test_bad_packed_values_are_refused_with_the_repeated_forms_errors_and_change_nothing(stubs):
    ids = ids_on_both_shards("bad", 6)
    rows = np.random.default_rng(8).standard_normal((6, DIMS)).astype("<f4")

    def request(block: np.ndarray | bytes, **vector_fields) -> pb.InsertVectorsRequest:
        packed = block if isinstance(block, bytes) else block.astype("<f4").tobytes()
        return pb.InsertVectorsRequest(
            dataset_id="packed-cos", packed_values=packed,
            vectors=[pb.Vector(id=i, **vector_fields) for i in ids])

    with_nan = rows.copy()
    with_nan[2, 5] = np.nan
    assert f"vector 2 ('{ids[2]}') contains NaN or Inf" in refusal(stubs, request(with_nan))
    with_inf = rows.copy()
    with_inf[4, 0] = np.inf
    assert f"vector 4 ('{ids[4]}')" in refusal(stubs, request(with_inf))
    zero = rows.copy()
    zero[1] = 0
    assert "zero vector" in refusal(stubs, request(zero))
    wider = np.random.default_rng(9).standard_normal((6, DIMS + 1))
    assert f"has dimension {DIMS + 1}, dataset expects {DIMS}" in refusal(stubs, request(wider))
    assert "not 6 vectors" in refusal(stubs, request(rows.tobytes()[:-2]))
    assert "both" in refusal(stubs, request(rows, values=[0.5] * DIMS))
    for i in ids:
        with pytest.raises(grpc.RpcError) as missing:
            stubs.GetVector(pb.GetVectorRequest(dataset_id="packed-cos", vector_id=i),
                            timeout=30)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
