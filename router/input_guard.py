"""Hostile input: refusals (400) that happen before a request is parsed or reaches the core.

Already enforced elsewhere and not repeated here: the body size (aiohttp's client_max_size and
the gRPC message limit, 413), names, vector ids, content and metadata sizes, NaN/Inf in vectors
and metadata, top_k, ef_search, batch sizes, filter-expression length and depth (shard/filter_parse),
the number of datasets in a multi-dataset search, Idempotency-Key length.

Added here:
- JSON nesting depth (`json_depth_max`), measured on the raw bytes before json.loads, so a
  100 000-deep `[[[[...` costs neither recursion nor memory. Our bodies nest 4 deep.
- A dataset description's size (`description_bytes_max`).
- The short string fields of a vector (document_id, chunk_id, content_hash, content_type,
  language, model) at most `vector_id_bytes_max` bytes each.
- NaN/Inf in a search's float options (threshold, min_score, max_distance).
- A query vector longer than `dimensions_max` (refused before it is converted).
"""

from __future__ import annotations

import math
import re

import numpy as np
from aiohttp import web

from tributary import errors, limits

_ESCAPE = re.compile(rb"\\.", re.S)
_STRING = re.compile(rb'"[^"]*"')
_KEEP = bytes(range(256)).translate(None, b'[]{}"')  # every byte but brackets and quotes


def json_depth(raw: bytes) -> int:
    """The deepest nesting of [ and { in a JSON text, ignoring brackets inside strings. Runs at
    C speed: drop escapes, keep only brackets and quotes, drop strings, sum the rest."""
    if not raw:
        return 0
    # Most bodies hold no backslash at all; finding that out costs a tenth of the substitution.
    unescaped = _ESCAPE.sub(b"", raw) if b"\\" in raw else raw
    skeleton = unescaped.translate(None, _KEEP)
    skeleton = _STRING.sub(b"", skeleton)
    if not skeleton:
        return 0
    codes = np.frombuffer(skeleton, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def check_json_depth(raw: bytes) -> None:
    # The depth is at most the number of opening brackets (those inside strings included): a
    # body with few of them, as most are (a search body has two or three), needs no scan.
    if raw.count(b"[") + raw.count(b"{") <= limits.json_depth_max:
        return
    depth = json_depth(raw)
    if depth > limits.json_depth_max:
        raise errors.InvalidArgument(f"the JSON body nests {depth} levels deep, more than "
                                     f"json_depth_max={limits.json_depth_max}")


@web.middleware
async def rest_middleware(request: web.Request, handler):
    """Reads the body once (aiohttp keeps it for the handler) and checks its nesting."""
    if request.body_exists and request.method in ("POST", "PUT", "PATCH", "DELETE"):
        raw = await request.read()  # over client_max_size: 413 from error_middleware
        check_json_depth(raw)
    return await handler(request)


_SHORT_VECTOR_FIELDS = ("document_id", "chunk_id", "content_hash", "content_type", "language",
                        "model")


def _check_vector_strings(vector, position: int) -> None:
    for name in _SHORT_VECTOR_FIELDS:
        value = getattr(vector, name)
        if value and len(value.encode("utf-8")) > limits.vector_id_bytes_max:
            raise errors.InvalidArgument(f"vector {position}: {name} is longer than "
                                         f"{limits.vector_id_bytes_max} bytes")


def _check_description(description: str) -> None:
    if len(description.encode("utf-8")) > limits.description_bytes_max:
        raise errors.InvalidArgument(f"description is longer than "
                                     f"{limits.description_bytes_max} bytes")


def check_common(request) -> None:
    """The checks every operation's request gets, by the fields it has: a query vector longer
    than dimensions_max, NaN/Inf in a search's float options or in a hybrid search's alpha."""
    query_vector = getattr(request, "query_vector", None)
    if query_vector is not None and len(query_vector) > limits.dimensions_max:
        raise errors.InvalidArgument(f"query_vector has {len(query_vector)} values, more than "
                                     f"dimensions_max={limits.dimensions_max}")
    options = getattr(request, "options", None)
    if options is not None:
        for field in ("threshold", "min_score", "max_distance"):
            if not math.isfinite(getattr(options, field, 0.0)):
                raise errors.InvalidArgument(f"options.{field} is NaN or Inf")
    alpha = getattr(request, "alpha", None)
    if isinstance(alpha, float) and not math.isfinite(alpha):
        raise errors.InvalidArgument("alpha is NaN or Inf")


def check_dataset_fields(request) -> None:
    """CreateDataset and UpdateDataset: the description's size."""
    _check_description(request.description)
    check_common(request)


def check_vector_batch(request) -> None:
    """InsertVectors (and each BulkInsertVectors batch): every vector's short strings."""
    for position, vector in enumerate(request.vectors):
        _check_vector_strings(vector, position)
    check_common(request)


def check_one_vector(request) -> None:
    """InsertVector and UpdateVector: the vector's short strings."""
    _check_vector_strings(request.vector, 0)
    check_common(request)


def check_request(operation, request) -> None:
    """The input checks of `operation` (a router/operations.py descriptor) on `request`; the
    admission step (router/admission.py) runs them for both adapters."""
    operation.validate(request)
