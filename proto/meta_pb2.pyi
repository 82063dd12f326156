from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ProposeRequest(_message.Message):
    __slots__ = ("command_json",)
    COMMAND_JSON_FIELD_NUMBER: _ClassVar[int]
    command_json: str
    def __init__(self, command_json: _Optional[str] = ...) -> None: ...

class ProposeResponse(_message.Message):
    __slots__ = ("result_json", "version")
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    result_json: str
    version: int
    def __init__(self, result_json: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class GetStateRequest(_message.Message):
    __slots__ = ("known_version", "linearizable", "revision_only", "include_txns", "idempotency_key")
    KNOWN_VERSION_FIELD_NUMBER: _ClassVar[int]
    LINEARIZABLE_FIELD_NUMBER: _ClassVar[int]
    REVISION_ONLY_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TXNS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    known_version: int
    linearizable: bool
    revision_only: bool
    include_txns: bool
    idempotency_key: str
    def __init__(self, known_version: _Optional[int] = ..., linearizable: _Optional[bool] = ..., revision_only: _Optional[bool] = ..., include_txns: _Optional[bool] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class GetStateResponse(_message.Message):
    __slots__ = ("version", "unchanged", "state_json", "txns_json", "idempotency_json")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    STATE_JSON_FIELD_NUMBER: _ClassVar[int]
    TXNS_JSON_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_JSON_FIELD_NUMBER: _ClassVar[int]
    version: int
    unchanged: bool
    state_json: str
    txns_json: str
    idempotency_json: str
    def __init__(self, version: _Optional[int] = ..., unchanged: _Optional[bool] = ..., state_json: _Optional[str] = ..., txns_json: _Optional[str] = ..., idempotency_json: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("node_id", "address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class MetaStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MetaStatusResponse(_message.Message):
    __slots__ = ("has_leader", "is_leader", "leader_raft_address", "leader_grpc_address", "version", "registered_nodes", "live_nodes", "raft_term", "commit_index", "self_raft_address")
    HAS_LEADER_FIELD_NUMBER: _ClassVar[int]
    IS_LEADER_FIELD_NUMBER: _ClassVar[int]
    LEADER_RAFT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LEADER_GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_NODES_FIELD_NUMBER: _ClassVar[int]
    LIVE_NODES_FIELD_NUMBER: _ClassVar[int]
    RAFT_TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    SELF_RAFT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    has_leader: bool
    is_leader: bool
    leader_raft_address: str
    leader_grpc_address: str
    version: int
    registered_nodes: _containers.RepeatedScalarFieldContainer[str]
    live_nodes: _containers.RepeatedScalarFieldContainer[str]
    raft_term: int
    commit_index: int
    self_raft_address: str
    def __init__(self, has_leader: _Optional[bool] = ..., is_leader: _Optional[bool] = ..., leader_raft_address: _Optional[str] = ..., leader_grpc_address: _Optional[str] = ..., version: _Optional[int] = ..., registered_nodes: _Optional[_Iterable[str]] = ..., live_nodes: _Optional[_Iterable[str]] = ..., raft_term: _Optional[int] = ..., commit_index: _Optional[int] = ..., self_raft_address: _Optional[str] = ...) -> None: ...

class RouterHeartbeatRequest(_message.Message):
    __slots__ = ("router_id",)
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    router_id: str
    def __init__(self, router_id: _Optional[str] = ...) -> None: ...

class RouterHeartbeatResponse(_message.Message):
    __slots__ = ("live_routers", "settled")
    LIVE_ROUTERS_FIELD_NUMBER: _ClassVar[int]
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    live_routers: int
    settled: bool
    def __init__(self, live_routers: _Optional[int] = ..., settled: _Optional[bool] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("from_revision",)
    FROM_REVISION_FIELD_NUMBER: _ClassVar[int]
    from_revision: int
    def __init__(self, from_revision: _Optional[int] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("revision", "kind", "snapshot_json", "changes_json", "compact_revision")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_JSON_FIELD_NUMBER: _ClassVar[int]
    CHANGES_JSON_FIELD_NUMBER: _ClassVar[int]
    COMPACT_REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    kind: str
    snapshot_json: str
    changes_json: str
    compact_revision: int
    def __init__(self, revision: _Optional[int] = ..., kind: _Optional[str] = ..., snapshot_json: _Optional[str] = ..., changes_json: _Optional[str] = ..., compact_revision: _Optional[int] = ...) -> None: ...
