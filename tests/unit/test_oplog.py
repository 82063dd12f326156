"""Specification of a shard copy's operation log (node/oplog.py)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.oplog import LoggedOp, OpLog


def ops(first: int, count: int, term: int = 1) -> list[LoggedOp]:
    return [LoggedOp(s, term, f"op-{s}".encode() * (s % 3 + 1)) for s in range(first,
                                                                              first + count)]


def test_appended_ops_read_back_from_any_sequence_number_after_a_reopen(tmp_path):
    log = OpLog(str(tmp_path), segment_ops_max=4, ops_max=1_000)
    log.append(ops(1, 5))
    log.append(ops(6, 5, term=2))
    again = OpLog(str(tmp_path), segment_ops_max=4, ops_max=1_000)
    assert (again.last_seq, again.last_term) == (10, 2)
    assert [o.seq for o in again.read_from(3, 100, 1 << 20)] == list(range(3, 11))
    assert again.read_from(6, 2, 1 << 20) == ops(6, 2, term=2)
    assert again.read_from(11, 10, 1 << 20) == []
    assert again.term_at(5) == 1 and again.term_at(10) == 2 and again.term_at(0) == 0


def test_a_gap_or_a_term_going_back_is_refused(tmp_path):
    log = OpLog(str(tmp_path), 4, 1_000)
    log.append(ops(1, 2, term=3))
    with pytest.raises(ValueError, match="expects seq 3"):
        log.append(ops(4, 1, term=3))
    with pytest.raises(ValueError, match="term >= 3"):
        log.append(ops(3, 1, term=2))
    assert log.last_seq == 2


def test_a_torn_tail_is_cut_at_the_last_whole_record(tmp_path):
    log = OpLog(str(tmp_path), 100, 1_000)
    log.append(ops(1, 3))
    segment = os.path.join(tmp_path, sorted(n for n in os.listdir(tmp_path)
                                            if n.endswith(".seg"))[-1])
    with open(segment, "ab") as handle:
        handle.write(b"\x00\x00\x00\x00\x00\x00\x00\x04garbage")
    size = os.path.getsize(segment)
    with open(segment, "r+b") as handle:    # and corrupt the last whole record's crc
        handle.truncate(size)
    again = OpLog(str(tmp_path), 100, 1_000)
    assert again.last_seq == 3
    again.append(ops(4, 1))
    assert [o.seq for o in OpLog(str(tmp_path), 100, 1_000).read_from(1, 10, 1 << 20)] == \
        [1, 2, 3, 4]


def test_old_segments_are_trimmed_and_a_trimmed_start_answers_none(tmp_path):
    log = OpLog(str(tmp_path), segment_ops_max=10, ops_max=20)
    for first in range(1, 101, 10):
        log.append(ops(first, 10))
    assert log.first_seq > 1 and log.read_from(1, 10, 1 << 20) is None
    assert log.read_from(log.first_seq, 1, 1 << 20)[0].seq == log.first_seq
    assert 20 <= log.last_seq - log.first_seq + 1 <= 30


def test_a_reset_log_continues_after_the_copied_position_across_a_reopen(tmp_path):
    log = OpLog(str(tmp_path), 4, 1_000)
    log.append(ops(1, 6))
    log.reset(40, 3)
    assert (log.last_seq, log.first_seq) == (40, 41) and log.read_from(5, 1, 100) is None
    again = OpLog(str(tmp_path), 4, 1_000)
    assert (again.last_seq, again.last_term, again.term_at(40)) == (40, 3, 3)
    again.append(ops(41, 2, term=3))
    assert [o.seq for o in OpLog(str(tmp_path), 4, 1_000).read_from(41, 9, 1 << 20)] == [41, 42]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 7), min_size=1, max_size=12), st.integers(1, 5))
def test_any_batching_reads_back_the_same_ops(tmp_path_factory, batches, segment_ops):
    directory = str(tmp_path_factory.mktemp("log"))
    log = OpLog(directory, segment_ops, 10_000)
    written, seq = [], 1
    for size in batches:
        batch = ops(seq, size)
        log.append(batch)
        written += batch
        seq += size
    assert OpLog(directory, segment_ops, 10_000).read_from(1, 10_000, 1 << 30) == written
