"""Issue 18, cluster RSS: a replica hands the memory its work freed back to the OS (shard/heap.py,
glibc's malloc_trim) after a drained indexing backlog, a large delete, a compaction and an open,
at most once per limits.memory_trim_interval_ms, and never keeps the pending buffer's grown
table once the backlog is in the graph."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from shard import heap
from shard.records import VectorRecord
from shard.replica import ShardReplica
from tributary import limits

glibc_only = pytest.mark.skipif(not heap.available(), reason="malloc_trim is glibc's")


def _records(count: int, start: int = 0, dim: int = 8) -> list[VectorRecord]:
    rng = np.random.default_rng(start)
    data = rng.standard_normal((count, dim)).astype(np.float32)
    return [VectorRecord(id=f"v{start + i}", values=row) for i, row in enumerate(data)]


@pytest.fixture
def trims(monkeypatch):
    """Every trim a replica asks for, by reason (the real trim still runs)."""
    asked: list[str] = []
    done = threading.Event()
    real = heap.return_freed_memory

    def recording(reason: str, force: bool = False) -> bool:
        asked.append(reason)
        done.set()
        return real(reason, force=True)

    monkeypatch.setattr(heap, "return_freed_memory", recording)
    monkeypatch.setattr(limits, "memory_trim_interval_ms", 0)
    asked_event = done
    return asked, asked_event


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@glibc_only
def test_trim_returns_memory_freed_between_blocks_still_in_use():
    # 1.5 KB blocks (malloc'd, not pymalloc'd), one in 32 kept: the freed ones lie between
    # live blocks, where glibc's free() alone never returns them.
    blocks = [bytes(1_500) for _ in range(120_000)]
    kept = blocks[::32]
    del blocks
    before = _rss_kb()
    assert heap.return_freed_memory("test", force=True)
    after = _rss_kb()
    assert before - after > 50_000, (before, after)
    assert len(kept) == 3_750


def test_trims_are_rate_limited_per_process(monkeypatch):
    monkeypatch.setattr(limits, "memory_trim_interval_ms", 60_000)
    heap.return_freed_memory("first", force=True)
    assert not heap.return_freed_memory("second, too soon")


def test_a_drained_indexing_backlog_returns_memory_and_holds_no_pending_rows(
        tmp_path, monkeypatch, trims):
    asked, _ = trims
    monkeypatch.setattr(limits, "memory_trim_backlog_vectors_min", 2_000)
    replica = ShardReplica(str(tmp_path), 8, "l2")
    try:
        replica.write(_records(5_000), [])
        assert replica.wait_indexed()
        # The indexer trims after it pops the last chunk, outside the lock.
        deadline_ok = threading.Event()
        for _ in range(200):
            if "an indexing backlog drained" in asked:
                deadline_ok.set()
                break
            deadline_ok.wait(0.05)
        assert "an indexing backlog drained" in asked
        assert replica._pending.chunks == [] and len(replica._pending) == 0
        # A small write afterwards stays under the threshold: no trim for it.
        asked.clear()
        replica.write(_records(10, start=5_000), [])
        assert replica.wait_indexed()
        assert "an indexing backlog drained" not in asked
        assert replica.search(_records(1, start=5_000)[0].values, 1).hits[0].record.id == "v5000"
    finally:
        replica.close()


def test_a_large_delete_a_compaction_and_an_open_return_memory(tmp_path, monkeypatch, trims):
    asked, event = trims
    monkeypatch.setattr(limits, "memory_trim_removed_rows_min", 1_000)
    monkeypatch.setattr(limits, "memory_trim_backlog_vectors_min", 10**9)
    replica = ShardReplica(str(tmp_path), 8, "l2")
    try:
        replica.write(_records(3_000), [])
        assert replica.wait_indexed()

        def asked_for(reason: str) -> bool:
            for _ in range(200):
                if reason in asked:
                    return True
                event.clear()
                event.wait(0.05)
            return False

        replica.write([], [f"v{i}" for i in range(1_500)])
        assert asked_for("a large delete")
        replica.soft_delete(["v2000", "v2001"])
        replica.compact()
        assert asked_for("a compaction")
        assert replica.count() == 1_498
    finally:
        replica.close()
    reopened = ShardReplica(str(tmp_path), 8, "l2")
    try:
        assert asked_for("opening a replica")
        assert reopened.count() == 1_498
    finally:
        reopened.close()
