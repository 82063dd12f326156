"""Tenant statuses and quotas, enforced by each router before a request reaches the core.

Statuses (the tenant record in the meta group): `suspended` and `pending_deletion` refuse every
data-plane request (403), `read_only` refuses writes (403). They apply whatever the credential
(an operator fixes a tenant through the admin API, which statuses do not block).

Quotas (absent = unlimited; seed 002's VecStore set), each a 429 ResourceExhausted with a
Retry-After:
- max_batch_size: vectors or ids in one write call.
- max_results_per_query: a search's top_k.
- max_dimension: a new dataset's dimensions.
- max_vectors / max_storage_bytes: the tenant's vectors and bytes after an insert. Usage is the
  sum of the nodes' per-shard Stats, re-read at most every `tenant_usage_cache_ms`; between
  reads a router adds what it inserted and reserves what it has in flight, so one router never
  overshoots. Bound across R routers: each may admit up to the remaining headroom within one
  usage period, so the overshoot is at most what R-1 other routers insert in
  `tenant_usage_cache_ms`. Bytes of an insert are estimated (4 bytes per value plus strings).
- max_requests_per_second: a token bucket per (router, tenant) filled at rate/N with capacity
  max(1, rate/N), N = live routers reported by the meta leader (RouterHeartbeat, soft state).
  With N exact, the routers together admit at most rate*T + max(N, rate) requests in any window
  of T seconds: rate*T from the refills plus the initial buckets. A client that talks to one
  router gets only rate/N (the safe side). When a router joins or dies, the others learn the new
  N within one heartbeat (1 s) plus, for a death, the liveness timeout (3 s); a new meta leader
  answers only after it has heard every live router (`settled`), and until then routers keep
  their previous N.
- max_concurrent_queries: searches in flight per (router, tenant), capped at max(1, q // N) on
  each router; together at most max(q, N).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from consensus import tenancy
from proto import deeplake_service_pb2 as pb
from tributary import errors, limits
from tributary.periodic import Periodic

log = logging.getLogger("tributary.router.quotas")

TENANT_REQUESTS = Counter("tributary_tenant_requests_total",
                          "Data-plane requests per tenant by outcome (this router)",
                          ["tenant", "outcome"])

class RouterCount:
    """How many routers are live, from the meta leader's heartbeat answers."""

    def __init__(self, meta, router_id: str | None = None):
        self.meta = meta
        self.router_id = router_id or uuid.uuid4().hex
        self.count = 1
        self._beats = Periodic(limits.router_heartbeat_interval_ms / 1000, self.beat,
                               "router heartbeat")

    async def beat(self) -> None:
        answer = await self.meta.router_heartbeat(self.router_id)
        if answer.settled:
            self.count = max(1, int(answer.live_routers))

    def start(self) -> None:
        """Beats every router_heartbeat_interval_ms in the background."""
        self._beats.start()

    async def stop(self) -> None:
        """Stops the heartbeats and waits until they have ended."""
        await self._beats.stop()


@dataclass
class TokenBucket:
    tokens: float = -1.0
    updated: float = 0.0

    def take(self, rate: float, capacity: float, now: float) -> float:
        """0 when a token was taken; otherwise the seconds until one will be there."""
        if self.tokens < 0:
            self.tokens = capacity
        else:
            self.tokens = min(capacity, self.tokens + (now - self.updated) * rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        if rate <= 0:
            return 60.0
        return (1.0 - self.tokens) / rate


@dataclass
class Usage:
    vectors: int = 0
    bytes: int = 0
    read_at: float = -1e18
    inflight_vectors: int = 0
    inflight_bytes: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class TenantCounters:
    requests: int = 0
    queries: int = 0
    writes: int = 0
    throttled: int = 0
    denied: int = 0
    active_queries: int = 0


def estimate_bytes(vectors, dimensions: int = 0) -> int:
    """Bytes an insert adds. A vector without values counts `dimensions` of them: the REST
    adapter hands the core the values of plain vectors as a separate matrix."""
    total = 0
    for v in vectors:
        total += 4 * (len(v.values) or dimensions) + len(v.content.encode("utf-8")) + \
            len(v.id) + len(v.document_id) + \
            sum(len(k) + len(x) for k, x in v.metadata.items()) + 64
    return total


class Slot:
    """One admitted request: releases its concurrency slot and usage reservation when done."""

    def __init__(self, enforcer: "QuotaEnforcer", tenant: str, query: bool = False,
                 vectors: int = 0, nbytes: int = 0):
        self.enforcer, self.tenant, self.query = enforcer, tenant, query
        self.vectors, self.nbytes = vectors, nbytes
        self._released = False

    def succeeded(self, result: Any) -> None:
        if self.vectors or self.nbytes:
            usage = self.enforcer.usage_of(self.tenant)
            inserted = getattr(result, "inserted_count", None)
            if inserted is None:
                inserted = 1 if getattr(result, "success", False) else 0
            usage.vectors += int(inserted)
            usage.bytes += self.nbytes

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        counters = self.enforcer.counters_of(self.tenant)
        if self.query:
            counters.active_queries -= 1
        if self.vectors or self.nbytes:
            usage = self.enforcer.usage_of(self.tenant)
            usage.inflight_vectors -= self.vectors
            usage.inflight_bytes -= self.nbytes


def _exhausted(tenant: str, message: str, retry_after_s: float,
               counters: TenantCounters) -> errors.ResourceExhausted:
    counters.throttled += 1
    TENANT_REQUESTS.labels(tenant, "throttled").inc()
    return errors.ResourceExhausted(message, retry_after_s=math.ceil(retry_after_s))


class QuotaEnforcer:
    def __init__(self, core, router_count: RouterCount | None = None):
        self.core = core
        self.router_count = router_count
        self._buckets: dict[str, TokenBucket] = {}
        self._usage: dict[str, Usage] = {}
        self._counters: dict[str, TenantCounters] = {}

    @property
    def routers(self) -> int:
        return self.router_count.count if self.router_count is not None else 1

    def counters_of(self, tenant: str) -> TenantCounters:
        return self._counters.setdefault(tenant, TenantCounters())

    def usage_of(self, tenant: str) -> Usage:
        return self._usage.setdefault(tenant, Usage())

    def tenant_record(self, tenant: str):
        return self.core.catalog.state.tenants.get(tenant)

    # -- the checks --

    def check_status(self, tenant: str, write: bool) -> None:
        record = self.tenant_record(tenant)
        status = record.status if record is not None else tenancy.ACTIVE
        refused = None
        if status in (tenancy.SUSPENDED, tenancy.PENDING_DELETION):
            refused = f"tenant '{tenant}' is {status.replace('_', ' ')}: every request is refused"
        elif status == tenancy.READ_ONLY and write:
            refused = f"tenant '{tenant}' is read-only: writes are refused"
        if refused:
            self.counters_of(tenant).denied += 1
            TENANT_REQUESTS.labels(tenant, "denied").inc()
            raise errors.PermissionDenied(refused)

    async def admit(self, tenant: str, op, request) -> Slot:
        """Checks status and quotas in order (status, rate, sizes, volume, concurrency) for
        `request`, whose costs its descriptor `op` (router/operations.py) states; raises
        PermissionDenied or ResourceExhausted, or returns the request's Slot."""
        self.check_status(tenant, op.writes)
        record = self.tenant_record(tenant)
        quotas = dict(record.quotas) if record is not None else {}
        counters = self.counters_of(tenant)
        counters.requests += 1
        counters.queries += int(op.query)
        counters.writes += int(op.writes)
        routers = self.routers

        rate = quotas.get("max_requests_per_second")
        if rate is not None:
            share = rate / routers
            wait = self._buckets.setdefault(tenant, TokenBucket()).take(
                share, max(1.0, share), time.monotonic())
            if wait > 0:
                raise _exhausted(tenant, f"Rate limit exceeded: {rate:g} requests/second "
                                         f"(this router's share: {share:g} over {routers} "
                                         f"router(s))", wait, counters)

        batch = op.batch(request)
        limit = quotas.get("max_batch_size")
        if limit is not None and batch > limit:
            raise _exhausted(tenant, f"Batch size quota exceeded: {batch} / {limit} vectors "
                                     "per request", 1, counters)
        limit = quotas.get("max_dimension")
        if op.sets_dimensions and limit is not None and request.dimensions > limit:
            raise _exhausted(tenant, f"Dimension quota exceeded: {request.dimensions} / "
                                     f"{limit} dimensions", 1, counters)
        limit = quotas.get("max_results_per_query")
        if op.query and limit is not None:
            top_k = request.options.top_k or 10
            if top_k > limit:
                raise _exhausted(tenant, f"Result quota exceeded: top_k {top_k} / {limit} "
                                         "results per query", 1, counters)

        vectors = nbytes = 0
        max_vectors = quotas.get("max_vectors")
        max_bytes = quotas.get("max_storage_bytes")
        if op.adds_vectors and (max_vectors is not None or max_bytes is not None):
            batch_vectors = list(op.vectors(request))
            dataset = self.core.catalog.state.dataset_by_name(tenant, request.dataset_id)
            vectors = len(batch_vectors)
            nbytes = estimate_bytes(batch_vectors, dataset.dimensions if dataset else 0)
            usage = await self.usage(tenant)
            if max_vectors is not None and \
                    usage.vectors + usage.inflight_vectors + vectors > max_vectors:
                raise _exhausted(tenant, f"Vector quota exceeded: {usage.vectors} / "
                                         f"{max_vectors} vectors (this request adds {vectors})",
                                 60, counters)
            if max_bytes is not None and usage.bytes + usage.inflight_bytes + nbytes > max_bytes:
                raise _exhausted(tenant, f"Storage quota exceeded: "
                                         f"{usage.bytes + usage.inflight_bytes + nbytes} / "
                                         f"{max_bytes} bytes", 60, counters)
            usage.inflight_vectors += vectors
            usage.inflight_bytes += nbytes

        query_slot = False
        limit = quotas.get("max_concurrent_queries")
        if op.query and limit is not None:
            share = 0 if limit == 0 else max(1, int(limit) // routers)
            if counters.active_queries >= share:
                slot = Slot(self, tenant, vectors=vectors, nbytes=nbytes)
                slot.release()
                raise _exhausted(tenant, f"Concurrent query limit exceeded: "
                                         f"{counters.active_queries} / {share} on this router "
                                         f"(max_concurrent_queries={limit} over {routers} "
                                         f"router(s))", 1, counters)
            query_slot = True
        if op.query:
            counters.active_queries += int(query_slot)
        TENANT_REQUESTS.labels(tenant, "admitted").inc()
        return Slot(self, tenant, query=query_slot, vectors=vectors, nbytes=nbytes)

    async def usage(self, tenant: str, max_age_ms: int | None = None) -> Usage:
        """The tenant's vectors and bytes, re-read from the nodes when older than max_age_ms."""
        usage = self.usage_of(tenant)
        max_age = (limits.tenant_usage_cache_ms if max_age_ms is None else max_age_ms) / 1000
        if time.monotonic() - usage.read_at < max_age:
            return usage
        async with usage.lock:
            if time.monotonic() - usage.read_at < max_age:
                return usage
            started = time.monotonic()
            try:
                vectors, nbytes = await self._read_usage(tenant)
            except errors.TributaryError:
                if usage.read_at < 0:
                    raise
                log.warning("tenant %s usage not refreshed; using the last reading", tenant)
                return usage
            usage.vectors, usage.bytes, usage.read_at = vectors, nbytes, started
        return usage

    async def _read_usage(self, tenant: str) -> tuple[int, int]:
        records = self.core.catalog.state.datasets_of(tenant)
        answers = await asyncio.gather(*(self.core.get_dataset_stats(pb.GetDatasetStatsRequest(
            dataset_id=r.name, tenant_id=tenant)) for r in records), return_exceptions=True)
        vectors = nbytes = 0
        for answer in answers:
            if isinstance(answer, errors.NotFound):
                continue  # deleted meanwhile
            if isinstance(answer, BaseException):
                raise answer
            vectors += answer.vector_count
            nbytes += answer.storage_size
        return vectors, nbytes

    async def tenant_stats(self, tenant: str) -> dict:
        """Usage against quotas, plus this router's request counters for the tenant."""
        record = self.tenant_record(tenant)
        quotas = dict(record.quotas) if record is not None else {}
        usage = await self.usage(tenant, max_age_ms=0)
        counters = self.counters_of(tenant)
        utilization = {}
        if quotas.get("max_vectors"):
            utilization["max_vectors"] = round(usage.vectors / quotas["max_vectors"], 4)
        if quotas.get("max_storage_bytes"):
            utilization["max_storage_bytes"] = round(usage.bytes / quotas["max_storage_bytes"],
                                                     4)
        return {
            "tenant_id": tenant,
            "status": record.status if record is not None else tenancy.ACTIVE,
            "dataset_count": len(self.core.catalog.state.datasets_of(tenant)),
            "vector_count": usage.vectors,
            "storage_bytes": usage.bytes,
            "quotas": quotas,
            "quota_utilization": utilization,
            "live_routers": self.routers,
            "this_router": {"total_requests": counters.requests,
                            "total_queries": counters.queries,
                            "total_writes": counters.writes,
                            "throttled": counters.throttled, "denied": counters.denied,
                            "active_queries": counters.active_queries},
        }
