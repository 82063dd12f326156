"""ShardReplica: one Deep Lake dataset plus one hnswlib index.

Contract:
- The Deep Lake dataset is the store of record. A write without a log position returns only
  after a Deep Lake commit that holds it. A write with one (`position`: the (seq, term) of the
  op in the caller's operation log, which is durable before the write is applied) is group
  committed: it is applied to the store's working state and to memory, readable and searchable
  at once, and a background committer commits every group_commit_rows_max rows or
  group_commit_interval_ms, recording in the same commit the position of the last op it holds
  (`durable_position`). After kill -9 the caller replays its log past that position. A write
  that fails leaves nothing behind: the store goes back to its last commit and the writes
  applied since are applied again.
- The hnswlib index is a cache. It is saved with the label watermark it covers (every label up
  to it was added, and the deletes committed before the save are marked), on close and
  periodically (`maybe_save`). On open the saved index is loaded and checked against the store:
  store rows missing from it are added (all rows past the watermark, plus any repair), and labels
  the store no longer holds are marked deleted. Only a missing or unreadable file means a full
  rebuild from the store.
- Filtered search estimates the filter's selectivity on a sample: a selective filter gets an
  exact scan over the matching rows, a broad one HNSW with over-fetch and a vectorized post-filter
  (shard/filter_eval.py). No per-candidate Python callback runs inside hnswlib.
- A write is searchable when it is acknowledged, before it is in the HNSW graph: new rows wait
  in a pending buffer that every search scans exactly, while a background thread moves them into
  hnswlib in chunks of index_chunk_vectors. So ingest never waits for graph insertion.
- Every public method is safe to call from several threads. `_lock` guards the store, the maps
  and the pending buffer; a readers-writer lock guards the hnswlib index (concurrent knn_query
  is safe, add_items and resize_index are not). Lock order is always `_lock`, then the index
  lock, and the indexer never holds both while waiting.

Rows are addressed through one in-memory map (shard/idmap.py: ids and labels in row order, one
dict id -> label), rebuilt from the store on open. hnswlib labels are stable integers kept in the
`label` column, because Deep Lake row numbers shift when rows are deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time

import hnswlib
import numpy as np

import re

from shard import filter_eval, heap
from shard.filter_parse import NUMERIC_FIELDS, TEXT_FIELDS
from shard.idmap import IdMap
from shard.pending import PendingRows
from shard.ef_gate import EfGate
from shard.rwlock import ReadWriteLock
from shard.records import (UPDATABLE_FIELDS, ExistingPolicy, Hit, HitColumns, SearchOutcome,
                           VectorRecord, WriteResult)
from shard.scoring import HNSW_SPACE, scores_from_hnsw
from tributary import lazy_import, limits, tracing
from tributary.errors import AlreadyExists, Internal, InvalidArgument, NotFound

# Imported on the first shard opened or created: a node that hosts no shard does without Deep
# Lake's ~45 MB (tributary/lazy_import.py).
deeplake = lazy_import.module("deeplake")

log = logging.getLogger("tributary.shard")

# Deep Lake 4.7 can freeze the whole process, GIL held, when one thread opens a tagged version
# of a store (open_read_only(url).tags[t].open(): shard/versions.py VersionView) while another
# thread commits to any store of the process, that one or another: a thread committing to one
# store beside a thread opening a tag of a second one hung within a second, three runs of three
# (a plain open_read_only, a tag() or a read-write open beside the commits never did). So every
# commit or compaction of a store holds this lock shared, and every open of a tagged version
# holds it alone (tests/unit/test_version_open_beside_commits.py).
STORE_COMMITS = ReadWriteLock()


def commit_store(ds, message: str | None = None) -> None:
    """`ds.commit(message)` holding STORE_COMMITS shared."""
    with STORE_COMMITS.read():
        if message is None:
            ds.commit()
        else:
            ds.commit(message)

_TEXT_COLUMNS = ("id", "document_id", "chunk_id", "content", "content_hash", "content_type",
                 "language", "model")
_INT_COLUMNS = ("label", "chunk_index", "chunk_count", "created_at_ms", "updated_at_ms")
# 0 (or empty, in stores made before the column existed) means active; otherwise the time of the
# soft delete. Soft-deleted rows stay in the store until compaction and can be restored.
_SOFT_DELETE_COLUMN = "deleted_at_ms"
# Store metadata keys: the op-log position (seq, term) of the last op a commit holds.
_POSITION_SEQ = "oplog_seq"
_POSITION_TERM = "oplog_term"
# Store metadata key: the short columns (_SMALL_TEXT, _SMALL_INT) that have held a value (a
# non-empty string, a non-zero int) in any row, comma-joined. A column it does not name is empty
# in every row of the commit, so opening the shard skips reading it (an empty text column of 500k
# rows took 0.3-0.5 s to read, six of them most of a restart's shard open). Absent in stores made
# before it: then every column is read, and the key written with the next commit. It only grows
# (compaction and deletes keep it), so a stale key names too many columns, never too few; it is
# set before the rows that need it are appended, and commits with them.
_FILLED_COLUMNS = "filled_short_columns"
# How much nicer than the rest of the process the background indexer thread runs (a scheduling
# weight, not a limit). Graph building is catch-up work behind rows that are already durable and
# searchable, so on a busy box it yields the cores to requests rather than sharing them evenly:
# at the same weight, indexing took as much CPU as serving writes, and the 2PC benchmark's p50
# was about 1.5x slower than at +19 (+10 was in between). SCHED_IDLE would go further, but
# would let any unrelated process on a shared machine starve the graph; +19 still gets a share.
_INDEXER_NICE = 19
# Bounds of ShardReplica.search_now, the search an event loop runs itself: the pending rows it may
# scan exactly (limits.search_now_pending_rows_max) and the largest ef_search or top_k it accepts.
# Beyond them a search goes to a worker thread. Cost bounds, not limits on what a search may ask.
_NOW_EF_MAX = 4 * limits.ef_search_default


def _now_ms() -> int:
    return int(time.time() * 1000)


INDEX_TYPES = ("hnsw", "flat")


_TOO_FEW = object()   # _knn_once: hnswlib could not find k live rows
_NO_GRAPH_ROWS = object()     # _graph_batch: the graph holds no row to search


class ShardReplica:
    # Called with the seconds each Deep Lake commit of a write took (node/metrics.py sets it;
    # this library imports no server).
    commit_observer = None
    # Vectors the indexer has added to the graph since the replica opened (index build rate).
    indexed_vectors_total = 0

    def __init__(self, path: str, dimensions: int, metric: str, index_type: str = "hnsw"):
        """Opens (or creates) the replica at `path`. `index_type` "hnsw" serves searches from
        an hnswlib graph; "flat" builds no graph at all and answers every search by an exact
        scan of an in-memory float32 matrix. Raises InvalidArgument for another index type."""
        if index_type not in INDEX_TYPES:
            raise InvalidArgument(f"index_type must be one of {', '.join(INDEX_TYPES)}")
        self.path = path
        self.dimensions = dimensions
        self.metric = metric
        self.index_type = index_type
        self._lock = threading.RLock()
        self._index_lock = ReadWriteLock()
        # One save at a time (the periodic save and close may meet); taken before the others.
        self._save_lock = threading.Lock()
        # Rows committed to the store but not yet in the graph (shard/pending.py). A deleted
        # pending row is hidden there at once; the indexer marks it deleted after adding its
        # chunk.
        self._pending = PendingRows(limits.index_chunk_vectors)
        # Labels a write deleted from the store but has not yet marked deleted in the graph (it
        # marks them after releasing _lock; see write). Graph searches ask for this many more
        # candidates meanwhile, so the dropped labels never cost a hit.
        self._unmarked_deletes = 0
        self._pending_changed = threading.Condition(self._lock)
        # Vectors the indexer added since it last drained the pending buffer: a drained backlog
        # this large frees much memory, which it hands back to the OS (shard/heap.py).
        self._indexed_since_drained = 0
        self._closing = False
        self._close_deadline = float("inf")
        self._text_reader = None
        self._store_url = "file://" + os.path.join(path, "store")
        self._index_path = os.path.join(path, "hnsw.bin")
        self._index_meta_path = os.path.join(path, "hnsw.json")
        os.makedirs(path, exist_ok=True)
        self._ds = self._open_or_create_store()
        self._load_maps()
        self._small = _SmallFields(self._ds, self._labels.tolist())
        if self._small.record_filled(self._ds):
            # Committed now, not with the next write: a shard only read from would otherwise
            # read every short column again at each start.
            commit_store(self._ds, "name the filled short columns")
        self._filter_columns: _FilterColumns | None = None
        self._rng = np.random.default_rng(0)
        self._to_enqueue: list[int] = []
        # The rows' vectors as one contiguous matrix in row order, for exact scans: always kept
        # for a flat replica, built on the first exact search of an HNSW one (see _exact_matrix).
        self._matrix: _VectorMatrix | None = None
        if index_type == "flat":
            self._index = None
            self.index_repairs = {"rebuilt": 0, "added": 0, "marked_deleted": 0}
            self._matrix = self._matrix_from_store()
        else:
            self._index = self._open_index()
        # ef is index-wide in hnswlib; the gate makes it per query (shard/ef_gate.py).
        self._ef_gate = EfGate(self._index, limits.ef_search_default)
        self._saved_at = time.monotonic()
        self._labels_at_save = self._next_label
        if self._to_enqueue:
            # Rows the saved index lacks are searchable now (exact scan) and indexed behind.
            rows = self._to_enqueue
            values = np.asarray(self._ds["values"][rows], dtype=np.float32).reshape(
                len(rows), self.dimensions)
            self._enqueue(self._labels[np.asarray(rows, dtype=np.int64)], values)
        self._index_generation = 0
        for vid in self._soft_deleted:
            self._hide_label(self._map.label_of(vid))
        self._indexer = None
        if self._index is not None:
            self._indexer = threading.Thread(target=self._index_loop, daemon=True,
                                             name=f"indexer-{os.path.basename(path)}")
            self._indexer.start()
        # Group commit: writes applied to the store but not yet committed, in order, each as
        # (rows it removed, highest first; columns it appended), so that a failed write can go
        # back to the last commit and apply them again. The position of the last positioned
        # op applied, and the one the last commit recorded (None: a store that never had one).
        self._uncommitted: list[tuple[list[int], dict | None]] = []
        self._uncommitted_rows = 0
        self._uncommitted_since = 0.0
        self.durable_position = _stored_position(self._ds)
        self._applied_position = self.durable_position
        # Callbacks waiting for a commit that holds a log position (when_durable): a 2PC
        # decision's staged plan is removed only once the store's commit holds its rows.
        self._durable_waiters: list[tuple[int, object]] = []
        self._commit_due = threading.Condition(self._lock)
        self._committer_stop = False
        self._committer = threading.Thread(target=self._commit_loop, daemon=True,
                                           name=f"committer-{os.path.basename(path)}")
        self._committer.start()
        if len(self._ids) >= limits.memory_trim_removed_rows_min:
            # Opening read whole columns into transient lists, freed by now.
            heap.return_freed_memory_soon("opening a replica")

    # ---- opening -------------------------------------------------------------------------------

    def _open_or_create_store(self):
        # The content column's BM25 index is built when a text search needs it
        # (_refresh_text_index), never by a write's commit (see _writer_handle).
        self._text_index_stale = True
        if deeplake.exists(self._store_url):
            ds = _writer_handle(deeplake.open(self._store_url))
            # A commit killed mid-way (or a file snapshot of a store that had one) leaves a
            # hole in Deep Lake's commit log that makes every later delete wait 2 s; compact
            # over it (shard/versions.py heal_log_holes).
            from shard import versions
            versions.heal_log_holes(ds, os.path.join(self.path, "store"))
            if _SOFT_DELETE_COLUMN not in [c.name for c in ds.schema.columns]:
                ds.add_column(_SOFT_DELETE_COLUMN, deeplake.types.Int64())
                commit_store(ds, "add soft-delete column")
            return ds
        ds = _writer_handle(deeplake.create(self._store_url))
        ds.add_column("label", deeplake.types.Int64())
        for name in _TEXT_COLUMNS:
            # content carries Deep Lake's BM25 index: text search ranks with it.
            ds.add_column(name, deeplake.types.Text(deeplake.types.BM25) if name == "content"
                          else deeplake.types.Text())
        ds.add_column("values", deeplake.types.Array(deeplake.types.Float32(),
                                                     shape=[self.dimensions]))
        ds.add_column("metadata", deeplake.types.Dict())
        for name in _INT_COLUMNS[1:]:
            ds.add_column(name, deeplake.types.Int64())
        ds.add_column(_SOFT_DELETE_COLUMN, deeplake.types.Int64())
        ds.metadata["dimensions"] = self.dimensions
        ds.metadata["metric"] = self.metric
        ds.metadata[_FILLED_COLUMNS] = ""
        commit_store(ds, "create shard store")
        return ds

    def _load_maps(self) -> None:
        """The row map (shard/idmap.py) from the store's id, label and soft-delete columns.
        Labels in row order are ascending, because rows are appended with increasing labels
        and deletes keep the order; a store that breaks that (or holds an id twice) raises
        Internal. Soft-deleted rows are hidden: searches never name them."""
        count = len(self._ds)
        ids = list(self._ds["id"][:]) if count else []
        labels = np.asarray(self._ds["label"][:], dtype=np.int64) if count else np.zeros(0, np.int64)
        deleted = self._ds[_SOFT_DELETE_COLUMN][:] if count else []
        hidden = [vid for vid, when in zip(ids, deleted) if when is not None and int(when) > 0]
        try:
            self._map = IdMap(ids, labels, hidden)
        except ValueError as exc:
            raise Internal(f"shard store at {self.path}: {exc}") from exc
        # The map's own id list (the same object for the map's life: it changes in place), so
        # that `len(self._ids)` and `self._ids[row]` read it directly.
        self._ids: list[str] = self._map.ids
        self._next_label = self._map.next_label

    @property
    def _labels(self) -> np.ndarray:
        """The labels in row order (a read-only view, valid until the next write)."""
        return self._map.labels

    @property
    def _soft_deleted(self) -> set[str]:
        """The soft-deleted ids (the map's hidden set: change it through the map only)."""
        return self._map.hidden

    def _new_index(self, capacity: int) -> hnswlib.Index:
        index = hnswlib.Index(space=HNSW_SPACE[self.metric], dim=self.dimensions)
        index.init_index(max_elements=max(capacity, limits.hnsw_initial_capacity_vectors),
                         M=limits.hnsw_m, ef_construction=limits.hnsw_ef_construction,
                         allow_replace_deleted=False)
        index.set_ef(limits.ef_search_default)
        return index

    def _open_index(self) -> hnswlib.Index:
        count = len(self._ids)
        saved = self._read_index_meta()
        if saved and saved.get("dimensions") == self.dimensions and \
                saved.get("metric") == self.metric and os.path.exists(self._index_path):
            try:
                return self._load_and_repair(saved, count)
            except Exception:  # noqa: BLE001 - an unreadable cache is rebuilt, never trusted
                log.exception("shard %s: saved index unusable; rebuilding", self.path)
        index = self._new_index(_graph_capacity(count))
        if count:
            values = np.asarray(self._ds["values"][:], dtype=np.float32)
            index.add_items(values, np.asarray(self._labels, dtype=np.int64), num_threads=2)
        self.index_repairs = {"rebuilt": count, "added": 0, "marked_deleted": 0}
        log.info("shard %s: rebuilt HNSW index over %d vectors", self.path, count)
        return index

    def _load_and_repair(self, saved: dict, count: int) -> hnswlib.Index:
        index = hnswlib.Index(space=HNSW_SPACE[self.metric], dim=self.dimensions)
        index.load_index(self._index_path,
                         max_elements=max(_graph_capacity(count),
                                          limits.hnsw_initial_capacity_vectors))
        index.set_ef(limits.ef_search_default)
        watermark = int(saved.get("watermark", -1))
        in_index = np.asarray(index.get_ids_list(), dtype=np.int64)
        live = np.asarray(self._labels, dtype=np.int64)
        # Store rows the index lacks: everything past the watermark, and (repair) anything at or
        # below it that is missing.
        missing_rows = np.flatnonzero(~np.isin(live, in_index))
        # Labels the store no longer holds: deleted after the save (or a torn save); mark them.
        stale = in_index[~np.isin(in_index, live)]
        marked = 0
        for label in stale.tolist():
            try:
                index.mark_deleted(label)
                marked += 1
            except RuntimeError:
                pass    # already marked in the saved file
        # Missing rows go to the pending buffer (see __init__): the replica serves at once.
        self._to_enqueue = missing_rows.tolist()
        repaired = int(np.sum(live[missing_rows] <= watermark)) if len(missing_rows) else 0
        self.index_repairs = {"rebuilt": 0, "added": int(len(missing_rows)),
                              "repaired_below_watermark": repaired, "marked_deleted": marked}
        log.info("shard %s: loaded HNSW index (watermark %d), added %d rows, marked %d "
                 "deleted", self.path, watermark, len(missing_rows), marked)
        return index

    @staticmethod
    def saved_shape(path: str) -> tuple[int, str] | None:
        """(dimensions, metric) of the HNSW replica at `path` as its last graph save recorded
        them, or None (a flat replica, or a graph never saved): what a node needs to open the
        replica before it has the catalog (node/server.py ShardHost.preopen_from_disk)."""
        try:
            with open(os.path.join(path, "hnsw.json")) as f:
                saved = json.load(f)
            return int(saved["dimensions"]), str(saved["metric"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _read_index_meta(self) -> dict | None:
        try:
            with open(self._index_meta_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def save_index(self) -> None:
        """Persists the index with the label watermark it covers (used by the next open).
        `_lock` is held only to read the watermark. The graph is written to a temporary file
        under a background read hold of the index lock: the index lock lets searches go on
        beside it (even when the indexer waits to add a chunk), and only graph changes wait,
        for as long as hnswlib takes to write the file into the page cache. But hnswlib's
        save_index holds the GIL for that whole write (a 200k x 128 graph, 132 MB: every other
        thread of the process stalled 317 ms), so the process's event loop answers nothing
        meanwhile (bench/README.md, the 1M figures with search frames). The
        metadata file and the renames come after, outside every lock. (Before, the whole save
        held `_lock` and the index write lock, so every search and write waited for it.)
        Writing the file from a forked copy-on-write child was tried and dropped: a fork while
        Deep Lake commits in another thread crashed the process (SIGSEGV in the commit), with
        os.fork, posix.fork and glibc's handler-free _Fork alike, and a fork cost a process that
        has Deep Lake loaded 45-70 ms even when it survived (bench/README.md, "Index saves and
        the GIL"). A flat replica has no index to persist: its matrix is read from the store on
        open."""
        if self._index is None:
            return
        with self._save_lock:
            with self._lock:
                # Every label below the oldest pending one is in the graph.
                oldest = self._pending.first()
                watermark = (int(oldest[0][0]) - 1 if oldest is not None
                             else self._next_label - 1)
                count, next_label = len(self._ids), self._next_label
                generation = self._index_generation
            tmp = self._index_path + ".tmp"
            with self._index_lock.read_background():
                if self._index_generation != generation:
                    watermark = -1  # compaction swapped the graph meanwhile: claim no label
                _write_graph(self._index, tmp)
            os.replace(tmp, self._index_path)
            meta_tmp = self._index_meta_path + ".tmp"
            with open(meta_tmp, "w") as f:
                json.dump({"watermark": watermark, "count": count,
                           "dimensions": self.dimensions, "metric": self.metric}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(meta_tmp, self._index_meta_path)
            with self._lock:
                self._saved_at = time.monotonic()
                self._labels_at_save = next_label

    def maybe_save(self, every_s: float, every_vectors: int) -> bool:
        """Saves the index if enough time or enough new vectors passed since the last save."""
        if self._index is None:
            return False
        with self._lock:
            due = (self._next_label - self._labels_at_save >= every_vectors or
                   (self._next_label != self._labels_at_save and
                    time.monotonic() - self._saved_at >= every_s))
        if due:
            self.save_index()   # outside _lock: it takes only the locks it needs, briefly
        return due

    def close(self) -> None:
        """Stops the indexer and saves the index. A backlog the indexer cannot finish within
        limits.shard_close_drain_ms stays out of the graph: the saved watermark excludes it, so
        the next open adds it again. (Draining it all could outlast the supervisor's grace
        period and end in SIGKILL, which loses the index save too.)"""
        with self._lock:
            self._committer_stop = True
            self._commit_due.notify_all()
        self._committer.join(timeout=limits.indexer_join_timeout_ms / 1000)
        with self._lock:
            try:
                self._commit_pending()
            except Exception:  # noqa: BLE001 - the caller's op log still holds these writes
                log.exception("shard %s: could not commit the last writes on close", self.path)
            self._closing = True
            self._close_deadline = time.monotonic() + limits.shard_close_drain_ms / 1000
            self._pending_changed.notify_all()
        if self._indexer is not None:
            self._indexer.join(timeout=limits.indexer_join_timeout_ms / 1000)
        try:
            self.save_index()
        except Exception:  # noqa: BLE001 - the index is a cache; losing it costs a rebuild
            log.exception("shard %s: could not save HNSW index", self.path)

    # ---- reads ---------------------------------------------------------------------------------

    def count(self) -> int:
        """Active vectors (soft-deleted ones are not counted)."""
        return len(self._ids) - len(self._soft_deleted)

    def soft_deleted_count(self) -> int:
        return len(self._soft_deleted)

    def soft_deleted_ids(self) -> list[str]:
        """The ids compaction would purge, sorted (a primary replicates their deletion)."""
        with self._lock:
            return sorted(self._soft_deleted)

    @property
    def store_url(self) -> str:
        return self._store_url

    def store_guard(self):
        """The lock every commit of this store holds. Deep Lake 4.7 can deadlock the whole
        process (with the GIL held) when a read-only handle on the store is opened while
        another thread commits to it (node/backup.py); whoever opens one here holds this.
        (Opening a tagged version also needs STORE_COMMITS alone: that one deadlocks beside a
        commit of any store.)"""
        return self._lock

    def mark_version(self, tag: str) -> tuple[str, int]:
        """Puts Deep Lake tag `tag` on the store's current commit (shard/versions.py mark),
        under `_lock` so no write commits in between: (commit id, active rows)."""
        from shard import versions
        with self._lock:
            # The tag names a commit holding every write applied so far (group commit defers
            # them), so it marks exactly the caller's log position.
            self._commit_pending()
            return versions.mark(self._ds, tag), self.count()

    def content_digest(self) -> str:
        """Hex sha256 of what this copy holds, equal on two copies exactly when they hold the same
        rows: every row of the store (soft-deleted ones too, with their flag), taken in id order,
        each as its id, its values (float32 bytes), content, document_id, metadata (JSON, keys
        sorted) and whether it is soft-deleted. Timestamps are left out: each copy stamps its
        own. The digest is sha256 over the rows' own sha256s in id order, so rows are read in
        store order, limits.content_digest_chunk_rows_max at a time.

        Cost: one read of the values, content, document_id and metadata columns of every row
        (about the cost of a full scan: 100k x 128 rows read in seconds), under `_lock`, so the
        replica's writes wait for it and it sees one consistent state. Meant for checks (the
        chaos copies-agree checker asks for it through CopyStatus), not for a hot path."""
        with self._lock:
            ds = self._ds
            count = len(self._ids)
            rows: list[tuple[str, bytes]] = []
            chunk = limits.content_digest_chunk_rows_max
            for start in range(0, count, chunk):
                end = min(start + chunk, count)
                values = np.asarray(ds["values"][start:end], dtype="<f4").reshape(
                    end - start, self.dimensions)
                content = ds["content"][start:end]
                document_id = ds["document_id"][start:end]
                metadata = ds["metadata"][start:end]
                for i in range(end - start):
                    vid = self._ids[start + i]
                    meta = {} if metadata[i] is None else {str(k): str(v) for k, v in
                                                           dict(metadata[i]).items()}
                    row = hashlib.sha256()
                    for part in (vid.encode(), values[i].tobytes(),
                                 (content[i] or "").encode(), (document_id[i] or "").encode(),
                                 json.dumps(meta, sort_keys=True).encode(),
                                 b"\x01" if vid in self._soft_deleted else b"\x00"):
                        row.update(len(part).to_bytes(8, "big"))
                        row.update(part)
                    rows.append((vid, row.digest()))
        rows.sort()
        whole = hashlib.sha256()
        for _, row_digest in rows:
            whole.update(row_digest)
        return whole.hexdigest()

    def existing_ids(self, ids: list[str]) -> list[str]:
        with self._lock:
            return [i for i in ids if i in self._map]

    def get(self, ids: list[str], include_values: bool = True) -> list[VectorRecord]:
        with self._lock:
            rows = self._map.rows_of([i for i in ids
                                      if i in self._map and i not in self._soft_deleted])
            return self._read_rows(rows, include_values=include_values)

    def _read_rows(self, rows: list[int], include_values: bool, include_content: bool = True,
                   include_metadata: bool = True) -> list[VectorRecord]:
        """Records for rows. The short fields come from memory (_SmallFields); the store is
        read only for content, metadata and values, and only when asked for."""
        if not rows:
            return []
        ds = self._ds
        content = (["" if v is None else v for v in ds["content"][rows]] if include_content
                   else None)
        metadata = ds["metadata"][rows] if include_metadata else None
        values = (np.asarray(ds["values"][rows], dtype=np.float32).reshape(
            len(rows), self.dimensions) if include_values else None)
        small = self._small
        # Per-row work is plain dict lookups (a search reads ten rows, every query).
        document_id, chunk_id, content_hash, content_type, language, model = (
            small.text[name] for name in _SMALL_TEXT)
        chunk_index, chunk_count = small.ints["chunk_index"], small.ints["chunk_count"]
        created, updated = small.created[rows].tolist(), small.updated[rows].tolist()
        ids = self._ids
        out = []
        for i, (row, label) in enumerate(zip(rows, self._map.labels_at(rows))):
            out.append(VectorRecord(
                id=ids[row], values=None if values is None else values[i],
                content="" if content is None else content[i],
                metadata={} if metadata is None or metadata[i] is None else
                {k: str(v) for k, v in dict(metadata[i]).items()},
                chunk_index=chunk_index.get(label, 0), chunk_count=chunk_count.get(label, 0),
                created_at_ms=created[i], updated_at_ms=updated[i],
                document_id=document_id.get(label, ""), chunk_id=chunk_id.get(label, ""),
                content_hash=content_hash.get(label, ""),
                content_type=content_type.get(label, ""), language=language.get(label, ""),
                model=model.get(label, "")))
        return out

    def search(self, query: np.ndarray, top_k: int, ef_search: int = 0,
               include_content: bool = False, include_metadata: bool = False,
               include_values: bool = False,
               where: filter_eval.CompiledFilter | None = None,
               exact: bool = False) -> SearchOutcome:
        """Top-k by score (higher is better). `query` must already be validated/normalized.

        A flat replica, or any replica asked for `exact`, scans every (matching) row by brute
        force: the answer is the true top-k (recall 1.0), and ef_search plays no part.

        With `where`, only matching rows are returned. Strategy: estimate the selectivity on a
        sample; when few rows match (at most filter_exact_rows_max) scan them exactly, which
        keeps recall at 1.0; otherwise ask HNSW for enough candidates that top_k are expected to
        pass, post-filter them with a vectorized mask, and widen the search until top_k pass or
        every row was considered."""
        started = time.perf_counter()
        if exact or self._index is None:
            return self._exact_search(query, top_k, where, started, include_values,
                                      include_content, include_metadata)
        if where is None:
            # The graph search runs outside _lock (index read lock only), so searches of one
            # replica run in parallel; only the id mapping and row reads take _lock.
            with self._lock:
                live = len(self._ids)
                if live == 0:
                    return SearchOutcome([], 0, 0, 0.0)
                k = min(top_k, live)
                ef = max(ef_search or limits.ef_search_default, k)
                snapshot = self._graph_snapshot()
            labels, raw = self._candidates(query, k, ef, *snapshot)
            with self._lock:
                found = self._resolve(labels, raw, k)
                return self._outcome(found, started, live, 0, "hnsw", include_values,
                                     include_content, include_metadata)
        with self._lock:
            live = len(self._ids)
            if live == 0:
                return SearchOutcome([], 0, 0, 0.0)
            ef = max(ef_search or limits.ef_search_default, min(top_k, live))
            view = self._filter_view()
            selectivity = filter_eval.estimate_selectivity(where, view, 1000, self._rng)
            if selectivity * live <= limits.filter_exact_rows_max:
                strategy = "exact"
                rows = np.flatnonzero(where.mask(view))
                found, scanned = self._exact(query, rows, top_k), len(rows)
                filtered_out = live - len(rows)
            else:
                strategy = "hnsw_overfetch"
                found, scanned, filtered_out = self._overfetch(query, top_k, ef, where, view,
                                                               selectivity)
            return self._outcome(found, started, scanned, filtered_out, strategy,
                                 include_values, include_content, include_metadata)

    def search_now(self, query: np.ndarray, top_k: int, ef_search: int = 0
                   ) -> SearchOutcome | None:
        """search() of the plain kind (no filter, no stored fields) for a caller that must not
        block, such as an event loop: the answer search() would give, or None when getting it
        would mean waiting for a lock (a write is committing, the indexer holds the graph) or
        scanning more than limits.search_now_pending_rows_max pending rows, or when ef_search or
        top_k is above _NOW_EF_MAX. The caller then runs search() on a worker thread. Handing a
        ~0.3 ms graph search to a thread cost about as much again as the search itself."""
        started = time.perf_counter()
        if self._index is None:
            return None     # a flat scan is CPU work: it belongs on a worker thread
        if max(ef_search, top_k) > _NOW_EF_MAX or not self._lock.acquire(blocking=False):
            return None
        try:
            live = len(self._ids)
            if live == 0:
                return SearchOutcome([], 0, 0, 0.0)
            if len(self._pending) > limits.search_now_pending_rows_max:
                return None
            k = min(top_k, live)
            ef = max(ef_search or limits.ef_search_default, k)
            snapshot = self._graph_snapshot()
        finally:
            self._lock.release()
        if not self._index_lock.try_read():
            return None
        try:
            candidates = self._candidates(query, k, ef, *snapshot, locked=True)
        finally:
            self._index_lock.release_read()
        if candidates is None:
            return None     # another ef's searches hold the graph
        labels, raw = candidates
        if not self._lock.acquire(blocking=False):
            return None
        try:
            found = self._resolve(labels, raw, k)
            return self._outcome(found, started, live, 0, "hnsw", False, False, False)
        finally:
            self._lock.release()

    def search_batch(self, queries: np.ndarray, top_ks: list[int], ef_search: int = 0,
                     include_content: list[bool] | None = None,
                     include_metadata: list[bool] | None = None, blocking: bool = True,
                     packed: list[bool] | None = None) -> list[SearchOutcome] | None:
        """search() of the plain kind (no filter, not exact, no values) for each row of
        `queries` (validated and normalized, one per row), as one hnswlib knn_query over the
        whole batch: hnswlib spreads the rows over its C++ threads, and the Python around the
        graph search runs once per batch instead of once per query. Row i keeps its own top_k
        (`top_ks[i]`) and answers exactly what search(queries[i], top_ks[i], ef_search) would.
        One ef for the batch: the caller groups queries by ef. A flat replica scans each row.

        Not `blocking` (an event loop calling, as search_now): None instead of waiting for a
        lock or the ef gate, and for work search_now would decline (a flat scan, more pending
        rows than search_now_pending_rows_max, ef_search or a top_k above _NOW_EF_MAX).

        Row i with `packed[i]` (and neither content nor metadata asked for) answers its hits as
        columns (SearchOutcome.columns, HitColumns) instead of records: the same ids, scores,
        distances and short fields, without reading rows or building a record per hit."""
        count = len(top_ks)
        contents = include_content or [False] * count
        metadatas = include_metadata or [False] * count
        if self._index is None:
            if not blocking:
                return None
            return [self.search(queries[i], top_ks[i], ef_search, contents[i], metadatas[i])
                    for i in range(count)]
        started = time.perf_counter()
        if not blocking and max(ef_search, *top_ks) > _NOW_EF_MAX:
            return None
        if not self._lock.acquire(blocking=blocking):
            return None
        try:
            live = len(self._ids)
            if live == 0:
                return [SearchOutcome([], 0, 0, 0.0) for _ in range(count)]
            if not blocking and len(self._pending) > limits.search_now_pending_rows_max:
                return None
            ks = [min(k, live) for k in top_ks]
            k = max(ks)
            ef = max(ef_search or limits.ef_search_default, k)
            snapshot = self._graph_snapshot()
        finally:
            self._lock.release()
        candidates = self._candidates_batch(queries, k, ef, *snapshot, blocking=blocking)
        if candidates is None:
            return None
        labels, raw = candidates
        # Scores for the whole matrix at once (elementwise: each equals _resolve's).
        scores, distances = scores_from_hnsw(self.metric, raw)
        columns = packed or [False] * count
        if not self._lock.acquire(blocking=blocking):
            return None
        try:
            outcomes = []
            located = None
            if any(columns) and labels.shape[1] >= k:
                # Every query's first k candidates located at once (one binary search for the
                # batch); a query whose first k are all visible and distinct, the usual case,
                # is answered from them without naming the labels one window at a time.
                located = self._map.locate(labels[:, :k])
            sparse = self._sparse_small_fields()
            for i in range(count):
                plain_columns = columns[i] and not (contents[i] or metadatas[i])
                if plain_columns and located is not None:
                    outcome = self._columns_first_k(labels[i], ks[i], located[0][i],
                                                    located[1][i], scores[i], distances[i],
                                                    sparse, started, live)
                    if outcome is not None:
                        outcomes.append(outcome)
                        continue
                positions, ids = self._live_labels(labels[i], ks[i])
                if plain_columns:
                    outcomes.append(self._columns_outcome(
                        ids, np.asarray(self._map.rows_of(ids), np.int64),
                        labels[i][positions].tolist(), scores[i][positions],
                        distances[i][positions], sparse, started, live))
                    continue
                found = list(zip(ids, scores[i][positions].tolist(),
                                 distances[i][positions].tolist()))
                outcomes.append(self._outcome(found, started, live, 0, "hnsw", False,
                                              contents[i], metadatas[i]))
            return outcomes
        finally:
            self._lock.release()

    def _sparse_small_fields(self) -> list[tuple[str, dict]]:
        """The short fields (_SmallFields) some row of this shard holds a value of, with their
        label -> value maps; empty for a shard that never stored one. The caller holds _lock."""
        small = self._small
        return [(name, column) for name, column in (*small.text.items(), *small.ints.items())
                if column]

    def _columns_first_k(self, labels: np.ndarray, k: int, rows: np.ndarray,
                         visible: np.ndarray, scores: np.ndarray, distances: np.ndarray,
                         sparse: list, started: float, scanned: int) -> SearchOutcome | None:
        """_columns_outcome of a query's first k candidates (`rows` and `visible` from
        IdMap.locate), when all k are visible and distinct: exactly what _live_labels would
        keep then. None otherwise (the caller takes the general way)."""
        if not visible[:k].all():
            return None
        label_list = labels[:k].tolist()
        if len(set(label_list)) != k:
            return None
        ids = self._map.ids
        kept = rows[:k]
        return self._columns_outcome([ids[row] for row in kept.tolist()], kept, label_list,
                                     scores[:k], distances[:k], sparse, started, scanned)

    def _columns_outcome(self, ids: list[str], rows: np.ndarray, labels: list[int],
                         scores: np.ndarray, distances: np.ndarray, sparse: list,
                         started: float, scanned: int) -> SearchOutcome:
        """A plain search's hits as columns (HitColumns), from memory only: the times by one
        fancy index (`rows`, the hits' row numbers) into _SmallFields' arrays, the sparse short
        fields (`sparse`, _sparse_small_fields) only when the shard holds any. The caller holds
        _lock."""
        small = self._small
        fields = None
        if sparse and ids:
            fields = []
            for label in labels:
                fields.append({name: column[label] for name, column in sparse
                               if label in column})
            if not any(fields):
                fields = None
        columns = HitColumns(ids=ids, scores=scores.astype(np.float32),
                             distances=distances.astype(np.float32),
                             created_at_ms=small.created[rows], updated_at_ms=small.updated[rows],
                             fields=fields)
        return SearchOutcome([], vectors_scanned=scanned, index_hits=len(ids),
                             database_time_ms=(time.perf_counter() - started) * 1000,
                             columns=columns)

    def _candidates_batch(self, queries: np.ndarray, k: int, ef: int, pending: list,
                          indexed_live: int, unmarked: int, blocking: bool = True
                          ) -> tuple[np.ndarray, np.ndarray] | None:
        """_candidates for a matrix of queries: per row, labels and hnswlib distances from the
        graph and an exact scan of `pending`, best first. None only when not `blocking` and
        the index lock or the ef gate would have made it wait."""
        as_given = queries     # pending rows are scored as _candidates scores them
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        labels_out: list[np.ndarray] = []
        raw_out: list[np.ndarray] = []
        if blocking:
            with self._index_lock.read():
                found = self._graph_batch(queries, k, ef, indexed_live, unmarked, blocking)
        elif self._index_lock.try_read():
            try:
                found = self._graph_batch(queries, k, ef, indexed_live, unmarked, blocking)
            finally:
                self._index_lock.release_read()
        else:
            return None
        if found is None:
            return None
        if found is not _NO_GRAPH_ROWS:
            labels, raw = found
            labels_out.append(labels.astype(np.int64))
            raw_out.append(raw)
        if not pending and labels_out:
            # The graph's answer alone: knn_query gives each row best first already, which is
            # the order the stable sort below would keep.
            return labels_out[0], raw_out[0]
        for chunk_labels, chunk_vectors in pending:
            labels_out.append(np.broadcast_to(chunk_labels, (len(queries), len(chunk_labels))))
            # Row by row, as _candidates computes them, so each row's distances are the same.
            raw_out.append(np.stack([self._raw_distances(chunk_vectors, query)
                                     for query in as_given]))
        if not labels_out:
            return (np.zeros((len(queries), 0), np.int64),
                    np.zeros((len(queries), 0), np.float32))
        all_labels = np.concatenate(labels_out, axis=1)
        all_raw = np.concatenate(raw_out, axis=1)
        order = np.argsort(all_raw, axis=1, kind="stable")
        return (np.take_along_axis(all_labels, order, axis=1),
                np.take_along_axis(all_raw, order, axis=1))

    def _graph_batch(self, queries: np.ndarray, k: int, ef: int, indexed_live: int,
                     unmarked: int, blocking: bool):
        """The graph's part of _candidates_batch (the caller holds the index read lock): labels
        and distances, _NO_GRAPH_ROWS when the graph has nothing to give, None when not
        `blocking` and the ef gate would have made it wait."""
        k_graph = min(k + unmarked, max(indexed_live + unmarked, 0),
                      self._index.get_current_count())
        if k_graph <= 0:
            return _NO_GRAPH_ROWS
        with tracing.span("hnsw.search", {"hnsw.ef": max(ef, k_graph), "hnsw.k": k_graph,
                                          "hnsw.queries": len(queries)}):
            return self._knn_batch(queries, k_graph, max(ef, k_graph), blocking)

    def _knn_batch(self, queries: np.ndarray, k: int, ef: int, blocking: bool = True
                   ) -> tuple[np.ndarray, np.ndarray] | None:
        """knn_query over every row at exactly `ef` (through the ef gate); the caller holds the
        index read lock. A blocking call (a worker thread) uses up to
        limits.search_batch_threads_max of hnswlib's threads; an event loop's call uses its
        own thread only (hnswlib starts its threads anew on every call). None only when not
        `blocking` and the gate would have made it wait."""
        threads = min(len(queries), limits.search_batch_threads_max) if blocking else 1
        return self._knn_widening(queries, k, ef, blocking, threads)

    def _knn_widening(self, queries: np.ndarray, k: int, ef: int, blocking: bool,
                      threads: int) -> tuple[np.ndarray, np.ndarray] | None:
        """knn_query at `ef`; when hnswlib cannot find k live rows from some query (many
        marked deletions around it, e.g. after a split's purge), at 4 x ef, then at an ef as
        large as the graph, and at last for fewer neighbours (halving k) rather than fail the
        search: the caller ranks what it gets together with the exact pending scan."""
        count = self._index.get_current_count()
        for attempt_ef in dict.fromkeys((ef, ef * 4, max(ef * 4, count))):
            found = self._knn_once(queries, k, attempt_ef, blocking, threads)
            if found is None or found is not _TOO_FEW:
                return found
        while k > 1:
            k //= 2
            found = self._knn_once(queries, k, max(ef * 4, count), blocking, threads)
            if found is None or found is not _TOO_FEW:
                return found
        return (np.zeros((len(queries), 0), np.uint64), np.zeros((len(queries), 0), np.float32))

    def _knn_once(self, queries: np.ndarray, k: int, ef: int, blocking: bool, threads: int):
        """One knn_query through the ef gate: its answer, None when not `blocking` and the
        gate would have made it wait, or _TOO_FEW when hnswlib found fewer than k rows."""
        if not self._ef_gate.acquire(ef, blocking):
            return None
        try:
            return self._index.knn_query(queries, k=k, num_threads=threads)
        except RuntimeError:
            return _TOO_FEW
        finally:
            self._ef_gate.release()

    def _exact_search(self, query: np.ndarray, top_k: int,
                      where: filter_eval.CompiledFilter | None, started: float,
                      include_values: bool, include_content: bool, include_metadata: bool
                      ) -> SearchOutcome:
        """Brute force over every active row that passes `where` (filter first, then score).
        The scan runs outside _lock on a snapshot of the matrix (appends write past it, deletes
        copy it), so searches scan in parallel and writes go on; a row deleted during the scan
        is dropped when the hits are resolved."""
        with self._lock:
            live = len(self._ids)
            if live == 0:
                return SearchOutcome([], 0, 0, 0.0)
            values, labels, sqnorms = self._exact_matrix().snapshot()
            rows = None
            if where is not None:
                rows = np.flatnonzero(where.mask(self._filter_view()))
            hidden = np.asarray(self._map.rows_of(self._soft_deleted), dtype=np.int64)
        if len(hidden):
            rows = np.setdiff1d(np.arange(live) if rows is None else rows, hidden,
                                assume_unique=True)
        scanned = live if rows is None else len(rows)
        # Twice top_k: rows deleted while the scan ran drop out in _resolve.
        cand_labels, raw = _exact_top(values, sqnorms, labels, query, rows,
                                      min(2 * top_k, scanned), self.metric)
        with self._lock:
            found = self._resolve(cand_labels, raw, top_k)
            return self._outcome(found, started, scanned, live - len(hidden) - scanned,
                                 "flat" if self._index is None else "exact", include_values,
                                 include_content, include_metadata)

    def _exact_matrix(self) -> "_VectorMatrix":
        """The in-memory matrix (caller holds _lock). An HNSW replica builds it from the store
        on its first exact search and keeps it in step with writes from then on: the memory of
        a second copy of the vectors is paid only by datasets that ask for exact answers."""
        if self._matrix is None:
            self._matrix = self._matrix_from_store()
        return self._matrix

    def _matrix_from_store(self) -> "_VectorMatrix":
        count = len(self._ids)
        values = (np.asarray(self._ds["values"][:], dtype=np.float32).reshape(
            count, self.dimensions) if count else np.zeros((0, self.dimensions), np.float32))
        return _VectorMatrix(values, self._labels.copy())

    def _outcome(self, found: list[tuple[str, float, float]], started: float, scanned: int,
                 filtered_out: int, strategy: str, include_values: bool, include_content: bool,
                 include_metadata: bool) -> SearchOutcome:
        """Reads the hit rows and builds the answer. The caller holds _lock."""
        rows = self._map.rows_of(vid for vid, _, _ in found)
        records = self._read_rows(rows, include_values=include_values,
                                  include_content=include_content,
                                  include_metadata=include_metadata)
        hits = [Hit(rec, sc, d) for rec, (_, sc, d) in zip(records, found)]
        elapsed_ms = (time.perf_counter() - started) * 1000
        return SearchOutcome(hits, vectors_scanned=scanned, index_hits=len(hits),
                             database_time_ms=elapsed_ms, filtered_out=filtered_out,
                             strategy=strategy)

    def _hnsw(self, query: np.ndarray, k: int, ef: int) -> list[tuple[str, float, float]]:
        """Top-k over the graph plus the pending buffer. The caller holds _lock."""
        labels, raw = self._candidates(query, k, ef, *self._graph_snapshot())
        return self._resolve(labels, raw, k)

    def _graph_snapshot(self) -> tuple[list, int, int]:
        """What a graph search needs from the replica state (caller holds _lock): the pending
        chunks (immutable arrays), how many live rows the graph holds, and how many deleted
        rows it still shows (not yet marked)."""
        indexed_live = len(self._ids) - len(self._pending) - len(self._soft_deleted)
        return self._pending.chunks, indexed_live, self._unmarked_deletes

    def _candidates(self, query: np.ndarray, k: int, ef: int, pending: list,
                    indexed_live: int, unmarked: int, locked: bool = False
                    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Labels and hnswlib distances from the graph and an exact scan of `pending`, best
        first. Needs only the index read lock (taken here unless `locked` says the caller holds
        it), so searches run in parallel (knn_query releases the GIL). Labels may name rows
        deleted meanwhile; _resolve drops them. With `locked` (search_now) it never waits:
        None means the graph is busy with searches at another ef."""
        labels_out: list[np.ndarray] = []
        raw_out: list[np.ndarray] = []
        with contextlib.nullcontext() if locked else self._index_lock.read():
            k_graph = min(k + unmarked, max(indexed_live + unmarked, 0),
                          self._index.get_current_count())
            if k_graph > 0:
                with tracing.span("hnsw.search", {"hnsw.ef": max(ef, k_graph),
                                                  "hnsw.k": k_graph}) as current:
                    found = self._knn(query, k_graph, max(ef, k_graph), blocking=not locked)
                    if current is not None:
                        current.set_attribute("hnsw.candidates", k_graph + sum(
                            len(chunk_labels) for chunk_labels, _ in pending))
                if found is None:
                    return None
                labels, raw = found
                labels_out.append(labels[0].astype(np.int64))
                raw_out.append(raw[0])
        for chunk_labels, chunk_vectors in pending:
            labels_out.append(chunk_labels)
            raw_out.append(self._raw_distances(chunk_vectors, query))
        if not labels_out:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        all_labels = np.concatenate(labels_out)
        all_raw = np.concatenate(raw_out)
        order = np.argsort(all_raw, kind="stable")
        return all_labels[order], all_raw[order]

    def _knn(self, query: np.ndarray, k: int, ef: int, blocking: bool
             ) -> tuple[np.ndarray, np.ndarray] | None:
        """knn_query at exactly `ef` (through the ef gate); the caller holds the index read
        lock. None only when not `blocking` and the gate would have made it wait."""
        return self._knn_widening(query.reshape(1, -1), k, ef, blocking, 1)

    def _resolve(self, labels: np.ndarray, raw: np.ndarray, k: int
                 ) -> list[tuple[str, float, float]]:
        """Maps candidate labels to (id, score, distance), dropping deleted and duplicate
        labels, keeping the best k. The caller holds _lock."""
        positions, ids = self._live_labels(labels, k)
        scores, distances = scores_from_hnsw(self.metric, raw[positions])
        return list(zip(ids, scores.tolist(), distances.tolist()))

    def _live_labels(self, labels: np.ndarray, k: int) -> tuple[list[int], list[str]]:
        """The positions in `labels` of the first k live, distinct labels and their ids
        (deleted and soft-deleted rows have no id). Labels are named a window at a time (one
        vectorized look-up each), widened while fewer than k are live: the candidate list
        holds every pending row, which may be many. The caller holds _lock."""
        positions: list[int] = []
        ids: list[str] = []
        seen: set[int] = set()
        start, window = 0, 2 * k + 16
        while len(positions) < k and start < len(labels):
            part = labels[start:start + window]
            for i, (label, vid) in enumerate(zip(part.tolist(), self._map.ids_of_labels(part)),
                                             start):
                if vid is None or label in seen:
                    continue
                seen.add(label)
                positions.append(i)
                ids.append(vid)
                if len(positions) == k:
                    break
            start, window = start + window, window * 4
        return positions, ids

    def _raw_distances(self, vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
        """hnswlib's own distance: squared L2, or 1 - inner product."""
        if self.metric == "l2":
            diff = vectors - query.reshape(1, -1)
            return np.einsum("ij,ij->i", diff, diff)
        return 1.0 - vectors @ query

    def _exact(self, query: np.ndarray, rows: np.ndarray, k: int
               ) -> list[tuple[str, float, float]]:
        """Brute force over `rows`, with hnswlib's own distance, so scores match HNSW's."""
        if self._soft_deleted:
            rows = np.asarray([r for r in rows.tolist() if self._ids[r] not in self._soft_deleted],
                              dtype=np.int64)
        if len(rows) == 0:
            return []
        labels = self._map.labels_at(rows)
        vectors = self._vectors_of(labels)
        raw = self._raw_distances(vectors, query)
        k = min(k, len(rows))
        best = np.argpartition(raw, k - 1)[:k] if k < len(rows) else np.arange(len(rows))
        best = best[np.lexsort((np.asarray([self._ids[rows[i]] for i in best]), raw[best]))]
        scores, distances = scores_from_hnsw(self.metric, raw[best])
        return [(self._ids[int(rows[i])], float(s), float(d))
                for i, s, d in zip(best, scores, distances)]

    def _vectors_of(self, labels: list[int]) -> np.ndarray:
        in_pending = np.isin(np.asarray(labels, dtype=np.int64), self._pending.visible_labels())
        if not in_pending.any():
            with self._index_lock.read():
                return np.asarray(self._index.get_items(labels), dtype=np.float32)
        pending = [lb for lb, p in zip(labels, in_pending.tolist()) if p]
        indexed = [lb for lb, p in zip(labels, in_pending.tolist()) if not p]
        found = {lb: self._pending.vector(lb) for lb in pending}
        if indexed:
            with self._index_lock.read():
                fetched = np.asarray(self._index.get_items(indexed), dtype=np.float32)
            found.update(zip(indexed, fetched))
        return np.stack([found[lb] for lb in labels]).astype(np.float32)

    def _overfetch(self, query: np.ndarray, top_k: int, ef: int, where, view, selectivity: float
                   ) -> tuple[list[tuple[str, float, float]], int, int]:
        live = len(self._ids)
        fetch = min(live, max(top_k * 2, int(top_k / max(selectivity, 1e-6) * 1.5) + 10))
        while True:
            candidates = self._hnsw(query, fetch, max(ef, fetch))
            rows = np.asarray(self._map.rows_of(vid for vid, _, _ in candidates), dtype=np.int64)
            keep = where.mask(view, rows=rows) if len(rows) else np.zeros(0, bool)
            passed = [c for c, ok in zip(candidates, keep.tolist()) if ok]
            if len(passed) >= top_k or fetch >= live:
                return passed[:top_k], len(candidates), int(len(candidates) - len(passed))
            fetch = min(live, fetch * 4)

    def _filter_view(self) -> filter_eval.ColumnView:
        if self._filter_columns is None:
            self._filter_columns = _FilterColumns.from_store(self._ds, len(self._ids))
        return self._filter_columns.view()

    def text_search(self, query_text: str, top_k: int, include_content: bool = False,
                    include_metadata: bool = False, include_values: bool = False,
                    where: filter_eval.CompiledFilter | None = None) -> SearchOutcome:
        """BM25 over `content`, ranked by Deep Lake's BM25 index (score = its BM25 score).

        The Deep Lake query runs on a read-only handle outside the replica lock, so a slow text
        query does not stall writes; ids are mapped back to rows under the lock, and rows that
        were deleted or soft-deleted meanwhile are dropped."""
        terms = _bm25_terms(query_text)
        started = time.perf_counter()
        with self._lock:
            live = len(self._ids)
            fetch = top_k + len(self._soft_deleted)
        if live == 0:
            return SearchOutcome([], 0, 0, 0.0, strategy="bm25")
        if where is not None:
            fetch = max(fetch * 4, 100)
        if terms:
            self._refresh_text_index()
        while True:
            ranked = self._bm25_query(terms, min(fetch, live))
            with self._lock:
                candidates = [(vid, score) for vid, score in ranked
                              if vid in self._map and vid not in self._soft_deleted]
                if where is not None and candidates:
                    rows = np.asarray(self._map.rows_of(v for v, _ in candidates),
                                      dtype=np.int64)
                    keep = where.mask(self._filter_view(), rows=rows).tolist()
                    passed = [c for c, ok in zip(candidates, keep) if ok]
                else:
                    passed = candidates
                if len(passed) >= top_k or fetch >= live or len(ranked) < min(fetch, live):
                    passed = passed[:top_k]
                    records = self._read_rows(self._map.rows_of(v for v, _ in passed),
                                              include_values=include_values,
                                              include_content=include_content,
                                              include_metadata=include_metadata)
                    hits = [Hit(rec, float(score), 0.0) for rec, (_, score) in
                            zip(records, passed)]
                    return SearchOutcome(
                        hits, vectors_scanned=live, index_hits=len(ranked),
                        database_time_ms=(time.perf_counter() - started) * 1000,
                        filtered_out=len(candidates) - len(passed), strategy="bm25")
            fetch = min(live, fetch * 4)

    def _refresh_text_index(self) -> None:
        """Brings the content column's BM25 index up to date with the store, if a write
        committed since the last build. Writes never build it (see _writer_handle): in Deep
        Lake's automatic mode each commit's index update cost grew with the shard (median
        commit 5.5 ms at 25k rows, 116 ms at 250k, 500-row batches), and now and then one commit
        rebuilt the whole index (8.6 s at 175k rows of text). The build runs under `_lock`
        (Deep Lake builds only on a handle with no uncommitted changes), so writes wait for
        it: about 0.5 s per 200k rows of text, paid by the first text search after writes. A
        failed build is logged, not raised: the query is still right (Deep Lake scores the
        rows the index lacks by a scan), only slower."""
        with self._lock:
            # The BM25 query reads a read-only handle, which sees committed rows only, and Deep
            # Lake builds indexes only on a handle without uncommitted changes.
            self._commit_pending()
            if not self._text_index_stale:
                return
            ds = self._ds
            try:
                ds.indexing_mode = deeplake.IndexingMode.Always
                ds.build_indexes()
                self._text_index_stale = False
            except Exception:  # noqa: BLE001 - the index only speeds text search up
                log.exception("shard %s: building the BM25 index failed", self.path)
            finally:
                ds.indexing_mode = deeplake.IndexingMode.Off

    def _bm25_query(self, terms: str, limit: int) -> list[tuple[str, float]]:
        if not terms:
            return []
        with self._lock:    # no commit beside a read-only open or refresh (store_guard)
            if self._text_reader is None:
                self._text_reader = deeplake.open_read_only(self._store_url)
            else:
                self._text_reader.refresh()
        # terms holds only word characters and spaces (see _bm25_terms): nothing to escape.
        result = self._text_reader.query(
            f"SELECT id, BM25_SIMILARITY(content, '{terms}') AS score "
            f"ORDER BY BM25_SIMILARITY(content, '{terms}') DESC LIMIT {int(limit)}")
        if len(result) == 0:
            return []
        ids = list(result["id"][:])
        scores = np.asarray(result["score"][:], dtype=np.float64).reshape(-1)
        return [(vid, float(sc)) for vid, sc in zip(ids, scores) if sc > 0]

    def list_after(self, after_label: int, limit: int, include_values: bool
                   ) -> tuple[list[VectorRecord], int, bool]:
        """Rows with label > after_label, in row order: (records, last label, exhausted)."""
        with self._lock:
            start = self._map.first_row_after(after_label)
            rows = list(range(start, min(start + limit, len(self._ids))))
            last = self._map.label_at(rows[-1]) if rows else after_label
            exhausted = start + len(rows) >= len(self._ids)
            rows = [r for r in rows if self._ids[r] not in self._soft_deleted]
            return self._read_rows(rows, include_values=include_values), last, exhausted

    # ---- writes --------------------------------------------------------------------------------

    def write(self, upserts: list[VectorRecord], delete_ids: list[str],
              existing: ExistingPolicy = ExistingPolicy.ERROR,
              now_ms: int | None = None,
              position: tuple[int, int] | None = None) -> WriteResult:
        """Applies a batch, all or nothing. Raises InvalidArgument / AlreadyExists before
        touching the store; on any store failure goes back to the last commit (applying the
        writes made since again) and re-raises. Returns with every deleted or replaced row out
        of reads, searches and the graph, and every new row readable and searchable.

        Without `position` it returns after a Deep Lake commit that holds the batch. With one
        (the (seq, term) of the caller's logged op), the batch is group committed: the
        background committer commits it with the next group, and `durable_position` reaches
        `position` then. The caller's durable log holds it meanwhile.

        The graph marks for deleted rows are made after `_lock` is released: waiting for the
        graph's write lock (an indexer chunk, an index save) while holding `_lock` stalled every
        search of the replica. In between, the rows are already out of the id maps, and graph
        searches ask for `_unmarked_deletes` more candidates. A caller that already holds
        `_lock` (update, compact) gets the marks made under it, as before."""
        # RLock._is_owned (what threading.Condition uses) says whether this thread holds _lock.
        if self._lock._is_owned():
            return self._write(upserts, delete_ids, existing, None, now_ms,
                               position=position)
        marks: list[int] = []
        result = self._write(upserts, delete_ids, existing, marks, now_ms, position=position)
        if marks:
            self._mark_in_graph(marks)
        if result.deleted >= limits.memory_trim_removed_rows_min:
            heap.return_freed_memory_soon("a large delete")
        return result

    def _mark_in_graph(self, labels: list[int]) -> None:
        """Marks deleted labels in the graph (not holding `_lock`), then stops counting them
        as unmarked."""
        try:
            with self._index_lock.write():
                for label in labels:
                    try:
                        self._index.mark_deleted(label)
                    except RuntimeError:
                        pass    # compaction rebuilt the graph meanwhile, without it or marked
        finally:
            with self._lock:
                self._unmarked_deletes -= len(labels)

    def plan_write(self, upserts: list[VectorRecord], delete_ids: list[str],
                   existing: ExistingPolicy = ExistingPolicy.ERROR) -> WriteResult:
        """What write() would do (the same checks and refusals, the same counts and skipped
        ids), without touching the store: a primary logs a write's effect before applying it.
        The caller holds the batch's ids locked, so the answer stays true until it writes."""
        return self._write(upserts, delete_ids, existing, None, dry_run=True)

    def plan_update(self, changes: list[VectorRecord], paths: frozenset[str]) -> WriteResult:
        """What update() would do, without touching the store (see plan_write)."""
        with self._lock:
            self._check_update(changes, paths)
        return WriteResult(inserted=len(changes))

    def _check_update(self, changes: list[VectorRecord], paths: frozenset[str]) -> None:
        """update()'s refusals, under `_lock`: InvalidArgument for a path that is not an
        updatable field, NotFound for an id that does not exist or is soft-deleted."""
        unknown = sorted(set(paths) - set(UPDATABLE_FIELDS))
        if unknown:
            raise InvalidArgument(f"cannot update {', '.join(unknown)}; updatable fields: "
                                  f"{', '.join(UPDATABLE_FIELDS)}")
        for change in changes:
            if change.id not in self._map or change.id in self._soft_deleted:
                raise NotFound(f"vector '{change.id}' not found")

    def _write(self, upserts: list[VectorRecord], delete_ids: list[str],
               existing: ExistingPolicy, marks: list[int] | None,
               now_ms: int | None = None, dry_run: bool = False,
               position: tuple[int, int] | None = None) -> WriteResult:
        """write() under `_lock`. Graph marks go to `marks` for the caller to make after the
        lock (counted in `_unmarked_deletes`), or are made here when `marks` is None. Rows are
        stamped `now_ms` (default: now); a copy applying its primary's write passes the
        primary's stamp, so every copy holds the same timestamps."""
        with self._lock:
            result = WriteResult()
            seen = {record.id for record in upserts}
            shape = (self.dimensions,)
            if len(seen) != len(upserts) or any(
                    record.values is None or record.values.shape != shape for record in upserts):
                # Name the first problem in batch order.
                seen = set()
                for record in upserts:
                    if record.id in seen:
                        raise InvalidArgument(f"vector id '{record.id}' appears twice in the "
                                              "batch")
                    seen.add(record.id)
                    if record.values is None or record.values.shape != shape:
                        raise InvalidArgument(f"vector '{record.id}' must have dimension "
                                              f"{self.dimensions}")
            if seen & set(delete_ids):
                raise InvalidArgument("a batch may not both write and delete the same id")

            to_append: list[VectorRecord] = []
            replaced_ids: list[str] = []
            held = self._map
            if existing is not ExistingPolicy.REQUIRE and not any(
                    record.id in held for record in upserts):
                to_append = list(upserts)   # all new ids: nothing to check per record
                upserts = []
            for record in upserts:
                if existing is ExistingPolicy.REQUIRE and record.id not in held:
                    raise NotFound(f"vector '{record.id}' not found")
                if record.id in held:
                    if existing is ExistingPolicy.ERROR:
                        raise AlreadyExists(f"vector '{record.id}' already exists; "
                                            "use overwrite or skip_existing")
                    if existing is ExistingPolicy.SKIP:
                        result.skipped += 1
                        result.skipped_ids.append(record.id)
                        continue
                    replaced_ids.append(record.id)
                to_append.append(record)
            deleted_ids = []
            for vid in dict.fromkeys(delete_ids):
                if vid in held:
                    deleted_ids.append(vid)
                else:
                    result.not_found += 1
            replaced_rows = held.rows_of(replaced_ids)
            deleted_rows = held.rows_of(deleted_ids)
            result.deleted = len(deleted_rows)
            result.inserted = len(to_append)
            if dry_run:
                return result
            if not to_append and not deleted_rows:
                self._note_position(position)
                return result

            now = _now_ms() if now_ms is None else now_ms
            created = {}
            if replaced_rows:
                old = self._ds["created_at_ms"][replaced_rows]
                created = {self._ids[r]: int(c) for r, c in zip(replaced_rows, old)}
            labels = list(range(self._next_label, self._next_label + len(to_append)))
            gone_rows = sorted(set(replaced_rows) | set(deleted_rows), reverse=True)
            new_columns = self._columns_for(to_append, labels, created, now) if to_append \
                else None
            try:
                for row in gone_rows:
                    self._ds.delete(row)
                if to_append:
                    self._small.mark_filled(self._ds, new_columns)
                    self._ds.append(new_columns)
            except Exception as exc:
                self._rollback()
                raise Internal(f"shard store write failed: {exc}") from exc
            if not self._dirty():
                self._uncommitted_since = time.monotonic()
            self._uncommitted.append((gone_rows, new_columns))
            self._uncommitted_rows += len(to_append) + len(gone_rows)
            self._note_position(position)
            # A store that never recorded a position commits its first positioned write at once:
            # from then on its commits say which logged ops they hold (a restart replays the
            # log past that), and before it every write was committed when applied.
            if position is None or self.durable_position is None:
                try:
                    self._commit_pending()
                except Exception as exc:
                    self._uncommitted.pop()
                    self._rollback()
                    raise Internal(f"shard store write failed: {exc}") from exc
            else:
                self._commit_due.notify_all()

            # The store holds the batch (committed, or its op logged by the caller); now bring
            # the cache and maps in line.
            self._text_index_stale = True
            gone_ids = [self._ids[r] for r in gone_rows]
            gone_labels = [self._map.label_of(vid) for vid in gone_ids]
            graph_deletes = []
            for vid, label in zip(gone_ids, gone_labels):
                if vid in self._soft_deleted:
                    continue    # already hidden from the graph (the map unhides it below)
                if not self._pending.hide(label):
                    graph_deletes.append(label)
            if graph_deletes and self._index is not None:
                if marks is None:
                    with self._index_lock.write():
                        for label in graph_deletes:
                            self._index.mark_deleted(label)
                else:
                    marks.extend(graph_deletes)
                    self._unmarked_deletes += len(graph_deletes)
            self._next_label += len(to_append)
            if gone_rows:
                # Deletes shift every later row (O(rows), as Deep Lake's delete is).
                self._map.remove_rows(gone_rows)
            if self._filter_columns is not None:
                self._filter_columns.apply(sorted(gone_rows), new_columns)
            if self._matrix is not None:
                self._matrix.apply(sorted(gone_rows), labels,
                                   new_columns["values"] if to_append else None)
            self._small.apply(sorted(gone_rows), gone_labels, new_columns, labels)
            # Appended rows, in bulk (O(batch)).
            self._map.append([record.id for record in to_append], labels)
            if to_append and self._index is not None:
                self._enqueue(np.asarray(labels, dtype=np.int64), new_columns["values"])
            return result

    def update(self, changes: list[VectorRecord], paths: frozenset[str],
               now_ms: int | None = None,
               position: tuple[int, int] | None = None) -> WriteResult:
        """Updates existing vectors field by field (AIP-134). For each record, the fields named
        in `paths` replace the stored ones (an empty one clears it) and every other field keeps
        its stored value; without "values" in `paths` the records' values are ignored (None is
        fine). The stored rows are read and the merged rows written under one hold of `_lock`,
        so no other write interleaves, and as one batch through write() (group committed with
        `position`, see write), which rolls back on failure. Raises InvalidArgument for a path that is not an updatable field and NotFound
        for an id that does not exist or is soft-deleted (reads do not see it either), both
        before touching the store."""
        with self._lock:
            self._check_update(changes, paths)
            stored = self._read_rows(self._map.rows_of(change.id for change in changes),
                                     include_values="values" not in paths)
            for change, current in zip(changes, stored):
                for name in paths:
                    value = getattr(change, name)
                    setattr(current, name, dict(value) if name == "metadata" else value)
            return self.write(stored, [], ExistingPolicy.REQUIRE, now_ms, position=position)

    # ---- soft delete, restore, compaction ------------------------------------------------------

    def soft_delete(self, ids: list[str], now_ms: int | None = None,
                    position: tuple[int, int] | None = None) -> tuple[int, int]:
        """Hides rows from reads and searches without removing them (one commit, which also
        commits the group-committed writes before it and records `position`).
        Returns (soft-deleted, not found); already soft-deleted ids count as done."""
        with self._lock:
            targets = [i for i in dict.fromkeys(ids)
                       if i in self._map and i not in self._soft_deleted]
            missing = sum(1 for i in dict.fromkeys(ids) if i not in self._map)
            if not targets:
                self._note_position(position)
            if targets:
                now = _now_ms() if now_ms is None else now_ms
                applied_before = self._applied_position
                try:
                    for vid in targets:
                        self._ds[_SOFT_DELETE_COLUMN][self._map.row_of(vid)] = now
                    self._note_position(position)
                    self._commit_pending(force=True)
                except Exception as exc:
                    self._applied_position = applied_before
                    self._rollback()
                    raise Internal(f"shard store write failed: {exc}") from exc
                for vid in targets:
                    self._map.hide(vid)
                    self._hide_label(self._map.label_of(vid))
            return len(targets), missing

    def restore(self, ids: list[str], position: tuple[int, int] | None = None
                ) -> tuple[int, int]:
        """Brings soft-deleted rows back (one commit, as soft_delete). Returns (restored, not
        found): an id the shard does not hold (never written, deleted or purged) is not found;
        a live one counts in neither."""
        with self._lock:
            targets = [i for i in dict.fromkeys(ids) if i in self._soft_deleted]
            if not targets:
                self._note_position(position)
            if targets:
                applied_before = self._applied_position
                try:
                    for vid in targets:
                        self._ds[_SOFT_DELETE_COLUMN][self._map.row_of(vid)] = 0
                    self._note_position(position)
                    self._commit_pending(force=True)
                except Exception as exc:
                    self._applied_position = applied_before
                    self._rollback()
                    raise Internal(f"shard store write failed: {exc}") from exc
                for vid in targets:
                    self._map.unhide(vid)
                    self._unhide_label(self._map.label_of(vid))
            missing = sum(1 for i in dict.fromkeys(ids) if i not in self._map)
            return len(targets), missing

    def _hide_label(self, label: int) -> None:
        if self._index is None:
            return      # flat: the exact scan skips soft-deleted rows itself
        if self._pending.hide(label):
            return
        with self._index_lock.write():
            try:
                self._index.mark_deleted(label)
            except RuntimeError:
                pass    # already marked (e.g. in a saved index)

    def _unhide_label(self, label: int) -> None:
        if self._index is None:
            return
        if self._pending.show(label):
            return      # still in a pending chunk: visible to the exact scan again
        with self._index_lock.write():
            self._index.unmark_deleted(label)

    def compact(self) -> dict:
        """Removes soft-deleted rows for good, then rebuilds the graph without any deleted
        element. The build runs outside the replica lock (reads and writes go on); the new graph
        is reconciled with writes made meanwhile and swapped in under the locks, atomically."""
        started = time.perf_counter()
        with self._lock:
            purged = len(self._soft_deleted)
            if self._soft_deleted:
                self.write([], sorted(self._soft_deleted), ExistingPolicy.ERROR)
            if self._index is None:
                # Flat: purging the rows (and their matrix rows) is the whole compaction.
                return {"purged": purged, "indexed": len(self._ids), "late_rows": 0,
                        "seconds": round(time.perf_counter() - started, 3)}
            snapshot = self._labels.copy()
            values = (np.asarray(self._ds["values"][:], dtype=np.float32).reshape(
                len(snapshot), self.dimensions) if len(snapshot) else
                np.zeros((0, self.dimensions), np.float32))
        rebuilt = self._new_index(_graph_capacity(len(snapshot)))
        if len(snapshot):
            rebuilt.add_items(values, snapshot, num_threads=2)
        in_snapshot = set(snapshot.tolist())
        with self._lock, self._index_lock.write():
            live = self._labels
            for label in snapshot[~np.isin(snapshot, live)].tolist():
                rebuilt.mark_deleted(label)
            for vid in self._soft_deleted:
                label = self._map.label_of(vid)
                if label in in_snapshot and not self._pending.is_hidden(label):
                    rebuilt.mark_deleted(label)
            self._index = rebuilt
            self._ef_gate = EfGate(rebuilt, limits.ef_search_default)
            self._index_generation += 1
            # Rows added after the snapshot are pending or were indexed into the old graph.
            pending_now = set(self._pending.visible_labels().tolist())
            late_rows = [r for r, lb in enumerate(self._labels.tolist())
                         if lb not in pending_now and lb not in in_snapshot
                         and self._ids[r] not in self._soft_deleted]
            late_labels = self._labels[np.asarray(late_rows, dtype=np.int64)]
        if late_rows:
            late_values = np.asarray(self._ds["values"][late_rows], dtype=np.float32).reshape(
                len(late_rows), self.dimensions)
            self._enqueue(late_labels, late_values)
        # The old graph, the snapshot of every vector and the purged rows are freed now.
        heap.return_freed_memory_soon("a compaction")
        return {"purged": purged, "indexed": int(len(snapshot)),
                "late_rows": len(late_rows),
                "seconds": round(time.perf_counter() - started, 3)}

    # ---- background indexing -------------------------------------------------------------------

    def _enqueue(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        with self._lock:
            self._pending.append(labels, vectors)
            self._pending_changed.notify_all()

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def wait_indexed(self, timeout_s: float = 600.0) -> bool:
        """Blocks until every acknowledged row is in the graph (tests and benchmarks)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._pending.first() is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._pending_changed.wait(remaining)
            return True

    def _index_loop(self) -> None:
        _lower_thread_priority(_INDEXER_NICE)
        while True:
            with self._lock:
                while self._pending.first() is None and not self._closing:
                    self._pending_changed.wait()
                work = self._pending.first()
                if work is None:
                    return      # closing, and everything is indexed
                if self._closing and time.monotonic() >= self._close_deadline:
                    return      # closing, out of time: the rest is re-added on the next open
                labels, vectors = work
                generation = self._index_generation
            try:
                with self._index_lock.write():
                    needed = self._index.get_current_count() + len(labels)
                    if needed > self._index.get_max_elements():
                        self._index.resize_index(max(needed, self._index.get_max_elements() * 2))
                    self._index.add_items(vectors, labels,
                                          num_threads=limits.index_build_threads_max)
            except Exception:  # noqa: BLE001 - the rows stay pending (still searchable)
                log.exception("shard %s: indexing a chunk failed; retrying", self.path)
                time.sleep(limits.indexer_retry_pause_ms / 1000)
                continue
            drained = False
            with self._lock:
                if generation != self._index_generation:
                    continue    # compaction swapped the graph meanwhile: add the chunk again
                dead = self._pending.pop_first()
                self.indexed_vectors_total += len(labels)
                self._indexed_since_drained += len(labels)
                if dead:
                    with self._index_lock.write():
                        for lb in dead:
                            self._index.mark_deleted(lb)
                if self._pending.first() is None and \
                        self._indexed_since_drained >= limits.memory_trim_backlog_vectors_min:
                    drained = True
                    self._indexed_since_drained = 0
                self._pending_changed.notify_all()
            if drained:
                # The backlog's chunks, the store's buffers and the graph's growth freed
                # much memory in small pieces; glibc keeps it unless asked (shard/heap.py).
                heap.return_freed_memory("an indexing backlog drained")

    # ---- group commit --------------------------------------------------------------------------

    def _note_position(self, position: tuple[int, int] | None) -> None:
        """Records that the op at `position` is applied (caller holds `_lock`). The next commit
        holds it and records it as the durable position."""
        if position is not None:
            if not self._dirty():
                self._uncommitted_since = time.monotonic()
            self._applied_position = (int(position[0]), int(position[1]))
            self._commit_due.notify_all()

    def _dirty(self) -> bool:
        return bool(self._uncommitted) or self._applied_position != self.durable_position

    def _commit_pending(self, force: bool = False) -> None:
        """Commits everything applied and not yet committed, with the log position of the last
        op applied, as one Deep Lake commit, traced and timed (commit_observer). Caller holds
        `_lock`. Nothing to commit is a no-op, unless `force` (a change made outside write,
        such as a soft delete). Raises what Deep Lake raises; the writes stay uncommitted."""
        if not force and not self._dirty():
            return
        started = time.perf_counter()
        appended = sum(len(columns["label"]) for _, columns in self._uncommitted
                       if columns is not None)
        removed = sum(len(gone) for gone, _ in self._uncommitted)
        position = self._applied_position
        with tracing.span("deeplake.commit", {"deeplake.rows_appended": appended,
                                              "deeplake.rows_removed": removed}):
            commit_store(self._ds)
            if position is not None and position != self.durable_position:
                # The position goes in a commit of its own, after the rows': Deep Lake writes
                # a commit's metadata before its rows, so a kill -9 inside one commit holding
                # both could leave the position of ops whose rows never reached the store, and
                # the restart would not replay them (seen in a chaos run: a copy at op 17
                # without ops 7-10; tests/unit/test_group_commit_position_after_rows.py).
                self._ds.metadata[_POSITION_SEQ] = position[0]
                self._ds.metadata[_POSITION_TERM] = position[1]
                commit_store(self._ds)
        self.durable_position = position
        self._uncommitted = []
        self._uncommitted_rows = 0
        if ShardReplica.commit_observer is not None:
            ShardReplica.commit_observer(time.perf_counter() - started)
        self._run_durable_waiters()

    def when_durable(self, position: tuple[int, int], callback) -> None:
        """Calls `callback()` once a store commit holds the op at log `position` (at once if
        the last one does): in the thread that commits, under `_lock`, so it must be quick and
        take no other lock. A callback that raises is logged. A replica closed or dropped first
        never calls it (its caller's files go with the replica, or a restart finds them)."""
        with self._lock:
            self._durable_waiters.append((int(position[0]), callback))
            self._run_durable_waiters()

    def _run_durable_waiters(self) -> None:
        durable = self.durable_position
        if not self._durable_waiters or durable is None:
            return
        due = [c for seq, c in self._durable_waiters if seq <= durable[0]]
        if not due:
            return
        self._durable_waiters = [(seq, c) for seq, c in self._durable_waiters
                                 if seq > durable[0]]
        for callback in due:
            try:
                callback()
            except Exception:  # noqa: BLE001 - a leftover file is found again at start
                log.exception("shard %s: a callback after a group commit failed", self.path)

    def flush(self) -> tuple[int, int] | None:
        """Commits the group-committed writes now; returns the durable position (the (seq,
        term) of the last positioned op the store's commit holds, None if none ever was). A
        file copy of the store after this holds every write applied before it."""
        with self._lock:
            self._commit_pending()
            return self.durable_position

    def _commit_loop(self) -> None:
        """The background committer: commits once group_commit_rows_max rows (appended plus
        removed) wait, or once the oldest uncommitted write is group_commit_interval_ms old.
        A failed commit is retried (the writes stay applied, and the caller's log holds them)."""
        interval_s = limits.group_commit_interval_ms / 1000
        while True:
            with self._lock:
                while not self._committer_stop:
                    if self._uncommitted_rows >= limits.group_commit_rows_max:
                        break
                    if self._dirty():
                        remaining = self._uncommitted_since + interval_s - time.monotonic()
                        if remaining <= 0:
                            break
                        self._commit_due.wait(remaining)
                    else:
                        self._commit_due.wait()
                if self._committer_stop:
                    return
                try:
                    self._commit_pending()
                    failed = False
                except Exception:  # noqa: BLE001 - retried; the op log holds the writes
                    log.exception("shard %s: group commit failed; retrying", self.path)
                    failed = True
            if failed:
                time.sleep(limits.indexer_retry_pause_ms / 1000)

    def _columns_for(self, records: list[VectorRecord], labels: list[int],
                     created: dict[str, int], now: int) -> dict:
        return {
            "label": np.asarray(labels, dtype=np.int64),
            "id": [r.id for r in records],
            "document_id": [r.document_id for r in records],
            "chunk_id": [r.chunk_id for r in records],
            "content": [r.content for r in records],
            "content_hash": [r.content_hash for r in records],
            "content_type": [r.content_type for r in records],
            "language": [r.language for r in records],
            "model": [r.model for r in records],
            "values": np.stack([r.values for r in records]).astype(np.float32),
            "metadata": [dict(r.metadata) for r in records],
            "chunk_index": np.asarray([r.chunk_index for r in records], dtype=np.int64),
            "chunk_count": np.asarray([r.chunk_count for r in records], dtype=np.int64),
            "created_at_ms": np.asarray([created.get(r.id, now) for r in records], dtype=np.int64),
            "updated_at_ms": np.full(len(records), now, dtype=np.int64),
            _SOFT_DELETE_COLUMN: np.zeros(len(records), dtype=np.int64),
        }

    def _rollback(self) -> None:
        """Takes the store back to its last commit, then applies again the group-committed
        writes made since (all but the failed one, which the caller left out of
        `_uncommitted`) and commits them, so memory and store agree again. If that fails too,
        memory is reloaded from the last commit: the writes since are then missing until the
        caller replays its log past `durable_position` (at the next start)."""
        redo = self._uncommitted
        self._uncommitted, self._uncommitted_rows = [], 0
        try:
            self._ds.rollback()
        except Exception:  # noqa: BLE001 - reopen is the last resort to drop uncommitted rows
            self._ds = _writer_handle(deeplake.open(self._store_url))
        if redo or self._applied_position != self.durable_position:
            try:
                for gone_rows, columns in redo:
                    for row in gone_rows:
                        self._ds.delete(row)
                    if columns is not None:
                        self._small.mark_filled(self._ds, columns)
                        self._ds.append(columns)
                self._uncommitted = redo
                self._commit_pending(force=True)
                return      # the store is as memory says, committed
            except Exception:  # noqa: BLE001 - logged; the caller's log still holds the writes
                log.exception("shard %s: could not apply the uncommitted writes again after a "
                              "failed write; they come back when the op log is replayed",
                              self.path)
                self._uncommitted, self._uncommitted_rows = [], 0
                try:
                    self._ds.rollback()
                except Exception:  # noqa: BLE001
                    self._ds = _writer_handle(deeplake.open(self._store_url))
                self._applied_position = self.durable_position = _stored_position(self._ds)
                self._filter_columns = None
        self._text_index_stale = True
        self._load_maps()
        self._small = _SmallFields(self._ds, self._labels.tolist())
        self._small.record_filled(self._ds)     # committed with the next write
        if self._matrix is not None:
            self._matrix = self._matrix_from_store()


def _graph_capacity(count: int) -> int:
    """The capacity to give a graph that holds `count` rows: a little spare, not double. hnswlib
    allocates a mutex (40 bytes) and a level slot per element of capacity up front, resident
    whether used or not: at double capacity that was 19 MB of a 500k-row node (measured: RSS
    after load_index at 2x and at 1.125x). Growth past it is the indexer's resize_index."""
    return count + count * limits.hnsw_spare_capacity_percent // 100


def _stored_position(ds) -> tuple[int, int] | None:
    """The (seq, term) of the last logged op the store's commit holds, or None for a store
    that never recorded one."""
    try:
        return int(ds.metadata[_POSITION_SEQ]), int(ds.metadata[_POSITION_TERM])
    except Exception:  # noqa: BLE001 - deeplake raises its own KeyError-like error
        return None


def mark_filled_columns(ds, appended: dict) -> None:
    """For a writer that appends rows to a shard store itself (node/backup_export.py): names
    in the store's _FILLED_COLUMNS every short column in which `appended` holds a value, before
    the rows go in. A store without the key is left without it (it is read whole)."""
    filled = _filled_columns(ds)
    if filled is None:
        return
    grown = _filled_in(appended) - filled
    if grown:
        ds.metadata[_FILLED_COLUMNS] = ",".join(sorted(filled | grown))


def _filled_in(appended: dict) -> set[str]:
    """The short columns in which a batch of rows (column name -> values) holds a value."""
    return {name for name in _SMALL_TEXT if any(appended[name])} | \
        {name for name in _SMALL_INT if np.any(appended[name])}


def _filled_columns(ds) -> set[str] | None:
    """The store's _FILLED_COLUMNS, or None when it has none (a store made before the key)."""
    try:
        value = str(ds.metadata[_FILLED_COLUMNS])
    except Exception:  # noqa: BLE001 - deeplake raises its own KeyError-like error
        return None
    return {name for name in value.split(",") if name}


def _writer_handle(ds):
    """`ds` with Deep Lake's index updates off for this session (the setting is not stored,
    so every open sets it again). A commit then writes the rows and nothing else, and its cost
    stays flat as the shard grows; text search builds the BM25 index when it needs it
    (ShardReplica._refresh_text_index)."""
    ds.indexing_mode = deeplake.IndexingMode.Off
    return ds


def _write_graph(index: hnswlib.Index, path: str) -> None:
    """Writes the graph to `path` (hnswlib's own format, read by load_index). A function of
    its own so that tests can observe a save in progress."""
    index.save_index(path)


def _exact_top(values: np.ndarray, sqnorms: np.ndarray, labels: np.ndarray, query: np.ndarray,
               rows: np.ndarray | None, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The k best of `values` (only `rows` of it, when given) for `query`, as (labels,
    hnswlib-style raw distances) best first: 1 - inner product for ip and cosine, squared L2
    (by the expansion |x|^2 - 2 x.q + |q|^2, one BLAS matrix-vector product) for l2."""
    if k <= 0 or len(values) == 0 or (rows is not None and len(rows) == 0):
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    if rows is not None and len(rows) * 2 < len(values):
        values, sqnorms, labels, rows = values[rows], sqnorms[rows], labels[rows], None
    products = values @ query
    if metric == "l2":
        raw = np.maximum(sqnorms - 2.0 * products + float(query @ query), 0.0)
    else:
        raw = 1.0 - products
    if rows is not None:
        raw, labels = raw[rows], labels[rows]
    k = min(k, len(raw))
    best = np.argpartition(raw, k - 1)[:k] if k < len(raw) else np.arange(len(raw))
    best = best[np.lexsort((labels[best], raw[best]))]
    return labels[best], raw[best]


class _VectorMatrix:
    """The replica's vectors, row for row with the store, as one contiguous float32 matrix
    (with labels and squared norms). Appends fill spare capacity in place, past every snapshot
    taken before; deletes build new arrays. So a snapshot (views of the first n rows) stays
    valid and unchanged while it is scanned outside the replica's lock. Mutated under _lock."""

    def __init__(self, values: np.ndarray, labels: np.ndarray):
        self._values = np.ascontiguousarray(values, dtype=np.float32)
        self._labels = np.asarray(labels, dtype=np.int64)
        self._sqnorms = np.einsum("ij,ij->i", self._values, self._values)
        self._count = len(self._labels)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = self._count
        return self._values[:n], self._labels[:n], self._sqnorms[:n]

    def apply(self, deleted_rows: list[int], labels: list[int], values: np.ndarray | None
              ) -> None:
        """Removes `deleted_rows` (row numbers before the write), then appends `values`."""
        if deleted_rows:
            keep = np.ones(self._count, dtype=bool)
            keep[deleted_rows] = False
            self._values = self._values[:self._count][keep]
            self._labels = self._labels[:self._count][keep]
            self._sqnorms = self._sqnorms[:self._count][keep]
            self._count = len(self._labels)
        if values is None or not len(values):
            return
        added = len(values)
        needed = self._count + added
        if needed > len(self._labels):
            capacity = max(needed, 2 * len(self._labels), limits.exact_matrix_initial_vectors)
            grown = np.empty((capacity, values.shape[1]), dtype=np.float32)
            grown[:self._count] = self._values[:self._count]
            self._values = grown
            self._labels = np.concatenate([self._labels[:self._count],
                                           np.empty(capacity - self._count, np.int64)])
            self._sqnorms = np.concatenate([self._sqnorms[:self._count],
                                            np.empty(capacity - self._count, np.float32)])
        block = np.asarray(values, dtype=np.float32)
        self._values[self._count:needed] = block
        self._labels[self._count:needed] = labels
        self._sqnorms[self._count:needed] = np.einsum("ij,ij->i", block, block)
        self._count = needed


def _lower_thread_priority(nice: int) -> None:
    """Raises the calling thread's nice value by `nice`. On Linux, setpriority on a thread id
    affects that thread only. Best effort: elsewhere, or when refused, the thread runs as is."""
    if nice <= 0:
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except (AttributeError, OSError):
        pass


def _bm25_terms(text: str) -> str:
    """The query's words only. BM25 tokenizes on word characters anyway, and keeping nothing
    else means the TQL string literal can hold no quote or backslash."""
    return " ".join(re.findall(r"\w+", text, flags=re.UNICODE))[:limits.text_query_bytes_max]


_SMALL_TEXT = ("document_id", "chunk_id", "content_hash", "content_type", "language", "model")
_SMALL_INT = ("chunk_index", "chunk_count")


class _SmallFields:
    """The short fields every search hit carries, in memory, so a plain search reads nothing
    from the store (reading ten Deep Lake columns cost ~1.5 ms per query, seven times the graph
    search). Text and small ints are sparse, keyed by label (only non-empty values cost
    memory); the two timestamps are dense numpy arrays in row order."""

    def __init__(self, ds, labels: list[int]):
        count = len(labels)
        # The columns read (the store's _FILLED_COLUMNS, or all of them when it has none) and
        # whether the store lacks the key (record_filled then writes it).
        stored = _filled_columns(ds)
        self.filled: set[str] = set(_SMALL_TEXT + _SMALL_INT) if stored is None else stored
        self._key_missing = stored is None
        self.text: dict[str, dict[int, str]] = {}
        for name in _SMALL_TEXT:
            values = ds[name][:] if count and name in self.filled else []
            self.text[name] = {lb: v for lb, v in zip(labels, values) if v}
        self.ints: dict[str, dict[int, int]] = {}
        for name in _SMALL_INT:
            values = np.asarray(ds[name][:], dtype=np.int64) if count and name in self.filled \
                else np.zeros(0, np.int64)
            nonzero = np.flatnonzero(values)
            self.ints[name] = {labels[i]: int(values[i]) for i in nonzero.tolist()}
        self._created = _GrowableColumn(np.asarray(ds["created_at_ms"][:], dtype=np.int64)
                                        if count else np.zeros(0, np.int64))
        self._updated = _GrowableColumn(np.asarray(ds["updated_at_ms"][:], dtype=np.int64)
                                        if count else np.zeros(0, np.int64))

    def record_filled(self, ds) -> bool:
        """Writes _FILLED_COLUMNS into a store that lacks it (for the caller to commit): the
        columns that hold a value now, found by the full read __init__ made. True if it did."""
        if not self._key_missing:
            return False
        self.filled = {name for name in _SMALL_TEXT if self.text[name]} | \
            {name for name in _SMALL_INT if self.ints[name]}
        ds.metadata[_FILLED_COLUMNS] = ",".join(sorted(self.filled))
        self._key_missing = False
        return True

    def mark_filled(self, ds, appended: dict) -> None:
        """Before `appended` goes into the store: names in _FILLED_COLUMNS every short column
        in which it holds a value, so the commit that holds the rows holds the key too."""
        grown = _filled_in(appended) - self.filled
        if grown:
            self.filled |= grown
            ds.metadata[_FILLED_COLUMNS] = ",".join(sorted(self.filled))

    @property
    def created(self) -> np.ndarray:
        return self._created.values

    @property
    def updated(self) -> np.ndarray:
        return self._updated.values

    def apply(self, deleted_rows: list[int], deleted_labels: list[int], appended: dict | None,
              appended_labels: list[int]) -> None:
        for label in deleted_labels:
            for column in (*self.text.values(), *self.ints.values()):
                column.pop(label, None)
        if deleted_rows:
            self._created.delete(deleted_rows)
            self._updated.delete(deleted_rows)
        if appended is not None:
            for name in _SMALL_TEXT:
                self.text[name].update((lb, v) for lb, v in zip(appended_labels, appended[name])
                                       if v)
            for name in _SMALL_INT:
                self.ints[name].update((lb, int(v)) for lb, v in zip(appended_labels,
                                                                     appended[name]) if v)
            self._created.append(appended["created_at_ms"])
            self._updated.append(appended["updated_at_ms"])


class _FilterColumns:
    """In-memory columns the filters read, built from the store on the first filtered search and
    then kept in step with every write (deletes, then appends), under the replica's lock."""

    def __init__(self, standard: dict[str, np.ndarray], metadata: filter_eval.MetadataColumns):
        self.standard = {name: _GrowableColumn(values) for name, values in standard.items()}
        self.metadata = metadata

    @classmethod
    def from_store(cls, ds, count: int) -> "_FilterColumns":
        standard: dict[str, np.ndarray] = {}
        for name in sorted(TEXT_FIELDS):
            values = list(ds[name][:]) if count else []
            standard[name] = _object_array(["" if v is None else v for v in values])
        for name in sorted(NUMERIC_FIELDS):
            standard[name] = np.asarray(ds[name][:] if count else [], dtype=np.int64)
        metadata = filter_eval.MetadataColumns(
            (dict(m) if m is not None else None) for m in (ds["metadata"][:] if count else []))
        return cls(standard, metadata)

    def apply(self, deleted_rows: list[int], appended: dict | None) -> None:
        if deleted_rows:
            for column in self.standard.values():
                column.delete(deleted_rows)
            self.metadata.delete(deleted_rows)
        if appended is not None:
            for name in TEXT_FIELDS:
                self.standard[name].append(_object_array(appended[name]))
            for name in NUMERIC_FIELDS:
                self.standard[name].append(np.asarray(appended[name], dtype=np.int64))
            self.metadata.append(appended["metadata"])

    def view(self) -> filter_eval.ColumnView:
        return filter_eval.ColumnView({name: column.values for name, column in
                                       self.standard.items()}, self.metadata)


class _GrowableColumn:
    """A 1-D array with spare capacity past its rows, so that appending a batch copies only the
    batch (the whole column is copied only when the capacity doubles: O(log n) times). Before,
    each write concatenated whole in-memory columns, a cost that grew with the shard (at 200k
    rows, a fifth of a 500-row write's time). `values` is a view of the rows; appends write
    past it, and a delete builds a new buffer, so a view taken earlier never changes."""

    def __init__(self, values: np.ndarray):
        self._buffer = np.empty(max(len(values), limits.exact_matrix_initial_vectors),
                                dtype=values.dtype)
        self._buffer[:len(values)] = values
        self._rows = len(values)

    @property
    def values(self) -> np.ndarray:
        return self._buffer[:self._rows]

    def append(self, more: np.ndarray) -> None:
        needed = self._rows + len(more)
        if needed > len(self._buffer):
            grown = np.empty(max(needed, 2 * len(self._buffer)), dtype=self._buffer.dtype)
            grown[:self._rows] = self._buffer[:self._rows]
            self._buffer = grown
        self._buffer[self._rows:needed] = more
        self._rows = needed

    def delete(self, rows: list[int]) -> None:
        kept = np.delete(self.values, rows)
        self._buffer = np.empty(max(len(kept), limits.exact_matrix_initial_vectors),
                                dtype=kept.dtype)
        self._buffer[:len(kept)] = kept
        self._rows = len(kept)


def _object_array(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def directory_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total
