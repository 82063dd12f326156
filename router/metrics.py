"""Prometheus metrics of the router (prometheus-client)."""

from prometheus_client import Counter as _Counter, Histogram as _Histogram


def _remembering(metric_class):
    """`metric_class` whose `labels(...)` keeps each child in a plain dict by its label values:
    prometheus-client's own look-up takes a lock and re-validates the values on every call,
    about 1% of a router's CPU at full search load (a per-shard-call histogram and the request
    counters). remove, remove_by_labels and clear forget the remembered children."""

    class Remembering(metric_class):
        def labels(self, *values, **named):
            if named or not values:
                return super().labels(*values, **named)
            remembered = self.__dict__.get("_remembered")
            if remembered is None:
                remembered = self._remembered = {}
            try:
                child = remembered.get(values)
            except TypeError:   # an unhashable value: prometheus-client decides
                return super().labels(*values)
            if child is None:
                child = remembered[values] = super().labels(*values)
            return child

        def remove(self, *values):
            self.__dict__.pop("_remembered", None)
            super().remove(*values)

        def remove_by_labels(self, labels):
            self.__dict__.pop("_remembered", None)
            super().remove_by_labels(labels)

        def clear(self):
            self.__dict__.pop("_remembered", None)
            super().clear()

    Remembering.__name__ = Remembering.__qualname__ = metric_class.__name__
    return Remembering


Counter = _remembering(_Counter)
Histogram = _remembering(_Histogram)

REQUESTS = Counter("tributary_router_requests_total", "Requests served by the router",
                   ["protocol", "route", "status"])
REQUEST_LATENCY = Histogram("tributary_router_request_seconds", "Router request latency",
                            ["protocol", "route"])

TXNS = Counter("tributary_txns_total", "Multi-shard write transactions by outcome "
               "(started, committed, aborted, in_doubt, deduplicated)", ["outcome"])
TXN_LATENCY = Histogram("tributary_txn_phase_seconds", "2PC phase latency", ["phase"],
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


class ReplicationCollector:
    """Replication gauges computed from the router's cached catalog at scrape time (no node is
    asked): shards, under-replicated shards (fewer in-sync copies than their factor), and each
    node's copies and primaries."""

    def __init__(self, state_of):
        self._state_of = state_of   # () -> consensus.records.MetaState

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        state = self._state_of()
        shards = GaugeMetricFamily("tributary_shards", "Shards in the catalog")
        under = GaugeMetricFamily("tributary_shards_under_replicated",
                                  "Shards with fewer in-sync copies than their replication "
                                  "factor")
        copies = GaugeMetricFamily("tributary_node_copies", "Shard copies a node holds",
                                   labels=["node"])
        primaries = GaugeMetricFamily("tributary_node_primaries",
                                      "Shards whose primary copy a node holds", labels=["node"])
        held = {n: 0 for n in state.nodes}
        led = {n: 0 for n in state.nodes}
        total = short = 0
        for record in state.datasets.values():
            for shard in range(record.shard_count):
                total += 1
                short += len(record.in_sync_of(shard)) < record.replication_factor
                led[record.primary_of(shard)] = led.get(record.primary_of(shard), 0) + 1
                for node in record.copies_of(shard):
                    held[node] = held.get(node, 0) + 1
        shards.add_metric([], total)
        under.add_metric([], short)
        for node in sorted(held):
            copies.add_metric([node], held[node])
            primaries.add_metric([node], led.get(node, 0))
        yield from (shards, under, copies, primaries)


_collector: ReplicationCollector | None = None


def watch_catalog(state_of) -> None:
    """Registers the replication gauges over `state_of()` (once per process; a later call only
    changes where the state comes from)."""
    global _collector
    from prometheus_client import REGISTRY
    if _collector is None:
        _collector = ReplicationCollector(state_of)
        REGISTRY.register(_collector)
    else:
        _collector._state_of = state_of


# ---- per-shard calls and tenants (issue 15) ------------------------------------------------------
SHARD_CALL_SECONDS = Histogram("tributary_router_shard_call_seconds",
                               "Latency of one shard call from the router (retries and hedges "
                               "included), by call kind (read or write)", ["call"],
                               buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                        0.25, 0.5, 1, 2.5, 5, 10))
SHARD_CALL_ERRORS = Counter("tributary_router_shard_call_errors_total",
                            "Shard calls that failed, by call kind, error type and shard",
                            ["call", "error", "tenant", "dataset", "shard"])


class TenantUsageCollector:
    """Per tenant, from this router's last usage reading (router/quotas.py; a tenant's usage is
    read when a quota needs it): vectors and bytes stored, and each quota's utilisation."""

    def __init__(self, enforcer):
        self._enforcer = enforcer   # router.quotas.QuotaEnforcer

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        vectors = GaugeMetricFamily("tributary_tenant_vectors_stored",
                                    "Vectors a tenant stores (last reading of this router)",
                                    labels=["tenant"])
        stored = GaugeMetricFamily("tributary_tenant_storage_bytes",
                                   "Bytes a tenant stores (last reading of this router)",
                                   labels=["tenant"])
        utilization = GaugeMetricFamily("tributary_tenant_quota_utilization_ratio",
                                        "Usage over limit of a tenant's quota (1 = full)",
                                        labels=["tenant", "quota"])
        state = self._enforcer.core.catalog.state
        for tenant, usage in sorted(self._enforcer._usage.items()):
            if usage.read_at < 0:
                continue
            vectors.add_metric([tenant], usage.vectors)
            stored.add_metric([tenant], usage.bytes)
            record = state.tenants.get(tenant)
            quotas = dict(record.quotas) if record is not None else {}
            for quota, used in (("max_vectors", usage.vectors),
                                ("max_storage_bytes", usage.bytes)):
                if quotas.get(quota):
                    utilization.add_metric([tenant, quota], used / quotas[quota])
        yield from (vectors, stored, utilization)


def watch_tenants(enforcer) -> None:
    """Registers the per-tenant usage gauges over `enforcer` (once per process)."""
    from prometheus_client import REGISTRY
    REGISTRY.register(TenantUsageCollector(enforcer))
