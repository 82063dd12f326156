"""The participant's per-copy state (consensus/txn_model.py, driven by node/txn.py) follows the
copy's life on the node: a copy dropped and built again starts from nothing, a split's child
that the catalog does not hold yet is a copy, and an acknowledgement a crash lost is given
again. Real ShardReplica stores; only the node's host, catalog, meta client and the other
nodes are stand-ins."""

from __future__ import annotations

import asyncio
import contextlib
import os
from types import SimpleNamespace

from consensus import txn_model as pm
from consensus.records import DatasetRecord
from node.convert import records_from_protos
from node.replication import Replication
from node.txn import Participant, _staged_txn
from proto import deeplake_service_pb2 as pb, node_pb2
from shard.replica import ShardReplica


def _record(primary: str, copy: str) -> DatasetRecord:
    return DatasetRecord(
        uuid="u1", tenant_id="t1", name="docs", description="", dimensions=4,
        metric_type="l2", index_type="hnsw", metadata={}, placement=(primary,), epoch=1,
        created_at_ms=1, updated_at_ms=1, replication_factor=2, copies=((primary, copy),),
        in_sync=((primary, copy),), terms=(1,))


class _Host:
    """The node's replicas by (dataset, shard), each in <root>/<dataset>/<shard>."""

    def __init__(self, root, catalog):
        self.node_id = "n1"
        self.root = root
        self.replicas: dict[tuple[str, int], ShardReplica] = {}
        self.catalog = catalog

    def shard_path(self, dataset_uuid, shard):
        return os.path.join(self.root, dataset_uuid, str(shard))

    async def replica(self, ref, role="read"):
        return (self.catalog.state.datasets[ref.dataset_uuid],
                await self.replica_unfenced(ref.dataset_uuid, ref.shard))

    async def replica_unfenced(self, dataset_uuid, shard):
        key = (dataset_uuid, shard)
        if key not in self.replicas:
            self.replicas[key] = ShardReplica(self.shard_path(dataset_uuid, shard), 4, "l2")
        return self.replicas[key]

    def close(self):
        for replica in self.replicas.values():
            replica.close()


class _Peers:
    """The replication driver's view of the other nodes: what it logged and sent."""

    def __init__(self):
        self.sent: list[str] = []

    @contextlib.asynccontextmanager
    async def _lock(self):
        yield

    def write_lock(self, dataset_uuid, shard):
        return self._lock()

    async def ensure_resynced(self, record, shard):
        return None

    async def replicate(self, record, shard, ops):
        self.sent.extend(op.WhichOneof("op") for op in ops)

    async def log_ops(self, record, shard, ops):
        return None

    async def send_to_in_sync(self, record, shard, ops):
        self.sent.extend(op.WhichOneof("op") for op in ops)


class _Meta:
    def __init__(self):
        self.proposed = []

    async def propose(self, command):
        self.proposed.append(command)
        return {"decision": getattr(command, "decision", None)}


def _node(tmp_path, primary="n2", copy="n1", decisions=None, replication=None):
    state = SimpleNamespace(datasets={"u1": _record(primary, copy)}, txns=decisions or {},
                            txn_tombstones={}, reshard=None)

    async def refresh(**_):
        return state
    catalog = SimpleNamespace(state=state, refresh=refresh)
    host = _Host(str(tmp_path / "shards"), catalog)
    participant = Participant(host, meta=_Meta(), catalog=catalog,
                              replication=replication or _Peers())
    return participant, host


def _plan(txn="t1", vector_id="b", shard=0) -> node_pb2.StagedTxn:
    """A primary's plan for `txn` (upsert of `vector_id`), as a replicated prepare op carries
    it."""
    request = node_pb2.PrepareRequest(
        txn_id=txn, shard=node_pb2.ShardRef(dataset_uuid="u1", shard=shard, epoch=1),
        upserts=[pb.Vector(id=vector_id, values=[1.0, 2.0, 3.0, 4.0])],
        participants=[f"u1/{shard}", "u1/9"])
    records = records_from_protos(request.upserts, 4, "l2", request.upsert_values)
    return _staged_txn(request, records, [], node_pb2.PrepareResponse(inserted=1))


def test_a_copy_dropped_and_built_again_on_the_same_node_applies_a_txn_it_saw_commit_before(
        tmp_path):
    # The copy of shard 0 on n1 applied t1, then moved away (its files removed), then moved
    # back: the new copy catches up from its primary's log, t1's prepare and commit included,
    # and must hold t1's rows although this node remembers having finished t1.
    participant, host = _node(tmp_path)
    replication = Replication(host, participant.meta, None)
    participant.replication = replication
    replication.participant = participant

    async def scenario():
        await participant.adopt("u1", 0, _plan())
        await participant.finish_replicated("u1", 0, "t1", pm.COMMIT, now_ms=5)
        assert host.replicas[("u1", 0)].existing_ids(["b"]) == ["b"]
        await replication.start_over("u1", 0)      # the catalog placed the copy elsewhere
        assert not os.path.exists(host.shard_path("u1", 0))
        # Placed here again: an empty copy replays the primary's log.
        await participant.adopt("u1", 0, _plan())
        await participant.finish_replicated("u1", 0, "t1", pm.COMMIT, now_ms=5)
        return host.replicas[("u1", 0)].existing_ids(["b"])

    try:
        assert asyncio.run(scenario()) == ["b"]
        assert participant.prepared == {} and participant.locked_ids() == 0
    finally:
        host.close()


def test_a_copy_dropped_with_a_plan_held_lets_go_of_its_locks(tmp_path):
    participant, host = _node(tmp_path)
    replication = Replication(host, participant.meta, None)
    participant.replication = replication
    replication.participant = participant

    async def scenario():
        await participant.adopt("u1", 0, _plan())
        assert participant.locked_ids() == 1
        await replication.start_over("u1", 0)

    try:
        asyncio.run(scenario())
        assert participant.prepared == {} and participant.locked_ids() == 0
        assert participant.states.get("u1/0") is None
    finally:
        host.close()


def test_a_split_child_s_mirrored_txn_that_times_out_is_resolved_as_a_copy_s(tmp_path):
    # Shard 1 is the child of shard 0 in a split from 1 to 2 shards: the catalog does not hold
    # it until the switch, but it mirrors its parent's plans. Its parent's primary is elsewhere
    # (n2); the group recorded no decision, so the child's copy proposes abort and drops the
    # plan as a copy does (the abort changes no row).
    participant, host = _node(tmp_path, primary="n2", copy="n1")

    async def scenario():
        await participant.adopt("u1", 1, _plan(shard=1))
        assert not participant._own_prepared()        # a copy's plan: its primary decides
        participant.prepared[("t1", "u1/1")].staged.prepared_at_ms = 0   # long past due
        await participant.resolve_due()

    try:
        asyncio.run(scenario())
        assert [cmd.decision for cmd in participant.meta.proposed] == [pm.ABORT]
        assert participant.prepared == {} and participant.locked_ids() == 0
    finally:
        host.close()


def test_a_split_child_s_txn_the_group_committed_waits_for_its_parent_s_logged_commit(tmp_path):
    participant, host = _node(tmp_path, primary="n1", copy="n2",
                              decisions={"t1": SimpleNamespace(decision=pm.COMMIT)})

    async def scenario():
        await participant.adopt("u1", 1, _plan(shard=1))
        participant.prepared[("t1", "u1/1")].staged.prepared_at_ms = 0
        await participant.resolve_due(force=True)
        # n1 is the parent's primary, not the child's: the child applies only what the
        # parent logs, mirrored to it.
        assert list(participant.prepared) == [("t1", "u1/1")]
        await participant.finish_replicated("u1", 1, "t1", pm.COMMIT, now_ms=5)
        return host.replicas[("u1", 1)].existing_ids(["b"])

    try:
        assert asyncio.run(scenario()) == ["b"]
        assert participant.meta.proposed == [] and participant.locked_ids() == 0
    finally:
        host.close()


# ---- a lost acknowledgement ---------------------------------------------------------------------

def test_a_primary_told_a_commit_it_no_longer_holds_confirms_it_and_a_copy_does_not():
    # The group records COMMIT only after every primary voted yes with its plan durable here
    # and on its in-sync copies; a plan goes only after its rows are committed. A primary
    # that holds none has applied it (and a restart forgot it did, with the ack).
    empty = pm.ParticipantState("u1/0")
    for role in (pm.PRIMARY, pm.ALONE):
        state, actions = pm.step(empty, pm.Decision("t1", pm.COMMIT, pm.META, role, False))
        assert actions == [pm.Ack("t1")] and state == empty
        _, actions = pm.step(empty, pm.Decision("t1", pm.COMMIT, pm.COORDINATOR, role))
        assert actions == [pm.Ack("t1"), pm.Answer("t1", False)]
    # A copy may not have caught up to the plan yet, and a logged decision is a copy's too.
    assert pm.step(empty, pm.Decision("t1", pm.COMMIT, pm.META, pm.COPY, False))[1] == []
    assert pm.step(empty, pm.Decision("t1", pm.COMMIT, pm.LOG, pm.ALONE))[1] == []


def test_the_simulation_finds_a_lost_ack_unless_primaries_confirm_commits_they_forgot(
        monkeypatch):
    from router import txn_sim
    real_step = pm.step

    def forgets_unknown_commits(state, event):
        if isinstance(event, pm.Decision) and event.decision == pm.COMMIT and \
                event.txn_id not in state.txns:
            return state, [a for a in real_step(state, event)[1] if not isinstance(a, pm.Ack)]
        return real_step(state, event)

    # Eight seeds: with group commit modelled (rows reach the store later), a forgotten ack
    # shows in about half of them at 4,000 steps.
    found = [v for seed in range(8) for v in txn_sim.run(seed, 4_000).violations]
    assert found == []
    monkeypatch.setattr(pm, "step", forgets_unknown_commits)
    found = [v for seed in range(8) for v in txn_sim.run(seed, 4_000).violations]
    assert any("as not applied by" in v for v in found), found[:5]


def test_a_restarted_primary_confirms_the_commit_whose_ack_its_crash_lost(tmp_path):
    # n1, the primary of shard 0, applied t1's commit and died before its batched ack went
    # out; the group lists t1 as unapplied by u1/0. After the restart n1 holds nothing of t1.
    decided = SimpleNamespace(decision=pm.COMMIT, participants=("u1/0", "u1/1"), acked=("u1/1",),
                              decided_at_ms=0)
    participant, host = _node(tmp_path, primary="n1", copy="n2", decisions={"t1": decided})

    async def scenario():
        request = node_pb2.PrepareRequest(
            txn_id="t1", shard=node_pb2.ShardRef(dataset_uuid="u1", shard=0, epoch=1),
            upserts=[pb.Vector(id="b", values=[1.0, 2.0, 3.0, 4.0])],
            participants=["u1/0", "u1/1"])
        await participant.prepare(request)
        assert await participant.commit("t1", request.shard) is True
        assert participant._pending_acks == [("t1", "u1/0")]
        restarted = Participant(host, participant.meta, participant.catalog,
                                participant.replication)
        assert await restarted.load_staged() == 0
        given = await restarted.resend_unacked()
        return restarted, given

    try:
        restarted, given = asyncio.run(scenario())
        assert given == 1 and restarted._pending_acks == [("t1", "u1/0")]
        assert host.replicas[("u1", 0)].existing_ids(["b"]) == ["b"]
    finally:
        host.close()


def test_a_copy_is_not_given_an_unacknowledged_decision_and_a_young_one_waits(tmp_path):
    from tributary import limits
    old = SimpleNamespace(decision=pm.COMMIT, participants=("u1/0",), acked=(),
                          decided_at_ms=0)
    young = SimpleNamespace(decision=pm.COMMIT, participants=("u1/0",), acked=(),
                            decided_at_ms=10 ** 13)
    participant, host = _node(tmp_path, primary="n2", copy="n1",
                              decisions={"t1": old, "t2": young})

    async def scenario():
        await host.replica_unfenced("u1", 0)
        as_copy = await participant.resend_unacked()
        participant.catalog.state.datasets["u1"] = _record("n1", "n2")
        as_primary = await participant.resend_unacked()
        return as_copy, as_primary

    try:
        assert limits.txn_unacked_resend_after_ms > 0
        assert asyncio.run(scenario()) == (0, 1)
        assert participant._pending_acks == [("t1", "u1/0")]
    finally:
        host.close()
