"""Prometheus metrics of a shard node, served on its own port (`tributary node --metrics
HOST:PORT`; `tributary up` uses internal_port_base + up.METRICS_OFFSET_NODE + i).

Per shard copy (labels tenant, dataset, shard), read from the open replicas at scrape time:
    tributary_node_vectors                  live vectors
    tributary_node_soft_deleted_vectors     soft-deleted, not yet compacted
    tributary_node_index_pending_vectors    stored but not yet in the HNSW graph (backlog)
    tributary_node_indexed_vectors_total    vectors added to the graph (rate() = build rate)
    tributary_node_shard_disk_bytes         bytes on disk (rescanned every
                                            limits.metrics_disk_scan_interval_ms)
    tributary_node_copy_primary             1 on the shard's primary, else 0
    tributary_node_copy_in_sync             1 while the copy is in the shard's in-sync set
    tributary_node_copy_last_seq            last op sequence number in the copy's log
    tributary_node_copy_lag_ops             (primary only, label copy) ops a copy is behind
Per tenant: tributary_tenant_vectors (vectors this node holds, all copies counted once per
copy: sum over nodes / replication factor gives stored vectors; the router's
tributary_tenant_vectors_stored is the catalog-side view).
Latency: tributary_node_search_seconds, tributary_node_write_seconds{method} (every internal
RPC that changes data), tributary_node_rpc_errors_total{method,code},
tributary_deeplake_commit_seconds (ShardReplica.commit_observer).
"""

from __future__ import annotations

import logging
import time

import grpc
from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from shard.replica import ShardReplica, directory_bytes
from tributary import limits

log = logging.getLogger("tributary.node.metrics")

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                    10)
SEARCH_SECONDS = Histogram("tributary_node_search_seconds",
                           "Time a node takes to answer a shard search (vector or text)",
                           buckets=_LATENCY_BUCKETS)
WRITE_SECONDS = Histogram("tributary_node_write_seconds",
                          "Time a node takes to apply a data-changing RPC, replication included",
                          ["method"], buckets=_LATENCY_BUCKETS)
RPC_ERRORS = Counter("tributary_node_rpc_errors_total",
                     "Internal RPCs a node answered with an error", ["method", "code"])
DEEPLAKE_COMMIT_SECONDS = Histogram("tributary_deeplake_commit_seconds",
                                    "Deep Lake commit latency of shard writes",
                                    buckets=_LATENCY_BUCKETS)

_SEARCH_METHODS = frozenset({"Search", "SearchBatch", "TextSearch"})
_WRITE_METHODS = frozenset({"Write", "Prepare", "Commit", "Abort", "SoftDelete", "Restore",
                            "Replicate", "Compact"})


def _observe_commit(seconds: float) -> None:
    DEEPLAKE_COMMIT_SECONDS.observe(seconds)


class NodeCollector:
    """The per-copy gauges, computed from the node's open replicas when scraped."""

    def __init__(self, host, replication):
        self.host = host                # node.server.ShardHost
        self.replication = replication  # node.replication.Replication
        self._disk: dict[tuple[str, int], int] = {}
        self._disk_at = 0.0

    def _disk_bytes(self, keys) -> dict[tuple[str, int], int]:
        now = time.monotonic()
        if now - self._disk_at >= limits.metrics_disk_scan_interval_ms / 1000 or \
                set(keys) - set(self._disk):
            sizes = {}
            for key in keys:
                replica = self.host.replicas.get(key)
                if replica is not None:
                    try:
                        sizes[key] = directory_bytes(replica.path)
                    except OSError:
                        continue
            self._disk, self._disk_at = sizes, now
        return self._disk

    def describe(self):
        """The families without samples. prometheus_client's register() asks for the names
        with describe() when a collector has one, and otherwise runs collect(), which walks every
        copy's directory for its size: 1.3 s of a node's start at 1M rows."""
        return list(self._families([]))

    def collect(self):
        yield from self._families(list(self.host.replicas))

    def _families(self, keys: list[tuple[str, int]]):
        labels = ["tenant", "dataset", "shard"]
        vectors = GaugeMetricFamily("tributary_node_vectors", "Live vectors in a shard copy",
                                    labels=labels)
        deleted = GaugeMetricFamily("tributary_node_soft_deleted_vectors",
                                    "Soft-deleted vectors not yet compacted in a shard copy",
                                    labels=labels)
        pending = GaugeMetricFamily("tributary_node_index_pending_vectors",
                                    "Vectors stored but not yet in the HNSW graph",
                                    labels=labels)
        indexed = CounterMetricFamily("tributary_node_indexed_vectors",
                                      "Vectors added to the HNSW graph since the copy opened",
                                      labels=labels)
        disk = GaugeMetricFamily("tributary_node_shard_disk_bytes",
                                 "Bytes a shard copy takes on disk", labels=labels)
        primary = GaugeMetricFamily("tributary_node_copy_primary",
                                    "1 when this node holds the shard's primary copy",
                                    labels=labels)
        in_sync = GaugeMetricFamily("tributary_node_copy_in_sync",
                                    "1 while this copy is in the shard's in-sync set",
                                    labels=labels)
        last_seq = GaugeMetricFamily("tributary_node_copy_last_seq",
                                     "Last operation sequence number in this copy's log",
                                     labels=labels)
        lag = GaugeMetricFamily("tributary_node_copy_lag_ops",
                                "Operations another copy is behind this primary",
                                labels=labels + ["copy"])
        tenant_vectors = GaugeMetricFamily("tributary_tenant_vectors",
                                           "Live vectors of a tenant's shard copies on this node",
                                           labels=["tenant"])
        state = self.host.catalog.state
        me = self.host.node_id
        sizes = self._disk_bytes(keys) if keys else {}
        per_tenant: dict[str, int] = {}
        for key in keys:
            replica = self.host.replicas.get(key)
            record = state.datasets.get(key[0])
            if replica is None or record is None:
                continue
            shard = key[1]
            values = [record.tenant_id, record.name, str(shard)]
            count = replica.count()
            per_tenant[record.tenant_id] = per_tenant.get(record.tenant_id, 0) + count
            vectors.add_metric(values, count)
            deleted.add_metric(values, replica.soft_deleted_count())
            pending.add_metric(values, replica.pending_count())
            indexed.add_metric(values, getattr(replica, "indexed_vectors_total", 0))
            if key in sizes:
                disk.add_metric(values, sizes[key])
            is_primary = shard < record.shard_count and record.primary_of(shard) == me
            primary.add_metric(values, 1 if is_primary else 0)
            in_sync.add_metric(values, 1 if shard < record.shard_count
                               and me in record.in_sync_of(shard) else 0)
            try:
                head = self.replication.oplog(key[0], shard).last_seq
            except Exception:  # noqa: BLE001 - a log being swapped: skip this scrape's value
                continue
            last_seq.add_metric(values, head)
            if is_primary:
                for copy in record.copies_of(shard):
                    if copy == me:
                        continue
                    progress = self.replication.progress.get((key[0], shard, copy))
                    behind = head - progress.last_seq if progress is not None else head
                    lag.add_metric(values + [copy], max(0, behind))
        for tenant, count in sorted(per_tenant.items()):
            tenant_vectors.add_metric([tenant], count)
        yield from (vectors, deleted, pending, indexed, disk, primary, in_sync, last_seq, lag,
                    tenant_vectors)


def _observe(method: str, seconds: float, code: str | None) -> None:
    name = method.rsplit("/", 1)[-1]
    if name in _SEARCH_METHODS:
        SEARCH_SECONDS.observe(seconds)
    elif name in _WRITE_METHODS:
        WRITE_SECONDS.labels(name).observe(seconds)
    if code is not None:
        RPC_ERRORS.labels(name, code).inc()


class RpcMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Times every unary internal RPC of the node (search and write histograms, errors)."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        inner = handler.unary_unary

        async def unary_unary(request, context):
            started = time.perf_counter()
            code = None
            try:
                return await inner(request, context)
            except BaseException:
                code = context.code() if hasattr(context, "code") else None
                code = getattr(code, "name", None) or "UNKNOWN"
                raise
            finally:
                _observe(method, time.perf_counter() - started, code)
        return grpc.unary_unary_rpc_method_handler(
            unary_unary, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def install(host, replication, listen: str | None) -> None:
    """Registers the node's collector and commit hook; serves /metrics on `listen` when given."""
    from prometheus_client import REGISTRY

    ShardReplica.commit_observer = staticmethod(_observe_commit)
    REGISTRY.register(NodeCollector(host, replication))
    if listen:
        serve_metrics(listen)


def serve_metrics(listen: str) -> None:
    """prometheus_client's HTTP server on `listen` (host:port), in a daemon thread."""
    from prometheus_client import start_http_server

    address, _, port = listen.rpartition(":")
    try:
        start_http_server(int(port), addr=address or "0.0.0.0")
    except OSError as exc:
        raise SystemExit(f"cannot serve metrics on {listen}: {exc.strerror}") from None
