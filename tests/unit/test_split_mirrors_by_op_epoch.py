"""A split's child mirrors a parent op by the epoch the op carries (stamped by the primary
that logged it: node/replication.py log_ops), not by the path the op took to the parent copy
(node/split.py Splitter.mirror). Before, a copy that got an old-count op by catch-up or by a
new primary's take-over after the switch did not mirror it, while the copy that got it
replicated did: the child's copies diverged, and if the one without the op became the child's
primary, the purge deleted the parent's row, an acknowledged write lost."""
from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace

from node.split import Splitter
from proto import node_pb2


class ChildLog:
    def __init__(self, last_seq: int):
        self.last_seq = last_seq


class Replication:
    """Only what Splitter.mirror touches: the child's apply lock, op log and apply."""

    def __init__(self, last_seq: int):
        self.log = ChildLog(last_seq)
        self.applied: list[int] = []

    @contextlib.asynccontextmanager
    async def _apply_lock(self, key):
        yield

    def oplog(self, uuid, shard):
        return self.log

    async def _apply_one(self, record, shard, op):
        self.applied.append(op.seq)
        self.log.last_seq = op.seq


def switched_splitter(child_last_seq: int = 10) -> Splitter:
    """Dataset d split from 2 to 4 shards at epoch 5; this node holds child 2 of parent 0."""
    record = SimpleNamespace(uuid="d", split_epoch=5, epoch=5, shard_count=4)
    state = SimpleNamespace(datasets={"d": record}, reshards={})
    host = SimpleNamespace(catalog=SimpleNamespace(state=state))
    splitter = Splitter(host, replication=Replication(child_last_seq), meta=None)
    splitter.children[("d", 0)] = 2
    return splitter


def op(seq: int, epoch: int) -> node_pb2.ReplicatedOp:
    return node_pb2.ReplicatedOp(seq=seq, term=1, epoch=epoch,
                                 write=node_pb2.WriteRequest(delete_ids=["x"]))


def mirror(splitter: Splitter, ops, era_epoch):
    record = splitter.host.catalog.state.datasets["d"]
    asyncio.run(splitter.mirror(record, 0, ops, era_epoch))
    return splitter.replication.applied


def test_an_old_count_op_caught_up_after_the_switch_is_mirrored_as_a_replicated_one_is():
    caught_up = mirror(switched_splitter(), [op(11, epoch=4)], era_epoch=None)
    replicated = mirror(switched_splitter(), [op(11, epoch=4)], era_epoch=4)
    assert caught_up == replicated == [11]


def test_an_op_logged_under_the_switch_epoch_is_not_mirrored_whatever_the_request_said():
    # A replicate request may carry an older epoch than the op's (the sender's ref); the op's
    # own epoch decides.
    assert mirror(switched_splitter(), [op(11, epoch=5)], era_epoch=4) == []
    assert mirror(switched_splitter(), [op(11, epoch=6)], era_epoch=None) == []


def test_ops_logged_before_ops_carried_an_epoch_fall_back_to_the_path():
    assert mirror(switched_splitter(), [op(11, epoch=0)], era_epoch=4) == [11]
    assert mirror(switched_splitter(), [op(11, epoch=0)], era_epoch=None) == []


def test_a_take_over_batch_mirrors_exactly_its_old_count_prefix():
    ops = [op(11, epoch=4), op(12, epoch=4), op(13, epoch=5)]
    assert mirror(switched_splitter(), ops, era_epoch=None) == [11, 12]


def test_a_listing_of_a_split_copy_not_yet_purged_shows_only_its_own_rows():
    from consensus.placement import stable_hash
    from node.split import hide_foreign_rows, only_owned, show_all_rows

    class Replica:
        def count(self):
            return 0
    rows = [SimpleNamespace(id=f"v{i}") for i in range(40)]
    catalog = SimpleNamespace(state=SimpleNamespace(datasets={"d": SimpleNamespace(
        split_epoch=5, shard_count=4)}))
    replica = Replica()
    assert only_owned(replica, rows, catalog) == rows      # not hiding: everything
    hide_foreign_rows(replica, "d", 0, catalog)
    listed = only_owned(replica, rows, catalog)
    assert listed and all(stable_hash(r.id) % 4 == 0 for r in listed)
    assert len(listed) < len(rows)
    show_all_rows(replica)
    assert only_owned(replica, rows, catalog) == rows
