"""PendingRows: a replica's rows that are in the store but not yet in the HNSW graph.

The indexer takes them oldest chunk first; every search scans them exactly (`chunks`); a delete
hides a pending row at once, and the indexer marks it deleted in the graph after adding its
chunk (`pop_first` names those rows); a restore shows it again.

Kept as the chunks themselves (labels, vectors) plus a visibility mask each, with no Python
object per row. The replica kept a dict label -> vector before: at the end of a 1M build each
node had ~470k pending rows, an int key and a numpy view (~130 bytes of small objects) apiece,
allocated in between the ids the replica keeps for good; once freed they left ~40 MB a node of
pymalloc pools that could not be returned (`python -m bench.million`: cluster RSS right after
the build 1,580 MB, 1,501 with the views gone, 1,449 with the keys gone too). A label is found
by a binary search over the chunks' label ranges (a vectorized scan when the chunks are out of
label order), then by arithmetic in its chunk (a write's labels are consecutive) or a binary
search: ~2.4 us a look-up at 2,000 chunks (500k pending rows), against ~0.3 us for the dict.
Only deletes, restores and exact scans of pending rows look labels up; bulk membership tests
use `visible_labels` with np.isin.

Pure: no store, no graph, no lock (the replica's `_lock` guards it).
"""

from __future__ import annotations

import bisect

import numpy as np


class _Chunk:
    __slots__ = ("labels", "vectors", "visible", "sorted_labels", "order", "low", "high",
                 "contiguous")

    def __init__(self, labels: np.ndarray, vectors: np.ndarray):
        self.labels = labels
        self.vectors = vectors
        self.visible = np.ones(len(labels), dtype=bool)
        if len(labels) > 1 and not bool(np.all(labels[1:] > labels[:-1])):
            self.order = np.argsort(labels, kind="stable")
            self.sorted_labels = labels[self.order]
        else:
            self.order = None
            self.sorted_labels = labels
        self.low, self.high = int(self.sorted_labels[0]), int(self.sorted_labels[-1])
        # A write's labels are consecutive: the offset is then arithmetic, no numpy call.
        self.contiguous = self.order is None and self.high - self.low + 1 == len(labels)

    def offset(self, label: int) -> int:
        """The label's position in this chunk, or -1."""
        if not self.low <= label <= self.high:
            return -1
        if self.contiguous:
            return label - self.low
        i = int(np.searchsorted(self.sorted_labels, label))
        if int(self.sorted_labels[i]) != label:
            return -1
        return i if self.order is None else int(self.order[i])


class PendingRows:
    """FIFO chunks of (labels, vectors) waiting for the graph, and which of their rows are
    visible. A label is in at most one chunk (the caller's promise: labels are never reused).

    Invariants (checked by tests/unit/test_pending_rows.py against a dict-based model): `len`
    counts visible rows; a row is visible or hidden from its append until its chunk is popped."""

    def __init__(self, chunk_rows: int):
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be at least 1")
        self._chunk_rows = chunk_rows
        self._chunks: list[_Chunk] = []
        self._pairs: list[tuple[np.ndarray, np.ndarray]] = []     # the chunks' (labels, vectors)
        self._visible = 0
        # Each chunk's lowest and highest label, and whether the chunks are in label order with
        # disjoint ranges; rebuilt on the first look-up after a change.
        self._bounds: tuple[list[int] | np.ndarray, list[int] | np.ndarray, bool] | None = None

    def __len__(self) -> int:
        """The visible pending rows."""
        return self._visible

    @property
    def chunks(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every chunk's (labels, vectors), oldest first, hidden rows included (a search filters
        those by the replica's id map)."""
        return list(self._pairs)

    def first(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The oldest chunk's (labels, vectors): the indexer's next work. None when empty."""
        return self._pairs[0] if self._pairs else None

    def append(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """Rows at the end, visible, in chunks of at most `chunk_rows`."""
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(vectors) != len(labels):
            raise ValueError(f"{len(labels)} labels but {len(vectors)} vectors")
        step = self._chunk_rows
        for start in range(0, len(labels), step):
            chunk = _Chunk(labels[start:start + step], vectors[start:start + step])
            self._chunks.append(chunk)
            self._pairs.append((chunk.labels, chunk.vectors))
        self._visible += len(labels)
        self._bounds = None

    def pop_first(self) -> list[int]:
        """Drops the oldest chunk (the indexer added it to the graph) and returns its hidden
        labels, which the graph must mark deleted."""
        chunk = self._chunks.pop(0)
        self._pairs.pop(0)
        self._visible -= int(np.count_nonzero(chunk.visible))
        self._bounds = None
        return chunk.labels[~chunk.visible].tolist()

    def visible_labels(self) -> np.ndarray:
        """Every visible pending label, for membership tests in bulk (np.isin)."""
        if not self._chunks:
            return np.zeros(0, np.int64)
        return np.concatenate([c.labels[c.visible] for c in self._chunks])

    def _find(self, label: int) -> tuple[_Chunk | None, int]:
        if not self._chunks:
            return None, -1
        if self._bounds is None:
            lows = [c.low for c in self._chunks]
            highs = [c.high for c in self._chunks]
            ordered = all(high < low for high, low in zip(highs, lows[1:]))
            if not ordered:     # e.g. a compaction's late rows behind newer chunks
                lows, highs = np.asarray(lows, np.int64), np.asarray(highs, np.int64)
            self._bounds = (lows, highs, ordered)
        lows, highs, ordered = self._bounds
        if ordered:     # the usual case: chunks as written, in label order, ranges disjoint
            i = bisect.bisect_right(lows, label) - 1
            candidates = [i] if i >= 0 and label <= highs[i] else []
        else:
            candidates = np.flatnonzero((lows <= label) & (highs >= label)).tolist()
        for i in candidates:
            offset = self._chunks[i].offset(label)
            if offset >= 0:
                return self._chunks[i], offset
        return None, -1

    def __contains__(self, label: int) -> bool:
        """Whether the label is a visible pending row."""
        chunk, offset = self._find(label)
        return chunk is not None and bool(chunk.visible[offset])

    def is_hidden(self, label: int) -> bool:
        """Whether the label is a hidden pending row (deleted while pending)."""
        chunk, offset = self._find(label)
        return chunk is not None and not bool(chunk.visible[offset])

    def vector(self, label: int) -> np.ndarray:
        """A visible pending row's vector. KeyError when the label is not one."""
        chunk, offset = self._find(label)
        if chunk is None or not chunk.visible[offset]:
            raise KeyError(label)
        return chunk.vectors[offset]

    def hide(self, label: int) -> bool:
        """Hides a visible pending row; False (and no change) when the label is not one."""
        chunk, offset = self._find(label)
        if chunk is None or not chunk.visible[offset]:
            return False
        chunk.visible[offset] = False
        self._visible -= 1
        return True

    def show(self, label: int) -> bool:
        """Shows a hidden pending row again; False (and no change) when the label is not one."""
        chunk, offset = self._find(label)
        if chunk is None or chunk.visible[offset]:
            return False
        chunk.visible[offset] = True
        self._visible += 1
        return True
