"""A small Python client for Tributary, over REST (httpx) or gRPC (the deeplake.v1 stubs).

    from tributary.client import TributaryClient

    with TributaryClient("http://127.0.0.1:8000/api/v1") as client:          # transport="rest"
        client.create_dataset("articles", dimensions=4)
        client.insert_vectors("articles", [{"id": "a1", "values": [0.1, 0.2, 0.3, 0.4]}])
        hits = client.search("articles", [0.1, 0.2, 0.3, 0.4], top_k=5)["results"]

    with TributaryClient("127.0.0.1:50051", transport="grpc") as client: ...

`AsyncTributaryClient` has the same methods as coroutines (and `list_vectors` as an async
iterator). Every method returns plain dicts in the REST JSON shape (proto field names, int64
counts as numbers), whichever the transport, so code can switch transports freely. Failures raise
tributary.errors classes: NotFound, InvalidArgument, AlreadyExists, Unavailable, ...

httpx, grpc and the generated stubs are imported only when a transport needs them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterable, Iterator, Sequence

from tributary import errors, limits

REST_DEFAULT = "http://127.0.0.1:8000/api/v1"
GRPC_DEFAULT = "127.0.0.1:50051"
TRANSPORTS = ("rest", "grpc")

# proto3 JSON renders int64 as strings; the REST layer (router/rest.py _INT64_FIELDS) renders
# the API's int64 counts as numbers, and gRPC answers are converted the same way so both
# transports return the same dicts. The names are those of every int64 field of deeplake.v1.
_INT64_BASELINE = {"vector_count", "storage_size", "vectors_scanned", "index_hits",
                   "filtered_results", "total_count", "purged_count", "indexed_count"}
_int64_names: set[str] | None = None


def _int64_fields() -> set[str]:
    global _int64_names
    if _int64_names is None:
        from google.protobuf.descriptor import FieldDescriptor
        from proto import deeplake_service_pb2 as pb
        wide = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64,
                FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_FIXED64,
                FieldDescriptor.TYPE_SFIXED64}
        names = set(_INT64_BASELINE)
        todo = list(pb.DESCRIPTOR.message_types_by_name.values())
        while todo:
            message = todo.pop()
            todo.extend(message.nested_types)
            names.update(f.name for f in message.fields if f.type in wide)
        _int64_names = names
    return _int64_names

_ERRORS_BY_NAME = {cls.__name__: cls for cls in errors.all_error_types()}
_ERRORS_BY_STATUS = {400: errors.InvalidArgument, 401: errors.Unauthenticated,
                     403: errors.PermissionDenied, 429: errors.ResourceExhausted,
                     404: errors.NotFound,
                     409: errors.AlreadyExists, 413: errors.PayloadTooLarge,
                     501: errors.Unimplemented, 503: errors.Unavailable,
                     504: errors.DeadlineExceeded}


def _fix_ints(value, names: set[str]):
    if isinstance(value, dict):
        return {k: (int(v) if k in names and isinstance(v, str) else _fix_ints(v, names))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_fix_ints(v, names) for v in value]
    return value


def message_to_dict(message) -> dict:
    """A protobuf message in the REST JSON shape."""
    from google.protobuf import json_format
    return _fix_ints(json_format.MessageToDict(message, preserving_proto_field_name=True,
                                               always_print_fields_with_no_presence=True),
                     _int64_fields())


def _metadata_strings(metadata: dict | None) -> dict | None:
    """The REST layer stores metadata numbers and booleans as strings; do the same for gRPC."""
    if not isinstance(metadata, dict):
        return metadata
    out = {}
    for key, value in metadata.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, float):
            value = repr(value)
        elif isinstance(value, int):
            value = str(value)
        out[key] = value
    return out


def _floats(values: Iterable) -> list[float]:
    return [float(v) for v in values]  # also turns numpy arrays into JSON-able lists


def _vector_doc(vector: dict) -> dict:
    if not isinstance(vector, dict):
        raise errors.InvalidArgument("each vector must be a dict in the REST JSON shape")
    doc = dict(vector)
    if doc.get("values") is not None:
        doc["values"] = _floats(doc["values"])
    return doc


def _rest_error(status: int, text: str) -> errors.TributaryError:
    cls, message = None, text
    try:
        err = json.loads(text)["error"]
        cls = _ERRORS_BY_NAME.get(err.get("type", ""))
        message = str(err.get("message", text))
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    if cls is None:
        cls = _ERRORS_BY_STATUS.get(status, errors.Internal)
    exc = cls(message)
    exc.status_code = status
    return exc


def _grpc_error(exc) -> errors.TributaryError:
    import grpc
    code, details = exc.code(), exc.details()
    if code == grpc.StatusCode.ABORTED:
        return errors.Aborted(details or code.name)
    return errors.from_wire(code, details)


@dataclass
class _Call:
    """One operation, described for both transports."""
    method: str                      # REST
    path: str
    service: str                     # gRPC: DatasetService, VectorService, ...
    rpc: str
    request_type: str                # deeplake.v1 message name
    grpc_fields: dict = field(default_factory=dict)
    body: dict | None = None
    params: dict | None = None
    idempotency_key: str | None = None
    ok_statuses: tuple[int, ...] = (200, 201)


class _Operations:
    """The methods, written once: each builds a _Call and hands it to `_call`, which the sync
    client runs at once and the async client returns as a coroutine."""

    def __init__(self, url: str | None = None, *, transport: str = "rest",
                 tenant_id: str | None = None, timeout: float = 30.0,
                 headers: dict[str, str] | None = None, api_key: str | None = None):
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
        self.transport = transport
        if transport == "rest":
            url = (url or REST_DEFAULT).rstrip("/")
            if not url.endswith("/api/v1"):
                url += "/api/v1"
        else:
            url = url or GRPC_DEFAULT
            for prefix in ("grpc://", "http://"):
                url = url.removeprefix(prefix)
        self.url = url
        self.tenant_id = tenant_id or ""
        self.timeout = timeout
        self.headers = dict(headers or {})
        # An API key or JWT, sent as `Authorization: Bearer` (gRPC metadata `authorization`).
        self.api_key = api_key
        self._stubs: dict[str, Any] = {}

    # ---- building blocks ------------------------------------------------------------------------

    def _rest_headers(self, call: _Call) -> dict[str, str]:
        headers = dict(self.headers)
        if self.api_key:
            headers.setdefault("Authorization", f"Bearer {self.api_key}")
        if self.tenant_id:
            headers["X-Tenant-Id"] = self.tenant_id
        if call.idempotency_key:
            headers["Idempotency-Key"] = call.idempotency_key
        return headers

    def _grpc_request(self, call: _Call):
        from google.protobuf import json_format
        from proto import deeplake_service_pb2 as pb
        fields = dict(call.grpc_fields)
        if self.tenant_id and "tenant_id" in \
                getattr(pb, call.request_type).DESCRIPTOR.fields_by_name:
            fields.setdefault("tenant_id", self.tenant_id)
        # Metadata numbers and booleans become strings, as the REST layer stores them. The
        # vector dicts are the client's own copies (see insert_vectors / update_vector).
        holders = [fields]
        if isinstance(fields.get("vectors"), list):
            holders += [v for v in fields["vectors"] if isinstance(v, dict)]
        if isinstance(fields.get("vector"), dict):
            holders.append(fields["vector"])
        for holder in holders:
            if "metadata" in holder:
                holder["metadata"] = _metadata_strings(holder["metadata"])
        try:
            return json_format.ParseDict(fields, getattr(pb, call.request_type)())
        except json_format.ParseError as exc:
            raise errors.InvalidArgument(f"invalid request: {exc}") from None

    def _grpc_metadata(self, call: _Call):
        metadata = (("idempotency-key", call.idempotency_key),) if call.idempotency_key else ()
        if self.api_key:
            metadata += (("authorization", f"Bearer {self.api_key}"),)
        return metadata or None

    @staticmethod
    def _channel_options():
        return [("grpc.max_receive_message_length", limits.grpc_message_bytes_max),
                ("grpc.max_send_message_length", limits.grpc_message_bytes_max)]

    def _stub(self, channel, service: str):
        if service not in self._stubs:
            from proto import deeplake_service_pb2_grpc as rpc
            self._stubs[service] = getattr(rpc, f"{service}Stub")(channel)
        return self._stubs[service]

    def _call(self, call: _Call):
        raise NotImplementedError

    # ---- datasets ------------------------------------------------------------------------------

    def create_dataset(self, name: str, dimensions: int, metric_type: str = "cosine", *,
                       description: str = "", index_type: str = "",
                       metadata: dict | None = None, shard_count: int = 0,
                       overwrite: bool = False):
        """-> {"dataset": {...}, "message": str}. AlreadyExists if the name is taken."""
        body: dict[str, Any] = {"name": name, "dimensions": int(dimensions),
                                "metric_type": metric_type}
        if description:
            body["description"] = description
        if index_type:
            body["index_type"] = index_type
        if metadata:
            body["metadata"] = dict(metadata)
        if shard_count:
            body["shard_count"] = int(shard_count)
        if overwrite:
            body["overwrite"] = True
        return self._call(_Call("POST", "/datasets", "DatasetService", "CreateDataset",
                                "CreateDatasetRequest", grpc_fields=dict(body), body=body))

    def get_dataset(self, name: str):
        """-> {"dataset": {... vector_count, storage_size ...}}."""
        return self._call(_Call("GET", f"/datasets/{_seg(name)}", "DatasetService", "GetDataset",
                                "GetDatasetRequest", grpc_fields={"dataset_id": name}))

    def list_datasets_page(self, page_size: int = 0, page_token: str = ""):
        """-> {"datasets": [...], "total_count": int, "next_page_token": str}."""
        params = {k: v for k, v in (("page_size", page_size), ("page_token", page_token)) if v}
        return self._call(_Call("GET", "/datasets", "DatasetService", "ListDatasets",
                                "ListDatasetsRequest", grpc_fields=dict(params),
                                params=params))

    def delete_dataset(self, name: str):
        """-> {"success": true, "message": str}."""
        return self._call(_Call("DELETE", f"/datasets/{_seg(name)}", "DatasetService",
                                "DeleteDataset", "DeleteDatasetRequest",
                                grpc_fields={"dataset_id": name}))

    # ---- vectors -------------------------------------------------------------------------------

    def insert_vectors(self, dataset: str, vectors: Sequence[dict], *, overwrite: bool = False,
                       skip_existing: bool = False, idempotency_key: str | None = None):
        """vectors: dicts in the REST shape ({"id", "values", "document_id", "content",
        "metadata", ...}). -> {"inserted_count", "skipped_count", "failed_count", ...}."""
        body: dict[str, Any] = {"vectors": [_vector_doc(v) for v in vectors]}
        if overwrite:
            body["overwrite"] = True
        if skip_existing:
            body["skip_existing"] = True
        grpc_fields = {**body, "vectors": [dict(v) for v in body["vectors"]],
                       "dataset_id": dataset}
        return self._call(_Call("POST", f"/datasets/{_seg(dataset)}/vectors", "VectorService",
                                "InsertVectors", "InsertVectorsRequest", grpc_fields=grpc_fields,
                                body=body, idempotency_key=idempotency_key))

    def get_vector(self, dataset: str, vector_id: str):
        """-> {"vector": {...}}. NotFound if the id does not exist."""
        return self._call(_Call("GET", f"/datasets/{_seg(dataset)}/vectors/{_seg(vector_id)}",
                                "VectorService", "GetVector", "GetVectorRequest",
                                grpc_fields={"dataset_id": dataset, "vector_id": vector_id}))

    def update_vector(self, dataset: str, vector_id: str, vector: dict | None = None,
                      **fields):
        """Replaces the vector's fields with `vector` (and/or keyword fields); omitted values
        keep the stored ones. -> {"vector": {...}, "message": str}."""
        doc = _vector_doc({**(vector or {}), **fields})
        return self._call(_Call("PUT", f"/datasets/{_seg(dataset)}/vectors/{_seg(vector_id)}",
                                "VectorService", "UpdateVector", "UpdateVectorRequest",
                                grpc_fields={"dataset_id": dataset, "vector_id": vector_id,
                                             "vector": dict(doc)},
                                body=doc))

    def delete_vector(self, dataset: str, vector_id: str):
        """-> {"success": true, "message": str}. NotFound if the id does not exist."""
        return self._call(_Call("DELETE", f"/datasets/{_seg(dataset)}/vectors/{_seg(vector_id)}",
                                "VectorService", "DeleteVector", "DeleteVectorRequest",
                                grpc_fields={"dataset_id": dataset, "vector_id": vector_id}))

    def delete_vectors(self, dataset: str, vector_ids: Sequence[str], *,
                       idempotency_key: str | None = None):
        """-> {"deleted_count": int, "not_found_count": int}."""
        ids = list(vector_ids)
        return self._call(_Call("DELETE", f"/datasets/{_seg(dataset)}/vectors/batch",
                                "VectorService", "DeleteVectors", "DeleteVectorsRequest",
                                grpc_fields={"dataset_id": dataset, "vector_ids": ids},
                                body={"vector_ids": ids}, idempotency_key=idempotency_key))

    def list_vectors_page(self, dataset: str, page_size: int = 0, page_token: str = "",
                          include_values: bool = False):
        """One page: {"vectors": [...], "next_page_token": str, "total_count": int}."""
        params: dict[str, Any] = {k: v for k, v in (("page_size", page_size),
                                                    ("page_token", page_token)) if v}
        if include_values:
            params["include_values"] = True
        rest_params = {k: ("true" if v is True else v) for k, v in params.items()}
        return self._call(_Call("GET", f"/datasets/{_seg(dataset)}/vectors", "VectorService",
                                "ListVectors", "ListVectorsRequest",
                                grpc_fields={**params, "dataset_id": dataset},
                                params=rest_params))

    # ---- search and health ---------------------------------------------------------------------

    def search(self, dataset: str, query_vector: Sequence[float], top_k: int = 10, *,
               filter: str | None = None, filters: dict[str, str] | None = None,
               include_content: bool = False, include_metadata: bool = False,
               ef_search: int | None = None, min_score: float | None = None,
               max_distance: float | None = None, threshold: float | None = None,
               deduplicate: bool = False, group_by_document: bool = False,
               metric_type: str | None = None):
        """-> {"results": [{"vector", "score", "distance", "rank", ...}], "total_found",
        "has_more", "query_time_ms", "stats"}."""
        options: dict[str, Any] = {"top_k": int(top_k)}
        for name, value in (("filter", filter), ("filters", filters),
                            ("ef_search", ef_search), ("min_score", min_score),
                            ("max_distance", max_distance), ("threshold", threshold),
                            ("metric_type", metric_type)):
            if value is not None:
                options[name] = dict(value) if isinstance(value, dict) else value
        for name, value in (("include_content", include_content),
                            ("include_metadata", include_metadata),
                            ("deduplicate", deduplicate),
                            ("group_by_document", group_by_document)):
            if value:
                options[name] = True
        body = {"query_vector": _floats(query_vector), "options": options}
        return self._call(_Call("POST", f"/datasets/{_seg(dataset)}/search", "SearchService",
                                "SearchVectors", "SearchVectorsRequest",
                                grpc_fields={**body, "options": dict(options),
                                             "dataset_id": dataset},
                                body=body))

    def health(self):
        """-> {"status", "service", "version", "timestamp", "dependencies"}; `status` says
        whether the cluster is healthy (REST answers 503 with the same body when it is not)."""
        return self._call(_Call("GET", "/health", "HealthService", "Check",
                                "HealthCheckRequest", ok_statuses=(200, 503)))


def _seg(value: str) -> str:
    """One URL path segment, percent-encoded."""
    from urllib.parse import quote
    return quote(str(value), safe="")


class TributaryClient(_Operations):
    """The blocking client. `url` is the REST base (default http://127.0.0.1:8000/api/v1) or,
    with transport="grpc", the gRPC target (default 127.0.0.1:50051)."""

    def __init__(self, url: str | None = None, *, transport: str = "rest",
                 tenant_id: str | None = None, timeout: float = 30.0,
                 headers: dict[str, str] | None = None, api_key: str | None = None):
        super().__init__(url, transport=transport, tenant_id=tenant_id, timeout=timeout,
                         headers=headers, api_key=api_key)
        self._http = None
        self._channel = None

    @classmethod
    def from_env(cls, transport: str = "rest", **kwargs) -> "TributaryClient":
        """Endpoints from TRIBUTARY_REST / TRIBUTARY_GRPC, else the `make up` defaults; the
        credential from TRIBUTARY_API_KEY."""
        url = os.environ.get("TRIBUTARY_REST" if transport == "rest" else "TRIBUTARY_GRPC")
        kwargs.setdefault("api_key", os.environ.get("TRIBUTARY_API_KEY") or None)
        return cls(url, transport=transport, **kwargs)

    def _call(self, call: _Call) -> dict:
        if self.transport == "rest":
            return self._rest(call)
        return self._grpc(call)

    def _rest(self, call: _Call) -> dict:
        import httpx
        if self._http is None:
            self._http = httpx.Client(base_url=self.url, timeout=self.timeout)
        try:
            response = self._http.request(call.method, call.path, params=call.params,
                                          json=call.body, headers=self._rest_headers(call))
        except httpx.TimeoutException as exc:
            raise errors.DeadlineExceeded(f"{call.method} {self.url}{call.path}: {exc}") \
                from None
        except httpx.TransportError as exc:
            raise errors.Unavailable(f"cannot reach {self.url}: {exc}") from None
        if response.status_code not in call.ok_statuses:
            raise _rest_error(response.status_code, response.text)
        return response.json()

    def _grpc(self, call: _Call) -> dict:
        import grpc
        request = self._grpc_request(call)
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.url, options=self._channel_options())
        method = getattr(self._stub(self._channel, call.service), call.rpc)
        try:
            response = method(request, timeout=self.timeout, metadata=self._grpc_metadata(call))
        except grpc.RpcError as exc:
            raise _grpc_error(exc) from None
        return message_to_dict(response)

    def list_datasets(self, page_size: int = 0) -> list[dict]:
        """Every dataset of the tenant, following pages."""
        found, token = [], ""
        while True:
            page = self.list_datasets_page(page_size=page_size, page_token=token)
            found.extend(page.get("datasets", []))
            token = page.get("next_page_token", "")
            if not token:
                return found

    def list_vectors(self, dataset: str, page_size: int = 0,
                     include_values: bool = False) -> Iterator[dict]:
        """Every vector of the dataset, fetching page after page lazily."""
        token = ""
        while True:
            page = self.list_vectors_page(dataset, page_size=page_size, page_token=token,
                                          include_values=include_values)
            yield from page.get("vectors", [])
            token = page.get("next_page_token", "")
            if not token:
                return

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._stubs.clear()

    def __enter__(self) -> "TributaryClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class AsyncTributaryClient(_Operations):
    """The asyncio client: the same methods as TributaryClient, as coroutines; list_vectors is
    an async iterator. Use `async with` or `await client.aclose()`."""

    def __init__(self, url: str | None = None, *, transport: str = "rest",
                 tenant_id: str | None = None, timeout: float = 30.0,
                 headers: dict[str, str] | None = None, api_key: str | None = None):
        super().__init__(url, transport=transport, tenant_id=tenant_id, timeout=timeout,
                         headers=headers, api_key=api_key)
        self._http = None
        self._channel = None

    @classmethod
    def from_env(cls, transport: str = "rest", **kwargs) -> "AsyncTributaryClient":
        url = os.environ.get("TRIBUTARY_REST" if transport == "rest" else "TRIBUTARY_GRPC")
        kwargs.setdefault("api_key", os.environ.get("TRIBUTARY_API_KEY") or None)
        return cls(url, transport=transport, **kwargs)

    async def _call(self, call: _Call) -> dict:
        if self.transport == "rest":
            return await self._rest(call)
        return await self._grpc(call)

    async def _rest(self, call: _Call) -> dict:
        import httpx
        if self._http is None:
            self._http = httpx.AsyncClient(base_url=self.url, timeout=self.timeout)
        try:
            response = await self._http.request(call.method, call.path, params=call.params,
                                                json=call.body,
                                                headers=self._rest_headers(call))
        except httpx.TimeoutException as exc:
            raise errors.DeadlineExceeded(f"{call.method} {self.url}{call.path}: {exc}") \
                from None
        except httpx.TransportError as exc:
            raise errors.Unavailable(f"cannot reach {self.url}: {exc}") from None
        if response.status_code not in call.ok_statuses:
            raise _rest_error(response.status_code, response.text)
        return response.json()

    async def _grpc(self, call: _Call) -> dict:
        import grpc
        request = self._grpc_request(call)
        if self._channel is None:  # created inside the running loop, as grpc.aio wants
            self._channel = grpc.aio.insecure_channel(self.url,
                                                      options=self._channel_options())
        method = getattr(self._stub(self._channel, call.service), call.rpc)
        try:
            response = await method(request, timeout=self.timeout,
                                    metadata=self._grpc_metadata(call))
        except grpc.RpcError as exc:
            raise _grpc_error(exc) from None
        return message_to_dict(response)

    async def list_datasets(self, page_size: int = 0) -> list[dict]:
        found, token = [], ""
        while True:
            page = await self.list_datasets_page(page_size=page_size, page_token=token)
            found.extend(page.get("datasets", []))
            token = page.get("next_page_token", "")
            if not token:
                return found

    async def list_vectors(self, dataset: str, page_size: int = 0,
                           include_values: bool = False) -> AsyncIterator[dict]:
        token = ""
        while True:
            page = await self.list_vectors_page(dataset, page_size=page_size, page_token=token,
                                                include_values=include_values)
            for vector in page.get("vectors", []):
                yield vector
            token = page.get("next_page_token", "")
            if not token:
                return

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stubs.clear()

    async def __aenter__(self) -> "AsyncTributaryClient":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()
