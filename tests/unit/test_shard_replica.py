"""Specification of ShardReplica (shard/replica.py) over a real Deep Lake store in a tmp dir."""

from __future__ import annotations

import os

import numpy as np
import pytest

from shard.records import ExistingPolicy, VectorRecord
from shard.replica import ShardReplica
from tributary.errors import AlreadyExists, Internal, InvalidArgument
from tributary.validation import as_vector

DIM = 8


def vec(seed: int, dim: int = DIM, metric: str = "l2") -> np.ndarray:
    raw = np.random.default_rng(seed).normal(size=dim)
    return as_vector(raw.tolist(), dim, metric)


def record(vid: str, seed: int, metric: str = "l2", **fields) -> VectorRecord:
    return VectorRecord(id=vid, values=vec(seed, metric=metric), **fields)


def ids_of(records) -> list[str]:
    return [r.id for r in records]


@pytest.fixture
def replica(tmp_path):
    shard = ShardReplica(str(tmp_path / "shard"), DIM, "l2")
    yield shard
    shard.close()


# ---- empty shard ---------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_search_of_an_empty_shard_returns_no_hits(tmp_path, metric):
    shard = ShardReplica(str(tmp_path / "s"), DIM, metric)
    outcome = shard.search(vec(1, metric=metric), 10)
    assert outcome.hits == []
    assert outcome.vectors_scanned == 0
    assert shard.count() == 0
    assert shard.get(["anything"]) == []


# ---- write / get / search / delete ---------------------------------------------------------


def test_written_vectors_read_back_with_their_values_and_fields(replica):
    rec = record("doc-1#0", 1, document_id="doc-1", chunk_id="c0", content="hello world",
                 content_hash="h1", metadata={"lang": "en", "n": "3"}, content_type="text/plain",
                 language="en", chunk_index=2, chunk_count=5, model="m-1")
    result = replica.write([rec, record("doc-2#0", 2, content="x")], [])
    assert (result.inserted, result.skipped, result.deleted, result.not_found) == (2, 0, 0, 0)
    assert replica.count() == 2

    [got] = replica.get(["doc-1#0"])
    assert got.id == "doc-1#0"
    assert got.values.dtype == np.float32
    assert np.array_equal(got.values, rec.values)
    assert (got.document_id, got.chunk_id, got.content, got.content_hash) == \
        ("doc-1", "c0", "hello world", "h1")
    assert got.metadata == {"lang": "en", "n": "3"}
    assert (got.content_type, got.language, got.model) == ("text/plain", "en", "m-1")
    assert (got.chunk_index, got.chunk_count) == (2, 5)
    assert got.created_at_ms > 0
    assert got.updated_at_ms == got.created_at_ms


def test_get_returns_known_ids_in_request_order_and_skips_unknown_ones(replica):
    replica.write([record(f"v{i}", i) for i in range(5)], [])
    assert ids_of(replica.get(["v3", "missing", "v0", "v4"])) == ["v3", "v0", "v4"]
    assert replica.get([]) == []


def test_get_without_values_leaves_values_out(replica):
    replica.write([record("a", 1)], [])
    [got] = replica.get(["a"], include_values=False)
    assert got.values is None


def test_searching_a_stored_vector_finds_it_first_with_a_perfect_score(replica):
    records = [record(f"v{i}", i) for i in range(50)]
    replica.write(records, [])
    outcome = replica.search(records[17].values, 5)
    assert outcome.hits[0].record.id == "v17"
    assert outcome.hits[0].distance == pytest.approx(0.0, abs=1e-3)
    assert outcome.hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert len(outcome.hits) == 5
    assert outcome.vectors_scanned == 50
    scores = [h.score for h in outcome.hits]
    assert scores == sorted(scores, reverse=True)


def test_search_include_flags_control_what_hits_carry(replica):
    replica.write([record("a", 1, content="body", metadata={"k": "v"})], [])
    bare = replica.search(vec(1), 1).hits[0].record
    assert bare.values is None and bare.content == "" and bare.metadata == {}
    full = replica.search(vec(1), 1, include_content=True, include_metadata=True,
                          include_values=True).hits[0].record
    assert full.content == "body" and full.metadata == {"k": "v"}
    assert np.array_equal(full.values, vec(1))


def test_search_now_answers_as_search_does_when_nothing_is_held(replica):
    replica.write([record(f"v{i}", i) for i in range(40)], [])
    replica.wait_indexed()  # else the background indexer may hold the graph: search_now -> None
    for seed in range(5):
        now, later = replica.search_now(vec(100 + seed), 5), replica.search(vec(100 + seed), 5)
        assert [(h.record.id, h.score) for h in now.hits] == \
            [(h.record.id, h.score) for h in later.hits]


def test_search_now_declines_instead_of_waiting_for_a_lock(replica):
    """A None sends the search to a worker thread; search_now itself never blocks."""
    import threading
    replica.write([record(f"v{i}", i) for i in range(10)], [])
    replica.wait_indexed()
    for hold in (replica._lock, None):
        held, release = threading.Event(), threading.Event()

        def holder():
            with (hold if hold is not None else replica._index_lock.write()):
                held.set()
                release.wait(5)
        thread = threading.Thread(target=holder)
        thread.start()
        held.wait(5)
        try:
            assert replica.search_now(vec(1), 3) is None
        finally:
            release.set()
            thread.join()
        assert replica.search_now(vec(1), 3).hits[0].record.id == "v1"
def test_search_with_top_k_above_the_count_returns_every_vector_once(replica):
    replica.write([record(f"v{i}", i) for i in range(7)], [])
    hits = replica.search(vec(3), 100).hits
    assert sorted(h.record.id for h in hits) == [f"v{i}" for i in range(7)]


def test_deleting_removes_the_vector_from_get_count_and_search(replica):
    records = [record(f"v{i}", i) for i in range(10)]
    replica.write(records, [])
    result = replica.write([], ["v4", "v4"])
    assert (result.deleted, result.not_found, result.inserted) == (1, 0, 0)
    assert replica.count() == 9
    assert replica.get(["v4"]) == []
    hits = replica.search(records[4].values, 10).hits
    assert "v4" not in [h.record.id for h in hits]
    assert len(hits) == 9


def test_deleting_a_missing_id_counts_it_as_not_found(replica):
    replica.write([record("a", 1)], [])
    result = replica.write([], ["nope", "a", "also-nope"])
    assert result.deleted == 1
    assert result.not_found == 2
    assert replica.count() == 0


def test_search_after_deleting_most_vectors_returns_only_live_ones(replica):
    records = [record(f"v{i}", i) for i in range(200)]
    replica.write(records, [])
    replica.write([], [f"v{i}" for i in range(195)])
    hits = replica.search(records[0].values, 10).hits
    assert sorted(h.record.id for h in hits) == [f"v{i}" for i in range(195, 200)]


def test_a_batch_may_insert_and_delete_different_ids_at_once(replica):
    replica.write([record("old", 1)], [])
    result = replica.write([record("new", 2)], ["old"])
    assert (result.inserted, result.deleted) == (1, 1)
    assert ids_of(replica.get(["old", "new"])) == ["new"]


def test_an_empty_batch_does_nothing(replica):
    replica.write([record("a", 1)], [])
    result = replica.write([], [])
    assert (result.inserted, result.skipped, result.deleted, result.not_found) == (0, 0, 0, 0)
    assert replica.count() == 1


# ---- refused batches leave nothing behind --------------------------------------------------


def test_a_batch_with_a_duplicate_id_is_refused_and_writes_nothing(replica):
    with pytest.raises(InvalidArgument, match="twice"):
        replica.write([record("a", 1), record("b", 2), record("a", 3)], [])
    assert replica.count() == 0
    assert replica.get(["a", "b"]) == []
    assert replica.search(vec(2), 5).hits == []


def test_a_batch_with_a_wrong_dimension_is_refused_and_writes_nothing(replica):
    bad = VectorRecord(id="bad", values=np.zeros(DIM + 1, dtype=np.float32))
    with pytest.raises(InvalidArgument):
        replica.write([record("good", 1), bad], [])
    with pytest.raises(InvalidArgument):
        replica.write([VectorRecord(id="none", values=None)], [])
    assert replica.count() == 0


def test_a_batch_that_writes_and_deletes_the_same_id_is_refused(replica):
    replica.write([record("a", 1)], [])
    with pytest.raises(InvalidArgument):
        replica.write([record("a", 2)], ["a"], existing=ExistingPolicy.OVERWRITE)
    [got] = replica.get(["a"])
    assert np.array_equal(got.values, vec(1))


def test_writing_an_existing_id_under_error_policy_is_refused_and_writes_nothing(replica):
    replica.write([record("a", 1)], [])
    [before] = replica.get(["a"])
    with pytest.raises(AlreadyExists):
        replica.write([record("fresh", 5), record("a", 2)], [], existing=ExistingPolicy.ERROR)
    assert replica.count() == 1
    assert replica.get(["fresh"]) == []
    [after] = replica.get(["a"])
    assert np.array_equal(after.values, before.values)
    assert after.updated_at_ms == before.updated_at_ms


def test_error_is_the_default_existing_policy(replica):
    replica.write([record("a", 1)], [])
    with pytest.raises(AlreadyExists):
        replica.write([record("a", 2)], [])
    assert replica.count() == 1


class _FailFirstCommit:
    """Wraps the replica's Deep Lake dataset so that the next commit fails like a full disk."""

    def __init__(self, ds):
        self._real = ds
        self.failed = False

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __getitem__(self, key):
        return self._real[key]

    def __len__(self):
        return len(self._real)

    def commit(self, *args):
        if not self.failed:
            self.failed = True
            raise OSError("disk full")
        return self._real.commit(*args)


def test_a_batch_whose_commit_fails_is_rolled_back_and_leaves_nothing_behind(tmp_path):
    path = str(tmp_path / "s")
    shard = ShardReplica(path, DIM, "l2")
    shard.write([record("a", 1)], [])
    shard._ds = _FailFirstCommit(shard._ds)
    with pytest.raises(Internal, match="disk full"):
        shard.write([record("b", 2), record("a", 3)], [], existing=ExistingPolicy.OVERWRITE)
    assert shard._ds.failed
    assert shard.count() == 1
    assert ids_of(shard.get(["a", "b"])) == ["a"]
    assert np.array_equal(shard.get(["a"])[0].values, vec(1))
    assert [h.record.id for h in shard.search(vec(2), 5).hits] == ["a"]
    # The replica stays usable, and a restart sees exactly the acknowledged rows.
    shard.write([record("c", 4)], [])
    assert ShardReplica(path, DIM, "l2").count() == 2
    assert sorted(ids_of(ShardReplica(path, DIM, "l2").get(["a", "b", "c"]))) == ["a", "c"]


# ---- existing policies ---------------------------------------------------------------------


def test_skip_policy_counts_skipped_ids_and_writes_only_new_ones(replica):
    replica.write([record("a", 1), record("b", 2)], [])
    result = replica.write([record("a", 10), record("c", 3), record("b", 20)], [],
                           existing=ExistingPolicy.SKIP)
    assert result.inserted == 1
    assert result.skipped == 2
    assert result.skipped_ids == ["a", "b"]
    assert replica.count() == 3
    [a] = replica.get(["a"])
    assert np.array_equal(a.values, vec(1))


def test_skip_policy_with_only_existing_ids_changes_nothing(replica):
    replica.write([record("a", 1)], [])
    result = replica.write([record("a", 9)], [], existing=ExistingPolicy.SKIP)
    assert (result.inserted, result.skipped) == (0, 1)
    assert np.array_equal(replica.get(["a"])[0].values, vec(1))


def test_overwrite_replaces_values_and_fields_but_keeps_created_at(replica):
    replica.write([record("a", 1, content="first"), record("b", 2)], [])
    [before] = replica.get(["a"])
    result = replica.write([record("a", 99, content="second", metadata={"v": "2"})], [],
                           existing=ExistingPolicy.OVERWRITE)
    assert result.inserted == 1 and result.skipped == 0
    assert replica.count() == 2
    [after] = replica.get(["a"])
    assert np.array_equal(after.values, vec(99))
    assert after.content == "second"
    assert after.metadata == {"v": "2"}
    assert after.created_at_ms == before.created_at_ms
    assert after.updated_at_ms >= before.updated_at_ms
    # The index follows: the new vector is found, the old one no longer maps to "a" twice.
    new_hits = replica.search(vec(99), 2).hits
    assert new_hits[0].record.id == "a"
    assert new_hits[0].score == pytest.approx(1.0, abs=1e-3)
    old_hits = [h.record.id for h in replica.search(vec(1), 2).hits]
    assert sorted(old_hits) == ["a", "b"]


# ---- durability across reopen --------------------------------------------------------------


def _populate(path, metric="l2", n=40):
    shard = ShardReplica(path, DIM, metric)
    records = [record(f"v{i}", i, metric=metric, content=f"c{i}") for i in range(n)]
    shard.write(records, [])
    shard.write([], ["v0"])
    return shard, records


def test_after_close_and_reopen_count_get_and_exact_search_still_work(tmp_path):
    path = str(tmp_path / "s")
    shard, records = _populate(path)
    shard.close()
    assert os.path.exists(os.path.join(path, "hnsw.json"))

    reopened = ShardReplica(path, DIM, "l2")
    assert reopened.count() == 39
    [got] = reopened.get(["v7"])
    assert np.array_equal(got.values, records[7].values)
    assert got.content == "c7"
    assert reopened.get(["v0"]) == []
    hit = reopened.search(records[7].values, 1).hits[0]
    assert hit.record.id == "v7"
    assert hit.score == pytest.approx(1.0, abs=1e-3)
    assert "v0" not in [h.record.id for h in reopened.search(records[0].values, 5).hits]
    reopened.close()


def test_reopen_without_close_still_sees_every_committed_row(tmp_path):
    path = str(tmp_path / "s")
    shard, records = _populate(path)
    # No close(): a second replica on the same path stands in for a restart after kill -9.
    second = ShardReplica(path, DIM, "l2")
    assert second.count() == 39
    assert sorted(ids_of(second.get([r.id for r in records]))) == \
        sorted(f"v{i}" for i in range(1, 40))
    for i in (1, 20, 39):
        assert second.search(records[i].values, 1).hits[0].record.id == f"v{i}"


def test_a_stale_saved_index_is_not_used_after_later_writes(tmp_path):
    path = str(tmp_path / "s")
    shard, records = _populate(path)
    shard.close()  # saves the index for this store version
    extra = record("late", 1000)
    shard.write([extra], [])  # then more writes, and no second close
    second = ShardReplica(path, DIM, "l2")
    assert second.count() == 40
    assert second.search(extra.values, 1).hits[0].record.id == "late"


def test_writes_after_reopen_do_not_collide_with_earlier_vectors(tmp_path):
    path = str(tmp_path / "s")
    shard = ShardReplica(path, DIM, "l2")
    records = [record(f"v{i}", i) for i in range(10)]
    shard.write(records, [])
    shard.write([], ["v9"])  # frees the highest label before the restart
    shard.close()

    reopened = ShardReplica(path, DIM, "l2")
    reopened.write([record("new", 500)], [])
    assert reopened.count() == 10
    assert reopened.search(vec(500), 1).hits[0].record.id == "new"
    for i in range(9):
        assert reopened.search(records[i].values, 1).hits[0].record.id == f"v{i}"
    assert "v9" not in [h.record.id for h in reopened.search(records[9].values, 10).hits]
    reopened.close()

    third = ShardReplica(path, DIM, "l2")
    assert sorted(ids_of(third.get(["new"] + [f"v{i}" for i in range(10)]))) == \
        sorted(["new"] + [f"v{i}" for i in range(9)])
    assert third.search(vec(500), 1).hits[0].record.id == "new"


# ---- recall against brute force -------------------------------------------------------------


def _brute_force_scores(metric: str, data: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Same definitions as shard/scoring.py, computed exactly in float64."""
    data64, q64 = data.astype(np.float64), query.astype(np.float64)
    if metric == "l2":
        return 1.0 / (1.0 + np.linalg.norm(data64 - q64, axis=1))
    return data64 @ q64  # cosine (inputs are unit vectors) and ip


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_recall_at_10_is_at_least_95_percent_against_brute_force(tmp_path, metric):
    rng = np.random.default_rng(1234)
    n, dim, k = 3000, 32, 10
    data = np.stack([as_vector(row.tolist(), dim, metric)
                     for row in rng.normal(size=(n, dim))])
    queries = np.stack([as_vector(row.tolist(), dim, metric)
                        for row in rng.normal(size=(60, dim))])
    shard = ShardReplica(str(tmp_path / metric), dim, metric)
    result = shard.write([VectorRecord(id=f"v{i}", values=data[i]) for i in range(n)], [])
    assert result.inserted == n and shard.count() == n

    recalls = []
    for query in queries:
        exact = _brute_force_scores(metric, data, query)
        truth = {f"v{i}" for i in np.argsort(-exact, kind="stable")[:k]}
        hits = shard.search(query, k).hits
        assert len(hits) == k
        recalls.append(len(truth & {h.record.id for h in hits}) / k)
        # Reported scores agree with the exact score of the same vector.
        for h in hits:
            assert h.score == pytest.approx(exact[int(h.record.id[1:])], rel=1e-4, abs=1e-4)
    assert float(np.mean(recalls)) >= 0.95


# ---- the index lock ------------------------------------------------------------------------


def test_a_writer_that_takes_the_index_lock_again_at_once_does_not_starve_readers():
    """The background indexer releases the write lock and takes it again for its next chunk
    at once; a reader that was waiting must get in between (it used to wait until the indexer
    ran out of chunks)."""
    import threading
    import time

    from shard.rwlock import ReadWriteLock

    lock = ReadWriteLock()
    stop = threading.Event()
    writing = threading.Event()

    def writer():
        while not stop.is_set():
            with lock.write():
                writing.set()
                time.sleep(0.005)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        writing.wait(5)
        waited = []
        for _ in range(20):
            started = time.monotonic()
            with lock.read():
                waited.append(time.monotonic() - started)
        assert max(waited) < 2.0  # one 5 ms hold each, even on a loaded box; unbounded before
    finally:
        stop.set()
        thread.join(5)


def test_a_waiting_writer_still_stops_new_readers():
    import threading

    from shard.rwlock import ReadWriteLock

    lock = ReadWriteLock()
    acquired = threading.Event()
    with lock.read():
        writer = threading.Thread(target=lambda: (lock.write().__enter__(), acquired.set()))
        writer.start()
        while not lock._writers_waiting:
            pass
        assert lock.try_read() is False
    writer.join(5)
    assert acquired.is_set()
