"""Specification of reads at a tagged version of a shard replica (shard/versions.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shard import filter_eval, filter_parse
from shard.records import ExistingPolicy, VectorRecord
from shard.replica import ShardReplica
from shard.versions import VersionView, ViewCache
from tributary import errors, limits

DIMS = 6


def records(ids, seed=0):
    rng = np.random.default_rng(seed)
    return [VectorRecord(id=i, values=rng.standard_normal(DIMS).astype(np.float32),
                         metadata={"kind": "odd" if n % 2 else "even"}, content=f"c{i}")
            for n, i in enumerate(ids)]


@pytest.fixture
def replica(tmp_path):
    r = ShardReplica(str(tmp_path / "shard"), DIMS, "l2")
    yield r
    r.close()


def hits(outcome):
    return [(h.record.id, round(h.score, 5)) for h in outcome.hits]


def test_a_view_reads_rows_as_they_were_when_tagged(replica):
    replica.write(records(["a", "b", "c"]), [])
    commit, count = replica.mark_version("t1")
    assert count == 3 and commit
    replica.write(records(["a"], seed=9), ["b"], ExistingPolicy.OVERWRITE)
    replica.write(records(["late"], seed=3), [])
    view = VersionView(replica.store_url, "t1", DIMS, "l2")
    assert view.commit_id == commit and view.count() == 3
    assert sorted(r.id for r in view.get(["a", "b", "late"])) == ["a", "b"]
    old_a = view.get(["a"])[0]
    assert np.allclose(old_a.values, records(["a"])[0].values)
    assert old_a.metadata == {"kind": "even"} and old_a.content == "ca"
    listed, _, exhausted = view.list_after(-1, 10, include_values=False)
    assert [r.id for r in listed] == ["a", "b", "c"] and exhausted


def test_tagging_twice_keeps_the_first_state(replica):
    replica.write(records(["a"]), [])
    first, _ = replica.mark_version("t")
    replica.write(records(["b"], seed=1), [])
    again, count = replica.mark_version("t")
    assert again == first


def test_compaction_keeps_the_tagged_state(replica):
    replica.write(records(["keep", "gone"]), [])
    replica.mark_version("before")
    replica.soft_delete(["gone"])
    replica.mark_version("hidden")
    assert replica.compact()["purged"] == 1
    assert [r.id for r in VersionView(replica.store_url, "before", DIMS, "l2").get(
        ["gone"])] == ["gone"]
    # Soft-deleted at the version: hidden there too, as it was then.
    hidden = VersionView(replica.store_url, "hidden", DIMS, "l2")
    assert hidden.get(["gone"]) == [] and hidden.count() == 1


def test_a_store_without_the_tag_answers_unavailable(replica):
    replica.write(records(["a"]), [])
    with pytest.raises(errors.Unavailable):
        VersionView(replica.store_url, "never", DIMS, "l2")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 60), churn=st.integers(0, 40), seed=st.integers(0, 1_000),
       k=st.integers(1, 12), filtered=st.booleans())
def test_a_search_at_a_tag_equals_the_exact_search_run_at_tag_time(tmp_path_factory, n, churn,
                                                                   seed, k, filtered):
    replica = ShardReplica(str(tmp_path_factory.mktemp("s") / "shard"), DIMS, "l2")
    try:
        ids = [f"v{i}" for i in range(n)]
        replica.write(records(ids, seed), [])
        where = filter_eval.compile_filter(filter_parse.build_filter_ast(
            None, "kind = 'odd'")) if filtered else None
        queries = np.random.default_rng(seed + 1).standard_normal((3, DIMS)).astype(np.float32)
        then = [hits(replica.search(q, k, where=where, exact=True)) for q in queries]
        replica.mark_version("t")
        rng = np.random.default_rng(seed + 2)
        changed = [ids[i] for i in rng.choice(n, size=min(churn, n), replace=False)]
        replica.write(records(changed[: len(changed) // 2], seed + 3), changed[len(changed) // 2:],
                      ExistingPolicy.OVERWRITE)
        replica.write([VectorRecord(id=f"q{i}", values=q) for i, q in enumerate(queries)], [])
        view = VersionView(replica.store_url, "t", DIMS, "l2")
        assert [hits(view.search(q, k, where=where)) for q in queries] == then
    finally:
        replica.close()


def test_a_version_search_over_the_scan_limit_is_refused(replica, monkeypatch):
    replica.write(records(["a", "b", "c"]), [])
    replica.mark_version("t")
    monkeypatch.setattr(limits, "as_of_scan_vectors_max", 2)
    view = VersionView(replica.store_url, "t", DIMS, "l2")
    with pytest.raises(errors.ResourceExhausted, match="as_of_scan_vectors_max=2"):
        view.search(np.zeros(DIMS, np.float32), 1)


def test_the_view_cache_keeps_the_most_recently_used_views_within_its_bounds(replica):
    replica.write(records(["a"]), [])
    for tag in ("t1", "t2", "t3"):
        replica.mark_version(tag)
    cache = ViewCache(views_max=2, bytes_max=1 << 30)
    first = cache.get(replica.store_url, "t1", DIMS, "l2")
    cache.get(replica.store_url, "t2", DIMS, "l2")
    assert cache.get(replica.store_url, "t1", DIMS, "l2") is first
    cache.get(replica.store_url, "t3", DIMS, "l2")     # t2 was least recently used
    assert cache.get(replica.store_url, "t1", DIMS, "l2") is first
    assert set(cache._views) == {(replica.store_url, "t1"), (replica.store_url, "t3")}
    cache.forget(replica.store_url)
    assert not cache._views


def test_the_view_cache_reopens_a_store_whose_directory_was_replaced(replica, tmp_path):
    import shutil
    replica.write(records(["a"]), [])
    replica.mark_version("t")
    cache = ViewCache()
    first = cache.get(replica.store_url, "t", DIMS, "l2")
    store = replica.store_url.removeprefix("file://")
    shutil.copytree(store, str(tmp_path / "copy"))
    shutil.rmtree(store)
    shutil.move(str(tmp_path / "copy"), store)     # a snapshot's files swapped in
    again = cache.get(replica.store_url, "t", DIMS, "l2")
    assert again is not first and [r.id for r in again.get(["a"])] == ["a"]


def test_a_view_is_opened_only_between_commits_of_its_store(replica):
    """Deep Lake 4.7 can deadlock the process when a read-only handle on a store opens while
    another thread commits to it (seen: a node froze under 2PC group commits beside reads at a
    version). A view opens holding the store's commit lock (ShardReplica.store_guard)."""
    import threading

    replica.write(records(["a", "b"]), [])
    replica.mark_version("t1")
    cache, opened = ViewCache(), threading.Event()

    def open_view():
        cache.get(replica.store_url, "t1", DIMS, "l2", replica.store_guard())
        opened.set()
    with replica.store_guard():        # as the committer holds it during a commit
        worker = threading.Thread(target=open_view)
        worker.start()
        assert not opened.wait(0.5), "the view opened beside a commit"
    assert opened.wait(30)
    worker.join()
