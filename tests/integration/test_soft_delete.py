"""VecStore's soft delete, restore and compact, mapped onto datasets, over REST and gRPC."""

from __future__ import annotations

import uuid

import grpc
import httpx
import numpy as np
import pytest

from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


def test_soft_delete_hides_restore_returns_and_compact_purges(cluster):
    name = f"soft-{uuid.uuid4().hex[:6]}"
    data = np.random.default_rng(3).standard_normal((60, 8)).astype(np.float32)
    with httpx.Client(base_url=cluster.rest, timeout=60) as client:
        assert client.post("/datasets", json={"name": name, "dimensions": 8,
                                              "metric_type": "l2"}).status_code == 201
        client.post(f"/datasets/{name}/vectors", json={"vectors": [
            {"id": f"v{i}", "values": data[i].tolist()} for i in range(60)]})

        def top(i):
            return client.post(f"/datasets/{name}/search", json={
                "query_vector": data[i].tolist(), "options": {"top_k": 1}}
            ).json()["results"][0]["vector"]["id"]

        r = client.post(f"/datasets/{name}/vectors/v1/soft-delete")
        assert r.status_code == 200 and r.json()["soft_deleted_count"] == 1
        assert client.get(f"/datasets/{name}/vectors/v1").status_code == 404
        assert top(1) != "v1"
        assert client.get(f"/datasets/{name}").json()["dataset"]["vector_count"] == 59
        assert client.post(f"/datasets/{name}/vectors/nope/soft-delete").status_code == 404

        r = client.post(f"/datasets/{name}/vectors/v1/restore")
        assert r.status_code == 200 and r.json()["restored_count"] == 1
        assert top(1) == "v1"
        assert client.post(f"/datasets/{name}/vectors/v1/restore").status_code == 404

        client.post(f"/datasets/{name}/vectors/v2/soft-delete")
        r = client.post(f"/datasets/{name}/compact")
        assert r.status_code == 200 and r.json()["purged_count"] == 1
        assert client.post(f"/datasets/{name}/vectors/v2/restore").status_code == 404
        assert top(30) == "v30"
        # The purged id is free again.
        assert client.post(f"/datasets/{name}/vectors", json={"vectors": [
            {"id": "v2", "values": data[2].tolist()}]}).status_code == 201

    with grpc.insecure_channel(cluster.grpc_target) as channel:
        vectors = pb_grpc.VectorServiceStub(channel)
        done = vectors.SoftDeleteVectors(pb.SoftDeleteVectorsRequest(
            dataset_id=name, vector_ids=["v10", "v11", "missing"]))
        assert (done.soft_deleted_count, done.not_found_count) == (2, 1)
        back = vectors.RestoreVectors(pb.RestoreVectorsRequest(dataset_id=name,
                                                               vector_ids=["v10"]))
        assert back.restored_count == 1
        report = pb_grpc.DatasetServiceStub(channel).CompactDataset(
            pb.CompactDatasetRequest(dataset_id=name))
        assert report.purged_count == 1
