"""Process logging: JSON lines or text, each line carrying the trace id and request id of the
request it was written for (tributary/tracing.py keeps both in the context).

    tributary --log-format json|text ...        (env TRIBUTARY_LOG_FORMAT; default text)
    tributary up --log-format json|text         (the children's format; default json)

A JSON line holds `ts` (RFC 3339, UTC), `level`, `logger`, `message`, `process` (the process's
name, e.g. `node-1`), `trace_id` and `span_id` (when inside a trace), `request_id` (when serving
a request), any structured fields a caller passed as `extra={"fields": {...}}`, and `exc` for a
traceback. The stdlib logging module does the work; only the formatter is ours.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

FORMATS = ("text", "json")
ENV_FORMAT = "TRIBUTARY_LOG_FORMAT"


def _correlation() -> dict:
    from opentelemetry import trace

    from tributary.tracing import request_id_var

    doc = {}
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        doc["trace_id"] = f"{span_context.trace_id:032x}"
        doc["span_id"] = f"{span_context.span_id:016x}"
    request_id = request_id_var.get()
    if request_id:
        doc["request_id"] = request_id
    return doc


class JsonFormatter(logging.Formatter):
    def __init__(self, process: str):
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
               + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name,
               "message": record.getMessage(), "process": self.process}
        doc.update(_correlation())
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                doc.setdefault(key, value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(name)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = _correlation()
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            extra = {**fields, **extra}
        extra.pop("span_id", None)
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        return line


def setup(level: str, log_format: str | None = None) -> None:
    """Configures the root logger on stderr in `log_format` (default: TRIBUTARY_LOG_FORMAT,
    else text). Raises SystemExit for an unknown format."""
    log_format = (log_format or os.environ.get(ENV_FORMAT) or "text").lower()
    if log_format not in FORMATS:
        raise SystemExit(f"--log-format must be one of {', '.join(FORMATS)}, not {log_format}")
    handler = logging.StreamHandler(sys.stderr)
    process = os.environ.get("TRIBUTARY_PROCESS_NAME") or os.path.basename(sys.argv[0])
    handler.setFormatter(JsonFormatter(process) if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("deeplake").setLevel(logging.WARNING)
