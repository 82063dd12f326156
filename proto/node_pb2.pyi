from proto import deeplake_service_pb2 as _deeplake_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExistingPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXISTING_ERROR: _ClassVar[ExistingPolicy]
    EXISTING_SKIP: _ClassVar[ExistingPolicy]
    EXISTING_OVERWRITE: _ClassVar[ExistingPolicy]
    EXISTING_REQUIRE: _ClassVar[ExistingPolicy]
EXISTING_ERROR: ExistingPolicy
EXISTING_SKIP: ExistingPolicy
EXISTING_OVERWRITE: ExistingPolicy
EXISTING_REQUIRE: ExistingPolicy

class ShardRef(_message.Message):
    __slots__ = ("dataset_uuid", "shard", "epoch")
    DATASET_UUID_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    dataset_uuid: str
    shard: int
    epoch: int
    def __init__(self, dataset_uuid: _Optional[str] = ..., shard: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class WriteRequest(_message.Message):
    __slots__ = ("shard", "upserts", "delete_ids", "existing", "upsert_values", "update_paths", "write_id")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    UPSERTS_FIELD_NUMBER: _ClassVar[int]
    DELETE_IDS_FIELD_NUMBER: _ClassVar[int]
    EXISTING_FIELD_NUMBER: _ClassVar[int]
    UPSERT_VALUES_FIELD_NUMBER: _ClassVar[int]
    UPDATE_PATHS_FIELD_NUMBER: _ClassVar[int]
    WRITE_ID_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    upserts: _containers.RepeatedCompositeFieldContainer[_deeplake_service_pb2.Vector]
    delete_ids: _containers.RepeatedScalarFieldContainer[str]
    existing: ExistingPolicy
    upsert_values: bytes
    update_paths: _containers.RepeatedScalarFieldContainer[str]
    write_id: str
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., upserts: _Optional[_Iterable[_Union[_deeplake_service_pb2.Vector, _Mapping]]] = ..., delete_ids: _Optional[_Iterable[str]] = ..., existing: _Optional[_Union[ExistingPolicy, str]] = ..., upsert_values: _Optional[bytes] = ..., update_paths: _Optional[_Iterable[str]] = ..., write_id: _Optional[str] = ...) -> None: ...

class WriteResponse(_message.Message):
    __slots__ = ("inserted", "skipped", "deleted", "not_found", "skipped_ids")
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_IDS_FIELD_NUMBER: _ClassVar[int]
    inserted: int
    skipped: int
    deleted: int
    not_found: int
    skipped_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, inserted: _Optional[int] = ..., skipped: _Optional[int] = ..., deleted: _Optional[int] = ..., not_found: _Optional[int] = ..., skipped_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("shard", "ids", "include_values", "as_of_tag")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VALUES_FIELD_NUMBER: _ClassVar[int]
    AS_OF_TAG_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    ids: _containers.RepeatedScalarFieldContainer[str]
    include_values: bool
    as_of_tag: str
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., ids: _Optional[_Iterable[str]] = ..., include_values: _Optional[bool] = ..., as_of_tag: _Optional[str] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("vectors",)
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[_deeplake_service_pb2.Vector]
    def __init__(self, vectors: _Optional[_Iterable[_Union[_deeplake_service_pb2.Vector, _Mapping]]] = ...) -> None: ...

class ShardSearchRequest(_message.Message):
    __slots__ = ("shard", "query_vector", "top_k", "ef_search", "include_content", "include_metadata", "include_values", "filter_expression", "filters", "query_values", "exact", "as_of_tag", "packed")
    class FiltersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SHARD_FIELD_NUMBER: _ClassVar[int]
    QUERY_VECTOR_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    EF_SEARCH_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CONTENT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_METADATA_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VALUES_FIELD_NUMBER: _ClassVar[int]
    FILTER_EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    QUERY_VALUES_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    AS_OF_TAG_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    query_vector: _containers.RepeatedScalarFieldContainer[float]
    top_k: int
    ef_search: int
    include_content: bool
    include_metadata: bool
    include_values: bool
    filter_expression: str
    filters: _containers.ScalarMap[str, str]
    query_values: bytes
    exact: bool
    as_of_tag: str
    packed: bool
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., query_vector: _Optional[_Iterable[float]] = ..., top_k: _Optional[int] = ..., ef_search: _Optional[int] = ..., include_content: _Optional[bool] = ..., include_metadata: _Optional[bool] = ..., include_values: _Optional[bool] = ..., filter_expression: _Optional[str] = ..., filters: _Optional[_Mapping[str, str]] = ..., query_values: _Optional[bytes] = ..., exact: _Optional[bool] = ..., as_of_tag: _Optional[str] = ..., packed: _Optional[bool] = ...) -> None: ...

class ShardTextSearchRequest(_message.Message):
    __slots__ = ("shard", "query_text", "top_k", "include_content", "include_metadata", "filter_expression", "filters")
    class FiltersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SHARD_FIELD_NUMBER: _ClassVar[int]
    QUERY_TEXT_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CONTENT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_METADATA_FIELD_NUMBER: _ClassVar[int]
    FILTER_EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    query_text: str
    top_k: int
    include_content: bool
    include_metadata: bool
    filter_expression: str
    filters: _containers.ScalarMap[str, str]
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., query_text: _Optional[str] = ..., top_k: _Optional[int] = ..., include_content: _Optional[bool] = ..., include_metadata: _Optional[bool] = ..., filter_expression: _Optional[str] = ..., filters: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ShardHit(_message.Message):
    __slots__ = ("vector", "score", "distance")
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    vector: _deeplake_service_pb2.Vector
    score: float
    distance: float
    def __init__(self, vector: _Optional[_Union[_deeplake_service_pb2.Vector, _Mapping]] = ..., score: _Optional[float] = ..., distance: _Optional[float] = ...) -> None: ...

class ShardSearchResponse(_message.Message):
    __slots__ = ("hits", "vectors_scanned", "index_hits", "database_time_ms", "filtered_out", "strategy", "packed")
    HITS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_SCANNED_FIELD_NUMBER: _ClassVar[int]
    INDEX_HITS_FIELD_NUMBER: _ClassVar[int]
    DATABASE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    FILTERED_OUT_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[ShardHit]
    vectors_scanned: int
    index_hits: int
    database_time_ms: float
    filtered_out: int
    strategy: str
    packed: PackedHits
    def __init__(self, hits: _Optional[_Iterable[_Union[ShardHit, _Mapping]]] = ..., vectors_scanned: _Optional[int] = ..., index_hits: _Optional[int] = ..., database_time_ms: _Optional[float] = ..., filtered_out: _Optional[int] = ..., strategy: _Optional[str] = ..., packed: _Optional[_Union[PackedHits, _Mapping]] = ...) -> None: ...

class PackedHits(_message.Message):
    __slots__ = ("ids", "scores", "distances", "created_at_ms", "updated_at_ms", "fields")
    IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    DISTANCES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    scores: bytes
    distances: bytes
    created_at_ms: bytes
    updated_at_ms: bytes
    fields: _containers.RepeatedCompositeFieldContainer[_deeplake_service_pb2.Vector]
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., scores: _Optional[bytes] = ..., distances: _Optional[bytes] = ..., created_at_ms: _Optional[bytes] = ..., updated_at_ms: _Optional[bytes] = ..., fields: _Optional[_Iterable[_Union[_deeplake_service_pb2.Vector, _Mapping]]] = ...) -> None: ...

class ShardSearchBatchRequest(_message.Message):
    __slots__ = ("searches",)
    SEARCHES_FIELD_NUMBER: _ClassVar[int]
    searches: _containers.RepeatedCompositeFieldContainer[ShardSearchRequest]
    def __init__(self, searches: _Optional[_Iterable[_Union[ShardSearchRequest, _Mapping]]] = ...) -> None: ...

class ShardSearchOutcome(_message.Message):
    __slots__ = ("response", "error", "error_code")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    response: ShardSearchResponse
    error: str
    error_code: int
    def __init__(self, response: _Optional[_Union[ShardSearchResponse, _Mapping]] = ..., error: _Optional[str] = ..., error_code: _Optional[int] = ...) -> None: ...

class ShardSearchBatchResponse(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[ShardSearchOutcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[ShardSearchOutcome, _Mapping]]] = ...) -> None: ...

class DropShardRequest(_message.Message):
    __slots__ = ("shard",)
    SHARD_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ...) -> None: ...

class DropShardResponse(_message.Message):
    __slots__ = ("dropped",)
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    dropped: bool
    def __init__(self, dropped: _Optional[bool] = ...) -> None: ...

class IdsRequest(_message.Message):
    __slots__ = ("shard", "ids")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class IdsResponse(_message.Message):
    __slots__ = ("affected", "not_found")
    AFFECTED_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    affected: int
    not_found: int
    def __init__(self, affected: _Optional[int] = ..., not_found: _Optional[int] = ...) -> None: ...

class CompactRequest(_message.Message):
    __slots__ = ("shard",)
    SHARD_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ...) -> None: ...

class CompactResponse(_message.Message):
    __slots__ = ("purged", "indexed", "seconds")
    PURGED_FIELD_NUMBER: _ClassVar[int]
    INDEXED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    purged: int
    indexed: int
    seconds: float
    def __init__(self, purged: _Optional[int] = ..., indexed: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("shard", "after_label", "limit", "include_values", "as_of_tag")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    AFTER_LABEL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VALUES_FIELD_NUMBER: _ClassVar[int]
    AS_OF_TAG_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    after_label: int
    limit: int
    include_values: bool
    as_of_tag: str
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., after_label: _Optional[int] = ..., limit: _Optional[int] = ..., include_values: _Optional[bool] = ..., as_of_tag: _Optional[str] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("vectors", "last_label", "exhausted", "total")
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    LAST_LABEL_FIELD_NUMBER: _ClassVar[int]
    EXHAUSTED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[_deeplake_service_pb2.Vector]
    last_label: int
    exhausted: bool
    total: int
    def __init__(self, vectors: _Optional[_Iterable[_Union[_deeplake_service_pb2.Vector, _Mapping]]] = ..., last_label: _Optional[int] = ..., exhausted: _Optional[bool] = ..., total: _Optional[int] = ...) -> None: ...

class ShardStatsRequest(_message.Message):
    __slots__ = ("shard",)
    SHARD_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ...) -> None: ...

class ShardStatsResponse(_message.Message):
    __slots__ = ("vector_count", "storage_bytes", "soft_deleted_count", "pending_index_count")
    VECTOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    STORAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SOFT_DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    PENDING_INDEX_COUNT_FIELD_NUMBER: _ClassVar[int]
    vector_count: int
    storage_bytes: int
    soft_deleted_count: int
    pending_index_count: int
    def __init__(self, vector_count: _Optional[int] = ..., storage_bytes: _Optional[int] = ..., soft_deleted_count: _Optional[int] = ..., pending_index_count: _Optional[int] = ...) -> None: ...

class NodeStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeStatusResponse(_message.Message):
    __slots__ = ("node_id", "open_shards", "vector_count", "prepared_txns", "locked_ids", "max_in_doubt_ms", "resolved_txns", "pending_index_count", "soft_deleted_count", "search_frames_address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    OPEN_SHARDS_FIELD_NUMBER: _ClassVar[int]
    VECTOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    PREPARED_TXNS_FIELD_NUMBER: _ClassVar[int]
    LOCKED_IDS_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_DOUBT_MS_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_TXNS_FIELD_NUMBER: _ClassVar[int]
    PENDING_INDEX_COUNT_FIELD_NUMBER: _ClassVar[int]
    SOFT_DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FRAMES_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    open_shards: int
    vector_count: int
    prepared_txns: int
    locked_ids: int
    max_in_doubt_ms: float
    resolved_txns: int
    pending_index_count: int
    soft_deleted_count: int
    search_frames_address: str
    def __init__(self, node_id: _Optional[str] = ..., open_shards: _Optional[int] = ..., vector_count: _Optional[int] = ..., prepared_txns: _Optional[int] = ..., locked_ids: _Optional[int] = ..., max_in_doubt_ms: _Optional[float] = ..., resolved_txns: _Optional[int] = ..., pending_index_count: _Optional[int] = ..., soft_deleted_count: _Optional[int] = ..., search_frames_address: _Optional[str] = ...) -> None: ...

class PrepareRequest(_message.Message):
    __slots__ = ("txn_id", "shard", "upserts", "delete_ids", "existing", "participants", "upsert_values")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    UPSERTS_FIELD_NUMBER: _ClassVar[int]
    DELETE_IDS_FIELD_NUMBER: _ClassVar[int]
    EXISTING_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    UPSERT_VALUES_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    shard: ShardRef
    upserts: _containers.RepeatedCompositeFieldContainer[_deeplake_service_pb2.Vector]
    delete_ids: _containers.RepeatedScalarFieldContainer[str]
    existing: ExistingPolicy
    participants: _containers.RepeatedScalarFieldContainer[str]
    upsert_values: bytes
    def __init__(self, txn_id: _Optional[str] = ..., shard: _Optional[_Union[ShardRef, _Mapping]] = ..., upserts: _Optional[_Iterable[_Union[_deeplake_service_pb2.Vector, _Mapping]]] = ..., delete_ids: _Optional[_Iterable[str]] = ..., existing: _Optional[_Union[ExistingPolicy, str]] = ..., participants: _Optional[_Iterable[str]] = ..., upsert_values: _Optional[bytes] = ...) -> None: ...

class PrepareResponse(_message.Message):
    __slots__ = ("inserted", "skipped", "deleted", "not_found", "skipped_ids")
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_IDS_FIELD_NUMBER: _ClassVar[int]
    inserted: int
    skipped: int
    deleted: int
    not_found: int
    skipped_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, inserted: _Optional[int] = ..., skipped: _Optional[int] = ..., deleted: _Optional[int] = ..., not_found: _Optional[int] = ..., skipped_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class TxnRequest(_message.Message):
    __slots__ = ("txn_id", "shard")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    shard: ShardRef
    def __init__(self, txn_id: _Optional[str] = ..., shard: _Optional[_Union[ShardRef, _Mapping]] = ...) -> None: ...

class TxnResponse(_message.Message):
    __slots__ = ("applied",)
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    def __init__(self, applied: _Optional[bool] = ...) -> None: ...

class StagedTxn(_message.Message):
    __slots__ = ("request", "prepared_at_ms", "apply_upserts", "apply_deletes", "vote", "apply_values")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    PREPARED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    APPLY_UPSERTS_FIELD_NUMBER: _ClassVar[int]
    APPLY_DELETES_FIELD_NUMBER: _ClassVar[int]
    VOTE_FIELD_NUMBER: _ClassVar[int]
    APPLY_VALUES_FIELD_NUMBER: _ClassVar[int]
    request: PrepareRequest
    prepared_at_ms: int
    apply_upserts: _containers.RepeatedCompositeFieldContainer[_deeplake_service_pb2.Vector]
    apply_deletes: _containers.RepeatedScalarFieldContainer[str]
    vote: PrepareResponse
    apply_values: bytes
    def __init__(self, request: _Optional[_Union[PrepareRequest, _Mapping]] = ..., prepared_at_ms: _Optional[int] = ..., apply_upserts: _Optional[_Iterable[_Union[_deeplake_service_pb2.Vector, _Mapping]]] = ..., apply_deletes: _Optional[_Iterable[str]] = ..., vote: _Optional[_Union[PrepareResponse, _Mapping]] = ..., apply_values: _Optional[bytes] = ...) -> None: ...

class ReplicatedOp(_message.Message):
    __slots__ = ("seq", "term", "write", "soft_delete", "restore", "prepare", "finish", "at_ms", "outcome", "epoch")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    WRITE_FIELD_NUMBER: _ClassVar[int]
    SOFT_DELETE_FIELD_NUMBER: _ClassVar[int]
    RESTORE_FIELD_NUMBER: _ClassVar[int]
    PREPARE_FIELD_NUMBER: _ClassVar[int]
    FINISH_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    seq: int
    term: int
    write: WriteRequest
    soft_delete: IdsRequest
    restore: IdsRequest
    prepare: StagedTxn
    finish: TxnFinish
    at_ms: int
    outcome: WriteResponse
    epoch: int
    def __init__(self, seq: _Optional[int] = ..., term: _Optional[int] = ..., write: _Optional[_Union[WriteRequest, _Mapping]] = ..., soft_delete: _Optional[_Union[IdsRequest, _Mapping]] = ..., restore: _Optional[_Union[IdsRequest, _Mapping]] = ..., prepare: _Optional[_Union[StagedTxn, _Mapping]] = ..., finish: _Optional[_Union[TxnFinish, _Mapping]] = ..., at_ms: _Optional[int] = ..., outcome: _Optional[_Union[WriteResponse, _Mapping]] = ..., epoch: _Optional[int] = ...) -> None: ...

class TxnFinish(_message.Message):
    __slots__ = ("txn_id", "decision")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    decision: str
    def __init__(self, txn_id: _Optional[str] = ..., decision: _Optional[str] = ...) -> None: ...

class ReplicateRequest(_message.Message):
    __slots__ = ("shard", "term", "ops")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    term: int
    ops: _containers.RepeatedCompositeFieldContainer[ReplicatedOp]
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., term: _Optional[int] = ..., ops: _Optional[_Iterable[_Union[ReplicatedOp, _Mapping]]] = ...) -> None: ...

class ReplicateResponse(_message.Message):
    __slots__ = ("last_seq",)
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    last_seq: int
    def __init__(self, last_seq: _Optional[int] = ...) -> None: ...

class FetchOpsRequest(_message.Message):
    __slots__ = ("shard", "node_id", "last_seq", "last_term", "ops_max")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_TERM_FIELD_NUMBER: _ClassVar[int]
    OPS_MAX_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    node_id: str
    last_seq: int
    last_term: int
    ops_max: int
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., node_id: _Optional[str] = ..., last_seq: _Optional[int] = ..., last_term: _Optional[int] = ..., ops_max: _Optional[int] = ...) -> None: ...

class FetchOpsResponse(_message.Message):
    __slots__ = ("ops", "start_over", "primary_last_seq", "in_sync", "term")
    OPS_FIELD_NUMBER: _ClassVar[int]
    START_OVER_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[ReplicatedOp]
    start_over: bool
    primary_last_seq: int
    in_sync: bool
    term: int
    def __init__(self, ops: _Optional[_Iterable[_Union[ReplicatedOp, _Mapping]]] = ..., start_over: _Optional[bool] = ..., primary_last_seq: _Optional[int] = ..., in_sync: _Optional[bool] = ..., term: _Optional[int] = ...) -> None: ...

class CopyStatusRequest(_message.Message):
    __slots__ = ("shard", "with_content_digest")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    WITH_CONTENT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    with_content_digest: bool
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., with_content_digest: _Optional[bool] = ...) -> None: ...

class CopyStatusResponse(_message.Message):
    __slots__ = ("last_seq", "last_term", "primary", "vector_count", "content_digest")
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_TERM_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    VECTOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    last_seq: int
    last_term: int
    primary: bool
    vector_count: int
    content_digest: str
    def __init__(self, last_seq: _Optional[int] = ..., last_term: _Optional[int] = ..., primary: _Optional[bool] = ..., vector_count: _Optional[int] = ..., content_digest: _Optional[str] = ...) -> None: ...

class FetchSnapshotRequest(_message.Message):
    __slots__ = ("shard", "node_id")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    node_id: str
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., node_id: _Optional[str] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("path", "data", "last_seq", "last_term", "total_bytes")
    PATH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_TERM_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    path: str
    data: bytes
    last_seq: int
    last_term: int
    total_bytes: int
    def __init__(self, path: _Optional[str] = ..., data: _Optional[bytes] = ..., last_seq: _Optional[int] = ..., last_term: _Optional[int] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class ExportShardRequest(_message.Message):
    __slots__ = ("shard", "version", "last_seq", "tag")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    version: str
    last_seq: int
    tag: str
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., version: _Optional[str] = ..., last_seq: _Optional[int] = ..., tag: _Optional[str] = ...) -> None: ...

class RestoreChunkRequest(_message.Message):
    __slots__ = ("shard", "restore_id", "path", "offset", "data")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    RESTORE_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    restore_id: str
    path: str
    offset: int
    data: bytes
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., restore_id: _Optional[str] = ..., path: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class RestoreChunkResponse(_message.Message):
    __slots__ = ("size",)
    SIZE_FIELD_NUMBER: _ClassVar[int]
    size: int
    def __init__(self, size: _Optional[int] = ...) -> None: ...

class RestoreFile(_message.Message):
    __slots__ = ("path", "size", "sha256")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    path: str
    size: int
    sha256: str
    def __init__(self, path: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class InstallRestoreRequest(_message.Message):
    __slots__ = ("shard", "restore_id", "files", "discard")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    RESTORE_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    DISCARD_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    restore_id: str
    files: _containers.RepeatedCompositeFieldContainer[RestoreFile]
    discard: bool
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., restore_id: _Optional[str] = ..., files: _Optional[_Iterable[_Union[RestoreFile, _Mapping]]] = ..., discard: _Optional[bool] = ...) -> None: ...

class InstallRestoreResponse(_message.Message):
    __slots__ = ("vector_count",)
    VECTOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    vector_count: int
    def __init__(self, vector_count: _Optional[int] = ...) -> None: ...

class CutShardRequest(_message.Message):
    __slots__ = ("shard", "tag")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    tag: str
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., tag: _Optional[str] = ...) -> None: ...

class CopyMark(_message.Message):
    __slots__ = ("node_id", "commit_id", "error")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    COMMIT_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    commit_id: str
    error: str
    def __init__(self, node_id: _Optional[str] = ..., commit_id: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class CutShardResponse(_message.Message):
    __slots__ = ("node_id", "commit_id", "seq", "term", "vector_count", "copies")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    COMMIT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    VECTOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    COPIES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    commit_id: str
    seq: int
    term: int
    vector_count: int
    copies: _containers.RepeatedCompositeFieldContainer[CopyMark]
    def __init__(self, node_id: _Optional[str] = ..., commit_id: _Optional[str] = ..., seq: _Optional[int] = ..., term: _Optional[int] = ..., vector_count: _Optional[int] = ..., copies: _Optional[_Iterable[_Union[CopyMark, _Mapping]]] = ...) -> None: ...

class MarkCopyRequest(_message.Message):
    __slots__ = ("shard", "tag", "seq")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    tag: str
    seq: int
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., tag: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class MarkCopyResponse(_message.Message):
    __slots__ = ("commit_id",)
    COMMIT_ID_FIELD_NUMBER: _ClassVar[int]
    commit_id: str
    def __init__(self, commit_id: _Optional[str] = ...) -> None: ...

class ShardSearchStreamRequest(_message.Message):
    __slots__ = ("ticket", "batch", "timeout_ms", "merged_answers")
    TICKET_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    MERGED_ANSWERS_FIELD_NUMBER: _ClassVar[int]
    ticket: int
    batch: ShardSearchBatchRequest
    timeout_ms: int
    merged_answers: bool
    def __init__(self, ticket: _Optional[int] = ..., batch: _Optional[_Union[ShardSearchBatchRequest, _Mapping]] = ..., timeout_ms: _Optional[int] = ..., merged_answers: _Optional[bool] = ...) -> None: ...

class ShardSearchStreamResponse(_message.Message):
    __slots__ = ("ticket", "batch", "more")
    TICKET_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    ticket: int
    batch: ShardSearchBatchResponse
    more: _containers.RepeatedCompositeFieldContainer[ShardSearchStreamResponse]
    def __init__(self, ticket: _Optional[int] = ..., batch: _Optional[_Union[ShardSearchBatchResponse, _Mapping]] = ..., more: _Optional[_Iterable[_Union[ShardSearchStreamResponse, _Mapping]]] = ...) -> None: ...
