"""A shard store whose Deep Lake commit log has a hole: a base claimed by a commit that was
killed before it wrote its entry (shard/versions.py, "holes in the commit log").

Found by the chaos `backup` scenario (seeds 118, 121, 123): after kill -9 of a node mid-commit,
and on every copy that later installed a file snapshot of that store, each commit that deleted
rows waited 2 s in Deep Lake's finalizer ("predecessor commits did not materialize within
2000 ms"), so a copy applying its primary's overwrites at one commit per 2 s never caught up.

The hole is made exactly as the killed commit left it: Deep Lake claims a base by advancing the
branch's `next_base` counter, then writes the entry; here the counter is advanced and the entry
never written. Everything else is real: ShardReplica, Deep Lake, the snapshot's file copy."""

from __future__ import annotations

import logging
import os
import time

import deeplake
import numpy as np

from node.replication import _copy_cut
from shard import versions
from shard.records import VectorRecord
from shard.replica import ShardReplica

DIMS = 4


def rows(prefix: str, count: int, seed: int) -> list[VectorRecord]:
    rng = np.random.default_rng(seed)
    return [VectorRecord(id=f"{prefix}{i}", values=rng.random(DIMS, dtype=np.float32))
            for i in range(count)]


def claim_a_base_never_written(shard_path: str) -> None:
    """What kill -9 between Deep Lake's claim and its write leaves behind."""
    log_root = os.path.join(shard_path, "store", "_deeplake_log")
    (branch,) = [b for b in os.listdir(log_root) if b != "_meta"]
    counter = os.path.join(log_root, branch, "next_base")
    with open(counter, "rb") as handle:
        claimed = int.from_bytes(handle.read(8), "little")
    with open(counter, "wb") as handle:
        handle.write((claimed + 1).to_bytes(8, "little"))


def shard_with_tags_and_a_hole(path: str) -> None:
    replica = ShardReplica(path, DIMS, "l2")
    for batch in range(4):
        replica.write(rows(f"b{batch}-", 5, batch), [])
        replica.mark_version(f"cut-{batch}")
    replica.close()
    claim_a_base_never_written(path)


def timed_deletes(replica: ShardReplica, ids: list[str]) -> list[float]:
    took = []
    for vector_id in ids:
        started = time.perf_counter()
        replica.write([], [vector_id])
        took.append(time.perf_counter() - started)
    return took


def finalizer_waits(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if "did not materialize" in r.getMessage()]


def test_a_replica_reopened_after_a_commit_killed_mid_claim_deletes_without_waiting(
        tmp_path, caplog):
    path = str(tmp_path / "shard")
    shard_with_tags_and_a_hole(path)
    assert versions.log_holes(os.path.join(path, "store"))

    caplog.set_level(logging.WARNING)
    replica = ShardReplica(path, DIMS, "l2")
    try:
        took = timed_deletes(replica, ["b0-0", "b1-0", "b2-0"])
        assert replica.count() == 17
    finally:
        replica.close()
    assert finalizer_waits(caplog) == []
    assert max(took) < 1.0, took           # each waited ~2 s before
    assert versions.log_holes(os.path.join(path, "store")) == []


def test_a_copy_made_from_files_of_a_store_with_a_hole_deletes_without_waiting_keeps_tags(
        tmp_path, caplog):
    primary = str(tmp_path / "primary")
    shard_with_tags_and_a_hole(primary)
    copy = str(tmp_path / "copy")
    _copy_cut(primary, copy)                 # the file snapshot a new or lagging copy installs

    caplog.set_level(logging.WARNING)
    replica = ShardReplica(copy, DIMS, "l2")
    try:
        took = timed_deletes(replica, ["b3-1", "b3-2"])
    finally:
        replica.close()
    assert finalizer_waits(caplog) == []
    assert max(took) < 1.0, took
    # The versions the cuts tagged are still served from the copy (as_of_version).
    for batch in range(4):
        view = versions.VersionView("file://" + os.path.join(copy, "store"), f"cut-{batch}",
                                    DIMS, "l2")
        assert view.count() == 5 * (batch + 1)


def test_a_store_without_a_hole_is_left_as_it_is(tmp_path):
    path = str(tmp_path / "shard")
    replica = ShardReplica(path, DIMS, "l2")
    replica.write(rows("a", 3, 0), [])
    replica.close()
    store = os.path.join(path, "store")
    log_root = os.path.join(store, "_deeplake_log")
    before = sorted(os.listdir(os.path.join(log_root, next(
        b for b in os.listdir(log_root) if b != "_meta"))))

    assert versions.log_holes(store) == []
    ds = deeplake.open("file://" + store)
    assert versions.heal_log_holes(ds, store) == []
    after = sorted(os.listdir(os.path.join(log_root, next(
        b for b in os.listdir(log_root) if b != "_meta"))))
    assert after == before                   # no compaction, no new entry
