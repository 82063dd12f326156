"""node/backup_export.py: a shard's rows at a recorded Deep Lake version, copied into a fresh
shard directory that the engine opens as it is."""

import shutil

import numpy as np
import pytest

from node.backup_export import export_version
from shard.records import ExistingPolicy, VectorRecord
from shard.replica import ShardReplica
from tributary import errors


def _records(prefix: str, count: int, rng) -> list[VectorRecord]:
    return [VectorRecord(id=f"{prefix}{i}", values=rng.random(8).astype(np.float32),
                         content=f"river delta {prefix} {i}", metadata={"n": str(i)},
                         document_id=f"doc{i % 7}", chunk_index=i % 3, chunk_count=3)
            for i in range(count)]


def test_export_holds_exactly_the_rows_of_the_recorded_version(tmp_path):
    rng = np.random.default_rng(7)
    live = ShardReplica(str(tmp_path / "live"), 8, "l2", "hnsw")
    first = _records("a", 300, rng)
    live.write(first, [], ExistingPolicy.OVERWRITE)
    live.soft_delete(["a5"])
    version = live._ds.version
    # After the cut: a new row, an overwrite and a delete, none of which may be in the export.
    live.write(_records("late", 5, rng), ["a1"], ExistingPolicy.OVERWRITE)
    changed = VectorRecord(id="a2", values=rng.random(8).astype(np.float32), content="changed")
    live.write([changed], [], ExistingPolicy.OVERWRITE)

    rows = export_version("file://" + str(tmp_path / "live" / "store"), version,
                          str(tmp_path / "exported"), 8, "l2", "hnsw")
    assert rows == 300
    restored = ShardReplica(str(tmp_path / "exported"), 8, "l2", "hnsw")
    try:
        assert restored.count() == 299             # a5 stays soft-deleted
        assert restored.soft_deleted_count() == 1
        assert restored.get(["late0", "a5"]) == []
        by_id = {r.id: r for r in restored.get([r.id for r in first])}
        for record in first:
            if record.id == "a5":
                continue
            got = by_id[record.id]
            assert got.content == record.content and got.metadata == record.metadata
            assert got.document_id == record.document_id
            assert np.array_equal(got.values, record.values)
        assert restored.search(first[10].values, 1).hits[0].record.id == "a10"
        # The BM25 index on content came along: text search answers from the export.
        assert restored.text_search("delta", 5).hits
    finally:
        restored.close()
        live.close()


def test_export_of_an_unknown_version_is_not_found(tmp_path):
    live = ShardReplica(str(tmp_path / "live"), 4, "l2", "flat")
    live.close()
    with pytest.raises(errors.NotFound):
        export_version("file://" + str(tmp_path / "live" / "store"), "no-such-version",
                       str(tmp_path / "out"), 4, "l2", "flat")


def test_export_by_the_cuts_tag_survives_a_store_replaced_by_another_copys_files(tmp_path):
    # chaos: backup, seed 120. A copy marked at the cut (its commit id recorded) later installed
    # its primary's snapshot: its store became the primary's files. Deep Lake's commit ids
    # count up within a store, so the recorded id named another commit there, and the export
    # read 13 rows where the cut had counted 10. The cut's tag travels with the files and names
    # the state the cut marked, whichever copy's files the store now holds.
    rng = np.random.default_rng(11)
    mine = ShardReplica(str(tmp_path / "mine"), 8, "l2", "hnsw")
    theirs = ShardReplica(str(tmp_path / "theirs"), 8, "l2", "hnsw")
    rows = _records("r", 10, rng)
    mine.write(rows[:6], [], ExistingPolicy.OVERWRITE)
    mine.write(rows[6:], [], ExistingPolicy.OVERWRITE)
    theirs.write(rows, [], ExistingPolicy.OVERWRITE)       # the same rows, in fewer commits
    recorded, _ = mine.mark_version("cut-1")
    theirs.mark_version("cut-1")
    theirs.write(_records("late", 3, rng), [], ExistingPolicy.OVERWRITE)
    mine.close()
    theirs.close()
    # The snapshot install: this copy's store is the other copy's files from now on.
    shutil.rmtree(tmp_path / "mine")
    shutil.copytree(tmp_path / "theirs", tmp_path / "mine")
    store = "file://" + str(tmp_path / "mine" / "store")

    assert export_version(store, recorded, str(tmp_path / "by-id"), 8, "l2", "hnsw") != 10, \
        "the recorded commit id names another state in the replaced store"
    assert export_version(store, recorded, str(tmp_path / "by-tag"), 8, "l2", "hnsw",
                          tag="cut-1") == 10
    exported = ShardReplica(str(tmp_path / "by-tag"), 8, "l2", "hnsw")
    try:
        assert sorted(r.id for r in exported.get([r.id for r in rows] + ["late0"])) == \
            sorted(r.id for r in rows)
    finally:
        exported.close()
    with pytest.raises(errors.NotFound):
        export_version(store, recorded, str(tmp_path / "no-tag"), 8, "l2", "hnsw",
                       tag="cut-2")
