"""Group commit (shard/replica.py, node/replication.py reapply_tails, node/oplog.py): a write
that carries its op-log position is applied at once (readable, searchable) and committed to
Deep Lake with later ones by the background committer; the commit records the position of the
last op it holds, and a restart replays the op log past it. The files, the store and the op log
are real; a crash is a child process that ends with os._exit, so no close commits for it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
import types

import numpy as np
import pytest

from node.oplog import LoggedOp, OpLog
from node.replication import Replication
from shard.records import ExistingPolicy, VectorRecord
from shard.replica import ShardReplica
from shard.versions import VersionView
from tributary import errors, limits

DIMS = 4
UUID = "00000000-0000-0000-0000-000000000018"
SHARD = 0


def vectors(first: int, count: int) -> np.ndarray:
    rng = np.random.default_rng(first)
    return rng.standard_normal((count, DIMS)).astype(np.float32)


def records(first: int, count: int) -> list[VectorRecord]:
    return [VectorRecord(id=f"v{first + i}", values=row)
            for i, row in enumerate(vectors(first, count))]


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture()
def slow_committer(monkeypatch):
    """A committer that never fires by itself within a test (bounds far away)."""
    monkeypatch.setattr(limits, "group_commit_interval_ms", 600_000)
    monkeypatch.setattr(limits, "group_commit_rows_max", 1_000_000)


@pytest.fixture()
def commits(monkeypatch):
    seen: list[float] = []
    monkeypatch.setattr(ShardReplica, "commit_observer", seen.append)
    return seen


def test_positioned_writes_are_readable_at_once_and_share_one_deep_lake_commit(
        tmp_path, slow_committer, commits):
    replica = ShardReplica(str(tmp_path / "s"), DIMS, "l2")
    try:
        # The store's first positioned write commits at once, so that it records a position.
        replica.write(records(0, 10), [], ExistingPolicy.OVERWRITE, position=(1, 1))
        assert replica.durable_position == (1, 1)
        before = len(commits)
        for op in range(2, 12):
            replica.write(records(op * 10, 10), [], ExistingPolicy.OVERWRITE,
                          position=(op, 1))
        assert len(commits) == before            # nothing committed yet
        assert replica.count() == 110
        found = replica.get(["v20", "v119"])
        assert [r.id for r in found] == ["v20", "v119"]
        np.testing.assert_allclose(found[1].values, vectors(110, 10)[9])
        hit = replica.search(vectors(50, 10)[3], top_k=1).hits[0]
        assert hit.record.id == "v53"
        assert replica.durable_position == (1, 1)
        assert replica.flush() == (11, 1)
        assert len(commits) == before + 1        # ten writes, one commit
    finally:
        replica.close()


def test_a_write_without_a_position_commits_the_group_before_it_returns(
        tmp_path, slow_committer, commits):
    replica = ShardReplica(str(tmp_path / "s"), DIMS, "l2")
    try:
        replica.write(records(0, 5), [], ExistingPolicy.OVERWRITE, position=(7, 2))
        before = len(commits)
        replica.write(records(5, 5), [], ExistingPolicy.OVERWRITE)
        assert len(commits) == before + 1
        assert replica.durable_position == (7, 2)
    finally:
        replica.close()
    reopened = ShardReplica(str(tmp_path / "s"), DIMS, "l2")
    try:
        assert reopened.count() == 10 and reopened.durable_position == (7, 2)
    finally:
        reopened.close()


def test_the_committer_commits_once_enough_rows_wait(tmp_path, monkeypatch, commits):
    monkeypatch.setattr(limits, "group_commit_interval_ms", 600_000)
    monkeypatch.setattr(limits, "group_commit_rows_max", 1_000)
    replica = ShardReplica(str(tmp_path / "s"), DIMS, "l2")
    try:
        replica.write(records(0, 1), [], ExistingPolicy.OVERWRITE, position=(1, 1))
        replica.write(records(1, 500), [], ExistingPolicy.OVERWRITE, position=(2, 1))
        assert replica.durable_position == (1, 1)
        replica.write(records(501, 500), [], ExistingPolicy.OVERWRITE, position=(3, 1))
        wait_for(lambda: replica.durable_position == (3, 1), 10, "a group commit")
    finally:
        replica.close()


def test_the_committer_commits_a_lone_write_after_the_interval(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "group_commit_interval_ms", 50)
    replica = ShardReplica(str(tmp_path / "s"), DIMS, "l2")
    try:
        replica.write(records(0, 3), [], ExistingPolicy.OVERWRITE, position=(1, 1))
        replica.write(records(3, 3), [], ExistingPolicy.OVERWRITE, position=(2, 1))
        wait_for(lambda: replica.durable_position == (2, 1), 10, "the interval's commit")
    finally:
        replica.close()


def test_a_version_tag_marks_every_write_applied_before_it(tmp_path, slow_committer):
    replica = ShardReplica(str(tmp_path / "s"), DIMS, "l2")
    try:
        replica.write(records(0, 30), [], ExistingPolicy.OVERWRITE, position=(1, 1))
        replica.write([], ["v0", "v1"], ExistingPolicy.OVERWRITE, position=(2, 1))
        replica.mark_version("cut-1")
        replica.write(records(100, 5), [], ExistingPolicy.OVERWRITE, position=(3, 1))
        view = VersionView(replica.store_url, "cut-1", DIMS, "l2")
        assert view.count() == 28
        assert replica.durable_position == (2, 1)
    finally:
        replica.close()


class _AppendFailsOnce:
    """The store handle, except that its next append raises (a disk error mid-write)."""

    def __init__(self, ds):
        self._ds = ds
        self.armed = True

    def append(self, columns):
        if self.armed:
            self.armed = False
            raise OSError("disk error")
        return self._ds.append(columns)

    def __getattr__(self, name):
        return getattr(self._ds, name)

    def __getitem__(self, key):
        return self._ds[key]

    def __len__(self):
        return len(self._ds)


def test_a_failed_write_leaves_nothing_and_keeps_the_uncommitted_writes_before_it(
        tmp_path, slow_committer):
    replica = ShardReplica(str(tmp_path / "s"), DIMS, "l2")
    try:
        replica.write(records(0, 10), [], ExistingPolicy.OVERWRITE, position=(1, 1))
        replica.write([], ["v3"], ExistingPolicy.OVERWRITE, position=(2, 1))
        replica._ds = _AppendFailsOnce(replica._ds)
        with pytest.raises(errors.Internal):
            replica.write(records(100, 5), [], ExistingPolicy.OVERWRITE, position=(3, 1))
        assert replica.count() == 9
        assert replica.get(["v100"]) == [] and replica.get(["v3"]) == []
        assert [r.id for r in replica.get(["v9"])] == ["v9"]
        # The writes before the failed one are committed again, with their position.
        assert replica.durable_position == (2, 1)
    finally:
        replica.close()
    reopened = ShardReplica(str(tmp_path / "s"), DIMS, "l2")
    try:
        assert reopened.count() == 9 and reopened.durable_position == (2, 1)
    finally:
        reopened.close()


def test_the_op_log_never_trims_ops_past_what_the_store_committed(tmp_path):
    log = OpLog(str(tmp_path / "oplog"), segment_ops_max=2, ops_max=2)
    log.retain_from = lambda: 3
    for seq in range(1, 21):
        log.append([LoggedOp(seq, 1, b"op")])
    assert log.first_seq <= 3
    assert [op.seq for op in log.read_from(3, 100, 1 << 20)] == list(range(3, 21))
    log.retain_from = lambda: None
    log.append([LoggedOp(21, 1, b"op")])
    assert log.first_seq > 3        # trimmed once nothing holds it


# ---- a crash, then the restart's replay --------------------------------------------------------

_CHILD = textwrap.dedent("""
    import os, sys
    import numpy as np
    sys.path.insert(0, {repo!r})
    from node.oplog import LoggedOp, OpLog
    from proto import deeplake_service_pb2 as pb
    from proto import node_pb2
    from shard.records import ExistingPolicy, VectorRecord
    from shard.replica import ShardReplica
    from tributary.validation import pack_values

    shard_dir = {shard_dir!r}
    log = OpLog(os.path.join(shard_dir, "oplog"), 10_000, 200_000)
    replica = ShardReplica(shard_dir, {dims}, "l2")
    for seq in range(1, 6):
        first = seq * 10
        values = np.random.default_rng(first).standard_normal((10, {dims})).astype(np.float32)
        op = node_pb2.ReplicatedOp(seq=seq, term=1, write=node_pb2.WriteRequest(
            upserts=[pb.Vector(id=f"v{{first + i}}") for i in range(10)],
            upsert_values=pack_values(values), existing=node_pb2.EXISTING_OVERWRITE))
        log.append([LoggedOp(seq, 1, op.SerializeToString())])
        replica.write([VectorRecord(id=f"v{{first + i}}", values=row)
                       for i, row in enumerate(values)], [], ExistingPolicy.OVERWRITE,
                      position=(seq, 1))
    os._exit(0)     # kill -9: no close; only op 1 (the store's first positioned one) committed
""")


class _Host:
    def __init__(self, root: str, record):
        self.root = root
        self.replicas: dict = {}
        self.node_id = "node-0"
        self.catalog = types.SimpleNamespace(state=types.SimpleNamespace(
            datasets={UUID: record}, nodes={}))

    def shard_path(self, dataset_uuid: str, shard: int) -> str:
        return os.path.join(self.root, dataset_uuid, str(shard))

    async def replica_unfenced(self, dataset_uuid: str, shard: int):
        return self.replicas.get((dataset_uuid, shard))


def test_a_restart_replays_every_logged_write_past_the_stores_last_commit(tmp_path):
    record = types.SimpleNamespace(uuid=UUID, dimensions=DIMS, metric_type="l2")
    host = _Host(str(tmp_path), record)
    shard_dir = host.shard_path(UUID, SHARD)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, TRIBUTARY_GROUP_COMMIT_INTERVAL_MS="600000")
    subprocess.run([sys.executable, "-c", _CHILD.format(repo=repo, shard_dir=shard_dir,
                                                        dims=DIMS)],
                   check=True, env=env, timeout=120)

    replica = ShardReplica(shard_dir, DIMS, "l2")
    host.replicas[(UUID, SHARD)] = replica
    try:
        # The crash lost the uncommitted ops 2 to 5 from the store, not from the log.
        assert replica.durable_position == (1, 1)
        assert replica.count() == 10
        replication = Replication(host, meta=None, token=None)
        assert asyncio.run(replication.reapply_tails()) == 1
        assert replica.count() == 50
        for seq in range(1, 6):
            first = seq * 10
            found = replica.get([f"v{first + i}" for i in range(10)])
            assert len(found) == 10, seq
            np.testing.assert_allclose(np.stack([r.values for r in found]),
                                       vectors(first, 10))
        assert replica.flush() == (5, 1)
    finally:
        replica.close()
