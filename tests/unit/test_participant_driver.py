"""node/txn.py is the driver of the participant's step function (consensus/txn_model.py): it
performs the actions the step gives, in order, on a real ShardReplica. Only the node's host,
catalog, meta client and replication driver are stand-ins here."""

from __future__ import annotations

import asyncio
import contextlib
import os
from types import SimpleNamespace

from consensus import txn_model as pm
from consensus.records import DatasetRecord
from node.convert import records_from_protos
from node.txn import Participant, _staged_txn
from proto import deeplake_service_pb2 as pb, node_pb2
from shard.replica import ShardReplica


def _record(primary: str, copy: str) -> DatasetRecord:
    return DatasetRecord(
        uuid="u1", tenant_id="t1", name="docs", description="", dimensions=4,
        metric_type="l2", index_type="hnsw", metadata={}, placement=(primary,), epoch=1,
        created_at_ms=1, updated_at_ms=1, replication_factor=2, copies=((primary, copy),),
        in_sync=((primary, copy),), terms=(1,))


class _Journal:
    """What happened, in order, across the stand-ins and the replica."""

    def __init__(self):
        self.entries: list[str] = []


class _Replica(ShardReplica):
    journal: _Journal

    def write(self, *args, **kwargs):
        self.journal.entries.append("store write")
        return super().write(*args, **kwargs)


class _Host:
    def __init__(self, replica, catalog):
        self.node_id = "n1"
        self.replicas = {("u1", 0): replica}
        self._replica = replica
        self._catalog = catalog

    async def replica(self, ref, role):
        return self._catalog.state.datasets["u1"], self._replica

    async def replica_unfenced(self, dataset_uuid, shard):
        return self._replica


class _Replication:
    def __init__(self, journal: _Journal):
        self.journal = journal

    @contextlib.asynccontextmanager
    async def _lock(self):
        self.journal.entries.append("write lock")
        yield
        self.journal.entries.append("write unlock")

    def write_lock(self, dataset_uuid, shard):
        return self._lock()

    async def ensure_resynced(self, record, shard):
        return None

    async def replicate(self, record, shard, ops):
        self.journal.entries.extend(f"replicate {op.WhichOneof('op')}" for op in ops)

    async def log_ops(self, record, shard, ops):
        self.journal.entries.extend(f"log {op.WhichOneof('op')}" for op in ops)

    async def send_to_in_sync(self, record, shard, ops):
        self.journal.entries.extend(f"send {op.WhichOneof('op')}" for op in ops)

    async def decided_in_store(self, dataset_uuid, shard, txn_ids):
        return {}       # this stand-in's store never holds a logged decision


class _Meta:
    def __init__(self):
        self.proposed = []

    async def propose(self, command):
        self.proposed.append(command)
        return {"decision": command.decision}


def _node(tmp_path, primary="n1", copy="n2", decisions=None):
    journal = _Journal()
    replica = _Replica(str(tmp_path / "s"), 4, "l2")
    replica.journal = journal
    state = SimpleNamespace(datasets={"u1": _record(primary, copy)}, txns=decisions or {},
                            txn_tombstones={})

    async def refresh(**_):
        return state
    catalog = SimpleNamespace(state=state, refresh=refresh)
    participant = Participant(_Host(replica, catalog), meta=_Meta(), catalog=catalog,
                              replication=_Replication(journal))
    return participant, replica, journal


def _prepare(txn="t1", vector_id="a") -> node_pb2.PrepareRequest:
    return node_pb2.PrepareRequest(
        txn_id=txn, shard=node_pb2.ShardRef(dataset_uuid="u1", shard=0, epoch=1),
        upserts=[pb.Vector(id=vector_id, values=[1.0, 2.0, 3.0, 4.0])],
        participants=["u1/0", "u1/1"])


REF = node_pb2.ShardRef(dataset_uuid="u1", shard=0, epoch=1)


def _assert_logged_applied_and_sent(participant, replica, journal) -> None:
    """The primary's commit of t1, whole: logged under the write lock, its row written, the
    decision sent, and nothing of the txn left held."""
    assert journal.entries == ["write lock", "log finish", "store write", "send finish",
                               "write unlock"]
    assert replica.existing_ids(["a"]) == ["a"]
    assert participant.prepared == {} and participant.locked_ids() == 0
    assert participant.states["u1/0"].txns["t1"] == pm.COMMITTED


def test_a_primary_logs_a_commit_under_the_write_lock_before_writing_its_rows(tmp_path):
    participant, replica, journal = _node(tmp_path)

    async def scenario():
        await participant.prepare(_prepare())
        journal.entries.clear()
        return await participant.commit("t1", REF)

    try:
        assert asyncio.run(scenario()) is True
        _assert_logged_applied_and_sent(participant, replica, journal)
    finally:
        replica.close()


def test_a_commit_cancelled_during_its_log_append_is_still_applied_and_sent(tmp_path):
    # The coordinator's call ends (its deadline passed) while the decision's log append is
    # under way. The append runs on in its worker thread, so the apply and the send must too:
    # cut short, the decision would sit in the log unapplied until the txn's recovery asked
    # the meta group.
    participant, replica, journal = _node(tmp_path)
    appending, append_may_end = asyncio.Event(), asyncio.Event()
    log_ops = participant.replication.log_ops

    async def slow_log_ops(record, shard, ops):
        appending.set()
        await append_may_end.wait()
        await log_ops(record, shard, ops)
    participant.replication.log_ops = slow_log_ops

    async def scenario():
        await participant.prepare(_prepare())
        journal.entries.clear()
        call = asyncio.ensure_future(participant.commit("t1", REF))
        await asyncio.wait_for(appending.wait(), 5)
        call.cancel()
        await asyncio.sleep(0)
        assert journal.entries == ["write lock"], "the drive stopped while it was logging"
        append_may_end.set()
        try:
            await asyncio.wait_for(call, 5)
        except asyncio.CancelledError:
            return "cancelled"
        return "not cancelled"

    try:
        assert asyncio.run(scenario()) == "cancelled", "the caller learns of its cancellation"
        _assert_logged_applied_and_sent(participant, replica, journal)
    finally:
        replica.close()


def test_the_node_performs_whatever_order_the_shared_step_function_gives(tmp_path, monkeypatch):
    # The same function the simulation checks: a step that applies before it logs makes the
    # node write its rows first (and the simulation reports it: test_txn_participant_steps).
    real_step = pm.step

    def applies_first(state, event):
        state, actions = real_step(state, event)
        logged = [a for a in actions if isinstance(a, pm.LogDecision)]
        rest = [a for a in actions if not isinstance(a, pm.LogDecision)]
        return state, (rest[:1] + logged + rest[1:]) if logged else actions

    monkeypatch.setattr(pm, "step", applies_first)
    participant, replica, journal = _node(tmp_path)

    async def scenario():
        await participant.prepare(_prepare())
        journal.entries.clear()
        await participant.commit("t1", REF)

    try:
        asyncio.run(scenario())
        assert journal.entries.index("store write") < journal.entries.index("log finish")
    finally:
        replica.close()


def test_a_copy_holding_a_plan_its_primary_never_logged_drops_it_on_the_groups_abort(tmp_path):
    # n1 staged t1 as primary, was deposed before logging it and restarted as a copy: the new
    # primary never heard of t1, so only the group's abort can end it here.
    participant, replica, journal = _node(tmp_path, decisions={})

    async def scenario():
        await participant.prepare(_prepare())
        fresh = Participant(participant.host, participant.meta, participant.catalog,
                            participant.replication)
        participant.catalog.state.datasets["u1"] = _record("n2", "n1")
        await fresh.load_staged()
        assert list(fresh.prepared) == [("t1", "u1/0")] and fresh.locked_ids() == 1
        # Long past txn_prepared_timeout_ms.
        fresh.prepared[("t1", "u1/0")].staged.prepared_at_ms = 0
        await fresh.resolve_due()
        return fresh

    try:
        fresh = asyncio.run(scenario())
        assert [c.decision for c in fresh.meta.proposed] == ["abort"]
        assert fresh.prepared == {} and fresh.locked_ids() == 0
        assert os.listdir(os.path.join(replica.path, "txns")) == []
        assert replica.existing_ids(["a"]) == []
    finally:
        replica.close()


def test_a_restarted_node_reloads_its_plan_then_applies_its_last_logged_commit(tmp_path):
    participant, replica, journal = _node(tmp_path, primary="n2", copy="n1")

    async def scenario():
        await participant.adopt("u1", 0, _staged_from(tmp_path))
        fresh = Participant(participant.host, participant.meta, participant.catalog,
                            participant.replication)
        assert await fresh.load_staged() == 1
        await fresh.finish_replicated("u1", 0, "t1", pm.COMMIT, now_ms=5)
        return fresh

    try:
        fresh = asyncio.run(scenario())
        assert replica.existing_ids(["b"]) == ["b"]
        assert fresh.prepared == {} and fresh.locked_ids() == 0
    finally:
        replica.close()


def _staged_from(tmp_path) -> node_pb2.StagedTxn:
    """A primary's plan for t1 (upsert of "b"), as a replicated prepare op carries it."""
    request = _prepare(vector_id="b")
    vote = node_pb2.PrepareResponse(inserted=1)
    records = records_from_protos(request.upserts, 4, "l2", request.upsert_values)
    return _staged_txn(request, records, [], vote)


def test_a_copy_that_failed_to_store_a_plan_stores_it_when_the_op_comes_again(tmp_path,
                                                                             monkeypatch):
    from node import txn as node_txn
    participant, replica, journal = _node(tmp_path, primary="n2", copy="n1")
    real_write = node_txn._write_durably
    failures = [OSError("disk full")]

    def flaky_write(path, data):
        if failures:
            raise failures.pop()
        real_write(path, data)

    monkeypatch.setattr(node_txn, "_write_durably", flaky_write)

    async def scenario():
        staged = _staged_from(tmp_path)
        try:
            await participant.adopt("u1", 0, staged)
        except OSError:
            pass
        assert participant.prepared == {} and participant.locked_ids() == 0
        await participant.adopt("u1", 0, staged)      # the primary sends the op again
        await participant.finish_replicated("u1", 0, "t1", pm.COMMIT, now_ms=5)

    try:
        asyncio.run(scenario())
        assert replica.existing_ids(["b"]) == ["b"]
    finally:
        replica.close()


def test_a_copy_loads_the_plans_a_snapshot_brings_even_of_a_txn_it_saw_end(tmp_path):
    # The copy dropped t1 on the group's abort while its primary still held the plan; a file
    # copy of the primary then brings the plan back, and it must be held (and resolved) again.
    participant, replica, journal = _node(tmp_path, primary="n2", copy="n1",
                                          decisions={"t1": SimpleNamespace(decision="abort")})

    async def scenario():
        staged = _staged_from(tmp_path)
        await participant.adopt("u1", 0, staged)
        participant.prepared[("t1", "u1/0")].staged.prepared_at_ms = 0
        await participant.resolve_due()
        assert participant.prepared == {}
        # The snapshot's files: the primary's staged plan is among them.
        node_txn._write_durably(os.path.join(replica.path, "txns", "t1.bin"),
                                staged.SerializeToString())
        await participant.forget_shard("u1", 0)
        return await participant.load_staged_of("u1", 0, replica)

    from node import txn as node_txn
    try:
        assert asyncio.run(scenario()) == 1
        assert list(participant.prepared) == [("t1", "u1/0")]
        assert participant.locked_ids() == 1
    finally:
        replica.close()
