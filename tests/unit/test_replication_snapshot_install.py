"""Installing a primary's snapshot (node/replication.py `Replication.install_snapshot`) while
other calls ask for the same shard's op log.

Found by the chaos `replication` scenario (seeds 201 and 202): a call that opened the op log
between the copy forgetting it and the file swap kept an OpLog whose directory the swap removed,
so the reset after the swap failed with FileNotFoundError, and so did every later catch-up
round: the copy never rejoined the in-sync set.

Also found by it (seed 115): a copy promoted to primary while its catch-up from the old primary
was under way took the old primary's files and lost the writes it had acknowledged as primary.
A catch-up now changes the copy only while the catalog still names the primary and term it
began with (`catch_up_still_valid`), checked again under the shard's locks before the swap.

No cluster here: the host, the primary's answers and the participant are fakes; the files and
the op log are real."""

from __future__ import annotations

import asyncio
import os
import types

import pytest

from consensus.records import DatasetRecord
from node.replication import Replication, catch_up_still_valid
from proto import node_pb2
from tributary import errors

UUID = "00000000-0000-0000-0000-000000000001"
SHARD = 0


def shard_record(primary: str = "node-0", term: int = 2) -> DatasetRecord:
    """The catalog's record of a one-shard dataset held by node-0 and node-1."""
    return DatasetRecord(uuid=UUID, tenant_id="t", name="d", description="", dimensions=4,
                         metric_type="cosine", index_type="hnsw", metadata={},
                         placement=(primary,), epoch=3, created_at_ms=0, updated_at_ms=0,
                         replication_factor=2, copies=(("node-0", "node-1"),),
                         in_sync=((primary,),), terms=(term,))


class FakeHost:
    def __init__(self, root: str):
        self.root = root
        self.replicas: dict = {}
        self.node_id = "node-1"
        self.catalog = types.SimpleNamespace(state=types.SimpleNamespace(
            nodes={"node-0": types.SimpleNamespace(address="127.0.0.1:1")},
            datasets={UUID: shard_record()}))

    def promote_me(self) -> None:
        """The meta group made this node the primary, in the next term."""
        self.catalog.state.datasets[UUID] = shard_record("node-1", term=3)

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
    record = host.catalog.state.datasets[UUID]

    asyncio.run(replication.install_snapshot(record, SHARD))

    log = replication.oplog(UUID, SHARD)
    assert log is not old_log
    assert (log.last_seq, log.last_term) == (7, 2)
    shard_dir = host.shard_path(UUID, SHARD)
    assert log.directory.startswith(shard_dir) and os.path.isdir(log.directory)
    with open(os.path.join(shard_dir, "store", "data.bin"), "rb") as handle:
        assert handle.read() == b"hello"


# ---- a copy promoted during its catch-up keeps its own files ---------------------------------

def test_a_catch_up_is_valid_only_while_the_catalog_keeps_its_primary_and_term():
    record = shard_record("node-0", term=2)
    assert catch_up_still_valid(record, 0, "node-1", "node-0", 2)
    assert not catch_up_still_valid(shard_record("node-1", term=3), 0, "node-1", "node-0", 2)
    assert not catch_up_still_valid(shard_record("node-0", term=3), 0, "node-1", "node-0", 2)
    assert not catch_up_still_valid(record, 0, "node-0", "node-0", 2)     # never from itself
    assert not catch_up_still_valid(record, 1, "node-1", "node-0", 2)     # no such shard now
    assert not catch_up_still_valid(None, 0, "node-1", "node-0", 2)       # dataset dropped


class PromotedDuringTheDownload(SnapshotStub):
    """The old primary streams its snapshot; the catalog promotes the copy meanwhile."""

    def __init__(self, host: FakeHost):
        self.host = host

    def FetchSnapshot(self, request, timeout):
        async def stream():
            yield node_pb2.SnapshotChunk(last_seq=7, last_term=2, total_bytes=5)
            self.host.promote_me()
            yield node_pb2.SnapshotChunk(path="store/data.bin", data=b"stale")
        return stream()


def _own_files(host: FakeHost) -> str:
    """Gives the copy a file of its own (its store) and returns its path."""
    own = os.path.join(host.shard_path(UUID, SHARD), "store", "data.bin")
    os.makedirs(os.path.dirname(own))
    with open(own, "wb") as handle:
        handle.write(b"mine")
    return own


def test_a_copy_promoted_during_the_download_keeps_its_files(tmp_path):
    host = FakeHost(str(tmp_path))
    own = _own_files(host)
    replication = Replication(host, meta=None, token=None)
    replication._stub = lambda address: PromotedDuringTheDownload(host)
    record = host.catalog.state.datasets[UUID]

    with pytest.raises(errors.Unavailable, match="primary changed"):
        asyncio.run(replication.install_snapshot(record, SHARD))

    with open(own, "rb") as handle:
        assert handle.read() == b"mine"
    leftovers = [name for name in os.listdir(os.path.dirname(host.shard_path(UUID, SHARD)))
                 if "incoming" in name]
    assert leftovers == []
    assert replication.oplog(UUID, SHARD).last_seq == 0


class StartOverAfterThePromotion:
    """The old primary answers the fetch with "start over" (the promoted copy is ahead of it),
    and the copy's catalog has learnt of its promotion by the time the answer arrives."""

    def __init__(self, host: FakeHost):
        self.host = host
        self.snapshots_asked = 0

    async def FetchOps(self, request, timeout):
        self.host.promote_me()
        return node_pb2.FetchOpsResponse(start_over=True, primary_last_seq=3)

    def FetchSnapshot(self, request, timeout):
        self.snapshots_asked += 1
        return SnapshotStub().FetchSnapshot(request, timeout)


def test_a_catch_up_that_finds_its_copy_promoted_stops_before_copying_files(tmp_path):
    host = FakeHost(str(tmp_path))
    own = _own_files(host)
    replication = Replication(host, meta=None, token=None)
    old_primary = StartOverAfterThePromotion(host)
    replication._stub = lambda address: old_primary
    record = host.catalog.state.datasets[UUID]

    assert asyncio.run(replication.catch_up(record, SHARD)) is False

    assert old_primary.snapshots_asked == 0
    with open(own, "rb") as handle:
        assert handle.read() == b"mine"
