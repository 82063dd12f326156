"""What the REST adapter and the HTTP policy code (auth's middleware, the admin API, the
operator's view, the OpenAPI document) share, so none of them imports the REST adapter: the
application key of the served core, the JSON body reader, and the shape of REST answers.

Imports nothing from router/ but the standard library, aiohttp, numpy, orjson, protobuf and
tributary.errors, so any router module may import it."""

from __future__ import annotations

import json
import keyword
from typing import Any

import numpy as np
import orjson
from aiohttp import web
from google.protobuf.descriptor import FieldDescriptor as F
from google.protobuf.internal.type_checkers import ToShortestFloat

from tributary import errors

# The core both adapters serve: an admission.GuardedCore (router/admission.py).
CORE: web.AppKey[Any] = web.AppKey("core", object)


def text_param(value: str, what: str) -> str:
    """A header or query value that is valid UTF-8. aiohttp decodes other bytes to lone
    surrogates ("surrogateescape"), which no protobuf string field accepts."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise errors.InvalidArgument(f"{what} is not valid UTF-8") from None
    return value


def request_tenant(request: web.Request) -> str:
    """The tenant a request names: the X-Tenant-Id header, else the tenant_id query parameter,
    else "" (the credential's tenant, or `default`). Every HTTP route reads it here."""
    if "X-Tenant-Id" in request.headers:
        return text_param(request.headers["X-Tenant-Id"], "the X-Tenant-Id header")
    return text_param(request.query.get("tenant_id", ""), "the tenant_id query parameter")


def served_core(request: web.Request):
    """The RouterCore behind the served GuardedCore: the admin routes check their policy
    themselves (auth.require_admin_here) and call the core directly."""
    guarded = request.app[CORE]
    return getattr(guarded, "raw", guarded)

# proto3's JSON mapping renders int64 as strings; REST users expect numbers for these.
INT64_FIELDS = frozenset({"vector_count", "storage_size", "vectors_scanned", "index_hits",
                          "filtered_results", "total_count", "purged_count", "indexed_count"})
# Map fields whose keys are not field names (the user's metadata and filters, a hit's
# explanation, the health dependencies): written as they are, never read for INT64_FIELDS. A
# metadata key "vector_count" holding "many" made every answer that carried it a 500, and one
# holding "12" came back as the number 12.
STRING_MAPS = frozenset({"metadata", "filters", "explanation", "dependencies"})

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


# ---- REST encoding of search answers (issue 18) ------------------------------------------------
# rest.to_json goes through protobuf's json_format, about a fifth of a REST search's router CPU.
# message_json writes the same document (json_format.MessageToDict with proto field names and
# every field without presence, then INT64_FIELDS as numbers) straight from the message, by an
# encoder generated per message type, and orjson encodes it. Types whose mapping it does not
# cover (enums, bytes, well-known types other than Timestamp, oneofs) have no encoder; their
# callers keep to_json.

_FLOAT_LIMITS = {float("inf"): "Infinity", float("-inf"): "-Infinity"}
_FLOAT32_NORMAL_MIN = 1.1754943508222875e-38
_float32 = np.float32
_PLANS: dict = {}


def _float32_json(value: float):
    """A float field as json_format writes it: the shortest decimal that reads back as the
    same float32, or the JSON string for a non-finite value."""
    if value != value:
        return "NaN"
    special = _FLOAT_LIMITS.get(value)
    if special is not None:
        return special
    if -_FLOAT32_NORMAL_MIN < value < _FLOAT32_NORMAL_MIN:
        return ToShortestFloat(value)   # zero and the subnormals, where numpy's digits differ
    # numpy prints a float32 as the shortest decimal that reads back as it (Dragon4), which is
    # what ToShortestFloat's search finds, in a third of the time.
    return float(str(_float32(value)))


def _double_json(value: float):
    if value != value:
        return "NaN"
    return _FLOAT_LIMITS.get(value, value)


def _plan(descriptor):
    """The encoder of a message type: a function message -> document, generated once from the
    descriptor (one dict display per type, so a hit costs a few attribute reads, not a loop
    over field descriptors), or None when a field's JSON mapping is one it does not write."""
    name = descriptor.full_name
    if name in _PLANS:
        return _PLANS[name]
    _PLANS[name] = None     # a recursive type has no encoder
    scope = {"_f32": _float32_json, "_f64": _double_json, "_ts": _timestamp_json,
             "_map": _map_json, "_smap": _string_map_json, "_fix": _fix_int64}
    always, present = [], []
    for position, field in enumerate(descriptor.fields):
        if field.containing_oneof is not None and not field.has_presence:
            return None
        key = repr(field.name)
        read = f"getattr(m, {key})" if keyword.iskeyword(field.name) else f"m.{field.name}"
        message = field.message_type
        if message is not None and message.GetOptions().map_entry:
            value_field = message.fields_by_name["value"]
            if value_field.cpp_type != F.CPPTYPE_STRING or value_field.type == F.TYPE_BYTES \
                    or message.fields_by_name["key"].cpp_type != F.CPPTYPE_STRING:
                return None
            encoder = "_smap" if field.name in STRING_MAPS else "_map"
            always.append(f"{key}: {encoder}({read})")
            continue
        if message is not None:
            if message.full_name == "google.protobuf.Timestamp":
                one = "_ts({})"
            elif message.full_name.startswith("google.protobuf."):
                return None
            else:
                inner = _plan(message)
                if inner is None:
                    return None
                scope[f"_m{position}"] = inner
                one = f"_m{position}({{}})"
        elif field.cpp_type == F.CPPTYPE_FLOAT:
            one = "_f32({})"
        elif field.cpp_type == F.CPPTYPE_DOUBLE:
            one = "_f64({})"
        elif field.cpp_type in (F.CPPTYPE_INT64, F.CPPTYPE_UINT64):
            # json_format writes int64 as a string; rest._fix_ints turns it back into a number
            # where the key is one of INT64_FIELDS.
            one = "{}" if field.name in INT64_FIELDS and not field.is_repeated else "str({})"
        elif field.cpp_type in (F.CPPTYPE_INT32, F.CPPTYPE_UINT32, F.CPPTYPE_BOOL):
            one = "{}"
        elif field.cpp_type == F.CPPTYPE_STRING and field.type != F.TYPE_BYTES:
            one = "_fix(%s, {})" % key if field.name in INT64_FIELDS and not \
                field.is_repeated else "{}"
        else:
            return None     # enums and bytes keep json_format's mapping
        if field.is_repeated:
            value = f"list({read})" if one == "{}" else \
                "[" + one.format("item") + f" for item in {read}]"
            always.append(f"{key}: {value}")
        elif field.has_presence:
            present.append((key, field.name, one.format(read)))
        else:
            always.append(f"{key}: {one.format(read)}")
    lines = ["def encode(m):", "    d = {" + ", ".join(always) + "}"]
    for key, field_name, value in present:
        lines += [f"    if m.HasField({field_name!r}):", f"        d[{key}] = {value}"]
    lines.append("    return d")
    exec("\n".join(lines), scope)      # noqa: S102 - source built above from descriptors only
    _PLANS[name] = scope["encode"]
    return scope["encode"]


def _fix_int64(name: str, value):
    # rest._fix_ints: a string under one of INT64_FIELDS' keys is read as a number.
    if name in INT64_FIELDS and isinstance(value, str):
        return int(value)
    return value


_TIMESTAMPS: dict[tuple[int, int], str] = {}
_TIMESTAMPS_MAX = 4096


def _timestamp_json(timestamp) -> str:
    """Timestamp.ToJsonString (about 10 us: it goes through datetime), remembered: the hits of
    one search mostly share a few write times."""
    key = (timestamp.seconds, timestamp.nanos)
    text = _TIMESTAMPS.get(key)
    if text is None:
        text = timestamp.ToJsonString()
        if len(_TIMESTAMPS) >= _TIMESTAMPS_MAX:
            _TIMESTAMPS.clear()
        _TIMESTAMPS[key] = text
    return text


def _map_json(mapping) -> dict:
    # By key, not items(): a protobuf map's items() is the MutableMapping mixin's Python view,
    # twice the cost per entry; an empty map (a hit's metadata, mostly) returns at once.
    if not mapping:
        return {}
    return {key: _fix_int64(key, mapping[key]) for key in mapping}


def _string_map_json(mapping) -> dict:
    # A map of STRING_MAPS: the user's strings, as they are.
    if not mapping:
        return {}
    return {key: mapping[key] for key in mapping}


def message_json(message) -> dict | None:
    """The REST document of `message` (what rest.to_json gives), or None when its type has no
    plan (the caller then uses rest.to_json)."""
    encode = _plan(message.DESCRIPTOR)
    return None if encode is None else encode(message)


def json_response(doc, status: int = 200) -> web.Response:
    """A JSON answer encoded by orjson (UTF-8, the shortest float that reads back), with the
    headers web.json_response gives; json for what orjson refuses (an integer beyond 64 bits,
    a lone surrogate)."""
    try:
        body = orjson.dumps(doc)
    except (TypeError, orjson.JSONEncodeError):
        body = json.dumps(doc).encode()
    return web.Response(body=body, status=status, content_type="application/json",
                        charset="utf-8")


