"""A node restarted after its split's switch brings each child up to its parent copy's log for
the ops accepted under the old count (node/split.py Splitter.reopen), and a purge takes over
what an in-sync copy holds beyond its own log before it lists the rows to delete.

What happened without either (test_reshard.py, the kill mid-split, about 1 run in 10): the
parent's primary was killed after logging a write (op 41, the old count's epoch) and before
mirroring it to the child; the split switched while the node was down. Restarted, the node
served the child at op 40. A copy of the child got op 41 mirrored from its own parent copy, so
the child's first purge listed its rows, then took op 41 over from that copy, and kept that
write's row on the wrong shard."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
from types import SimpleNamespace

from node import split as split_module
from node.split import Splitter
from proto import node_pb2


class Log:
    """An op log: the ops it holds, by sequence number."""

    def __init__(self, ops=()):
        self.ops = {op.seq: op for op in ops}

    @property
    def last_seq(self) -> int:
        return max(self.ops, default=0)

    @property
    def last_term(self) -> int:
        return self.ops[self.last_seq].term if self.ops else 0

    def term_at(self, seq: int) -> int | None:
        if seq == 0:
            return 0
        return self.ops[seq].term if seq in self.ops else None

    def read_from(self, seq, ops_max, bytes_max):
        from node.oplog import LoggedOp
        held = [self.ops[s] for s in sorted(self.ops) if s >= seq][:ops_max]
        return [LoggedOp(op.seq, op.term, op.SerializeToString()) for op in held]


class Replication:
    def __init__(self, parent_ops, child_ops):
        self.logs = {0: Log(parent_ops), 2: Log(child_ops)}
        self.calls: list[str] = []
        self.participant = None
        self.locks: dict = {}

    @contextlib.asynccontextmanager
    async def _apply_lock(self, key):
        async with self.locks.setdefault(("apply", key), asyncio.Lock()):
            yield

    def oplog(self, uuid, shard):
        return self.logs[shard]

    async def _apply_one(self, record, shard, op):
        self.logs[shard].ops[op.seq] = op
        self.calls.append(f"apply {shard}:{op.seq}")

    @contextlib.asynccontextmanager
    async def write_lock(self, uuid, shard):
        async with self.locks.setdefault(("write", (uuid, shard)), asyncio.Lock()):
            yield

    def forget(self, uuid, shard):
        self.calls.append(f"forget {shard}")

    async def ensure_resynced(self, record, shard):
        self.calls.append("take over")

    async def log_apply_send(self, record, shard, op, crash_point=""):
        self.calls.append("log delete")


def op(seq: int, epoch: int, term: int = 1) -> node_pb2.ReplicatedOp:
    return node_pb2.ReplicatedOp(seq=seq, term=term, epoch=epoch,
                                 write=node_pb2.WriteRequest(delete_ids=[f"x{seq}"]))


class Replica:
    def count(self):
        return 0


def restarted(tmp_path, parent_ops, child_ops, shards=(0, 2)) -> Splitter:
    """Dataset d switched from 2 to 4 shards at epoch 5; this node (n1, every shard's primary)
    holds `shards` and has just restarted."""
    record = SimpleNamespace(uuid="d", split_epoch=5, epoch=5, shard_count=4,
                             primary_of=lambda shard: "n1", copies_of=lambda shard: ("n1",))
    state = SimpleNamespace(datasets={"d": record}, reshards={})
    host = SimpleNamespace(catalog=SimpleNamespace(state=state), node_id="n1",
                           replicas={("d", s): Replica() for s in shards},
                           shard_path=lambda uuid, shard: str(tmp_path / uuid / str(shard)))

    async def replica_unfenced(uuid, shard):
        """Opens a replica on first use, as ShardHost does."""
        return host.replicas.setdefault((uuid, shard), Replica())

    host.replica_unfenced = replica_unfenced
    return Splitter(host, replication=Replication(parent_ops, child_ops), meta=None)


HISTORY = [op(s, epoch=4) for s in range(1, 41)]


def test_a_child_takes_the_old_count_ops_its_parent_logged_before_the_crash(tmp_path):
    splitter = restarted(tmp_path, HISTORY + [op(41, epoch=4), op(42, epoch=5)], HISTORY)
    assert asyncio.run(splitter.reopen()) == 1
    # Op 41 was accepted under the old count: the child's. Op 42 is the parent's own.
    assert splitter.replication.calls == ["apply 2:41"]
    assert splitter.children == {("d", 0): 2}


def test_a_child_switched_after_the_host_reopened_its_shards_is_opened_and_caught_up(
        tmp_path):
    # chaos: reshard, seed 128. The split switched while the node started: after the host
    # reopened its shards from the catalog (the child was still a split's, so it skipped it)
    # and before this. Left to open at its first request, the child served without the ops
    # its log held past its store's last commit, and its purge missed one of their rows.
    (tmp_path / "d" / "2").mkdir(parents=True)
    splitter = restarted(tmp_path, HISTORY + [op(41, epoch=4)], HISTORY, shards=(0,))
    assert asyncio.run(splitter.reopen()) == 1, "the caller replays the child's own log"
    assert ("d", 2) in splitter.host.replicas
    assert "_split_owner" in vars(splitter.host.replicas[("d", 2)]), \
        "it answers only its own rows until its purge"
    assert splitter.replication.calls == ["apply 2:41"]
    assert splitter.children == {("d", 0): 2}


def test_a_switched_child_with_nothing_to_take_still_counts_as_reopened(tmp_path):
    (tmp_path / "d" / "2").mkdir(parents=True)
    splitter = restarted(tmp_path, HISTORY, HISTORY, shards=(0,))
    assert asyncio.run(splitter.reopen()) == 1
    assert ("d", 2) in splitter.host.replicas and splitter.replication.calls == []


def test_a_switched_child_not_on_disk_is_not_opened(tmp_path):
    splitter = restarted(tmp_path, HISTORY, HISTORY, shards=(0,))
    assert asyncio.run(splitter.reopen()) == 0
    assert ("d", 2) not in splitter.host.replicas


def test_a_child_that_wrote_ops_of_its_own_takes_nothing(tmp_path):
    own = [op(41, epoch=5), op(42, epoch=5)]
    splitter = restarted(tmp_path, HISTORY + [op(41, epoch=5)], HISTORY + own)
    assert asyncio.run(splitter.reopen()) == 0
    assert splitter.replication.calls == []


def test_a_child_whose_log_is_not_a_prefix_of_its_parents_takes_nothing(tmp_path):
    # A child that opened without its parent's history (chaos: reshard, seeds 128 and 129: it
    # was reported built but never built) and wrote ops of its own under a later term. Taking
    # the parent's old-count ops 31-41 after them put term-1 ops behind term-2 ones: the op
    # log refused them, and the node died at every start.
    own = [op(s, epoch=5, term=2) for s in range(1, 31)]
    splitter = restarted(tmp_path, HISTORY + [op(41, epoch=4)], own)
    assert asyncio.run(splitter.reopen()) == 0
    assert splitter.replication.calls == []


def test_a_child_without_its_parent_on_this_node_is_left_to_its_primary(tmp_path):
    splitter = restarted(tmp_path, HISTORY + [op(41, epoch=4)], HISTORY, shards=(2,))
    assert asyncio.run(splitter.reopen()) == 0
    assert splitter.replication.calls == [] and splitter.children == {}


def test_a_purge_takes_over_what_a_copy_holds_before_it_lists_the_rows(tmp_path,
                                                                     monkeypatch):
    splitter = restarted(tmp_path, HISTORY, HISTORY)
    record = splitter.host.catalog.state.datasets["d"]
    calls = splitter.replication.calls

    def foreign_ids(replica, shard, count):
        calls.append("list")
        return ["moved"]

    monkeypatch.setattr(split_module, "_foreign_ids", foreign_ids)
    splitter.host.replica_unfenced = lambda uuid, shard: asyncio.sleep(0, Replica())
    (tmp_path / "d" / "2").mkdir(parents=True)
    asyncio.run(splitter._purge(record, 2))
    assert calls.index("take over") < calls.index("list") < calls.index("log delete")


class Meta:
    def __init__(self):
        self.proposed = []

    async def propose(self, command):
        self.proposed.append(command)
        return {}


class SavingReplica(Replica):
    def save_index(self):
        return None


def building(tmp_path, first_state, on_save):
    """This node (n1) holds parent shard 0 of dataset d, splitting from 2 to 4 shards, and
    `first_state` is its catalog when its round starts. `on_save(host)` runs when the parent's
    graph is saved, the build's first step (before its locks)."""
    host = SimpleNamespace(catalog=SimpleNamespace(state=first_state), node_id="n1",
                           replicas={("d", 0): SavingReplica()},
                           shard_path=lambda uuid, shard: str(tmp_path / uuid / str(shard)))

    async def replica_unfenced(uuid, shard):
        if shard == 0:
            on_save(host)
        return host.replicas.setdefault((uuid, shard), SavingReplica())

    host.replica_unfenced = replica_unfenced
    return Splitter(host, replication=Replication(HISTORY, ()), meta=Meta())


def splitting(primary: str, reshards=True) -> SimpleNamespace:
    record = SimpleNamespace(uuid="d", shard_count=2, split_epoch=0, epoch=3,
                             primary_of=lambda shard: primary, shards_on=lambda node: [0])
    reshard = SimpleNamespace(old_count=2, new_count=4, ready=())
    return SimpleNamespace(datasets={"d": record}, reshards={"d": reshard} if reshards else {})


def test_a_build_that_gives_up_reports_no_child(tmp_path):
    # chaos: reshard, seeds 128 and 129. The round read the catalog with the split under way;
    # the build gave up under its lock (then: the copy had been promoted meanwhile; now: the
    # reshard is over), and the round reported the child built anyway. The switch counted on
    # it, and the child opened empty.
    def cancelled(host):
        host.catalog.state = splitting("n2", reshards=False)

    splitter = building(tmp_path, splitting("n2"), cancelled)
    asyncio.run(splitter.round())
    assert splitter.children == {}
    assert splitter.meta.proposed == []
    assert not (tmp_path / "d" / "2").exists()


def test_a_copy_promoted_while_it_copies_its_files_mirrors_the_new_primarys_first_write(
        tmp_path, monkeypatch):
    # chaos: reshard, seed 127. The copy built its child under the apply lock alone, was
    # promoted while its files were copied, and took a write as primary (under the write lock
    # only) before the child was registered: the files had not the write, and the write was
    # not mirrored. After the switch the child answered the value before it.
    copying, copied = threading.Event(), threading.Event()
    (tmp_path / "d" / "0").mkdir(parents=True)

    def slow_copy(source, target):
        copying.set()
        copied.wait(10)
        shutil.copytree(source, target)

    monkeypatch.setattr(split_module, "_copy_dir", slow_copy)
    splitter = building(tmp_path, splitting("n2"), lambda host: None)
    seen: list[bool] = []

    async def write_as_the_new_primary():
        await asyncio.to_thread(copying.wait, 10)
        splitter.host.catalog.state = splitting("n1")       # promoted mid-copy
        write = asyncio.ensure_future(_write(splitter, seen))
        await asyncio.sleep(0.1)
        copied.set()
        await write

    async def scenario():
        await asyncio.gather(splitter.round(), write_as_the_new_primary())

    asyncio.run(scenario())
    # The write waited for the build: the child was registered, so the write is mirrored.
    assert seen == [True]
    assert splitter.children == {("d", 0): 2}


async def _write(splitter, seen):
    """A primary's write as node/server.py makes it: under the shard's write lock, it logs and
    mirrors to the child registered by then."""
    async with splitter.replication.write_lock("d", 0):
        seen.append(("d", 0) in splitter.children)
