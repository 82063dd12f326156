"""A copy's op, once its log append has begun, is applied even when the call that carried it
is cancelled (node/replication.py `run_to_the_end`).

Found by chaos (reshard, seed 127): a copy paused past its primary's Replicate deadline ran the
late request when it resumed, and grpc cancelled it, as it cancels a call whose deadline has
passed, while the op log append was in its worker thread. A thread cannot be cancelled: the 2PC
prepare op was logged, but never staged. The catch-up that followed sent only the ops after it,
the decision among them, and the copy committed a batch it held no plan for: the batch's rows
were missing on that copy alone, which answered reads without them.

The op log is real; the host and the participant stand in for the node."""

from __future__ import annotations

import asyncio
import os
import threading
import types

import pytest

from node.oplog import OpLog
from node.replication import Replication, run_to_the_end
from proto import node_pb2

from consensus.records import DatasetRecord

UUID = "00000000-0000-0000-0000-000000000001"
SHARD = 0


def shard_record() -> DatasetRecord:
    """A one-shard dataset whose primary is node-0 in term 2; this node (node-1) is a copy."""
    return DatasetRecord(uuid=UUID, tenant_id="t", name="d", description="", dimensions=4,
                         metric_type="cosine", index_type="hnsw", metadata={},
                         placement=("node-0",), epoch=3, created_at_ms=0, updated_at_ms=0,
                         replication_factor=2, copies=(("node-0", "node-1"),),
                         in_sync=(("node-0",),), terms=(2,))


class FakeHost:
    def __init__(self, root: str):
        self.root = root
        self.replicas: dict = {}
        self.node_id = "node-1"
        self.catalog = types.SimpleNamespace(state=types.SimpleNamespace(
            datasets={UUID: shard_record()}))

    def shard_path(self, dataset_uuid: str, shard: int) -> str:
        return os.path.join(self.root, "shards", dataset_uuid, str(shard))

    async def replica_unfenced(self, dataset_uuid: str, shard: int):
        return object()


class Participant:
    def __init__(self):
        self.adopted: list[str] = []
        self.finished: list[tuple[str, str]] = []

    async def adopt(self, dataset_uuid, shard, staged):
        self.adopted.append(staged.request.txn_id)

    async def finish_replicated(self, dataset_uuid, shard, txn_id, decision, now_ms=None,
                                position=None):
        self.finished.append((txn_id, decision))


def prepare(seq: int) -> node_pb2.ReplicatedOp:
    return node_pb2.ReplicatedOp(seq=seq, term=2, prepare=node_pb2.StagedTxn(
        request=node_pb2.PrepareRequest(txn_id="t1")))


def finish(seq: int) -> node_pb2.ReplicatedOp:
    return node_pb2.ReplicatedOp(seq=seq, term=2, finish=node_pb2.TxnFinish(
        txn_id="t1", decision="commit"))


def test_a_replicate_cancelled_during_its_log_append_still_stages_the_op(tmp_path,
                                                                          monkeypatch):
    host = FakeHost(str(tmp_path))
    replication = Replication(host, meta=None, token=None)
    replication.participant = Participant()
    record = shard_record()
    appending, release = threading.Event(), threading.Event()
    append = OpLog.append

    def slow_append(self, ops):
        # The fsync that a resumed, paused node takes its time over.
        appending.set()
        release.wait(10)
        append(self, ops)

    monkeypatch.setattr(OpLog, "append", slow_append)

    async def scenario():
        call = asyncio.ensure_future(replication.on_replicate(
            record, SHARD, node_pb2.ReplicateRequest(
                shard=node_pb2.ShardRef(dataset_uuid=UUID, shard=SHARD, epoch=3), term=2,
                ops=[prepare(1)])))
        await asyncio.to_thread(appending.wait, 10)
        call.cancel()                       # grpc: the call's deadline has passed
        await asyncio.sleep(0.05)
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await call
        monkeypatch.setattr(OpLog, "append", append)
        # The catch-up that follows sends what the copy lacks after its last op.
        await replication.apply_ops(record, SHARD, [finish(2)])

    asyncio.run(scenario())
    assert replication.participant.adopted == ["t1"]
    assert replication.participant.finished == [("t1", "commit")]
    assert replication.oplog(UUID, SHARD).last_seq == 2


def test_run_to_the_end_finishes_the_work_then_raises_the_cancellation():
    steps: list[str] = []

    async def work():
        steps.append("logged")
        await asyncio.sleep(0.05)
        steps.append("applied")
        return 7

    async def scenario():
        call = asyncio.ensure_future(run_to_the_end(work()))
        await asyncio.sleep(0.01)
        call.cancel()
        await asyncio.sleep(0)
        call.cancel()                       # cancelled twice: still one end
        with pytest.raises(asyncio.CancelledError):
            await call
        assert steps == ["logged", "applied"]
        assert await run_to_the_end(work()) == 7

    asyncio.run(scenario())


def test_run_to_the_end_raises_the_works_own_error():
    async def work():
        raise ValueError("op log expects seq 3")

    with pytest.raises(ValueError):
        asyncio.run(run_to_the_end(work()))
