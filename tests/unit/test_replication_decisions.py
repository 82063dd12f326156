"""The pure decisions of node/replication.py: what a copy does with a replicated op, what a
primary answers a copy that catches up, and which snapshot paths a copy accepts."""

from __future__ import annotations

import os

import pytest

from node.replication import (APPLY, CAUGHT_UP, DIVERGED, DUPLICATE, GAP, OPS, STALE_TERM,
                              START_OVER, fetch_decision, replicate_decision, safe_join)
from tributary import errors


@pytest.mark.parametrize("last, known, req_term, seq, term, held, expected", [
    (5, 2, 2, 6, 2, None, APPLY),          # the next op
    (5, 2, 3, 6, 3, None, APPLY),          # a newer term is fine
    (5, 2, 2, 8, 2, None, GAP),            # ops missing in between
    (5, 2, 2, 4, 2, 2, DUPLICATE),         # already held, same op
    (5, 2, 3, 4, 3, 2, DIVERGED),          # held, but from another primary's history
    (5, 3, 2, 6, 2, None, STALE_TERM),     # a deposed primary
])
def test_a_copy_applies_only_the_next_op_of_a_current_term(last, known, req_term, seq, term,
                                                           held, expected):
    assert replicate_decision(last, known, req_term, seq, term, held) == expected


@pytest.mark.parametrize("copy_last, copy_term, primary_last, first, term_there, expected", [
    (10, 2, 10, 1, 2, CAUGHT_UP),
    (7, 2, 10, 1, 2, OPS),
    (0, 0, 10, 1, 0, OPS),                 # a new copy, the whole log still held
    (7, 1, 10, 1, 2, START_OVER),          # diverged: another op at seq 7
    (12, 2, 10, 1, None, START_OVER),      # ahead of the primary (a deposed primary's writes)
    (3, 2, 50, 20, None, START_OVER),      # the ops it needs are trimmed
    (0, 0, 500, 1, 0, START_OVER),         # too far behind: copying files is faster
])
def test_a_primary_sends_ops_only_to_a_copy_whose_log_is_a_prefix_of_its_own(
        copy_last, copy_term, primary_last, first, term_there, expected):
    assert fetch_decision(copy_last, copy_term, primary_last, first, term_there,
                          snapshot_behind_ops=100) == expected


@pytest.mark.parametrize("path", ["../evil", "a/../../b", "/etc/passwd", "", "a//b", "./a",
                                  "a/./b", "a\\..\\b", "nul\x00l"])
def test_a_snapshot_path_that_could_leave_the_shard_directory_is_refused(tmp_path, path):
    with pytest.raises(errors.InvalidArgument):
        safe_join(str(tmp_path), path)


def test_a_snapshot_path_through_a_symlink_out_of_the_directory_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(errors.InvalidArgument, match="leaves"):
        safe_join(str(root), "link/file")
    assert safe_join(str(root), "store/chunks/0") == str(root / "store" / "chunks" / "0")
