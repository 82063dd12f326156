"""gRPC adapter (grpc.aio) for deeplake.v1. Each RPC calls one RouterCore method; errors map
through tributary.errors, with the same message REST puts in its body."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from prometheus_client import generate_latest

from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc
from router.core import RouterCore
from router.metrics import REQUEST_LATENCY, REQUESTS
from tributary import errors

log = logging.getLogger("tributary.router.grpc")


def _idempotency_key(context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "idempotency-key":
            return value
    return ""


async def _within_deadline(context, call):
    """Honours the client's deadline: the core call is cancelled when it runs out (a cancelled
    2PC coordinator is safe: participants resolve through the meta group). asyncio.timeout
    runs the call in this task; wait_for would wrap it in a task of its own, one more
    event-loop hand-off on every RPC."""
    remaining = context.time_remaining()
    if remaining is None:
        return await call
    try:
        async with asyncio.timeout(max(remaining, 0.001)):
            return await call
    except TimeoutError:
        raise errors.DeadlineExceeded("the request's deadline passed before it completed") \
            from None


def _rpc(core_method_name: str, idempotent_writes: bool = False):
    async def handler(self, request, context):
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            method = getattr(self.core, core_method_name)
            if idempotent_writes:
                return await _within_deadline(context, method(request, _idempotency_key(context)))
            return await _within_deadline(context, method(request))
        except errors.TributaryError as exc:
            code = exc.grpc_code
            await context.abort(exc.grpc_code, exc.message)
        except Exception as exc:  # noqa: BLE001
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code = grpc.StatusCode.INTERNAL
            log.exception("unhandled error in %s", core_method_name)
            await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        finally:
            REQUESTS.labels("grpc", core_method_name, code.name).inc()
            REQUEST_LATENCY.labels("grpc", core_method_name).observe(
                time.perf_counter() - started)
    return handler


async def _unimplemented(self, request, context):
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not implemented yet")


class DatasetService(pb_grpc.DatasetServiceServicer):
    def __init__(self, core: RouterCore):
        self.core = core

    CreateDataset = _rpc("create_dataset")
    GetDataset = _rpc("get_dataset")
    ListDatasets = _rpc("list_datasets")
    DeleteDataset = _rpc("delete_dataset")
    CompactDataset = _rpc("compact_dataset")
    # proto3 cannot send "" or {} on purpose: an empty description or metadata map keeps the
    # stored one (REST can clear them with an explicit "" / {}).
    UpdateDataset = _rpc("update_dataset")
    GetDatasetStats = _rpc("get_dataset_stats")


class VectorService(pb_grpc.VectorServiceServicer):
    def __init__(self, core: RouterCore):
        self.core = core

    async def BulkInsertVectors(self, request_iterator, context):
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await _within_deadline(context, self.core.bulk_insert_vectors(
                request_iterator, _idempotency_key(context)))
        except errors.TributaryError as exc:
            code = exc.grpc_code
            await context.abort(exc.grpc_code, exc.message)
        finally:
            REQUESTS.labels("grpc", "bulk_insert_vectors", code.name).inc()
            REQUEST_LATENCY.labels("grpc", "bulk_insert_vectors").observe(
                time.perf_counter() - started)

    InsertVector = _rpc("insert_vector")
    InsertVectors = _rpc("insert_vectors", idempotent_writes=True)
    GetVector = _rpc("get_vector")
    DeleteVector = _rpc("delete_vector")
    DeleteVectors = _rpc("delete_vectors", idempotent_writes=True)
    UpdateVector = _rpc("update_vector")
    SoftDeleteVectors = _rpc("soft_delete_vectors")
    RestoreVectors = _rpc("restore_vectors")
    ListVectors = _rpc("list_vectors")


class SearchService(pb_grpc.SearchServiceServicer):
    def __init__(self, core: RouterCore):
        self.core = core

    SearchVectors = _rpc("search_vectors")
    SearchByText = _rpc("search_by_text")
    HybridSearch = _rpc("hybrid_search")
    MultiDatasetSearch = _rpc("multi_dataset_search")


class HealthService(pb_grpc.HealthServiceServicer):
    def __init__(self, core: RouterCore):
        self.core = core

    async def Check(self, request, context):
        healthy, response = await self.core.health()
        return response

    async def GetMetrics(self, request, context):
        return pb.GetMetricsResponse(prometheus_text=generate_latest().decode())


def add_services(server: grpc.aio.Server, core: RouterCore) -> None:
    pb_grpc.add_DatasetServiceServicer_to_server(DatasetService(core), server)
    pb_grpc.add_VectorServiceServicer_to_server(VectorService(core), server)
    pb_grpc.add_SearchServiceServicer_to_server(SearchService(core), server)
    pb_grpc.add_HealthServiceServicer_to_server(HealthService(core), server)
