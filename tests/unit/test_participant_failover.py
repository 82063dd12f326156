"""A participant that stops being its shard's primary while a txn prepares votes no.

The fence check of Prepare (node/server.py dataset_for) and the replication of the staged plan
to the in-sync copies (node/txn.py _replicate) are separated by awaits: the lock wait and the
durable staging. A failover that lands in between used to make _replicate skip the copies
silently and vote yes; the coordinator then committed a txn the new primary had never staged,
and the rows were applied on no copy that serves (a chaos run lost one key of an acknowledged
batch this way). The participant runs here on a real ShardReplica; only its host, catalog and
replication driver are stand-ins, because the decision under test is the participant's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from types import SimpleNamespace

import pytest

from consensus.records import DatasetRecord
from node.txn import Participant
from proto import deeplake_service_pb2 as pb, node_pb2
from shard.replica import ShardReplica
from tributary import errors


def _record(primary: str, copy: str) -> DatasetRecord:
    return DatasetRecord(
        uuid="u1", tenant_id="t1", name="docs", description="", dimensions=4,
        metric_type="l2", index_type="hnsw", metadata={}, placement=(primary,), epoch=1,
        created_at_ms=1, updated_at_ms=1, replication_factor=2, copies=((primary, copy),),
        in_sync=((primary, copy),), terms=(1,))


class _Host:
    """Serves the replica; the catalog changes primary right after the fence check passed."""

    def __init__(self, replica: ShardReplica, catalog, fail_over: bool):
        self.node_id = "n1"
        self.replicas = {("u1", 0): replica}
        self._replica = replica
        self._catalog = catalog
        self._fail_over = fail_over

    async def replica(self, ref, role):
        record = self._catalog.state.datasets["u1"]
        assert record.primary_of(0) == self.node_id        # the fence check passes ...
        if self._fail_over:                                 # ... then the leader promotes n2
            self._catalog.state.datasets["u1"] = _record("n2", "n1")
        return record, self._replica

    async def replica_unfenced(self, dataset_uuid, shard):
        return self._replica


class _Replication:
    def __init__(self):
        self.sent: list[node_pb2.ReplicatedOp] = []

    @contextlib.asynccontextmanager
    async def _lock(self):
        yield

    def write_lock(self, dataset_uuid, shard):
        return self._lock()

    async def ensure_resynced(self, record, shard):
        return None

    async def replicate(self, record, shard, ops):
        self.sent.extend(ops)

    async def log_ops(self, record, shard, ops):
        self.sent.extend(ops)

    async def send_to_in_sync(self, record, shard, ops):
        return None


def _prepare_request() -> node_pb2.PrepareRequest:
    return node_pb2.PrepareRequest(
        txn_id="t1", shard=node_pb2.ShardRef(dataset_uuid="u1", shard=0, epoch=1),
        upserts=[pb.Vector(id="a", values=[1.0, 2.0, 3.0, 4.0])],
        participants=["u1/0", "u1/1"])


def _run(tmp_path, fail_over: bool):
    replica = ShardReplica(str(tmp_path / "s"), 4, "l2")
    catalog = SimpleNamespace(state=SimpleNamespace(datasets={"u1": _record("n1", "n2")}))
    replication = _Replication()
    participant = Participant(_Host(replica, catalog, fail_over), meta=None, catalog=catalog,
                              replication=replication)
    try:
        outcome = asyncio.run(participant.prepare(_prepare_request()))
    except errors.TributaryError as exc:
        outcome = exc
    staged_dir = os.path.join(replica.path, "txns")
    staged = sorted(os.listdir(staged_dir)) if os.path.isdir(staged_dir) else []
    replica.close()
    return outcome, participant, replication, staged


def test_a_participant_deposed_while_preparing_votes_no_and_keeps_nothing(tmp_path):
    outcome, participant, replication, staged = _run(tmp_path, fail_over=True)
    assert isinstance(outcome, errors.StaleEpoch)
    assert replication.sent == []           # nothing reached a log or a copy
    assert participant.prepared == {}       # nothing left to resolve here ...
    assert participant.locked_ids() == 0    # ... and no id stays locked
    assert staged == []                     # the staged plan file is gone


def test_a_participant_that_stays_primary_replicates_the_plan_then_votes_yes(tmp_path):
    outcome, participant, replication, staged = _run(tmp_path, fail_over=False)
    assert isinstance(outcome, node_pb2.PrepareResponse) and outcome.inserted == 1
    assert [op.WhichOneof("op") for op in replication.sent] == ["prepare"]
    assert list(participant.prepared) == [("t1", "u1/0")]
    assert staged == ["t1.bin"]
