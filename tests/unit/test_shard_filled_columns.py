"""A shard store names the short columns that ever held a value (shard/replica.py
_FILLED_COLUMNS), so that opening a shard reads only those: the key must never name too few."""

from __future__ import annotations

import numpy as np
import pytest

import deeplake
from shard import replica as replica_mod
from shard.records import VectorRecord
from shard.replica import ShardReplica

DIMS = 4


def rows(ids, **fields):
    rng = np.random.default_rng(len(ids))
    return [VectorRecord(id=i, values=rng.standard_normal(DIMS).astype(np.float32), **fields)
            for i in ids]


def committed_key(path) -> set[str] | None:
    """The key as the store's last commit holds it (a fresh read-only handle)."""
    return replica_mod._filled_columns(deeplake.open_read_only("file://" + str(path / "store")))


def test_a_new_store_names_only_the_short_columns_written_with_a_value(tmp_path):
    r = ShardReplica(str(tmp_path), DIMS, "l2")
    r.write(rows(["a", "b"]), [])
    r.flush()
    assert committed_key(tmp_path) == set()
    r.write(rows(["c"], language="en", chunk_index=3), [])
    r.flush()
    assert committed_key(tmp_path) == {"language", "chunk_index"}
    r.close()


def test_values_come_back_after_a_reopen_and_empty_columns_are_not_read(tmp_path, monkeypatch):
    r = ShardReplica(str(tmp_path), DIMS, "l2")
    r.write(rows(["a", "b"]), [])
    r.write(rows(["c"], model="m1", chunk_count=2), [])
    r.close()
    read: list[str] = []
    real = replica_mod._SmallFields.__init__

    def spying(self, ds, labels):
        class Spy:
            def __getattr__(self, name):
                return getattr(ds, name)

            def __getitem__(self, name):
                read.append(name)
                return ds[name]
        real(self, Spy(), labels)

    monkeypatch.setattr(replica_mod._SmallFields, "__init__", spying)
    again = ShardReplica(str(tmp_path), DIMS, "l2")
    assert {rec.id: (rec.model, rec.chunk_count, rec.language)
            for rec in again.get(["a", "b", "c"])} == {
        "a": ("", 0, ""), "b": ("", 0, ""), "c": ("m1", 2, "")}
    assert set(read) & set(replica_mod._SMALL_TEXT + replica_mod._SMALL_INT) == \
        {"model", "chunk_count"}
    again.close()


def test_an_update_that_fills_a_column_names_it(tmp_path):
    r = ShardReplica(str(tmp_path), DIMS, "l2")
    r.write(rows(["a"]), [])
    r.update([VectorRecord(id="a", values=None, document_id="doc-1")],
             frozenset({"document_id"}))
    r.close()
    assert committed_key(tmp_path) == {"document_id"}
    again = ShardReplica(str(tmp_path), DIMS, "l2")
    assert again.get(["a"])[0].document_id == "doc-1"
    again.close()


def test_a_store_made_before_the_key_is_read_whole_and_gets_the_key(tmp_path, monkeypatch):
    # Made under another key name, the store lacks the real one, as stores made before it do.
    monkeypatch.setattr(replica_mod, "_FILLED_COLUMNS", "some_other_key")
    old = ShardReplica(str(tmp_path), DIMS, "l2")
    old.write(rows(["a"], content_type="text/plain"), [])
    old.close()
    monkeypatch.undo()
    assert committed_key(tmp_path) is None
    r = ShardReplica(str(tmp_path), DIMS, "l2")
    assert r.get(["a"])[0].content_type == "text/plain"
    # Committed at the open: a shard that is only read from gets it too.
    assert committed_key(tmp_path) == {"content_type"}
    r.write(rows(["b"], language="de"), [])
    r.close()
    assert committed_key(tmp_path) == {"content_type", "language"}
    again = ShardReplica(str(tmp_path), DIMS, "l2")
    assert [(rec.content_type, rec.language) for rec in again.get(["a", "b"])] == [
        ("text/plain", ""), ("", "de")]
    again.close()


@pytest.mark.parametrize("field", ["document_id", "chunk_id", "content_hash", "content_type",
                                   "language", "model"])
def test_every_short_text_field_survives_a_reopen(tmp_path, field):
    r = ShardReplica(str(tmp_path), DIMS, "l2")
    r.write(rows(["a"]), [])
    r.write(rows(["b"], **{field: "x"}), [])
    r.close()
    again = ShardReplica(str(tmp_path), DIMS, "l2")
    assert [getattr(rec, field) for rec in again.get(["a", "b"])] == ["", "x"]
    again.close()
