import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Dataset(_message.Message):
    __slots__ = ("id", "name", "description", "dimensions", "metric_type", "index_type", "metadata", "storage_location", "vector_count", "storage_size", "created_at", "updated_at", "tenant_id", "shard_count", "replication_factor")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    METRIC_TYPE_FIELD_NUMBER: _ClassVar[int]
    INDEX_TYPE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    STORAGE_LOCATION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    STORAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_COUNT_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    dimensions: int
    metric_type: str
    index_type: str
    metadata: _containers.ScalarMap[str, str]
    storage_location: str
    vector_count: int
    storage_size: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    tenant_id: str
    shard_count: int
    replication_factor: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., dimensions: _Optional[int] = ..., metric_type: _Optional[str] = ..., index_type: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., storage_location: _Optional[str] = ..., vector_count: _Optional[int] = ..., storage_size: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tenant_id: _Optional[str] = ..., shard_count: _Optional[int] = ..., replication_factor: _Optional[int] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("id", "dataset_id", "document_id", "chunk_id", "values", "content", "content_hash", "metadata", "content_type", "language", "chunk_index", "chunk_count", "model", "dimensions", "created_at", "updated_at", "tenant_id")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    dataset_id: str
    document_id: str
    chunk_id: str
    values: _containers.RepeatedScalarFieldContainer[float]
    content: str
    content_hash: str
    metadata: _containers.ScalarMap[str, str]
    content_type: str
    language: str
    chunk_index: int
    chunk_count: int
    model: str
    dimensions: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    tenant_id: str
    def __init__(self, id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., document_id: _Optional[str] = ..., chunk_id: _Optional[str] = ..., values: _Optional[_Iterable[float]] = ..., content: _Optional[str] = ..., content_hash: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., content_type: _Optional[str] = ..., language: _Optional[str] = ..., chunk_index: _Optional[int] = ..., chunk_count: _Optional[int] = ..., model: _Optional[str] = ..., dimensions: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class SearchResult(_message.Message):
    __slots__ = ("vector", "score", "distance", "rank", "explanation")
    class ExplanationEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    vector: Vector
    score: float
    distance: float
    rank: int
    explanation: _containers.ScalarMap[str, str]
    def __init__(self, vector: _Optional[_Union[Vector, _Mapping]] = ..., score: _Optional[float] = ..., distance: _Optional[float] = ..., rank: _Optional[int] = ..., explanation: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SearchOptions(_message.Message):
    __slots__ = ("top_k", "threshold", "metric_type", "include_content", "include_metadata", "filters", "deduplicate", "group_by_document", "rerank", "ef_search", "nprobe", "max_distance", "min_score", "filter")
    class FiltersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    METRIC_TYPE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CONTENT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_METADATA_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATE_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    EF_SEARCH_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    MAX_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    top_k: int
    threshold: float
    metric_type: str
    include_content: bool
    include_metadata: bool
    filters: _containers.ScalarMap[str, str]
    deduplicate: bool
    group_by_document: bool
    rerank: bool
    ef_search: int
    nprobe: int
    max_distance: float
    min_score: float
    filter: str
    def __init__(self, top_k: _Optional[int] = ..., threshold: _Optional[float] = ..., metric_type: _Optional[str] = ..., include_content: _Optional[bool] = ..., include_metadata: _Optional[bool] = ..., filters: _Optional[_Mapping[str, str]] = ..., deduplicate: _Optional[bool] = ..., group_by_document: _Optional[bool] = ..., rerank: _Optional[bool] = ..., ef_search: _Optional[int] = ..., nprobe: _Optional[int] = ..., max_distance: _Optional[float] = ..., min_score: _Optional[float] = ..., filter: _Optional[str] = ...) -> None: ...

class CreateDatasetRequest(_message.Message):
    __slots__ = ("name", "description", "dimensions", "metric_type", "index_type", "metadata", "storage_location", "overwrite", "tenant_id", "shard_count", "replication_factor")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    METRIC_TYPE_FIELD_NUMBER: _ClassVar[int]
    INDEX_TYPE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    STORAGE_LOCATION_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_COUNT_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    dimensions: int
    metric_type: str
    index_type: str
    metadata: _containers.ScalarMap[str, str]
    storage_location: str
    overwrite: bool
    tenant_id: str
    shard_count: int
    replication_factor: int
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., dimensions: _Optional[int] = ..., metric_type: _Optional[str] = ..., index_type: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., storage_location: _Optional[str] = ..., overwrite: _Optional[bool] = ..., tenant_id: _Optional[str] = ..., shard_count: _Optional[int] = ..., replication_factor: _Optional[int] = ...) -> None: ...

class CreateDatasetResponse(_message.Message):
    __slots__ = ("dataset", "message")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    message: str
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ..., message: _Optional[str] = ...) -> None: ...

class GetDatasetRequest(_message.Message):
    __slots__ = ("dataset_id", "tenant_id")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    tenant_id: str
    def __init__(self, dataset_id: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class GetDatasetResponse(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ("tenant_id", "page_size", "page_token")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    page_size: int
    page_token: str
    def __init__(self, tenant_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets", "total_count", "next_page_token")
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[Dataset]
    total_count: int
    next_page_token: str
    def __init__(self, datasets: _Optional[_Iterable[_Union[Dataset, _Mapping]]] = ..., total_count: _Optional[int] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateDatasetRequest(_message.Message):
    __slots__ = ("dataset_id", "description", "metadata", "tenant_id")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    description: str
    metadata: _containers.ScalarMap[str, str]
    tenant_id: str
    def __init__(self, dataset_id: _Optional[str] = ..., description: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class UpdateDatasetResponse(_message.Message):
    __slots__ = ("dataset", "message")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    message: str
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ..., message: _Optional[str] = ...) -> None: ...

class DeleteDatasetRequest(_message.Message):
    __slots__ = ("dataset_id", "tenant_id")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    tenant_id: str
    def __init__(self, dataset_id: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class DeleteDatasetResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class GetDatasetStatsRequest(_message.Message):
    __slots__ = ("dataset_id", "tenant_id")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    tenant_id: str
    def __init__(self, dataset_id: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class GetDatasetStatsResponse(_message.Message):
    __slots__ = ("dataset_id", "vector_count", "storage_size", "dimensions", "metric_type", "index_type", "stats")
    class StatsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    STORAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    METRIC_TYPE_FIELD_NUMBER: _ClassVar[int]
    INDEX_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    vector_count: int
    storage_size: int
    dimensions: int
    metric_type: str
    index_type: str
    stats: _containers.ScalarMap[str, str]
    def __init__(self, dataset_id: _Optional[str] = ..., vector_count: _Optional[int] = ..., storage_size: _Optional[int] = ..., dimensions: _Optional[int] = ..., metric_type: _Optional[str] = ..., index_type: _Optional[str] = ..., stats: _Optional[_Mapping[str, str]] = ...) -> None: ...

class InsertVectorRequest(_message.Message):
    __slots__ = ("dataset_id", "vector", "overwrite", "tenant_id")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    vector: Vector
    overwrite: bool
    tenant_id: str
    def __init__(self, dataset_id: _Optional[str] = ..., vector: _Optional[_Union[Vector, _Mapping]] = ..., overwrite: _Optional[bool] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class InsertVectorResponse(_message.Message):
    __slots__ = ("vector_id", "success", "message")
    VECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    vector_id: str
    success: bool
    message: str
    def __init__(self, vector_id: _Optional[str] = ..., success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class InsertVectorsRequest(_message.Message):
    __slots__ = ("dataset_id", "vectors", "skip_existing", "overwrite", "batch_size", "tenant_id", "packed_values")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    SKIP_EXISTING_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PACKED_VALUES_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    vectors: _containers.RepeatedCompositeFieldContainer[Vector]
    skip_existing: bool
    overwrite: bool
    batch_size: int
    tenant_id: str
    packed_values: bytes
    def __init__(self, dataset_id: _Optional[str] = ..., vectors: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ..., skip_existing: _Optional[bool] = ..., overwrite: _Optional[bool] = ..., batch_size: _Optional[int] = ..., tenant_id: _Optional[str] = ..., packed_values: _Optional[bytes] = ...) -> None: ...

class InsertVectorsResponse(_message.Message):
    __slots__ = ("inserted_count", "skipped_count", "failed_count", "error_messages", "processing_time_ms")
    INSERTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILED_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    inserted_count: int
    skipped_count: int
    failed_count: int
    error_messages: _containers.RepeatedScalarFieldContainer[str]
    processing_time_ms: float
    def __init__(self, inserted_count: _Optional[int] = ..., skipped_count: _Optional[int] = ..., failed_count: _Optional[int] = ..., error_messages: _Optional[_Iterable[str]] = ..., processing_time_ms: _Optional[float] = ...) -> None: ...

class GetVectorRequest(_message.Message):
    __slots__ = ("dataset_id", "vector_id", "tenant_id", "as_of_version", "as_of_time")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    AS_OF_VERSION_FIELD_NUMBER: _ClassVar[int]
    AS_OF_TIME_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    vector_id: str
    tenant_id: str
    as_of_version: str
    as_of_time: _timestamp_pb2.Timestamp
    def __init__(self, dataset_id: _Optional[str] = ..., vector_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., as_of_version: _Optional[str] = ..., as_of_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetVectorResponse(_message.Message):
    __slots__ = ("vector",)
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    vector: Vector
    def __init__(self, vector: _Optional[_Union[Vector, _Mapping]] = ...) -> None: ...

class UpdateVectorRequest(_message.Message):
    __slots__ = ("dataset_id", "vector_id", "vector", "tenant_id", "update_mask")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    vector_id: str
    vector: Vector
    tenant_id: str
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, dataset_id: _Optional[str] = ..., vector_id: _Optional[str] = ..., vector: _Optional[_Union[Vector, _Mapping]] = ..., tenant_id: _Optional[str] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateVectorResponse(_message.Message):
    __slots__ = ("vector", "message")
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    vector: Vector
    message: str
    def __init__(self, vector: _Optional[_Union[Vector, _Mapping]] = ..., message: _Optional[str] = ...) -> None: ...

class DeleteVectorRequest(_message.Message):
    __slots__ = ("dataset_id", "vector_id", "tenant_id")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    vector_id: str
    tenant_id: str
    def __init__(self, dataset_id: _Optional[str] = ..., vector_id: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class DeleteVectorResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class SoftDeleteVectorsRequest(_message.Message):
    __slots__ = ("dataset_id", "vector_ids", "tenant_id")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_IDS_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    vector_ids: _containers.RepeatedScalarFieldContainer[str]
    tenant_id: str
    def __init__(self, dataset_id: _Optional[str] = ..., vector_ids: _Optional[_Iterable[str]] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class SoftDeleteVectorsResponse(_message.Message):
    __slots__ = ("soft_deleted_count", "not_found_count")
    SOFT_DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_COUNT_FIELD_NUMBER: _ClassVar[int]
    soft_deleted_count: int
    not_found_count: int
    def __init__(self, soft_deleted_count: _Optional[int] = ..., not_found_count: _Optional[int] = ...) -> None: ...

class RestoreVectorsRequest(_message.Message):
    __slots__ = ("dataset_id", "vector_ids", "tenant_id")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_IDS_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    vector_ids: _containers.RepeatedScalarFieldContainer[str]
    tenant_id: str
    def __init__(self, dataset_id: _Optional[str] = ..., vector_ids: _Optional[_Iterable[str]] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class RestoreVectorsResponse(_message.Message):
    __slots__ = ("restored_count", "not_found_count")
    RESTORED_COUNT_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_COUNT_FIELD_NUMBER: _ClassVar[int]
    restored_count: int
    not_found_count: int
    def __init__(self, restored_count: _Optional[int] = ..., not_found_count: _Optional[int] = ...) -> None: ...

class CompactDatasetRequest(_message.Message):
    __slots__ = ("dataset_id", "tenant_id")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    tenant_id: str
    def __init__(self, dataset_id: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class CompactDatasetResponse(_message.Message):
    __slots__ = ("purged_count", "indexed_count", "compaction_time_ms", "message")
    PURGED_COUNT_FIELD_NUMBER: _ClassVar[int]
    INDEXED_COUNT_FIELD_NUMBER: _ClassVar[int]
    COMPACTION_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    purged_count: int
    indexed_count: int
    compaction_time_ms: float
    message: str
    def __init__(self, purged_count: _Optional[int] = ..., indexed_count: _Optional[int] = ..., compaction_time_ms: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class DeleteVectorsRequest(_message.Message):
    __slots__ = ("dataset_id", "vector_ids", "tenant_id")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_IDS_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    vector_ids: _containers.RepeatedScalarFieldContainer[str]
    tenant_id: str
    def __init__(self, dataset_id: _Optional[str] = ..., vector_ids: _Optional[_Iterable[str]] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class DeleteVectorsResponse(_message.Message):
    __slots__ = ("deleted_count", "not_found_count")
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    not_found_count: int
    def __init__(self, deleted_count: _Optional[int] = ..., not_found_count: _Optional[int] = ...) -> None: ...

class ListVectorsRequest(_message.Message):
    __slots__ = ("dataset_id", "page_size", "page_token", "tenant_id", "include_values", "as_of_version", "as_of_time")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VALUES_FIELD_NUMBER: _ClassVar[int]
    AS_OF_VERSION_FIELD_NUMBER: _ClassVar[int]
    AS_OF_TIME_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    page_size: int
    page_token: str
    tenant_id: str
    include_values: bool
    as_of_version: str
    as_of_time: _timestamp_pb2.Timestamp
    def __init__(self, dataset_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant_id: _Optional[str] = ..., include_values: _Optional[bool] = ..., as_of_version: _Optional[str] = ..., as_of_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListVectorsResponse(_message.Message):
    __slots__ = ("vectors", "next_page_token", "total_count")
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[Vector]
    next_page_token: str
    total_count: int
    def __init__(self, vectors: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_count: _Optional[int] = ...) -> None: ...

class SearchVectorsRequest(_message.Message):
    __slots__ = ("dataset_id", "query_vector", "options", "tenant_id", "exact", "as_of_version", "as_of_time")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_VECTOR_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    AS_OF_VERSION_FIELD_NUMBER: _ClassVar[int]
    AS_OF_TIME_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    query_vector: _containers.RepeatedScalarFieldContainer[float]
    options: SearchOptions
    tenant_id: str
    exact: bool
    as_of_version: str
    as_of_time: _timestamp_pb2.Timestamp
    def __init__(self, dataset_id: _Optional[str] = ..., query_vector: _Optional[_Iterable[float]] = ..., options: _Optional[_Union[SearchOptions, _Mapping]] = ..., tenant_id: _Optional[str] = ..., exact: _Optional[bool] = ..., as_of_version: _Optional[str] = ..., as_of_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SearchVectorsResponse(_message.Message):
    __slots__ = ("results", "total_found", "has_more", "query_time_ms", "stats")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FOUND_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    QUERY_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResult]
    total_found: int
    has_more: bool
    query_time_ms: float
    stats: SearchStats
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ..., total_found: _Optional[int] = ..., has_more: _Optional[bool] = ..., query_time_ms: _Optional[float] = ..., stats: _Optional[_Union[SearchStats, _Mapping]] = ...) -> None: ...

class SearchByTextRequest(_message.Message):
    __slots__ = ("dataset_id", "query_text", "options", "tenant_id")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_TEXT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    query_text: str
    options: SearchOptions
    tenant_id: str
    def __init__(self, dataset_id: _Optional[str] = ..., query_text: _Optional[str] = ..., options: _Optional[_Union[SearchOptions, _Mapping]] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class SearchByTextResponse(_message.Message):
    __slots__ = ("results", "total_found", "has_more", "query_time_ms", "embedding_time_ms", "stats")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FOUND_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    QUERY_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResult]
    total_found: int
    has_more: bool
    query_time_ms: float
    embedding_time_ms: float
    stats: SearchStats
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ..., total_found: _Optional[int] = ..., has_more: _Optional[bool] = ..., query_time_ms: _Optional[float] = ..., embedding_time_ms: _Optional[float] = ..., stats: _Optional[_Union[SearchStats, _Mapping]] = ...) -> None: ...

class HybridSearchRequest(_message.Message):
    __slots__ = ("dataset_id", "query_vector", "query_text", "options", "alpha", "fusion", "tenant_id", "rrf_k")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_VECTOR_FIELD_NUMBER: _ClassVar[int]
    QUERY_TEXT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    FUSION_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    RRF_K_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    query_vector: _containers.RepeatedScalarFieldContainer[float]
    query_text: str
    options: SearchOptions
    alpha: float
    fusion: str
    tenant_id: str
    rrf_k: int
    def __init__(self, dataset_id: _Optional[str] = ..., query_vector: _Optional[_Iterable[float]] = ..., query_text: _Optional[str] = ..., options: _Optional[_Union[SearchOptions, _Mapping]] = ..., alpha: _Optional[float] = ..., fusion: _Optional[str] = ..., tenant_id: _Optional[str] = ..., rrf_k: _Optional[int] = ...) -> None: ...

class HybridSearchResponse(_message.Message):
    __slots__ = ("results", "total_found", "has_more", "query_time_ms", "stats")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FOUND_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    QUERY_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResult]
    total_found: int
    has_more: bool
    query_time_ms: float
    stats: SearchStats
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ..., total_found: _Optional[int] = ..., has_more: _Optional[bool] = ..., query_time_ms: _Optional[float] = ..., stats: _Optional[_Union[SearchStats, _Mapping]] = ...) -> None: ...

class SearchStats(_message.Message):
    __slots__ = ("vectors_scanned", "index_hits", "filtered_results", "reranking_time_ms", "database_time_ms", "post_processing_time_ms")
    VECTORS_SCANNED_FIELD_NUMBER: _ClassVar[int]
    INDEX_HITS_FIELD_NUMBER: _ClassVar[int]
    FILTERED_RESULTS_FIELD_NUMBER: _ClassVar[int]
    RERANKING_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    DATABASE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    POST_PROCESSING_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    vectors_scanned: int
    index_hits: int
    filtered_results: int
    reranking_time_ms: float
    database_time_ms: float
    post_processing_time_ms: float
    def __init__(self, vectors_scanned: _Optional[int] = ..., index_hits: _Optional[int] = ..., filtered_results: _Optional[int] = ..., reranking_time_ms: _Optional[float] = ..., database_time_ms: _Optional[float] = ..., post_processing_time_ms: _Optional[float] = ...) -> None: ...

class HealthCheckRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthCheckResponse(_message.Message):
    __slots__ = ("status", "service", "version", "timestamp", "dependencies")
    class DependenciesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    status: str
    service: str
    version: str
    timestamp: _timestamp_pb2.Timestamp
    dependencies: _containers.ScalarMap[str, str]
    def __init__(self, status: _Optional[str] = ..., service: _Optional[str] = ..., version: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dependencies: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetMetricsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetMetricsResponse(_message.Message):
    __slots__ = ("prometheus_text", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    PROMETHEUS_TEXT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    prometheus_text: str
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, prometheus_text: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class MultiDatasetSearchRequest(_message.Message):
    __slots__ = ("dataset_ids", "query_vector", "options", "tenant_id")
    DATASET_IDS_FIELD_NUMBER: _ClassVar[int]
    QUERY_VECTOR_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_ids: _containers.RepeatedScalarFieldContainer[str]
    query_vector: _containers.RepeatedScalarFieldContainer[float]
    options: SearchOptions
    tenant_id: str
    def __init__(self, dataset_ids: _Optional[_Iterable[str]] = ..., query_vector: _Optional[_Iterable[float]] = ..., options: _Optional[_Union[SearchOptions, _Mapping]] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class DatasetVersion(_message.Message):
    __slots__ = ("tag", "created_at", "vector_count", "dataset_id")
    TAG_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    tag: str
    created_at: _timestamp_pb2.Timestamp
    vector_count: int
    dataset_id: str
    def __init__(self, tag: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., vector_count: _Optional[int] = ..., dataset_id: _Optional[str] = ...) -> None: ...

class CreateVersionRequest(_message.Message):
    __slots__ = ("dataset_id", "tag", "tenant_id")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    tag: str
    tenant_id: str
    def __init__(self, dataset_id: _Optional[str] = ..., tag: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class CreateVersionResponse(_message.Message):
    __slots__ = ("version", "commit_pause_ms")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COMMIT_PAUSE_MS_FIELD_NUMBER: _ClassVar[int]
    version: DatasetVersion
    commit_pause_ms: float
    def __init__(self, version: _Optional[_Union[DatasetVersion, _Mapping]] = ..., commit_pause_ms: _Optional[float] = ...) -> None: ...

class ListVersionsRequest(_message.Message):
    __slots__ = ("dataset_id", "tenant_id")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    tenant_id: str
    def __init__(self, dataset_id: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class ListVersionsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[DatasetVersion]
    def __init__(self, versions: _Optional[_Iterable[_Union[DatasetVersion, _Mapping]]] = ...) -> None: ...
