"""Specification of dataset versions in the catalog (consensus/versions.py CreateVersion):
tags, refusals, retention by count and age, and what a version keeps of its cut."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import commands as c
from consensus import versions
from consensus.state import MetaState, apply, from_doc, to_doc
from consensus.versions import ShardVersion


def run(state: MetaState, *cmds):
    result = None
    for cmd in cmds:
        state, result = apply(state, cmd)
    return state, result


def base(shards: int = 2) -> MetaState:
    state, _ = run(MetaState(), c.RegisterNode("n1", "h:1", 0), c.CreateDataset(
        uuid="A", tenant_id="t", name="a", description="", dimensions=4, metric_type="l2",
        index_type="hnsw", metadata={}, placement=tuple("n1" for _ in range(shards)), at_ms=1))
    return state


def cut(shards: int = 2, rows: int = 5) -> str:
    return versions.shards_to_json([
        ShardVersion(s, "n1", f"000{s}", 10 + s, 1, rows, (("n1", f"000{s}"), ("n2", "0009")))
        for s in range(shards)])


def make(tag: str, at_ms: int, keep_max: int = 0, keep_ms: int = 0, cut_json: str | None = None):
    return c.CreateVersion("A", tag, f"cut-{tag}", cut_json or cut(), keep_max, keep_ms, at_ms)


def test_a_version_records_every_shards_position_under_its_tag():
    state, result = apply(base(), make("v1", 100))
    assert result == {"tag": "v1", "dropped": [], "vector_count": 10}
    version = state.versions["A/v1"]
    assert version.deeplake_tag == "cut-v1" and version.at_ms == 100
    assert [s.shard for s in version.shards] == [0, 1]
    assert version.shards[1].marked == (("n1", "0001"), ("n2", "0009"))


def test_a_duplicate_tag_is_refused_and_changes_nothing():
    state, _ = apply(base(), make("v1", 100))
    after, result = apply(state, make("v1", 200))
    assert result["error"]["type"] == "AlreadyExists" and after == state


def test_bad_tags_and_incomplete_cuts_are_refused():
    for tag in ("", "-a", "a/b", "x" * 64, "a b", "ü"):
        assert apply(base(), make(tag, 100))[1]["error"]["type"] == "InvalidArgument", tag
    assert apply(base(), make("v", 100, cut_json=cut(shards=1)))[1]["error"]["type"] \
        == "InvalidArgument"
    assert apply(base(), make("v", 100, cut_json="{not json"))[1]["error"]["type"] \
        == "InvalidArgument"
    unknown = c.CreateVersion("Z", "v", "cut", cut(), 0, 0, 100)
    assert apply(base(), unknown)[1]["error"]["type"] == "NotFound"


def test_retention_by_count_drops_the_oldest_first():
    state, _ = run(base(), make("v1", 100, keep_max=2), make("v2", 200, keep_max=2))
    state, result = apply(state, make("v3", 300, keep_max=2))
    assert result["dropped"] == ["v1"]
    assert [v.tag for v in versions.versions_of(state, "A")] == ["v2", "v3"]


def test_retention_by_age_drops_versions_older_than_keep_ms_but_never_the_new_one():
    state, _ = run(base(), make("old", 100, keep_ms=1_000), make("mid", 900, keep_ms=1_000))
    state, result = apply(state, make("new", 1_500, keep_ms=1_000))
    assert result["dropped"] == ["old"]
    state, result = apply(state, make("far", 100_000, keep_ms=1))
    assert sorted(result["dropped"]) == ["mid", "new"]
    assert [v.tag for v in versions.versions_of(state, "A")] == ["far"]


def test_version_at_picks_the_newest_version_taken_at_or_before_a_time():
    state, _ = run(base(), make("v1", 100), make("v2", 200))
    assert versions.version_at(state, "A", 99) is None
    assert versions.version_at(state, "A", 100).tag == "v1"
    assert versions.version_at(state, "A", 199).tag == "v1"
    assert versions.version_at(state, "A", 10_000).tag == "v2"


def test_versions_survive_a_snapshot_and_go_with_their_dataset():
    state, _ = run(base(), make("v1", 100), make("v2", 200))
    assert from_doc(to_doc(state)).versions == state.versions
    state, _ = apply(state, c.DeleteVersion("A", "v1", 300))
    assert list(state.versions) == ["A/v2"]
    assert apply(state, c.DeleteVersion("A", "v1", 300))[1]["error"]["type"] == "NotFound"
    state, _ = apply(state, c.DeleteDataset("t", "a", 400))
    assert state.versions == {}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5_000), st.integers(0, 4), st.integers(0, 3_000)),
                max_size=25))
def test_retention_never_keeps_more_than_keep_max_nor_drops_the_newest(steps):
    state, at = base(), 0
    for n, (gap, keep_max, keep_ms) in enumerate(steps):
        at += gap
        state, result = apply(state, make(f"v{n}", at, keep_max, keep_ms))
        kept = versions.versions_of(state, "A")
        assert f"A/v{n}" in state.versions
        if keep_max:
            assert len(kept) <= keep_max
        if keep_ms:
            assert all(at - v.at_ms <= keep_ms for v in kept)


def test_a_new_version_reaches_catalog_watchers():
    from consensus import watch

    before = base()
    after, _ = apply(before, make("v1", 100))
    changes = watch.catalog_changes(before, after)
    assert [(section, key) for section, key, _ in changes] == [("versions", "A/v1")]
    replayed = watch.apply_changes(before, after.version, changes)
    assert replayed.versions == after.versions
    gone, _ = apply(after, c.DeleteVersion("A", "v1", 200))
    assert watch.apply_changes(after, gone.version, watch.catalog_changes(after, gone)
                               ).versions == {}
