"""ShardReplica.content_digest: two copies holding the same rows have the same digest, whatever
order the rows arrived in; any difference in what a copy holds changes it. Real Deep Lake stores
in a tmp dir (the chaos copies-agree checker compares these digests across copies)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from shard.records import ExistingPolicy, VectorRecord
from shard.replica import ShardReplica
from tributary import limits
from tributary.validation import as_vector

DIM = 4


def rec(vid: str, seed: int, **fields) -> VectorRecord:
    raw = np.random.default_rng(seed).normal(size=DIM).tolist()
    return VectorRecord(id=vid, values=as_vector(raw, DIM, "l2"), **fields)


ROWS = [rec("a", 1, content="alpha", document_id="doc-1", metadata={"w": "1", "k": "x"}),
        rec("b", 2, content="beta"),
        rec("c", 3, metadata={"w": "3"}),
        rec("d", 4, document_id="doc-2")]


@pytest.fixture
def open_replica(tmp_path):
    opened: list[ShardReplica] = []

    def make(name: str) -> ShardReplica:
        replica = ShardReplica(str(tmp_path / name), DIM, "l2")
        opened.append(replica)
        return replica

    yield make
    for replica in opened:
        replica.close()


def test_the_same_rows_written_in_different_orders_have_the_same_digest(open_replica):
    first, second = open_replica("first"), open_replica("second")
    first.write(ROWS, [])
    for row in reversed(ROWS):                     # one commit per row, the other way round
        second.write([row], [])
    assert first.content_digest() == second.content_digest()


def test_the_same_rows_split_across_digest_chunks_have_the_same_digest(open_replica,
                                                                       monkeypatch):
    first, second = open_replica("first"), open_replica("second")
    first.write(ROWS, [])
    second.write(ROWS[2:], [])
    second.write(ROWS[:2], [])
    whole = first.content_digest()
    monkeypatch.setattr(limits, "content_digest_chunk_rows_max", 3)
    assert first.content_digest() == whole == second.content_digest()


def test_a_changed_value_changes_the_digest(open_replica):
    first, second = open_replica("first"), open_replica("second")
    first.write(ROWS, [])
    second.write(ROWS, [])
    changed = rec("c", 3, metadata={"w": "3"})
    changed.values = changed.values.copy()
    changed.values[0] += 1e-3
    second.write([changed], [], ExistingPolicy.OVERWRITE)
    assert first.content_digest() != second.content_digest()


@pytest.mark.parametrize("field, value", [("content", "alpha!"), ("document_id", "doc-9"),
                                          ("metadata", {"w": "1", "k": "y"})])
def test_a_changed_field_changes_the_digest(open_replica, field, value):
    first, second = open_replica("first"), open_replica("second")
    first.write(ROWS, [])
    second.write(ROWS, [])
    changed = rec("a", 1, content="alpha", document_id="doc-1", metadata={"w": "1", "k": "x"})
    setattr(changed, field, value)
    second.write([changed], [], ExistingPolicy.OVERWRITE)
    assert first.content_digest() != second.content_digest()


def test_a_missing_row_or_a_soft_delete_changes_the_digest_and_a_restore_brings_it_back(
        open_replica):
    first, second = open_replica("first"), open_replica("second")
    first.write(ROWS, [])
    second.write(ROWS[:-1], [])
    assert first.content_digest() != second.content_digest()
    second.write(ROWS[-1:], [])
    same = first.content_digest()
    assert second.content_digest() == same
    second.soft_delete(["b"])
    assert second.content_digest() != same
    second.restore(["b"])
    assert second.content_digest() == same


def test_a_deleted_row_is_not_in_the_digest(open_replica):
    first, second = open_replica("first"), open_replica("second")
    first.write(ROWS[:2], [])
    second.write(ROWS[:3], [])
    second.write([], ["c"])
    assert first.content_digest() == second.content_digest()


def test_an_empty_copy_has_the_digest_of_no_rows(open_replica):
    assert open_replica("empty").content_digest() == hashlib.sha256().hexdigest()


def test_the_digest_survives_a_reopen(tmp_path):
    replica = ShardReplica(str(tmp_path / "shard"), DIM, "l2")
    replica.write(ROWS, [])
    replica.soft_delete(["d"])
    before = replica.content_digest()
    replica.close()
    reopened = ShardReplica(str(tmp_path / "shard"), DIM, "l2")
    try:
        assert reopened.content_digest() == before
    finally:
        reopened.close()
