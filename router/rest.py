"""REST adapter (aiohttp) under /api/v1. Each handler parses, calls the core through the
admission step with its operation's descriptor (`core.run(operations.X, request)`, see
router/operations.py) and renders the answer. Errors become JSON bodies with the status from
tributary.errors."""

from __future__ import annotations

import difflib
import json
import logging
import time

import numpy as np
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from proto import deeplake_service_pb2 as pb
from router import admin, auth, backups_admin, input_guard, operations, reshard_admin
from router.core import IMMUTABLE_DATASET_FIELDS
from router.http_common import (CORE, DATASET_OUTPUT_ONLY, INT64_FIELDS, STRING_MAPS,
                                json_response, message_json, read_json_body,
                                request_tenant, text_param)
from router.http_common import loads  # noqa: F401 - rest.loads parses REST bodies
from router.metrics import REQUEST_LATENCY, REQUESTS
from router.openapi import add_openapi_routes
from tributary import errors, limits, tracing, validation

log = logging.getLogger("tributary.router.rest")



def to_json(message) -> dict:
    doc = json_format.MessageToDict(message, preserving_proto_field_name=True,
                                    always_print_fields_with_no_presence=True)
    return _fix_ints(doc)


def answer(message, status: int = 200) -> web.Response:
    """The REST answer of a response message: to_json's document, written by the generated
    encoder and orjson where its type has one (http_common.message_json), else to_json."""
    doc = message_json(message)
    return json_response(doc if doc is not None else to_json(message), status)


def _fix_ints(value):
    if isinstance(value, dict):
        return {k: (v if k in STRING_MAPS and isinstance(v, dict) else
                    int(v) if k in INT64_FIELDS and isinstance(v, str) else _fix_ints(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_fix_ints(v) for v in value]
    return value


def _stringify_metadata(doc: dict) -> dict:
    if "metadata" in doc:
        doc["metadata"] = validation.check_metadata(doc["metadata"])
    return doc


_NUMERIC_TYPES = frozenset({
    FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED32, FieldDescriptor.TYPE_SFIXED64})


def refuse_numeric_strings(descriptor, doc, path: str = "") -> None:
    """Raises InvalidArgument naming the field when a JSON string stands where the message has
    a number (`"top_k": "5"`). The proto3 JSON mapping would accept it (json_format parses
    "5" for an integer and "1.5" or "NaN" for a float), but the REST API takes numbers as JSON
    numbers only, as its OpenAPI document says. Maps (metadata) are left alone: their values
    are strings."""
    if not isinstance(doc, dict):
        return
    for name, value in doc.items():
        field = descriptor.fields_by_name.get(name)
        if field is None or value is None:
            continue
        where = f"{path}{name}"
        message = field.message_type
        if message is not None and message.GetOptions().map_entry:
            continue
        items = value if isinstance(value, list) and _is_repeated(field) else [value]
        if field.type in _NUMERIC_TYPES:
            text = next((item for item in items if type(item) is str), None)
            if text is not None:
                raise errors.InvalidArgument(
                    f"{where} must be a JSON number, not the string {text[:40]!r}")
        elif message is not None and message.full_name != "google.protobuf.Timestamp":
            for position, item in enumerate(items):
                inner = f"{where}[{position}]." if items is value else f"{where}."
                refuse_numeric_strings(message, item, inner)


def _is_repeated(field: FieldDescriptor) -> bool:
    flag = getattr(field, "is_repeated", None)  # protobuf >= 5; older versions: `label`
    return bool(flag) if flag is not None else field.label == FieldDescriptor.LABEL_REPEATED


def parse(message_type, doc: dict):
    """Builds a request message from JSON, with a 400 that names the bad field."""
    refuse_numeric_strings(message_type.DESCRIPTOR, doc)
    try:
        return json_format.ParseDict(doc, message_type(), ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        unknown = unknown_field_message(message_type.DESCRIPTOR, doc)
        raise errors.InvalidArgument(unknown or f"invalid request: {exc}") from None


def unknown_field_message(descriptor, doc, where: str = "") -> str | None:
    """Names the first field of the JSON object `doc` that the message `descriptor` lacks,
    with the field names the API speaks (the proto's snake_case ones; json_format's own error
    lists camelCase JSON names such as 'topK') and the closest one. None if every field is
    known (the parse failed for another reason)."""
    if not isinstance(doc, dict):
        return None
    by_json_name = {field.json_name: field for field in descriptor.fields}
    for key, value in doc.items():
        field = descriptor.fields_by_name.get(key) or by_json_name.get(key)
        if field is None:
            names = [known.name for known in descriptor.fields]
            squashed = {name.replace("_", "").lower(): name for name in names}
            guess = squashed.get(str(key).replace("_", "").lower()) or next(
                iter(difflib.get_close_matches(str(key), names, n=1)), None)
            hint = f"; did you mean '{guess}'?" if guess else "."
            return (f"invalid request: unknown field '{where}{key}'{hint} The fields of "
                    f"{descriptor.name} are: {', '.join(names)}")
        message = field.message_type
        if message is None or message.GetOptions().map_entry:
            continue
        repeated = field.is_repeated and isinstance(value, list)
        for position, item in enumerate(value if repeated else [value]):
            inner = f"{where}{key}[{position}]." if repeated else f"{where}{key}."
            found = unknown_field_message(message, item, inner)
            if found:
                return found
    return None


def _idempotency_key(request: web.Request) -> str:
    return text_param(request.headers.get("Idempotency-Key", ""), "the Idempotency-Key header")


# nginx's status for a request whose client closed the connection before the answer.
CLIENT_CLOSED_REQUEST = 499


def _too_large(message: str) -> web.Response:
    return web.json_response(errors.PayloadTooLarge(message).to_json(), status=413)


@web.middleware
async def error_middleware(request: web.Request, handler):
    started = time.perf_counter()
    route = request.match_info.route.resource.canonical if request.match_info.route.resource \
        else "unmatched"
    status = 500
    try:
        declared = request.content_length   # parsed from the header on every read
        if declared is not None and declared > limits.request_bytes_max:
            # Refused on the declared length, before any of the body is read; the connection
            # is closed after the answer instead of draining the body the client announced.
            status = 413
            response = _too_large(f"the declared Content-Length {declared} is "
                                  f"larger than request_bytes_max={limits.request_bytes_max}")
            response.force_close()
            return response
        response = await handler(request)
        status = response.status
        return response
    except errors.TributaryError as exc:
        status = exc.http_status
        return web.json_response(exc.to_json(), status=exc.http_status)
    except web.HTTPRequestEntityTooLarge:
        status = 413
        return _too_large(f"request body is larger than {limits.request_bytes_max} bytes")
    except ConnectionResetError:
        # The client went away mid-body (aiohttp: "Connection lost"). Nobody hears an answer;
        # it is counted as 499 (client closed request), not as a server error.
        status = CLIENT_CLOSED_REQUEST
        log.info("client closed the connection during %s %s", request.method, request.path)
        return web.Response(status=CLIENT_CLOSED_REQUEST)
    except web.HTTPException as exc:
        status = exc.status
        if exc.status >= 400:
            kind = {404: errors.NotFound, 405: errors.InvalidArgument}.get(exc.status,
                                                                          errors.InvalidArgument)
            body = kind(f"{request.method} {request.path}: {exc.reason}").to_json()
            # Keeps aiohttp's own headers, such as the Allow of a 405 (RFC 9110 15.5.6).
            headers = {k: v for k, v in exc.headers.items()
                       if k.lower() not in ("content-type", "content-length")}
            return web.json_response(body, status=exc.status, headers=headers)
        raise
    except Exception as exc:  # noqa: BLE001 - one place turns surprises into a 500 body
        log.exception("unhandled error on %s %s", request.method, request.path)
        return web.json_response(errors.Internal(f"{type(exc).__name__}: {exc}").to_json(),
                                 status=500)
    finally:
        _count_request(route, status, time.perf_counter() - started)


# The metric children of each (route, status) seen, looked up once instead of per request
# (routes are the app's canonical paths and statuses a few dozen, so this stays small).
_REQUEST_CHILDREN: dict[tuple[str, int], tuple] = {}


def _count_request(route: str, status: int, seconds: float) -> None:
    children = _REQUEST_CHILDREN.get((route, status))
    if children is None:
        children = _REQUEST_CHILDREN[(route, status)] = (
            REQUESTS.labels("rest", route, str(status)), REQUEST_LATENCY.labels("rest", route))
    children[0].inc()
    children[1].observe(seconds)


async def create_dataset(request: web.Request) -> web.Response:
    doc = _stringify_metadata(await read_json_body(request))
    doc.setdefault("tenant_id", request_tenant(request))
    response = await request.app[CORE].run(operations.CREATE_DATASET,
                                           parse(pb.CreateDatasetRequest, doc))
    return web.json_response(to_json(response), status=201)


def _page_size(request: web.Request) -> int:
    """The `page_size` query parameter, range-checked here: a value outside int32 cannot even be
    put in the request message (protobuf raises ValueError)."""
    try:
        page_size = int(request.query.get("page_size", "0"))
    except ValueError:
        raise errors.InvalidArgument("page_size must be an integer") from None
    if not 0 <= page_size <= limits.list_page_size_max:
        raise errors.InvalidArgument(f"page_size must be between 1 and "
                                     f"{limits.list_page_size_max} (0: the default)")
    return page_size


async def list_datasets(request: web.Request) -> web.Response:
    response = await request.app[CORE].run(operations.LIST_DATASETS, pb.ListDatasetsRequest(
        tenant_id=request_tenant(request), page_size=_page_size(request),
        page_token=request.query.get("page_token", "")))
    return web.json_response(to_json(response))


async def get_dataset(request: web.Request) -> web.Response:
    response = await request.app[CORE].run(operations.GET_DATASET, pb.GetDatasetRequest(
        dataset_id=request.match_info["dataset_id"], tenant_id=request_tenant(request)))
    return web.json_response(to_json(response))


async def delete_dataset(request: web.Request) -> web.Response:
    response = await request.app[CORE].run(operations.DELETE_DATASET, pb.DeleteDatasetRequest(
        dataset_id=request.match_info["dataset_id"], tenant_id=request_tenant(request)))
    return web.json_response(to_json(response))


async def insert_vectors(request: web.Request) -> web.Response:
    doc = await read_json_body(request)
    vectors = doc.get("vectors")
    if not isinstance(vectors, list):
        raise errors.InvalidArgument("the body must hold a 'vectors' list")
    if len(vectors) > limits.batch_vectors_max:
        raise errors.InvalidArgument(f"the batch holds {len(vectors)} vectors, more than "
                                     f"batch_vectors_max={limits.batch_vectors_max}")
    for vector in vectors:
        if isinstance(vector, dict):
            _stringify_metadata(vector)
    doc["dataset_id"] = request.match_info["dataset_id"]
    doc.setdefault("tenant_id", request_tenant(request))
    parsed, values = _parse_insert(doc)
    response = await request.app[CORE].run(operations.INSERT_VECTORS, parsed,
                                           _idempotency_key(request), values=values)
    return answer(response, status=201)


_FAST_VECTOR_FIELDS = {"id", "document_id", "chunk_id", "values", "content", "content_hash",
                       "metadata", "content_type", "language", "chunk_index", "chunk_count",
                       "model", "dimensions", "tenant_id", "dataset_id"}


def _parse_insert(doc: dict) -> tuple[pb.InsertVectorsRequest, np.ndarray | None]:
    """InsertVectorsRequest from JSON, and the values matrix when it could be read in one go.

    json_format.ParseDict costs ~0.3 ms per 128-d vector in pure Python, which dominated
    ingest. Plain vectors (objects with the usual fields and a list of numbers as values, all
    of one length) have their values read into one numpy matrix, which the core validates and
    packs for the nodes, and the rest of each vector built with the message constructor (same
    types enforced). Otherwise plain vectors are built whole with the constructor and anything
    unusual (timestamps, odd shapes) goes to ParseDict, so its error messages stay the same."""
    vectors = doc.get("vectors")
    rest = {k: v for k, v in doc.items() if k != "vectors"}
    if "packed_values" in rest:
        raise errors.InvalidArgument("packed_values is for gRPC clients (raw float32 bytes); a "
                                     "JSON body gives each vector its values")
    request = parse(pb.InsertVectorsRequest, rest)
    values = _plain_vectors(vectors, request)
    if values is not None:
        return request, values  # numbers only: the matrix's dtype and the constructor say so
    built = []
    for position, vector in enumerate(vectors):
        refuse_numeric_strings(pb.Vector.DESCRIPTOR, vector, f"vectors[{position}].")
        if isinstance(vector, dict) and set(vector) <= _FAST_VECTOR_FIELDS:
            try:
                built.append(pb.Vector(**vector))
                continue
            except (TypeError, ValueError):
                pass
        try:
            built.append(json_format.ParseDict(vector, pb.Vector()))
        except (json_format.ParseError, TypeError, AttributeError) as exc:
            raise errors.InvalidArgument(f"invalid vector {position}: {exc}") from None
    request.vectors.extend(built)
    return request, None


def _plain_vectors(vectors: list, request: pb.InsertVectorsRequest) -> np.ndarray | None:
    """When every vector is plain: adds them to the request without values and returns the
    float64 values matrix. Otherwise None, with the request untouched, for the general path.
    numpy infers the matrix's dtype from the JSON lists, so a string, null, nested list or
    ragged row shows up in the dtype or shape, never converted silently (booleans read as 1 and
    0, as the message constructor reads them)."""
    if not vectors or not all(type(v) is dict and v.keys() <= _FAST_VECTOR_FIELDS
                              for v in vectors):
        return None
    try:
        matrix = np.asarray([v.get("values") for v in vectors])
    except (ValueError, TypeError, OverflowError):
        return None
    if matrix.ndim != 2 or matrix.shape[1] == 0 or matrix.dtype.kind not in "biuf":
        return None
    add = request.vectors.add   # builds each message in place: no copy into the request
    try:
        for v in vectors:
            # {"id", "values"} is the usual shape: its id alone goes to the constructor.
            if len(v) == 2 and "id" in v:
                add(id=v["id"])
            else:
                add(**{k: x for k, x in v.items() if k != "values"})
    except (TypeError, ValueError):
        del request.vectors[:]
        return None
    return matrix.astype(np.float64, copy=False)


# The fields of a plain search body and their JSON types, for _plain_search. `float` fields take
# any JSON number; `int` fields only integers, within int32.
_SEARCH_FIELDS = {"dataset_id": str, "tenant_id": str, "exact": bool, "as_of_version": str}
_SEARCH_OPTIONS = {"top_k": int, "ef_search": int, "nprobe": int, "include_content": bool,
                   "include_metadata": bool, "deduplicate": bool, "group_by_document": bool,
                   "rerank": bool, "metric_type": str, "filter": str, "threshold": float,
                   "min_score": float, "max_distance": float}
_FLOAT32_MAX = float.fromhex("0x1.fffffep+127")
_INT32_RANGE = range(-2**31, 2**31)


def _search_request(doc: dict) -> pb.SearchVectorsRequest:
    """SearchVectorsRequest from a search body. json_format.ParseDict reads a 128-d query
    vector one number at a time in Python (about a tenth of a REST search's router CPU); a
    plain body (the usual fields with JSON values of the usual types, a list of finite numbers
    in float32's range as the query) is built with the message constructor instead, to the
    same message. Anything else goes to ParseDict, so its errors stay the same."""
    plain = _plain_search(doc)
    return plain if plain is not None else parse(pb.SearchVectorsRequest, doc)


def _plain_search(doc: dict) -> pb.SearchVectorsRequest | None:
    fields = {}
    for key, value in doc.items():
        if key == "query_vector" or key == "options":
            continue
        kind = _SEARCH_FIELDS.get(key)
        if kind is None or type(value) is not kind:
            return None
        fields[key] = value
    query = doc.get("query_vector", [])
    if type(query) is not list or not all(type(x) is float or type(x) is int for x in query):
        return None
    if query:
        try:
            values = np.asarray(query, dtype=np.float64)
        except (OverflowError, ValueError):
            return None
        # Also refuses NaN and infinities (comparisons with NaN are false), as ParseDict does.
        if not bool(np.all(np.abs(values) <= _FLOAT32_MAX)):
            return None
    options = doc.get("options")
    if options is not None:
        if type(options) is not dict:
            return None
        chosen = {}
        for key, value in options.items():
            if key == "filters":
                if type(value) is not dict or not all(
                        type(k) is str and type(v) is str for k, v in value.items()):
                    return None
            else:
                kind = _SEARCH_OPTIONS.get(key)
                if kind is None:
                    return None
                if kind is float:
                    if type(value) is not float and type(value) is not int or \
                            not abs(value) <= _FLOAT32_MAX:
                        return None
                elif type(value) is not kind or (kind is int and value not in _INT32_RANGE):
                    return None
            chosen[key] = value
        fields["options"] = pb.SearchOptions(**chosen)
    return pb.SearchVectorsRequest(query_vector=query, **fields)


def _as_of(request: web.Request) -> dict:
    """A read's `as_of_version` (a version's tag) and `as_of_time` (RFC 3339) query
    parameters, as request fields (router/versions.py says what they select)."""
    fields: dict = {}
    tag = request.query.get("as_of_version")
    if tag is not None:
        if not tag:
            raise errors.InvalidArgument("as_of_version must name a version's tag")
        fields["as_of_version"] = text_param(tag, "as_of_version")
    when = request.query.get("as_of_time")
    if when is not None:
        stamp = Timestamp()
        try:
            stamp.FromJsonString(text_param(when, "as_of_time"))
        except ValueError:
            raise errors.InvalidArgument("as_of_time must be an RFC 3339 time such as "
                                         f"2026-01-02T03:04:05Z, not {when[:40]!r}") from None
        fields["as_of_time"] = stamp
    return fields


async def get_vector(request: web.Request) -> web.Response:
    response = await request.app[CORE].run(operations.GET_VECTOR, pb.GetVectorRequest(
        dataset_id=request.match_info["dataset_id"], vector_id=request.match_info["vector_id"],
        tenant_id=request_tenant(request), **_as_of(request)))
    return web.json_response(to_json(response))


async def update_vector(request: web.Request) -> web.Response:
    """PUT a vector (AIP-134): `?update_mask=a,b` names the fields to change, else the fields
    the body names do. Fields not named keep their stored values; a named field that the body
    leaves out (or sends as null) is cleared."""
    doc = await read_json_body(request)
    present = list(doc)
    # null means "clear", as absence from a body whose mask names the field does.
    doc = {key: value for key, value in doc.items() if value is not None}
    vector = parse(pb.Vector, _stringify_metadata(doc))
    update = pb.UpdateVectorRequest(
        dataset_id=request.match_info["dataset_id"], vector_id=request.match_info["vector_id"],
        vector=vector, tenant_id=request_tenant(request))
    paths = [path.strip() for path in request.query.get("update_mask", "").split(",")
             if path.strip()]
    if paths:
        update.update_mask.paths.extend(paths)
    response = await request.app[CORE].run(operations.UPDATE_VECTOR, update, present=present)
    return web.json_response(to_json(response))


async def list_vectors(request: web.Request) -> web.Response:
    page_size = _page_size(request)
    include_values = request.query.get("include_values", "false").lower() in ("1", "true")
    response = await request.app[CORE].run(operations.LIST_VECTORS, pb.ListVectorsRequest(
        dataset_id=request.match_info["dataset_id"], page_size=page_size,
        page_token=request.query.get("page_token", ""), tenant_id=request_tenant(request),
        include_values=include_values, **_as_of(request)))
    return web.json_response(to_json(response))


async def create_version(request: web.Request) -> web.Response:
    doc = await read_json_body(request)
    doc["dataset_id"] = request.match_info["dataset_id"]
    doc.setdefault("tenant_id", request_tenant(request))
    response = await request.app[CORE].run(operations.CREATE_VERSION,
                                           parse(pb.CreateVersionRequest, doc))
    return web.json_response(to_json(response), status=201)


async def list_versions(request: web.Request) -> web.Response:
    response = await request.app[CORE].run(operations.LIST_VERSIONS, pb.ListVersionsRequest(
        dataset_id=request.match_info["dataset_id"], tenant_id=request_tenant(request)))
    return web.json_response(to_json(response))


async def soft_delete_vector(request: web.Request) -> web.Response:
    response = await request.app[CORE].run(
        operations.SOFT_DELETE_VECTORS, pb.SoftDeleteVectorsRequest(
            dataset_id=request.match_info["dataset_id"],
            vector_ids=[request.match_info["vector_id"]], tenant_id=request_tenant(request)))
    if response.soft_deleted_count == 0 and response.not_found_count:
        raise errors.NotFound(f"vector '{request.match_info['vector_id']}' not found")
    return web.json_response(to_json(response))


async def restore_vector(request: web.Request) -> web.Response:
    response = await request.app[CORE].run(operations.RESTORE_VECTORS, pb.RestoreVectorsRequest(
        dataset_id=request.match_info["dataset_id"],
        vector_ids=[request.match_info["vector_id"]], tenant_id=request_tenant(request)))
    if response.restored_count == 0:
        vector_id = request.match_info["vector_id"]
        if response.not_found_count:
            # Never written, deleted, or purged by compaction: nothing to restore.
            raise errors.NotFound(f"vector '{vector_id}' not found in dataset "
                                  f"'{request.match_info['dataset_id']}'")
        raise errors.NotFound(f"vector '{vector_id}' is not soft-deleted (it is live)")
    return web.json_response(to_json(response))


async def compact_dataset(request: web.Request) -> web.Response:
    response = await request.app[CORE].run(operations.COMPACT_DATASET, pb.CompactDatasetRequest(
        dataset_id=request.match_info["dataset_id"], tenant_id=request_tenant(request)))
    return web.json_response(to_json(response))


async def delete_vector(request: web.Request) -> web.Response:
    response = await request.app[CORE].run(operations.DELETE_VECTOR, pb.DeleteVectorRequest(
        dataset_id=request.match_info["dataset_id"], vector_id=request.match_info["vector_id"],
        tenant_id=request_tenant(request)))
    return web.json_response(to_json(response))


async def delete_vectors(request: web.Request) -> web.Response:
    doc = await read_json_body(request)
    ids = doc.get("vector_ids", doc.get("ids"))
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise errors.InvalidArgument("the body must hold a 'vector_ids' list of strings")
    response = await request.app[CORE].run(operations.DELETE_VECTORS, pb.DeleteVectorsRequest(
        dataset_id=request.match_info["dataset_id"], vector_ids=ids,
        tenant_id=request_tenant(request)), _idempotency_key(request))
    return web.json_response(to_json(response))


async def search(request: web.Request) -> web.Response:
    doc = await read_json_body(request)
    doc["dataset_id"] = request.match_info["dataset_id"]
    doc.setdefault("tenant_id", request_tenant(request))
    response = await request.app[CORE].run(operations.SEARCH_VECTORS, _search_request(doc))
    return answer(response)


async def search_stream(request: web.Request) -> web.WebSocketResponse:
    """WebSocket query stream. Each text frame is a search body (as POST .../search); the server
    answers with one {"type": "partial"} frame per shard as its hits are merged in, then one
    {"type": "complete"} frame holding the full response with its stats. A bad query gets an
    {"type": "error"} frame and the connection stays open for the next one."""
    ws = web.WebSocketResponse(max_msg_size=limits.request_bytes_max,
                               heartbeat=limits.websocket_heartbeat_ms / 1000)
    await ws.prepare(request)
    core = request.app[CORE]
    async for message in ws:
        if message.type != web.WSMsgType.TEXT:
            if message.type == web.WSMsgType.ERROR:
                break
            continue
        try:
            try:
                doc = json.loads(message.data)
            except ValueError as exc:
                raise errors.InvalidArgument(f"malformed JSON frame: {exc}") from None
            if not isinstance(doc, dict):
                raise errors.InvalidArgument("a frame must be a JSON object")
            doc["dataset_id"] = request.match_info["dataset_id"]
            doc.setdefault("tenant_id", request_tenant(request))
            query = parse(pb.SearchVectorsRequest, doc)
            previous, done = None, 0
            async for partial in core.stream(operations.SEARCH_VECTORS_STREAM, query):
                if previous is not None:
                    await ws.send_json({"type": "partial", "shards_done": done,
                                        **to_json(previous)})
                previous, done = partial, done + 1
            await ws.send_json({"type": "complete", "shards_done": done, **to_json(previous)})
        except errors.TributaryError as exc:
            await ws.send_json({"type": "error", **exc.to_json()})
    return ws


async def search_text(request: web.Request) -> web.Response:
    doc = await read_json_body(request)
    doc["dataset_id"] = request.match_info["dataset_id"]
    doc.setdefault("tenant_id", request_tenant(request))
    response = await request.app[CORE].run(operations.SEARCH_BY_TEXT,
                                           parse(pb.SearchByTextRequest, doc))
    return answer(response)


async def search_hybrid(request: web.Request) -> web.Response:
    doc = await read_json_body(request)
    doc["dataset_id"] = request.match_info["dataset_id"]
    doc.setdefault("tenant_id", request_tenant(request))
    response = await request.app[CORE].run(operations.HYBRID_SEARCH,
                                           parse(pb.HybridSearchRequest, doc))
    return answer(response)


async def health(request: web.Request) -> web.Response:
    """The deep health (RouterCore.health_report): the deeplake.v1 fields plus `checks`."""
    core = request.app[CORE]
    healthy, response, checks = await getattr(core, "raw", core).health_report()
    return web.json_response({**to_json(response), "checks": checks},
                             status=200 if healthy else 503)


async def ready(request: web.Request) -> web.Response:
    core = request.app[CORE]
    is_ready, reason = await getattr(core, "raw", core).ready()
    return web.json_response({"ready": is_ready, "reason": reason},
                             status=200 if is_ready else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def stats(request: web.Request) -> web.Response:
    return web.json_response(await request.app[CORE].service_stats())




def split_update_body(doc: dict) -> tuple[dict, dict, bool, bool]:
    """Splits a PUT /datasets/{id} body into (UpdateDatasetRequest fields, immutable fields it
    names, clear_description, clear_metadata). null or absent means keep; an explicit "" or {}
    clears, which the proto3 request alone cannot say."""
    doc = dict(doc)
    immutable = {k: doc.pop(k) for k in list(doc) if k in IMMUTABLE_DATASET_FIELDS}
    if "dataset_id" in doc:
        immutable["id"] = doc.pop("dataset_id")
    for key in DATASET_OUTPUT_ONLY:
        doc.pop(key, None)
    unknown = sorted(set(doc) - {"description", "metadata", "tenant_id"})
    if unknown:
        raise errors.InvalidArgument(
            f"unknown field(s) {', '.join(unknown)}; an update changes description and metadata")
    for key in ("description", "metadata"):
        if key in doc and doc[key] is None:
            del doc[key]
    _stringify_metadata(doc)
    return doc, immutable, doc.get("description") == "", doc.get("metadata") == {}


async def update_dataset(request: web.Request) -> web.Response:
    doc, immutable, clear_description, clear_metadata = split_update_body(
        await read_json_body(request))
    doc["dataset_id"] = request.match_info["dataset_id"]
    doc.setdefault("tenant_id", request_tenant(request))
    response = await request.app[CORE].run(
        operations.UPDATE_DATASET,
        parse(pb.UpdateDatasetRequest, doc), clear_description=clear_description,
        clear_metadata=clear_metadata, immutable=immutable)
    return web.json_response(to_json(response))


async def get_dataset_stats(request: web.Request) -> web.Response:
    response = await request.app[CORE].run(
        operations.GET_DATASET_STATS, pb.GetDatasetStatsRequest(
            dataset_id=request.match_info["dataset_id"], tenant_id=request_tenant(request)))
    return web.json_response(to_json(response))


async def multi_dataset_search(request: web.Request) -> web.Response:
    doc = await read_json_body(request)
    ids = doc.get("dataset_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise errors.InvalidArgument("the body must hold a 'dataset_ids' list of strings")
    doc.setdefault("tenant_id", request_tenant(request))
    response = await request.app[CORE].run(
        operations.MULTI_DATASET_SEARCH,
        parse(pb.MultiDatasetSearchRequest, doc))
    return answer(response)


def make_app(core) -> web.Application:
    """The REST application over `core` (an admission.GuardedCore). Middlewares run in this
    order: errors, credentials and route scope, hostile bodies."""
    app = web.Application(middlewares=[tracing.rest_middleware(), error_middleware,
                                       auth.rest_middleware,
                                       input_guard.rest_middleware],
                          client_max_size=limits.request_bytes_max)
    app[CORE] = core
    base = "/api/v1"
    app.router.add_post(f"{base}/datasets", create_dataset)
    app.router.add_get(f"{base}/datasets", list_datasets)
    app.router.add_get(f"{base}/datasets/{{dataset_id}}", get_dataset)
    app.router.add_delete(f"{base}/datasets/{{dataset_id}}", delete_dataset)
    app.router.add_post(f"{base}/datasets/{{dataset_id}}/vectors", insert_vectors)
    app.router.add_post(f"{base}/datasets/{{dataset_id}}/vectors/batch", insert_vectors)
    app.router.add_delete(f"{base}/datasets/{{dataset_id}}/vectors/batch", delete_vectors)
    app.router.add_get(f"{base}/datasets/{{dataset_id}}/vectors", list_vectors)
    app.router.add_get(f"{base}/datasets/{{dataset_id}}/vectors/{{vector_id}}", get_vector)
    app.router.add_put(f"{base}/datasets/{{dataset_id}}/vectors/{{vector_id}}", update_vector)
    app.router.add_delete(f"{base}/datasets/{{dataset_id}}/vectors/{{vector_id}}", delete_vector)
    app.router.add_post(f"{base}/datasets/{{dataset_id}}/vectors/{{vector_id}}/soft-delete",
                        soft_delete_vector)
    app.router.add_post(f"{base}/datasets/{{dataset_id}}/vectors/{{vector_id}}/restore",
                        restore_vector)
    app.router.add_post(f"{base}/datasets/{{dataset_id}}/compact", compact_dataset)
    app.router.add_post(f"{base}/datasets/{{dataset_id}}/search", search)
    app.router.add_get(f"{base}/datasets/{{dataset_id}}/search/stream", search_stream)
    app.router.add_post(f"{base}/datasets/{{dataset_id}}/search/text", search_text)
    app.router.add_post(f"{base}/datasets/{{dataset_id}}/search/hybrid", search_hybrid)
    app.router.add_get(f"{base}/health", health)
    app.router.add_get(f"{base}/ready", ready)
    app.router.add_get(f"{base}/metrics", metrics)
    app.router.add_get(f"{base}/stats", stats)
    app.router.add_put(f"{base}/datasets/{{dataset_id}}", update_dataset)
    app.router.add_get(f"{base}/datasets/{{dataset_id}}/stats", get_dataset_stats)
    app.router.add_post(f"{base}/search/multi-dataset", multi_dataset_search)
    app.router.add_post(f"{base}/datasets/{{dataset_id}}/versions", create_version)
    app.router.add_get(f"{base}/datasets/{{dataset_id}}/versions", list_versions)
    admin.add_routes(app)  # /admin/tenants, /admin/keys (router/admin.py)
    backups_admin.add_routes(app)  # /api/v1/admin/backups, /restores
    reshard_admin.add_routes(app)  # /api/v1/admin/datasets/{dataset_id}/reshard
    add_openapi_routes(app)  # GET /openapi.json and /docs
    return app
