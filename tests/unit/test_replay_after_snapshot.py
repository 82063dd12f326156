"""A copy restarted after it installed a snapshot replays every op its log holds, not the
last one only (node/replication.py `Replication.reapply_tails`).

Found by chaos (reshard, seed 127, 1 run in 9): a copy installed its primary's snapshot at op
24, whose store had recorded op 23 (op 24 was a prepare, which changes no row). Its log was reset
to start after op 24. It then took ops 25-30, the decisions of four batches among them, applied
their rows (group committed: in memory until the next store commit), and was killed. At its
restart the log did not hold the store's position (op 23 is below the log's base), which was
taken for "another history": only op 30 was replayed, the batches of ops 25-29 were never
applied, and the copy stayed without their rows while it served in sync.

The op log is real; the host and the store are stand-ins."""

from __future__ import annotations

import asyncio
import os
import types

from node.oplog import LoggedOp
from node.replication import Replication
from proto import node_pb2

UUID = "00000000-0000-0000-0000-000000000001"
SHARD = 2


class Store:
    def __init__(self, durable):
        self.durable_position = durable


class Host:
    def __init__(self, root: str, durable):
        self.root = root
        self.node_id = "node-0"
        self.replicas = {(UUID, SHARD): Store(durable)}
        self.catalog = types.SimpleNamespace(state=types.SimpleNamespace(
            datasets={UUID: types.SimpleNamespace(uuid=UUID)}))

    def shard_path(self, dataset_uuid: str, shard: int) -> str:
        return os.path.join(self.root, dataset_uuid, str(shard))


def write(seq: int) -> node_pb2.ReplicatedOp:
    return node_pb2.ReplicatedOp(seq=seq, term=2, write=node_pb2.WriteRequest(
        delete_ids=[f"x{seq}"]))


def replayed_after(tmp_path, durable, reset_to=(24, 2), ops=range(25, 31)) -> list[int]:
    replication = Replication(Host(str(tmp_path), durable), meta=None, token=None)
    log = replication.oplog(UUID, SHARD)
    log.reset(*reset_to)
    log.append([LoggedOp(seq, 2, write(seq).SerializeToString()) for seq in ops])
    applied: list[int] = []

    async def apply(record, shard, op):
        applied.append(op.seq)

    replication._apply_to_store = apply
    asyncio.run(replication.reapply_tails())
    return applied


def test_a_copy_restarted_after_a_snapshot_replays_every_op_past_its_base(tmp_path):
    assert replayed_after(tmp_path, durable=(23, 2)) == [25, 26, 27, 28, 29, 30]


def test_a_store_at_the_snapshots_position_replays_what_follows(tmp_path):
    assert replayed_after(tmp_path, durable=(24, 2)) == [25, 26, 27, 28, 29, 30]


def test_a_store_of_another_history_still_gets_the_last_op_only(tmp_path):
    # The log holds the store's position with another term: not this history.
    assert replayed_after(tmp_path, durable=(26, 1)) == [30]
    # No recorded position at all.
    assert replayed_after(tmp_path / "none", durable=None) == [30]
