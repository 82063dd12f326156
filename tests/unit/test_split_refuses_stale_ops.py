"""A primary refuses to log an op planned on the shard count before a split's switch
(node/split.py Splitter.refuse_stale): such an op may carry rows of the child, which writes on
its own log once sealed, so mirroring it would find the child's own op at its sequence number
and drop it as a duplicate, and the purge would then delete an acknowledged row."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from node.split import Splitter
from proto import node_pb2
from tributary import errors


def splitter(split_epoch: int, epoch: int) -> Splitter:
    current = SimpleNamespace(uuid="d", split_epoch=split_epoch, epoch=epoch, shard_count=2)
    host = SimpleNamespace(catalog=SimpleNamespace(state=SimpleNamespace(datasets={"d": current})))
    return Splitter(host, replication=None, meta=None)


def prepare(epoch: int) -> node_pb2.ReplicatedOp:
    request = node_pb2.PrepareRequest(txn_id="t", shard=node_pb2.ShardRef(dataset_uuid="d",
                                                                         shard=0, epoch=epoch))
    return node_pb2.ReplicatedOp(prepare=node_pb2.StagedTxn(request=request))


FRESH = SimpleNamespace(uuid="d", epoch=3)   # a record read under the write lock, after the switch


def test_a_prepare_planned_before_the_switch_is_refused_although_logged_under_a_fresh_record():
    with pytest.raises(errors.StaleEpoch, match="older than the split"):
        splitter(split_epoch=3, epoch=3).refuse_stale(FRESH, 0, [prepare(epoch=2)])


def test_a_write_admitted_under_the_old_epoch_is_refused():
    write = node_pb2.ReplicatedOp(write=node_pb2.WriteRequest(delete_ids=["x"]))
    with pytest.raises(errors.StaleEpoch):
        splitter(split_epoch=3, epoch=3).refuse_stale(SimpleNamespace(uuid="d", epoch=2), 0,
                                                      [write])


def test_decisions_and_ops_planned_after_the_switch_pass():
    s = splitter(split_epoch=3, epoch=4)
    finish = node_pb2.ReplicatedOp(finish=node_pb2.TxnFinish(txn_id="t", decision="commit"))
    s.refuse_stale(SimpleNamespace(uuid="d", epoch=2), 0, [finish])
    s.refuse_stale(FRESH, 0, [prepare(epoch=3)])
    s.refuse_stale(FRESH, 0, [node_pb2.ReplicatedOp(write=node_pb2.WriteRequest())])


def test_a_dataset_never_split_refuses_nothing():
    splitter(split_epoch=0, epoch=5).refuse_stale(SimpleNamespace(uuid="d", epoch=1), 0,
                                                  [prepare(epoch=1)])


def test_a_row_planned_on_the_old_count_but_stamped_with_the_new_epoch_is_refused():
    from consensus.placement import stable_hash
    vid = next(f"v{i}" for i in range(100) if stable_hash(f"v{i}") % 4 == 2)
    assert stable_hash(vid) % 2 == 0      # shard 0 under 2 shards, shard 2 under 4
    s = splitter(split_epoch=3, epoch=4)
    s.host.catalog.state.datasets["d"].shard_count = 4
    write = node_pb2.ReplicatedOp(write=node_pb2.WriteRequest(
        upserts=[node_pb2.WriteRequest().upserts.add(id=vid)]))
    with pytest.raises(errors.StaleEpoch, match="belongs to shard 2 of 4"):
        s.refuse_stale(FRESH, 0, [write])
    s.refuse_stale(FRESH, 2, [write])      # its own shard takes it
    # The purge's deletes of moved rows are not refused.
    s.refuse_stale(FRESH, 0, [node_pb2.ReplicatedOp(write=node_pb2.WriteRequest(
        delete_ids=[vid]))])
