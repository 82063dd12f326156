"""IdMap: a shard replica's rows, addressed by vector id, by row number and by hnswlib label.

A replica's rows sit in the store in row order; each has a user-given id and a stable hnswlib
label (Deep Lake row numbers shift when rows are deleted; labels never change). Labels are given
in increasing order as rows are appended, and a delete keeps the order of the others, so the
labels in row order are ascending: the row of a label is a binary search, and no label -> row or
id -> row dict is needed. What is kept, at 500k rows (a measured 171 MB before, as five Python
structures: an id list, a label list of Python ints and three dicts, `python -m bench.million`):

- the labels, as one int64 numpy array in row order (8 bytes a row, with spare capacity so an
  append copies only its batch);
- the ids, as a list in row order (the id strings themselves are shared with the dict);
- one dict id -> label;
- the hidden (soft-deleted) rows, as a set of ids and a set of their labels: they stay rows
  (listed by `ids`, counted by `len`), but `ids_of_labels` does not name them, so a search never
  returns one.

Costs: lookups by id are a dict lookup plus a binary search, `ids_of_labels` is vectorized,
`append` is O(batch) (amortized) and `remove_rows` O(rows) (as a Deep Lake delete is).

Pure: no store, no graph, no lock (the replica's `_lock` guards it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

# Spare capacity of the label array when it is built or must grow: at least this many labels
# (8 bytes each), and at least a quarter of the rows, so appends copy the array O(log n) times.
_MIN_CAPACITY = 1_024


class IdMap:
    """The rows of one replica: ids and labels in row order, plus the hidden (soft-deleted) set.

    Invariants (checked by tests/unit/test_idmap.py against a dict-based model): labels in row
    order are strictly ascending; ids are unique; every hidden id is a row."""

    def __init__(self, ids: Sequence[str], labels: Sequence[int] | np.ndarray,
                 hidden: Iterable[str] = ()):
        """Rows in row order. Raises ValueError for duplicate ids, labels not strictly
        ascending, a length mismatch, or a hidden id that is not a row."""
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(labels) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(labels)} labels")
        if len(labels) > 1 and not bool(np.all(labels[1:] > labels[:-1])):
            raise ValueError("labels in row order must be strictly ascending")
        self._ids: list[str] = list(ids)
        self._label_of: dict[str, int] = dict(zip(self._ids, labels.tolist()))
        if len(self._label_of) != len(self._ids):
            raise ValueError("duplicate ids")
        self._labels = np.empty(max(len(labels) + len(labels) // 4, _MIN_CAPACITY), np.int64)
        self._labels[:len(labels)] = labels
        self._rows = len(labels)
        self.hidden: set[str] = set()
        self._hidden_labels: set[int] = set()
        for vid in hidden:
            self.hide(vid)

    # ---- reads ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Rows, hidden ones included."""
        return self._rows

    def __contains__(self, vid: object) -> bool:
        """Whether `vid` is a row (hidden or not)."""
        return vid in self._label_of

    @property
    def labels(self) -> np.ndarray:
        """The labels in row order (a view: valid until the next append or remove; do not
        write to it)."""
        return self._labels[:self._rows]

    @property
    def ids(self) -> list[str]:
        """The ids in row order (the map's own list: do not change it)."""
        return self._ids

    @property
    def next_label(self) -> int:
        """One past the highest label ever held by a row still here (0 when empty)."""
        return int(self._labels[self._rows - 1]) + 1 if self._rows else 0

    def label_of(self, vid: str) -> int:
        """The label of row `vid`; KeyError if it is no row."""
        return self._label_of[vid]

    def row_of(self, vid: str) -> int:
        """The row number of `vid`; KeyError if it is no row."""
        return int(np.searchsorted(self._labels[:self._rows], self._label_of[vid]))

    def rows_of(self, ids: Iterable[str]) -> list[int]:
        """The row numbers of `ids`, in their order; KeyError for one that is no row."""
        label_of = self._label_of
        wanted = np.fromiter((label_of[vid] for vid in ids), dtype=np.int64)
        if not len(wanted):
            return []
        return np.searchsorted(self._labels[:self._rows], wanted).tolist()

    def id_at(self, row: int) -> str:
        return self._ids[row]

    def label_at(self, row: int) -> int:
        if not 0 <= row < self._rows:
            raise IndexError(f"row {row} out of range")
        return int(self._labels[row])

    def labels_at(self, rows: Sequence[int] | np.ndarray) -> list[int]:
        """The labels of `rows`, as Python ints."""
        if not len(rows):
            return []
        return self._labels[:self._rows][np.asarray(rows, dtype=np.int64)].tolist()

    def first_row_after(self, label: int) -> int:
        """The first row whose label is greater than `label` (len(self) if none)."""
        return int(np.searchsorted(self._labels[:self._rows], label, side="right"))

    def ids_of_labels(self, labels: np.ndarray | Sequence[int]) -> list[str | None]:
        """For each label, the id of the visible row holding it, or None (no row holds it, or
        it is hidden). One binary search over the whole batch (locate)."""
        rows, visible = self.locate(np.asarray(labels, dtype=np.int64).reshape(-1))
        ids = self._ids
        return [ids[row] if ok else None for row, ok in zip(rows.tolist(), visible.tolist())]

    def locate(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For an array of labels (any shape), the row of each and whether a visible row holds
        it, as two arrays of that shape (a row number is meaningless where the label is not
        visible). A search batch locates all its candidates with one binary search and names
        only the hits it keeps; hidden labels are looked up per candidate, so the cost does not
        grow with the number of soft-deleted rows."""
        wanted = np.asarray(labels, dtype=np.int64)
        if not wanted.size or not self._rows:
            return np.zeros(wanted.shape, np.int64), np.zeros(wanted.shape, bool)
        held = self._labels[:self._rows]
        rows = np.minimum(np.searchsorted(held, wanted), self._rows - 1)
        visible = held[rows] == wanted
        hidden = self._hidden_labels
        if hidden:
            visible &= ~np.fromiter((label in hidden for label in wanted.ravel().tolist()),
                                    bool, wanted.size).reshape(wanted.shape)
        return rows, visible

    def visible_label(self, label: int) -> bool:
        """Whether a visible (not hidden) row holds `label`."""
        return self.ids_of_labels([label])[0] is not None

    # ---- changes -------------------------------------------------------------------------------

    def append(self, ids: Sequence[str], labels: Sequence[int] | np.ndarray) -> None:
        """Appends rows (visible). Their labels must be strictly ascending and above every
        label held, their ids new and distinct: ValueError otherwise, and nothing changes.
        O(batch), amortized (the label array grows by a quarter or more when full)."""
        block = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(block) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(block)} labels")
        if not len(block):
            return
        if (len(block) > 1 and not bool(np.all(block[1:] > block[:-1]))) or (
                self._rows and int(block[0]) <= int(self._labels[self._rows - 1])):
            raise ValueError("appended labels must be ascending and above every label held")
        if len(set(ids)) != len(ids) or any(vid in self._label_of for vid in ids):
            raise ValueError("appended ids must be new and distinct")
        needed = self._rows + len(block)
        if needed > len(self._labels):
            grown = np.empty(max(needed, self._rows + self._rows // 4, _MIN_CAPACITY), np.int64)
            grown[:self._rows] = self._labels[:self._rows]
            self._labels = grown
        self._labels[self._rows:needed] = block
        self._rows = needed
        self._ids.extend(ids)
        self._label_of.update(zip(ids, block.tolist()))

    def remove_rows(self, rows: Iterable[int]) -> list[str]:
        """Removes rows (numbers before the removal; duplicates ignored), hidden or not, and
        returns their ids in ascending row order. Later rows move up. O(rows). IndexError for a
        row out of range, and nothing changes."""
        gone = sorted(set(rows))
        if not gone:
            return []
        if gone[0] < 0 or gone[-1] >= self._rows:
            raise IndexError(f"row out of range 0..{self._rows - 1}")
        gone_ids = [self._ids[row] for row in gone]
        keep = np.ones(self._rows, dtype=bool)
        keep[gone] = False
        kept = self._labels[:self._rows][keep]
        # A new buffer (not in place): a labels view handed out before stays as it was.
        self._labels = np.empty(max(len(kept) + len(kept) // 4, _MIN_CAPACITY), np.int64)
        self._labels[:len(kept)] = kept
        self._rows = len(kept)
        gone_set = set(gone)
        first = gone[0]
        self._ids[first:] = [vid for row, vid in enumerate(self._ids[first:], first)
                             if row not in gone_set]
        for vid in gone_ids:
            label = self._label_of.pop(vid)
            if vid in self.hidden:
                self.hidden.discard(vid)
                self._hidden_labels.discard(label)
        return gone_ids

    def hide(self, vid: str) -> None:
        """Hides row `vid` (soft delete): still a row, no longer named by ids_of_labels.
        KeyError if it is no row; hiding a hidden row is a no-op."""
        label = self._label_of[vid]
        self.hidden.add(vid)
        self._hidden_labels.add(label)

    def unhide(self, vid: str) -> None:
        """Makes a hidden row visible again (restore); a no-op for a visible one. KeyError if
        it is no row."""
        label = self._label_of[vid]
        self.hidden.discard(vid)
        self._hidden_labels.discard(label)
