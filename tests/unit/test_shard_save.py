"""Saving the HNSW index does not stall the replica: searches and writes complete while a save
is in progress (the save is made observable by slowing its file write), including while the
background indexer waits to add a chunk; the saved file still loads without a rebuild, and a
failed save keeps the previous file."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

import shard.replica as replica_module
from shard.records import ExistingPolicy, VectorRecord
from shard.replica import ShardReplica
from shard.rwlock import ReadWriteLock

DIM = 8


def records(first: int, count: int) -> list[VectorRecord]:
    rng = np.random.default_rng(first)
    return [VectorRecord(id=f"v{first + i}", values=rng.normal(size=DIM).astype(np.float32))
            for i in range(count)]


def finishes_within(seconds: float, work) -> tuple[bool, object]:
    """Runs `work` on a thread: (finished in time, its result)."""
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("value", work()), daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive(), out.get("value")


def wait_for(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def test_searches_and_writes_complete_while_the_index_is_being_saved(tmp_path, monkeypatch):
    path = str(tmp_path / "shard")
    replica = ShardReplica(path, DIM, "l2")
    replica.write(records(0, 500), [])
    assert replica.wait_indexed(60)
    writing, release = tmp_path / "writing", tmp_path / "release"

    def slow_write(index, target):
        writing.touch()
        deadline = time.monotonic() + 30
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        index.save_index(target)

    monkeypatch.setattr(replica_module, "_write_graph", slow_write)
    saver = threading.Thread(target=replica.save_index)
    saver.start()
    try:
        assert wait_for(writing.exists)
        query = records(0, 1)[0].values
        done, outcome = finishes_within(5, lambda: replica.search(query, 5))
        assert done, "a search waited for the index save"
        assert outcome.hits[0].record.id == "v0"
        # A write is acknowledged during the save; its rows go to the pending buffer, and the
        # indexer then waits for the graph. Searches still complete and see the new rows.
        new = records(500, 300)
        done, result = finishes_within(5, lambda: replica.write(new, []))
        assert done and result.inserted == 300
        assert wait_for(lambda: replica._index_lock._writers_waiting > 0)
        late = new[200].values
        done, outcome = finishes_within(5, lambda: replica.search(late, 1))
        assert done, "a search waited behind the indexer that waits for the save"
        assert outcome.hits[0].record.id == "v700"
        assert saver.is_alive()     # the save was in progress all along
    finally:
        release.touch()
        saver.join(30)
    assert not saver.is_alive()
    replica.close()
    reopened = ShardReplica(path, DIM, "l2")
    try:
        assert reopened.index_repairs["rebuilt"] == 0
        assert reopened.count() == 800
        assert reopened.search(late, 1).hits[0].record.id == "v700"
    finally:
        reopened.close()


def test_searches_do_not_wait_behind_an_overwrite_that_waits_for_the_graph(tmp_path,
                                                                            monkeypatch):
    """An overwrite must mark the old row deleted in the graph, which waits while the index is
    being saved; it waits without holding the replica lock, so searches go on, and they still
    get top_k hits without the replaced row."""
    replica = ShardReplica(str(tmp_path / "shard"), DIM, "l2")
    try:
        originals = records(0, 200)
        replica.write(originals, [])
        assert replica.wait_indexed(60)
        writing, release = tmp_path / "writing", tmp_path / "release"

        def slow_write(index, target):
            writing.touch()
            deadline = time.monotonic() + 30
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.005)
            index.save_index(target)

        monkeypatch.setattr(replica_module, "_write_graph", slow_write)
        saver = threading.Thread(target=replica.save_index)
        saver.start()
        assert wait_for(writing.exists)
        moved = VectorRecord(id="v7", values=np.full(DIM, 50.0, np.float32))
        writer = threading.Thread(
            target=lambda: replica.write([moved], [], ExistingPolicy.OVERWRITE))
        writer.start()
        try:
            assert wait_for(lambda: replica._index_lock._writers_waiting > 0)
            done, outcome = finishes_within(5, lambda: replica.search(originals[7].values, 5))
            assert done, "a search waited behind the overwrite"
            found = [h.record.id for h in outcome.hits]
            assert len(found) == 5 and "v7" not in found
            done, outcome = finishes_within(5, lambda: replica.search(moved.values, 1))
            assert done and outcome.hits[0].record.id == "v7"
        finally:
            release.touch()
            saver.join(30)
            writer.join(30)
        assert not writer.is_alive() and not saver.is_alive()
        found = [h.record.id for h in replica.search(originals[7].values, 5).hits]
        assert len(found) == 5 and "v7" not in found
    finally:
        replica.close()


def test_a_failed_graph_write_raises_and_keeps_the_previous_index(tmp_path, monkeypatch):
    path = str(tmp_path / "shard")
    replica = ShardReplica(path, DIM, "l2")
    try:
        replica.write(records(0, 100), [])
        assert replica.wait_indexed(60)
        replica.save_index()
        with open(os.path.join(path, "hnsw.bin"), "rb") as f:
            saved = f.read()

        def broken_write(index, target):
            raise OSError("disk full")

        monkeypatch.setattr(replica_module, "_write_graph", broken_write)
        replica.write(records(100, 50), [])
        assert replica.wait_indexed(60)
        with pytest.raises(OSError):
            replica.save_index()
        with open(os.path.join(path, "hnsw.bin"), "rb") as f:
            assert f.read() == saved
    finally:
        monkeypatch.undo()
        replica.close()


def test_readers_pass_a_waiting_writer_while_a_background_reader_holds_the_lock():
    lock = ReadWriteLock()
    with lock.read_background():
        writer_in = threading.Event()

        def writer():
            with lock.write():
                writer_in.set()

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        assert wait_for(lambda: lock._writers_waiting > 0)
        assert lock.try_read(), "a reader was held back during a background read"
        lock.release_read()
        assert not writer_in.is_set()
    assert writer_in.wait(5)
    thread.join(5)
    # Without a background reader, a waiting writer holds new readers back (fairness).
    with lock.read():
        thread = threading.Thread(target=lambda: lock.write().__enter__(), daemon=True)
        thread.start()
        assert wait_for(lambda: lock._writers_waiting > 0)
        assert not lock.try_read()
