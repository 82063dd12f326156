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


class ParentLog:
    """The parent copy's op log: the ops it holds, by sequence number."""

    def __init__(self, ops=()):
        self.ops = {op.seq: op for op in ops}

    def read_from(self, seq, ops_max, bytes_max):
        from node.oplog import LoggedOp
        held = [self.ops[s] for s in sorted(self.ops) if s >= seq][:ops_max]
        return [LoggedOp(op.seq, op.term, op.SerializeToString()) for op in held]


class Replication:
    """Only what Splitter.mirror touches: the apply lock, the op logs (child 2, parent 0) and
    the child's apply."""

    def __init__(self, last_seq: int, parent_ops=()):
        self.log = ChildLog(last_seq)
        self.parent_log = ParentLog(parent_ops)
        self.applied: list[int] = []

    @contextlib.asynccontextmanager
    async def _apply_lock(self, key):
        yield

    def oplog(self, uuid, shard):
        return self.log if shard == 2 else self.parent_log

    async def _apply_one(self, record, shard, op):
        self.applied.append(op.seq)
        self.log.last_seq = op.seq


def switched_splitter(child_last_seq: int = 10, parent_ops=()) -> Splitter:
    """Dataset d split from 2 to 4 shards at epoch 5; this node holds child 2 of parent 0."""
    record = SimpleNamespace(uuid="d", split_epoch=5, epoch=5, shard_count=4)
    state = SimpleNamespace(datasets={"d": record}, reshards={})
    host = SimpleNamespace(catalog=SimpleNamespace(state=state))
    splitter = Splitter(host, replication=Replication(child_last_seq, parent_ops), meta=None)
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


def test_a_child_that_missed_a_parent_op_takes_it_from_the_parent_log_instead_of_breaking():
    # Op 11's apply failed on the parent copy and was applied again before op 12, which alone
    # was mirrored: the child takes 11 from the parent's log, then 12.
    splitter = switched_splitter(parent_ops=[op(11, epoch=4), op(12, epoch=4)])
    assert mirror(splitter, [op(12, epoch=4)], era_epoch=None) == [11, 12]
    assert splitter._broken == set()


def test_a_gap_the_parent_log_cannot_fill_with_the_childs_history_breaks_the_mirror():
    splitter = switched_splitter(parent_ops=[op(11, epoch=5), op(12, epoch=4)])
    assert mirror(splitter, [op(12, epoch=4)], era_epoch=None) == []
    assert splitter._broken == {("d", 0)}


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


class Meta:
    def __init__(self, refuse: bool):
        self.refuse, self.proposed = refuse, []

    async def propose(self, command):
        from tributary import errors
        self.proposed.append(command)
        if self.refuse:
            raise errors.InvalidArgument("no reshard of this dataset is in progress")
        return {"changed": True}


def building_splitter(tmp_path, refuse: bool) -> Splitter:
    splitter = switched_splitter()
    splitter.meta = Meta(refuse)
    splitter.host.node_id = "n1"
    splitter.host.replicas = {}
    splitter.host.shard_path = lambda uuid, shard: str(tmp_path / uuid / str(shard))
    splitter.replication.forget = lambda uuid, shard: None
    splitter.replication.participant = None
    (tmp_path / "d" / "2").mkdir(parents=True)
    return splitter


def test_a_broken_child_is_dropped_only_once_the_meta_group_took_back_its_ready_report(
        tmp_path):
    splitter = building_splitter(tmp_path, refuse=False)
    assert asyncio.run(splitter._drop_reported("d", 0))
    assert splitter.meta.proposed[0].ready is False
    assert ("d", 0) not in splitter.children and not (tmp_path / "d" / "2").exists()


def test_a_broken_child_the_switch_already_counted_on_is_kept(tmp_path):
    # The switch came first: the child is a shard now (this node may be its primary), so its
    # files must not go, or the node would serve it empty.
    splitter = building_splitter(tmp_path, refuse=True)
    assert not asyncio.run(splitter._drop_reported("d", 0))
    assert splitter.children[("d", 0)] == 2 and (tmp_path / "d" / "2").exists()
    assert ("d", 0) in splitter._broken
