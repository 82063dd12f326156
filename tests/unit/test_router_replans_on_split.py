"""A request the router planned on a dataset's old shard count, sent as a split switches: the
router plans it again on the new count instead of re-stamping the new epoch on the old plan
(router/core.py RouterCore.replanned and on_shard(planned=...)).

The shard nodes are in-memory fakes that answer as a split dataset's nodes do
(node/split.py refuse_stale, node fencing): an epoch older than the catalog's is StaleEpoch; so
is an upsert that is not the shard's row under the current count; a read answers only the rows
the shard owns under the current count. The router's catalog cache lags the meta group by one
refresh, as a watch does in the switch window."""

from __future__ import annotations

import asyncio

from consensus import commands as c
from consensus.placement import stable_hash
from consensus.state import MetaState, apply
from proto import deeplake_service_pb2 as pb
from proto import node_pb2
from router.core import RouterCore
from tributary import errors

NODES = ("n1", "n2", "n3")


def ok(state, command):
    after, result = apply(state, command)
    assert "error" not in result, result
    return after


def two_shards() -> MetaState:
    state = MetaState()
    for n in NODES:
        state = ok(state, c.RegisterNode(n, f"addr-{n}", 1))
    return ok(state, c.CreateDataset("u1", "t1", "docs", "", 4, "cosine", "hnsw", {},
                                     ("n1", "n2"), 10, 2, (("n1", "n2"), ("n2", "n3"))))


def switched(state: MetaState) -> MetaState:
    """The same dataset after a split to 4 shards (consensus/reshard.py)."""
    state = ok(state, c.StartReshard("u1", 4, 11))
    record = state.datasets["u1"]
    for shard in range(record.shard_count):
        for node in record.copies_of(shard):
            state = ok(state, c.ReshardCopyReady("u1", shard, node, True, 20))
    return ok(state, c.FinishReshard("u1", 30))


class Meta:
    def __init__(self, state: MetaState):
        self.state = state

    async def propose(self, command):
        self.state, result = apply(self.state, command)
        return result


class LaggingCatalog:
    """The router's cache: it sees the meta group's state only when refreshed."""

    def __init__(self, meta: Meta):
        self.meta, self.state = meta, meta.state
        self.refreshes = 0

    async def refresh(self, linearizable: bool = False):
        self.refreshes += 1
        self.state = self.meta.state
        return self.state


class SplitNodes:
    """Rows per (shard, id), fenced as split nodes fence them, against the meta group's
    current record (what the nodes know)."""

    def __init__(self, meta: Meta):
        self.meta = meta
        self.rows: dict[str, int] = {}          # id -> the shard that holds it
        self.txns: dict[str, list[tuple[int, list[str]]]] = {}

    def _fence(self, ref: node_pb2.ShardRef, ids=()):
        current = self.meta.state.datasets["u1"]
        if ref.epoch < current.epoch:
            raise errors.StaleEpoch(f"epoch {ref.epoch} is older than {current.epoch}")
        for vector_id in ids:
            if stable_hash(vector_id) % current.shard_count != ref.shard:
                raise errors.StaleEpoch(f"vector '{vector_id}' is not shard {ref.shard}'s")

    async def write(self, address, request: node_pb2.WriteRequest):
        self._fence(request.shard, [v.id for v in request.upserts])
        for vector in request.upserts:
            self.rows[vector.id] = request.shard.shard
        deleted = [i for i in request.delete_ids if self.rows.get(i) == request.shard.shard]
        for vector_id in deleted:
            del self.rows[vector_id]
        return node_pb2.WriteResponse(inserted=len(request.upserts), deleted=len(deleted),
                                      not_found=len(request.delete_ids) - len(deleted))

    async def prepare(self, address, request: node_pb2.PrepareRequest):
        self._fence(request.shard, [v.id for v in request.upserts])
        self.txns.setdefault(request.txn_id, []).append(
            (request.shard.shard, [v.id for v in request.upserts]))
        return node_pb2.PrepareResponse(inserted=len(request.upserts))

    async def commit(self, address, request: node_pb2.TxnRequest):
        staged = self.txns.get(request.txn_id, [])
        for shard, ids in staged:
            if shard == request.shard.shard:
                for vector_id in ids:
                    self.rows[vector_id] = shard
        staged[:] = [(s, ids) for s, ids in staged if s != request.shard.shard]
        if not staged:
            self.txns.pop(request.txn_id, None)
        return node_pb2.TxnResponse()

    async def abort(self, address, request: node_pb2.TxnRequest):
        self.txns.pop(request.txn_id, None)
        return node_pb2.TxnResponse()

    async def get(self, address, request: node_pb2.GetRequest):
        self._fence(request.shard)
        count = self.meta.state.datasets["u1"].shard_count
        return node_pb2.GetResponse(vectors=[
            pb.Vector(id=i) for i in request.ids
            if self.rows.get(i) is not None and stable_hash(i) % count == request.shard.shard])


def setup():
    meta = Meta(two_shards())
    catalog = LaggingCatalog(meta)
    nodes = SplitNodes(meta)
    core = RouterCore(meta, catalog, nodes)
    return core, meta, catalog, nodes


def ids_moving_from(shard: int, n: int) -> list[str]:
    """Ids of `shard` under 2 shards that belong to shard + 2 under 4 (they move)."""
    found, i = [], 0
    while len(found) < n:
        vector_id = f"v{i}"
        if stable_hash(vector_id) % 4 == shard + 2:
            found.append(vector_id)
        i += 1
    return found


def insert(core: RouterCore, ids: list[str]):
    return asyncio.run(core.insert_vectors(pb.InsertVectorsRequest(
        dataset_id="docs", tenant_id="t1",
        vectors=[pb.Vector(id=i, values=[1.0, 0.0, 0.0, 0.0]) for i in ids])))


def test_a_one_shard_write_planned_on_the_old_count_lands_on_its_shard_under_the_new_one():
    core, meta, catalog, nodes = setup()
    moving = ids_moving_from(0, 1)
    meta.state = switched(meta.state)        # the nodes know; the router's cache does not
    response = insert(core, moving)
    assert response.inserted_count == 1
    assert nodes.rows == {moving[0]: 2}
    assert catalog.state.datasets["u1"].shard_count == 4


def test_a_2pc_batch_planned_on_the_old_count_aborts_and_commits_as_planned_again():
    core, meta, _, nodes = setup()
    batch = ids_moving_from(0, 2) + ids_moving_from(1, 2)
    meta.state = switched(meta.state)
    response = insert(core, batch)
    assert response.inserted_count == 4
    assert nodes.rows == {i: stable_hash(i) % 4 for i in batch}
    assert nodes.txns == {}


def test_a_delete_planned_on_the_old_count_deletes_the_row_where_it_lives_now():
    core, meta, _, nodes = setup()
    moving = ids_moving_from(1, 1)
    meta.state = switched(meta.state)
    nodes.rows[moving[0]] = 3
    response = asyncio.run(core.delete_vectors(pb.DeleteVectorsRequest(
        dataset_id="docs", tenant_id="t1", vector_ids=moving)))
    assert (response.deleted_count, response.not_found_count) == (1, 0)
    assert nodes.rows == {}


def test_a_get_planned_on_the_old_count_finds_a_moved_row():
    core, meta, _, nodes = setup()
    moving = ids_moving_from(0, 1)
    meta.state = switched(meta.state)
    nodes.rows[moving[0]] = 2
    response = asyncio.run(core.get_vector(pb.GetVectorRequest(
        dataset_id="docs", tenant_id="t1", vector_id=moving[0])))
    assert response.vector.id == moving[0]
