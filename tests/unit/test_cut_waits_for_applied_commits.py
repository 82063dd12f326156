"""A consistent cut whose dataset has a committed 2PC batch not yet applied on one shard
(router/cut.py, step 0).

Found by the chaos `backup` scenario (seed 122): a participant's primary was killed after the
batch was decided COMMIT, so that shard applied it only seconds later (once a copy was promoted
and resolved it, or the node came back). The cut fenced at once and gave the settle half of its
1 s fence, so it refused 12 times and the run took no backup. Now the cut first waits, fenced
on nothing, for the batches committed before it to be applied on every shard, then fences.

The meta group here is the real state machine (consensus/state.py apply) behind a fake client;
the shards answer CutShard from a fake. No cluster, no network."""

from __future__ import annotations

import asyncio
import json
import time
import types

import pytest

from consensus import commands as c
from consensus import state as meta_state
from proto import node_pb2
from router import cut as cut_module
from router.cut import consistent_cut
from tributary import errors

UUID = "A"


class FakeMeta:
    """The meta group: commands go through the real apply(); a txn's last participant acks
    at `applied_at` (time.monotonic()), or never when None."""

    def __init__(self, applied_at: float | None):
        state, _ = meta_state.apply(meta_state.MetaState(), c.RegisterNode("n1", "h:1", 0))
        state, _ = meta_state.apply(state, c.CreateDataset(
            uuid=UUID, tenant_id="t", name="a", description="", dimensions=4,
            metric_type="l2", index_type="hnsw", metadata={}, placement=("n1", "n1"),
            at_ms=1))
        # Batch t1 touched shards 0 and 1; shard 0 applied it, shard 1 has not yet.
        state, _ = meta_state.apply(state, c.DecideTxn(
            "t1", meta_state.TXN_COMMIT, (f"{UUID}/0", f"{UUID}/1"), "", "{}", 10))
        state, _ = meta_state.apply(state, c.AckTxns((("t1", f"{UUID}/0"),), 20))
        self.state = state
        self.applied_at = applied_at
        self.proposed: list[tuple[float, object]] = []
        self.live = {"n1"}

    def _catch_up(self) -> None:
        # (A txn acknowledged by every participant is forgotten by the meta group.)
        t1 = self.state.txns.get("t1")
        if self.applied_at is not None and time.monotonic() >= self.applied_at \
                and t1 is not None and f"{UUID}/1" not in t1.acked:
            self.state, _ = meta_state.apply(self.state, c.AckTxns(
                (("t1", f"{UUID}/1"),), int(time.time() * 1000)))

    async def propose(self, command):
        self._catch_up()
        self.proposed.append((time.monotonic(), command))
        self.state, result = meta_state.apply(self.state, command)
        return result

    async def leader_status(self):
        return types.SimpleNamespace(live_nodes=list(self.live))

    async def read_revision(self, include_txns: bool = False, idempotency_key: str = ""):
        self._catch_up()
        doc = meta_state.to_doc(meta_state.MetaState(txns=self.state.txns))
        return types.SimpleNamespace(version=self.state.version, txns_json=json.dumps(
            {"txns": doc["txns"], "txn_tombstones": doc.get("txn_tombstones", {})}))


class FakeCore:
    def __init__(self, meta: FakeMeta):
        self.meta = meta
        self.shards = types.SimpleNamespace(cut_shard=self._cut_shard)
        self.catalog = types.SimpleNamespace(state=types.SimpleNamespace(datasets={}))

    async def _cut_shard(self, address, request):
        return node_pb2.CutShardResponse(node_id="n1", commit_id=f"c{request.shard.shard}",
                                         seq=5, term=1, vector_count=3)

    async def on_shard(self, tenant, name, shard, call):
        ref = node_pb2.ShardRef(dataset_uuid=UUID, shard=shard, epoch=1)
        return await call(None, "h:1", ref)


def record():
    return types.SimpleNamespace(uuid=UUID, tenant_id="t", name="a", shard_count=2,
                                 primary_of=lambda shard: "n1")


def fences(meta: FakeMeta) -> list[float]:
    return [at for at, command in meta.proposed if isinstance(command, c.FenceCommits)]


def test_cut_waits_unfenced_for_a_committed_batch_applied_later_than_a_fence_may_stand():
    started = time.monotonic()
    meta = FakeMeta(applied_at=started + 1.5)     # longer than cut_fence_max_ms (1 s)

    cut = asyncio.run(consistent_cut(FakeCore(meta), record(),
                                     settle_deadline=started + 10))

    assert [s.commit_id for s in cut.shards] == ["c0", "c1"]
    # The fence went up only once the batch was applied on both shards, so it stood briefly.
    assert fences(meta) and min(fences(meta)) >= started + 1.5
    assert cut.fence_ms < 1_000


def test_cut_refuses_at_its_deadline_naming_the_shard_and_fences_nothing():
    started = time.monotonic()
    meta = FakeMeta(applied_at=None)

    with pytest.raises(errors.Unavailable) as refused:
        asyncio.run(consistent_cut(FakeCore(meta), record(), settle_deadline=started + 0.5))

    assert "not yet applied on shard(s) [1]" in refused.value.message
    assert "retry" in refused.value.message
    assert refused.value.retriable
    assert fences(meta) == []          # nothing held back while it waited


def test_batches_committed_during_the_wait_are_left_to_the_fenced_settle():
    meta = FakeMeta(applied_at=time.monotonic() + 0.3)
    reads = []
    original = meta.read_revision

    async def read_and_commit_another(include_txns=False, idempotency_key=""):
        answer = await original(include_txns, idempotency_key)
        reads.append(answer)
        # A new batch is committed at every read and applied by shard 0 only, as under steady
        # 2PC traffic: the wait must still end once t1, decided before it began, is applied.
        name = f"t{len(reads) + 1}"
        meta.state, _ = meta_state.apply(meta.state, c.DecideTxn(
            name, meta_state.TXN_COMMIT, (f"{UUID}/0", f"{UUID}/1"), "", "{}", 30))
        meta.state, _ = meta_state.apply(meta.state, c.AckTxns(((name, f"{UUID}/0"),), 31))
        return answer

    meta.read_revision = read_and_commit_another

    async def run():
        await cut_module.wait_for_applied_commits(FakeCore(meta), record(),
                                                  time.monotonic() + 5)

    asyncio.run(run())
    # The batches committed during the wait are still unapplied on shard 1: left to step 2.
    later = asyncio.run(cut_module.unapplied_commits(FakeCore(meta), UUID))
    assert "t1" not in later and len(later) == len(reads) - 1 >= 2


def test_cut_waits_unfenced_for_every_shard_to_have_a_live_primary():
    started = time.monotonic()
    meta = FakeMeta(applied_at=started)     # the batch is applied; the primary is down
    meta.live = set()

    with pytest.raises(errors.Unavailable) as refused:
        asyncio.run(consistent_cut(FakeCore(meta), record(), settle_deadline=started + 0.5))

    assert "no live primary for shard(s) [0, 1]" in refused.value.message
    assert fences(meta) == []

    meta.live = {"n1"}
    cut = asyncio.run(consistent_cut(FakeCore(meta), record(),
                                     settle_deadline=time.monotonic() + 5))
    assert len(cut.shards) == 2


def test_a_primary_that_does_not_answer_within_the_fence_fails_the_cut_at_the_fence():
    meta = FakeMeta(applied_at=time.monotonic())
    core = FakeCore(meta)

    async def hangs(address, request):
        await asyncio.sleep(30)

    core.shards.cut_shard = hangs
    started = time.monotonic()
    with pytest.raises(errors.Unavailable) as refused:
        asyncio.run(consistent_cut(core, record(), settle_deadline=started + 5))
    assert time.monotonic() - started < 3          # the fence (1 s), not the node deadline
    assert "within cut_fence_max_ms" in refused.value.message
    assert any(isinstance(command, c.LiftFence) for _, command in meta.proposed)


def test_a_backup_whose_cut_waits_past_its_deadline_is_refused_with_the_reason(monkeypatch):
    from router import backups_admin

    calls = []

    async def refused(core, record, settle_deadline=None):
        calls.append(settle_deadline)
        await asyncio.sleep(0.05)
        raise errors.Unavailable("no consistent cut of 'a' after waiting 0.1 s: 1 committed "
                                 "multi-shard batch(es) not yet applied on shard(s) [0]")

    monkeypatch.setattr(cut_module, "consistent_cut", refused)
    core = FakeCore(FakeMeta(applied_at=None))
    core.catalog.refresh = lambda linearizable=False: asyncio.sleep(0)

    with pytest.raises(errors.Unavailable) as failed:
        asyncio.run(backups_admin._cut(core, record(), time.monotonic() + 0.12))

    assert "could not take a consistent cut of 'a'" in failed.value.message
    assert "not yet applied on shard(s) [0]" in failed.value.message
    assert 2 <= len(calls) <= 3 and len(set(calls)) == 1   # one deadline for every attempt
