"""Every limit in one place, with the unit last. Checked at import time for consistency."""

from __future__ import annotations

batch_vectors_max = 10_000
request_bytes_max = 64 * 1024 * 1024
grpc_message_bytes_max = 64 * 1024 * 1024
top_k_max = 1_000
dimensions_max = 4_096
name_bytes_max = 255
vector_id_bytes_max = 512
content_bytes_max = 1024 * 1024
metadata_bytes_max = 64 * 1024
metadata_keys_max = 128
shard_count_max = 256
ef_search_max = 4_096
ef_search_default = 128
hnsw_m = 16
hnsw_ef_construction = 200
hnsw_initial_capacity_vectors = 1_024
list_page_size_max = 1_000
datasets_per_tenant_max = 10_000

node_heartbeat_interval_ms = 500
node_liveness_timeout_ms = 5_000
meta_rpc_timeout_ms = 5_000
node_rpc_timeout_ms = 30_000
catalog_refresh_interval_ms = 1_000
shutdown_grace_ms = 8_000


def as_dict() -> dict[str, int]:
    return {k: v for k, v in globals().items() if k.endswith(("_max", "_ms", "_default", "_vectors"))
            or k.startswith("hnsw_")}


def check() -> None:
    """Raises ValueError if limits contradict each other (a programmer or operator error)."""
    if not 0 < top_k_max <= ef_search_max:
        raise ValueError("top_k_max must be positive and at most ef_search_max")
    if not top_k_max <= ef_search_default * 100:
        raise ValueError("ef_search_default is too small for top_k_max")
    if request_bytes_max > grpc_message_bytes_max:
        raise ValueError("request_bytes_max must fit in one gRPC message")
    if node_heartbeat_interval_ms * 3 > node_liveness_timeout_ms:
        raise ValueError("node_liveness_timeout_ms must cover at least three heartbeats")
    if shutdown_grace_ms >= 10_000:
        raise ValueError("shutdown_grace_ms must leave room for the 10 s stop promise")


check()
