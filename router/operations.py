"""The public operations of the router, one typed descriptor each, in one table.

A descriptor says everything the admission step (router/admission.py) needs to know about an
operation before the core runs it: who may call it (its scope), whether it writes, which fields
of its request name datasets, what it costs against the tenant's quotas, and which input checks
(router/input_guard.py) its request gets. The adapters name the descriptor when they call the
core (`await core.run(operations.SEARCH_VECTORS, request)`), so nothing dispatches on a method
name string.

Adding an RPC: one descriptor here, one `RouterCore` coroutine of the same `name`, one REST
route (router/rest.py) and one gRPC method (router/grpc_api.py), each a line that names the
descriptor. A core coroutine that has no descriptor is admin-only while auth is on (fail closed,
`admission.GuardedCore`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from router import input_guard


class Scope(enum.Enum):
    """Who may call an operation. TENANT_READ: any credential that covers the datasets it
    names; TENANT_WRITE: a read-write credential; ADMIN: an admin credential only."""

    TENANT_READ = "tenant read"
    TENANT_WRITE = "tenant write"
    ADMIN = "admin"


class Kind(enum.Enum):
    """How the core function is called: one request -> one answer; one request -> an async
    stream of answers; a stream of requests (each admitted as it arrives) -> one answer."""

    UNARY = "unary"
    SERVER_STREAM = "server stream"
    CLIENT_STREAM = "client stream"


def _dataset_id(request) -> Sequence[str]:
    return (request.dataset_id,)


def _no_datasets(request) -> Sequence[str]:
    return ()


def _no_batch(request) -> int:
    return 0


def _no_vectors(request) -> Sequence[Any]:
    return ()


@dataclass(frozen=True)
class Operation:
    """One public operation. `name` is also the `RouterCore` coroutine that serves it and the
    label of its metrics.

    - `resource`: what it reads or writes ("catalog": dataset records in the meta group;
      "vectors": rows on the shard nodes).
    - `scope`: `Scope`; `writes` follows from it (TENANT_WRITE, or an ADMIN operation that
      changes something).
    - `datasets`: the dataset names its request carries (each checked against the credential's
      allow-list).
    - `vectors`: the vectors its request carries (none may name another tenant).
    - quota costs: `query` (counts against query rate, concurrency and max_results_per_query),
      `batch` (vectors or ids it carries, for max_batch_size), `adds_vectors` (its `vectors`
      count against max_vectors / max_storage_bytes), `sets_dimensions` (a new dataset's
      dimensions, for max_dimension).
    - `validate`: the input checks the core does not make (router/input_guard.py); raises
      InvalidArgument.
    - `narrows_listing`: its answer lists datasets, so an allow-list also narrows the answer.
    """

    name: str
    grpc_method: str
    resource: str
    scope: Scope
    kind: Kind = Kind.UNARY
    datasets: Callable[[Any], Sequence[str]] = _dataset_id
    query: bool = False
    batch: Callable[[Any], int] = _no_batch
    vectors: Callable[[Any], Sequence[Any]] = _no_vectors
    adds_vectors: bool = False
    sets_dimensions: bool = False
    validate: Callable[[Any], None] = input_guard.check_common
    narrows_listing: bool = False

    @property
    def writes(self) -> bool:
        return self.scope is Scope.TENANT_WRITE


CATALOG, VECTORS = "catalog", "vectors"
READ, WRITE = Scope.TENANT_READ, Scope.TENANT_WRITE

CREATE_DATASET = Operation(
    "create_dataset", "CreateDataset", CATALOG, WRITE, datasets=lambda r: (r.name,),
    sets_dimensions=True, validate=input_guard.check_dataset_fields)
GET_DATASET = Operation("get_dataset", "GetDataset", CATALOG, READ)
LIST_DATASETS = Operation("list_datasets", "ListDatasets", CATALOG, READ,
                          datasets=_no_datasets, narrows_listing=True)
UPDATE_DATASET = Operation("update_dataset", "UpdateDataset", CATALOG, WRITE,
                           validate=input_guard.check_dataset_fields)
DELETE_DATASET = Operation("delete_dataset", "DeleteDataset", CATALOG, WRITE)
GET_DATASET_STATS = Operation("get_dataset_stats", "GetDatasetStats", VECTORS, READ)
COMPACT_DATASET = Operation("compact_dataset", "CompactDataset", VECTORS, WRITE)
INSERT_VECTORS = Operation(
    "insert_vectors", "InsertVectors", VECTORS, WRITE, batch=lambda r: len(r.vectors),
    vectors=lambda r: r.vectors, adds_vectors=True, validate=input_guard.check_vector_batch)
# A client stream of InsertVectorsRequest batches, each admitted as INSERT_VECTORS.
BULK_INSERT_VECTORS = Operation(
    "bulk_insert_vectors", "BulkInsertVectors", VECTORS, WRITE, kind=Kind.CLIENT_STREAM,
    batch=lambda r: len(r.vectors), vectors=lambda r: r.vectors, adds_vectors=True,
    validate=input_guard.check_vector_batch)
INSERT_VECTOR = Operation(
    "insert_vector", "InsertVector", VECTORS, WRITE, batch=lambda r: 1,
    vectors=lambda r: (r.vector,), adds_vectors=True, validate=input_guard.check_one_vector)
UPDATE_VECTOR = Operation(
    "update_vector", "UpdateVector", VECTORS, WRITE, batch=lambda r: 1,
    vectors=lambda r: (r.vector,), validate=input_guard.check_one_vector)
GET_VECTOR = Operation("get_vector", "GetVector", VECTORS, READ)
DELETE_VECTOR = Operation("delete_vector", "DeleteVector", VECTORS, WRITE, batch=lambda r: 1)
DELETE_VECTORS = Operation("delete_vectors", "DeleteVectors", VECTORS, WRITE,
                           batch=lambda r: len(r.vector_ids))
SOFT_DELETE_VECTORS = Operation("soft_delete_vectors", "SoftDeleteVectors", VECTORS, WRITE,
                                batch=lambda r: len(r.vector_ids))
RESTORE_VECTORS = Operation("restore_vectors", "RestoreVectors", VECTORS, WRITE,
                            batch=lambda r: len(r.vector_ids))
LIST_VECTORS = Operation("list_vectors", "ListVectors", VECTORS, READ)
SEARCH_VECTORS = Operation("search_vectors", "SearchVectors", VECTORS, READ, query=True)
# The WebSocket query stream (REST only): one search request, partial answers per shard.
SEARCH_VECTORS_STREAM = Operation("search_vectors_stream", "", VECTORS, READ,
                                  kind=Kind.SERVER_STREAM, query=True)
SEARCH_BY_TEXT = Operation("search_by_text", "SearchByText", VECTORS, READ, query=True)
HYBRID_SEARCH = Operation("hybrid_search", "HybridSearch", VECTORS, READ, query=True)
MULTI_DATASET_SEARCH = Operation("multi_dataset_search", "MultiDatasetSearch", VECTORS, READ,
                                 datasets=lambda r: tuple(r.dataset_ids), query=True)
# Dataset versions (router/versions.py): a version is a consistent cut kept in the catalog.
CREATE_VERSION = Operation("create_version", "CreateVersion", CATALOG, WRITE)
LIST_VERSIONS = Operation("list_versions", "ListVersions", CATALOG, READ)

OPERATIONS: tuple[Operation, ...] = (
    CREATE_DATASET, GET_DATASET, LIST_DATASETS, UPDATE_DATASET, DELETE_DATASET,
    GET_DATASET_STATS, COMPACT_DATASET, INSERT_VECTORS, BULK_INSERT_VECTORS, INSERT_VECTOR,
    UPDATE_VECTOR, GET_VECTOR, DELETE_VECTOR, DELETE_VECTORS, SOFT_DELETE_VECTORS,
    RESTORE_VECTORS, LIST_VECTORS, SEARCH_VECTORS, SEARCH_VECTORS_STREAM, SEARCH_BY_TEXT,
    HYBRID_SEARCH, MULTI_DATASET_SEARCH, CREATE_VERSION, LIST_VERSIONS,
)
BY_NAME: dict[str, Operation] = {op.name: op for op in OPERATIONS}
BY_GRPC_METHOD: dict[str, Operation] = {op.grpc_method: op for op in OPERATIONS
                                        if op.grpc_method}
assert len(BY_NAME) == len(OPERATIONS), "operation names are unique"
