"""A node opens its replicas from disk while it waits for the meta group (node/server.py
ShardHost.preopen_from_disk), then keeps only those the catalog places on it with the shape it
records (reopen_from_disk): the rest are closed, and removed as before."""

from __future__ import annotations

import asyncio
import os
import types
import uuid

import numpy as np

from consensus.records import DatasetRecord
from node.server import ShardHost
from shard.records import VectorRecord
from shard.replica import ShardReplica

DIMS = 4


def record(dataset_uuid: str, placement: tuple[str, ...], index_type: str = "hnsw",
           dimensions: int = DIMS, metric: str = "l2") -> DatasetRecord:
    return DatasetRecord(uuid=dataset_uuid, tenant_id="default", name=dataset_uuid[:8],
                         description="", dimensions=dimensions, metric_type=metric,
                         index_type=index_type, metadata={}, placement=placement, epoch=1,
                         created_at_ms=0, updated_at_ms=0)


def host_with(tmp_path, datasets: dict[str, DatasetRecord]) -> ShardHost:
    # ShardHost reads only `catalog.state.datasets` and `.reshards` when it reopens.
    catalog = types.SimpleNamespace(state=types.SimpleNamespace(datasets=datasets, reshards={}))
    return ShardHost("node-a", str(tmp_path), catalog)


def make_shard(host: ShardHost, dataset_uuid: str, shard: int, rows: int = 3) -> None:
    replica = ShardReplica(host.shard_path(dataset_uuid, shard), DIMS, "l2")
    rng = np.random.default_rng(shard)
    replica.write([VectorRecord(id=f"v{i}", values=rng.standard_normal(DIMS).astype(np.float32))
                   for i in range(rows)], [])
    replica.close()     # saves the graph: its shape is on disk


def start(host: ShardHost) -> list[tuple[str, int]]:
    """preopen, then reopen, as serve() runs them; the keys preopen opened."""
    async def run():
        await host.preopen_from_disk()
        opened = sorted(host._preopened)
        await host.reopen_from_disk()
        return opened
    return asyncio.run(run())


def test_a_replica_opened_ahead_of_the_catalog_is_the_one_served(tmp_path, monkeypatch):
    kept = str(uuid.uuid4())
    host = host_with(tmp_path, {})
    make_shard(host, kept, 0, rows=5)
    opens = []
    real = ShardReplica.__init__

    def counting(self, path, *args, **kwargs):
        opens.append(path)
        real(self, path, *args, **kwargs)
    monkeypatch.setattr(ShardReplica, "__init__", counting)
    host.catalog.state.datasets[kept] = record(kept, ("node-a",))
    assert start(host) == [(kept, 0)]
    assert opens == [host.shard_path(kept, 0)]      # opened once, before the catalog
    assert host.replicas[(kept, 0)].count() == 5
    assert host._preopened == {}
    host.close()


def test_copies_not_placed_here_are_closed_and_removed(tmp_path):
    deleted, moved, kept = (str(uuid.uuid4()) for _ in range(3))
    host = host_with(tmp_path, {})
    for dataset_uuid in (deleted, moved, kept):
        make_shard(host, dataset_uuid, 0)
    host.catalog.state.datasets.update({moved: record(moved, ("node-b",)),
                                        kept: record(kept, ("node-a",))})
    assert len(start(host)) == 3
    assert set(host.replicas) == {(kept, 0)}
    assert not os.path.exists(host.shard_path(deleted, 0))
    assert not os.path.exists(host.shard_path(moved, 0))
    assert host._preopened == {}
    host.close()


def test_a_replica_whose_recorded_shape_differs_is_opened_again_as_the_catalog_says(tmp_path):
    other = str(uuid.uuid4())
    host = host_with(tmp_path, {})
    make_shard(host, other, 0)
    host.catalog.state.datasets[other] = record(other, ("node-a",), index_type="flat")
    assert start(host) == [(other, 0)]
    replica = host.replicas[(other, 0)]
    assert replica.index_type == "flat" and replica.count() == 3
    host.close()
