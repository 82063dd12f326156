"""Promise 7: HNSW is a cache over Deep Lake, saved with a watermark and repaired on open; and
filtered search keeps its recall whichever strategy the selectivity estimate picks."""

from __future__ import annotations

import numpy as np
import pytest

from shard import filter_eval, filter_parse
from shard.records import VectorRecord
from shard.replica import ShardReplica
from tributary import limits


def records(data: np.ndarray, start: int = 0, category=None) -> list[VectorRecord]:
    return [VectorRecord(id=f"v{start + i}", values=row,
                         metadata={"category": category(start + i) if category else "x"})
            for i, row in enumerate(data)]


def top1(replica: ShardReplica, q: np.ndarray) -> str:
    return replica.search(q, 1, ef_search=200).hits[0].record.id


def test_reopen_after_a_save_adds_only_rows_past_the_watermark(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((3_000, 16)).astype(np.float32)
    replica = ShardReplica(str(tmp_path), 16, "l2")
    replica.write(records(data[:2_000]), [])
    assert replica.wait_indexed()
    replica.save_index()
    replica.write(records(data[2_000:], start=2_000), ["v5", "v6"])
    # No close(): the process "dies" with the saved index 1,000 rows and 2 deletes behind.
    reopened = ShardReplica(str(tmp_path), 16, "l2")
    assert reopened.index_repairs["rebuilt"] == 0
    assert reopened.index_repairs["added"] == 1_000
    assert reopened.index_repairs["marked_deleted"] == 2
    assert reopened.count() == 2_998
    assert reopened.wait_indexed()
    for i in (0, 1_999, 2_000, 2_999):
        assert top1(reopened, data[i]) == f"v{i}"
    assert top1(reopened, data[5]) != "v5"


def test_an_acknowledged_write_is_searchable_before_it_is_indexed(tmp_path):
    rng = np.random.default_rng(9)
    data = rng.standard_normal((2_000, 16)).astype(np.float32)
    replica = ShardReplica(str(tmp_path), 16, "cosine")
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    replica.write(records(unit), [])
    # Whatever the indexer has done so far, every row is found by its own vector...
    for i in range(0, 2_000, 97):
        assert top1(replica, unit[i]) == f"v{i}"
    # ... and deletes of rows still pending hide them at once and stay hidden once indexed.
    replica.write([], [f"v{i}" for i in range(1_990, 2_000)])
    assert replica.wait_indexed()
    assert replica.pending_count() == 0
    for i in range(1_990, 2_000):
        assert top1(replica, unit[i]) != f"v{i}"
    assert top1(replica, unit[5]) == "v5"


def test_a_corrupt_saved_index_is_rebuilt_from_the_store(tmp_path):
    data = np.random.default_rng(1).standard_normal((500, 8)).astype(np.float32)
    replica = ShardReplica(str(tmp_path), 8, "ip")
    replica.write(records(data), [])
    replica.close()
    (tmp_path / "hnsw.bin").write_bytes(b"not an index")
    reopened = ShardReplica(str(tmp_path), 8, "ip")
    assert reopened.index_repairs["rebuilt"] == 500
    assert reopened.count() == 500


def test_clean_close_then_open_needs_no_repair(tmp_path):
    data = np.random.default_rng(2).standard_normal((400, 8)).astype(np.float32)
    replica = ShardReplica(str(tmp_path), 8, "l2")
    replica.write(records(data), [])
    replica.write([], ["v1"])
    assert replica.wait_indexed()  # close() only gives the indexer a bounded time
    replica.close()
    reopened = ShardReplica(str(tmp_path), 8, "l2")
    assert reopened.index_repairs == {"rebuilt": 0, "added": 0, "repaired_below_watermark": 0,
                                      "marked_deleted": 0}
    assert top1(reopened, data[3]) == "v3"


def test_close_does_not_wait_for_a_long_backlog_and_open_adds_it(tmp_path, monkeypatch):
    """close() saves after a bounded drain (here none at all), so a node stops within its
    supervisor's grace period; the rows left out of the graph are added on the next open."""
    monkeypatch.setattr(limits, "shard_close_drain_ms", 0)
    data = np.random.default_rng(3).standard_normal((6_000, 32)).astype(np.float32)
    replica = ShardReplica(str(tmp_path), 32, "l2")
    replica.write(records(data), [])   # 24 chunks for the indexer; close() at once
    replica.close()
    reopened = ShardReplica(str(tmp_path), 32, "l2")
    assert reopened.index_repairs["rebuilt"] == 0
    assert reopened.index_repairs["added"] > 0   # the backlog close() left behind
    assert reopened.count() == 6_000
    for i in (0, 2_999, 5_999):
        assert top1(reopened, data[i]) == f"v{i}"   # found before and after indexing
    assert reopened.wait_indexed()
    for i in (1, 3_000, 5_998):
        assert top1(reopened, data[i]) == f"v{i}"


def test_maybe_save_saves_once_enough_vectors_arrived(tmp_path):
    data = np.random.default_rng(3).standard_normal((300, 8)).astype(np.float32)
    replica = ShardReplica(str(tmp_path), 8, "l2")
    replica.write(records(data[:100]), [])
    assert not replica.maybe_save(every_s=3600, every_vectors=200)
    replica.write(records(data[100:], start=100), [])
    assert replica.maybe_save(every_s=3600, every_vectors=200)
    assert not replica.maybe_save(every_s=3600, every_vectors=200)


@pytest.mark.parametrize("fraction,strategy", [(0.01, "exact"), (0.5, "hnsw_overfetch")])
def test_filtered_search_recall_holds_for_selective_and_broad_filters(tmp_path, monkeypatch,
                                                                      fraction, strategy):
    # Lower the exact-scan threshold so 4,000 rows exercise both strategies.
    monkeypatch.setattr(limits, "filter_exact_rows_max", 200)
    rng = np.random.default_rng(4)
    n = 4_000
    data = rng.standard_normal((n, 16)).astype(np.float32)
    chosen = set(rng.choice(n, int(n * fraction), replace=False).tolist())
    replica = ShardReplica(str(tmp_path), 16, "l2")
    replica.write(records(data, category=lambda i: "in" if i in chosen else "out"), [])
    where = filter_eval.compile_filter(filter_parse.parse_filter("category = 'in'"))
    found_total = 0
    for q in rng.standard_normal((20, 16)).astype(np.float32):
        outcome = replica.search(q, 10, ef_search=128, where=where, include_metadata=True)
        assert outcome.strategy == strategy
        assert all(h.record.metadata["category"] == "in" for h in outcome.hits)
        distances = np.linalg.norm(data - q, axis=1)
        truth = [f"v{i}" for i in np.argsort(distances) if i in chosen][:10]
        found_total += len({h.record.id for h in outcome.hits} & set(truth))
    assert found_total / (20 * 10) >= 0.95


def test_filter_columns_follow_writes_after_the_first_filtered_search(tmp_path):
    data = np.random.default_rng(5).standard_normal((50, 4)).astype(np.float32)
    replica = ShardReplica(str(tmp_path), 4, "l2")
    replica.write(records(data[:40], category=lambda i: "a"), [])
    where = filter_eval.compile_filter(filter_parse.parse_filter("category = 'b'"))
    assert replica.search(data[0], 5, where=where).hits == []
    replica.write(records(data[40:], start=40, category=lambda i: "b"), ["v0"])
    hits = replica.search(data[45], 5, where=where).hits
    assert hits[0].record.id == "v45" and len(hits) == 5


def test_soft_delete_hides_and_restore_brings_back_across_reopen(tmp_path):
    data = np.random.default_rng(11).standard_normal((300, 8)).astype(np.float32)
    replica = ShardReplica(str(tmp_path), 8, "l2")
    replica.write(records(data), [])
    assert replica.soft_delete(["v1", "v2", "nope"]) == (2, 1)
    assert replica.soft_delete(["v1"]) == (0, 0)
    assert replica.count() == 298 and replica.soft_deleted_count() == 2
    assert replica.get(["v1"]) == []
    assert top1(replica, data[1]) != "v1"
    replica.close()
    reopened = ShardReplica(str(tmp_path), 8, "l2")
    assert reopened.count() == 298 and reopened.get(["v2"]) == []
    assert top1(reopened, data[2]) != "v2"
    # v3 is live: neither restored nor missing. "nope" was never written: not found.
    assert reopened.restore(["v2", "v3", "nope"]) == (1, 1)
    assert top1(reopened, data[2]) == "v2"
    assert [r.id for r in reopened.get(["v2"])] == ["v2"]


def test_soft_deleted_pending_rows_stay_hidden_once_indexed_and_restore_works(tmp_path):
    data = np.random.default_rng(12).standard_normal((3_000, 8)).astype(np.float32)
    replica = ShardReplica(str(tmp_path), 8, "l2")
    replica.write(records(data), [])
    replica.soft_delete(["v2999", "v0"])         # likely still pending, or already indexed
    assert replica.wait_indexed()
    assert top1(replica, data[2999]) != "v2999" and top1(replica, data[0]) != "v0"
    replica.restore(["v2999"])
    assert top1(replica, data[2999]) == "v2999"


def test_compaction_purges_soft_deleted_rows_and_rebuilds_the_graph(tmp_path):
    data = np.random.default_rng(13).standard_normal((1_000, 8)).astype(np.float32)
    replica = ShardReplica(str(tmp_path), 8, "l2")
    replica.write(records(data), [])
    replica.write([], [f"v{i}" for i in range(100)])
    replica.soft_delete([f"v{i}" for i in range(100, 150)])
    report = replica.compact()
    assert report["purged"] == 50
    assert replica.count() == 850 and replica.soft_deleted_count() == 0
    assert replica.existing_ids(["v120"]) == []
    assert replica.restore(["v120"]) == (0, 1)
    replica.write(records(data[:10]), [])          # ids v0..v9 were hard-deleted: reusable
    assert replica.wait_indexed()
    for i in (0, 5, 150, 999):
        assert top1(replica, data[i]) == f"v{i}"
    replica.close()
    assert ShardReplica(str(tmp_path), 8, "l2").count() == 860


def test_searches_run_alongside_writes_deletes_and_compaction_without_errors(tmp_path):
    import threading
    rng = np.random.default_rng(21)
    data = rng.standard_normal((4_000, 8)).astype(np.float32)
    replica = ShardReplica(str(tmp_path), 8, "l2")
    replica.write(records(data[:1_000]), [])
    failures: list[BaseException] = []
    stop = threading.Event()

    def searcher(seed: int) -> None:
        local = np.random.default_rng(seed)
        while not stop.is_set():
            try:
                hits = replica.search(local.standard_normal(8).astype(np.float32), 5).hits
                assert len({h.record.id for h in hits}) == len(hits)
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
                failures.append(exc)
                return

    threads = [threading.Thread(target=searcher, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for b in range(1, 4):
        replica.write(records(data[b * 1_000:(b + 1) * 1_000], start=b * 1_000), [])
        replica.write([], [f"v{i}" for i in range(b * 100, b * 100 + 50)])
        replica.soft_delete([f"v{b * 1_000 + 1}"])
    replica.compact()
    stop.set()
    for t in threads:
        t.join()
    assert not failures, failures[0]
    assert replica.wait_indexed()
    assert top1(replica, data[3_999]) == "v3999"
