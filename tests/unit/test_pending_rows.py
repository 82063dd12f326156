"""shard/pending.py PendingRows against a dumb oracle: the dict label -> vector and the set of
hidden labels the replica kept before, plus a FIFO list of chunks (Hypothesis drives both through
the same appends, hides, shows and pops, and every look-up must agree)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from shard.pending import PendingRows

_DIM = 3


class PendingRowsMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.rows = PendingRows(chunk_rows=4)
        self.chunks: list[list[int]] = []           # the model's FIFO, labels only
        self.visible: dict[int, np.ndarray] = {}
        self.hidden: set[int] = set()
        self.next_label = 0
        self.low_label = 0
        self.seen: list[int] = []                   # every label ever appended

    @rule(n=st.integers(1, 10), shuffled=st.booleans(), gap=st.integers(0, 3),
          below=st.booleans(), seed=st.integers(0, 2**16))
    def append(self, n, shuffled, gap, below, seed):
        rng = np.random.default_rng(seed)
        if below:       # labels older than every chunk's (as a compaction's late rows may be)
            self.low_label -= gap + n
            labels = np.arange(self.low_label, self.low_label + n, dtype=np.int64)
        else:
            labels = np.arange(self.next_label + gap, self.next_label + gap + n, dtype=np.int64)
            self.next_label += gap + n
        if shuffled:        # a chunk need not be in label order
            labels = rng.permutation(labels)
        vectors = rng.random((n, _DIM), dtype=np.float32)
        self.rows.append(labels, vectors)
        for start in range(0, n, 4):
            self.chunks.append(labels[start:start + 4].tolist())
        self.visible.update(zip(labels.tolist(), vectors))
        self.seen.extend(labels.tolist())

    @precondition(lambda self: self.seen)
    @rule(data=st.data())
    def hide(self, data):
        label = data.draw(st.sampled_from(self.seen))
        expected = label in self.visible
        assert self.rows.hide(label) == expected
        if expected:
            del self.visible[label]
            self.hidden.add(label)

    @precondition(lambda self: self.seen)
    @rule(data=st.data())
    def show(self, data):
        label = data.draw(st.sampled_from(self.seen))
        expected = label in self.hidden
        assert self.rows.show(label) == expected
        if expected:
            self.hidden.discard(label)
            self.visible[label] = self.vector_of(label)

    def vector_of(self, label: int) -> np.ndarray:
        for labels, vectors in self.rows.chunks:
            where = np.flatnonzero(labels == label)
            if len(where):
                return vectors[where[0]]
        raise AssertionError(f"label {label} in no chunk")

    @precondition(lambda self: self.chunks)
    @rule()
    def pop_first(self):
        labels = self.chunks.pop(0)
        dead = self.rows.pop_first()
        assert sorted(dead) == sorted(lb for lb in labels if lb in self.hidden)
        for lb in labels:
            self.visible.pop(lb, None)
            self.hidden.discard(lb)

    @invariant()
    def agrees(self):
        assert len(self.rows) == len(self.visible)
        assert [labels.tolist() for labels, _ in self.rows.chunks] == self.chunks
        first = self.rows.first()
        assert (first is None) == (not self.chunks)
        if first is not None:
            assert first[0].tolist() == self.chunks[0]
        assert sorted(self.rows.visible_labels().tolist()) == sorted(self.visible)
        for label in self.seen + [self.next_label + 5, self.low_label - 5]:
            assert (label in self.rows) == (label in self.visible)
            assert self.rows.is_hidden(label) == (label in self.hidden)
            if label in self.visible:
                np.testing.assert_array_equal(self.rows.vector(label), self.visible[label])
            else:
                with pytest.raises(KeyError):
                    self.rows.vector(label)


TestPendingRows = PendingRowsMachine.TestCase
TestPendingRows.settings = settings(max_examples=50, stateful_step_count=30, deadline=None)


def test_rows_append_in_chunks_of_at_most_chunk_rows():
    rows = PendingRows(chunk_rows=250)
    rows.append(np.arange(600), np.zeros((600, 2), np.float32))
    assert [len(labels) for labels, _ in rows.chunks] == [250, 250, 100]
    assert len(rows) == 600


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        PendingRows(chunk_rows=0)
    with pytest.raises(ValueError):
        PendingRows(chunk_rows=4).append(np.arange(3), np.zeros((2, 2), np.float32))


def test_a_pending_row_costs_no_object_of_its_own():
    """The point of the class: 100k pending rows cost the chunks' few objects, not an int key
    and a numpy view apiece (the dict label -> view kept before: ~15 MB here)."""
    import tracemalloc
    labels = np.arange(100_000, dtype=np.int64)
    vectors = np.zeros((100_000, 4), np.float32)
    rows = PendingRows(chunk_rows=250)
    tracemalloc.start()
    try:
        rows.append(labels, vectors)
        assert 99_990 in rows and rows.hide(99_990) and rows.is_hidden(99_990)
        grown, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert grown < 1_000_000, grown
