"""The consistent cut of a dataset: one position per shard such that every multi-shard batch
(2PC) is either wholly before it on every shard it touched, or wholly after.

    cut = await consistent_cut(core, record)            # record: consensus DatasetRecord

How (the decisions are pure functions in consensus/versions.py; this module only does I/O):
0. Wait, unfenced: until every batch decided COMMIT before the cut began has been applied by
   all its participants in this dataset (linearizable reads of the 2PC bookkeeping, no log
   entry), and every shard's primary is live, at most until `settle_deadline`. A participant
   whose primary was killed applies its decided batches only once a copy is promoted or the
   node is back (seconds), far longer than a fence may stand; waiting here, with nothing held
   back, lets the fenced settle of step 2 find only batches decided a moment ago. This step
   changes no outcome, only liveness: the fence and step 2 alone make the cut consistent.
   Batches decided during the wait are not waited for here (under steady 2PC traffic the set
   is never empty); step 2 settles them.
1. Fence: `FenceCommits` through Raft. From then on the meta group records no COMMIT decision
   for a txn touching the dataset (coordinators retry, router/txn.py); ABORT decisions still
   go through. The fence expires by itself after `cut_fence_max_ms`, so a router that dies
   here holds commits back no longer than that.
2. Settle: poll `FenceSettled` until every txn decided COMMIT before the fence has been applied
   (acknowledged) by all its participants in this dataset. Prepared-but-undecided txns are only
   staged on their participants, not in any store, so they are outside the cut.
3. Positions: each shard's primary (`CutShard`), holding the shard's write lock, tags its Deep
   Lake commit and has every in-sync copy tag the same state; it answers its commit id, op-log
   seq and term, and row count, within what is left of the fence. One-phase writes go on
   meanwhile: each is within one shard, so it is simply before or after that shard's position.
4. Check that the fence is still up (it cannot have lapsed and come back), then lift it
   (`LiftFence`, also on failure). A cut that could not finish inside the fence raises
   Unavailable (retriable) and records nothing.

Commits of the dataset wait for at most the fence (step 1 to 4); the cut's `fence_ms` says how
long it was up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass

from consensus import commands
from consensus import state as meta_state
from consensus.records import DatasetRecord
from consensus.versions import ShardVersion
from proto import node_pb2
from tributary import errors, limits

log = logging.getLogger("tributary.router.cut")


@dataclass(frozen=True)
class Cut:
    """A consistent cut of one dataset. `shards[i]` is shard i's position: its primary, that
    primary's Deep Lake commit id, the op-log seq and term (the same on every copy), its
    active rows, and the copies (node, own commit id) whose store carries `deeplake_tag` on that
    state. `at_ms` is the router's clock when the positions were taken."""

    dataset_uuid: str
    cut_id: str
    deeplake_tag: str
    at_ms: int
    fence_ms: float
    shards: tuple[ShardVersion, ...]

    @property
    def vector_count(self) -> int:
        return sum(s.vector_count for s in self.shards)


def _now_ms() -> int:
    return int(time.time() * 1000)


async def consistent_cut(core, record: DatasetRecord, deeplake_tag: str = "",
                         settle_deadline: float | None = None) -> Cut:
    """Takes a consistent cut of `record`'s dataset (see the module docstring). `core` is the
    RouterCore (its meta client, catalog and shard client are used). `deeplake_tag` names the
    Deep Lake tag put on each copy's state (default `cut-<cut id>`). `settle_deadline` (a
    time.monotonic() instant) bounds step 0, the unfenced wait for earlier committed batches
    to be applied on every shard (default: `cut_settle_wait_ms` from now). Raises Unavailable
    when such a batch is still unapplied at the deadline, or when the cut could not be taken
    within `cut_fence_max_ms` (retry), NotFound when the dataset is gone, and what a shard's
    primary raised."""
    if settle_deadline is None:
        settle_deadline = time.monotonic() + limits.cut_settle_wait_ms / 1000
    await wait_for_applied_commits(core, record, settle_deadline)
    cut_id = uuid.uuid4().hex
    tag = deeplake_tag or f"cut-{cut_id}"
    started = time.monotonic()
    fenced_at = _now_ms()
    await core.meta.propose(commands.FenceCommits(record.uuid, cut_id,
                                                  fenced_at + limits.cut_fence_max_ms,
                                                  fenced_at))
    try:
        await _settle(core, cut_id, started)
        at_ms = _now_ms()
        # A primary that does not answer within the fence cannot give a position in it:
        # give up then (the caller retries) rather than wait for the node call's deadline.
        try:
            positions = await asyncio.wait_for(asyncio.gather(*(
                core.on_shard(record.tenant_id, record.name, shard,
                              lambda _r, address, ref: core.shards.cut_shard(
                                  address, node_pb2.CutShardRequest(shard=ref, tag=tag)))
                for shard in range(record.shard_count))),
                max(0.0, started + limits.cut_fence_max_ms / 1000 - time.monotonic()))
        except asyncio.TimeoutError:
            raise errors.Unavailable("a shard's primary did not give its position within "
                                     f"cut_fence_max_ms={limits.cut_fence_max_ms}; retry"
                                     ) from None
        # The fence must still be up (with room for clock skew between routers): then no
        # commit of this dataset was recorded between the first position and the last.
        check = await core.meta.propose(commands.FenceSettled(
            cut_id, _now_ms() + limits.cut_clock_skew_ms))
        if not check["fenced"]:
            raise errors.Unavailable("the cut took longer than cut_fence_max_ms="
                                     f"{limits.cut_fence_max_ms}; retry")
        fence_ms = (time.monotonic() - started) * 1000
    finally:
        try:
            await core.meta.propose(commands.LiftFence(cut_id, _now_ms()))
        except errors.TributaryError:
            pass    # it expires by itself
    shards = tuple(ShardVersion(
        shard=shard, primary=p.node_id, commit_id=p.commit_id, seq=p.seq, term=p.term,
        vector_count=p.vector_count,
        marked=((p.node_id, p.commit_id),) + tuple((m.node_id, m.commit_id) for m in p.copies
                                                   if not m.error))
        for shard, p in enumerate(positions))
    return Cut(record.uuid, cut_id, tag, at_ms, round(fence_ms, 1), shards)


async def unapplied_commits(core, dataset_uuid: str) -> dict[str, tuple[str, ...]]:
    """Txns decided COMMIT that some participant shard of the dataset has not acknowledged
    applying: txn id -> those shards (as "<dataset uuid>/<shard>"). A linearizable read of
    the meta group's 2PC bookkeeping (a ReadIndex round on the leader, no log entry)."""
    response = await core.meta.read_revision(include_txns=True)
    if not response.txns_json:
        return {}
    doc = json.loads(response.txns_json)
    txns = meta_state.from_doc({"version": 0, "tenants": {}, "datasets": {}, "nodes": {},
                                **doc}).txns
    prefix = f"{dataset_uuid}/"
    found = {}
    for txn_id, txn in txns.items():
        if txn.decision != meta_state.TXN_COMMIT:
            continue
        waiting = tuple(p for p in txn.participants
                        if p.startswith(prefix) and p not in txn.acked)
        if waiting:
            found[txn_id] = waiting
    return found


async def _primaries_down(core, record: DatasetRecord) -> list[int]:
    """Shards of the dataset whose primary (in the cached catalog) the meta leader does not
    count among the live nodes; every shard when no member leads."""
    current = core.catalog.state.datasets.get(record.uuid, record)
    try:
        live = set((await core.meta.leader_status()).live_nodes)
    except errors.TributaryError:
        return list(range(current.shard_count))
    return [s for s in range(current.shard_count) if current.primary_of(s) not in live]


async def wait_for_applied_commits(core, record: DatasetRecord, deadline: float) -> None:
    """Step 0 of the cut: returns once every batch decided COMMIT before this call has been
    applied by all its participants in the dataset (those decided later are left to the
    fenced settle), and every shard's primary is live (a cut asks each one for its position
    inside the fence, which a dead primary would outlast). Raises Unavailable at `deadline`
    (time.monotonic()) naming the shards it waited for, so the operator knows why."""
    started = time.monotonic()
    earlier: set[str] | None = None
    next_note = started + limits.cut_settle_note_ms / 1000
    while True:
        pending = await unapplied_commits(core, record.uuid)
        if earlier is None:
            earlier = set(pending)
        left = {txn: shards for txn, shards in pending.items() if txn in earlier}
        down = await _primaries_down(core, record)
        if not left and not down:
            return
        now = time.monotonic()
        shards = sorted({int(p.rsplit("/", 1)[1]) for ps in left.values() for p in ps})
        waits_for = "; ".join(
            ([f"{len(left)} committed multi-shard batch(es) not yet applied on shard(s) "
              f"{shards}"] if left else []) +
            ([f"no live primary for shard(s) {down}"] if down else []))
        if now >= deadline:
            raise errors.Unavailable(
                f"no consistent cut of '{record.name}' after waiting {now - started:.1f} s: "
                f"{waits_for} (a node is down or a copy is being promoted; a cut now would "
                "hold part of a batch or outlast its fence); retry once the shard is back")
        if now >= next_note:
            log.info("cut of %s waits: %s (%.1f s so far)", record.name, waits_for,
                     now - started)
            next_note = now + limits.cut_settle_note_ms / 1000
        await asyncio.sleep(limits.cut_settle_wait_poll_ms / 1000)


async def _settle(core, cut_id: str, started: float) -> None:
    """Waits until every COMMIT decided before the fence is applied by all its participants in
    the dataset, leaving room in the fence for the positions to be read."""
    deadline = started + limits.cut_fence_max_ms / 1000 / 2
    while True:
        answer = await core.meta.propose(commands.FenceSettled(cut_id, _now_ms()))
        if not answer["fenced"]:
            raise errors.Unavailable("the cut's fence lapsed before it settled; retry")
        if not answer["unsettled"]:
            return
        if time.monotonic() >= deadline:
            raise errors.Unavailable(
                f"{len(answer['unsettled'])} committed multi-shard batch(es) are not yet "
                "applied on every shard (a participant may be down); retry the cut")
        await asyncio.sleep(limits.cut_settle_poll_ms / 1000)
