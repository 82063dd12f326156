"""A 2PC txn prepared on a split's parent before the switch is held by the child too (the
child mirrored the prepare). The parent's decision, logged after the switch, is no longer
mirrored: the child is a shard with a log of its own. Before this was handled the child kept
the txn's ids locked until its own recovery asked the meta group, txn_prepared_timeout_ms
later, so the router's re-planned retry of the same batch waited txn_lock_wait_ms on the child
and answered 409 "ids are locked by transaction ...; retry" (test_reshard.py failed so in CI).

Now the coordinator's decision on the parent primary also finishes the child's copy of the
txn where this node is the child's primary. Real ShardReplicas and the real participant
driver; the host, catalog, meta client and replication driver are stand-ins."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace

import pytest

from consensus import txn_model as pm
from consensus.records import DatasetRecord
from node.convert import records_from_protos
from node.txn import Participant, _staged_txn
from proto import deeplake_service_pb2 as pb, node_pb2
from shard.replica import ShardReplica


def _record(child_primary: str = "n1") -> DatasetRecord:
    """Dataset u1 just after its split from 1 to 2 shards: child 1 has parent 0's copies."""
    return DatasetRecord(
        uuid="u1", tenant_id="t1", name="docs", description="", dimensions=4,
        metric_type="l2", index_type="hnsw", metadata={}, placement=("n1", child_primary),
        epoch=3, created_at_ms=1, updated_at_ms=1, replication_factor=1,
        copies=(("n1",), (child_primary,)), in_sync=(("n1",), (child_primary,)), terms=(1, 1),
        split_epoch=3)


class _Host:
    def __init__(self, replicas, catalog):
        self.node_id = "n1"
        self.replicas = replicas
        self._catalog = catalog

    async def replica(self, ref, role):
        return self._catalog.state.datasets["u1"], self.replicas[("u1", ref.shard)]

    async def replica_unfenced(self, dataset_uuid, shard):
        return self.replicas.get((dataset_uuid, shard))


class _Replication:
    """Records what each shard logged."""

    def __init__(self):
        self.logged: list[tuple[int, str]] = []

    def write_lock(self, dataset_uuid, shard):
        return _nolock()

    async def ensure_resynced(self, record, shard):
        return None

    async def replicate(self, record, shard, ops):
        return None

    async def log_ops(self, record, shard, ops):
        self.logged.extend((shard, op.WhichOneof("op")) for op in ops)

    async def send_to_in_sync(self, record, shard, ops):
        return None

    async def decided_in_store(self, dataset_uuid, shard, txn_ids):
        return {}


@contextlib.asynccontextmanager
async def _nolock():
    yield


class _Meta:
    async def propose(self, command):
        return {"decision": command.decision}


def _prepare_request() -> node_pb2.PrepareRequest:
    # Planned on the old count (1 shard): one participant, the parent.
    return node_pb2.PrepareRequest(
        txn_id="t1", shard=node_pb2.ShardRef(dataset_uuid="u1", shard=0, epoch=2),
        upserts=[pb.Vector(id="a", values=[1.0, 2.0, 3.0, 4.0]),
                 pb.Vector(id="b", values=[4.0, 3.0, 2.0, 1.0])],
        participants=["u1/0", "u1/9"])


@pytest.fixture
def node(tmp_path):
    replicas = {("u1", s): ShardReplica(str(tmp_path / f"s{s}"), 4, "l2") for s in (0, 1)}
    state = SimpleNamespace(datasets={"u1": _record()}, txns={}, txn_tombstones={})

    async def refresh(**_):
        return state
    catalog = SimpleNamespace(state=state, refresh=refresh)
    replication = _Replication()
    participant = Participant(_Host(replicas, catalog), meta=_Meta(), catalog=catalog,
                              replication=replication)
    yield participant, replicas, replication, state
    for replica in replicas.values():
        replica.close()


async def _prepared_on_parent_and_child(participant: Participant) -> None:
    request = _prepare_request()
    await participant.prepare(request)
    # The child mirrored the parent's prepare op before the switch: it holds the same plan.
    records = records_from_protos(request.upserts, 4, "l2", request.upsert_values)
    staged = _staged_txn(request, records, [], node_pb2.PrepareResponse(inserted=2))
    await participant.adopt("u1", 1, staged)
    assert set(participant.prepared) == {("t1", "u1/0"), ("t1", "u1/1")}


PARENT = node_pb2.ShardRef(dataset_uuid="u1", shard=0, epoch=3)


@pytest.mark.parametrize("decision", [pm.ABORT, pm.COMMIT])
def test_the_coordinators_decision_on_the_parent_finishes_the_childs_copy_at_once(node,
                                                                                   decision):
    participant, replicas, replication, _ = node

    async def scenario():
        await _prepared_on_parent_and_child(participant)
        replication.logged.clear()
        decide = participant.commit if decision == pm.COMMIT else participant.abort
        return await decide("t1", PARENT)

    assert asyncio.run(scenario()) is True
    # Nothing is left locked: a retry of the batch on the new count prepares at once.
    assert participant.prepared == {} and participant.locked_ids() == 0
    # The child logged the decision in its own log, as its primary does for any decision.
    assert replication.logged == [(0, "finish"), (1, "finish")]
    finished = pm.COMMITTED if decision == pm.COMMIT else pm.ABORTED
    assert participant.states["u1/1"].txns["t1"] == finished
    for shard in (0, 1):
        expected = ["a", "b"] if decision == pm.COMMIT else []
        assert sorted(replicas[("u1", shard)].existing_ids(["a", "b"])) == expected


def test_a_child_whose_primary_is_another_node_is_left_to_that_node(node):
    participant, _, replication, state = node
    state.datasets["u1"] = _record(child_primary="n2")

    async def scenario():
        await _prepared_on_parent_and_child(participant)
        replication.logged.clear()
        await participant.abort("t1", PARENT)

    asyncio.run(scenario())
    # This node's copy of the child takes the decision from its own primary's log.
    assert list(participant.prepared) == [("t1", "u1/1")]
    assert replication.logged == [(0, "finish")]


def test_a_txn_naming_both_shards_is_not_finished_twice_by_one_decision(node):
    # Two shards of one txn on one node each get the coordinator's decision themselves: the
    # decision on one must not wait for the other's.
    participant, _, replication, _ = node
    request = _prepare_request()
    request.participants[:] = ["u1/0", "u1/1"]
    second = node_pb2.PrepareRequest()
    second.CopyFrom(request)
    second.shard.shard = 1
    del second.upserts[0]
    del request.upserts[1]

    async def scenario():
        await participant.prepare(request)
        await participant.prepare(second)
        replication.logged.clear()
        await participant.commit("t1", PARENT)

    asyncio.run(scenario())
    assert list(participant.prepared) == [("t1", "u1/1")]
    assert replication.logged == [(0, "finish")]
