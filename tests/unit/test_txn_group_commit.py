"""Group commit of 2PC decisions (node/txn.py _apply_decision, shard/replica.py when_durable,
node/replication.py reapply_tails): a COMMIT whose decision is in the op log applies its rows at
once and lets the replica's background commit make them durable in Deep Lake; its staged plan
stays on disk until a store commit holds the decision, and a restart replays the logged decision
from that plan. The participant, the replication driver, the op log, the staged files and the
store are real; only the node's host, catalog and meta client are stand-ins. A crash is a child
process that ends with os._exit, so no close commits for it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

from consensus.records import DatasetRecord
from node.replication import Replication
from node.txn import Participant
from proto import deeplake_service_pb2 as pb
from proto import node_pb2
from shard.replica import ShardReplica
from tributary import limits

DIMS = 4
UUID = "u1"
REF = node_pb2.ShardRef(dataset_uuid=UUID, shard=0, epoch=1)


def _record() -> DatasetRecord:
    # One copy (the primary, n1): the real Replication logs and sends to nobody.
    return DatasetRecord(
        uuid=UUID, tenant_id="t1", name="docs", description="", dimensions=DIMS,
        metric_type="l2", index_type="hnsw", metadata={}, placement=("n1",), epoch=1,
        created_at_ms=1, updated_at_ms=1, replication_factor=1, copies=(("n1",),),
        in_sync=(("n1",),), terms=(1,))


class _Host:
    def __init__(self, root: str):
        self.root = root
        self.node_id = "n1"
        self.replicas: dict = {}
        state = SimpleNamespace(datasets={UUID: _record()}, txns={}, txn_tombstones={},
                                nodes={})

        async def refresh(**_):
            return state
        self.catalog = SimpleNamespace(state=state, refresh=refresh)

    def shard_path(self, dataset_uuid: str, shard: int) -> str:
        return os.path.join(self.root, dataset_uuid, str(shard))

    def open(self) -> ShardReplica:
        replica = ShardReplica(self.shard_path(UUID, 0), DIMS, "l2")
        self.replicas[(UUID, 0)] = replica
        return replica

    async def replica(self, ref, role):
        return self.catalog.state.datasets[UUID], self.replicas[(UUID, 0)]

    async def replica_unfenced(self, dataset_uuid: str, shard: int):
        return self.replicas.get((dataset_uuid, shard))


class _Meta:
    async def propose(self, command):
        return {"decision": command.decision}


def _node(root: str) -> tuple[_Host, Participant, Replication]:
    host = _Host(root)
    replication = Replication(host, meta=_Meta(), token=None)
    participant = Participant(host, _Meta(), host.catalog, replication)
    replication.participant = participant
    return host, participant, replication


def values_of(txn: str) -> np.ndarray:
    return np.random.default_rng(int(txn[1:])).standard_normal((3, DIMS)).astype(np.float32)


def _prepare(txn: str) -> node_pb2.PrepareRequest:
    return node_pb2.PrepareRequest(
        txn_id=txn, shard=REF, participants=[f"{UUID}/0", f"{UUID}/1"],
        upserts=[pb.Vector(id=f"{txn}-{i}", values=row.tolist())
                 for i, row in enumerate(values_of(txn))])


async def commit_two_txns(participant: Participant) -> None:
    """t1, then t2, each prepared and committed on the shard's primary. t1's decision is the
    store's first positioned op, so it commits at once; t2's is group committed."""
    for txn in ("t1", "t2"):
        await participant.prepare(_prepare(txn))
        assert await participant.commit(txn, REF) is True


def staged_files(replica: ShardReplica) -> list[str]:
    directory = os.path.join(replica.path, "txns")
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def assert_holds(replica: ShardReplica, txn: str) -> None:
    found = replica.get([f"{txn}-{i}" for i in range(3)])
    assert len(found) == 3, txn
    np.testing.assert_allclose(np.stack([r.values for r in found]), values_of(txn))


@pytest.fixture()
def slow_committer(monkeypatch):
    """A committer that never fires by itself within a test (bounds far away)."""
    monkeypatch.setattr(limits, "group_commit_interval_ms", 600_000)
    monkeypatch.setattr(limits, "group_commit_rows_max", 1_000_000)


def test_a_commit_is_acknowledged_before_deep_lake_commits_it_and_its_plan_stays_until_then(
        tmp_path, slow_committer, monkeypatch):
    host, participant, _ = _node(str(tmp_path))
    replica = host.open()
    commits: list[float] = []
    monkeypatch.setattr(ShardReplica, "commit_observer", commits.append)
    try:
        asyncio.run(commit_two_txns(participant))
        # t2: readable at once, no lock or prepared state left, but no Deep Lake commit yet:
        # the store's last commit holds t1's decision (op 2), and t2's plan is still on disk.
        assert_holds(replica, "t2")
        assert participant.prepared == {} and participant.locked_ids() == 0
        assert replica.durable_position == (2, 1)
        assert len(commits) == 1
        assert staged_files(replica) == ["t2.bin"]
        # The group commit that holds t2's decision (op 4) removes its plan.
        assert replica.flush() == (4, 1)
        assert staged_files(replica) == []
        assert len(commits) == 2
    finally:
        replica.close()


_CHILD = textwrap.dedent("""
    import asyncio, os, sys
    sys.path.insert(0, {repo!r})
    sys.path.insert(0, {tests!r})
    import test_txn_group_commit as t

    host, participant, _ = t._node({root!r})
    host.open()
    asyncio.run(t.commit_two_txns(participant))
    os._exit(0)     # kill -9: no close, so t2's rows never reached a Deep Lake commit
""")


def test_a_restart_replays_an_acknowledged_commit_the_store_had_not_committed(tmp_path):
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    env = dict(os.environ, TRIBUTARY_GROUP_COMMIT_INTERVAL_MS="600000")
    subprocess.run([sys.executable, "-c", _CHILD.format(repo=repo, tests=here,
                                                        root=str(tmp_path))],
                   check=True, env=env, timeout=120)

    # node/server.py's start order: open the copies, reload staged txns, replay the log.
    host, participant, replication = _node(str(tmp_path))
    replica = host.open()
    try:
        assert replica.durable_position == (2, 1)
        assert replica.existing_ids(["t2-0"]) == []      # the crash lost it from the store
        assert staged_files(replica) == ["t2.bin"]       # not its plan
        assert asyncio.run(participant.load_staged()) == 1
        assert asyncio.run(replication.reapply_tails()) == 1
        assert_holds(replica, "t1")
        assert_holds(replica, "t2")
        assert participant.prepared == {} and participant.locked_ids() == 0
        assert replica.flush() == (4, 1)
        assert staged_files(replica) == []
    finally:
        replica.close()


_CHILD_KILLED_BEFORE_REMOVAL = textwrap.dedent("""
    import asyncio, os, sys
    sys.path.insert(0, {repo!r})
    sys.path.insert(0, {tests!r})
    import node.txn
    import test_txn_group_commit as t

    host, participant, _ = t._node({root!r})
    replica = host.open()
    asyncio.run(t.commit_two_txns(participant))
    # kill -9 right after the group commit that holds t2's decision, before its callback
    # removed t2's plan: the removal never happens.
    node.txn._remove = lambda path: None
    assert replica.flush() == (4, 1)
    os._exit(0)
""")


def test_a_plan_whose_decision_the_store_already_committed_is_dropped_at_restart(tmp_path):
    """A kill between the group commit holding a decision and the removal of its plan leaves
    the plan on disk. The restart must not hold it again: nothing in the log past the store's
    commit replays its decision, so a copy would keep it (and its locks) prepared for good (a
    2PC crash run's node stayed busy that way until the test gave up)."""
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    env = dict(os.environ, TRIBUTARY_GROUP_COMMIT_INTERVAL_MS="600000")
    subprocess.run([sys.executable, "-c", _CHILD_KILLED_BEFORE_REMOVAL.format(
        repo=repo, tests=here, root=str(tmp_path))], check=True, env=env, timeout=120)

    host, participant, replication = _node(str(tmp_path))
    replica = host.open()
    try:
        assert replica.durable_position == (4, 1)
        assert staged_files(replica) == ["t2.bin"]       # the leftover
        assert asyncio.run(participant.load_staged()) == 0
        assert staged_files(replica) == []
        assert participant.prepared == {} and participant.locked_ids() == 0
        assert asyncio.run(replication.reapply_tails()) == 0
        assert_holds(replica, "t1")
        assert_holds(replica, "t2")
    finally:
        replica.close()
