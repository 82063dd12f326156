from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TenantQuotas(_message.Message):
    __slots__ = ("max_vectors", "max_storage_bytes", "max_requests_per_second", "max_concurrent_queries", "max_dimension", "max_results_per_query", "max_batch_size")
    MAX_VECTORS_FIELD_NUMBER: _ClassVar[int]
    MAX_STORAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUESTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_QUERIES_FIELD_NUMBER: _ClassVar[int]
    MAX_DIMENSION_FIELD_NUMBER: _ClassVar[int]
    MAX_RESULTS_PER_QUERY_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    max_vectors: int
    max_storage_bytes: int
    max_requests_per_second: float
    max_concurrent_queries: int
    max_dimension: int
    max_results_per_query: int
    max_batch_size: int
    def __init__(self, max_vectors: _Optional[int] = ..., max_storage_bytes: _Optional[int] = ..., max_requests_per_second: _Optional[float] = ..., max_concurrent_queries: _Optional[int] = ..., max_dimension: _Optional[int] = ..., max_results_per_query: _Optional[int] = ..., max_batch_size: _Optional[int] = ...) -> None: ...

class Tenant(_message.Message):
    __slots__ = ("tenant_id", "name", "status", "quotas", "created_at_ms", "updated_at_ms", "dataset_count")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DATASET_COUNT_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    name: str
    status: str
    quotas: TenantQuotas
    created_at_ms: int
    updated_at_ms: int
    dataset_count: int
    def __init__(self, tenant_id: _Optional[str] = ..., name: _Optional[str] = ..., status: _Optional[str] = ..., quotas: _Optional[_Union[TenantQuotas, _Mapping]] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ..., dataset_count: _Optional[int] = ...) -> None: ...

class CreateTenantRequest(_message.Message):
    __slots__ = ("tenant_id", "name", "quotas", "status")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    name: str
    quotas: TenantQuotas
    status: str
    def __init__(self, tenant_id: _Optional[str] = ..., name: _Optional[str] = ..., quotas: _Optional[_Union[TenantQuotas, _Mapping]] = ..., status: _Optional[str] = ...) -> None: ...

class TenantResponse(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: Tenant
    def __init__(self, tenant: _Optional[_Union[Tenant, _Mapping]] = ...) -> None: ...

class GetTenantRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class ListTenantsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTenantsResponse(_message.Message):
    __slots__ = ("tenants", "total_count")
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[Tenant]
    total_count: int
    def __init__(self, tenants: _Optional[_Iterable[_Union[Tenant, _Mapping]]] = ..., total_count: _Optional[int] = ...) -> None: ...

class DeleteTenantRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class DeleteTenantResponse(_message.Message):
    __slots__ = ("deleted", "datasets_deleted", "revoked_keys")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    DATASETS_DELETED_FIELD_NUMBER: _ClassVar[int]
    REVOKED_KEYS_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    datasets_deleted: int
    revoked_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deleted: _Optional[bool] = ..., datasets_deleted: _Optional[int] = ..., revoked_keys: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateTenantQuotasRequest(_message.Message):
    __slots__ = ("tenant_id", "quotas", "clear")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    CLEAR_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    quotas: TenantQuotas
    clear: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenant_id: _Optional[str] = ..., quotas: _Optional[_Union[TenantQuotas, _Mapping]] = ..., clear: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateTenantStatusRequest(_message.Message):
    __slots__ = ("tenant_id", "status")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    status: str
    def __init__(self, tenant_id: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class GetTenantStatsRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class GetTenantStatsResponse(_message.Message):
    __slots__ = ("tenant_id", "status", "dataset_count", "vector_count", "storage_bytes", "quotas", "quota_utilization", "live_routers", "this_router")
    class QuotaUtilizationEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ThisRouterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DATASET_COUNT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    STORAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    QUOTA_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    LIVE_ROUTERS_FIELD_NUMBER: _ClassVar[int]
    THIS_ROUTER_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    status: str
    dataset_count: int
    vector_count: int
    storage_bytes: int
    quotas: TenantQuotas
    quota_utilization: _containers.ScalarMap[str, float]
    live_routers: int
    this_router: _containers.ScalarMap[str, int]
    def __init__(self, tenant_id: _Optional[str] = ..., status: _Optional[str] = ..., dataset_count: _Optional[int] = ..., vector_count: _Optional[int] = ..., storage_bytes: _Optional[int] = ..., quotas: _Optional[_Union[TenantQuotas, _Mapping]] = ..., quota_utilization: _Optional[_Mapping[str, float]] = ..., live_routers: _Optional[int] = ..., this_router: _Optional[_Mapping[str, int]] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("key_id", "tenant_id", "role", "access", "datasets", "description", "created_at_ms")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    tenant_id: str
    role: str
    access: str
    datasets: _containers.RepeatedScalarFieldContainer[str]
    description: str
    created_at_ms: int
    def __init__(self, key_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., role: _Optional[str] = ..., access: _Optional[str] = ..., datasets: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., created_at_ms: _Optional[int] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("tenant_id", "role", "access", "datasets", "description")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    role: str
    access: str
    datasets: _containers.RepeatedScalarFieldContainer[str]
    description: str
    def __init__(self, tenant_id: _Optional[str] = ..., role: _Optional[str] = ..., access: _Optional[str] = ..., datasets: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("key", "api_key")
    KEY_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    api_key: ApiKey
    def __init__(self, key: _Optional[str] = ..., api_key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("keys", "total_count")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    total_count: int
    def __init__(self, keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ..., total_count: _Optional[int] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ("revoked", "key_id")
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    revoked: bool
    key_id: str
    def __init__(self, revoked: _Optional[bool] = ..., key_id: _Optional[str] = ...) -> None: ...
