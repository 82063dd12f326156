"""The consistent cut of a dataset: one position per shard such that every multi-shard batch
(2PC) is either wholly before it on every shard it touched, or wholly after.

    cut = await consistent_cut(core, record)            # record: consensus DatasetRecord

How (the decisions are pure functions in consensus/versions.py; this module only does I/O):
1. Fence: `FenceCommits` through Raft. From then on the meta group records no COMMIT decision
   for a txn touching the dataset (coordinators retry, router/txn.py); ABORT decisions still
   go through. The fence expires by itself after `cut_fence_max_ms`, so a router that dies
   here holds commits back no longer than that.
2. Settle: poll `FenceSettled` until every txn decided COMMIT before the fence has been applied
   (acknowledged) by all its participants in this dataset. Prepared-but-undecided txns are only
   staged on their participants, not in any store, so they are outside the cut.
3. Positions: each shard's primary (`CutShard`), holding the shard's write lock, tags its Deep
   Lake commit and has every in-sync copy tag the same state; it answers its commit id, op-log
   seq and term, and row count. One-phase writes go on meanwhile: each is within one shard,
   so it is simply before or after that shard's position.
4. Check that the fence is still up (it cannot have lapsed and come back), then lift it
   (`LiftFence`, also on failure). A cut that could not finish inside the fence raises
   Unavailable (retriable) and records nothing.

Commits of the dataset wait for at most the fence (step 1 to 4); the cut's `fence_ms` says how
long it was up.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from consensus import commands
from consensus.records import DatasetRecord
from consensus.versions import ShardVersion
from proto import node_pb2
from tributary import errors, limits


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


async def consistent_cut(core, record: DatasetRecord, deeplake_tag: str = "") -> Cut:
    """Takes a consistent cut of `record`'s dataset (see the module docstring). `core` is the
    RouterCore (its meta client, catalog and shard client are used). `deeplake_tag` names the
    Deep Lake tag put on each copy's state (default `cut-<cut id>`). Raises Unavailable when
    the cut could not be taken within `cut_fence_max_ms` (retry), NotFound when the dataset is
    gone, and what a shard's primary raised."""
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
        positions = await asyncio.gather(*(
            core.on_shard(record.tenant_id, record.name, shard,
                          lambda _r, address, ref: core.shards.cut_shard(
                              address, node_pb2.CutShardRequest(shard=ref, tag=tag)))
            for shard in range(record.shard_count)))
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
