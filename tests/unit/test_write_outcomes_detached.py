"""node/replication.py remember_outcome: the outcome kept for a router write id is a message of
its own, not a view into the replicated op. A view kept the op's whole protobuf arena (every
vector of the write) alive for as long as the outcome was remembered: ~70 MB of a node holding
100k rows right after a load, found with memray."""

from __future__ import annotations

import gc
import types
from collections import OrderedDict

from node.replication import Replication
from proto import deeplake_service_pb2 as pb
from proto import node_pb2


def _op(write_id: str, rows: int, dims: int = 128) -> node_pb2.ReplicatedOp:
    op = node_pb2.ReplicatedOp()
    op.write.write_id = write_id
    op.write.upserts.extend(pb.Vector(id=str(i)) for i in range(rows))
    op.write.upsert_values = bytes(rows * dims * 4)
    op.outcome.inserted = rows
    return op


def _replication() -> types.SimpleNamespace:
    return types.SimpleNamespace(_outcomes={})


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) / 1024


def test_the_remembered_outcome_is_a_copy_not_a_view_into_the_op():
    owner = _replication()
    op = _op("w-1", 10)
    Replication.remember_outcome(owner, ("ds", 0), op)
    op.outcome.inserted = 99            # a view would change with the op
    kept = Replication.outcome_of(owner, "ds", 0, "w-1")
    assert kept.inserted == 10
    assert isinstance(owner._outcomes[("ds", 0)], OrderedDict)


def test_remembering_outcomes_does_not_keep_the_ops_vectors():
    owner = _replication()
    gc.collect()
    before = _rss_mb()
    for i in range(24):                 # 24 ops of 8 MB of vectors each: ~190 MB if kept
        op = node_pb2.ReplicatedOp.FromString(_op(f"w-{i}", 16_384).SerializeToString())
        Replication.remember_outcome(owner, ("ds", 0), op)
        del op
    gc.collect()
    grown = _rss_mb() - before
    assert len(owner._outcomes[("ds", 0)]) == 24
    assert grown < 64, f"{grown:.0f} MB still held after the ops were dropped"
