"""One end-to-end call of every public RPC, and a guard that fails when an RPC is added to
deeplake.v1 without being called here."""

from __future__ import annotations

import uuid

import grpc
import numpy as np
import pytest

from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


def test_every_rpc_answers_end_to_end(cluster):
    name = f"rpc-{uuid.uuid4().hex[:6]}"
    other = f"rpc2-{uuid.uuid4().hex[:6]}"
    rng = np.random.default_rng(1)
    called: set[str] = set()
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        datasets = pb_grpc.DatasetServiceStub(channel)
        vectors = pb_grpc.VectorServiceStub(channel)
        search = pb_grpc.SearchServiceStub(channel)
        health = pb_grpc.HealthServiceStub(channel)

        def call(service: str, method: str, stub, request):
            called.add(f"{service}.{method}")
            return getattr(stub, method)(request, timeout=60)

        created = call("DatasetService", "CreateDataset", datasets, pb.CreateDatasetRequest(
            name=name, dimensions=4, metric_type="l2", shard_count=2))
        assert created.dataset.shard_count == 2
        call("DatasetService", "CreateDataset", datasets, pb.CreateDatasetRequest(
            name=other, dimensions=4, metric_type="l2"))
        one = call("VectorService", "InsertVector", vectors, pb.InsertVectorRequest(
            dataset_id=name, vector=pb.Vector(id="solo", values=[1, 0, 0, 0],
                                              content="a single river")))
        assert one.success and one.vector_id == "solo"
        many = call("VectorService", "InsertVectors", vectors, pb.InsertVectorsRequest(
            dataset_id=name, vectors=[pb.Vector(id=f"v{i}", values=rng.standard_normal(4).tolist(),
                                                content=f"doc {i}") for i in range(20)]))
        assert many.inserted_count == 20
        bulk = call("VectorService", "BulkInsertVectors", vectors, iter([
            pb.InsertVectorsRequest(dataset_id=other, vectors=[pb.Vector(id="o1",
                                                                         values=[1, 0, 0, 0])])]))
        assert bulk.inserted_count == 1
        got = call("VectorService", "GetVector", vectors, pb.GetVectorRequest(
            dataset_id=name, vector_id="solo"))
        assert list(got.vector.values) == [1, 0, 0, 0]
        updated = call("VectorService", "UpdateVector", vectors, pb.UpdateVectorRequest(
            dataset_id=name, vector_id="solo", vector=pb.Vector(content="a single sea")))
        assert updated.vector.content == "a single sea"
        page = call("VectorService", "ListVectors", vectors, pb.ListVectorsRequest(
            dataset_id=name, page_size=50))
        assert len(page.vectors) == 21
        soft = call("VectorService", "SoftDeleteVectors", vectors, pb.SoftDeleteVectorsRequest(
            dataset_id=name, vector_ids=["v1"]))
        assert soft.soft_deleted_count == 1
        restored = call("VectorService", "RestoreVectors", vectors, pb.RestoreVectorsRequest(
            dataset_id=name, vector_ids=["v1"]))
        assert restored.restored_count == 1
        found = call("SearchService", "SearchVectors", search, pb.SearchVectorsRequest(
            dataset_id=name, query_vector=[1, 0, 0, 0], options=pb.SearchOptions(top_k=3)))
        assert found.results[0].vector.id == "solo"
        text = call("SearchService", "SearchByText", search, pb.SearchByTextRequest(
            dataset_id=name, query_text="sea", options=pb.SearchOptions(top_k=3)))
        assert [r.vector.id for r in text.results] == ["solo"]
        hybrid = call("SearchService", "HybridSearch", search, pb.HybridSearchRequest(
            dataset_id=name, query_vector=[1, 0, 0, 0], query_text="sea",
            options=pb.SearchOptions(top_k=3)))
        assert hybrid.results[0].vector.id == "solo"
        multi = call("SearchService", "MultiDatasetSearch", search, pb.MultiDatasetSearchRequest(
            dataset_ids=[name, other], query_vector=[1, 0, 0, 0],
            options=pb.SearchOptions(top_k=2)))
        assert {r.vector.id for r in multi.results} == {"solo", "o1"}
        deleted = call("VectorService", "DeleteVector", vectors, pb.DeleteVectorRequest(
            dataset_id=name, vector_id="v2"))
        assert deleted.success
        batch = call("VectorService", "DeleteVectors", vectors, pb.DeleteVectorsRequest(
            dataset_id=name, vector_ids=["v3", "v4", "nope"]))
        assert (batch.deleted_count, batch.not_found_count) == (2, 1)
        got_ds = call("DatasetService", "GetDataset", datasets, pb.GetDatasetRequest(
            dataset_id=name))
        assert got_ds.dataset.vector_count == 18
        listed = call("DatasetService", "ListDatasets", datasets, pb.ListDatasetsRequest())
        assert {name, other} <= {d.name for d in listed.datasets}
        changed = call("DatasetService", "UpdateDataset", datasets, pb.UpdateDatasetRequest(
            dataset_id=name, description="described"))
        assert changed.dataset.description == "described"
        stats = call("DatasetService", "GetDatasetStats", datasets, pb.GetDatasetStatsRequest(
            dataset_id=name))
        assert stats.vector_count == 18 and stats.stats["active_vectors"] == "18"
        compacted = call("DatasetService", "CompactDataset", datasets, pb.CompactDatasetRequest(
            dataset_id=name))
        assert compacted.purged_count == 0
        version = call("DatasetService", "CreateVersion", datasets, pb.CreateVersionRequest(
            dataset_id=name, tag="v1"))
        assert version.version.tag == "v1" and version.version.vector_count == 18
        versions = call("DatasetService", "ListVersions", datasets, pb.ListVersionsRequest(
            dataset_id=name))
        assert [v.tag for v in versions.versions] == ["v1"]
        call("VectorService", "InsertVector", vectors, pb.InsertVectorRequest(
            dataset_id=name, vector=pb.Vector(id="after", values=[0, 1, 0, 0])))
        with pytest.raises(grpc.RpcError) as missing:
            vectors.GetVector(pb.GetVectorRequest(dataset_id=name, vector_id="after",
                                                  as_of_version="v1"), timeout=60)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        old = search.SearchVectors(pb.SearchVectorsRequest(
            dataset_id=name, query_vector=[0, 1, 0, 0], options=pb.SearchOptions(top_k=30),
            as_of_version="v1"), timeout=60)
        assert "after" not in {r.vector.id for r in old.results} and len(old.results) == 18
        check = call("HealthService", "Check", health, pb.HealthCheckRequest())
        assert check.status == "healthy"
        metrics = call("HealthService", "GetMetrics", health, pb.GetMetricsRequest())
        assert "tributary_router_requests_total" in metrics.prometheus_text
        for dataset in (name, other):
            gone = call("DatasetService", "DeleteDataset", datasets, pb.DeleteDatasetRequest(
                dataset_id=dataset))
            assert gone.success

    declared = {f"{service.name}.{method.name}"
                for service in pb.DESCRIPTOR.services_by_name.values()
                for method in service.methods}
    assert called == declared, f"RPCs never called here: {sorted(declared - called)}"
