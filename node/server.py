"""`tributary node`: serves shard replicas over internal gRPC (proto/node.proto).

On start the node registers with the meta group, starts heartbeats and a catalog cache, and
reopens the replicas it finds on disk for datasets the catalog still places on it. Replicas of
datasets no longer in the catalog are removed. Every request carries the placement epoch it was
planned with: an older epoch than the catalog's, or a shard the catalog places elsewhere, is
refused with StaleEpoch so the router refreshes and retries (fencing).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import os
import shutil
import signal
import time
import uuid

import grpc
import numpy as np

from consensus import commands
from consensus.client import CatalogCache, MetaClient
from consensus.state import DatasetRecord
from node.convert import (fill_vector, record_to_proto, records_from_protos,
                          update_records_from_protos)
from node import backup
from node import metrics as node_metrics
from node.replication import Replication, write_effect
from node.search_frames import SearchFrameServer
from node.split import Splitter, only_owned
from node.txn import Participant
from proto import node_pb2, node_pb2_grpc
from shard import filter_eval, filter_parse
from shard.records import ExistingPolicy
from shard.replica import ShardReplica, directory_bytes
from shard.versions import ViewCache
from tributary import cluster_auth, event_loop, faults, limits, netaddr, tracing
from tributary.errors import (Aborted, DeadlineExceeded, Internal, InvalidArgument, NotFound,
                              StaleEpoch, TributaryError)
from tributary.validation import as_vector, unpack_vector
from tributary.periodic import Periodic

log = logging.getLogger("tributary.node")


# The roles a request to a shard can need (ShardHost.dataset_for).
PRIMARY, READ, COPY = "write", "read", "replication request"


class ShardHost:
    """Owns the open replicas of this node and the fencing checks in front of them."""

    def __init__(self, node_id: str, data_dir: str, catalog: CatalogCache):
        self.node_id = node_id
        self.data_dir = data_dir
        self.catalog = catalog
        self.replicas: dict[tuple[str, int], ShardReplica] = {}
        self._open_lock = asyncio.Lock()
        # Replicas opened from disk before the catalog came (preopen_from_disk), for
        # reopen_from_disk to keep or close.
        self._preopened: dict[tuple[str, int], ShardReplica] = {}

    def shard_path(self, dataset_uuid: str, shard: int) -> str:
        # Paths derive from internal ids only, never from user-given names.
        return os.path.join(self.data_dir, "shards", str(uuid.UUID(dataset_uuid)), str(shard))

    async def dataset_for(self, ref: node_pb2.ShardRef, role: str = READ) -> DatasetRecord:
        """The dataset record, after the fencing checks for a request of `role`: PRIMARY (writes)
        only on the shard's primary, READ on an in-sync copy, COPY (replication) on any copy.
        A request planned on an older epoch is refused with StaleEpoch; one planned on a newer
        epoch than this node knows makes it refresh its catalog first."""
        record = self.catalog.state.datasets.get(ref.dataset_uuid)
        if record is None or ref.epoch > record.epoch or not self._serves(record, ref.shard,
                                                                           role):
            await self.catalog.refresh(linearizable=True)
            record = self.catalog.state.datasets.get(ref.dataset_uuid)
        if record is None:
            raise NotFound("dataset not found (it may have been deleted)")
        if role != COPY and ref.epoch < record.epoch:
            raise StaleEpoch(f"placement epoch {ref.epoch} is older than {record.epoch}")
        if not 0 <= ref.shard < record.shard_count or not self._serves(record, ref.shard, role):
            raise StaleEpoch(f"node {self.node_id} does not serve {role}s of shard {ref.shard}")
        return record

    def _serves(self, record: DatasetRecord, shard: int, role: str) -> bool:
        if not 0 <= shard < record.shard_count:
            return False
        if role == PRIMARY:
            return record.primary_of(shard) == self.node_id
        if role == READ:
            return self.node_id in record.in_sync_of(shard)
        return self.node_id in record.copies_of(shard)

    async def replica(self, ref: node_pb2.ShardRef, role: str = READ
                      ) -> tuple[DatasetRecord, ShardReplica]:
        record = await self.dataset_for(ref, role)
        key = (ref.dataset_uuid, ref.shard)
        replica = self.replicas.get(key)
        if replica is None:
            async with self._open_lock:
                replica = self.replicas.get(key)
                if replica is None:
                    replica = await asyncio.to_thread(
                        ShardReplica, self.shard_path(ref.dataset_uuid, ref.shard),
                        record.dimensions, record.metric_type, record.index_type or "hnsw")
                    self.replicas[key] = replica
        return record, replica

    def replica_now(self, ref: node_pb2.ShardRef) -> tuple[DatasetRecord, ShardReplica] | None:
        """What replica(ref) gives for a read, when it can give it without waiting: the epoch
        is the catalog's, this node serves the shard and its replica is open. None otherwise
        (replica() then refreshes, refuses or opens, as it always does)."""
        record = self.catalog.state.datasets.get(ref.dataset_uuid)
        if record is None or ref.epoch != record.epoch or not self._serves(record, ref.shard,
                                                                           READ):
            return None
        replica = self.replicas.get((ref.dataset_uuid, ref.shard))
        return None if replica is None else (record, replica)

    async def replica_unfenced(self, dataset_uuid: str, shard: int) -> ShardReplica | None:
        """The replica for applying an already-decided txn: no epoch check, since the decision
        was made under the epoch the txn prepared with. None if the dataset is gone."""
        key = (dataset_uuid, shard)
        if key in self.replicas:
            return self.replicas[key]
        record = self.catalog.state.datasets.get(dataset_uuid)
        if record is None:
            return None
        async with self._open_lock:
            if key not in self.replicas:
                self.replicas[key] = await asyncio.to_thread(
                    ShardReplica, self.shard_path(dataset_uuid, shard), record.dimensions,
                    record.metric_type, record.index_type or "hnsw")
        return self.replicas[key]

    def _shard_dirs(self) -> list[tuple[str, str]]:
        root = os.path.join(self.data_dir, "shards")
        if not os.path.isdir(root):
            return []
        return [(dataset_uuid, shard_name) for dataset_uuid in os.listdir(root)
                for shard_name in os.listdir(os.path.join(root, dataset_uuid))]

    async def preopen_from_disk(self) -> None:
        """Opens, one by one, the HNSW replicas on disk whose last graph save names their
        shape, while the node waits for the meta group (opening a 500k-row shard takes seconds
        that used to follow the wait). Nothing is served from them: reopen_from_disk keeps
        those the catalog places here, with that shape, and closes the rest. A replica that
        fails to open here is opened again there, which reports the error."""
        for dataset_uuid, shard_name in self._shard_dirs():
            if not shard_name.isdigit():
                continue
            path = self.shard_path(dataset_uuid, int(shard_name))
            shape = ShardReplica.saved_shape(path)
            if shape is None:
                continue
            try:
                self._preopened[(dataset_uuid, int(shard_name))] = await asyncio.to_thread(
                    ShardReplica, path, shape[0], shape[1], "hnsw")
            except Exception:  # noqa: BLE001 - reopen_from_disk opens it again and reports
                log.exception("opening %s ahead of the catalog failed", path)

    def _take_preopened(self, record: DatasetRecord, shard: int) -> ShardReplica | None:
        replica = self._preopened.pop((record.uuid, shard), None)
        if replica is None:
            return None
        if (replica.dimensions, replica.metric, replica.index_type) == \
                (record.dimensions, record.metric_type, record.index_type or "hnsw"):
            return replica
        replica.close()
        return None

    async def reopen_from_disk(self) -> None:
        try:
            await self._reopen_from_disk()
        finally:
            # Opened ahead of the catalog for a copy that is not (or no longer) served here.
            leftovers, self._preopened = list(self._preopened.values()), {}
            for replica in leftovers:
                await asyncio.to_thread(replica.close)

    async def _reopen_from_disk(self) -> None:
        state = self.catalog.state
        for dataset_uuid, shard_name in self._shard_dirs():
            record = state.datasets.get(dataset_uuid)
            if not shard_name.isdigit():
                # A snapshot cut or download left behind by a crash.
                await asyncio.to_thread(shutil.rmtree, os.path.join(
                    self.data_dir, "shards", dataset_uuid, shard_name), True)
                continue
            shard = int(shard_name)
            path = self.shard_path(dataset_uuid, shard)
            reshard = state.reshards.get(dataset_uuid)
            if record is not None and reshard is not None and \
                    record.shard_count <= shard < reshard.new_count:
                continue    # a split's child: node/split.py reopens or drops it
            if record is None:
                log.info("removing replica of deleted dataset %s/%d", dataset_uuid, shard)
                await self._close_preopened(dataset_uuid, shard)
                await asyncio.to_thread(shutil.rmtree, path, True)
                continue
            if shard < record.shard_count and self.node_id in record.copies_of(shard):
                replica = self._take_preopened(record, shard) or await asyncio.to_thread(
                    ShardReplica, path, record.dimensions, record.metric_type,
                    record.index_type or "hnsw")
                self.replicas[(dataset_uuid, shard)] = replica
                log.info("reopened replica %s/%d with %d vectors", dataset_uuid, shard,
                         replica.count())
            else:
                # The copy moved to another node while this one was away.
                log.info("removing copy %s/%d, placed elsewhere now", dataset_uuid, shard)
                await self._close_preopened(dataset_uuid, shard)
                await asyncio.to_thread(shutil.rmtree, path, True)

    async def _close_preopened(self, dataset_uuid: str, shard: int) -> None:
        replica = self._preopened.pop((dataset_uuid, shard), None)
        if replica is not None:
            await asyncio.to_thread(replica.close)

    async def drop(self, dataset_uuid: str, shard: int) -> bool:
        replica = self.replicas.pop((dataset_uuid, shard), None)
        path = self.shard_path(dataset_uuid, shard)
        existed = replica is not None or os.path.isdir(path)
        await asyncio.to_thread(shutil.rmtree, path, True)
        return existed

    def close(self) -> None:
        for replica in self.replicas.values():
            replica.close()


def _guarded(handler):
    async def wrapper(self, request, context):
        try:
            return await handler(self, request, context)
        except TributaryError as exc:
            await context.abort(exc.grpc_code, exc.to_wire())
        except Exception as exc:  # noqa: BLE001 - surface as Internal, keep the node serving
            log.exception("internal error in %s", handler.__name__)
            await context.abort(grpc.StatusCode.INTERNAL,
                                Internal(f"{type(exc).__name__}: {exc}").to_wire())
    wrapper.__name__ = handler.__name__
    return wrapper


def _compiled_filter(request) -> filter_eval.CompiledFilter | None:
    ast = filter_parse.build_filter_ast(dict(request.filters) or None,
                                        request.filter_expression or None)
    return filter_eval.compile_filter(ast) if ast is not None else None


def _query_of(request, record: DatasetRecord) -> np.ndarray:
    if request.query_values:
        return unpack_vector(request.query_values, record.dimensions, record.metric_type,
                             what="query_vector")
    return as_vector(np.asarray(request.query_vector, dtype=np.float64), record.dimensions,
                     record.metric_type, what="query_vector")


def _batchable(request) -> bool:
    """Whether a search can join a knn_query batch: the plain kind (ShardReplica.search_batch)."""
    return not (request.as_of_tag or request.exact or request.include_values
                or request.filter_expression or request.filters)


def _queries_of(searches, record: DatasetRecord) -> np.ndarray | None:
    """The queries of plain searches of one dataset as one (n, d) float32 matrix, each checked
    by _query_of; None when one is invalid (the caller's full path then answers its error).
    Row by row on purpose: a join and vectorized checks cost more at the few queries a message
    holds (12-21 us against 3.5 us per query at 128-d)."""
    try:
        if len(searches) == 1:
            return _query_of(searches[0], record).reshape(1, -1)
        return np.stack([_query_of(item, record) for item in searches])
    except TributaryError:
        return None


def _packs(request) -> bool:
    return request.packed and not (request.include_content or request.include_metadata
                                   or request.include_values)


def _failed(exc: BaseException) -> node_pb2.ShardSearchOutcome:
    if not isinstance(exc, TributaryError):
        log.error("internal error in a batched search", exc_info=exc)
        exc = Internal(f"{type(exc).__name__}: {exc}")
    return node_pb2.ShardSearchOutcome(error=exc.to_wire(), error_code=exc.grpc_code.value[0])


def _search_response(outcome, dimensions: int, packed: bool = False
                     ) -> node_pb2.ShardSearchResponse:
    response = node_pb2.ShardSearchResponse()
    _fill_search_response(response, outcome, dimensions, packed)
    return response


def _fill_search_response(response: node_pb2.ShardSearchResponse, outcome, dimensions: int,
                          packed: bool) -> None:
    """Fills `response` in place (a message built first and then handed to its parent would be
    copied once more). An outcome with columns (HitColumns) answers packed; the replica gives
    columns only to a search that asked for the packed form."""
    response.vectors_scanned = outcome.vectors_scanned
    response.index_hits = outcome.index_hits
    response.database_time_ms = outcome.database_time_ms
    response.filtered_out = outcome.filtered_out
    response.strategy = outcome.strategy
    if outcome.columns is not None:
        assert packed, "columns are given only to a search that asked for packed hits"
        _pack_columns(response.packed, outcome.columns)
        return
    if packed:
        _pack_hits(response.packed, outcome.hits)
        return
    # Hits are filled in place: building ShardHit messages first copied every vector twice.
    for h in outcome.hits:
        hit = response.hits.add()
        fill_vector(hit.vector, h.record, dimensions)
        hit.score = h.score
        hit.distance = h.distance


def _pack_columns(packed: node_pb2.PackedHits, columns) -> None:
    """PackedHits from a replica's HitColumns: each column is one numpy -> bytes copy; only the
    sparse short fields, when some hit has any, take a message per hit."""
    if not columns.ids:
        return
    packed.ids.extend(columns.ids)
    packed.scores = columns.scores.astype(_F32, copy=False).tobytes()
    packed.distances = columns.distances.astype(_F32, copy=False).tobytes()
    packed.created_at_ms = columns.created_at_ms.astype(_I64, copy=False).tobytes()
    packed.updated_at_ms = columns.updated_at_ms.astype(_I64, copy=False).tobytes()
    if columns.fields:
        for values in columns.fields:
            vector = packed.fields.add()
            for name, value in values.items():
                setattr(vector, name, value)


# PackedHits' column types: little-endian whatever the host.
_F32, _I64 = np.dtype("<f4"), np.dtype("<i8")


def _pack_hits(packed: node_pb2.PackedHits, hits) -> None:
    """The hits as columns (node.proto PackedHits): ids, float32 scores and distances, int64
    times, and the short fields only when some hit has one."""
    count = len(hits)
    records = [h.record for h in hits]
    packed.ids.extend([r.id for r in records])
    packed.scores = np.fromiter((h.score for h in hits), _F32, count).tobytes()
    packed.distances = np.fromiter((h.distance for h in hits), _F32, count).tobytes()
    packed.created_at_ms = np.fromiter((r.created_at_ms for r in records), _I64,
                                       count).tobytes()
    packed.updated_at_ms = np.fromiter((r.updated_at_ms for r in records), _I64,
                                       count).tobytes()
    if any(r.chunk_index or r.chunk_count or any(getattr(r, name) for name in _SHORT_TEXT)
           for r in records):
        for r in records:
            vector = packed.fields.add()
            for name in _SHORT_TEXT:
                value = getattr(r, name)
                if value:
                    setattr(vector, name, value)
            if r.chunk_index:
                vector.chunk_index = r.chunk_index
            if r.chunk_count:
                vector.chunk_count = r.chunk_count


# The short text fields a packed hit carries (PackedHits.fields); content is never packed.
_SHORT_TEXT = ("document_id", "chunk_id", "content_hash", "content_type", "language", "model")


class _StreamOutbox:
    """The responses of one search stream waiting to be written, in order. With merging (the
    router set merged_answers), an answer joins the last response not yet taken by the writer,
    as one of its `more`, up to limits.search_stream_answers_per_write_max answers in one
    response: answers that finish while a write is on its way leave in the next write together.
    Answers are filled in place (slot), so joining copies nothing. One event loop uses it."""

    def __init__(self):
        self._waiting: collections.deque = collections.deque()
        self._ready = asyncio.Event()
        self._closed = False
        self._last_joined = False

    def slot(self, ticket: int, merging: bool) -> node_pb2.ShardSearchStreamResponse:
        """The answer to fill for `ticket`: a response of its own, or an entry of the last
        waiting response's `more`. The caller fills it before it next awaits."""
        if merging and self._waiting and \
                len(self._waiting[-1].more) + 1 < limits.search_stream_answers_per_write_max:
            answer = self._waiting[-1].more.add()
            self._last_joined = True
        else:
            answer = node_pb2.ShardSearchStreamResponse()
            self._waiting.append(answer)
            self._last_joined = False
            self._ready.set()
        answer.ticket = ticket
        return answer

    def give_back(self) -> None:
        """Removes the slot just taken, unfilled (no await came in between)."""
        if self._last_joined:
            del self._waiting[-1].more[-1]
        else:
            self._waiting.pop()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def next(self) -> node_pb2.ShardSearchStreamResponse | None:
        """The oldest waiting response (no answer joins it any more), or None once closed and
        empty."""
        while not self._waiting:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._waiting.popleft()


class ShardNodeService(node_pb2_grpc.ShardNodeServicer):
    def __init__(self, host: ShardHost, participant: Participant, replication: Replication):
        self.host = host
        self.participant = participant
        self.replication = replication
        # Old versions open for reads (shard/versions.py), bounded.
        self.views = ViewCache()
        # Where this node takes search frames (node/search_frames.py); "" for none.
        self.search_frames_address = ""

    @_guarded
    async def Write(self, request, context):
        """A one-shard batch: one phase, but it still honours the locks of prepared txns.
        With update_paths it is an update: ShardReplica.update merges the named fields into the
        stored rows under the replica's lock. The write reaches every in-sync copy before it is
        acknowledged (node/replication.py)."""
        record, replica = await self.host.replica(request.shard, PRIMARY)
        paths = frozenset(request.update_paths)
        if paths:
            if request.delete_ids or request.existing != node_pb2.EXISTING_REQUIRE:
                raise InvalidArgument("an update (update_paths) is a write of existing "
                                      "vectors only: EXISTING_REQUIRE and no deletes")
            upserts = update_records_from_protos(request.upserts, paths, record.dimensions,
                                                 record.metric_type, request.upsert_values)
        else:
            upserts = records_from_protos(request.upserts, record.dimensions,
                                          record.metric_type, request.upsert_values)
        ids = [v.id for v in upserts] + list(request.delete_ids)
        locks = self.participant.locks_for(request.shard.dataset_uuid, request.shard.shard)
        holder = f"write-{uuid.uuid4().hex}"
        await locks.acquire(list(dict.fromkeys(ids)), holder, limits.txn_lock_wait_ms / 1000)
        try:
            async with self.replication.write_lock(record.uuid, request.shard.shard):
                record = await self._primary_record(request.shard)
                # A retry of a write this copy already holds (taken over from a deposed
                # primary's log, or applied here before an error) answers what it did.
                earlier = self.replication.outcome_of(record.uuid, request.shard.shard,
                                                      request.write_id)
                if earlier is not None:
                    return earlier
                # Log first, then apply: the op log never misses rows the store holds (a crash
                # in between leaves an op that the restart applies again).
                if paths:
                    result = await asyncio.to_thread(replica.plan_update, upserts, paths)
                else:
                    result = await asyncio.to_thread(replica.plan_write, upserts,
                                                     list(request.delete_ids),
                                                     ExistingPolicy(int(request.existing)))
                effect = write_effect(request, result.skipped_ids)
                effect.at_ms = int(time.time() * 1000)
                if request.write_id:
                    effect.outcome.CopyFrom(_write_response(result))
                if effect.write.upserts or effect.write.delete_ids:
                    await self.replication.log_apply_send(record, request.shard.shard, effect,
                                                          faults.PRIMARY_AFTER_LOG)
        finally:
            await locks.release(holder)
        return _write_response(result)

    @_guarded
    async def Prepare(self, request, context):
        return await self.participant.prepare(request)

    @_guarded
    async def Commit(self, request, context):
        return node_pb2.TxnResponse(applied=await self.participant.commit(request.txn_id,
                                                                          request.shard))

    @_guarded
    async def Abort(self, request, context):
        return node_pb2.TxnResponse(applied=await self.participant.abort(request.txn_id,
                                                                         request.shard))

    @_guarded
    async def Get(self, request, context):
        if request.as_of_tag:
            record, view = await self._version_view(request.shard, request.as_of_tag)
            found = await asyncio.to_thread(view.get, list(request.ids), request.include_values)
            return node_pb2.GetResponse(vectors=[record_to_proto(r, record.dimensions)
                                                 for r in found])
        record, replica = await self.host.replica(request.shard)
        await self.participant.locks_for(request.shard.dataset_uuid, request.shard.shard
                                         ).wait_unlocked(list(request.ids),
                                                         limits.txn_prepared_timeout_ms / 1000)
        found = await asyncio.to_thread(replica.get, list(request.ids), request.include_values)
        return node_pb2.GetResponse(vectors=[record_to_proto(r, record.dimensions)
                                             for r in found])

    @_guarded
    async def Search(self, request, context):
        return await self._search(request)

    async def _search(self, request) -> node_pb2.ShardSearchResponse:
        if request.as_of_tag:
            record, view = await self._version_view(request.shard, request.as_of_tag)
            query = unpack_vector(request.query_values, record.dimensions, record.metric_type,
                                  what="query_vector")
            outcome = await asyncio.to_thread(
                view.search, query, request.top_k, request.include_content,
                request.include_metadata, request.include_values, _compiled_filter(request))
            return _search_response(outcome, record.dimensions, _packs(request))
        record, replica = await self.host.replica(request.shard)
        query = _query_of(request, record)
        where = _compiled_filter(request)
        outcome = None
        if where is None and not (request.include_content or request.include_metadata
                                  or request.include_values or request.exact):
            # A plain search is answered right here when it needs no waiting (see search_now).
            outcome = replica.search_now(query, request.top_k, request.ef_search)
        if outcome is None:
            outcome = await asyncio.to_thread(
                replica.search, np.asarray(query), request.top_k, request.ef_search,
                request.include_content, request.include_metadata, request.include_values,
                where, request.exact)
        return _search_response(outcome, record.dimensions, _packs(request))

    @_guarded
    async def SearchBatch(self, request, context):
        return await self._search_batch(list(request.searches))

    async def SearchStream(self, requests, context):
        """The long-lived search stream of one router (node.proto SearchStream): every message
        is a batch answered as SearchBatch answers it, under the message's ticket, as soon as it
        is done (answers may overtake each other). A batch still running after the message's
        timeout_ms answers DEADLINE_EXCEEDED for each of its searches. Fencing is per search,
        as in SearchBatch: each names its dataset, shard and epoch. The stream ends when the
        router closes it; a message without a valid cluster proof ends it (cluster_auth).
        To a router that sets merged_answers, the answers finished while the previous response
        was being written go out together in one response (_StreamOutbox)."""
        outbox = _StreamOutbox()
        running: set[asyncio.Task] = set()

        async def answer(message: node_pb2.ShardSearchStreamRequest) -> None:
            batch = await self.answer_message(message)
            outbox.slot(message.ticket, message.merged_answers).batch.CopyFrom(batch)

        async def read() -> None:
            try:
                async for message in requests:
                    # The answer is built right in the response that will carry it; a search
                    # that needs more than the inline path gives its slot back.
                    slot = outbox.slot(message.ticket, message.merged_answers)
                    try:
                        answered = self.answer_message_now(message, slot.batch)
                    except BaseException:
                        outbox.give_back()  # never a half-built answer; the stream ends
                        raise
                    if answered:
                        continue
                    outbox.give_back()
                    task = asyncio.ensure_future(answer(message))
                    running.add(task)
                    task.add_done_callback(running.discard)
                if running:
                    await asyncio.gather(*list(running), return_exceptions=True)
            finally:
                outbox.close()

        reader = asyncio.ensure_future(read())
        try:
            while True:
                response = await outbox.next()
                if response is None:
                    break
                yield response
            await reader    # the reader's error (a refused proof) ends the stream with it
        finally:
            reader.cancel()
            for task in list(running):
                task.cancel()

    def answer_message_now(self, message: node_pb2.ShardSearchStreamRequest,
                           into: node_pb2.ShardSearchBatchResponse) -> bool:
        """Fills `into` with the answer to one stream message or search frame when it needs no
        waiting (_search_batch_now), with its one observation of the search histogram; False
        (and `into` untouched) when it needs answer_message."""
        started = time.perf_counter()
        if self._search_batch_now(message.batch.searches, into) is None:
            return False
        node_metrics.SEARCH_SECONDS.observe(time.perf_counter() - started)
        return True

    async def answer_message(self, message: node_pb2.ShardSearchStreamRequest
                             ) -> node_pb2.ShardSearchBatchResponse:
        """The answer to one stream message or search frame that answer_message_now could not
        give inline: every search answers, with DEADLINE_EXCEEDED once the message's
        timeout_ms has passed. One observation of the search histogram per message, as the
        unary Search and SearchBatch have one per call."""
        started = time.perf_counter()
        searches = list(message.batch.searches)
        try:
            async with asyncio.timeout((message.timeout_ms or limits.node_rpc_timeout_ms) / 1000):
                batch = await self._search_batch(searches)
        except TimeoutError:
            late = _failed(DeadlineExceeded(
                f"the search took longer than its {message.timeout_ms} ms"))
            batch = node_pb2.ShardSearchBatchResponse(outcomes=[late] * len(searches))
        except Exception as exc:  # noqa: BLE001 - every search of the message answers
            batch = node_pb2.ShardSearchBatchResponse(outcomes=[_failed(exc)] * len(searches))
        node_metrics.SEARCH_SECONDS.observe(time.perf_counter() - started)
        return batch

    def _search_batch_now(self, searches, into: node_pb2.ShardSearchBatchResponse | None = None
                          ) -> node_pb2.ShardSearchBatchResponse | None:
        """_search_batch's answer when it needs no waiting: every search plain, fenced with
        the catalog at hand (ShardHost.replica_now), and run inline by search_batch as
        _search_batch would run it. None when any search needs more (an error included);
        _search_batch then answers all of them. Saves a task per stream message. The answer
        is filled into `into` when given (and `into` is left untouched when None is
        returned)."""
        if not searches:
            return None
        first = searches[0]
        ef_search = first.ef_search
        fence = None
        for item in searches:
            if not _batchable(item) or item.ef_search != ef_search:
                return None
            ref = item.shard
            key = (ref.dataset_uuid, ref.shard, ref.epoch)
            if key != fence:
                if fence is not None:
                    return None     # several shards in one message: rare, the full path
                found = self.host.replica_now(ref)
                if found is None:
                    return None
                fence = key
        record, replica = found
        if len(searches) > limits.search_batch_inline_queries_max:
            return None
        queries = _queries_of(searches, record)
        if queries is None:
            return None
        outcomes = replica.search_batch(
            queries, [item.top_k for item in searches], ef_search,
            [item.include_content for item in searches],
            [item.include_metadata for item in searches], blocking=False,
            packed=[_packs(item) for item in searches])
        if outcomes is None:
            return None
        batch = node_pb2.ShardSearchBatchResponse() if into is None else into
        dimensions = record.dimensions
        for item, outcome in zip(searches, outcomes):
            _fill_search_response(batch.outcomes.add().response, outcome, dimensions,
                                  _packs(item))
        return batch

    async def _search_batch(self, searches: list) -> node_pb2.ShardSearchBatchResponse:
        """Each search answers on its own (an error is its outcome, the others go on). Plain
        searches of one shard at one ef run as one knn_query batch (ShardReplica.search_batch);
        the others (filtered, exact, at a version, with values) run one by one as Search
        would run them."""
        outcomes: list = [None] * len(searches)
        groups: dict[tuple, list] = {}
        singles = []
        for position, item in enumerate(searches):
            if not _batchable(item):
                singles.append(position)
                continue
            try:
                record, replica = await self.host.replica(item.shard)
                query = _query_of(item, record)
            except Exception as exc:  # noqa: BLE001 - this search's outcome, not the batch's
                outcomes[position] = _failed(exc)
                continue
            groups.setdefault((id(replica), item.ef_search), []).append(
                (position, record, replica, query))

        async def run_group(members: list) -> None:
            _, _, replica, _ = members[0]
            items = [searches[position] for position, _, _, _ in members]
            arguments = (np.stack([query for _, _, _, query in members]),
                         [item.top_k for item in items], items[0].ef_search,
                         [item.include_content for item in items],
                         [item.include_metadata for item in items])
            try:
                found = None
                packed = [_packs(item) for item in items]
                if len(members) <= limits.search_batch_inline_queries_max:
                    # As search_now: a small batch that needs no waiting runs right here (the
                    # hand-off to a worker thread cost about a tenth of a node's search CPU).
                    found = replica.search_batch(*arguments, blocking=False, packed=packed)
                if found is None:
                    found = await asyncio.to_thread(replica.search_batch, *arguments,
                                                    packed=packed)
            except Exception as exc:  # noqa: BLE001
                for position, _, _, _ in members:
                    outcomes[position] = _failed(exc)
                return
            for (position, record, _, _), item, outcome in zip(members, items, found):
                outcomes[position] = node_pb2.ShardSearchOutcome(
                    response=_search_response(outcome, record.dimensions, _packs(item)))

        async def run_single(position: int) -> None:
            try:
                outcomes[position] = node_pb2.ShardSearchOutcome(
                    response=await self._search(searches[position]))
            except Exception as exc:  # noqa: BLE001
                outcomes[position] = _failed(exc)

        if len(groups) == 1 and not singles:
            await run_group(next(iter(groups.values())))     # no task for the common case
        else:
            await asyncio.gather(*(run_group(members) for members in groups.values()),
                                 *(run_single(position) for position in singles))
        return node_pb2.ShardSearchBatchResponse(outcomes=outcomes)

    @_guarded
    async def TextSearch(self, request, context):
        record, replica = await self.host.replica(request.shard)
        outcome = await asyncio.to_thread(
            replica.text_search, request.query_text, request.top_k, request.include_content,
            request.include_metadata, False, _compiled_filter(request))
        return _search_response(outcome, record.dimensions)

    @_guarded
    async def SoftDelete(self, request, context):
        return await self._on_ids(request, ShardReplica.soft_delete)

    @_guarded
    async def Restore(self, request, context):
        return await self._on_ids(request, ShardReplica.restore)

    async def _on_ids(self, request, operation) -> node_pb2.IdsResponse:
        """Soft delete or restore: waits for in-doubt txns on the ids, then one commit, which
        reaches every in-sync copy before it is acknowledged."""
        record, replica = await self.host.replica(request.shard, PRIMARY)
        ids = list(request.ids)
        await self.participant.locks_for(request.shard.dataset_uuid, request.shard.shard
                                         ).wait_unlocked(ids, limits.txn_lock_wait_ms / 1000)
        async with self.replication.write_lock(record.uuid, request.shard.shard):
            record = await self._primary_record(request.shard)
            now_ms = int(time.time() * 1000)
            kind = "soft_delete" if operation is ShardReplica.soft_delete else "restore"
            op = node_pb2.ReplicatedOp(at_ms=now_ms, **{kind: node_pb2.IdsRequest(ids=ids)})
            async def apply():
                if operation is ShardReplica.soft_delete:
                    return await asyncio.to_thread(operation, replica, ids, now_ms)
                return await asyncio.to_thread(operation, replica, ids)
            # Logged first, like a write; an op that changes nothing changes nothing on copies.
            affected, missing = await self.replication.log_apply_send(
                record, request.shard.shard, op, apply=apply)
        return node_pb2.IdsResponse(affected=affected, not_found=missing)

    async def _primary_record(self, ref: node_pb2.ShardRef) -> DatasetRecord:
        """The current record under the shard's write lock (its in-sync set may have changed
        while the write waited), after the new term's resync if this is its first write."""
        record = await self.host.dataset_for(ref, PRIMARY)
        await self.replication.ensure_resynced(record, ref.shard)
        return await self.host.dataset_for(ref, PRIMARY)

    @_guarded
    async def Replicate(self, request, context):
        record = await self.host.dataset_for(request.shard, COPY)
        if record.primary_of(request.shard.shard) == self.host.node_id and \
                request.term <= record.term_of(request.shard.shard):
            raise StaleEpoch(f"node {self.host.node_id} is the primary of shard "
                             f"{request.shard.shard} in term {record.term_of(request.shard.shard)}")
        last = await self.replication.on_replicate(record, request.shard.shard, request)
        return node_pb2.ReplicateResponse(last_seq=last)

    @_guarded
    async def FetchOps(self, request, context):
        record = await self.host.dataset_for(request.shard, COPY)
        return await self.replication.on_fetch(record, request.shard.shard, request)

    async def FetchSnapshot(self, request, context):
        """Streams a snapshot of this primary's copy of the shard (Replication.snapshot_stream)."""
        try:
            record = await self.host.dataset_for(request.shard, COPY)
            if record.primary_of(request.shard.shard) != self.host.node_id:
                raise StaleEpoch(f"node {self.host.node_id} is not the primary of shard "
                                 f"{request.shard.shard}")
            async for chunk in self.replication.snapshot_stream(record, request.shard.shard):
                yield chunk
        except TributaryError as exc:
            await context.abort(exc.grpc_code, exc.to_wire())

    async def ExportShard(self, request, context):
        """Streams the shard's rows at a backup's recorded version (node/backup.py)."""
        try:
            record = await self.host.dataset_for(request.shard, COPY)
            async for chunk in backup.export_stream(self.host, record, request.shard.shard,
                                                    request.version, request.last_seq,
                                                    request.tag):
                yield chunk
        except TributaryError as exc:
            await context.abort(exc.grpc_code, exc.to_wire())

    @_guarded
    async def RestoreChunk(self, request, context):
        await self.host.dataset_for(request.shard, PRIMARY)
        return node_pb2.RestoreChunkResponse(size=await backup.restore_chunk(self.host, request))

    @_guarded
    async def InstallRestore(self, request, context):
        record = await self.host.dataset_for(request.shard, COPY if request.discard else PRIMARY)
        count = await backup.install_restore(self.host, self.replication, record, request)
        return node_pb2.InstallRestoreResponse(vector_count=count)

    @_guarded
    async def CopyStatus(self, request, context):
        record = await self.host.dataset_for(request.shard, COPY)
        return await self.replication.status(record, request.shard.shard,
                                             request.with_content_digest)

    @_guarded
    async def Compact(self, request, context):
        """Purges soft-deleted rows on every in-sync copy, then rebuilds this graph. The purge
        is a replicated write that deletes those ids (logged, applied, sent like any write), so
        the copies hold the same rows; the graph rebuild is local to each copy."""
        record, replica = await self.host.replica(request.shard, PRIMARY)
        shard = request.shard.shard
        purged: list[str] = []
        async with self.replication.write_lock(record.uuid, shard):
            record = await self._primary_record(request.shard)
            purged = await asyncio.to_thread(replica.soft_deleted_ids)
            if purged:
                effect = node_pb2.ReplicatedOp(
                    write=node_pb2.WriteRequest(delete_ids=purged,
                                                existing=node_pb2.EXISTING_OVERWRITE),
                    at_ms=int(time.time() * 1000))
                await self.replication.log_apply_send(record, shard, effect)
        report = await asyncio.to_thread(replica.compact)
        return node_pb2.CompactResponse(purged=len(purged) + report["purged"],
                                        indexed=report["indexed"], seconds=report["seconds"])

    @_guarded
    async def List(self, request, context):
        limit = max(1, min(request.limit or limits.list_page_size_max,
                           limits.list_page_size_max))
        if request.as_of_tag:
            record, view = await self._version_view(request.shard, request.as_of_tag)
            found, last, exhausted = await asyncio.to_thread(
                view.list_after, request.after_label, limit, request.include_values)
            return node_pb2.ListResponse(vectors=[record_to_proto(r, record.dimensions)
                                                  for r in found], last_label=last,
                                         exhausted=exhausted, total=view.count())
        record, replica = await self.host.replica(request.shard)
        found, last, exhausted = await asyncio.to_thread(
            replica.list_after, request.after_label, limit, request.include_values)
        found = only_owned(replica, found, self.host.catalog)
        return node_pb2.ListResponse(vectors=[record_to_proto(r, record.dimensions)
                                              for r in found], last_label=last,
                                     exhausted=exhausted, total=replica.count())

    # ---- consistent cuts and reads at a version (router/cut.py, shard/versions.py) -----------

    async def _version_view(self, ref: node_pb2.ShardRef, tag: str):
        """The shard's rows at the version its cut tagged `tag`, from any copy of the shard
        (an old version never changes, so in-sync or not makes no difference). Unavailable when
        this copy's store lacks the tag: the router asks another copy."""
        record = await self.host.dataset_for(ref, COPY)
        replica = await self.host.replica_unfenced(ref.dataset_uuid, ref.shard)
        if replica is None:
            raise NotFound("dataset not found (it may have been deleted)")
        view = await asyncio.to_thread(self.views.get, replica.store_url, tag,
                                       record.dimensions, record.metric_type,
                                       replica.store_guard())
        return record, view

    @_guarded
    async def CutShard(self, request, context):
        """The primary's part of a consistent cut: holding the shard's write lock (no write,
        soft delete or 2PC decision is half done, and every in-sync copy holds every op up to
        the log's last), tags its store's current commit and has each in-sync copy tag the
        same state. A copy that cannot is reported, not fatal: the version is read from the
        copies that did."""
        record, replica = await self.host.replica(request.shard, PRIMARY)
        shard = request.shard.shard
        async with self.replication.write_lock(record.uuid, shard):
            record = await self._primary_record(request.shard)
            oplog = self.replication.oplog(record.uuid, shard)
            seq, term = oplog.last_seq, oplog.last_term
            commit_id, count = await asyncio.to_thread(replica.mark_version, request.tag)
            ref = node_pb2.ShardRef(dataset_uuid=record.uuid, shard=shard, epoch=record.epoch)

            async def mark(node_id: str) -> node_pb2.CopyMark:
                try:
                    answer = await self.replication._call(
                        node_id, "MarkCopy", node_pb2.MarkCopyRequest(
                            shard=ref, tag=request.tag, seq=seq),
                        limits.replication_ack_timeout_ms)
                    return node_pb2.CopyMark(node_id=node_id, commit_id=answer.commit_id)
                except TributaryError as exc:
                    return node_pb2.CopyMark(node_id=node_id, error=exc.message)
            copies = await asyncio.gather(*(mark(n) for n in record.in_sync_of(shard)
                                            if n != self.host.node_id))
        return node_pb2.CutShardResponse(node_id=self.host.node_id, commit_id=commit_id,
                                         seq=seq, term=term, vector_count=count, copies=copies)

    @_guarded
    async def MarkCopy(self, request, context):
        """A copy tags its store at the primary's cut, if it holds exactly the ops up to it."""
        ref = request.shard
        await self.host.dataset_for(ref, COPY)
        key = (ref.dataset_uuid, ref.shard)
        async with self.replication._apply_lock(key):
            last = self.replication.oplog(*key).last_seq
            if last != request.seq:
                raise Aborted(f"this copy is at op {last}, not at the cut's op {request.seq}")
            replica = await self.host.replica_unfenced(*key)
            if replica is None:
                raise NotFound("dataset not found (it may have been deleted)")
            commit_id, _ = await asyncio.to_thread(replica.mark_version, request.tag)
        return node_pb2.MarkCopyResponse(commit_id=commit_id)

    @_guarded
    async def DropShard(self, request, context):
        dropped = await self.host.drop(request.shard.dataset_uuid, request.shard.shard)
        self.views.forget("file://" + os.path.join(self.host.shard_path(
            request.shard.dataset_uuid, request.shard.shard), "store"))
        self.replication.forget(request.shard.dataset_uuid, request.shard.shard)
        return node_pb2.DropShardResponse(dropped=dropped)

    @_guarded
    async def Stats(self, request, context):
        _, replica = await self.host.replica(request.shard)
        size = await asyncio.to_thread(directory_bytes, replica.path)
        return node_pb2.ShardStatsResponse(vector_count=replica.count(), storage_bytes=size,
                                           soft_deleted_count=replica.soft_deleted_count(),
                                           pending_index_count=replica.pending_count())

    @_guarded
    async def Status(self, request, context):
        return node_pb2.NodeStatusResponse(
            node_id=self.host.node_id, open_shards=len(self.host.replicas),
            vector_count=sum(r.count() for r in self.host.replicas.values()),
            prepared_txns=len(self.participant.prepared),
            locked_ids=self.participant.locked_ids(),
            max_in_doubt_ms=self.participant.max_in_doubt_ms,
            resolved_txns=self.participant.resolved,
            pending_index_count=sum(r.pending_count() for r in self.host.replicas.values()),
            soft_deleted_count=sum(r.soft_deleted_count() for r in self.host.replicas.values()),
            search_frames_address=self.search_frames_address)


def _load_node_id(data_dir: str, given: str | None) -> str:
    path = os.path.join(data_dir, "node_id")
    if os.path.exists(path):
        with open(path) as f:
            stored = f.read().strip()
        if given and given != stored:
            raise SystemExit(f"data dir {data_dir} belongs to node '{stored}', not '{given}'")
        return stored
    node_id = given or f"node-{uuid.uuid4().hex[:8]}"
    os.makedirs(data_dir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write(node_id)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)
    return node_id


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", required=True, help="internal gRPC address host:port")
    parser.add_argument("--advertise", default=None,
                        help="address routers use to reach this node (default: --listen)")
    parser.add_argument("--search-listen", default=None,
                        help="where routers' search frames come in, host:port (default: the "
                             "host of --listen, any free port; 'off': none, routers then search "
                             "over gRPC); node/search_frames.py")
    parser.add_argument("--search-advertise", default=None,
                        help="address routers use for search frames (default: the host of "
                             "--advertise and the bound port)")
    parser.add_argument("--meta", required=True,
                        help="comma-separated meta member gRPC addresses")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--node-id", default=None, help="stable node id (default: kept in data dir)")
    parser.add_argument("--zone", default=os.environ.get("TRIBUTARY_ZONE", ""),
                        help="this node's failure domain (env TRIBUTARY_ZONE); rebalancing and "
                             "drains spread each shard's copies over zones")
    parser.add_argument("--metrics", default=None,
                        help="serve Prometheus /metrics on this host:port (node/metrics.py)")
    cluster_auth.add_argument(parser)


async def serve(args: argparse.Namespace) -> None:
    token = cluster_auth.require(args, "shard node")
    node_id = _load_node_id(args.data_dir, args.node_id)
    advertise = args.advertise or args.listen
    meta = MetaClient([a for a in args.meta.split(",") if a], token)
    # with_txns: a participant resolves its prepared txns from the bookkeeping of its reads.
    catalog = CatalogCache(meta, with_txns=True)
    host = ShardHost(node_id, args.data_dir, catalog)
    started = time.monotonic()
    preopen = asyncio.ensure_future(host.preopen_from_disk())
    # Registration waits for the meta group: a node with no catalog cannot serve anything.
    while True:
        try:
            await meta.propose(commands.RegisterNode(node_id, advertise, int(time.time() * 1000),
                                                     args.zone))
            await catalog.refresh(linearizable=True)
            break
        except TributaryError as exc:
            log.warning("waiting for meta group: %s", exc.message)
            await asyncio.sleep(limits.meta_wait_retry_ms / 1000)
    registered_s = time.monotonic() - started
    await preopen
    await host.reopen_from_disk()
    log.info("registered with the meta group in %.2f s; %d replica(s) open %.2f s after the "
             "start", registered_s, len(host.replicas), time.monotonic() - started)
    replication = Replication(host, meta, token)
    participant = Participant(host, meta, catalog, replication)
    replication.participant = participant
    node_metrics.install(host, replication, args.metrics)
    # Staged txns first: the last logged op may be the decision of one of them, which
    # reapply_tails then applies (the other way round it found no such txn, and the copy kept
    # it prepared, its rows missing, while its log said it was done).
    await participant.load_staged()
    repaired = await replication.reapply_tails()
    if repaired:
        log.info("applied the last logged op of %d copies again", repaired)
    splitter = Splitter(host, replication, meta)
    replication.split = splitter
    staged = len(participant.prepared)
    if staged:
        # Reads would otherwise see the state before a txn this node may have to apply.
        log.info("resolving %d prepared transaction(s) before serving", staged)
        await participant.resolve_all()
    # A split's children reopen after that: a child's staged txns name a shard the catalog
    # does not have until the switch. Their own logs may hold ops past their stores' last
    # commits, as every copy's may.
    if await splitter.reopen():
        await replication.reapply_tails()
    catalog.start()

    server = grpc.aio.server(
        interceptors=[tracing.AioServerInterceptor(), node_metrics.RpcMetricsInterceptor()]
        + ([cluster_auth.AioServerInterceptor(token)] if token else []), options=[
            ("grpc.max_receive_message_length", limits.grpc_message_bytes_max),
            ("grpc.max_send_message_length", limits.grpc_message_bytes_max)])
    service = ShardNodeService(host, participant, replication)
    node_pb2_grpc.add_ShardNodeServicer_to_server(service, server)
    if server.add_insecure_port(args.listen) == 0:
        raise SystemExit(f"cannot bind node address {args.listen}")
    search_frames = SearchFrameServer(service, token)
    if args.search_listen != "off":
        service.search_frames_address = await search_frames.start(
            args.search_listen or netaddr.join_host_port(
                netaddr.split_host_port(args.listen)[0], 0),
            args.search_advertise, advertise)
    await server.start()
    log.info("node %s serving on %s, search frames on %s (internal auth %s)", node_id,
             args.listen, service.search_frames_address or "none",
             "on" if token else "off")

    async def heartbeat():
        await meta.heartbeat(node_id, advertise)

    async def save_indexes():
        # The index is a cache; saving it bounds the work a restart does after kill -9.
        for replica in list(host.replicas.values()):
            try:
                await asyncio.to_thread(replica.maybe_save,
                                        limits.hnsw_save_interval_ms / 1000,
                                        limits.hnsw_save_every_vectors)
            except Exception:  # noqa: BLE001 - a failed save costs restart time only
                log.exception("saving index of %s failed", replica.path)

    beats = Periodic(limits.node_heartbeat_interval_ms / 1000, heartbeat, "node heartbeat")
    saver = Periodic(limits.hnsw_save_check_interval_ms / 1000, save_indexes, "index saves",
                     wait_first=True)
    catch_up = Periodic(limits.replication_catch_up_interval_ms / 1000,
                        replication.catch_up_all, "replication catch-up", wait_first=True)
    splits = Periodic(limits.reshard_round_interval_ms / 1000, splitter.round,
                      "shard splits", wait_first=True)
    beats.start()
    saver.start()
    catch_up.start()
    splits.start()
    resolver = asyncio.create_task(participant.background())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await beats.stop()
    await saver.stop()
    await catch_up.stop()
    await splits.stop()
    resolver.cancel()
    await asyncio.gather(resolver, return_exceptions=True)
    await catalog.stop()
    await search_frames.stop()
    await server.stop(grace=limits.node_stop_grace_ms / 1000)
    await asyncio.to_thread(host.close)
    await replication.close()
    await meta.close()


def run(args: argparse.Namespace) -> None:
    event_loop.run(serve(args))


def _write_response(result) -> node_pb2.WriteResponse:
    return node_pb2.WriteResponse(inserted=result.inserted, skipped=result.skipped,
                                  deleted=result.deleted, not_found=result.not_found,
                                  skipped_ids=result.skipped_ids)
