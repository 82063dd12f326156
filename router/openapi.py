"""OpenAPI 3.1 document for the REST API, served at GET /openapi.json, and a docs page at GET /docs.

The document is generated from two sources:
- the aiohttp router (`app.router.routes()`): the methods and path templates the app serves;
- `OPERATIONS` below: a hand-written table of summaries, parameters, bodies and statuses, whose
  JSON Schemas are derived from the deeplake.v1 message descriptors (`message_schema`).

A route the app registers but `OPERATIONS` does not describe still appears in the document, as a
stub marked `x-undocumented: true`; tests/integration/test_openapi.py fails on such stubs and on
table entries the app does not serve, so the two cannot drift apart silently.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

from aiohttp import web
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from proto import deeplake_service_pb2 as pb
from router.admin import extend_openapi as extend_admin_openapi
from router import backups_admin, reshard_admin
from router.core import IMMUTABLE_DATASET_FIELDS
from router.http_common import DATASET_OUTPUT_ONLY, INT64_FIELDS
from shard.records import UPDATABLE_FIELDS
from tributary import __version__, errors, limits
from shard import filter_parse
from tributary import validation

BASE = "/api/v1"
OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"
OPENAPI_VERSION = "3.1.0"
UNDOCUMENTED = "x-undocumented"

_TIMESTAMP = "google.protobuf.Timestamp"

_SCALARS: dict[int, dict] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "uint32", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "uint32", "minimum": 0},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
_INT64_TYPES = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64,
                FieldDescriptor.TYPE_SFIXED64, FieldDescriptor.TYPE_UINT64,
                FieldDescriptor.TYPE_FIXED64}


def _int64_numbers() -> set[str]:
    """The int64 fields rest.py renders as numbers."""
    return set(INT64_FIELDS)


def _is_repeated(field: FieldDescriptor) -> bool:
    # protobuf >= 5 has is_repeated; older versions only `label`.
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return field.label == FieldDescriptor.LABEL_REPEATED


_FLOAT32_MAX = 3.4028234663852886e38
_VALUE = {"type": "number", "minimum": -_FLOAT32_MAX, "maximum": _FLOAT32_MAX}


def _vector_of_values(what: str) -> dict:
    return {"type": "array", "items": _VALUE, "minItems": 1, "maxItems": limits.dimensions_max,
            "description": f"{what}: as many numbers as the dataset's `dimensions`, finite and "
                           "within the float32 range (and not all zero under cosine)"}


_TEXT_QUERY = {"type": "string", "maxLength": limits.text_query_bytes_max // 4,
               "pattern": "[0-9A-Za-z]",
               "description": f"at most {limits.text_query_bytes_max} bytes of UTF-8 holding "
                              "at least one word (a letter or digit; the pattern names the "
                              "ASCII ones)"}
_TENANT_FIELD = validation.name_json_schema("the tenant (defaults to the X-Tenant-Id header)",
                                            allow_empty=True)

# What the checks behind each request field accept (router/core.py, tributary/validation.py,
# router/input_guard.py), keyed "Message.field", merged into the field's schema in request
# mode. For a repeated field, "items" is merged into the schema of its items.
REQUEST_FIELD_RULES: dict[str, dict] = {
    "CreateDatasetRequest.name": validation.name_json_schema(),
    "CreateDatasetRequest.dimensions": {"minimum": 1, "maximum": limits.dimensions_max},
    "CreateDatasetRequest.metric_type": {"enum": [*validation.METRICS, ""]},
    "CreateDatasetRequest.index_type": {"enum": [*validation.INDEX_TYPES, ""]},
    "CreateDatasetRequest.shard_count": {"minimum": 0, "maximum": limits.shard_count_max},
    "CreateDatasetRequest.storage_location": {"maxLength": 0},
    "CreateDatasetRequest.description": validation.bytes_json_schema(
        limits.description_bytes_max, "a description"),
    "CreateDatasetRequest.tenant_id": _TENANT_FIELD,
    "Dataset.description": validation.bytes_json_schema(limits.description_bytes_max,
                                                        "a description"),
    "Dataset.tenant_id": _TENANT_FIELD,
    "Vector.id": validation.vector_id_json_schema(allow_empty=True),
    "Vector.values": {"items": _VALUE, "minItems": 1, "maxItems": limits.dimensions_max},
    "Vector.content": validation.bytes_json_schema(limits.content_bytes_max, "content"),
    "Vector.tenant_id": _TENANT_FIELD,
    **{f"Vector.{name}": validation.bytes_json_schema(limits.vector_id_bytes_max, name)
       for name in ("document_id", "chunk_id", "content_hash", "content_type", "language",
                    "model")},
    **{f"{message}.metadata": {"maxProperties": limits.metadata_keys_max,
                               "propertyNames": {"minLength": 1}}
       for message in ("CreateDatasetRequest", "Dataset", "Vector")},
    "InsertVectorsRequest.vectors": {"minItems": 1, "maxItems": limits.batch_vectors_max},
    "InsertVectorsRequest.batch_size": {"minimum": 0},
    "InsertVectorsRequest.tenant_id": _TENANT_FIELD,
    "SearchOptions.top_k": {"minimum": 0, "maximum": limits.top_k_max,
                            "description": f"1 to {limits.top_k_max} (0 or absent: 10)"},
    "SearchOptions.ef_search": {"minimum": 0, "maximum": limits.ef_search_max},
    "SearchOptions.filter": validation.bytes_json_schema(filter_parse.filter_expression_bytes_max,
                                                         "a filter expression"),
    "SearchOptions.filters": {"maxProperties": filter_parse.filter_map_entries_max,
                              "propertyNames": {"minLength": 1}},
    "SearchVectorsRequest.query_vector": _vector_of_values("the query vector"),
    "SearchVectorsRequest.tenant_id": _TENANT_FIELD,
    "SearchByTextRequest.query_text": _TEXT_QUERY,
    "SearchByTextRequest.tenant_id": _TENANT_FIELD,
    "HybridSearchRequest.query_vector": _vector_of_values("the query vector"),
    "HybridSearchRequest.query_text": _TEXT_QUERY,
    "HybridSearchRequest.fusion": {"enum": ["rrf", "alpha", ""]},
    "HybridSearchRequest.alpha": {"minimum": 0, "maximum": 1},
    "HybridSearchRequest.rrf_k": {"minimum": 0, "maximum": limits.rrf_k_max},
    "HybridSearchRequest.tenant_id": _TENANT_FIELD,
    "MultiDatasetSearchRequest.dataset_ids": {
        "items": validation.name_json_schema(), "minItems": 1, "uniqueItems": True,
        "maxItems": limits.multi_search_datasets_max},
    "MultiDatasetSearchRequest.query_vector": _vector_of_values("the query vector"),
    "MultiDatasetSearchRequest.tenant_id": _TENANT_FIELD,
    "SearchVectorsRequest.as_of_version": {
        "pattern": "^(|[A-Za-z0-9][A-Za-z0-9._-]{0,62})$",
        "description": "search the dataset as it was at this version's tag (exact scan); "
                       "empty or absent: now"},
    "SearchVectorsRequest.as_of_time": {
        "description": "search the newest version taken at or before this time; not with "
                       "as_of_version"},
    "CreateVersionRequest.tag": {"pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
                                 "description": "unique within the dataset"},
    "CreateVersionRequest.tenant_id": _TENANT_FIELD,
}


# Rules no JSON Schema here can state, because they depend on stored state (the dataset's
# dimensions and metric, the values fixed at its creation, page tokens this API issued) or tie
# fields together. The document lists them (`x-stateful-rules` and the info description), and a
# 400 for one of them names it in its message: (the message's pattern, the rule).
STATEFUL_RULES: list[tuple[str, str]] = [
    (r"has dimension \d+, dataset expects \d+",
     "a vector (or query vector) has exactly as many values as its dataset's `dimensions`"),
    (r"is a zero vector, which has no cosine direction|is too small to normalize in float32",
     "under the cosine metric a vector is not all zeros (nor too small to normalize)"),
    (r"replication_factor must be between 1 and the \d+ live node",
     "a dataset's `replication_factor`, when given, is at least 1 and at most the number of "
     "live nodes"),
    (r"a search cannot switch it to",
     "a search's `options.metric_type`, when given, is the dataset's own metric"),
    (r"cannot be changed \(dataset",
     "an update of a dataset repeats its immutable fields (name, dimensions, metric_type, "
     "index_type, shard_count, replication_factor, storage_location, id) with their current "
     "values, or leaves them out"),
    (r"dataset_id .*differs|differs from the one in the path",
     "an id in the body equals the one in the path"),
    (r"page_token is not a token this API returned",
     "`page_token` is a `next_page_token` this API returned"),
    (r"appears twice in the batch",
     "the ids of one insert are distinct"),
    (r"skip_existing and overwrite are mutually exclusive",
     "`skip_existing` and `overwrite` are not both true"),
    (r"metadata is larger than \d+ bytes",
     f"a metadata map holds at most {limits.metadata_bytes_max} bytes of keys and values"),
    (r"cannot be cleared",
     "an update does not clear `values` (a vector always has values)"),
    (r"invalid filter at |filter nests|bad field in filter|filter on '|unknown operator|"
     r"IN list",
     "`filter` is an expression in the filter grammar (`category = 'tech' AND year >= 2020`)"),
    (r"filters\[.*holds numbers|filters map is \d+ bytes",
     "a `filters` value compares with the field's stored type, and the map holds at most "
     f"{filter_parse.filter_expression_bytes_max} bytes of keys and values"),
    (r"is before the first version of dataset",
     "`as_of_time` is not before the dataset's first version"),
    (r"give as_of_version or as_of_time, not both",
     "a read names `as_of_version` or `as_of_time`, not both"),
    (r": Bad Request$",
     "GET .../search/stream is a WebSocket upgrade: without the upgrade headers it is a 400"),
]


class SchemaBuilder:
    """Converts message descriptors to JSON Schemas following the proto3 JSON mapping as the REST
    layer renders it (`preserving_proto_field_name=True`): field names as in the proto, int64 as
    an integer where rest.py converts it (else a string, as proto3 JSON says), repeated as an
    array, maps as objects, Timestamp as a date-time string, enums as their names.

    Named schemas are collected in `self.components` and referenced with $ref. In request mode a
    message `Foo` becomes `FooInput`: unknown fields are rejected (the REST layer parses with
    ignore_unknown_fields=False) and `metadata` maps also accept numbers and booleans (stored as
    strings)."""

    def __init__(self, int64_as_number: set[str] | None = None):
        self.int64_as_number = _int64_numbers() if int64_as_number is None else int64_as_number
        self.components: dict[str, dict] = {}

    def ref(self, descriptor: Descriptor, request: bool = False) -> dict:
        name = descriptor.name + ("Input" if request else "")
        if name not in self.components:
            self.components[name] = {}  # placeholder: stops recursion on cyclic messages
            self.components[name] = self.message_schema(descriptor, request=request)
        return {"$ref": f"#/components/schemas/{name}"}

    def message_schema(self, descriptor: Descriptor, request: bool = False,
                       exclude: tuple[str, ...] = (), required: tuple[str, ...] = (),
                       descriptions: dict[str, str] | None = None) -> dict:
        properties = {}
        for field in descriptor.fields:
            if field.name in exclude:
                continue
            schema = self.field_schema(field, request)
            if descriptions and field.name in descriptions:
                schema = {**schema, "description": descriptions[field.name]}
            properties[field.name] = schema
        schema: dict[str, Any] = {"type": "object", "title": descriptor.full_name,
                                  "properties": properties}
        if request:
            schema["additionalProperties"] = False
        if required:
            schema["required"] = list(required)
        return schema

    def field_schema(self, field: FieldDescriptor, request: bool = False) -> dict:
        schema = self._field_schema(field, request)
        rules = REQUEST_FIELD_RULES.get(f"{field.containing_type.name}.{field.name}") \
            if request else None
        if rules:
            items = rules.get("items")
            schema = {**schema, **{k: v for k, v in rules.items() if k != "items"}}
            if items is not None:
                schema["items"] = {**schema["items"], **items}
        return schema

    def _field_schema(self, field: FieldDescriptor, request: bool) -> dict:
        message = field.message_type
        if message is not None and message.GetOptions().map_entry:
            value_field = message.fields_by_name["value"]
            value = self.single_schema(value_field, request)
            if request and field.name == "metadata" and \
                    value_field.type == FieldDescriptor.TYPE_STRING:
                value = {"type": ["string", "number", "boolean"],
                         "description": "numbers and booleans are stored as strings"}
            return {"type": "object", "additionalProperties": value}
        single = self.single_schema(field, request)
        if _is_repeated(field):
            return {"type": "array", "items": single}
        return single

    def single_schema(self, field: FieldDescriptor, request: bool = False) -> dict:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.full_name == _TIMESTAMP:
                return {"type": "string", "format": "date-time"}
            return self.ref(field.message_type, request)
        if field.type == FieldDescriptor.TYPE_ENUM:
            return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
        if field.type == FieldDescriptor.TYPE_FLOAT and request:
            # A float field holds a float32: a JSON number beyond its range does not parse.
            return {**_SCALARS[field.type], "minimum": -_FLOAT32_MAX, "maximum": _FLOAT32_MAX}
        if field.type in _INT64_TYPES:
            if field.name in self.int64_as_number or request:
                # Parsing accepts numbers for int64 fields; rest.py renders these as numbers.
                return {"type": "integer", "format": "int64"}
            return {"type": "string", "format": "int64"}
        return dict(_SCALARS[field.type])


def message_to_json_schema(descriptor: Descriptor) -> tuple[dict, dict]:
    """The JSON Schema of one message (response mode) and the named schemas it references."""
    builder = SchemaBuilder()
    return builder.message_schema(descriptor), builder.components


# ---- the hand-written table ---------------------------------------------------------------------

_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["type", "message", "retriable"],
        "properties": {
            "type": {"type": "string",
                     "enum": sorted(cls.__name__ for cls in errors.all_error_types()),
                     "description": "the tributary.errors class name"},
            "message": {"type": "string"},
            "retriable": {"type": "boolean",
                          "description": "true when the same request may succeed if retried"},
        }}},
}

_STATUS_TEXT = {
    400: "Invalid argument (InvalidArgument): a bad body, field, name or parameter.",
    404: "Not found (NotFound): the dataset or vector does not exist for this tenant.",
    409: "Conflict: AlreadyExists, or Aborted (a transaction lost a conflict; retriable).",
    413: f"Payload too large (PayloadTooLarge): the body exceeds {limits.request_bytes_max} "
         "bytes.",
    500: "Internal error (Internal).",
    503: "Unavailable, StaleEpoch or NotLeader: the cluster cannot serve now; retriable.",
    504: "Deadline exceeded (DeadlineExceeded): a shard node did not answer in time; retriable.",
}

_TENANT = {"name": "X-Tenant-Id", "in": "header", "required": False,
           "description": "The tenant whose datasets are addressed (default tenant `default`). "
                          "The `tenant_id` query parameter is accepted as a fallback.",
           "schema": validation.name_json_schema("a tenant id", allow_empty=True)}
_IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
                "description": "A retry with the same key and dataset returns the first "
                               "outcome instead of writing again.",
                "schema": {"type": "string", "pattern": r"^[^\u0000-\u001F]*$",
                           **validation.bytes_json_schema(limits.idempotency_key_bytes_max,
                                                          "an idempotency key")}}
_DATASET_ID = {"name": "dataset_id", "in": "path", "required": True,
               "description": "The dataset name.", "schema": validation.name_json_schema()}
_VECTOR_ID = {"name": "vector_id", "in": "path", "required": True,
              "description": "The vector id.", "schema": validation.vector_id_json_schema()}
_PAGE_SIZE = {"name": "page_size", "in": "query", "required": False,
              "description": f"Items per page, 1..{limits.list_page_size_max} (0 or absent: the "
                             "default).",
              "schema": {"type": "integer", "minimum": 0,
                         "maximum": limits.list_page_size_max}}
_PAGE_TOKEN = {"name": "page_token", "in": "query", "required": False,
               "description": "The `next_page_token` of the previous page.",
               "schema": {"type": "string"}}
_MASK_PATH = "(?:" + "|".join((*UPDATABLE_FIELDS, r"\*")) + ")"
_MASK_PATTERN = rf"^ *(?:{_MASK_PATH} *(?:, *{_MASK_PATH} *)*)?$"
_UPDATE_MASK = {"name": "update_mask", "in": "query", "required": False,
                "description": "Comma-separated vector fields to change (AIP-134), e.g. "
                               "`content,metadata`; `*` names them all. Without it, the fields "
                               "present in the body change. A named field absent from the body "
                               f"is cleared. Updatable: {', '.join(UPDATABLE_FIELDS)}; any other "
                               "name is a 400 that names it.",
                "schema": {"type": "string", "pattern": _MASK_PATTERN}}
_AS_OF_VERSION = {"name": "as_of_version", "in": "query", "required": False,
                  "description": "Read the dataset as it was at this version (its tag; see "
                                 "POST .../versions). A vector written after it is a 404 here.",
                  "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"}}
_AS_OF_TIME = {"name": "as_of_time", "in": "query", "required": False,
               "description": "Read the newest version taken at or before this RFC 3339 time "
                              "(400 when it is before the first version); not with "
                              "as_of_version.",
               "schema": {"type": "string", "format": "date-time"}}
_INCLUDE_VALUES = {"name": "include_values", "in": "query", "required": False,
                   "description": "`true` or `1` to return each vector's values.",
                   "schema": {"type": "boolean", "default": False}}

# The credentials router/auth.py accepts, in either header. An operation that auth.DEFAULT_EXEMPT
# serves without one says `security: []` (router/admin.py marks them).
SECURITY_SCHEMES = {
    "api-key": {"type": "apiKey", "in": "header", "name": "api-key",
                "description": "An API key (`trb_<12 hex>_<43 chars>`, or the bootstrap admin "
                               "key) or a JWT, in the `api-key` header."},
    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "API key or JWT",
               "description": "`Authorization: Bearer <API key or JWT>`. JWTs are HS256 or RS256 "
                              "and carry `exp`, `tenant_id` (or `role: admin`) and optionally "
                              "`access` and `datasets`."},
}
# Either scheme on its own is enough.
SECURITY = [{"api-key": []}, {"bearer": []}]

# Statuses that every data-plane call can meet on top of its own.
_CLUSTER = (500, 503, 504)


def _op(op_id: str, tag: str, summary: str, *, description: str = "", params=(),
        body: str | dict | None = None, ok: int = 200, ok_schema: str | dict | None = None,
        ok_text: str = "OK", errors_: tuple[int, ...] = (), ok_content: dict | None = None,
        extra_responses: dict[int, tuple[str, str | dict]] | None = None) -> dict:
    return {"operationId": op_id, "tag": tag, "summary": summary, "description": description,
            "params": list(params), "body": body, "ok": ok, "ok_schema": ok_schema,
            "ok_text": ok_text, "errors": errors_, "ok_content": ok_content,
            "extra_responses": extra_responses or {}}


# (method, path) -> operation. Schemas named by string are built in `_named_schemas`.
OPERATIONS: dict[tuple[str, str], dict] = {
    ("POST", f"{BASE}/datasets"): _op(
        "createDataset", "datasets", "Create a dataset",
        description="`shard_count` is optional (0: the number of live nodes). `overwrite: true` "
                    "replaces an existing dataset of the same name.",
        params=[_TENANT], body="CreateDatasetBody", ok=201,
        ok_schema="CreateDatasetResponse", ok_text="Created",
        errors_=(400, 409, 413) + _CLUSTER),
    ("GET", f"{BASE}/datasets"): _op(
        "listDatasets", "datasets", "List the tenant's datasets",
        description="Ordered by name; follow `next_page_token` until it is empty. Counts are "
                    "not filled in (use GET /datasets/{dataset_id}).",
        params=[_TENANT, _PAGE_SIZE, _PAGE_TOKEN], ok_schema="ListDatasetsResponse",
        errors_=(400, 500, 503)),
    ("GET", f"{BASE}/datasets/{{dataset_id}}"): _op(
        "getDataset", "datasets", "Get a dataset, with vector_count and storage_size",
        params=[_DATASET_ID, _TENANT], ok_schema="GetDatasetResponse",
        errors_=(400, 404) + _CLUSTER),
    ("DELETE", f"{BASE}/datasets/{{dataset_id}}"): _op(
        "deleteDataset", "datasets", "Delete a dataset and all its vectors",
        params=[_DATASET_ID, _TENANT], ok_schema="DeleteDatasetResponse",
        errors_=(400, 404, 409) + _CLUSTER),
    ("POST", f"{BASE}/datasets/{{dataset_id}}/vectors"): _op(
        "insertVectors", "vectors", "Insert vectors",
        description="Atomic across shards. An id that already exists fails the batch with 409 "
                    "unless `overwrite` or `skip_existing` is set. The same operation as "
                    "POST .../vectors/batch.",
        params=[_DATASET_ID, _TENANT, _IDEMPOTENCY], body="InsertVectorsBody", ok=201,
        ok_schema="InsertVectorsResponse", ok_text="Created",
        errors_=(400, 404, 409, 413) + _CLUSTER),
    ("POST", f"{BASE}/datasets/{{dataset_id}}/vectors/batch"): _op(
        "insertVectorsBatch", "vectors", "Insert vectors (batch alias)",
        description="The same operation as POST /datasets/{dataset_id}/vectors.",
        params=[_DATASET_ID, _TENANT, _IDEMPOTENCY], body="InsertVectorsBody", ok=201,
        ok_schema="InsertVectorsResponse", ok_text="Created",
        errors_=(400, 404, 409, 413) + _CLUSTER),
    ("DELETE", f"{BASE}/datasets/{{dataset_id}}/vectors/batch"): _op(
        "deleteVectors", "vectors", "Delete vectors by id",
        description="Ids that do not exist are counted in `not_found_count`, not an error.",
        params=[_DATASET_ID, _TENANT, _IDEMPOTENCY], body="DeleteVectorsBody",
        ok_schema="DeleteVectorsResponse", errors_=(400, 404, 409, 413) + _CLUSTER),
    ("GET", f"{BASE}/datasets/{{dataset_id}}/vectors"): _op(
        "listVectors", "vectors", "List vectors, a page at a time",
        description="Follow `next_page_token` until it is empty.",
        params=[_DATASET_ID, _TENANT, _PAGE_SIZE, _PAGE_TOKEN, _INCLUDE_VALUES,
                _AS_OF_VERSION, _AS_OF_TIME],
        ok_schema="ListVectorsResponse", errors_=(400, 404) + _CLUSTER),
    ("GET", f"{BASE}/datasets/{{dataset_id}}/vectors/{{vector_id}}"): _op(
        "getVector", "vectors", "Get one vector",
        params=[_DATASET_ID, _VECTOR_ID, _TENANT, _AS_OF_VERSION, _AS_OF_TIME],
        ok_schema="GetVectorResponse",
        errors_=(400, 404) + _CLUSTER),
    ("PUT", f"{BASE}/datasets/{{dataset_id}}/vectors/{{vector_id}}"): _op(
        "updateVector", "vectors", "Update a vector's fields (AIP-134)",
        description="Changes only the fields named by `update_mask` or, without it, the fields "
                    "present in the body (the body is a Vector); every other field keeps its "
                    "stored value. To clear a field, name it in `update_mask` and leave it out "
                    "of the body, or send it as `null`. `values` can be replaced, not cleared. "
                    "Output-only fields in the body (`id`, `created_at`, ...) are ignored; a "
                    "body `id` must match the path. The vector must exist (404 otherwise). "
                    "Fields are merged into the stored row atomically: a failed update "
                    "changes nothing.",
        params=[_DATASET_ID, _VECTOR_ID, _TENANT, _UPDATE_MASK], body="VectorInput",
        ok_schema="UpdateVectorResponse", errors_=(400, 404, 409, 413) + _CLUSTER),
    ("DELETE", f"{BASE}/datasets/{{dataset_id}}/vectors/{{vector_id}}"): _op(
        "deleteVector", "vectors", "Delete one vector",
        params=[_DATASET_ID, _VECTOR_ID, _TENANT], ok_schema="DeleteVectorResponse",
        errors_=(400, 404, 409) + _CLUSTER),
    ("POST", f"{BASE}/datasets/{{dataset_id}}/search"): _op(
        "searchVectors", "search", "Search by vector",
        description="Options: `top_k`, `include_content`, `include_metadata`, `ef_search`, "
                    "`min_score`, `threshold`, `max_distance`, `deduplicate`, "
                    "`group_by_document`, `filters` (equality map) and `filter` (an expression "
                    "such as `category = 'tech' AND year >= 2020`). A top-level `exact: true` "
                    "asks for exact results (brute force, recall 1.0) on any dataset. A "
                    "top-level `as_of_version` (a version's tag) or `as_of_time` searches "
                    "the dataset as it was then, by exact scan of that version's rows.",
        params=[_DATASET_ID, _TENANT], body="SearchVectorsBody",
        ok_schema="SearchVectorsResponse", errors_=(400, 404, 413) + _CLUSTER),
    ("GET", f"{BASE}/datasets/{{dataset_id}}/search/stream"): _op(
        "searchStream", "search", "WebSocket query stream",
        description="Upgrade to a WebSocket, then send search bodies (as for POST .../search) "
                    "as text frames. Each query is answered by one `{\"type\": \"partial\"}` "
                    "frame per shard merged so far and a final `{\"type\": \"complete\"}` "
                    "frame with the whole SearchVectorsResponse and its stats; a bad query gets "
                    "`{\"type\": \"error\"}` and the socket stays open. A request without "
                    "the WebSocket upgrade headers is a 400.",
        params=[_DATASET_ID, _TENANT], ok=101,
        ok_text="Switching Protocols: the WebSocket is open", errors_=(400, 404) + _CLUSTER),
    ("POST", f"{BASE}/datasets/{{dataset_id}}/search/text"): _op(
        "searchByText", "search", "Search by text (BM25 over content)",
        description="Ranked by Deep Lake's BM25 index on `content`; `score` is the BM25 score. "
                    "Options as for vector search (`top_k`, `filter`, `filters`, "
                    "`include_content`, `include_metadata`, `min_score`).",
        params=[_DATASET_ID, _TENANT], body="SearchByTextBody",
        ok_schema="SearchByTextResponse", errors_=(400, 404, 413) + _CLUSTER),
    ("POST", f"{BASE}/datasets/{{dataset_id}}/search/hybrid"): _op(
        "hybridSearch", "search", "Hybrid search: vector and BM25, fused",
        description="`fusion`: `rrf` (default; sum of 1/(rrf_k + rank), rrf_k defaults to "
                    "60) or `alpha` (min-max normalized scores, alpha * vector + (1 - alpha) "
                    "* text; alpha defaults to 0.5, and an explicit 0 ranks by text alone). "
                    "Each result's `explanation` gives its ranks, scores and the alpha or "
                    "rrf_k used.",
        params=[_DATASET_ID, _TENANT], body="HybridSearchBody",
        ok_schema="HybridSearchResponse", errors_=(400, 404, 413) + _CLUSTER),
    ("GET", f"{BASE}/health"): _op(
        "health", "operations", "Cluster health",
        description="200 once the meta group has a leader and every registered node is live; "
                    "503 with the same body otherwise, and also when a node that holds a shard "
                    "cannot be reached from this router. Besides the deeplake.v1 fields, "
                    "`checks` gives each dependency's status (`ok`, `degraded`, `unhealthy`): "
                    "`meta` (leader, term), `nodes` (per node: reachable from this router, "
                    "copies, latency, index backlog), `index_backlog` and `shards`.",
        ok_schema="HealthCheckResponse", ok_text="Healthy",
        extra_responses={503: ("Unhealthy (the body says which dependency)",
                               "HealthCheckResponse")}),
    ("GET", f"{BASE}/ready"): _op(
        "ready", "operations", "Whether this router can serve",
        description="200 `{\"ready\": true}` once this router holds a catalog and the meta "
                    "group has a leader (no node is asked: a readiness probe); 503 with "
                    "`ready: false` and the reason otherwise.",
        ok_schema={"type": "object", "properties": {"ready": {"type": "boolean"},
                                                    "reason": {"type": "string"}}},
        ok_text="Ready", extra_responses={503: ("Not ready", {"type": "object", "properties": {
            "ready": {"type": "boolean"}, "reason": {"type": "string"}}})}),
    ("GET", f"{BASE}/metrics"): _op(
        "metrics", "operations", "Prometheus metrics",
        ok_content={"text/plain": {"schema": {"type": "string"}}}),
    ("GET", f"{BASE}/stats"): _op(
        "stats", "operations", "Catalog summary and limits", ok_schema="Stats"),
    ("PUT", f"{BASE}/datasets/{{dataset_id}}"): _op(
        "updateDataset", "datasets", "Update a dataset's description and metadata",
        description="Only `description` and `metadata` change; null or absent keeps them, "
                    "`\"\"` / `{}` clears them. The body may be a dataset read from GET: "
                    "output-only fields are ignored and immutable fields (name, dimensions, "
                    "metric_type, index_type, shard_count, ...) must keep their values (400 "
                    "otherwise).",
        params=[_DATASET_ID, _TENANT], body="UpdateDatasetBody",
        ok_schema="UpdateDatasetResponse", errors_=(400, 404, 409, 413) + _CLUSTER),
    ("GET", f"{BASE}/datasets/{{dataset_id}}/stats"): _op(
        "getDatasetStats", "datasets", "Dataset statistics",
        params=[_DATASET_ID, _TENANT], ok_schema="GetDatasetStatsResponse",
        errors_=(400, 404) + _CLUSTER),
    ("POST", f"{BASE}/datasets/{{dataset_id}}/compact"): _op(
        "compactDataset", "datasets", "Purge soft-deleted vectors and rebuild the index",
        params=[_DATASET_ID, _TENANT], ok_schema="CompactDatasetResponse",
        errors_=(400, 404, 409) + _CLUSTER),
    ("POST", f"{BASE}/datasets/{{dataset_id}}/vectors/{{vector_id}}/soft-delete"): _op(
        "softDeleteVector", "vectors", "Soft-delete one vector",
        description="The vector stops appearing in reads and searches until restored or "
                    "purged by compaction. No body.",
        params=[_DATASET_ID, _VECTOR_ID, _TENANT], ok_schema="SoftDeleteVectorsResponse",
        errors_=(400, 404, 409) + _CLUSTER),
    ("POST", f"{BASE}/datasets/{{dataset_id}}/vectors/{{vector_id}}/restore"): _op(
        "restoreVector", "vectors", "Restore a soft-deleted vector",
        description="404 when the vector is not soft-deleted. No body.",
        params=[_DATASET_ID, _VECTOR_ID, _TENANT], ok_schema="RestoreVectorsResponse",
        errors_=(400, 404, 409) + _CLUSTER),
    ("POST", f"{BASE}/search/multi-dataset"): _op(
        "multiDatasetSearch", "search", "Search several datasets at once",
        description="The datasets (of one tenant) must share dimensions and metric; hits are "
                    "merged and each hit's `vector.dataset_id` names its dataset.",
        params=[_TENANT], body="MultiDatasetSearchBody", ok_schema="SearchVectorsResponse",
        errors_=(400, 404, 413) + _CLUSTER),
    ("POST", f"{BASE}/datasets/{{dataset_id}}/versions"): _op(
        "createVersion", "datasets", "Create a version: a consistent cut of every shard",
        description="Records the dataset's state under `tag`: every multi-shard batch is in "
                    "it whole or not at all, and every write acknowledged before the call is "
                    "in it. Multi-shard commits of the dataset pause while the cut is taken "
                    "(`commit_pause_ms`, at most about a second); other writes go on. Reads "
                    "name it with `as_of_version` (or `as_of_time`). Old versions are dropped "
                    "beyond a count and an age (limits versions_per_dataset_max, "
                    "version_retention_ms).",
        params=[_DATASET_ID, _TENANT], body="CreateVersionBody", ok=201,
        ok_schema="CreateVersionResponse", ok_text="Created",
        errors_=(400, 404, 409, 413) + _CLUSTER),
    ("GET", f"{BASE}/datasets/{{dataset_id}}/versions"): _op(
        "listVersions", "datasets", "List a dataset's versions, oldest first",
        description="Each with its tag, the time it was taken and its vector count.",
        params=[_DATASET_ID, _TENANT], ok_schema="ListVersionsResponse",
        errors_=(400, 404) + _CLUSTER),
    ("GET", OPENAPI_PATH): _op(
        "openapi", "meta", "This OpenAPI document",
        ok_content={"application/json": {"schema": {"type": "object"}}}),
    ("GET", DOCS_PATH): _op(
        "docs", "meta", "A readable HTML page of this document",
        ok_content={"text/html": {"schema": {"type": "string"}}}),
}

# The admin API (/admin/...) and the 401/403/429 of authenticated operations: router/admin.py.
extend_admin_openapi(OPERATIONS, _STATUS_TEXT, _op)
backups_admin.extend_openapi(OPERATIONS, _op)  # /api/v1/admin/backups, /restores
reshard_admin.extend_openapi(OPERATIONS, _op)  # /api/v1/admin/datasets/{dataset_id}/reshard
STATEFUL_RULES.append(backups_admin.STATEFUL_RULE)
STATEFUL_RULES.append(reshard_admin.STATEFUL_RULE)


def _message(name: str):
    """The deeplake.v1 message class called `name`, or None (the proto may be mid-change)."""
    return getattr(pb, name, None)


def _named_schemas(builder: SchemaBuilder) -> None:
    """Fills builder.components with the hand-shaped request bodies and helper schemas; response
    messages named in OPERATIONS are added by `_schema_ref` as they are met."""
    builder.ref(pb.Vector.DESCRIPTOR, request=True)
    builder.components["CreateDatasetBody"] = builder.message_schema(
        pb.CreateDatasetRequest.DESCRIPTOR, request=True, required=("name", "dimensions"),
        descriptions={"tenant_id": "defaults to the X-Tenant-Id header",
                      "metric_type": "cosine (default), l2 or ip",
                      "shard_count": "0: the number of live nodes",
                      "replication_factor": "copies of each shard, on distinct nodes; unset: "
                                            "2, capped at the live nodes",
                      "storage_location": "chosen by the cluster; must be empty"})
    builder.components["InsertVectorsBody"] = builder.message_schema(
        pb.InsertVectorsRequest.DESCRIPTOR, request=True,
        # packed_values is the gRPC form of the values (raw float32 bytes); a JSON body
        # carries them per vector.
        exclude=("dataset_id", "packed_values"),
        required=("vectors",),
        descriptions={"tenant_id": "defaults to the X-Tenant-Id header",
                      "overwrite": "replace vectors whose id exists (exclusive with "
                                   "skip_existing)",
                      "skip_existing": "leave vectors whose id exists and count them skipped"})
    # A vector of an insert needs its id and values (an update's body may leave them out).
    builder.components["InsertVectorsBody"]["properties"]["vectors"]["items"] = {"allOf": [
        builder.ref(pb.Vector.DESCRIPTOR, request=True),
        {"required": ["id", "values"], "properties": {
            "id": {"minLength": 1}, "values": {"minItems": 1}}}]}
    if _message("MultiDatasetSearchRequest") is not None:
        builder.components["MultiDatasetSearchBody"] = builder.message_schema(
            pb.MultiDatasetSearchRequest.DESCRIPTOR, request=True,
            required=("dataset_ids", "query_vector"),
            descriptions={"tenant_id": "defaults to the X-Tenant-Id header"})
    # The fields rest.split_update_body takes: the changeable ones, the immutable ones (which
    # must keep their values) and the output-only ones (ignored); any other Dataset field is a
    # 400 there, so it is not in the document either.
    taken = {"description", "metadata", "tenant_id", *IMMUTABLE_DATASET_FIELDS,
             *DATASET_OUTPUT_ONLY}
    update = builder.message_schema(pb.Dataset.DESCRIPTOR, request=True, descriptions={
        "description": "null or absent keeps it; \"\" clears it",
        "metadata": "null or absent keeps it; {} clears it"},
        exclude=tuple(f.name for f in pb.Dataset.DESCRIPTOR.fields if f.name not in taken))
    for key in ("description", "metadata"):
        kinds = update["properties"][key]["type"]
        update["properties"][key]["type"] = [kinds, "null"]
    for key in DATASET_OUTPUT_ONLY:
        update["properties"][key]["description"] = "output-only; ignored"
    for key in IMMUTABLE_DATASET_FIELDS:
        update["properties"][key]["description"] = "immutable; must equal the current value"
    update["properties"]["dataset_id"] = {"type": "string",
                                          "description": "must equal the path's dataset_id"}
    update["title"] = "UpdateDatasetBody"
    builder.components["UpdateDatasetBody"] = update
    builder.components["SearchVectorsBody"] = builder.message_schema(
        pb.SearchVectorsRequest.DESCRIPTOR, request=True, exclude=("dataset_id",),
        required=("query_vector",),
        descriptions={"tenant_id": "defaults to the X-Tenant-Id header",
                      "exact": "true: exact results (a brute-force scan of every matching "
                               "row, recall 1.0) on any dataset; ef_search is then ignored"})
    builder.components["CreateVersionBody"] = builder.message_schema(
        pb.CreateVersionRequest.DESCRIPTOR, request=True, exclude=("dataset_id",),
        required=("tag",), descriptions={"tenant_id": "defaults to the X-Tenant-Id header"})
    builder.components["SearchByTextBody"] = builder.message_schema(
        pb.SearchByTextRequest.DESCRIPTOR, request=True, exclude=("dataset_id",),
        required=("query_text",),
        descriptions={"tenant_id": "defaults to the X-Tenant-Id header"})
    builder.components["HybridSearchBody"] = builder.message_schema(
        pb.HybridSearchRequest.DESCRIPTOR, request=True, exclude=("dataset_id",),
        required=("query_vector", "query_text"),
        descriptions={"tenant_id": "defaults to the X-Tenant-Id header",
                      "fusion": "rrf (default) or alpha",
                      "alpha": "weight of the vector part under fusion=alpha, 0 (text "
                               "only) to 1 (vector only); 0.5 if unset",
                      "rrf_k": "the k of 1 / (k + rank) under fusion=rrf; 60 if unset"})
    hybrid = builder.components["HybridSearchBody"]["properties"]
    hybrid["alpha"].update(minimum=0, maximum=1)
    if "rrf_k" in hybrid:
        hybrid["rrf_k"].update(minimum=0, maximum=limits.rrf_k_max)
    builder.components["DeleteVectorsBody"] = {
        "type": "object", "required": ["vector_ids"],
        "properties": {
            "vector_ids": {"type": "array", "items": validation.vector_id_json_schema(),
                           "minItems": 1, "maxItems": limits.batch_vectors_max},
            "ids": {"type": "array", "items": validation.vector_id_json_schema(),
                    "minItems": 1, "maxItems": limits.batch_vectors_max,
                    "description": "accepted in place of vector_ids (ignored when vector_ids "
                                   "is given)"}}}
    builder.components["Stats"] = {
        "type": "object", "description": "REST only; no deeplake.v1 message holds it.",
        "properties": {
            "catalog_version": {"type": "integer"}, "tenants": {"type": "integer"},
            "datasets": {"type": "integer"},
            "nodes": {"type": "array", "items": {"type": "string"}},
            "node_count": {"type": "integer"},
            "live_nodes": {"type": ["array", "null"], "items": {"type": "string"},
                           "description": "null when the meta group has no leader"},
            "live_node_count": {"type": ["integer", "null"]},
            "datasets_per_tenant": {"type": "object",
                                    "additionalProperties": {"type": "integer"}},
            "router_uptime_s": {"type": "number"}, "version": {"type": "string"},
            "meta": {"type": "string", "description": "ok, or why the answer is cached"},
            "limits": {"type": "object", "description": "tributary.limits, name -> value"}}}
    builder.components["Error"] = _ERROR_SCHEMA


def _schema_ref(builder: SchemaBuilder, schema: str | dict) -> dict:
    if not isinstance(schema, str):
        return schema
    if schema not in builder.components:
        message = _message(schema)
        if message is None:
            builder.components[schema] = {"type": "object",
                                          "description": f"deeplake.v1.{schema} (not in the "
                                                         "generated proto module)"}
        else:
            builder.ref(message.DESCRIPTOR)
    return {"$ref": f"#/components/schemas/{schema}"}


def _operation(builder: SchemaBuilder, spec: dict) -> dict:
    responses: dict[str, dict] = {}
    ok = {"description": spec["ok_text"]}
    if spec["ok_content"] is not None:
        ok["content"] = spec["ok_content"]
    elif spec["ok_schema"] is not None:
        ok["content"] = {"application/json": {"schema": _schema_ref(builder,
                                                                    spec["ok_schema"])}}
    responses[str(spec["ok"])] = ok
    for status in spec["errors"]:
        responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
    for status, (text, schema) in spec["extra_responses"].items():
        responses[str(status)] = {"description": text, "content": {
            "application/json": {"schema": _schema_ref(builder, schema)}}}
    operation: dict[str, Any] = {"operationId": spec["operationId"], "tags": [spec["tag"]],
                                 "summary": spec["summary"], "responses": responses}
    if spec["description"]:
        operation["description"] = spec["description"]
    if "security" in spec:
        operation["security"] = spec["security"]
    if spec["params"]:
        operation["parameters"] = [dict(p) for p in spec["params"]]
    if spec["body"] is not None:
        operation["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": _schema_ref(builder, spec["body"])}}}
    return operation


def app_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of every route the app serves, HEAD excluded (aiohttp adds a HEAD
    for each GET)."""
    found = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*") or route.resource is None:
            continue
        found.add((route.method.upper(), route.resource.canonical))
    return found


# Path parameters of routes that OPERATIONS does not declare (the admin API's).
_PATH_SCHEMAS = {
    "tenant_id": validation.name_json_schema("a tenant id"),
    "key_id": {"type": "string", "minLength": 1, "maxLength": limits.name_bytes_max // 4},
}


def build_document(app: web.Application | None = None) -> dict:
    """The OpenAPI document: every operation of OPERATIONS, plus a stub for each route of `app`
    that OPERATIONS does not describe."""
    builder = SchemaBuilder()
    _named_schemas(builder)
    paths: dict[str, dict] = {}
    for (method, path), spec in OPERATIONS.items():
        paths.setdefault(path, {})[method.lower()] = _operation(builder, spec)
    for method, path in sorted(app_routes(app) if app is not None else ()):
        if (method, path) in OPERATIONS:
            continue
        slug = "".join(ch if ch.isalnum() else "_" for ch in path).strip("_")
        paths.setdefault(path, {})[method.lower()] = {
            "operationId": f"undocumented_{method.lower()}_{slug}",
            "summary": "(undocumented: add it to router/openapi.py OPERATIONS)",
            UNDOCUMENTED: True, "responses": {"default": {"description": "unknown"}}}
    for path, operations in paths.items():
        names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
        for operation in operations.values():
            declared = {p["name"] for p in operation.get("parameters", ()) if p["in"] == "path"}
            operation.setdefault("parameters", []).extend(
                {"name": n, "in": "path", "required": True,
                 "schema": _PATH_SCHEMAS.get(n, {"type": "string"})}
                for n in names if n not in declared)
            if not operation["parameters"]:
                del operation["parameters"]
    error_responses = {
        f"Error{status}": {"description": text, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}}
        for status, text in _STATUS_TEXT.items()}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Tributary — Deep Lake Vector Service REST API",
                 "version": __version__,
                 "description": "The REST face of deeplake.v1 (proto/deeplake_service.proto). "
                                "Bodies use the proto3 JSON mapping with the proto field names; "
                                "int64 counts are rendered as numbers. Numbers are JSON "
                                "numbers: a string where a number is expected (`\"top_k\": "
                                "\"5\"`) is a 400 that names the field. Errors are "
                                "`{\"error\": {\"type\", \"message\", \"retriable\"}}`. "
                                "Besides what the schemas say, a request must keep these "
                                "rules, which depend on stored state or tie fields together "
                                "(a 400 otherwise): "
                                + "; ".join(rule for _, rule in STATEFUL_RULES) + "."},
        "x-stateful-rules": [rule for _, rule in STATEFUL_RULES],
        "servers": [{"url": "/"}],
        "tags": [{"name": "datasets"}, {"name": "vectors"}, {"name": "search"},
                 {"name": "operations"}, {"name": "meta"}],
        "security": SECURITY,
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(builder.components.items())),
                       "responses": error_responses,
                       "securitySchemes": SECURITY_SCHEMES},
    }


# ---- the HTML page ------------------------------------------------------------------------------

_METHOD_COLORS = {"get": "#2b6cb0", "post": "#2f855a", "put": "#b7791f", "delete": "#c53030",
                  "patch": "#6b46c1"}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;
max-width:70rem;padding:0 1rem;color:#1a202c;line-height:1.45}
h1{margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #e2e8f0;padding-bottom:.2rem}
details{border:1px solid #e2e8f0;border-radius:6px;margin:.5rem 0;padding:.4rem .8rem}
summary{cursor:pointer}code,pre{font-family:ui-monospace,Menlo,Consolas,monospace}
pre{background:#f7fafc;border:1px solid #edf2f7;padding:.6rem;overflow:auto;font-size:.85rem}
.m{display:inline-block;min-width:4.2rem;text-align:center;color:#fff;border-radius:4px;
font-weight:600;font-size:.8rem;padding:.1rem .3rem;margin-right:.5rem}
.p{font-weight:600}.s{color:#4a5568;margin-left:.6rem}table{border-collapse:collapse}
td,th{border:1px solid #e2e8f0;padding:.2rem .5rem;text-align:left;vertical-align:top}
.warn{color:#c53030;font-weight:600}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _prose(value: Any) -> str:
    """Escaped text with `backtick` spans shown as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _esc(value))


def _resolve(document: dict, schema: dict) -> tuple[str, dict]:
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/"):
        _, _, kind, name = ref.split("/", 3)
        return name, document["components"][kind][name]
    return "", schema


def render_html(document: dict) -> str:
    """A self-contained page (no scripts, no external assets) listing every operation."""
    out = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
           f"<title>{_esc(document['info']['title'])}</title><style>{_CSS}</style></head><body>",
           f"<h1>{_esc(document['info']['title'])}</h1>",
           f"<p>Version {_esc(document['info']['version'])} · OpenAPI "
           f"{_esc(document['openapi'])} · machine-readable: "
           f"<a href='{OPENAPI_PATH}'>{OPENAPI_PATH}</a></p>",
           f"<p>{_prose(document['info'].get('description', ''))}</p>"]
    by_tag: dict[str, list[tuple[str, str, dict]]] = {}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            tag = (operation.get("tags") or ["other"])[0]
            by_tag.setdefault(tag, []).append((path, method, operation))
    order = [t["name"] for t in document.get("tags", [])]
    for tag in sorted(by_tag, key=lambda t: (order.index(t) if t in order else len(order), t)):
        out.append(f"<h2 id='tag-{_esc(tag)}'>{_esc(tag)}</h2>")
        for path, method, operation in by_tag[tag]:
            color = _METHOD_COLORS.get(method, "#4a5568")
            warn = " <span class='warn'>undocumented</span>" if operation.get(UNDOCUMENTED) \
                else ""
            out.append(f"<details id='{_esc(operation.get('operationId', method + path))}'>"
                       f"<summary><span class='m' style='background:{color}'>"
                       f"{_esc(method.upper())}</span><span class='p'>{_esc(path)}</span>"
                       f"<span class='s'>{_esc(operation.get('summary', ''))}</span>{warn}"
                       "</summary>")
            if operation.get("description"):
                out.append(f"<p>{_prose(operation['description'])}</p>")
            if operation.get("parameters"):
                out.append("<table><tr><th>parameter</th><th>in</th><th>required</th>"
                           "<th>description</th></tr>")
                for p in operation["parameters"]:
                    out.append(f"<tr><td><code>{_esc(p['name'])}</code></td><td>{_esc(p['in'])}"
                               f"</td><td>{'yes' if p.get('required') else 'no'}</td>"
                               f"<td>{_prose(p.get('description', ''))}</td></tr>")
                out.append("</table>")
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                name, schema = _resolve(document, body["schema"])
                out.append(f"<p>Request body <code>{_esc(name or 'object')}</code>:</p>"
                           f"<pre>{_esc(json.dumps(schema, indent=2))}</pre>")
            out.append("<table><tr><th>status</th><th>meaning</th></tr>")
            for status, response in operation.get("responses", {}).items():
                _, resolved = _resolve(document, response)
                content = resolved.get("content", {})
                shape = ""
                for media, media_doc in content.items():
                    name, _ = _resolve(document, media_doc.get("schema", {}))
                    shape = f" <code>{_esc(media)}</code>" + \
                        (f" <a href='#schema-{_esc(name)}'>{_esc(name)}</a>" if name else "")
                out.append(f"<tr><td>{_esc(status)}</td><td>"
                           f"{_esc(resolved.get('description', ''))}{shape}</td></tr>")
            out.append("</table></details>")
    out.append("<h2 id='schemas'>schemas</h2>")
    for name, schema in document["components"]["schemas"].items():
        out.append(f"<details id='schema-{_esc(name)}'><summary><code>{_esc(name)}</code>"
                   f"</summary><pre>{_esc(json.dumps(schema, indent=2))}</pre></details>")
    out.append("</body></html>")
    return "\n".join(out)


# ---- wiring -------------------------------------------------------------------------------------

_CACHE = web.AppKey("openapi_cache", dict)


def _cache(app: web.Application) -> dict:
    # Filled on first use, when the router is frozen, so routes added after add_openapi_routes
    # still show up. The dict is put in the app before it starts and only mutated afterwards.
    cache = app[_CACHE]
    if "json" not in cache:
        cache["json"] = build_document(app)
    return cache


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(_cache(request.app)["json"])


async def docs_page(request: web.Request) -> web.Response:
    cache = _cache(request.app)
    if "html" not in cache:
        cache["html"] = render_html(cache["json"])
    return web.Response(text=cache["html"], content_type="text/html")


def add_openapi_routes(app: web.Application) -> None:
    """GET /openapi.json and GET /docs (outside /api/v1)."""
    app[_CACHE] = {}
    app.router.add_get(OPENAPI_PATH, openapi_json)
    app.router.add_get(DOCS_PATH, docs_page)
