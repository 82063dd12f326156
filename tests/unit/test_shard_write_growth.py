"""ShardReplica (shard/replica.py): a write's in-memory bookkeeping costs the size of the batch,
not of the shard. The per-row columns kept in memory (timestamps for every hit, the filter
columns) have spare capacity, so appending a batch writes into it instead of copying the whole
column (which made each write slower as the shard grew). Real Deep Lake store in a tmp dir."""

from __future__ import annotations

import numpy as np

from shard.records import VectorRecord
from shard.replica import ShardReplica
from shard import filter_eval
from shard.filter_parse import parse_filter

DIM = 4


def _batch(start: int, count: int) -> list[VectorRecord]:
    rng = np.random.default_rng(start)
    return [VectorRecord(id=f"v{i}", values=rng.normal(size=DIM).astype(np.float32),
                         language="en" if i % 2 else "de")
            for i in range(start, start + count)]


def test_appending_a_batch_leaves_the_timestamp_columns_in_place(tmp_path):
    replica = ShardReplica(str(tmp_path / "shard"), DIM, "l2")
    try:
        replica.write(_batch(0, 10), [])
        created_before = replica._small.created
        replica.write(_batch(10, 10), [])
        created_after = replica._small.created
        assert len(created_after) == 20
        assert np.shares_memory(created_before, created_after)
        assert [r.created_at_ms > 0 for r in replica.get(["v3", "v15"])] == [True, True]
    finally:
        replica.close()


def test_filter_columns_grow_in_place_and_stay_right_after_deletes(tmp_path):
    replica = ShardReplica(str(tmp_path / "shard"), DIM, "l2")
    where = filter_eval.compile_filter(parse_filter("language = 'en'"))
    query = np.zeros(DIM, np.float32)

    def matching() -> set[str]:
        return {hit.record.id for hit in replica.search(query, 50, where=where).hits}

    try:
        replica.write(_batch(0, 10), [])
        assert matching() == {f"v{i}" for i in range(1, 10, 2)}
        language_before = replica._filter_view()._standard["language"]
        replica.write(_batch(10, 10), [])
        assert np.shares_memory(language_before,
                                replica._filter_view()._standard["language"])
        replica.write(_batch(20, 4), ["v1", "v3"])
        assert matching() == {f"v{i}" for i in range(5, 24, 2)}
    finally:
        replica.close()
