"""Specification of the owner filter of a split shard's searches (node/split.py
hide_foreign_rows): from the switch until the purge, a copy holds rows of the other half of its
split, and its searches answer only the rows its shard owns under the current count, the exact
owned top-k (checked against brute force over the owned rows), on a real ShardReplica."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from consensus.placement import stable_hash
from node.split import hide_foreign_rows, show_all_rows
from shard.records import VectorRecord
from shard.replica import ShardReplica

DIM = 8


def catalog(shard_count: int, split_epoch: int):
    record = SimpleNamespace(shard_count=shard_count, split_epoch=split_epoch)
    return SimpleNamespace(state=SimpleNamespace(datasets={"u": record}))


def test_a_split_copy_answers_only_its_own_rows_and_the_exact_owned_top_k(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((400, DIM)).astype(np.float32)
    replica = ShardReplica(str(tmp_path / "shard"), DIM, "l2", "flat")
    try:
        replica.write([VectorRecord(id=f"v{i}", values=data[i]) for i in range(400)], [])
        owned = [i for i in range(400) if stable_hash(f"v{i}") % 4 == 1]
        cat = catalog(4, 2)
        hide_foreign_rows(replica, "u", 1, cat)
        for q in rng.standard_normal((10, DIM)).astype(np.float32):
            hits = replica.search(q, 10).hits
            exact = sorted(owned, key=lambda i: float(np.sum((data[i] - q) ** 2)))[:10]
            assert [h.record.id for h in hits] == [f"v{i}" for i in exact]
        # Before the switch (the catalog still says 2 shards for a dataset never split), and
        # once shown again, every row answers.
        cat.state.datasets["u"].split_epoch = 0
        assert len(replica.search(data[0], 400).hits) == 400
        cat.state.datasets["u"].split_epoch = 2
        show_all_rows(replica)
        assert len(replica.search(data[0], 400).hits) == 400
    finally:
        replica.close()
