"""ShardReplica (shard/replica.py): a write's Deep Lake commit stores rows and nothing else; the
content column's BM25 index is brought up to date by the text search that needs it. (In Deep
Lake's automatic indexing mode each commit updated the index, at a cost that grew with the
shard, and now and then rebuilt all of it.) Real Deep Lake stores in a tmp dir."""

from __future__ import annotations

import deeplake
import numpy as np

from shard.records import VectorRecord
from shard.replica import ShardReplica

DIM = 4


def _record(vid: str, content: str, seed: int) -> VectorRecord:
    values = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return VectorRecord(id=vid, values=values, content=content)


def _text_ids(replica: ShardReplica, text: str) -> list[str]:
    return [hit.record.id for hit in replica.text_search(text, 5).hits]


def test_write_commits_do_not_update_the_bm25_index(tmp_path):
    replica = ShardReplica(str(tmp_path / "shard"), DIM, "l2")
    try:
        replica.write([_record("a", "river delta", 1)], [])
        assert replica._ds.indexing_mode == deeplake.IndexingMode.Off
        replica.text_search("river", 5)
        replica.write([_record("b", "mountain lake", 2)], [])
        assert replica._ds.indexing_mode == deeplake.IndexingMode.Off
    finally:
        replica.close()
    reopened = ShardReplica(str(tmp_path / "shard"), DIM, "l2")
    try:
        assert reopened._ds.indexing_mode == deeplake.IndexingMode.Off
    finally:
        reopened.close()


def test_text_search_finds_rows_written_after_an_earlier_text_search(tmp_path):
    replica = ShardReplica(str(tmp_path / "shard"), DIM, "l2")
    try:
        replica.write([_record("a", "river delta", 1), _record("b", "granite peak", 2)], [])
        assert _text_ids(replica, "river") == ["a"]
        replica.write([_record("c", "river mouth river", 3)], [])
        assert _text_ids(replica, "river") == ["c", "a"]
        replica.write([], ["c"])
        assert _text_ids(replica, "river") == ["a"]
    finally:
        replica.close()


def test_text_search_after_reopen_sees_every_stored_row(tmp_path):
    path = str(tmp_path / "shard")
    replica = ShardReplica(path, DIM, "l2")
    replica.write([_record(f"v{i}", f"word{i} common", i) for i in range(20)], [])
    replica.text_search("common", 5)
    replica.write([_record("late", "latecomer common", 99)], [])
    replica.close()
    reopened = ShardReplica(path, DIM, "l2")
    try:
        assert _text_ids(reopened, "latecomer") == ["late"]
        assert _text_ids(reopened, "word7") == ["v7"]
    finally:
        reopened.close()
