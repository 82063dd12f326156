"""Installing a primary's snapshot (node/replication.py `Replication.install_snapshot`) while
other calls ask for the same shard's op log.

Found by the chaos `replication` scenario (seeds 201 and 202): a call that opened the op log
between the copy forgetting it and the file swap kept an OpLog whose directory the swap removed,
so the reset after the swap failed with FileNotFoundError, and so did every later catch-up
round: the copy never rejoined the in-sync set. No cluster here: the host, the primary's stream
and the participant are fakes; the files and the op log are real."""

from __future__ import annotations

import asyncio
import os
import types

from node.replication import Replication
from proto import node_pb2

UUID = "00000000-0000-0000-0000-000000000001"
SHARD = 0


class FakeHost:
    def __init__(self, root: str):
        self.root = root
        self.replicas: dict = {}
        self.node_id = "node-1"
        self.catalog = types.SimpleNamespace(state=types.SimpleNamespace(
            nodes={"node-0": types.SimpleNamespace(address="127.0.0.1:1")}))

    def shard_path(self, dataset_uuid: str, shard: int) -> str:
        return os.path.join(self.root, "shards", dataset_uuid, str(shard))

    async def replica_unfenced(self, dataset_uuid: str, shard: int):
        return None


class SnapshotStub:
    """The primary's side: a snapshot at op 7 of term 2 holding one file."""

    def FetchSnapshot(self, request, timeout):
        async def stream():
            yield node_pb2.SnapshotChunk(last_seq=7, last_term=2, total_bytes=5)
            yield node_pb2.SnapshotChunk(path="store/data.bin", data=b"hello")
        return stream()


class ParticipantThatReadsTheLog:
    """Stands for any call that asks for the op log while the install awaits."""

    def __init__(self, replication: Replication):
        self.replication = replication

    async def forget_shard(self, dataset_uuid: str, shard: int) -> None:
        self.replication.oplog(dataset_uuid, shard)

    async def load_staged_of(self, dataset_uuid, shard, replica) -> None:
        pass


def test_a_snapshot_installs_even_when_the_op_log_was_opened_during_the_install(tmp_path):
    host = FakeHost(str(tmp_path))
    replication = Replication(host, meta=None, token=None)
    replication.participant = ParticipantThatReadsTheLog(replication)
    replication._stub = lambda address: SnapshotStub()
    old_log = replication.oplog(UUID, SHARD)          # the copy's log before the install
    record = types.SimpleNamespace(uuid=UUID, epoch=3, primary_of=lambda shard: "node-0")

    asyncio.run(replication.install_snapshot(record, SHARD))

    log = replication.oplog(UUID, SHARD)
    assert log is not old_log
    assert (log.last_seq, log.last_term) == (7, 2)
    shard_dir = host.shard_path(UUID, SHARD)
    assert log.directory.startswith(shard_dir) and os.path.isdir(log.directory)
    with open(os.path.join(shard_dir, "store", "data.bin"), "rb") as handle:
        assert handle.read() == b"hello"
