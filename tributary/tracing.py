"""OpenTelemetry tracing for every process: set-up, W3C trace context over REST and internal
gRPC, and the span helpers the servers use.

Set-up (`setup`, once per process, from tributary/cli.py):
- `service.name` is `tributary-router`, `tributary-node` or `tributary-meta` (OTEL_SERVICE_NAME
  cannot rename it: tools find a process's spans by that word); `service.instance.id` is the
  process's name (`router-0`, from TRIBUTARY_PROCESS_NAME, which `tributary up` sets).
- The exporter follows the standard variables: OTEL_SDK_DISABLED=true turns tracing off;
  OTEL_TRACES_EXPORTER=none exports nothing, =console prints; OTLP is used when
  OTEL_TRACES_EXPORTER=otlp or OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set, over
  http/protobuf unless OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL=grpc. Otherwise spans go to a
  JSON-lines file, `<traces dir>/<process name>.jsonl`: one ExportTraceServiceRequest per line
  in the OTLP/JSON encoding (hex trace and span ids, integer enums), as the OpenTelemetry
  collector's file exporter writes them. `tributary up` points every child at
  `<data-dir>/traces` (TRIBUTARY_TRACES_DIR); a node or meta member started alone writes to
  `<its data dir>/traces`.
- Sampling: OTEL_TRACES_SAMPLER (and _ARG) when set; else parent-based: a request that arrives
  with a `traceparent` follows its sampled flag (a sampled one is always traced), and one
  without starts a trace with probability limits.trace_sample_ratio (env
  TRIBUTARY_TRACE_SAMPLE_RATIO), decided by one coin toss before any span is made.
- Spans are batched and exported every limits.trace_export_interval_ms (OTEL_BSP_SCHEDULE_DELAY
  overrides), and the file is flushed on every export, so a span is in the file within seconds.

Propagation: routers read `traceparent` from REST requests and answer with the request span's
`traceparent` (same trace id). Every internal stub (tributary/cluster_auth.stub) sends the
current context as `traceparent` metadata, with the request id (`x-request-id`), and every
internal server opens a server span under it (`AioServerInterceptor`, `ServerInterceptor`).
A process that is not inside a sampled trace creates no internal span at all (`span` is then
a shared no-op), so untraced requests pay one check per helper.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import json
import logging
import os
import random
import threading
import uuid
from typing import Iterable

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tributary import limits

log = logging.getLogger("tributary.tracing")

TRACEPARENT = "traceparent"
REQUEST_ID = "x-request-id"
# The request id of the request being served (router: from X-Request-Id or a new one; nodes and
# meta: from the caller's metadata). tributary/logs.py writes it on every log line.
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("tributary_request_id",
                                                                     default="")
_propagator = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("tributary")
_provider = None
# The share of requests without a traceparent that start a trace (None: the configured sampler
# decides on every root span). 0 until setup(): without a provider no span records anyway.
_new_trace_ratio: float | None = 0.0
_access = logging.getLogger("tributary.access")


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def setup(kind: str, data_dir: str | None = None) -> None:
    """Installs this process's tracer provider (see the module docstring). `kind` is `router`,
    `node` or `meta`; `data_dir` is where a process started alone keeps its traces. Idempotent:
    a second call does nothing."""
    global _provider, _tracer, _new_trace_ratio
    if _provider is not None or _env_true("OTEL_SDK_DISABLED"):
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace import sampling

    process = os.environ.get("TRIBUTARY_PROCESS_NAME") or f"{kind}-{os.getpid()}"
    resource = Resource.create({"service.name": f"tributary-{kind}",
                                "service.namespace": "tributary",
                                "service.instance.id": process})
    if os.environ.get("OTEL_TRACES_SAMPLER"):
        sampler = sampling._get_from_env_or_default()
        _new_trace_ratio = None
    else:
        # The ratio is applied where new traces start (REST requests without a traceparent,
        # before any span exists, so the 99% cost nothing); a root that gets that far is kept.
        sampler = sampling.ParentBased(sampling.ALWAYS_ON)
        _new_trace_ratio = limits.trace_sample_ratio
    provider = TracerProvider(resource=resource, sampler=sampler)
    exporter = _exporter(process, os.environ.get("TRIBUTARY_TRACES_DIR") or (
        os.path.join(data_dir, "traces") if data_dir else None))
    if exporter is not None:
        delay = None if os.environ.get("OTEL_BSP_SCHEDULE_DELAY") \
            else limits.trace_export_interval_ms
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=delay))
    trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = trace.get_tracer("tributary")


def shutdown() -> None:
    """Exports the spans still queued (the provider also does this at interpreter exit)."""
    if _provider is not None:
        _provider.shutdown()


def _exporter(process: str, traces_dir: str | None):
    choice = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if choice == "none":
        return None
    if choice == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter
        return ConsoleSpanExporter()
    if choice == "otlp" or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or \
            os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                    or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
        if protocol.strip().lower() == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        return OTLPSpanExporter()
    if traces_dir is None:
        return None
    return JsonLinesFileExporter(os.path.join(traces_dir, f"{process}.jsonl"))


class JsonLinesFileExporter:
    """A SpanExporter writing one ExportTraceServiceRequest per line in the OTLP/JSON encoding
    (the collector's file exporter format), flushed after every batch. Past
    limits.trace_file_bytes_max the file is renamed to `<name>.1.jsonl` (replacing the older
    one) and a new one started, so traces take at most twice that per process."""

    def __init__(self, path: str):
        from opentelemetry.sdk.trace.export import SpanExportResult
        self._ok, self._failed = SpanExportResult.SUCCESS, SpanExportResult.FAILURE
        self.path = path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8")

    def export(self, spans) -> object:
        try:
            line = encode_json_line(spans)
            with self._lock:
                if self._file.tell() + len(line) > limits.trace_file_bytes_max:
                    self._file.close()
                    os.replace(self.path, self.path[:-len(".jsonl")] + ".1.jsonl")
                    self._file = open(self.path, "a", encoding="utf-8")
                self._file.write(line + "\n")
                self._file.flush()
            return self._ok
        except (OSError, ValueError):
            log.exception("writing spans to %s failed", self.path)
            return self._failed

    def shutdown(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def encode_json_line(spans) -> str:
    """One line of OTLP/JSON for `spans` (SDK ReadableSpans). protobuf's JSON mapping writes
    bytes as base64, but OTLP/JSON writes trace and span ids as hex, so those are rewritten."""
    from google.protobuf import json_format
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    doc = json_format.MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    for resource_spans in doc.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                _hex_ids(span)
                for link in span.get("links", ()):
                    _hex_ids(link)
    return json.dumps(doc, separators=(",", ":"))


def _hex_ids(doc: dict) -> None:
    for key in _ID_FIELDS:
        if doc.get(key):
            doc[key] = base64.b64decode(doc[key]).hex()


# ----------------------------------------------------------------------------- span helpers

class _NoSpan:
    """What `span` gives outside a sampled trace: a context manager that does nothing."""

    __slots__ = ()

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False

    def set_attribute(self, key, value):
        pass


_NO_SPAN = _NoSpan()


def recording() -> bool:
    """True inside a sampled trace (the current span records)."""
    return trace.get_current_span().is_recording()


def span(name: str, attributes: dict | None = None, kind: SpanKind = SpanKind.INTERNAL):
    """A child span of the current one, as a context manager yielding the span; a no-op (yields
    None) when no sampled trace is current, so internal work never starts traces of its own."""
    if not trace.get_current_span().is_recording():
        return _NO_SPAN
    return _tracer.start_as_current_span(name, kind=kind, attributes=attributes)


def root_span(name: str, carrier: dict | None, kind: SpanKind = SpanKind.SERVER,
              attributes: dict | None = None):
    """A server span under the `traceparent` in `carrier` (a dict of lower-cased header
    names), or a new trace when there is none (the sampler then decides)."""
    parent = _propagator.extract(carrier) if carrier and TRACEPARENT in carrier else None
    return _tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attributes)


def traceparent_of(current=None) -> str | None:
    """The `traceparent` header value for the current (or given) span, sampled or not; None
    when there is no valid span context."""
    span_context = (current or trace.get_current_span()).get_span_context()
    if not span_context.is_valid:
        return None
    return (f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
            f"{int(span_context.trace_flags):02x}")


def trace_id() -> str:
    """The current trace id in hex, or "" outside any trace."""
    span_context = trace.get_current_span().get_span_context()
    return f"{span_context.trace_id:032x}" if span_context.is_valid else ""


def outgoing_metadata(metadata: Iterable | None = None) -> list | None:
    """`metadata` plus the current trace context and request id, for an internal call; the
    metadata unchanged when there is neither."""
    extra = []
    request_id = request_id_var.get()
    if request_id:
        extra.append((REQUEST_ID, request_id))
    if trace.get_current_span().is_recording():
        value = traceparent_of()
        if value:
            extra.append((TRACEPARENT, value))
    if not extra:
        return metadata
    return list(metadata or ()) + extra


def new_request_id() -> str:
    return uuid.uuid4().hex


def mark_error(current, exc: BaseException) -> None:
    if current is not None and current.is_recording():
        current.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:200]))


def access_log(what: str, **fields) -> None:
    """One access-log line: INFO for a request inside a sampled trace, DEBUG otherwise, so that
    every traced request can be followed through every process's log by its request id without
    a line per request at full load."""
    level = logging.INFO if trace.get_current_span().is_recording() else logging.DEBUG
    if _access.isEnabledFor(level):
        _access.log(level, what, extra={"fields": fields})


# ----------------------------------------------------------------------------- internal gRPC

class _TracedUnary:
    """A unary-unary multicallable that sends the trace context and request id as metadata and,
    inside a sampled trace, records a client span around the call."""

    __slots__ = ("_inner", "_name", "_aio")

    def __init__(self, inner, name: str, aio: bool):
        self._inner, self._name, self._aio = inner, name, aio

    def __call__(self, request, *args, metadata=None, **kwargs):
        if not trace.get_current_span().is_recording():
            return self._inner(request, *args, metadata=outgoing_metadata(metadata), **kwargs)
        if self._aio:
            return self._call_aio(request, args, metadata, kwargs)
        with _tracer.start_as_current_span(self._name, kind=SpanKind.CLIENT,
                                           attributes={"rpc.system": "grpc"}):
            return self._inner(request, *args, metadata=outgoing_metadata(metadata), **kwargs)

    async def _call_aio(self, request, args, metadata, kwargs):
        with _tracer.start_as_current_span(self._name, kind=SpanKind.CLIENT,
                                           attributes={"rpc.system": "grpc"}):
            return await self._inner(request, *args, metadata=outgoing_metadata(metadata),
                                     **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _WithContext:
    """A streaming multicallable that sends the trace context and request id as metadata."""

    __slots__ = ("_inner",)

    def __init__(self, inner):
        self._inner = inner

    def __call__(self, *args, metadata=None, **kwargs):
        return self._inner(*args, metadata=outgoing_metadata(metadata), **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def traced_multicallable(inner, path: str, unary_unary: bool, aio: bool):
    """Wraps a stub method (see cluster_auth.stub): every internal call carries the context."""
    name = path.lstrip("/").rsplit(".", 1)[-1]   # "ShardNode/Search", "Meta/Propose"
    return _TracedUnary(inner, name, aio) if unary_unary else _WithContext(inner)


def _incoming(metadata) -> dict:
    return {k: v for k, v in (metadata or ()) if k in (TRACEPARENT, REQUEST_ID)}


def _method_name(method: str) -> str:
    return method.lstrip("/").rsplit(".", 1)[-1]


def _server_span(carrier: dict, method: str):
    """A server span when the caller sent a trace context (and the sampler keeps it), else a
    no-op: internal calls outside a request's trace start no traces."""
    if TRACEPARENT not in carrier:
        return _NO_SPAN
    return root_span(_method_name(method), carrier, attributes={"rpc.system": "grpc",
                                                                "rpc.method": method})


@contextlib.contextmanager
def _serving(context, method: str):
    """One served unary RPC: the caller's request id and trace context (a server span when it
    sent one), the error marked on the span, an access line for a traced call."""
    carrier = _incoming(context.invocation_metadata())
    token = request_id_var.set(carrier.get(REQUEST_ID, ""))
    try:
        with _server_span(carrier, method) as current:
            try:
                yield
            except BaseException as exc:
                mark_error(current, exc)
                raise
            if current is not None:
                access_log("served", method=method)
    finally:
        request_id_var.reset(token)


def _with_handler(handler, unary_unary):
    return grpc.unary_unary_rpc_method_handler(
        unary_unary, request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer)


class AioServerInterceptor(grpc.aio.ServerInterceptor):
    """For the asyncio servers (nodes, the router's public gRPC): unary handlers run under the
    caller's trace context (a server span when it sent one) and request id. `wrap` builds a
    method's handler once (the router applies it at registration); as an interceptor it keeps
    one wrapped handler per method instead of building one per call."""

    def __init__(self):
        self._wrapped: dict[str, tuple[object, object]] = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, self.wrap(method, handler))
        return cached[1]

    @staticmethod
    def wrap(method: str, handler):
        """`handler` (of RPC `method`) under the caller's trace context and request id. A call
        whose metadata carries neither (the common, untraced case) runs the handler directly:
        no carrier dict, no context manager."""
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        async def unary_unary(request, context):
            metadata = context.invocation_metadata()
            if metadata:
                for key, _ in metadata:
                    if key == TRACEPARENT or key == REQUEST_ID:
                        with _serving(context, method):
                            return await inner(request, context)
            if not request_id_var.get():
                return await inner(request, context)
            token = request_id_var.set("")
            try:
                return await inner(request, context)
            finally:
                request_id_var.reset(token)
        return _with_handler(handler, unary_unary)


class ServerInterceptor(grpc.ServerInterceptor):
    """For the thread-pool servers (meta members)."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        inner = handler.unary_unary

        def unary_unary(request, context):
            with _serving(context, method):
                return inner(request, context)
        return _with_handler(handler, unary_unary)


# ----------------------------------------------------------------------------- REST (aiohttp)

def rest_middleware():
    """The router's outermost aiohttp middleware: a server span per request under the request's
    `traceparent` (if any), the request id from X-Request-Id (or a new one), and both returned
    in the response headers (`traceparent`, `X-Request-Id`)."""
    from aiohttp import web

    @web.middleware
    async def middleware(request, handler):
        carrier = {TRACEPARENT: request.headers[TRACEPARENT]} \
            if TRACEPARENT in request.headers else None
        given = request.headers.get("X-Request-Id", "")
        request_id = given if given and len(given) <= 128 and given.isprintable() \
            else new_request_id()
        token = request_id_var.set(request_id)
        try:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            if carrier is None and _new_trace_ratio is not None and \
                    random.random() >= _new_trace_ratio:
                # Not sampled, and nobody asked for a trace: no span at all.
                response = await handler(request)
                access_log("served", method=request.method, route=route,
                           status=response.status)
                if not response.prepared:
                    response.headers["X-Request-Id"] = request_id
                return response
            with root_span(f"{request.method} {route}", carrier, attributes={
                    "http.request.method": request.method, "http.route": route,
                    "tributary.request_id": request_id}) as current:
                response = await handler(request)
                if current.is_recording():
                    current.set_attribute("http.response.status_code", response.status)
                    if response.status >= 500:
                        current.set_status(Status(StatusCode.ERROR))
                access_log("served", method=request.method, route=route,
                           status=response.status)
                if not response.prepared:
                    value = traceparent_of(current)
                    if value:
                        response.headers[TRACEPARENT] = value
                    response.headers["X-Request-Id"] = request_id
                return response
        finally:
            request_id_var.reset(token)

    return middleware

