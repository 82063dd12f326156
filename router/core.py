"""The router core: every public operation, called by both the REST and the gRPC adapters.

Each method takes and returns deeplake.v1 messages and raises TributaryError subclasses. All
validation happens here, before the first write leaves the router, so bad input changes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid as uuidlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Awaitable, Callable, TypeVar

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from consensus import commands
from consensus.client import CatalogCache, MetaClient
from consensus.placement import plan_copies
from consensus.state import DEFAULT_TENANT, DatasetRecord
from proto import deeplake_service_pb2 as pb
from proto import node_pb2
from router.reads import ReadBalancer
from router.routing import merge_top_k, shard_of
from shard import filter_parse
from shard.records import UPDATABLE_FIELDS
from router.shard_client import ShardClient
from router.txn import Coordinator, ShardBatch
from router import versions
from router import metrics as router_metrics
from tributary import __version__, errors, limits, tracing, validation

log = logging.getLogger("tributary.router")
T = TypeVar("T")
# The read child of the per-shard call latency, looked up once (RouterCore._scatter).
_SHARD_READ_SECONDS = router_metrics.SHARD_CALL_SECONDS.labels("read")


def _timestamp(ms: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(int(ms))
    return ts


def _now_ms() -> int:
    return int(time.time() * 1000)


def _encode_page_token(shard: int, after_label: int) -> str:
    return base64.urlsafe_b64encode(f"{shard}:{after_label}".encode()).decode()


def _decode_page_token(token: str, shard_count: int) -> tuple[int, int]:
    if not token:
        return 0, -1
    try:
        shard, after = base64.urlsafe_b64decode(token.encode()).decode().split(":")
        shard_no, after_label = int(shard), int(after)
    except (ValueError, UnicodeDecodeError):
        raise errors.InvalidArgument("page_token is not a token this API returned") from None
    if not 0 <= shard_no < shard_count or after_label < -1:
        raise errors.InvalidArgument("page_token is not a token this API returned")
    return shard_no, after_label


# Dataset fields fixed at creation. An update may repeat their current values (a REST client may
# send back the dataset it read) but never change them.
IMMUTABLE_DATASET_FIELDS = ("id", "name", "dimensions", "metric_type", "index_type",
                            "shard_count", "storage_location", "replication_factor")


def immutable_field_conflicts(record: DatasetRecord, requested: dict) -> list[str]:
    """What an update asking for `requested` ({field: value}) would change that cannot change."""
    current = {"id": record.name, "name": record.name, "dimensions": record.dimensions,
               "metric_type": record.metric_type, "index_type": record.index_type,
               "shard_count": record.shard_count, "storage_location": f"shards/{record.uuid}",
               "replication_factor": record.replication_factor}
    problems = []
    for field, value in requested.items():
        if field not in current:
            problems.append(f"'{field}' is not a dataset field an update can name")
        elif isinstance(value, bool) or value != current[field]:
            problems.append(f"{field} cannot be changed (dataset '{record.name}' has "
                            f"{current[field]!r}, the request asks for {value!r})")
    if problems:
        problems.append("only description and metadata can be updated; create a new dataset "
                        "to change the others")
    return problems


def check_same_shape(records: list[DatasetRecord]) -> None:
    """Datasets searched together must share dimensions (one query vector) and metric (scores
    that compare). Raises InvalidArgument listing every dataset's value otherwise."""
    for attribute, why in (("dimensions", "one query vector must fit every dataset"),
                           ("metric_type", "scores compare only under one metric")):
        if len({getattr(r, attribute) for r in records}) > 1:
            listing = ", ".join(f"'{r.name}': {getattr(r, attribute)}" for r in records)
            raise errors.InvalidArgument(
                f"a multi-dataset search needs datasets of equal {attribute} ({why}); "
                f"got {listing}")


def merge_dataset_results(per_dataset: list[tuple[str, list[pb.SearchResult]]], top_k: int,
                          deduplicate: bool = False) -> list[pb.SearchResult]:
    """Merges each dataset's ranked results into one top_k list: higher score first, ties broken
    by (dataset, vector id). With deduplicate, a content_hash seen in a better hit of another
    dataset is dropped (each dataset's own list is already deduplicated). Ranks restart at 1."""
    everything = sum(len(results) for _, results in per_dataset)
    merged = merge_top_k(([(r.score, (name, r.vector.id), r) for r in results]
                          for name, results in per_dataset), everything)
    out: list[pb.SearchResult] = []
    seen_hashes: set[str] = set()
    for _, (name, _id), result in merged:
        if len(out) == top_k:
            break
        if deduplicate and result.vector.content_hash:
            if result.vector.content_hash in seen_hashes:
                continue
            seen_hashes.add(result.vector.content_hash)
        hit = pb.SearchResult()
        hit.CopyFrom(result)
        hit.vector.dataset_id = name
        hit.rank = len(out) + 1
        out.append(hit)
    return out


def shard_batches(vectors: list[pb.Vector], matrix: np.ndarray, shard_count: int
                  ) -> dict[int, ShardBatch]:
    """Splits validated vectors (without values) and their value matrix by shard; each shard's
    rows are packed once, in its vectors' order."""
    rows: dict[int, list[int]] = defaultdict(list)
    batches: dict[int, ShardBatch] = defaultdict(ShardBatch)
    for position, vector in enumerate(vectors):
        shard = shard_of(vector.id, shard_count)
        rows[shard].append(position)
        batches[shard].upserts.append(vector)
    for shard, batch in batches.items():
        batch.values = validation.pack_values(matrix[rows[shard]])
    return dict(batches)


def packed_rows(request: pb.InsertVectorsRequest) -> np.ndarray:
    """The (vectors, d) float32 rows of an InsertVectorsRequest's `packed_values` (one copy-free
    view; as_matrix then checks them like the repeated form, dimension included). Raises
    InvalidArgument when the vectors carry values too, or the bytes are not whole rows."""
    packed, count = request.packed_values, len(request.vectors)
    if any(len(v.values) for v in request.vectors):
        raise errors.InvalidArgument("values are given both in packed_values and per vector; "
                                     "send one form")
    row_bytes = validation.PACKED_DTYPE.itemsize * count
    if count == 0 or len(packed) % row_bytes:
        raise errors.InvalidArgument(
            f"packed_values holds {len(packed)} bytes, which is not {count} vectors of "
            "float32 values")
    return np.frombuffer(packed, dtype=validation.PACKED_DTYPE).reshape(count, -1)


def _value_rows(vectors: list[pb.Vector], dimensions: int):
    """The vectors' repeated `values` as rows for as_matrix: one (n, dimensions) float64 matrix
    filled row by row when every row has the dataset's dimension (about 3x cheaper than numpy
    reading a list of protobuf containers; float32 values widen exactly), else the containers
    themselves, so that as_matrix words the error for the first bad row."""
    rows = [v.values for v in vectors]
    if not rows or any(len(r) != dimensions for r in rows):
        return rows
    matrix = np.empty((len(rows), dimensions), np.float64)
    for i, row in enumerate(rows):
        matrix[i] = row
    return matrix


def dataset_stats_map(record: DatasetRecord,
                      per_shard: list[node_pb2.ShardStatsResponse]) -> dict[str, str]:
    """The `stats` map of GetDatasetStats: placement and per-shard counts, as strings."""
    stats = {"shard_count": str(record.shard_count), "placement_epoch": str(record.epoch),
             "tenant_id": record.tenant_id, "dataset_uuid": record.uuid,
             "active_vectors": str(sum(a.vector_count for a in per_shard)),
             "deleted_vectors": str(sum(a.soft_deleted_count for a in per_shard)),
             "pending_index_vectors": str(sum(a.pending_index_count for a in per_shard))}
    for shard, (node_id, answer) in enumerate(zip(record.placement, per_shard)):
        stats[f"shard.{shard}.vectors"] = str(answer.vector_count)
        stats[f"shard.{shard}.deleted"] = str(answer.soft_deleted_count)
        stats[f"shard.{shard}.storage_bytes"] = str(answer.storage_bytes)
        stats[f"shard.{shard}.node"] = node_id
    return stats


# Vector fields that belong to the store or to the request's path. A REST body may carry them (a
# vector read back from GET): they are ignored there, and a body id must match the path. An
# update mask may not name them.
VECTOR_OUTPUT_FIELDS = ("id", "dataset_id", "tenant_id", "dimensions", "created_at",
                        "updated_at")
_VECTOR_FIELD_OF_JSON_NAME = {field.json_name: field.name
                              for field in pb.Vector.DESCRIPTOR.fields}


def resolve_update_paths(mask: list[str] | None, vector: pb.Vector,
                         present: list[str] | None = None) -> frozenset[str]:
    """The Vector fields an update changes (AIP-134). `mask` is the explicit update mask when the
    caller sent one (an empty list counts as none); `present`, the fields a REST body named
    (each may be its JSON name, as the body parser accepts both). With neither, the populated
    fields of `vector` (all a proto3 message can say). "*" in a mask names every updatable
    field. Raises InvalidArgument naming a mask path that is unknown or not updatable, and when
    the update would clear values (a vector always has values)."""
    updatable = ", ".join(UPDATABLE_FIELDS)
    if mask:
        paths: set[str] = set()
        for path in mask:
            if path == "*":
                paths.update(UPDATABLE_FIELDS)
            elif path in UPDATABLE_FIELDS:
                paths.add(path)
            elif path in VECTOR_OUTPUT_FIELDS:
                raise errors.InvalidArgument(
                    f"update_mask names '{path}', which an update cannot change; updatable "
                    f"fields: {updatable}")
            else:
                raise errors.InvalidArgument(
                    f"update_mask names '{path}', which is not a vector field; updatable "
                    f"fields: {updatable} (or '*' for all of them)")
    elif present is not None:
        names = {_VECTOR_FIELD_OF_JSON_NAME.get(name, name) for name in present}
        unknown = sorted(names - set(UPDATABLE_FIELDS) - set(VECTOR_OUTPUT_FIELDS))
        if unknown:
            raise errors.InvalidArgument(f"'{unknown[0]}' is not a vector field; updatable "
                                         f"fields: {updatable}")
        paths = names - set(VECTOR_OUTPUT_FIELDS)
    else:
        paths = {field.name for field, _ in vector.ListFields()} - set(VECTOR_OUTPUT_FIELDS)
    if "values" in paths and not vector.values:
        raise errors.InvalidArgument(
            "values cannot be cleared (a vector always has values): send new values, or leave "
            "values out of the update to keep the stored ones")
    return frozenset(paths)


def fuse_rankings(vector_hits: list[tuple[str, float]], text_hits: list[tuple[str, float]],
                  fusion: str, alpha: float, rrf_k: int) -> list[tuple[str, float, dict]]:
    """Fuses two ranked lists of (id, score), best first. Returns (id, score, explanation)
    sorted by fused score, ties broken by id. Pure, so it is tested without a cluster."""
    parts: dict[str, dict] = {}
    for name, hits in (("vector", vector_hits), ("text", text_hits)):
        scores = [s for _, s in hits]
        low, high = (min(scores), max(scores)) if scores else (0.0, 0.0)
        for rank, (vector_id, score) in enumerate(hits, start=1):
            entry = parts.setdefault(vector_id, {})
            entry[f"{name}_rank"] = rank
            entry[f"{name}_score"] = score
            entry[f"{name}_normalized"] = 1.0 if high == low else (score - low) / (high - low)
    fused = []
    for vector_id, entry in parts.items():
        if fusion == "rrf":
            score = sum(1.0 / (rrf_k + entry[f"{n}_rank"]) for n in ("vector", "text")
                        if f"{n}_rank" in entry)
        else:
            score = (alpha * entry.get("vector_normalized", 0.0)
                     + (1 - alpha) * entry.get("text_normalized", 0.0))
        explanation = {k: (f"{v:.6g}" if isinstance(v, float) else str(v))
                       for k, v in sorted(entry.items())}
        explanation["fusion"] = fusion if fusion == "rrf" else f"alpha={alpha:g}"
        if fusion == "rrf":
            explanation["rrf_k"] = str(rrf_k)
        else:
            explanation["alpha"] = f"{alpha:g}"
        fused.append((vector_id, float(score), explanation))
    fused.sort(key=lambda item: (-item[1], item[0]))
    return fused


def _shard_hits(response: node_pb2.ShardSearchResponse) -> list:
    """A shard answer's hits as ShardHit messages, whichever form it came in (a merge of
    packed and per-hit answers, e.g. while nodes of two releases serve one dataset)."""
    if response.hits or not response.packed.ids:
        return list(response.hits)
    packed = response.packed
    count = len(packed.ids)
    scores = np.frombuffer(packed.scores, np.float32).tolist()
    distances = np.frombuffer(packed.distances, np.float32).tolist()
    created = np.frombuffer(packed.created_at_ms, np.int64).tolist()
    updated = np.frombuffer(packed.updated_at_ms, np.int64).tolist()
    hits = []
    for i in range(count):
        hit = node_pb2.ShardHit(score=scores[i], distance=distances[i])
        if len(packed.fields):
            hit.vector.CopyFrom(packed.fields[i])
        hit.vector.id = packed.ids[i]
        hit.vector.created_at.seconds, rest = divmod(created[i], 1000)
        hit.vector.created_at.nanos = rest * 1_000_000
        hit.vector.updated_at.seconds, rest = divmod(updated[i], 1000)
        hit.vector.updated_at.nanos = rest * 1_000_000
        hits.append(hit)
    return hits


@dataclass(frozen=True)
class _SearchPlan:
    top_k: int
    shard_k: int
    # ShardSearchRequest fields every shard gets (all but `shard`).
    fields: dict
    # A search at a version (router/versions.py): read from the copies that carry it.
    version: object = None


def shard_health(state, live: set[str]) -> tuple[list[str], list[str]]:
    """(shards with no live in-sync copy, shards with fewer live in-sync copies than their
    replication factor), each named "dataset/shard"."""
    unserved, under = [], []
    for record in sorted(state.datasets.values(), key=lambda r: (r.tenant_id, r.name)):
        for shard in range(record.shard_count):
            serving = [n for n in record.in_sync_of(shard) if n in live]
            name = f"{record.name}/{shard}"
            if not serving:
                unserved.append(name)
            elif len(serving) < record.replication_factor:
                under.append(name)
    return unserved, under


class RouterCore:
    def __init__(self, meta: MetaClient, catalog: CatalogCache, shards: ShardClient,
                 min_nodes: int = 1):
        self.meta = meta
        self.catalog = catalog
        self.shards = shards
        self.min_nodes = min_nodes
        self.coordinator = Coordinator(meta, catalog, shards, self._on_shard_for)
        self.reads = ReadBalancer()
        self.started_monotonic = time.monotonic()
        self._by_name: dict[tuple[str, str], DatasetRecord] = {}
        self._by_name_of: dict | None = None

    # ---- catalog helpers -----------------------------------------------------------------------

    @staticmethod
    def tenant_of(tenant_id: str) -> str:
        tenant = tenant_id or DEFAULT_TENANT
        validation.check_name(tenant, "tenant id")
        return tenant

    def _find_dataset(self, tenant: str, name: str) -> DatasetRecord | None:
        """The cached catalog's dataset named (tenant, name), or None. MetaState.dataset_by_name
        scans every dataset, and a search looks its dataset up once per shard, so this keeps an
        index, rebuilt when the catalog's datasets change (each change is a new dict)."""
        datasets = self.catalog.state.datasets
        if datasets is not self._by_name_of:
            self._by_name = {(r.tenant_id, r.name): r for r in datasets.values()}
            self._by_name_of = datasets
        return self._by_name.get((tenant, name))

    async def dataset(self, tenant_id: str, name: str) -> DatasetRecord:
        tenant = self.tenant_of(tenant_id)
        validation.check_name(name)
        record = self._find_dataset(tenant, name)
        if record is None:
            # It may have been created through another router: read the leader's state.
            await self.catalog.refresh(linearizable=True)
            record = self._find_dataset(tenant, name)
        if record is None:
            raise errors.NotFound(f"dataset '{name}' not found")
        return record

    def node_address(self, node_id: str) -> str:
        node = self.catalog.state.nodes.get(node_id)
        if node is None:
            raise errors.Unavailable(f"node '{node_id}' is not registered")
        return node.address

    def shard_ref(self, record: DatasetRecord, shard: int) -> node_pb2.ShardRef:
        return node_pb2.ShardRef(dataset_uuid=record.uuid, shard=shard, epoch=record.epoch)

    async def on_shard(self, tenant_id: str, name: str, shard: int,
                       call: Callable[[DatasetRecord, str, node_pb2.ShardRef], Awaitable[T]],
                       read: bool = False, follow_failover: bool = True,
                       planned: DatasetRecord | None = None) -> T:
        """Runs one node call with the current placement, refreshing it on StaleEpoch. A write
        goes to the shard's primary, and moves to the new one if the catalog names another
        primary while it waits (a frozen primary that was failed over costs the write about
        one catalog refresh, not the node deadline; 2PC calls pass follow_failover=False: a
        txn's prepared state lives on the participant it prepared on); a read (read=True) goes
        to one of its in-sync copies, hedged against a copy that hangs (router/reads.py).
        Each shard call is one span and one observation of the per-shard call metrics.
        A call `planned` on a record's shard count (which ids go to which shard) raises
        ShardCountChanged, without calling, once the count is another: its caller plans again
        (see replanned)."""
        kind = "read" if read else "write"
        started = time.perf_counter()
        with tracing.span("shard.call", {"tributary.dataset": name, "tributary.shard": shard,
                                         "tributary.call": kind}) as current:
            try:
                return await self._on_shard(tenant_id, name, shard, call, read,
                                            follow_failover, planned)
            except errors.TributaryError as exc:
                router_metrics.SHARD_CALL_ERRORS.labels(kind, type(exc).__name__,
                                                        tenant_id or DEFAULT_TENANT, name,
                                                        str(shard)).inc()
                tracing.mark_error(current, exc)
                raise
            finally:
                router_metrics.SHARD_CALL_SECONDS.labels(kind).observe(
                    time.perf_counter() - started)

    async def _on_shard(self, tenant_id: str, name: str, shard: int, call, read: bool,
                        follow_failover: bool, planned: DatasetRecord | None):
        for attempt in range(limits.router_stale_epoch_retries_max + 1):
            # The caller resolved (and so validated) the name already: the first attempt reads
            # the cached catalog directly; any miss or retry goes through dataset() again.
            record = (self._find_dataset(tenant_id or DEFAULT_TENANT, name) if attempt == 0
                      else None) or await self.dataset(tenant_id, name)
            if planned is not None and record.uuid == planned.uuid and \
                    record.shard_count != planned.shard_count:
                # Sent anyway, the request would carry the new epoch on the old plan: rows of
                # the other half to a split's parent (its primary refuses them) or a read of
                # a moved id from the shard that no longer answers for it.
                raise errors.ShardCountChanged(
                    f"dataset '{name}' has {record.shard_count} shards now, the request was "
                    f"planned on {planned.shard_count}")
            ref = self.shard_ref(record, shard)
            try:
                if read:
                    return await self.reads.read(
                        record.in_sync_of(shard),
                        lambda node: call(record, self.node_address(node), ref))
                if not follow_failover:
                    return await call(record, self.node_address(record.primary_of(shard)), ref)
                return await self._on_primary(record, shard, call, ref)
            except errors.StaleEpoch:
                if attempt == limits.router_stale_epoch_retries_max:
                    raise
                await self.catalog.refresh(linearizable=True)
        raise AssertionError("unreachable")

    async def _on_primary(self, record: DatasetRecord, shard: int, call, ref) -> T:
        """call() on the shard's primary; StaleEpoch (so on_shard retries on the new placement)
        when the catalog, refreshed meanwhile, names another primary before it answers. The
        abandoned call cannot be acknowledged by the deposed primary: its copies refuse its
        term, and so does the meta group."""
        primary = record.primary_of(shard)
        task = asyncio.ensure_future(call(record, self.node_address(primary), ref))
        try:
            while True:
                done, _ = await asyncio.wait({task},
                                             timeout=limits.write_placement_check_ms / 1000)
                if done:
                    return task.result()
                current = self.catalog.state.datasets.get(record.uuid)
                if current is not None and current.primary_of(shard) != primary:
                    raise errors.StaleEpoch(f"shard {shard}'s primary moved from {primary} to "
                                            f"{current.primary_of(shard)} while the call waited")
        finally:
            if not task.done():
                task.cancel()

    def to_dataset_pb(self, record: DatasetRecord, vector_count: int = 0,
                      storage_size: int = 0) -> pb.Dataset:
        return pb.Dataset(
            id=record.name, name=record.name, description=record.description,
            dimensions=record.dimensions, metric_type=record.metric_type,
            index_type=record.index_type, metadata=record.metadata,
            storage_location=f"shards/{record.uuid}", vector_count=vector_count,
            storage_size=storage_size, created_at=_timestamp(record.created_at_ms),
            updated_at=_timestamp(record.updated_at_ms), tenant_id=record.tenant_id,
            shard_count=record.shard_count, replication_factor=record.replication_factor)

    # ---- datasets ------------------------------------------------------------------------------

    async def create_dataset(self, request: pb.CreateDatasetRequest) -> pb.CreateDatasetResponse:
        tenant = self.tenant_of(request.tenant_id)
        name = validation.check_name(request.name)
        dimensions = validation.check_dimensions(request.dimensions)
        metric = validation.check_metric(request.metric_type or "cosine")
        index_type = validation.check_index_type(request.index_type or "hnsw")
        metadata = validation.check_metadata(dict(request.metadata))
        if request.shard_count < 0 or request.shard_count > limits.shard_count_max:
            raise errors.InvalidArgument(
                f"shard_count must be between 1 and {limits.shard_count_max}, "
                f"got {request.shard_count}")
        if request.storage_location:
            raise errors.InvalidArgument("storage_location is chosen by the cluster; leave it "
                                         "empty")
        status = await self.meta.leader_status()
        # Draining and drained nodes are on their way out: a new dataset's copies go elsewhere.
        live = [n for n in status.live_nodes if getattr(
            self.catalog.state.nodes.get(n), "state", "active") == "active"]
        if not live:
            raise errors.Unavailable("no live shard nodes to place the dataset on")
        shard_count = request.shard_count or max(1, len(live))
        if request.HasField("replication_factor"):
            factor = request.replication_factor
            if not 1 <= factor <= len(live):
                raise errors.InvalidArgument(
                    f"replication_factor must be between 1 and the {len(live)} live node(s), "
                    f"got {factor}")
        else:
            factor = min(limits.replication_factor_default, len(live))
        if request.overwrite:
            await self._delete_dataset(tenant, name, missing_ok=True)
        placement, copies = plan_copies(tenant, name, shard_count, factor, live)
        result = await self.meta.propose(commands.CreateDataset(
            uuid=str(uuidlib.uuid4()), tenant_id=tenant, name=name,
            description=request.description, dimensions=dimensions, metric_type=metric,
            index_type=index_type, metadata=metadata, placement=placement, at_ms=_now_ms(),
            replication_factor=factor, copies=copies))
        await self.catalog.refresh()
        record = self.catalog.state.datasets.get(result["uuid"])
        if record is None:
            record = await self.dataset(tenant, name)
        return pb.CreateDatasetResponse(dataset=self.to_dataset_pb(record),
                                        message=f"dataset '{name}' created with "
                                                f"{shard_count} shard(s) of {factor} "
                                                f"cop{'y' if factor == 1 else 'ies'}")

    async def _dataset_counts(self, record: DatasetRecord) -> tuple[int, int]:
        async def one(shard: int):
            return await self.on_shard(record.tenant_id, record.name, shard,
                                       lambda _r, address, ref: self.shards.stats(
                                           address,
                                           node_pb2.ShardStatsRequest(shard=ref)))
        stats = await asyncio.gather(*(one(s) for s in range(record.shard_count)))
        return sum(s.vector_count for s in stats), sum(s.storage_bytes for s in stats)

    async def get_dataset(self, request: pb.GetDatasetRequest) -> pb.GetDatasetResponse:
        record = await self.dataset(request.tenant_id, request.dataset_id)
        count, size = await self._dataset_counts(record)
        return pb.GetDatasetResponse(dataset=self.to_dataset_pb(record, count, size))

    async def list_datasets(self, request: pb.ListDatasetsRequest) -> pb.ListDatasetsResponse:
        tenant = self.tenant_of(request.tenant_id)
        page_size = request.page_size or limits.list_page_size_max
        if not 1 <= page_size <= limits.list_page_size_max:
            raise errors.InvalidArgument(
                f"page_size must be between 1 and {limits.list_page_size_max}")
        await self.catalog.refresh(linearizable=True)
        records = self.catalog.state.datasets_of(tenant)
        after = request.page_token
        page = [r for r in records if r.name > after][:page_size]
        more = len([r for r in records if r.name > after]) > page_size
        return pb.ListDatasetsResponse(
            datasets=[self.to_dataset_pb(r) for r in page], total_count=len(records),
            next_page_token=page[-1].name if more and page else "")

    async def delete_dataset(self, request: pb.DeleteDatasetRequest) -> pb.DeleteDatasetResponse:
        tenant = self.tenant_of(request.tenant_id)
        name = validation.check_name(request.dataset_id)
        await self._delete_dataset(tenant, name, missing_ok=False)
        return pb.DeleteDatasetResponse(success=True, message=f"dataset '{name}' deleted")

    async def _delete_dataset(self, tenant: str, name: str, missing_ok: bool) -> None:
        try:
            record = await self.dataset(tenant, name)
        except errors.NotFound:
            if missing_ok:
                return
            raise
        # The record's uuid and one request id for every retry of the proposal: a retry whose
        # first attempt committed is answered as that attempt was, and a late one never
        # deletes a later dataset of the same name.
        try:
            await self.meta.propose(commands.DeleteDataset(tenant, name, _now_ms(), record.uuid,
                                                           uuidlib.uuid4().hex))
        except errors.NotFound:
            # This router's catalog may be behind: the name may be a later dataset's by now.
            await self.catalog.refresh(linearizable=True)
            current = self._find_dataset(tenant, name)
            if current is None or current.uuid == record.uuid:
                raise
            record = current
            await self.meta.propose(commands.DeleteDataset(tenant, name, _now_ms(), record.uuid,
                                                           uuidlib.uuid4().hex))
        await self.catalog.refresh()
        # The catalog no longer names the dataset, so it is gone for every reader. Dropping the
        # files is cleanup: a node that misses it removes them when it next starts.
        for shard in range(record.shard_count):
            for node_id in record.copies_of(shard):
                node = self.catalog.state.nodes.get(node_id)
                if node is None:
                    continue
                try:
                    await self.shards.drop_shard(node.address, node_pb2.DropShardRequest(
                        shard=self.shard_ref(record, shard)))
                except errors.TributaryError as exc:
                    log.warning("could not drop %s/%d on %s: %s", record.uuid, shard, node_id,
                                exc.message)

    async def update_dataset(self, request: pb.UpdateDatasetRequest,
                             clear_description: bool = False, clear_metadata: bool = False,
                             immutable: dict | None = None) -> pb.UpdateDatasetResponse:
        """Changes a dataset's description and/or metadata (metadata is replaced as a whole).

        proto3 cannot tell an empty field from an absent one, so an empty description or an
        empty metadata map means "keep". The REST adapter passes clear_description /
        clear_metadata when its body explicitly sends "" / {}. `immutable` holds the fields fixed
        at creation that a REST body named (see IMMUTABLE_DATASET_FIELDS); any value other than
        the current one is InvalidArgument."""
        record = await self.dataset(request.tenant_id, request.dataset_id)
        problems = immutable_field_conflicts(record, immutable or {})
        if problems:
            raise errors.InvalidArgument("; ".join(problems))
        metadata = validation.check_metadata(dict(request.metadata))
        description = request.description if request.description or clear_description else None
        new_metadata = metadata if metadata or clear_metadata else None
        if description == record.description:
            description = None
        if new_metadata == record.metadata:
            new_metadata = None
        if description is None and new_metadata is None:
            message = f"dataset '{record.name}' unchanged"
        else:
            await self.meta.propose(commands.UpdateDataset(
                tenant_id=record.tenant_id, name=record.name, description=description,
                metadata=new_metadata, at_ms=_now_ms()))
            # Linearizable, so the answer shows this update whichever member serves the read.
            await self.catalog.refresh(linearizable=True)
            record = self.catalog.state.datasets.get(record.uuid) or await self.dataset(
                record.tenant_id, record.name)
            changed = [f for f, v in (("description", description), ("metadata", new_metadata))
                       if v is not None]
            message = f"dataset '{record.name}' updated: {', '.join(changed)}"
        count, size = await self._dataset_counts(record)
        return pb.UpdateDatasetResponse(dataset=self.to_dataset_pb(record, count, size),
                                        message=message)

    async def _shard_stats(self, record: DatasetRecord) -> list[node_pb2.ShardStatsResponse]:
        """Every shard's Stats answer, in shard order."""
        async def one(shard: int):
            return await self.on_shard(record.tenant_id, record.name, shard,
                                       lambda _r, address, ref: self.shards.stats(
                                           address,
                                           node_pb2.ShardStatsRequest(shard=ref)))
        return list(await asyncio.gather(*(one(s) for s in range(record.shard_count))))

    async def get_dataset_stats(self, request: pb.GetDatasetStatsRequest
                                ) -> pb.GetDatasetStatsResponse:
        record = await self.dataset(request.tenant_id, request.dataset_id)
        per_shard = await self._shard_stats(record)
        # A StaleEpoch retry refreshed the catalog: report the placement the answers came from.
        record = self.catalog.state.datasets.get(record.uuid, record)
        return pb.GetDatasetStatsResponse(
            dataset_id=record.name, vector_count=sum(s.vector_count for s in per_shard),
            storage_size=sum(s.storage_bytes for s in per_shard), dimensions=record.dimensions,
            metric_type=record.metric_type, index_type=record.index_type,
            stats=dataset_stats_map(record, per_shard))

    # ---- vectors -------------------------------------------------------------------------------

    def _validated_vectors(self, record: DatasetRecord, vectors, values=None
                           ) -> tuple[list[pb.Vector], np.ndarray]:
        """Checks a whole batch before anything is written: ids, values (all at once, as one
        matrix), content size and metadata. Returns the vectors, with their values moved out
        (cleared in place), and the (n, dimensions) float32 matrix of normalized values that
        travels packed to the nodes.

        `values`, when given, holds the rows of an adapter that parsed them itself (REST reads
        them from JSON straight into numpy); the vectors then carry none."""
        vectors = list(vectors)
        validation.check_batch_size(len(vectors))
        names = [v.id for v in vectors]
        seen: set[str] = set()
        for position, (vector, vector_id) in enumerate(zip(vectors, names)):
            if not vector_id:
                raise errors.InvalidArgument(f"vector {position} has no id")
            validation.check_vector_id(vector_id)
            if vector_id in seen:
                raise errors.InvalidArgument(f"vector id '{vector_id}' appears twice in the batch")
            seen.add(vector_id)
            self._check_vector_fields(position, vector)
        if values is None:
            rows = _value_rows(vectors, record.dimensions)
        elif len(values) != len(vectors) or any(len(v.values) for v in vectors):
            raise errors.Internal("pre-parsed values do not match the batch")
        else:
            rows = values
        matrix = validation.as_matrix(rows, record.dimensions, record.metric_type, names=names)
        for vector in vectors:
            # The values travel in the packed matrix, and the dataset is implied by the shard.
            if values is None:
                vector.ClearField("values")
            if vector.dataset_id:
                vector.ClearField("dataset_id")
        return vectors, matrix

    @staticmethod
    def _check_vector_fields(position: int, vector: pb.Vector) -> None:
        """Content size and metadata of one vector of a write (values are checked apart)."""
        content = vector.content
        # A str of n characters encodes to at most 4n UTF-8 bytes: encode only long ones.
        if len(content) * 4 > limits.content_bytes_max and \
                len(content.encode("utf-8")) > limits.content_bytes_max:
            raise errors.InvalidArgument(f"vector {position} ('{vector.id}') content is "
                                         f"larger than {limits.content_bytes_max} bytes")
        if vector.metadata:
            validation.check_metadata(dict(vector.metadata))

    async def insert_vectors(self, request: pb.InsertVectorsRequest,
                             idempotency_key: str = "", values=None) -> pb.InsertVectorsResponse:
        """All of the batch or none of it: one phase on one shard, 2PC across shards.

        The request's vectors are consumed: their values move into the packed matrix (see
        _validated_vectors, which also explains `values`)."""
        started = time.perf_counter()
        record = await self.dataset(request.tenant_id, request.dataset_id)
        if request.batch_size < 0:
            raise errors.InvalidArgument("batch_size must not be negative")
        if request.skip_existing and request.overwrite:
            raise errors.InvalidArgument("skip_existing and overwrite are mutually exclusive")
        self._check_idempotency_key(idempotency_key)
        if request.packed_values:
            values = packed_rows(request)
        vectors, matrix = self._validated_vectors(record, request.vectors, values)
        policy = (node_pb2.EXISTING_OVERWRITE if request.overwrite else
                  node_pb2.EXISTING_SKIP if request.skip_existing else node_pb2.EXISTING_ERROR)
        outcome = await self.replanned(
            request.tenant_id, request.dataset_id,
            lambda current: self.coordinator.write(
                current, shard_batches(vectors, matrix, current.shard_count), policy,
                idempotency_key), record)
        return pb.InsertVectorsResponse(
            inserted_count=outcome.inserted, skipped_count=outcome.skipped, failed_count=0,
            error_messages=[f"vector '{i}' already exists; skipped"
                            for i in outcome.skipped_ids[:100]],
            processing_time_ms=(time.perf_counter() - started) * 1000)

    async def bulk_insert_vectors(self, batches, idempotency_key: str = ""
                                  ) -> pb.InsertVectorsResponse:
        """Inserts a stream of InsertVectorsRequest batches, each atomic on its own. Stops at
        the first failing batch and raises its error (earlier batches stay committed); the
        error message says how many vectors were inserted before it."""
        started = time.perf_counter()
        total = pb.InsertVectorsResponse()
        first = None
        index = 0
        async for batch in batches:
            if first is None:
                first = batch
            if not batch.dataset_id:
                batch.dataset_id = first.dataset_id
            if not batch.tenant_id:
                batch.tenant_id = first.tenant_id
            if batch.dataset_id != first.dataset_id:
                raise errors.InvalidArgument("every batch of a bulk insert must name the same "
                                             "dataset")
            key = f"{idempotency_key}#{index}" if idempotency_key else ""
            try:
                result = await self.insert_vectors(batch, key)
            except errors.TributaryError as exc:
                raise type(exc)(f"batch {index} failed after {total.inserted_count} vector(s) "
                                f"were inserted: {exc.message}") from None
            total.inserted_count += result.inserted_count
            total.skipped_count += result.skipped_count
            total.error_messages.extend(result.error_messages[:100])
            index += 1
        if first is None:
            raise errors.InvalidArgument("the bulk insert stream held no batches")
        total.processing_time_ms = (time.perf_counter() - started) * 1000
        return total

    @staticmethod
    def _check_idempotency_key(key: str) -> None:
        if len(key.encode("utf-8")) > limits.idempotency_key_bytes_max:
            raise errors.InvalidArgument(f"Idempotency-Key is longer than "
                                         f"{limits.idempotency_key_bytes_max} bytes")
        if any(ord(ch) < 32 for ch in key):
            raise errors.InvalidArgument("Idempotency-Key must not contain control characters")

    def _on_shard_for(self, record: DatasetRecord, follow_failover: bool = False,
                      planned: bool = False):
        """on_shard for the coordinator. `planned`: the calls carry rows placed on `record`'s
        shard count (writes, prepares), not decisions of a txn already prepared there."""
        async def on_shard(shard: int, call):
            return await self.on_shard(record.tenant_id, record.name, shard,
                                       lambda _r, address, ref: call(address, ref),
                                       follow_failover=follow_failover,
                                       planned=record if planned else None)
        return on_shard

    async def replanned(self, tenant_id: str, name: str,
                        attempt: Callable[[DatasetRecord], Awaitable[T]],
                        record: DatasetRecord | None = None) -> T:
        """attempt(record), planned on the dataset's current record; when the shard count
        changes under it (ShardCountChanged from a planned on_shard), planned again on the new
        record, at most router_replan_retries_max times. Nothing was sent on the old plan that
        a node accepted: a planned call is refused before it is sent, or by the node (StaleEpoch)
        before it changes anything, and a 2PC batch so refused aborts."""
        record = record or await self.dataset(tenant_id, name)
        for tries in range(limits.router_replan_retries_max + 1):
            try:
                return await attempt(record)
            except errors.ShardCountChanged:
                if tries == limits.router_replan_retries_max:
                    raise
                await self.catalog.refresh(linearizable=True)
                record = await self.dataset(tenant_id, name)
        raise AssertionError("unreachable")

    async def insert_vector(self, request: pb.InsertVectorRequest) -> pb.InsertVectorResponse:
        response = await self.insert_vectors(pb.InsertVectorsRequest(
            dataset_id=request.dataset_id, vectors=[request.vector],
            overwrite=request.overwrite, tenant_id=request.tenant_id))
        return pb.InsertVectorResponse(vector_id=request.vector.id,
                                       success=response.inserted_count == 1,
                                       message="inserted")

    async def get_vector(self, request: pb.GetVectorRequest) -> pb.GetVectorResponse:
        record = await self.dataset(request.tenant_id, request.dataset_id)
        validation.check_vector_id(request.vector_id)
        shard = shard_of(request.vector_id, record.shard_count)
        version = await versions.resolve(self, record, request.as_of_version,
                                         versions.as_of_time_of(request))
        if version is not None:
            response = await versions.on_version(
                self, record, version, shard, lambda address, ref: self.shards.get(
                    address, node_pb2.GetRequest(shard=ref, ids=[request.vector_id],
                                                 include_values=True,
                                                 as_of_tag=version.deeplake_tag)))
        else:
            response = await self.replanned(
                request.tenant_id, request.dataset_id, lambda current: self.on_shard(
                    current.tenant_id, current.name,
                    shard_of(request.vector_id, current.shard_count),
                    lambda _r, address, ref: self.shards.get(address, node_pb2.GetRequest(
                        shard=ref, ids=[request.vector_id], include_values=True)),
                    read=True, planned=current), record)
        if not response.vectors:
            raise errors.NotFound(f"vector '{request.vector_id}' not found in dataset "
                                  f"'{record.name}'")
        vector = response.vectors[0]
        vector.dataset_id = record.name
        vector.tenant_id = record.tenant_id
        return pb.GetVectorResponse(vector=vector)

    async def delete_vectors(self, request: pb.DeleteVectorsRequest,
                             idempotency_key: str = "") -> pb.DeleteVectorsResponse:
        record = await self.dataset(request.tenant_id, request.dataset_id)
        self._check_idempotency_key(idempotency_key)
        ids = list(dict.fromkeys(request.vector_ids))
        if not ids:
            raise errors.InvalidArgument("vector_ids is empty")
        if len(ids) > limits.batch_vectors_max:
            raise errors.InvalidArgument(f"the batch holds {len(ids)} ids, more than "
                                         f"batch_vectors_max={limits.batch_vectors_max}")
        for vector_id in ids:
            validation.check_vector_id(vector_id)

        def attempt(current: DatasetRecord):
            batches: dict[int, ShardBatch] = defaultdict(ShardBatch)
            for vector_id in ids:
                batches[shard_of(vector_id, current.shard_count)].deletes.append(vector_id)
            return self.coordinator.write(current, dict(batches), node_pb2.EXISTING_ERROR,
                                          idempotency_key)
        outcome = await self.replanned(request.tenant_id, request.dataset_id, attempt, record)
        return pb.DeleteVectorsResponse(deleted_count=outcome.deleted,
                                        not_found_count=outcome.not_found)

    async def update_vector(self, request: pb.UpdateVectorRequest,
                            present: list[str] | None = None) -> pb.UpdateVectorResponse:
        """Changes the fields of an existing vector that the update names (AIP-134; see
        resolve_update_paths for how `update_mask`, `present` and the populated fields name
        them). Fields not named keep their stored values; a named field that `request.vector`
        leaves empty is cleared. The node merges the named fields into the stored row under
        the shard's lock, in one commit, so a concurrent update of other fields is not lost and
        a failed update changes nothing. An unknown (or soft-deleted) id is NotFound."""
        record = await self.dataset(request.tenant_id, request.dataset_id)
        validation.check_vector_id(request.vector_id)
        if request.vector.id and request.vector.id != request.vector_id:
            raise errors.InvalidArgument("the body's vector id differs from the one in the path")
        mask = list(request.update_mask.paths) if request.HasField("update_mask") else None
        paths = resolve_update_paths(mask, request.vector, present)
        current = pb.GetVectorRequest(dataset_id=request.dataset_id,
                                      vector_id=request.vector_id, tenant_id=request.tenant_id)
        if not paths:
            unchanged = await self.get_vector(current)
            return pb.UpdateVectorResponse(vector=unchanged.vector,
                                           message="unchanged: the update names no field")
        # Only the named fields travel, so the node takes exactly them from the upsert.
        vector = pb.Vector(id=request.vector_id)
        for name in paths - {"values", "metadata"}:
            setattr(vector, name, getattr(request.vector, name))
        if "metadata" in paths:
            vector.metadata.update(request.vector.metadata)
        self._check_vector_fields(0, vector)
        packed = b""
        if "values" in paths:
            packed = validation.pack_values(validation.as_matrix(
                [request.vector.values], record.dimensions, record.metric_type,
                names=[request.vector_id]))
        write = node_pb2.WriteRequest(upserts=[vector], existing=node_pb2.EXISTING_REQUIRE,
                                      upsert_values=packed, update_paths=sorted(paths),
                                      write_id=uuidlib.uuid4().hex)

        async def update(_record, address: str, ref: node_pb2.ShardRef):
            write.shard.CopyFrom(ref)
            return await self.shards.write(address, write)
        await self.replanned(
            request.tenant_id, request.dataset_id, lambda current: self.on_shard(
                current.tenant_id, current.name,
                shard_of(request.vector_id, current.shard_count), update, planned=current),
            record)
        updated = await self.get_vector(current)
        return pb.UpdateVectorResponse(vector=updated.vector,
                                       message=f"updated: {', '.join(sorted(paths))}")

    async def list_vectors(self, request: pb.ListVectorsRequest) -> pb.ListVectorsResponse:
        """Pages through the dataset shard by shard in row order. The token names a shard and
        the last label returned there, so a page costs a binary search, never an offset scan."""
        record = await self.dataset(request.tenant_id, request.dataset_id)
        page_size = request.page_size or 100
        if not 1 <= page_size <= limits.list_page_size_max:
            raise errors.InvalidArgument(
                f"page_size must be between 1 and {limits.list_page_size_max}")
        shard, after = _decode_page_token(request.page_token, record.shard_count)
        version = await versions.resolve(self, record, request.as_of_version,
                                         versions.as_of_time_of(request))
        vectors: list[pb.Vector] = []
        total = 0
        while shard < record.shard_count and len(vectors) < page_size:
            def listing(address: str, ref: node_pb2.ShardRef, after=after,
                        limit=page_size - len(vectors)):
                return self.shards.list(address, node_pb2.ListRequest(
                    shard=ref, after_label=after, limit=limit,
                    include_values=request.include_values,
                    as_of_tag=version.deeplake_tag if version is not None else ""))
            if version is not None:
                response = await versions.on_version(self, record, version, shard, listing)
            else:
                response = await self.on_shard(
                    record.tenant_id, record.name, shard,
                    lambda _r, address, ref: listing(address, ref), read=True)
            for vector in response.vectors:
                vector.dataset_id = record.name
                vector.tenant_id = record.tenant_id
            vectors.extend(response.vectors)
            after = response.last_label
            if response.exhausted:
                shard, after = shard + 1, -1
        token = "" if shard >= record.shard_count else _encode_page_token(shard, after)
        if version is not None:
            total = version.vector_count
        else:
            total, _ = await self._dataset_counts(record)
        return pb.ListVectorsResponse(vectors=vectors, next_page_token=token, total_count=total)

    async def _per_shard_ids(self, tenant_id: str, dataset_id: str, vector_ids,
                             send: Callable[[str, node_pb2.IdsRequest],
                                            Awaitable[node_pb2.IdsResponse]]
                             ) -> tuple[int, int]:
        """Runs an id-list RPC (`send`, a ShardClient method) on every shard the ids live on; returns summed (affected,
        not_found). Per shard, not atomic across shards (soft delete and restore are
        reversible, so they do not pay for 2PC)."""
        record = await self.dataset(tenant_id, dataset_id)
        ids = list(dict.fromkeys(vector_ids))
        if not ids:
            raise errors.InvalidArgument("vector_ids is empty")
        if len(ids) > limits.batch_vectors_max:
            raise errors.InvalidArgument(f"the batch holds {len(ids)} ids, more than "
                                         f"batch_vectors_max={limits.batch_vectors_max}")
        for vector_id in ids:
            validation.check_vector_id(vector_id)

        async def attempt(current: DatasetRecord):
            by_shard: dict[int, list[str]] = defaultdict(list)
            for vector_id in ids:
                by_shard[shard_of(vector_id, current.shard_count)].append(vector_id)

            async def one(shard: int, batch: list[str]):
                return await self.on_shard(current.tenant_id, current.name, shard,
                                           lambda _r, address, ref: send(
                                               address, node_pb2.IdsRequest(
                                                   shard=ref, ids=batch)), planned=current)
            return await asyncio.gather(*(one(s, b) for s, b in by_shard.items()))
        results = await self.replanned(tenant_id, dataset_id, attempt, record)
        return sum(r.affected for r in results), sum(r.not_found for r in results)

    async def soft_delete_vectors(self, request: pb.SoftDeleteVectorsRequest
                                  ) -> pb.SoftDeleteVectorsResponse:
        done, missing = await self._per_shard_ids(request.tenant_id, request.dataset_id,
                                                  request.vector_ids, self.shards.soft_delete)
        return pb.SoftDeleteVectorsResponse(soft_deleted_count=done, not_found_count=missing)

    async def restore_vectors(self, request: pb.RestoreVectorsRequest
                              ) -> pb.RestoreVectorsResponse:
        done, missing = await self._per_shard_ids(request.tenant_id, request.dataset_id,
                                                  request.vector_ids, self.shards.restore)
        return pb.RestoreVectorsResponse(restored_count=done, not_found_count=missing)

    async def compact_dataset(self, request: pb.CompactDatasetRequest
                              ) -> pb.CompactDatasetResponse:
        record = await self.dataset(request.tenant_id, request.dataset_id)
        started = time.perf_counter()

        async def one(shard: int):
            return await self.on_shard(record.tenant_id, record.name, shard,
                                       lambda _r, address, ref: self.shards.compact(
                                           address,
                                           node_pb2.CompactRequest(shard=ref)))
        reports = await asyncio.gather(*(one(s) for s in range(record.shard_count)))
        purged = sum(r.purged for r in reports)
        return pb.CompactDatasetResponse(
            purged_count=purged, indexed_count=sum(r.indexed for r in reports),
            compaction_time_ms=(time.perf_counter() - started) * 1000,
            message=f"purged {purged} soft-deleted vector(s) and rebuilt "
                    f"{record.shard_count} shard index(es)")

    async def delete_vector(self, request: pb.DeleteVectorRequest) -> pb.DeleteVectorResponse:
        validation.check_vector_id(request.vector_id)
        result = await self.delete_vectors(pb.DeleteVectorsRequest(
            dataset_id=request.dataset_id, vector_ids=[request.vector_id],
            tenant_id=request.tenant_id))
        if result.deleted_count == 0:
            raise errors.NotFound(f"vector '{request.vector_id}' not found in dataset "
                                  f"'{request.dataset_id}'")
        return pb.DeleteVectorResponse(success=True, message="deleted")

    # ---- versions (router/versions.py) ---------------------------------------------------------

    async def create_version(self, request: pb.CreateVersionRequest
                             ) -> pb.CreateVersionResponse:
        record = await self.dataset(request.tenant_id, request.dataset_id)
        return await versions.create_version(self, record, request.tag)

    async def list_versions(self, request: pb.ListVersionsRequest) -> pb.ListVersionsResponse:
        record = await self.dataset(request.tenant_id, request.dataset_id)
        return await versions.list_versions(self, record)

    # ---- search --------------------------------------------------------------------------------

    async def search_vectors(self, request: pb.SearchVectorsRequest) -> pb.SearchVectorsResponse:
        """Scatter-gather top-k search: every shard at once, one merge at the end (the same
        answer as the last one of search_vectors_stream)."""
        started = time.perf_counter()
        record, plan = await self._search_plan(request)
        db_started = time.perf_counter()

        async def attempt(current: DatasetRecord):
            nonlocal record
            record = current
            return await self._scatter(current, plan)
        responses = await self.replanned(request.tenant_id, request.dataset_id, attempt,
                                         record)
        db_ms = (time.perf_counter() - db_started) * 1000
        return self._merge_search(record, request.options, plan.top_k, plan.shard_k,
                                  responses, started, db_ms)

    async def search_vectors_stream(self, request: pb.SearchVectorsRequest):
        """Yields the merged answer so far each time a shard answers; the last one is complete
        (every shard merged). Validation errors are raised before anything is yielded."""
        started = time.perf_counter()
        record, plan = await self._search_plan(request)
        db_started = time.perf_counter()
        pending = [asyncio.ensure_future(self._search_shard(record, s, plan))
                   for s in range(record.shard_count)]
        responses = []
        try:
            for finished in asyncio.as_completed(pending):
                responses.append(await finished)
                db_ms = (time.perf_counter() - db_started) * 1000
                yield self._merge_search(record, request.options, plan.top_k, plan.shard_k,
                                         responses, started, db_ms)
        finally:
            for task in pending:
                task.cancel()

    async def _search_plan(self, request: pb.SearchVectorsRequest
                           ) -> tuple[DatasetRecord, "_SearchPlan"]:
        """Validates a search (a bad one is refused before any shard is asked) and builds the
        per-shard request fields."""
        record = await self.dataset(request.tenant_id, request.dataset_id)
        options = request.options
        top_k = validation.check_top_k(options.top_k or 10)
        if options.ef_search < 0 or options.ef_search > limits.ef_search_max:
            raise errors.InvalidArgument(f"ef_search must be between 0 and "
                                         f"{limits.ef_search_max}")
        if options.metric_type and options.metric_type != record.metric_type:
            raise errors.InvalidArgument(
                f"dataset '{record.name}' uses metric '{record.metric_type}'; a search cannot "
                f"switch it to '{options.metric_type}'")
        filters = dict(options.filters)
        if filters or options.filter:
            # Parse here so a bad filter is a 400 before any shard is asked.
            filter_parse.build_filter_ast(filters or None, options.filter or None)
        shrink = options.deduplicate or options.group_by_document
        # Dedupe and grouping drop hits after the merge; ask shards for more so top_k survive.
        shard_k = min(limits.top_k_max, top_k * 4) if shrink else top_k
        query = validation.as_vector(np.asarray(request.query_vector, dtype=np.float64),
                                     record.dimensions, record.metric_type, what="query_vector")
        version = None
        if request.as_of_version or request.HasField("as_of_time"):
            version = await versions.resolve(self, record, request.as_of_version,
                                             versions.as_of_time_of(request))
        plan = _SearchPlan(top_k, shard_k, dict(
            query_values=validation.pack_values(query), top_k=shard_k,
            ef_search=options.ef_search, include_content=options.include_content,
            include_metadata=options.include_metadata, filter_expression=options.filter,
            filters=filters, exact=request.exact,
            packed=not (options.include_content or options.include_metadata)), version)
        if version is not None:
            plan.fields["as_of_tag"] = version.deeplake_tag
        return record, plan

    async def _scatter(self, record: DatasetRecord, plan: "_SearchPlan") -> list:
        """Every shard's answer to `plan`, asked all at once. A shard with one in-sync copy (no
        hedge to run) gets its search straight from the shard client's `search_soon`: no task,
        span or hedge bookkeeping per shard (a busy router spent about a tenth of its CPU
        there), with the same per-shard call metrics; a shard it refuses with StaleEpoch goes
        the full way (on_shard: refresh, retry, ShardCountChanged). Shards with several copies,
        searches at a version and searches inside a sampled trace (a span per shard call) go
        the full way from the start."""
        search_soon = getattr(self.shards, "search_soon", None)
        if search_soon is None or plan.version is not None or tracing.recording():
            return await asyncio.gather(*(self._search_shard(record, shard, plan)
                                          for shard in range(record.shard_count)))
        started = time.perf_counter()
        nodes = self.catalog.state.nodes
        fields = plan.fields
        pending: list = []
        direct: list = []
        for shard in range(record.shard_count):
            copies = record.in_sync_of(shard)
            node = nodes.get(copies[0]) if len(copies) == 1 else None
            if node is None:
                pending.append(asyncio.ensure_future(self._search_shard(record, shard, plan)))
                direct.append(None)
                continue
            pending.append(search_soon(node.address, node_pb2.ShardSearchRequest(
                shard=node_pb2.ShardRef(dataset_uuid=record.uuid, shard=shard,
                                        epoch=record.epoch), **fields)))
            direct.append(copies[0])
        responses = []
        try:
            for shard, future in enumerate(pending):
                node_id = direct[shard]
                if node_id is None:
                    responses.append(await future)
                    continue
                try:
                    response = await future
                except errors.StaleEpoch:
                    # The placement moved on: the full path on the refreshed catalog.
                    await self.catalog.refresh(linearizable=True)
                    response = await self._search_shard(record, shard, plan)
                except errors.TributaryError as exc:
                    self.reads.suspect(node_id)
                    router_metrics.SHARD_CALL_ERRORS.labels(
                        "read", type(exc).__name__, record.tenant_id, record.name,
                        str(shard)).inc()
                    _SHARD_READ_SECONDS.observe(time.perf_counter() - started)
                    raise
                else:
                    # Timed when awaited: a shard that answered before an earlier one is
                    # counted at the earlier one's time (the query's wait, not the node's).
                    seconds = time.perf_counter() - started
                    self.reads.observe(node_id, seconds)
                    _SHARD_READ_SECONDS.observe(seconds)
                responses.append(response)
        finally:
            for future in pending:
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()      # retrieved: an error nobody waits for any more
        return responses

    async def _search_shard(self, record: DatasetRecord, shard: int, plan: "_SearchPlan"
                            ) -> node_pb2.ShardSearchResponse:
        if plan.version is not None:
            return await versions.on_version(
                self, record, plan.version, shard, lambda address, ref: self.shards.search(
                    address, node_pb2.ShardSearchRequest(shard=ref, **plan.fields)))
        return await self.on_shard(record.tenant_id, record.name, shard,
                                   lambda _r, address, ref: self.shards.search(
                                       address, node_pb2.ShardSearchRequest(
                                           shard=ref, **plan.fields)), read=True,
                                   planned=record)

    def _merge_search(self, record: DatasetRecord, options: pb.SearchOptions, top_k: int,
                      shard_k: int, responses: list, started: float, db_ms: float
                      ) -> pb.SearchVectorsResponse:
        """Merges shard answers into the response. The results are built in place in the
        response (each hit's vector copied once, the explanation map set per key): building
        SearchResult messages and then the response from them copied every vector twice and
        filled each map through Python's MutableMapping.update."""
        post_started = time.perf_counter()
        if all(not r.hits for r in responses):
            return self._merge_packed(record, options, top_k, shard_k, responses, started,
                                      db_ms, post_started)
        # A node that answers in ShardHits (older, or a search that needed stored fields).
        merged = merge_top_k(([(h.score, h.vector.id, h) for h in _shard_hits(r)]
                              for r in responses), shard_k)
        response = pb.SearchVectorsResponse()
        results = response.results
        kept = 0
        seen_hashes: set[str] = set()
        seen_documents: set[str] = set()
        strategies = ",".join(sorted({r.strategy for r in responses if r.strategy}))
        for score, _, hit in merged:
            if kept == top_k:
                break
            if options.deduplicate and hit.vector.content_hash:
                if hit.vector.content_hash in seen_hashes:
                    continue
                seen_hashes.add(hit.vector.content_hash)
            if options.group_by_document and hit.vector.document_id:
                # The best-scoring chunk stands for its document.
                if hit.vector.document_id in seen_documents:
                    continue
                seen_documents.add(hit.vector.document_id)
            # Presence, not truthiness: a bound of 0 is a bound (see SearchOptions).
            if options.HasField("min_score") and score < options.min_score:
                continue
            if options.HasField("threshold") and score < options.threshold:
                continue
            if options.HasField("max_distance") and hit.distance > options.max_distance:
                continue
            kept += 1
            result = results.add()
            vector = result.vector
            vector.CopyFrom(hit.vector)
            vector.dataset_id = record.name
            vector.tenant_id = record.tenant_id
            vector.dimensions = record.dimensions
            if not options.include_content and vector.content:
                vector.content = ""
            result.score = score
            result.distance = hit.distance
            result.rank = kept
            result.explanation["shard_strategy"] = strategies
        return self._finish_search(response, responses, len(merged), kept, started, db_ms,
                                   post_started)

    def _merge_packed(self, record: DatasetRecord, options: pb.SearchOptions, top_k: int,
                      shard_k: int, responses: list, started: float, db_ms: float,
                      post_started: float) -> pb.SearchVectorsResponse:
        """_merge_search over packed shard answers (node.proto PackedHits): the top shard_k by
        score, ties by id (a Python sort for a few dozen hits, numpy's lexsort for more); then
        the same filters and the same results as the per-hit merge builds."""
        ids: list = []
        score_of: list = []
        distances: list = []
        created: list = []
        updated: list = []
        fields: list = []
        for r in responses:
            packed = r.packed
            count = len(packed.ids)
            if not count:
                continue
            ids.extend(packed.ids)
            score_of.extend(np.frombuffer(packed.scores, np.float32).tolist())
            distances.extend(np.frombuffer(packed.distances, np.float32).tolist())
            created.extend(np.frombuffer(packed.created_at_ms, np.int64).tolist())
            updated.extend(np.frombuffer(packed.updated_at_ms, np.int64).tolist())
            fields.extend(packed.fields if len(packed.fields) else [None] * count)
        response = pb.SearchVectorsResponse()
        merged = 0
        kept = 0
        if ids:
            if len(ids) != len(score_of) or len(ids) != len(distances) or \
                    len(ids) != len(created) or len(ids) != len(updated):
                raise errors.Internal("a shard answered packed hits of unequal lengths")
            if len(ids) <= limits.router_merge_python_sort_hits_max:
                # A few dozen hits (the usual top_k from a few shards) sort faster as Python
                # lists than through numpy's lexsort, which first builds a string array.
                order = sorted(range(len(ids)), key=lambda i: (-score_of[i], ids[i]))[:shard_k]
            else:
                order = np.lexsort((np.asarray(ids), -np.asarray(score_of, np.float32))
                                   )[:shard_k].tolist()
            merged = len(order)
            has_min = options.HasField("min_score")
            has_threshold = options.HasField("threshold")
            has_max_distance = options.HasField("max_distance")
            seen_hashes: set[str] = set()
            seen_documents: set[str] = set()
            strategies = ",".join(sorted({r.strategy for r in responses if r.strategy}))
            results = response.results
            name, tenant, dimensions = record.name, record.tenant_id, record.dimensions
            for i in order:
                if kept == top_k:
                    break
                extra = fields[i]
                if extra is not None:
                    if options.deduplicate and extra.content_hash:
                        if extra.content_hash in seen_hashes:
                            continue
                        seen_hashes.add(extra.content_hash)
                    if options.group_by_document and extra.document_id:
                        if extra.document_id in seen_documents:
                            continue
                        seen_documents.add(extra.document_id)
                score = score_of[i]
                if has_min and score < options.min_score:
                    continue
                if has_threshold and score < options.threshold:
                    continue
                if has_max_distance and distances[i] > options.max_distance:
                    continue
                kept += 1
                result = results.add()
                vector = result.vector
                if extra is not None:
                    vector.CopyFrom(extra)
                vector.id = ids[i]
                vector.dataset_id = name
                vector.tenant_id = tenant
                vector.dimensions = dimensions
                # Floored seconds and nanos, as node/convert.py fill_vector writes them.
                vector.created_at.seconds, rest = divmod(created[i], 1000)
                vector.created_at.nanos = rest * 1_000_000
                vector.updated_at.seconds, rest = divmod(updated[i], 1000)
                vector.updated_at.nanos = rest * 1_000_000
                result.score = score
                result.distance = distances[i]
                result.rank = kept
                result.explanation["shard_strategy"] = strategies
        return self._finish_search(response, responses, merged, kept, started, db_ms,
                                   post_started)

    @staticmethod
    def _finish_search(response: pb.SearchVectorsResponse, responses: list, merged: int,
                       kept: int, started: float, db_ms: float, post_started: float
                       ) -> pb.SearchVectorsResponse:
        stats = response.stats
        stats.vectors_scanned = sum(r.vectors_scanned for r in responses)
        stats.index_hits = sum(r.index_hits for r in responses)
        stats.filtered_results = sum(r.filtered_out for r in responses) + merged - kept
        stats.database_time_ms = db_ms
        response.total_found = kept
        response.has_more = sum(len(r.hits) + len(r.packed.ids) for r in responses) > merged
        stats.post_processing_time_ms = (time.perf_counter() - post_started) * 1000
        response.query_time_ms = (time.perf_counter() - started) * 1000
        return response

    async def search_by_text(self, request: pb.SearchByTextRequest) -> pb.SearchByTextResponse:
        """BM25 over content on every shard (Deep Lake's BM25 index), merged by score.

        BM25 statistics are per shard; with hash sharding each shard holds a uniform sample of
        the dataset, so per-shard scores are close to global ones (Elasticsearch's default
        query_then_fetch makes the same trade)."""
        started = time.perf_counter()
        record = await self.dataset(request.tenant_id, request.dataset_id)
        options = request.options
        top_k = validation.check_top_k(options.top_k or 10)
        text = request.query_text
        if not text or not text.strip():
            raise errors.InvalidArgument("query_text is empty")
        if len(text.encode("utf-8")) > limits.text_query_bytes_max:
            raise errors.InvalidArgument(f"query_text is longer than "
                                         f"{limits.text_query_bytes_max} bytes")
        if not any(ch.isalnum() for ch in text):
            raise errors.InvalidArgument("query_text holds no words to search for")
        filter_parse.build_filter_ast(dict(options.filters) or None, options.filter or None)

        async def search(shard: int):
            return await self.on_shard(record.tenant_id, record.name, shard,
                                       lambda _r, address, ref: self.shards.text_search(
                                           address, node_pb2.ShardTextSearchRequest(
                                               shard=ref, query_text=text, top_k=top_k,
                                               include_content=options.include_content,
                                               include_metadata=options.include_metadata,
                                               filter_expression=options.filter,
                                               filters=dict(options.filters))), read=True)
        db_started = time.perf_counter()
        responses = await asyncio.gather(*(search(s) for s in range(record.shard_count)))
        db_ms = (time.perf_counter() - db_started) * 1000
        merged = merge_top_k(([(h.score, h.vector.id, h) for h in r.hits] for r in responses),
                             top_k)
        results = []
        for score, _, hit in merged:
            if options.HasField("min_score") and score < options.min_score:
                continue
            if options.HasField("threshold") and score < options.threshold:
                continue
            vector = hit.vector
            vector.dataset_id, vector.tenant_id = record.name, record.tenant_id
            results.append(pb.SearchResult(vector=vector, score=score, rank=len(results) + 1,
                                           explanation={"bm25_score": f"{score:.6g}"}))
        return pb.SearchByTextResponse(
            results=results, total_found=len(results),
            has_more=sum(len(r.hits) for r in responses) > len(merged),
            query_time_ms=(time.perf_counter() - started) * 1000, embedding_time_ms=0.0,
            stats=pb.SearchStats(vectors_scanned=sum(r.vectors_scanned for r in responses),
                                 index_hits=sum(r.index_hits for r in responses),
                                 filtered_results=sum(r.filtered_out for r in responses),
                                 database_time_ms=db_ms))

    async def hybrid_search(self, request: pb.HybridSearchRequest) -> pb.HybridSearchResponse:
        """Fuses vector and BM25 results. fusion "rrf" (default): score = sum of
        1 / (rrf_k + rank) over the lists a vector appears in. fusion "alpha" (VecStore's):
        each list's scores are min-max normalized to [0, 1], then
        score = alpha * vector + (1 - alpha) * text. Each result explains its parts."""
        started = time.perf_counter()
        options = request.options
        top_k = validation.check_top_k(options.top_k or 10)
        fusion = request.fusion or "rrf"
        if fusion not in ("rrf", "alpha"):
            raise errors.InvalidArgument(f"fusion must be 'rrf' or 'alpha', got '{fusion}'")
        # Presence, not truthiness: an explicit alpha of 0 (text only) or rrf_k of 0 is kept.
        alpha = request.alpha if request.HasField("alpha") else 0.5
        if not 0.0 <= alpha <= 1.0 or alpha != alpha:
            raise errors.InvalidArgument(f"alpha must be between 0 and 1, got {alpha:g}")
        rrf_k = request.rrf_k if request.HasField("rrf_k") else limits.rrf_k_default
        if not 0 <= rrf_k <= limits.rrf_k_max:
            raise errors.InvalidArgument(f"rrf_k must be between 0 and {limits.rrf_k_max}, "
                                         f"got {rrf_k}")
        depth = min(limits.top_k_max, max(top_k * 4, 20))
        sub_options = pb.SearchOptions()
        sub_options.CopyFrom(options)
        sub_options.top_k = depth
        sub_options.include_content = True
        sub_options.include_metadata = True
        vector_part, text_part = await asyncio.gather(
            self.search_vectors(pb.SearchVectorsRequest(
                dataset_id=request.dataset_id, query_vector=request.query_vector,
                options=sub_options, tenant_id=request.tenant_id)),
            self.search_by_text(pb.SearchByTextRequest(
                dataset_id=request.dataset_id, query_text=request.query_text,
                options=sub_options, tenant_id=request.tenant_id)))
        fused = fuse_rankings(
            [(r.vector.id, r.score) for r in vector_part.results],
            [(r.vector.id, r.score) for r in text_part.results], fusion, alpha, rrf_k)
        vectors = {r.vector.id: r.vector for r in text_part.results}
        vectors.update({r.vector.id: r.vector for r in vector_part.results})
        distances = {r.vector.id: r.distance for r in vector_part.results}
        results = []
        for vector_id, score, explanation in fused[:top_k]:
            vector = vectors[vector_id]
            if not options.include_content:
                vector.content = ""
            if not options.include_metadata:
                vector.metadata.clear()
            results.append(pb.SearchResult(vector=vector, score=score,
                                           distance=distances.get(vector_id, 0.0),
                                           rank=len(results) + 1, explanation=explanation))
        stats = pb.SearchStats(
            vectors_scanned=vector_part.stats.vectors_scanned + text_part.stats.vectors_scanned,
            index_hits=vector_part.stats.index_hits + text_part.stats.index_hits,
            database_time_ms=max(vector_part.stats.database_time_ms,
                                 text_part.stats.database_time_ms))
        return pb.HybridSearchResponse(results=results, total_found=len(results),
                                       has_more=len(fused) > top_k,
                                       query_time_ms=(time.perf_counter() - started) * 1000,
                                       stats=stats)

    async def multi_dataset_search(self, request: pb.MultiDatasetSearchRequest
                                   ) -> pb.SearchVectorsResponse:
        """Searches several of one tenant's datasets and merges the hits by score, ties broken by
        (dataset, vector id). Names resolve only within the request's tenant, so another
        tenant's dataset is NotFound. The datasets must share dimensions and metric."""
        started = time.perf_counter()
        tenant = self.tenant_of(request.tenant_id)
        names = list(request.dataset_ids)
        if not names:
            raise errors.InvalidArgument("dataset_ids is empty; name at least one dataset")
        if len(names) > limits.multi_search_datasets_max:
            raise errors.InvalidArgument(
                f"dataset_ids names {len(names)} datasets, more than "
                f"multi_search_datasets_max={limits.multi_search_datasets_max}")
        for position, name in enumerate(names):
            validation.check_name(name)
            if name in names[:position]:
                raise errors.InvalidArgument(f"dataset '{name}' appears twice in dataset_ids")
        records = [await self.dataset(tenant, name) for name in names]
        check_same_shape(records)
        options = request.options
        top_k = validation.check_top_k(options.top_k or 10)
        validation.as_vector(np.asarray(request.query_vector, dtype=np.float64),
                             records[0].dimensions, records[0].metric_type,
                             what="query_vector")
        responses = await asyncio.gather(*(self.search_vectors(pb.SearchVectorsRequest(
            dataset_id=record.name, query_vector=request.query_vector, options=options,
            tenant_id=tenant)) for record in records))
        post_started = time.perf_counter()
        results = merge_dataset_results(
            [(record.name, list(response.results))
             for record, response in zip(records, responses)], top_k, options.deduplicate)
        candidates = sum(len(response.results) for response in responses)
        stats = pb.SearchStats(
            vectors_scanned=sum(r.stats.vectors_scanned for r in responses),
            index_hits=sum(r.stats.index_hits for r in responses),
            filtered_results=sum(r.stats.filtered_results for r in responses)
            + candidates - len(results),
            database_time_ms=max(r.stats.database_time_ms for r in responses),
            post_processing_time_ms=max(r.stats.post_processing_time_ms for r in responses)
            + (time.perf_counter() - post_started) * 1000)
        return pb.SearchVectorsResponse(
            results=results, total_found=len(results),
            has_more=any(r.has_more for r in responses) or candidates > len(results),
            query_time_ms=(time.perf_counter() - started) * 1000, stats=stats)

    # ---- health --------------------------------------------------------------------------------

    async def health(self) -> tuple[bool, pb.HealthCheckResponse]:
        """(healthy, the deeplake.v1 answer) of health_report."""
        healthy, response, _ = await self.health_report()
        return healthy, response

    async def health_report(self) -> tuple[bool, pb.HealthCheckResponse, dict]:
        """The deep health: (healthy, the deeplake.v1 answer, per-dependency checks).

        Unhealthy (False, 503) when the meta group has no leader, fewer than min_nodes nodes are
        registered and the cluster never had that many (a start-up gate: scaling in does not
        close it again), or a shard has no in-sync copy that is live and that this router can reach
        (a node's Status RPC answers within limits.health_node_probe_timeout_ms): then this
        router cannot serve that shard. "degraded" (still 200) when a node is down or cannot be
        reached but every shard keeps a serving copy (the name is in "reachability"), a shard
        has fewer in-sync copies than its replication factor, or the nodes' index backlog is
        above limits.health_index_backlog_vectors_max. A frozen node that holds copies is thus
        503 exactly when some shard lives on it alone.

        checks: {"meta": {status, leader, term | error}, "nodes": {node_id: {status, address,
        copies, latency_ms, pending_index, vectors | error}}, "index_backlog": {status,
        pending_vectors, limit}, "shards": {status, unserved, under_replicated}}, each status
        "ok", "degraded" or "unhealthy"."""
        dependencies: dict[str, str] = {}
        checks: dict = {}
        healthy, degraded = True, False
        live: set[str] | None = None
        try:
            status = await self.meta.leader_status()
            dependencies["meta"] = f"leader {status.leader_raft_address}, term {status.raft_term}"
            checks["meta"] = {"status": "ok", "leader": status.leader_raft_address,
                              "term": status.raft_term}
            drained = {n for n, r in self.catalog.state.nodes.items() if r.state == "drained"}
            registered = set(status.registered_nodes) - drained
            live = set(status.live_nodes)
            dependencies["nodes"] = f"{len(live & registered)}/{len(registered)} live"
            # A start-up gate: once the cluster has had min_nodes nodes, a drain or a removal
            # (fewer nodes on purpose) does not close it again (MetaState.nodes_peak).
            if len(registered) < self.min_nodes and \
                    self.catalog.state.nodes_peak < self.min_nodes:
                healthy = False
                dependencies["nodes"] += f"; waiting for {self.min_nodes} node(s)"
            elif registered - live:
                degraded = True
                dependencies["nodes"] += f"; down: {', '.join(sorted(registered - live))}"
        except errors.TributaryError as exc:
            healthy = False
            dependencies["meta"] = f"no leader: {exc.message}"
            checks["meta"] = {"status": "unhealthy", "error": exc.message}
        nodes, unreachable_holders, backlog = await self._probe_nodes(live)
        checks["nodes"] = nodes
        if live is not None:
            # A shard is served when one of its in-sync copies is live and reachable from here.
            unserved, under = shard_health(self.catalog.state, live - set(unreachable_holders))
            if unserved:
                healthy = False
                dependencies["shards"] = (f"{len(unserved)} shard(s) without a serving copy: "
                                          f"{', '.join(unserved[:5])}")
            elif under:
                degraded = True
                dependencies["shards"] = (f"{len(under)} shard(s) under-replicated: "
                                          f"{', '.join(under[:5])}")
            checks["shards"] = {"status": "unhealthy" if unserved else "degraded" if under
                                else "ok", "unserved": unserved, "under_replicated": under}
        if unreachable_holders:
            degraded = True
            dependencies["reachability"] = (f"cannot reach node(s) holding shards: "
                                            f"{', '.join(unreachable_holders)}")
        elif any(n["status"] != "ok" for n in nodes.values()):
            degraded = True
        backlog_high = backlog > limits.health_index_backlog_vectors_max
        degraded = degraded or backlog_high
        dependencies["index_backlog"] = f"{backlog} vector(s) pending"
        checks["index_backlog"] = {"status": "degraded" if backlog_high else "ok",
                                   "pending_vectors": backlog,
                                   "limit": limits.health_index_backlog_vectors_max}
        response = pb.HealthCheckResponse(
            status="unhealthy" if not healthy else "degraded" if degraded else "healthy",
            service="tributary-router", version=__version__, timestamp=_timestamp(_now_ms()),
            dependencies=dependencies)
        return healthy, response, checks

    async def _probe_nodes(self, live: set[str] | None) -> tuple[dict, list[str], int]:
        """Asks every registered, undrained node for its Status at once: (per-node checks,
        the unreachable nodes that hold shard copies, the summed index backlog)."""
        state = self.catalog.state
        copies: dict[str, int] = defaultdict(int)
        for record in state.datasets.values():
            for shard in range(record.shard_count):
                for node in record.copies_of(shard):
                    copies[node] += 1
        timeout_s = limits.health_node_probe_timeout_ms / 1000

        async def probe(node) -> tuple[str, dict]:
            doc = {"address": node.address, "copies": copies.get(node.node_id, 0)}
            started = time.perf_counter()
            try:
                answer = await asyncio.wait_for(self.shards.status(node.address, timeout_s),
                                                timeout_s)
            except (errors.TributaryError, asyncio.TimeoutError) as exc:
                return node.node_id, {**doc, "status": "unhealthy" if doc["copies"] else
                                      "degraded", "error": getattr(exc, "message", None)
                                      or "no answer in time"}
            status = "ok" if live is None or node.node_id in live else "degraded"
            return node.node_id, {**doc, "status": status,
                                  "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                                  "vectors": answer.vector_count,
                                  "pending_index": answer.pending_index_count}
        found = dict(await asyncio.gather(*(probe(n) for n in state.nodes.values()
                                            if n.state != "drained")))
        unreachable = sorted(n for n, doc in found.items() if "error" in doc and doc["copies"])
        backlog = sum(doc.get("pending_index", 0) for doc in found.values())
        return found, unreachable, backlog

    async def ready(self) -> tuple[bool, str]:
        """Whether this router can serve: it has a catalog and the meta group has a leader
        (cheap: no node is asked). (ready, reason)."""
        if self.catalog.state.version == 0:
            return False, "no catalog yet"
        try:
            await self.meta.leader_status()
        except errors.TributaryError as exc:
            return False, f"no meta leader: {exc.message}"
        return True, "ready"

    async def service_stats(self) -> dict:
        """GET /stats: catalog counts, node liveness, router uptime and the limits (REST only; no
        deeplake.v1 message holds it). Answers from the cached catalog when the meta group is
        unreachable, and says so in `meta`."""
        meta = "ok"
        try:
            await self.catalog.refresh()
        except errors.TributaryError as exc:
            meta = f"catalog refresh failed, cached state shown: {exc.message}"
        live: list[str] | None = None
        try:
            live = sorted((await self.meta.leader_status()).live_nodes)
        except errors.TributaryError as exc:
            meta = f"no leader: {exc.message}"
        state = self.catalog.state
        per_tenant = {tenant: 0 for tenant in state.tenants}
        for record in state.datasets.values():
            per_tenant[record.tenant_id] = per_tenant.get(record.tenant_id, 0) + 1
        return {
            "catalog_version": state.version,
            "tenants": len(state.tenants),
            "datasets": len(state.datasets),
            "nodes": sorted(state.nodes),
            "node_count": len(state.nodes),
            "live_nodes": live,
            "live_node_count": None if live is None else len(live),
            "datasets_per_tenant": dict(sorted(per_tenant.items())),
            "router_uptime_s": round(time.monotonic() - self.started_monotonic, 3),
            "version": __version__,
            "meta": meta,
            "limits": limits.as_dict(),
        }
