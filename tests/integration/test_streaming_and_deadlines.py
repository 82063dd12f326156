"""The WebSocket query stream, the client-streaming bulk insert, gRPC deadlines, and gRPC
status details carrying the same message as the REST error body."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import grpc
import httpx
import numpy as np
import pytest

from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stream_ds(cluster):
    name = f"stream-{uuid.uuid4().hex[:6]}"
    data = np.random.default_rng(8).standard_normal((200, 8)).astype(np.float32)
    with httpx.Client(base_url=cluster.rest, timeout=60) as client:
        assert client.post("/datasets", json={"name": name, "dimensions": 8,
                                              "metric_type": "l2", "shard_count": 3}
                           ).status_code == 201
        assert client.post(f"/datasets/{name}/vectors", json={"vectors": [
            {"id": f"v{i}", "values": data[i].tolist()} for i in range(200)]}).status_code == 201
    return name, data


def test_websocket_stream_sends_a_partial_per_shard_then_the_complete_answer(cluster,
                                                                             stream_ds):
    name, data = stream_ds

    async def run():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(
                    f"{cluster.rest}/datasets/{name}/search/stream") as ws:
                frames = []
                await ws.send_json({"query_vector": data[17].tolist(), "options": {"top_k": 5}})
                while True:
                    frame = await ws.receive_json(timeout=30)
                    frames.append(frame)
                    if frame["type"] in ("complete", "error"):
                        break
                await ws.send_str("{not json")
                error = await ws.receive_json(timeout=30)
                await ws.send_json({"query_vector": [1.0], "options": {"top_k": 5}})
                wrong_dimension = await ws.receive_json(timeout=30)
                return frames, error, wrong_dimension

    frames, error, wrong_dimension = asyncio.run(run())
    assert [f["type"] for f in frames] == ["partial", "partial", "complete"]
    assert [f["shards_done"] for f in frames] == [1, 2, 3]
    complete = frames[-1]
    assert complete["results"][0]["vector"]["id"] == "v17"
    assert len(complete["results"]) == 5 and "stats" in complete
    rest = httpx.post(f"{cluster.rest}/datasets/{name}/search", timeout=30, json={
        "query_vector": data[17].tolist(), "options": {"top_k": 5}}).json()
    assert [r["vector"]["id"] for r in complete["results"]] == \
        [r["vector"]["id"] for r in rest["results"]]
    assert error["type"] == "error" and "malformed JSON" in error["error"]["message"]
    assert wrong_dimension["type"] == "error"
    assert wrong_dimension["error"]["type"] == "InvalidArgument"


def test_bulk_insert_streams_batches_and_totals_them(cluster):
    name = f"bulk-{uuid.uuid4().hex[:6]}"
    rng = np.random.default_rng(9)
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        pb_grpc.DatasetServiceStub(channel).CreateDataset(pb.CreateDatasetRequest(
            name=name, dimensions=4, metric_type="l2"))
        batches = [pb.InsertVectorsRequest(
            dataset_id=name if b == 0 else "",
            vectors=[pb.Vector(id=f"b{b}-{i}", values=rng.standard_normal(4).tolist())
                     for i in range(250)]) for b in range(4)]
        response = pb_grpc.VectorServiceStub(channel).BulkInsertVectors(iter(batches))
        assert response.inserted_count == 1_000
        bad = [pb.InsertVectorsRequest(dataset_id=name, vectors=[pb.Vector(id="ok",
                                                                          values=[1, 2, 3, 4])]),
               pb.InsertVectorsRequest(vectors=[pb.Vector(id="bad", values=[1])])]
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.VectorServiceStub(channel).BulkInsertVectors(iter(bad))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "batch 1 failed after 1 vector(s)" in info.value.details()
    count = httpx.get(f"{cluster.rest}/datasets/{name}", timeout=30).json()["dataset"][
        "vector_count"]
    assert count == 1_001


def test_a_deadline_that_runs_out_is_deadline_exceeded(cluster, stream_ds):
    name, data = stream_ds
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        stub = pb_grpc.SearchServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.SearchVectors(pb.SearchVectorsRequest(
                dataset_id=name, query_vector=data[0].tolist(),
                options=pb.SearchOptions(top_k=5)), timeout=0.0005)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        ok = stub.SearchVectors(pb.SearchVectorsRequest(
            dataset_id=name, query_vector=data[0].tolist(), options=pb.SearchOptions(top_k=5)),
            timeout=30)
        assert ok.results[0].vector.id == "v0"


def test_grpc_status_details_carry_the_rest_error_message(cluster, stream_ds):
    name, _ = stream_ds
    rest = httpx.post(f"{cluster.rest}/datasets/{name}/search", timeout=30, json={
        "query_vector": [1.0, 2.0], "options": {"top_k": 3}})
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.SearchServiceStub(channel).SearchVectors(pb.SearchVectorsRequest(
                dataset_id=name, query_vector=[1.0, 2.0], options=pb.SearchOptions(top_k=3)))
    assert info.value.details() == rest.json()["error"]["message"]
