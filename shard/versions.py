"""Reads of a shard replica at an old version: the state a consistent cut tagged.

Every write batch is one Deep Lake commit, so the store keeps every earlier state. A cut
(router/cut.py) puts a Deep Lake tag on the current commit of each copy (`mark`); a read at that
version opens the tagged commit read-only (`VersionView`). Tags are files of the store, so a
copy made later from these files (a replication snapshot) holds them too, and compaction, which
only adds a commit, never removes the state a tag names.

How an old version is searched: by exact scan of its rows, never through HNSW (the graph is a
cache of the current rows only). The view keeps the version's vectors as one float32 matrix, so
a search is one BLAS matrix-vector product (bench figures in router/DESIGN.md). A shard whose
version holds more than `as_of_scan_vectors_max` rows refuses the search with a clear error
rather than scan for seconds. Views are cached per (store, tag), least recently used dropped
first, bounded by `version_views_max` and by the bytes of their matrices
(`version_view_cache_bytes_max`).
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import re
import threading
from collections import OrderedDict

import numpy as np

from shard import filter_eval
from shard.records import Hit, SearchOutcome, VectorRecord
from shard.replica import STORE_COMMITS, _FilterColumns, _exact_top
from shard.scoring import scores_from_hnsw
from tributary import errors, lazy_import, limits

deeplake = lazy_import.module("deeplake")  # imported on first use, as in shard/replica.py

log = logging.getLogger("tributary.shard")

_SOFT_DELETE_COLUMN = "deleted_at_ms"
_SMALL_TEXT = ("document_id", "chunk_id", "content_hash", "content_type", "language", "model")
_SMALL_INT = ("chunk_index", "chunk_count", "created_at_ms", "updated_at_ms")


def mark(ds, tag: str) -> str:
    """Tags the store's current commit `tag` (idempotent: an existing tag is kept) and
    returns the commit id it names. The caller holds the replica's lock, so no write commits
    in between."""
    try:
        return ds.tags[tag].version
    except Exception:  # noqa: BLE001 - deeplake raises TagNotFoundError, not exported by name
        pass
    with STORE_COMMITS.read():     # a tag is written like a commit
        return ds.tag(tag).version


# ---- holes in the commit log ------------------------------------------------------------------
#
# Deep Lake 4.7 commits in two steps: it claims the next base of the branch's log (the 8-byte
# counter `_deeplake_log/<branch>/next_base`), then writes the entry `<base>m<...>.jsonl[.lz4]`.
# A process killed between the two (kill -9 of a node mid-commit) leaves a hole: a base below
# the counter that never gets its entry. From then on every commit that deletes rows (a delete,
# an overwrite, a purge) waits DEEPLAKE_COMMIT_CLAIM_TIMEOUT_MS (2 s) in Deep Lake's finalizer
# for that "predecessor commit" to materialize ("predecessor commits did not materialize within
# 2000 ms; proceeding with possibly-stale snapshot"); appends do not wait. The hole travels with
# the store's files, so a copy that installs a file snapshot of its primary inherits it (chaos
# backup seeds 118, 121, 123: a copy applying the primary's overwrites at one commit per 2 s
# never caught up). A compaction (Dataset.compact) writes a marker entry above the hole, after
# which the finalizer no longer looks below it; tags keep naming their commits. No Deep Lake
# API reports the hole, so the log's file names are read here; a layout this does not recognise
# reports no hole, which changes nothing.

_LOG_ENTRY = re.compile(r"^(\d{10})([a-z])(\d{8})\.jsonl(\.lz4)?$")
_COMPACTION_MARK = "o"


def log_holes(store_path: str) -> list[tuple[str, int]]:
    """(branch id, base) of every commit-log base the store's branches claimed and never wrote,
    above each branch's last compaction marker. Only meaningful while no commit is in flight
    (the one writer has just opened the store)."""
    root = os.path.join(store_path, "_deeplake_log")
    try:
        branches = sorted(b for b in os.listdir(root) if b != "_meta")
    except OSError:
        return []
    holes = []
    for branch in branches:
        directory = os.path.join(root, branch)
        try:
            with open(os.path.join(directory, "next_base"), "rb") as handle:
                next_base = int.from_bytes(handle.read(8), "little")
            names = os.listdir(directory)
        except OSError:
            continue
        written, marker = set(), 0
        for name in names:
            found = _LOG_ENTRY.match(name)
            if found:
                written.add(int(found.group(1)))
                if found.group(2) == _COMPACTION_MARK:
                    marker = max(marker, int(found.group(1)))
        holes += [(branch, base) for base in range(marker + 1, next_base) if base not in written]
    return holes


def heal_log_holes(ds, store_path: str) -> list[tuple[str, int]]:
    """Compacts the store (`ds`: its writer handle, just opened, nothing uncommitted) when its
    commit log has holes (log_holes), so that deletes stop waiting on them; returns the holes
    it found. A compaction that fails is logged and the store is used as it is (slower
    deletes, same content)."""
    holes = log_holes(store_path)
    if not holes:
        return holes
    # A compaction writes its marker only once it has trailing commits to merge: the first
    # one over a hole at the log's end writes a commit, the second the marker.
    left = holes
    try:
        for _ in range(limits.store_log_heal_compactions_max):
            with STORE_COMMITS.read():
                ds.compact()
            left = log_holes(store_path)
            if not left:
                break
    except Exception:  # noqa: BLE001 - a failed compaction leaves the store as it was
        log.exception("store %s: compacting over commit-log holes %s failed", store_path, holes)
        return holes
    if left:
        log.error("store %s: commit-log holes %s are still there after %d compactions; "
                  "deletes will wait on them", store_path, left,
                  limits.store_log_heal_compactions_max)
    else:
        log.warning("store %s: compacted over commit-log holes %s (commits killed mid-way); "
                    "deletes no longer wait on them", store_path, holes)
    return holes


class VersionView:
    """The rows of one store at one tagged commit, read-only. Safe from several threads."""

    def __init__(self, store_url: str, tag: str, dimensions: int, metric: str):
        try:
            # Alone against every commit in the process (replica.STORE_COMMITS): beside one,
            # this open can freeze the process.
            with STORE_COMMITS.write():
                self._ds = deeplake.open_read_only(store_url).tags[tag].open()
        except Exception as exc:  # noqa: BLE001 - TagNotFoundError: this copy lacks the version
            raise errors.Unavailable(f"this copy of the shard does not hold version tag "
                                     f"'{tag}'") from exc
        self.tag = tag
        self.dimensions = dimensions
        self.metric = metric
        self.commit_id = self._ds.version
        count = len(self._ds)
        self._ids: list[str] = list(self._ds["id"][:]) if count else []
        self._labels = (np.asarray(self._ds["label"][:], dtype=np.int64) if count
                        else np.zeros(0, np.int64))
        deleted = self._ds[_SOFT_DELETE_COLUMN][:] if count else []
        self._active = np.asarray([d is None or int(d) == 0 for d in deleted], dtype=bool)
        self._row_of = {vid: row for row, vid in enumerate(self._ids)}
        self._lock = threading.Lock()
        self._matrix: tuple[np.ndarray, np.ndarray] | None = None
        self._filters: _FilterColumns | None = None
        self._small: dict | None = None
        self.store_identity: tuple[int, int] | None = None

    def count(self) -> int:
        """Active rows (soft-deleted ones not counted)."""
        return int(self._active.sum())

    def matrix_bytes(self) -> int:
        return 0 if self._matrix is None else self._matrix[0].nbytes

    def get(self, ids: list[str], include_values: bool = True) -> list[VectorRecord]:
        rows = [self._row_of[i] for i in ids if i in self._row_of and self._active[self._row_of[i]]]
        return self._read_rows(rows, include_values)

    def list_after(self, after_label: int, limit: int, include_values: bool
                   ) -> tuple[list[VectorRecord], int, bool]:
        """Rows with label > after_label, in row order: (records, last label, exhausted)."""
        start = bisect.bisect_right(self._labels.tolist(), after_label)
        rows = list(range(start, min(start + limit, len(self._ids))))
        last = int(self._labels[rows[-1]]) if rows else after_label
        exhausted = start + len(rows) >= len(self._ids)
        rows = [r for r in rows if self._active[r]]
        return self._read_rows(rows, include_values), last, exhausted

    def search(self, query: np.ndarray, top_k: int, include_content: bool = False,
               include_metadata: bool = False, include_values: bool = False,
               where: filter_eval.CompiledFilter | None = None) -> SearchOutcome:
        """The exact top-k of the version's active rows that pass `where`. Raises
        ResourceExhausted when the version holds more than as_of_scan_vectors_max rows."""
        import time
        started = time.perf_counter()
        count = len(self._ids)
        if count > limits.as_of_scan_vectors_max:
            raise errors.ResourceExhausted(
                f"a search at a version scans every row, and this shard held {count} rows "
                f"then, more than as_of_scan_vectors_max={limits.as_of_scan_vectors_max}")
        if count == 0:
            return SearchOutcome([], 0, 0, 0.0, strategy="as_of_exact")
        values, sqnorms = self._vectors()
        mask = self._active
        if where is not None:
            mask = mask & where.mask(self._filter_view())
        rows = np.flatnonzero(mask)
        positions = np.arange(count, dtype=np.int64)
        found_rows, raw = _exact_top(values, sqnorms, positions, query, rows,
                                     min(top_k, len(rows)), self.metric)
        scores, distances = scores_from_hnsw(self.metric, raw)
        records = self._read_rows(found_rows.tolist(), include_values, include_content,
                                  include_metadata)
        hits = [Hit(r, float(s), float(d)) for r, s, d in zip(records, scores, distances)]
        return SearchOutcome(hits, vectors_scanned=len(rows), index_hits=len(hits),
                             database_time_ms=(time.perf_counter() - started) * 1000,
                             filtered_out=int(self._active.sum()) - len(rows),
                             strategy="as_of_exact")

    def _vectors(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if self._matrix is None:
                values = np.asarray(self._ds["values"][:], dtype=np.float32).reshape(
                    len(self._ids), self.dimensions)
                self._matrix = (values, np.einsum("ij,ij->i", values, values))
            return self._matrix

    def _filter_view(self) -> filter_eval.ColumnView:
        with self._lock:
            if self._filters is None:
                self._filters = _FilterColumns.from_store(self._ds, len(self._ids))
            return self._filters.view()

    def _small_columns(self) -> dict:
        """The short fields of every row, read once per view: per search, the store is then
        read only for content, metadata and values, and only when asked for (reading ten
        Deep Lake columns for ten hits cost ~20 ms a query)."""
        with self._lock:
            if self._small is None:
                count = len(self._ids)
                small = {}
                for name in _SMALL_TEXT:
                    values = self._ds[name][:] if count else []
                    small[name] = ["" if v is None else str(v) for v in values]
                for name in _SMALL_INT:
                    small[name] = (np.asarray([0 if v is None else int(v) for v in
                                               self._ds[name][:]], dtype=np.int64)
                                   if count else np.zeros(0, np.int64))
                self._small = small
            return self._small

    def _read_rows(self, rows: list[int], include_values: bool, include_content: bool = True,
                   include_metadata: bool = True) -> list[VectorRecord]:
        if not rows:
            return []
        ds = self._ds
        small = self._small_columns()
        content = ds["content"][rows] if include_content else None
        metadata = ds["metadata"][rows] if include_metadata else None
        values = (np.asarray(ds["values"][rows], dtype=np.float32).reshape(
            len(rows), self.dimensions) if include_values else None)
        out = []
        for i, row in enumerate(rows):
            out.append(VectorRecord(
                id=self._ids[row], values=None if values is None else values[i],
                document_id=small["document_id"][row], chunk_id=small["chunk_id"][row],
                content="" if content is None or content[i] is None else content[i],
                content_hash=small["content_hash"][row],
                metadata={} if metadata is None or metadata[i] is None else
                {k: str(v) for k, v in dict(metadata[i]).items()},
                content_type=small["content_type"][row], language=small["language"][row],
                chunk_index=int(small["chunk_index"][row]),
                chunk_count=int(small["chunk_count"][row]), model=small["model"][row],
                created_at_ms=int(small["created_at_ms"][row]),
                updated_at_ms=int(small["updated_at_ms"][row])))
        return out


def _identity(store_url: str) -> tuple[int, int] | None:
    """(device, inode) of a store's directory: a new directory swapped in has another."""
    try:
        found = os.stat(store_url.removeprefix("file://"))
    except OSError:
        return None
    return found.st_dev, found.st_ino


class ViewCache:
    """Open VersionViews by (store url, tag), least recently used dropped first."""

    def __init__(self, views_max: int = limits.version_views_max,
                 bytes_max: int = limits.version_view_cache_bytes_max):
        self.views_max = views_max
        self.bytes_max = bytes_max
        self._views: OrderedDict[tuple[str, str], VersionView] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, store_url: str, tag: str, dimensions: int, metric: str,
            guard=contextlib.nullcontext()) -> VersionView:
        """The open view of `tag` in the store at `store_url`, opened if need be. A store
        whose directory was replaced since (a copy that installed a snapshot of its primary's
        files) is opened afresh: the old view reads files that are gone. A view is opened
        holding `guard`: the store's commit lock (ShardReplica.store_guard), since opening a
        read-only handle beside a commit of the same store can deadlock the process."""
        key = (store_url, tag)
        identity = _identity(store_url)
        with self._lock:
            view = self._views.get(key)
            if view is not None and view.store_identity == identity:
                self._views.move_to_end(key)
                return view
        with guard:
            view = VersionView(store_url, tag, dimensions, metric)
        view.store_identity = identity
        with self._lock:
            known = self._views.get(key)
            if known is not None and known.store_identity == identity:
                view = known
            self._views[key] = view
            self._views.move_to_end(key)
            self._trim()
        return view

    def trim(self) -> None:
        with self._lock:
            self._trim()

    def _trim(self) -> None:
        while len(self._views) > self.views_max or (
                len(self._views) > 1 and
                sum(v.matrix_bytes() for v in self._views.values()) > self.bytes_max):
            self._views.popitem(last=False)

    def forget(self, store_url: str) -> None:
        """Drops the views of a store (its files were replaced or removed)."""
        with self._lock:
            for key in [k for k in self._views if k[0] == store_url]:
                del self._views[key]
