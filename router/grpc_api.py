"""gRPC adapter (grpc.aio) for deeplake.v1. Each RPC calls the core through the admission step
with its operation's descriptor (router/operations.py); errors map through tributary.errors,
with the same message REST puts in its body."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time

import grpc
from google.protobuf.message import DecodeError
from prometheus_client import generate_latest

from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc
from router import operations
from router.admission import GuardedCore
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


# A request that failed to decode, and why: set by the wrapped deserializer, read by the wrapped
# behaviour. grpc.aio deserializes a request in the task that then runs the handler (for a
# client stream, as the handler reads the stream), so a context variable carries it from one to
# the other and never to another RPC.
_UNDECODABLE: contextvars.ContextVar[tuple[object, str] | None] = contextvars.ContextVar(
    "undecodable_request", default=None)


def _tolerant(deserializer):
    """The deserializer, except that bytes which do not decode give an empty message of the type
    (remembered in _UNDECODABLE) instead of an exception, which grpc.aio would answer UNKNOWN
    with a server traceback. protobuf raises DecodeError for a truncated message, bad UTF-8 in
    a string, a packed field whose length is not a multiple of its element size, a wrong wire
    type and garbage; anything else a deserializer raises is treated the same way."""
    message_type = getattr(deserializer, "__self__", None)

    def deserialize(raw: bytes):
        try:
            return deserializer(raw)
        except (DecodeError, ValueError, TypeError, RuntimeError) as exc:
            empty = message_type() if isinstance(message_type, type) else object()
            reason = " ".join(str(exc).split()) or type(exc).__name__
            _UNDECODABLE.set((empty, f"malformed request message: {reason}"))
            return empty
    return deserialize


def _undecodable_reason(request) -> str | None:
    marked = _UNDECODABLE.get()
    if marked is not None and marked[0] is request:
        return marked[1]
    return None


class ProtocolErrorInterceptor(grpc.aio.ServerInterceptor):
    """Answers INVALID_ARGUMENT, with a one-line reason, to a request message that does not
    decode, for every RPC of the server (unary or streaming, any service). Placed after the
    authentication interceptor, so a caller without credentials still gets UNAUTHENTICATED
    first; the authentication edge sees an empty message in place of the undecodable one."""

    def __init__(self):
        self._wrapped: dict[str, tuple[object, object]] = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, self.wrap(method, handler))
        return cached[1]

    def wrap(self, method: str, handler):
        """`handler` (of RPC `method`) with a tolerant deserializer and the refusal of what did
        not decode; built once per method (at registration, router/server.py, or on the
        method's first call through the interceptor)."""
        if handler is None or handler.request_deserializer is None:
            return handler

        async def refuse(context, reason: str):
            REQUESTS.labels("grpc", method, grpc.StatusCode.INVALID_ARGUMENT.name).inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, reason)

        async def checked_stream(request_iterator, context):
            async for request in request_iterator:
                reason = _undecodable_reason(request)
                if reason is not None:
                    await refuse(context, reason)
                yield request

        codec = dict(request_deserializer=_tolerant(handler.request_deserializer),
                     response_serializer=handler.response_serializer)
        if handler.unary_unary is not None:
            inner_unary = handler.unary_unary

            async def unary_unary(request, context):
                marked = _UNDECODABLE.get()
                if marked is not None and marked[0] is request:
                    await refuse(context, marked[1])
                return await inner_unary(request, context)
            return grpc.unary_unary_rpc_method_handler(unary_unary, **codec)
        if handler.unary_stream is not None:
            async def unary_stream(request, context):
                reason = _undecodable_reason(request)
                if reason is not None:
                    await refuse(context, reason)
                async for response in _responses(handler.unary_stream(request, context)):
                    yield response
            return grpc.unary_stream_rpc_method_handler(unary_stream, **codec)
        if handler.stream_unary is not None:
            async def stream_unary(request_iterator, context):
                return await handler.stream_unary(checked_stream(request_iterator, context),
                                                  context)
            return grpc.stream_unary_rpc_method_handler(stream_unary, **codec)

        async def stream_stream(request_iterator, context):
            async for response in _responses(
                    handler.stream_stream(checked_stream(request_iterator, context), context)):
                yield response
        return grpc.stream_stream_rpc_method_handler(stream_stream, **codec)


async def _responses(result):
    """A streaming behaviour's responses, whether it is an async generator or a coroutine that
    writes them with context.write and returns None."""
    if hasattr(result, "__aiter__"):
        async for response in result:
            yield response
    else:
        await result


def _rpc(operation: operations.Operation, idempotent_writes: bool = False):
    """The servicer method for a unary `operation`. Its metric children are looked up once
    (on first use, so a route never called exports no series) instead of per request."""
    name = operation.name
    children: dict = {}

    def count(code: grpc.StatusCode, seconds: float) -> None:
        counter = children.get(code)
        if counter is None:
            counter = children[code] = REQUESTS.labels("grpc", name, code.name)
        latency = children.get(None)
        if latency is None:
            latency = children[None] = REQUEST_LATENCY.labels("grpc", name)
        counter.inc()
        latency.observe(seconds)

    async def handler(self, request, context):
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            if idempotent_writes:
                return await _within_deadline(context, self.core.run(
                    operation, request, _idempotency_key(context)))
            return await _within_deadline(context, self.core.run(operation, request))
        except errors.TributaryError as exc:
            code = exc.grpc_code
            await context.abort(exc.grpc_code, exc.message)
        except Exception as exc:  # noqa: BLE001
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code = grpc.StatusCode.INTERNAL
            log.exception("unhandled error in %s", name)
            await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        finally:
            count(code, time.perf_counter() - started)
    return handler


async def _unimplemented(self, request, context):
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not implemented yet")


class DatasetService(pb_grpc.DatasetServiceServicer):
    def __init__(self, core: GuardedCore):
        self.core = core

    CreateDataset = _rpc(operations.CREATE_DATASET)
    GetDataset = _rpc(operations.GET_DATASET)
    ListDatasets = _rpc(operations.LIST_DATASETS)
    DeleteDataset = _rpc(operations.DELETE_DATASET)
    CompactDataset = _rpc(operations.COMPACT_DATASET)
    # proto3 cannot send "" or {} on purpose: an empty description or metadata map keeps the
    # stored one (REST can clear them with an explicit "" / {}).
    UpdateDataset = _rpc(operations.UPDATE_DATASET)
    GetDatasetStats = _rpc(operations.GET_DATASET_STATS)
    CreateVersion = _rpc(operations.CREATE_VERSION)
    ListVersions = _rpc(operations.LIST_VERSIONS)


class VectorService(pb_grpc.VectorServiceServicer):
    def __init__(self, core: GuardedCore):
        self.core = core

    async def BulkInsertVectors(self, request_iterator, context):
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await _within_deadline(context, self.core.bulk(
                operations.BULK_INSERT_VECTORS, request_iterator, _idempotency_key(context)))
        except errors.TributaryError as exc:
            code = exc.grpc_code
            await context.abort(exc.grpc_code, exc.message)
        finally:
            REQUESTS.labels("grpc", operations.BULK_INSERT_VECTORS.name, code.name).inc()
            REQUEST_LATENCY.labels("grpc", operations.BULK_INSERT_VECTORS.name).observe(
                time.perf_counter() - started)

    InsertVector = _rpc(operations.INSERT_VECTOR)
    InsertVectors = _rpc(operations.INSERT_VECTORS, idempotent_writes=True)
    GetVector = _rpc(operations.GET_VECTOR)
    DeleteVector = _rpc(operations.DELETE_VECTOR)
    DeleteVectors = _rpc(operations.DELETE_VECTORS, idempotent_writes=True)
    UpdateVector = _rpc(operations.UPDATE_VECTOR)
    SoftDeleteVectors = _rpc(operations.SOFT_DELETE_VECTORS)
    RestoreVectors = _rpc(operations.RESTORE_VECTORS)
    ListVectors = _rpc(operations.LIST_VECTORS)


class SearchService(pb_grpc.SearchServiceServicer):
    def __init__(self, core: GuardedCore):
        self.core = core

    SearchVectors = _rpc(operations.SEARCH_VECTORS)
    SearchByText = _rpc(operations.SEARCH_BY_TEXT)
    HybridSearch = _rpc(operations.HYBRID_SEARCH)
    MultiDatasetSearch = _rpc(operations.MULTI_DATASET_SEARCH)


class HealthService(pb_grpc.HealthServiceServicer):
    def __init__(self, core: GuardedCore):
        self.core = core

    async def Check(self, request, context):
        healthy, response = await self.core.health()
        return response

    async def GetMetrics(self, request, context):
        return pb.GetMetricsResponse(prometheus_text=generate_latest().decode())


def add_services(server: grpc.aio.Server, core: GuardedCore) -> None:
    pb_grpc.add_DatasetServiceServicer_to_server(DatasetService(core), server)
    pb_grpc.add_VectorServiceServicer_to_server(VectorService(core), server)
    pb_grpc.add_SearchServiceServicer_to_server(SearchService(core), server)
    pb_grpc.add_HealthServiceServicer_to_server(HealthService(core), server)
