"""What the REST adapter and the HTTP policy code (auth's middleware, the admin API, the
operator's view, the OpenAPI document) share, so none of them imports the REST adapter: the
application key of the served core, the JSON body reader, and the shape of REST answers.

Imports nothing from router/ but the standard library, aiohttp, orjson and tributary.errors,
so any router module may import it."""

from __future__ import annotations

import json
from typing import Any

import orjson
from aiohttp import web

from tributary import errors

# The core both adapters serve: an admission.GuardedCore (router/admission.py).
CORE: web.AppKey[Any] = web.AppKey("core", object)


def served_core(request: web.Request):
    """The RouterCore behind the served GuardedCore: the admin routes check their policy
    themselves (auth.require_admin_here) and call the core directly."""
    guarded = request.app[CORE]
    return getattr(guarded, "raw", guarded)

# proto3's JSON mapping renders int64 as strings; REST users expect numbers for these.
INT64_FIELDS = frozenset({"vector_count", "storage_size", "vectors_scanned", "index_hits",
                          "filtered_results", "total_count", "purged_count", "indexed_count"})

# Output-only fields of a GET /datasets/{id} answer: ignored by PUT, so a client may send back
# the dataset it read with a new description or metadata.
DATASET_OUTPUT_ONLY = ("vector_count", "storage_size", "created_at", "updated_at")


def loads(raw: bytes):
    """Parses a JSON body. orjson reads a 14 MB insert batch about 5x faster than json, which
    made json.loads the largest single cost of REST ingest. What orjson refuses but json
    accepts (NaN and Infinity literals, numbers beyond a double, lone surrogates, UTF-16/32
    bodies) goes to json, so those bodies get the answers they always got (a NaN value is still
    "contains NaN or Inf"). Integers beyond 64 bits read as floats, as RFC 8259 (section 6)
    allows: only integers up to 2**53 interoperate."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


async def read_json_body(request: web.Request) -> dict:
    """The request's body as a JSON object ({} when there is none); InvalidArgument (400) when
    it is not JSON or not an object."""
    if not request.body_exists:
        return {}
    raw = await request.read()
    try:
        doc = loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.InvalidArgument(f"malformed JSON body: {exc}") from None
    if not isinstance(doc, dict):
        raise errors.InvalidArgument("the JSON body must be an object")
    return doc
