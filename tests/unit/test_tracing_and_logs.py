"""tributary/tracing.py and tributary/logs.py without a cluster: the OTLP/JSON line format, the
sampling defaults, what internal calls carry, and the log line formats."""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tributary import limits, logs, tracing

SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
UNSAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


@pytest.fixture
def provider(monkeypatch):
    """A provider like setup()'s default (parent-based; new traces are kept, the ratio being
    applied where they start), recording in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "tributary-router"}),
        sampler=sampling.ParentBased(sampling.ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("tributary"))
    yield exporter
    provider.shutdown()


def test_a_sampled_traceparent_is_always_traced_under_its_trace_id(provider):
    with tracing.root_span("POST /x", {"traceparent": SAMPLED}) as current:
        assert current.is_recording()
        with tracing.span("shard.call") as child:
            assert child is not None
        assert tracing.traceparent_of(current).split("-")[1] == SAMPLED.split("-")[1]
    spans = provider.get_finished_spans()
    assert {s.name for s in spans} == {"POST /x", "shard.call"}
    assert all(f"{s.context.trace_id:032x}" == SAMPLED.split("-")[1] for s in spans)


def test_an_unsampled_request_records_nothing_but_still_answers_its_trace_id(provider):
    with tracing.root_span("POST /x", {"traceparent": UNSAMPLED}) as current:
        assert not current.is_recording()
        with tracing.span("shard.call") as child:
            assert child is None
        assert tracing.traceparent_of(current).split("-")[1] == UNSAMPLED.split("-")[1]
        assert tracing.outgoing_metadata(None) is None
    assert provider.get_finished_spans() == ()


def test_internal_calls_carry_the_trace_context_and_request_id_inside_a_sampled_trace(provider):
    token = tracing.request_id_var.set("req-1")
    try:
        with tracing.root_span("POST /x", {"traceparent": SAMPLED}):
            metadata = dict(tracing.outgoing_metadata([("a", "b")]))
    finally:
        tracing.request_id_var.reset(token)
    assert metadata["a"] == "b" and metadata["x-request-id"] == "req-1"
    assert metadata["traceparent"].split("-")[1] == SAMPLED.split("-")[1]


def test_a_span_outside_any_trace_is_a_no_op(provider):
    with tracing.span("hnsw.search", {"hnsw.ef": 64}) as current:
        assert current is None
    assert provider.get_finished_spans() == ()


def test_the_file_format_is_one_otlp_json_export_request_per_line_with_hex_ids(provider):
    with tracing.root_span("POST /x", {"traceparent": SAMPLED}):
        with tracing.span("2pc.prepare", {"tributary.txn_id": "t1"}):
            pass
    line = tracing.encode_json_line(provider.get_finished_spans())
    assert "\n" not in line
    doc = json.loads(line)
    resource = doc["resourceSpans"][0]
    attributes = {a["key"]: a["value"]["stringValue"] for a in resource["resource"]["attributes"]
                  if "stringValue" in a["value"]}
    assert attributes["service.name"] == "tributary-router"
    spans = resource["scopeSpans"][0]["spans"]
    by_name = {s["name"]: s for s in spans}
    assert by_name["POST /x"]["traceId"] == SAMPLED.split("-")[1]
    assert by_name["POST /x"]["parentSpanId"] == SAMPLED.split("-")[2]
    assert by_name["2pc.prepare"]["parentSpanId"] == by_name["POST /x"]["spanId"]
    assert len(by_name["2pc.prepare"]["spanId"]) == 16
    assert by_name["POST /x"]["kind"] == 2  # SPAN_KIND_SERVER, as an integer


def test_the_file_exporter_appends_lines_and_rotates_past_its_size(provider, tmp_path,
                                                                    monkeypatch):
    with tracing.root_span("POST /x", {"traceparent": SAMPLED}):
        pass
    spans = provider.get_finished_spans()
    path = tmp_path / "traces" / "router-0.jsonl"
    exporter = tracing.JsonLinesFileExporter(str(path))
    exporter.export(spans)
    exporter.export(spans)
    assert len(path.read_text().splitlines()) == 2
    monkeypatch.setattr(limits, "trace_file_bytes_max", len(path.read_text()) + 10)
    exporter.export(spans)
    exporter.shutdown()
    assert len((tmp_path / "traces" / "router-0.1.jsonl").read_text().splitlines()) == 2
    assert len(path.read_text().splitlines()) == 1


def _record(message: str, **fields) -> logging.LogRecord:
    record = logging.LogRecord("tributary.access", logging.INFO, __file__, 1, message, (), None)
    if fields:
        record.fields = fields
    return record


def test_json_log_lines_carry_trace_and_request_ids(provider):
    formatter = logs.JsonFormatter("router-0")
    token = tracing.request_id_var.set("req-7")
    try:
        with tracing.root_span("POST /x", {"traceparent": SAMPLED}):
            line = formatter.format(_record("served", route="/x", status=200))
    finally:
        tracing.request_id_var.reset(token)
    doc = json.loads(line)
    assert doc["message"] == "served" and doc["level"] == "INFO"
    assert doc["process"] == "router-0" and doc["logger"] == "tributary.access"
    assert doc["trace_id"] == SAMPLED.split("-")[1] and doc["request_id"] == "req-7"
    assert doc["route"] == "/x" and doc["status"] == 200
    assert doc["ts"].endswith("Z")


def test_text_log_lines_append_the_ids_and_json_lines_leave_them_out_outside_a_request():
    token = tracing.request_id_var.set("req-8")
    try:
        text = logs.TextFormatter().format(_record("served"))
    finally:
        tracing.request_id_var.reset(token)
    assert text.endswith("served request_id=req-8")
    doc = json.loads(logs.JsonFormatter("node-0").format(_record("hello")))
    assert "request_id" not in doc and "trace_id" not in doc


def test_log_setup_refuses_an_unknown_format():
    with pytest.raises(SystemExit):
        logs.setup("INFO", "xml")


def test_log_setup_writes_json_lines_to_stderr(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.setup("INFO", "json")
        logging.getLogger("tributary.test").info("started %s", "ok")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert json.loads(stream.getvalue().splitlines()[-1])["message"] == "started ok"


def _serve_once(headers: dict) -> dict:
    """One GET through tracing.rest_middleware in front of a trivial aiohttp handler; returns
    the response headers."""
    import asyncio

    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    async def handler(request):
        return web.json_response({"ok": True})

    async def main():
        app = web.Application(middlewares=[tracing.rest_middleware()])
        app.router.add_get("/x", handler)
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/x", headers=headers)
            assert response.status == 200
            return {k.lower(): v for k, v in response.headers.items()}
    return asyncio.run(main())


def test_rest_requests_answer_the_trace_id_they_came_with_and_a_request_id(provider,
                                                                          monkeypatch):
    monkeypatch.setattr(tracing, "_new_trace_ratio", 0.0)
    headers = _serve_once({"traceparent": SAMPLED, "X-Request-Id": "abc-1"})
    assert headers["traceparent"].split("-")[1] == SAMPLED.split("-")[1]
    assert headers["traceparent"].endswith("-01")
    assert headers["x-request-id"] == "abc-1"
    assert [s.name for s in provider.get_finished_spans()] == ["GET /x"]
    unsampled = _serve_once({"traceparent": UNSAMPLED})
    assert unsampled["traceparent"].split("-")[1] == UNSAMPLED.split("-")[1]
    assert unsampled["traceparent"].endswith("-00")


def test_a_rest_request_without_traceparent_makes_no_span_unless_its_coin_toss_says_so(
        provider, monkeypatch):
    monkeypatch.setattr(tracing, "_new_trace_ratio", 0.0)
    headers = _serve_once({})
    assert "traceparent" not in headers and len(headers["x-request-id"]) == 32
    assert provider.get_finished_spans() == ()
    monkeypatch.setattr(tracing, "_new_trace_ratio", 1.0)
    headers = _serve_once({})
    assert headers["traceparent"]
    assert [s.name for s in provider.get_finished_spans()] == ["GET /x"]


@pytest.mark.parametrize("env,expected", [
    ({}, "JsonLinesFileExporter"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "OTLPSpanExporter"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
      "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTLPSpanExporter"),
    ({"OTEL_TRACES_EXPORTER": "console"}, "ConsoleSpanExporter"),
    ({"OTEL_TRACES_EXPORTER": "none"}, None),
])
def test_the_exporter_follows_the_standard_otel_variables(monkeypatch, tmp_path, env, expected):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                 "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    exporter = tracing._exporter("node-0", str(tmp_path / "traces"))
    assert (type(exporter).__name__ if exporter is not None else None) == expected
    if env.get("OTEL_EXPORTER_OTLP_PROTOCOL") == "grpc":
        assert "grpc" in type(exporter).__module__
    if expected == "JsonLinesFileExporter":
        assert exporter.path == str(tmp_path / "traces" / "node-0.jsonl")
    if exporter is not None:
        exporter.shutdown()
