"""Shard splits on a node: the children this node builds for a reshard in progress, and the
purge of moved rows after the switch (consensus/reshard.py has the Raft side).

A child is a mirror. For parent shard i of a dataset going from N to 2N shards, every node
holding a copy of i builds child i + N beside it:

- Build: under the parent's write and apply locks (whatever the copy's role: one promoted
  during the copy must not take a write that neither the files nor the mirror hold, so no op
  is half applied) the parent's store is committed (group commit) and its directory, op log
  included, is copied to the child's; the child opens as a replica of shard i + N that
  no request can reach yet (the dataset still has N shards). The node then proposes
  `ReshardCopyReady`.
- Mirror: every op the parent copy logs from then on (a primary's own ops in `log_ops`, a
  copy's replicated and caught-up ops) is logged and applied to the child too, with the same
  sequence number and term, before the parent acknowledges it. So a child holds exactly its
  parent's history, and a primary's child holds every op the primary acknowledged.
  An op whose sequence number does not follow the child's last is first filled in from the
  parent copy's own log (an op whose apply failed on the parent was applied again before the
  next, and only the next was mirrored); if the log cannot fill it (a copy that installed its
  primary's files, say), the mirror is broken: `ReshardCopyReady(False)` is proposed, and only
  once the meta group has taken it is the child dropped and built again. If the switch came
  first, the child is a shard of its own and is kept (dropping it would leave its primary, maybe
  this node, serving it empty).
- After the switch (FinishReshard; the dataset has 2N shards and a `split_epoch`), an op the
  parent accepted under an older epoch is still mirrored (it was planned under N shards: a
  write of a moved id among them). The epoch is the one the op carries (`ReplicatedOp.epoch`,
  stamped when the primary logged it), not the path the op took to this copy. The child's primary (the parent's) writes nothing of its
  own before it has held the parent's write lock once after learning of the switch (`seal`):
  then no old-epoch op is in flight, and none can start.
- Purge: each primary of a split dataset then deletes the rows it holds that belong to the
  other half (`stable_hash(id) % 2N`), as replicated writes (logged, applied, sent to its
  in-sync copies, like compaction), in batches of `reshard_purge_batch_ids_max`. Until that is
  done a moved row is in both shards; the router's merge keeps one hit per id.

Children of a reshard that is cancelled, or of a dataset that is gone, are dropped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import time

from consensus import commands
from consensus.placement import stable_hash
from consensus.records import DatasetRecord
from proto import node_pb2
from shard.replica import ShardReplica
from tributary import errors, limits

log = logging.getLogger("tributary.node.split")

_PURGED_MARK = "split-purged-epoch"


class Splitter:
    """Per node: the children it built, keyed (dataset uuid, parent shard) -> child shard."""

    def __init__(self, host, replication, meta):
        self.host = host                # node.server.ShardHost
        self.replication = replication  # node.replication.Replication
        self.meta = meta                # consensus.client.MetaClient
        self.children: dict[tuple[str, int], int] = {}
        self._broken: set[tuple[str, int]] = set()
        self._sealed: set[tuple[str, int]] = set()
        self._purged: set[tuple[str, int, int]] = set()
        self._checked: dict[tuple[str, int, int], float] = {}

    # ---- what the other node modules ask ----------------------------------------------------

    def _phase(self, dataset_uuid: str, parent: int, child: int) -> str:
        """Where the split that built `child` of `parent` is: "building" (its reshard is in
        progress), "switched" (the dataset has its count now: the child is a shard like any
        other) or "over" (cancelled, or a later split is under way)."""
        state = self.host.catalog.state
        new_count = 2 * (child - parent)
        reshard = state.reshards.get(dataset_uuid)
        if reshard is not None:
            return "building" if reshard.new_count == new_count else "over"
        record = state.datasets.get(dataset_uuid)
        if record is not None and record.split_epoch and record.shard_count == new_count:
            return "switched"
        return "over"

    def holds(self, dataset_uuid: str, shard: int) -> bool:
        """Whether (dataset, shard) is a child this node is building (not a copy placed
        elsewhere)."""
        return any(u == dataset_uuid and child == shard and
                   self._phase(u, parent, child) == "building"
                   for (u, parent), child in list(self.children.items()))

    def _mirrors(self, dataset_uuid: str, parent: int, child: int,
                 era_epoch: int | None) -> bool:
        """Whether an op of the parent accepted under `era_epoch` (None: unknown, a caught-up
        op) belongs to the history this child mirrors: any op while its split is building,
        after the switch only one accepted under an epoch older than the switch's."""
        phase = self._phase(dataset_uuid, parent, child)
        if phase == "building":
            return True
        record = self.host.catalog.state.datasets.get(dataset_uuid)
        return phase == "switched" and era_epoch is not None and \
            era_epoch < record.split_epoch

    def refuse_stale(self, record: DatasetRecord, shard: int, ops) -> None:
        """Before a primary logs `ops`: an op that changes rows, admitted under an epoch older
        than the dataset's last switch, is refused (StaleEpoch: the router re-plans). It was
        planned on the old shard count and may carry rows of the child, which writes on its
        own log once sealed, so mirroring it would find the child's own op at its sequence
        number and drop it as a duplicate (an acknowledged row lost at the purge). A 2PC
        decision passes: its rows were staged before the switch, and the child resolves its
        own copy of the txn."""
        current = self.host.catalog.state.datasets.get(record.uuid)
        if current is None or not current.split_epoch:
            return
        for op in ops:
            kind = op.WhichOneof("op")
            if kind == "finish":
                continue
            # A prepare is logged under a fresh record, long after its epoch was checked: the
            # epoch it was planned with is the one its request carries.
            era = (op.prepare.request.shard.epoch if kind == "prepare" else 0) or record.epoch
            if era < current.split_epoch:
                raise errors.StaleEpoch(
                    f"placement epoch {era} is older than the split of shard {shard} "
                    f"(epoch {current.split_epoch}): planned on the old shard count")
            # A router may stamp a plan made on the old count with the new epoch (its retry
            # refreshes the epoch, not the plan): a row that is not this shard's under the
            # current count would land where the purge deletes it.
            upserts = (op.prepare.request.upserts if kind == "prepare" else
                       op.write.upserts if kind == "write" else ())
            for vector in upserts:
                owner = stable_hash(vector.id) % current.shard_count
                if owner != shard:
                    raise errors.StaleEpoch(
                        f"vector '{vector.id}' belongs to shard {owner} of "
                        f"{current.shard_count}, not {shard}: planned on an older shard count")

    async def mirror(self, record: DatasetRecord, shard: int, ops, era_epoch: int | None
                     ) -> None:
        """Logs and applies to the child of (record, shard) the ops its parent just logged.
        Called with the parent's write lock (a primary) or apply lock (a copy) held. Whether
        an op belongs to the child's history is decided by the epoch the op carries (stamped
        by the primary that logged it), so copies that got the same op by different paths
        decide alike; `era_epoch` stands in for ops logged before ops carried it."""
        child = self.children.get((record.uuid, shard))
        if child is None or not ops:
            return
        ops = [op for op in ops
               if self._mirrors(record.uuid, shard, child, op.epoch or era_epoch)]
        if not ops:
            return
        key = (record.uuid, child)
        async with self.replication._apply_lock(key):
            oplog = self.replication.oplog(*key)
            for op in ops:
                if op.seq <= oplog.last_seq:
                    continue        # a duplicate (a copy's child caught up from its primary)
                if op.seq != oplog.last_seq + 1:
                    await self._fill_gap(record, shard, child, op.seq)
                if op.seq != oplog.last_seq + 1:
                    log.warning("child %s/%d of shard %d stopped mirroring: op %d after op %d",
                                record.uuid, child, shard, op.seq, oplog.last_seq)
                    self._broken.add((record.uuid, shard))
                    return
                await self.replication._apply_one(record, child, op)

    async def _fill_gap(self, record: DatasetRecord, shard: int, child: int, before: int
                        ) -> None:
        """The parent copy logged ops its child missed (one whose apply failed on the parent
        and was applied again before the next, which mirrored only the next): the child takes
        them from the parent's own log, up to op `before`, if they are of its history. Called
        with both apply locks held."""
        oplog = self.replication.oplog(record.uuid, child)
        missing = await asyncio.to_thread(
            self.replication.oplog(record.uuid, shard).read_from, oplog.last_seq + 1,
            before - oplog.last_seq - 1, 1 << 62)
        from node.replication import _parse
        for logged in missing or ():
            op = _parse(logged)
            if op.seq != oplog.last_seq + 1 or op.seq >= before or not self._mirrors(
                    record.uuid, shard, child, op.epoch or None):
                return
            await self.replication._apply_one(record, child, op)
        log.info("child %s/%d of shard %d took ops up to %d from its parent's log",
                 record.uuid, child, shard, oplog.last_seq)

    async def parent_replaced(self, dataset_uuid: str, shard: int) -> None:
        """The parent copy's files were replaced (a snapshot of its primary's): its child no
        longer mirrors it. Dropped at once, and reported, before the parent can rejoin the
        in-sync set."""
        child = self.children.get((dataset_uuid, shard))
        if child is None:
            return
        if self._phase(dataset_uuid, shard, child) == "building":
            await self._drop(dataset_uuid, shard, report=True)
        else:
            del self.children[(dataset_uuid, shard)]     # a shard of its own now: keep it

    async def seal(self, record: DatasetRecord, shard: int) -> None:
        """Before the first write of a child primary after the switch: holds its parent's
        write lock once, so every op accepted under the old shard count is mirrored (later
        ones see the new count). Called with the child's write lock held."""
        key = (record.uuid, shard)
        if not record.split_epoch or key in self._sealed:
            return
        half = record.shard_count // 2
        if shard >= half:
            async with self.replication.write_lock(record.uuid, shard - half):
                pass
        self._sealed.add(key)

    # ---- restart ---------------------------------------------------------------------------------

    async def reopen(self) -> int:
        """At start, before serving: reopens the children of reshards still in progress that
        this node reported built (ShardHost.reopen_from_disk left their directories), and
        brings each up to its parent's log position from the parent's log (a crash between
        logging a parent op and mirroring it). A child that cannot be (a log of another
        history) is dropped and built again. Returns how many were reopened or took ops: the
        caller then replays their own logs past their stores' last commits
        (Replication.reapply_tails)."""
        state = self.host.catalog.state
        reopened = await self._open_switched_children(state)
        # Copies of a split dataset may still hold rows of the other half (the purge has not
        # reached them, or not been marked): they answer only their own until that is known.
        for (uuid, shard), replica in list(self.host.replicas.items()):
            record = state.datasets.get(uuid)
            if record is not None and record.split_epoch and shard < record.shard_count and \
                    _read_mark(os.path.join(self.host.shard_path(uuid, shard),
                                            _PURGED_MARK)) < record.split_epoch:
                hide_foreign_rows(replica, uuid, shard, self.host.catalog)
        for uuid, reshard in state.reshards.items():
            record = state.datasets.get(uuid)
            if record is None:
                continue
            for parent in range(reshard.old_count):
                child = parent + reshard.old_count
                path = self.host.shard_path(uuid, child)
                if self.host.node_id not in record.copies_of(parent) or \
                        not os.path.isdir(path):
                    continue
                if await self._reopen_child(record, parent, child):
                    reopened.add((uuid, child))
                else:
                    await asyncio.to_thread(shutil.rmtree, path, True)
                    await self._report(uuid, parent, False)
        # Children whose switch came while this node was down, or before a crash that fell
        # between logging a parent op and mirroring it: the child must still get every op its
        # parent accepted under the old count before it writes one of its own.
        for uuid, child in sorted(self.host.replicas):
            record = state.datasets.get(uuid)
            if record is None or not record.split_epoch or uuid in state.reshards:
                continue
            half = record.shard_count // 2
            if half <= child < record.shard_count and \
                    (uuid, child - half) in self.host.replicas:
                if await self._catch_up_switched(record, child - half, child):
                    reopened.add((uuid, child))
        return len(reopened)

    async def _open_switched_children(self, state) -> set[tuple[str, int]]:
        """Opens the children on disk whose split switched after ShardHost.reopen_from_disk
        read the catalog: it skipped them as a split's children, and the catalog now places
        them here as shards of their own, so the loop over reshards in progress does not open
        them either. Returns those it opened, with their staged txns loaded; the caller
        hides their foreign rows and catches them up like any switched child, and they count
        as reopened, so their own logs are replayed past their stores' last commits.

        Opened by their first request instead (chaos: reshard, seed 128, the switch landing
        while the node started), a child served without the ops its log held past its store's
        last commit, the rows of two acknowledged batches among them, since nothing replayed
        them; its purge listed its rows without one of them, and the next restart's replay
        brought that row of the other half back to stay."""
        opened: set[tuple[str, int]] = set()
        for uuid, record in list(state.datasets.items()):
            if not record.split_epoch or uuid in state.reshards:
                continue
            for child in range(record.shard_count // 2, record.shard_count):
                if (uuid, child) in self.host.replicas or \
                        self.host.node_id not in record.copies_of(child) or \
                        not os.path.isdir(self.host.shard_path(uuid, child)):
                    continue
                replica = await self.host.replica_unfenced(uuid, child)
                if replica is None:
                    continue
                participant = self.replication.participant
                if participant is not None:
                    await participant.load_staged_of(uuid, child, replica)
                log.info("opened child %s/%d, switched while this node started", uuid, child)
                opened.add((uuid, child))
        return opened

    async def _catch_up_switched(self, record: DatasetRecord, parent: int, child: int) -> bool:
        """At start: the child of a switched split takes from its parent copy's log the ops
        accepted under the old count that it lacks, as mirroring would have given them
        (`mirror` picks them by the epoch each op carries). Without this, a primary killed
        after logging such an op on the parent and before mirroring it, with the switch made
        while it was down, served the child without the op; a copy of the child that got the
        op mirrored from its own parent copy then held an op at a sequence number where the
        child's primary logged another, and the purge, having listed the child's rows before
        taking the op over from that copy, kept a row of the other half. Returns whether it
        took any. The parent-child pair is remembered, as it would be had the node not
        restarted."""
        self.children[(record.uuid, parent)] = child
        parent_log = self.replication.oplog(record.uuid, parent)
        child_log = self.replication.oplog(record.uuid, child)
        before = child_log.last_seq
        if parent_log.last_seq <= before:
            return False
        if parent_log.term_at(before) != child_log.last_term:
            # The child's log is not a prefix of this parent copy's: it holds ops of its own
            # since the switch (its primary sealed it, so it had every old-count op first), or
            # it came from the child's primary. Nothing here is the child's to take, and taking
            # it would put the parent's ops where the child's own are.
            log.info("child %s/%d has a history of its own from op %d on; nothing to take from "
                     "its parent shard %d", record.uuid, child, before, parent)
            return False
        missing = await asyncio.to_thread(parent_log.read_from, before + 1,
                                          limits.replication_log_ops_max, 1 << 62)
        if not missing:
            return False
        from node.replication import _parse
        await self.mirror(record, parent, [_parse(op) for op in missing], None)
        if child_log.last_seq == before:
            return False
        log.info("child %s/%d took ops %d-%d of its parent shard %d's log, accepted before "
                 "the split's switch", record.uuid, child, before + 1, child_log.last_seq,
                 parent)
        return True

    async def _reopen_child(self, record: DatasetRecord, parent: int, child: int) -> bool:
        replica = await asyncio.to_thread(ShardReplica, self.host.shard_path(record.uuid, child),
                                          record.dimensions, record.metric_type,
                                          record.index_type or "hnsw")
        self.host.replicas[(record.uuid, child)] = replica
        self.replication.forget(record.uuid, child)
        self.children[(record.uuid, parent)] = child
        hide_foreign_rows(replica, record.uuid, child, self.host.catalog)
        participant = self.replication.participant
        if participant is not None:
            # Txns prepared on the parent when the child was built (their files came with the
            # copy) or mirrored since: their decisions may still be mirrored.
            await participant.load_staged_of(record.uuid, child, replica)
        parent_log = self.replication.oplog(record.uuid, parent)
        child_log = self.replication.oplog(record.uuid, child)
        if child_log.last_seq > parent_log.last_seq or \
                parent_log.term_at(child_log.last_seq) != child_log.last_term:
            log.warning("child %s/%d does not mirror its parent's log; building it again",
                        record.uuid, child)
            await self._drop_reported(record.uuid, parent)
            return False
        missing = await asyncio.to_thread(parent_log.read_from, child_log.last_seq + 1,
                                          limits.replication_log_ops_max, 1 << 62)
        if missing is None:
            await self._drop_reported(record.uuid, parent)
            return False
        from node.replication import _parse
        await self.mirror(record, parent, [_parse(op) for op in missing], None)
        if (record.uuid, parent) in self._broken:
            await self._drop_reported(record.uuid, parent)
            return False
        log.info("reopened child %s/%d of shard %d at op %d", record.uuid, child, parent,
                 child_log.last_seq)
        return True

    # ---- the periodic round ----------------------------------------------------------------------

    async def round(self) -> None:
        """Builds the children this node owes, reports them, drops those of cancelled reshards,
        and purges the moved rows of the shards it is primary of after a switch."""
        state = self.host.catalog.state
        me = self.host.node_id
        for key in sorted(self._broken):
            self._broken.discard(key)
            child = self.children.get(key)
            if child is not None and self._phase(key[0], key[1], child) == "building":
                await self._drop_reported(*key)
        for (uuid, parent), child in sorted(self.children.items()):
            phase = self._phase(uuid, parent, child)
            if phase == "over" and (state.datasets.get(uuid) is None or
                                    state.datasets[uuid].shard_count <= child):
                log.info("dropping child %s/%d: its reshard is over without a switch", uuid,
                         child)
                await self._drop(uuid, parent, report=False)
            elif phase == "over":
                # A shard of its own since an earlier switch, now a later split's parent.
                del self.children[(uuid, parent)]
        for uuid, reshard in sorted(state.reshards.items()):
            record = state.datasets.get(uuid)
            if record is None or record.shard_count != reshard.old_count:
                continue
            for parent in record.shards_on(me):
                child = parent + reshard.old_count
                if self.children.get((uuid, parent)) != child:
                    try:
                        await self._build(record, parent, child)
                    except errors.TributaryError as exc:
                        log.info("building child of %s/%d: %s", uuid, parent, exc.message)
                        continue
                # Reported only once it mirrors: `_build` gives up without building when the
                # reshard ended or the dataset went under it (it also did when the copy was
                # promoted mid-round, before it took both locks), and a report then let the
                # switch count on a child that did not exist: it opened empty, without the
                # rows its parent had acknowledged (chaos: reshard, seeds 128 and 129).
                if self.children.get((uuid, parent)) == child and \
                        f"{parent}/{me}" not in reshard.ready:
                    await self._report(uuid, parent, True)
        for uuid, reshard in state.reshards.items():
            for shard in range(reshard.new_count):
                replica = self.host.replicas.get((uuid, shard))
                if replica is not None:
                    hide_foreign_rows(replica, uuid, shard, self.host.catalog)
        for record in list(state.datasets.values()):
            if record.split_epoch and record.uuid not in state.reshards:
                for shard in range(record.shard_count):
                    if (record.uuid, shard, record.split_epoch) in self._purged:
                        continue
                    replica = self.host.replicas.get((record.uuid, shard))
                    if replica is not None:
                        hide_foreign_rows(replica, record.uuid, shard, self.host.catalog)
                    try:
                        if record.primary_of(shard) == me:
                            await self._purge(record, shard)
                        elif replica is not None:
                            await self._check_clean(record, shard, replica)
                    except errors.TributaryError as exc:
                        log.info("purging moved rows of %s/%d: %s", record.uuid, shard,
                                 exc.message)

    async def _report(self, uuid: str, parent: int, ready: bool) -> bool:
        """Whether the meta group took the report (it refuses one once the split is over)."""
        try:
            await self.meta.propose(commands.ReshardCopyReady(
                uuid, parent, self.host.node_id, ready, int(time.time() * 1000)))
            return True
        except errors.TributaryError as exc:
            log.info("reporting child of %s/%d %s: %s", uuid, parent,
                     "built" if ready else "dropped", exc.message)
            return False

    async def _drop_reported(self, uuid: str, parent: int) -> bool:
        """Drops a child this node reported built, once the meta group has taken back the
        report: only then can the switch no longer count on it. If the switch came first, the
        child is a shard of its own (this node may be its primary): it is kept, and the next
        round sees it switched. Returns whether it was dropped."""
        if not await self._report(uuid, parent, False):
            self._broken.add((uuid, parent))
            return False
        await self._drop(uuid, parent, report=False)
        return True

    async def _build(self, record: DatasetRecord, parent: int, child: int) -> None:
        """Copies the parent copy's directory (store, graph, op log, staged txns) to the
        child's under the parent's lock, and opens the child."""
        uuid = record.uuid
        parent_replica = await self.host.replica_unfenced(uuid, parent)
        if parent_replica is None:
            return
        # The graph saved now travels with the files, as for a snapshot (no rebuild).
        await asyncio.to_thread(parent_replica.save_index)
        source = self.host.shard_path(uuid, parent)
        target = self.host.shard_path(uuid, child)
        started = time.monotonic()
        # Both locks, whatever this copy's role: a primary's writes hold the write lock, a
        # copy's applies the apply lock, and a copy may be promoted while its files are being
        # copied. Built under the apply lock alone, such a child missed a write the new
        # primary took meanwhile: it was not in the files yet, and not mirrored, since the
        # child was not registered yet. Switched, the child answered the value before the
        # write's (chaos: reshard, seed 127).
        async with self.replication.write_lock(uuid, parent), \
                self.replication._apply_lock((uuid, parent)):
            fresh = self.host.catalog.state.datasets.get(uuid)
            if fresh is None or uuid not in self.host.catalog.state.reshards:
                return      # the reshard is over, or the dataset gone, meanwhile
            flush = getattr(parent_replica, "flush", None)
            if flush is not None:
                # Group commit: the files must hold every op up to the log they travel with.
                await asyncio.to_thread(flush)
            stale = self.host.replicas.pop((uuid, child), None)
            if stale is not None:
                await asyncio.to_thread(stale.close)
            self.replication.forget(uuid, child)
            await asyncio.to_thread(_copy_dir, source, target)
            participant = self.replication.participant
            if participant is not None:
                # The txns prepared on the parent now (their files came with the copy) are the
                # child's too, before any of their decisions can be mirrored.
                await participant.load_staged_of(uuid, child, _Dir(target))
            # Mirroring starts here; the child's replica opens outside the lock (below, or at
            # the first mirrored op), so the parent's writes wait only for the file copy.
            self.children[(uuid, parent)] = child
        replica = await self.host.replica_unfenced(uuid, child)
        if replica is None:
            return
        # From the switch on (read at each search), each answers only its own rows.
        hide_foreign_rows(replica, uuid, child, self.host.catalog)
        hide_foreign_rows(parent_replica, uuid, parent, self.host.catalog)
        log.info("built child %s/%d of shard %d (%d vectors) in %.2f s", uuid, child, parent,
                 replica.count(), time.monotonic() - started)

    async def _drop(self, uuid: str, parent: int, report: bool) -> None:
        child = self.children.pop((uuid, parent), None)
        if child is None:
            return
        async with self.replication._apply_lock((uuid, child)):
            replica = self.host.replicas.pop((uuid, child), None)
            if replica is not None:
                await asyncio.to_thread(replica.close)
            self.replication.forget(uuid, child)
            participant = self.replication.participant
            if participant is not None:
                await participant.forget_shard(uuid, child)
            await asyncio.to_thread(shutil.rmtree, self.host.shard_path(uuid, child), True)
        if report:
            await self._report(uuid, parent, False)

    # ---- after the switch: the purge ---------------------------------------------------------

    def _txns_prepared_on(self, dataset_uuid: str, shard: int) -> bool:
        """Whether a 2PC txn is prepared on this copy of the shard. A txn prepared under the
        old count (on a parent, mirrored to its child) may hold rows of the other half, and
        its decision may come after the switch: the purge waits for it, or those rows would
        land after the ids were read."""
        participant = self.replication.participant
        name = f"{dataset_uuid}/{shard}"
        return any(key[1] == name for key in list(getattr(participant, "prepared", {}) or {}))

    async def _check_clean(self, record: DatasetRecord, shard: int, replica) -> None:
        """A copy (not the primary, which purges) shows all its rows again once the primary's
        purge has reached it: it holds no row of another shard. Looked at every
        reshard_copy_check_interval_ms at most (it reads every id)."""
        key = (record.uuid, shard, record.split_epoch)
        if self._txns_prepared_on(record.uuid, shard):
            return
        now = time.monotonic()
        if now - self._checked.get(key, 0.0) < limits.reshard_copy_check_interval_ms / 1000:
            return
        self._checked[key] = now
        foreign = await asyncio.to_thread(_foreign_ids, replica, shard, record.shard_count)
        if not foreign:
            self._purged.add(key)
            show_all_rows(replica)

    async def _purge(self, record: DatasetRecord, shard: int) -> None:
        """Deletes, as replicated writes, the rows this primary's copy holds that hash to
        another shard under the current count. Marked done in the shard's directory, so a
        restart does not read every id again."""
        uuid, epoch = record.uuid, record.split_epoch
        mark = os.path.join(self.host.shard_path(uuid, shard), _PURGED_MARK)
        replica = await self.host.replica_unfenced(uuid, shard)
        if replica is None or self._txns_prepared_on(uuid, shard):
            return
        if _read_mark(mark) >= epoch:
            self._purged.add((uuid, shard, epoch))
            show_all_rows(replica)
            return
        started = time.monotonic()
        async with self.replication.write_lock(uuid, shard):
            # A barrier before the listing: an op accepted under the old count and still in
            # flight (on the parent), or still to be mirrored (on a child: seal), has landed,
            # and none can follow, so no moved row arrives after the ids are read. The ops an
            # in-sync copy holds beyond this one's are taken over here too, not at the first
            # delete below: taken over after the listing, their rows would stay.
            if await self._still_purging(uuid, shard, record.shard_count) is None:
                return
        moved = await asyncio.to_thread(_foreign_ids, replica, shard, record.shard_count)
        for start in range(0, len(moved), limits.reshard_purge_batch_ids_max):
            batch = moved[start:start + limits.reshard_purge_batch_ids_max]
            async with self.replication.write_lock(uuid, shard):
                fresh = await self._still_purging(uuid, shard, record.shard_count)
                if fresh is None:
                    return
                op = node_pb2.ReplicatedOp(
                    write=node_pb2.WriteRequest(delete_ids=batch,
                                                existing=node_pb2.EXISTING_OVERWRITE),
                    at_ms=int(time.time() * 1000))
                await self.replication.log_apply_send(fresh, shard, op)
        await asyncio.to_thread(_write_mark, mark, epoch)
        self._purged.add((uuid, shard, epoch))
        show_all_rows(replica)
        log.info("purged %d moved rows from %s/%d in %.2f s", len(moved), uuid, shard,
                 time.monotonic() - started)


    async def _still_purging(self, uuid: str, shard: int, count: int
                             ) -> DatasetRecord | None:
        """Under the shard's write lock: the current record once sealed and resynced, or None
        when the purge is no longer this node's (the next primary does it)."""
        fresh = self.host.catalog.state.datasets.get(uuid)
        if fresh is None or fresh.primary_of(shard) != self.host.node_id or \
                fresh.shard_count != count:
            return None
        await self.seal(fresh, shard)
        await self.replication.ensure_resynced(fresh, shard)
        return fresh


_SEARCHES = ("search", "search_now", "search_batch", "text_search")


def hide_foreign_rows(replica: ShardReplica, dataset_uuid: str, shard: int, catalog) -> None:
    """Makes the replica's searches answer only the rows its shard owns under the dataset's
    current shard count (the catalog's, read at each call), while the dataset has been split
    and this copy may still hold rows the split moved away (or, for a child, rows that stay in
    its parent). Each search asks the store for twice as many hits, and again for more while
    fewer than top_k owned ones remain, so the owned top_k is exact. show_all_rows undoes it."""
    if "_split_owner" in replica.__dict__:
        return
    cls = type(replica)
    replica._split_owner = (dataset_uuid, shard)

    def count_now() -> int:
        record = catalog.state.datasets.get(dataset_uuid)
        if record is None or not record.split_epoch or shard >= record.shard_count:
            return 0
        return record.shard_count

    def owned(outcome, count: int, top_k: int):
        hits = [h for h in outcome.hits if stable_hash(h.record.id) % count == shard]
        return dataclasses.replace(outcome, hits=hits[:top_k],
                                   filtered_out=outcome.filtered_out + len(outcome.hits)
                                   - len(hits))

    def widened(call, top_k: int):
        count = count_now()
        if not count or top_k <= 0:
            return call(top_k)
        rows = max(top_k, replica.count())
        asked, kept = min(top_k * 2, rows), None
        while True:
            try:
                outcome = call(asked)
            except RuntimeError:
                # hnswlib finds fewer than k live rows among many deleted ones (the purge's):
                # the last answer is all there is.
                if kept is None:
                    raise
                return kept
            if outcome is None:
                return kept
            kept = owned(outcome, count, top_k)
            if len(kept.hits) >= top_k or len(outcome.hits) < asked or asked >= rows:
                return kept
            asked = min(asked * 2, rows)

    def search(query, top_k, *args, **kwargs):
        return widened(lambda k: cls.search(replica, query, k, *args, **kwargs), top_k)

    def search_now(query, top_k, *args, **kwargs):
        return widened(lambda k: cls.search_now(replica, query, k, *args, **kwargs), top_k)

    def text_search(query_text, top_k, *args, **kwargs):
        return widened(lambda k: cls.text_search(replica, query_text, k, *args, **kwargs),
                       top_k)

    def search_batch(queries, top_ks, ef_search=0, include_content=None,
                     include_metadata=None, blocking=True, packed=None):
        # `packed` is declined: foreign rows are dropped per hit, so the answers stay hits.
        count = count_now()
        if not count:
            return cls.search_batch(replica, queries, top_ks, ef_search, include_content,
                                    include_metadata, blocking)
        if not blocking:
            return None     # the owned top_k may take more searches: a worker thread's work
        outcomes = cls.search_batch(replica, queries, [k * 2 for k in top_ks], ef_search,
                                    include_content, include_metadata)
        answers = []
        for i, (outcome, top_k) in enumerate(zip(outcomes, top_ks)):
            kept = owned(outcome, count, top_k)
            if len(kept.hits) < top_k and len(outcome.hits) >= top_k * 2:
                kept = search(queries[i], top_k, ef_search,
                              bool(include_content and include_content[i]),
                              bool(include_metadata and include_metadata[i]))
            answers.append(kept)
        return answers

    for name, wrapper in (("search", search), ("search_now", search_now),
                          ("text_search", text_search), ("search_batch", search_batch)):
        if hasattr(cls, name):
            setattr(replica, name, wrapper)


def only_owned(replica: ShardReplica, rows: list, catalog) -> list:
    """Of `rows` (records read from `replica`), those its shard owns under the current count
    while the replica hides foreign rows (hide_foreign_rows); all of them otherwise. A listing
    so never shows a moved row twice, from the child and from the parent not yet purged."""
    owner = replica.__dict__.get("_split_owner")
    if owner is None:
        return rows
    uuid, shard = owner
    record = catalog.state.datasets.get(uuid)
    if record is None or not record.split_epoch or shard >= record.shard_count:
        return rows
    return [r for r in rows if stable_hash(r.id) % record.shard_count == shard]


def show_all_rows(replica: ShardReplica) -> None:
    """Undoes hide_foreign_rows (the copy holds only its own rows again)."""
    for name in (*_SEARCHES, "_split_owner"):
        replica.__dict__.pop(name, None)


class _Dir:
    """The one attribute Participant.load_staged_of reads of a replica: its directory."""

    def __init__(self, path: str):
        self.path = path


def _foreign_ids(replica: ShardReplica, shard: int, shard_count: int) -> list[str]:
    """Every id the replica holds (soft-deleted ones included) that hashes to another shard."""
    ids: list[str] = list(replica.soft_deleted_ids())
    after = -1
    while True:
        rows, after, exhausted = replica.list_after(after, limits.list_page_size_max, False)
        ids.extend(r.id for r in rows)
        if exhausted or not rows and after < 0:
            break
    return sorted({i for i in ids if stable_hash(i) % shard_count != shard})


def _copy_dir(source: str, target: str) -> None:
    """Copies a shard directory (temporary files and cut/download leftovers aside) to
    `target`, replacing whatever is there, durably enough: the child is reported built only
    after this, and a restart checks its log against the parent's anyway."""
    shutil.rmtree(target, True)
    incoming = f"{target}.incoming-split"
    shutil.rmtree(incoming, True)
    shutil.copytree(source, incoming, ignore=lambda d, names: [
        n for n in names if n.endswith(".tmp") or n == _PURGED_MARK])
    os.replace(incoming, target)


def _read_mark(path: str) -> int:
    try:
        with open(path) as handle:
            return int(handle.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def _write_mark(path: str, epoch: int) -> None:
    with open(path + ".tmp", "w") as handle:
        handle.write(str(epoch))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(path + ".tmp", path)
