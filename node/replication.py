"""Replication between the copies of a shard: the node-to-node half of DESIGN.md promise 7.

Roles come from the catalog (consensus/replication.py): per shard, a primary, the copies, the
in-sync set and the primary term.

- The primary applies a write, gives it the shard's next sequence number, appends it to its
  operation log (node/oplog.py) and sends it to every other in-sync copy at once. It answers the
  client only when each of them holds it durably; a copy that fails or misses the deadline is
  taken out of the in-sync set through Raft first. If that proposal fails (the meta group is
  away, or this node is no longer primary), the write is not acknowledged.
- A copy applies operations in sequence order, only from a term at least as new as any it has
  seen, and logs them too. A gap, or an op whose term differs from the one it holds at that
  sequence number (a history that diverged under an old primary), is refused.
- A copy outside the in-sync set catches up by itself: it pulls the ops after its last one from
  the primary's log (FetchOps). When it has them all, the primary, holding the shard's write lock
  so that no write slips between, puts it back in the in-sync set. A copy whose log diverged, or
  that needs ops the primary no longer holds, starts over from an empty shard.
- A newly promoted primary first pulls any op that another in-sync copy holds beyond its own
  (the old primary may have reached some copies and not others) and pushes what the others
  miss, then serves writes in its new term.

The decisions are pure functions (`replicate_decision`, `fetch_decision`), tested directly; the
classes below are their thin drivers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import grpc

from consensus import commands
from consensus.records import DatasetRecord
from node.convert import records_from_protos, update_records_from_protos
from node.oplog import LoggedOp, OpLog
from proto import node_pb2
from shard.records import ExistingPolicy
from tributary import cluster_auth, errors, faults, limits
from tributary.grpc_options import internal_channel_options

log = logging.getLogger("tributary.node.replication")

_SERVICE = node_pb2.DESCRIPTOR.services_by_name["ShardNode"]


# ---- pure decisions ---------------------------------------------------------------------------

APPLY, DUPLICATE, GAP, DIVERGED, STALE_TERM = "apply", "duplicate", "gap", "diverged", "stale"


def replicate_decision(last_seq: int, known_term: int, request_term: int, op_seq: int,
                       op_term: int, held_term: int | None) -> str:
    """What a copy does with one replicated op. `held_term` is the term of the op the copy
    holds at op_seq (None when it holds none there)."""
    if request_term < known_term:
        return STALE_TERM
    if op_seq <= last_seq:
        return DUPLICATE if held_term == op_term else DIVERGED
    return APPLY if op_seq == last_seq + 1 else GAP


OPS, CAUGHT_UP, START_OVER = "ops", "caught_up", "start_over"


def catch_up_still_valid(now: DatasetRecord | None, shard: int, me: str, primary: str,
                         term: int) -> bool:
    """Whether this node's catch-up of `shard` from `primary`, begun in `term`, may still change
    its copy: the catalog as it is now (`now`) must still name `primary` the shard's primary in
    that term. A catch-up takes seconds (a round, a snapshot download) and a copy can be promoted
    meanwhile; a promoted copy that then took the deposed primary's files lost the writes it
    had acknowledged as primary (chaos `replication` scenario, seed 115: its copy was ahead of
    the old primary, which answered "start over")."""
    return (now is not None and 0 <= shard < now.shard_count and me != primary
            and now.primary_of(shard) == primary and now.term_of(shard) == term)


def fetch_decision(copy_last_seq: int, copy_last_term: int, primary_last_seq: int,
                   primary_first_seq: int, primary_term_at_copy_last: int | None,
                   snapshot_behind_ops: int) -> str:
    """What the primary answers a copy that holds ops up to (copy_last_seq, copy_last_term).
    Log matching: the copy's history is a prefix of the primary's only if the primary holds the
    same op at the copy's last sequence number. START_OVER (copy the files) when it is not, when
    the ops the copy needs are no longer held, or when it is more than snapshot_behind_ops
    behind (copying files is then faster than replaying ops)."""
    if copy_last_seq > primary_last_seq or primary_term_at_copy_last != copy_last_term:
        return START_OVER
    if copy_last_seq == primary_last_seq:
        return CAUGHT_UP
    if copy_last_seq + 1 < primary_first_seq or \
            primary_last_seq - copy_last_seq > snapshot_behind_ops:
        return START_OVER
    return OPS


# ---- drivers ----------------------------------------------------------------------------------

@dataclass
class CopyProgress:
    """What the primary last heard from a copy, for status and lag."""

    last_seq: int = 0
    at: float = 0.0


class Replication:
    """Per node: the op logs of the copies it holds, the per-shard write locks of the shards it
    is primary of, and its client to the other nodes."""

    def __init__(self, host, meta, token: cluster_auth.ClusterToken | None):
        self.host = host            # node.server.ShardHost
        self.meta = meta            # consensus.client.MetaClient
        self.participant = None     # node.txn.Participant, set once both exist
        self.split = None           # node.split.Splitter (shard splits), set once both exist
        self.token = token
        self._logs: dict[tuple[str, int], OpLog] = {}
        self._write_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._apply_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._known_terms: dict[tuple[str, int], int] = {}
        self._resynced_terms: dict[tuple[str, int], int] = {}
        # A copy's op that was logged but failed to apply: applied again before the next one.
        self._unapplied: dict[tuple[str, int], node_pb2.ReplicatedOp] = {}
        self._stubs: dict[str, object] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.progress: dict[tuple[str, int, str], CopyProgress] = {}
        # When each hand-over of a moving shard first waited for its prepared txns.
        self._hand_over_waiting: dict[tuple[str, int], float] = {}
        # Per shard, the outcomes of its latest writes by the router's write id (bounded): a new
        # primary that took over a write its deposed predecessor applied but could not
        # acknowledge answers the router's retry of it with what it did.
        self._outcomes: dict[tuple[str, int], OrderedDict[str, node_pb2.WriteResponse]] = {}

    # ---- local state ---------------------------------------------------------------------------

    def oplog(self, dataset_uuid: str, shard: int) -> OpLog:
        key = (dataset_uuid, shard)
        found = self._logs.get(key)
        if found is None:
            found = self._logs[key] = OpLog(
                os.path.join(self.host.shard_path(dataset_uuid, shard), "oplog"),
                limits.replication_segment_ops_max, limits.replication_log_ops_max)
            # Ops past the store's last commit (group commit) are replayed from the log at
            # start, so the log never trims them.
            found.retain_from = lambda: self._replay_floor(key)
        return found

    def _replay_floor(self, key: tuple[str, int]) -> int | None:
        """The lowest op the copy's log must keep for a replay at start: the one the store's
        last commit recorded (its term is checked), or 0 while a store that never recorded
        one holds uncommitted writes; None when nothing constrains trimming."""
        replica = self.host.replicas.get(key)
        if replica is None:
            return None
        durable = getattr(replica, "durable_position", None)
        if durable is not None:
            return durable[0]
        return 0 if getattr(replica, "_applied_position", None) is not None else None

    def write_lock(self, dataset_uuid: str, shard: int) -> asyncio.Lock:
        return self._write_locks.setdefault((dataset_uuid, shard), asyncio.Lock())

    def _apply_lock(self, key: tuple[str, int]) -> asyncio.Lock:
        return self._apply_locks.setdefault(key, asyncio.Lock())

    def forget(self, dataset_uuid: str, shard: int) -> None:
        """The shard's copy is gone from this node (dropped or started over)."""
        self._logs.pop((dataset_uuid, shard), None)
        self._resynced_terms.pop((dataset_uuid, shard), None)
        self._unapplied.pop((dataset_uuid, shard), None)

    def remember_outcome(self, key: tuple[str, int], op: node_pb2.ReplicatedOp) -> None:
        """Keeps the outcome of an applied write that carries a router write id."""
        if op.WhichOneof("op") != "write" or not op.write.write_id or \
                not op.HasField("outcome"):
            return
        seen = self._outcomes.setdefault(key, OrderedDict())
        # A copy of its own: op.outcome is a view into the op's protobuf arena, and keeping it
        # kept the whole op (every vector of the write) alive, up to
        # replication_write_outcomes_max ops a shard: ~70 MB of a node holding 100k rows after a
        # load, gone only at a restart (memray, bench.million).
        seen[op.write.write_id] = node_pb2.WriteResponse.FromString(
            op.outcome.SerializeToString())
        seen.move_to_end(op.write.write_id)
        while len(seen) > limits.replication_write_outcomes_max:
            seen.popitem(last=False)

    def outcome_of(self, dataset_uuid: str, shard: int,
                   write_id: str) -> node_pb2.WriteResponse | None:
        """What an applied write with this router write id answered, if this copy holds it."""
        if not write_id:
            return None
        return self._outcomes.get((dataset_uuid, shard), {}).get(write_id)

    def _stub(self, address: str):
        stub = self._stubs.get(address)
        if stub is None:
            channel = grpc.aio.insecure_channel(address, options=internal_channel_options())
            self._channels[address] = channel
            stub = self._stubs[address] = cluster_auth.stub(_SERVICE, channel, self.token)
        return stub

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    def _address(self, node_id: str) -> str:
        node = self.host.catalog.state.nodes.get(node_id)
        if node is None:
            raise errors.Unavailable(f"node {node_id} is not registered")
        return node.address

    async def _call(self, node_id: str, method: str, request, timeout_ms: int):
        try:
            return await getattr(self._stub(self._address(node_id)), method)(
                request, timeout=timeout_ms / 1000)
        except grpc.aio.AioRpcError as exc:
            raise errors.from_wire(exc.code(), exc.details()) from None

    # ---- primary: sequence, log, replicate -----------------------------------------------------

    async def replicate(self, record: DatasetRecord, shard: int,
                        ops: list[node_pb2.ReplicatedOp]) -> None:
        """Logs `ops` (already applied here) and sends them to every other in-sync copy: for
        2PC prepares and decisions, whose staged files make a crash in between harmless. Plain
        writes log first instead (log_ops, apply_local, send_to_in_sync). Call with write_lock
        held; raises Unavailable when the ops may not be acknowledged."""
        await self.log_ops(record, shard, ops)
        await self.send_to_in_sync(record, shard, ops)

    async def log_ops(self, record: DatasetRecord, shard: int,
                      ops: list[node_pb2.ReplicatedOp]) -> None:
        """Gives `ops` the shard's next sequence numbers in this primary's term and appends
        them to its op log (fsynced). A write is logged before it is applied here: a crash
        between the two leaves an op the log holds and the store may not, which
        reapply_tails repairs at start, never rows the log does not know."""
        if self.split is not None:
            self.split.refuse_stale(record, shard, ops)
        oplog = self.oplog(record.uuid, shard)
        term = record.term_of(shard)
        logged = []
        for offset, op in enumerate(ops):
            op.seq, op.term, op.epoch = oplog.last_seq + 1 + offset, term, record.epoch
            logged.append(LoggedOp(op.seq, op.term, op.SerializeToString()))
        await asyncio.to_thread(oplog.append, logged)
        if self.split is not None:
            if (record.uuid, shard) in self.split.children:
                faults.crash_point(faults.SPLIT_PARENT_AFTER_LOG)
            # A shard being split: its child mirrors the op before anyone acknowledges it.
            await self.split.mirror(record, shard, ops, record.epoch)

    async def log_apply_send(self, record: DatasetRecord, shard: int,
                             op: node_pb2.ReplicatedOp, crash_point: str = "", apply=None):
        """A primary's op: logged, applied here, sent to the in-sync copies, to the end even
        when the call that asked for it is cancelled (run_to_the_end: an op logged and then
        left unapplied here would be applied by every copy that caught up, not by this
        primary). `apply` (a coroutine function) replaces apply_local for an op whose caller
        needs what applying it answers (soft delete, restore); its result is returned. Call
        with write_lock held."""
        async def steps():
            await self.log_ops(record, shard, [op])
            if crash_point:
                faults.crash_point(crash_point)
            done = await (apply() if apply else self.apply_local(record, shard, op))
            await self.send_to_in_sync(record, shard, [op])
            return done
        return await run_to_the_end(steps())

    async def apply_local(self, record: DatasetRecord, shard: int,
                          op: node_pb2.ReplicatedOp) -> None:
        """Applies a logged op to this node's store (not to its log). If that fails, the op
        is applied again before the next one (it is in the log, so copies will get it)."""
        key = (record.uuid, shard)
        if key in self._unapplied:
            await self._apply_to_store(record, shard, self._unapplied[key])
            del self._unapplied[key]
        self._unapplied[key] = op
        await self._apply_to_store(record, shard, op)
        del self._unapplied[key]
        self.remember_outcome(key, op)

    async def decided_in_store(self, dataset_uuid: str, shard: int,
                               txn_ids: set[str]) -> dict[str, str]:
        """The decisions, among 2PC txns `txn_ids`, whose logged finish op the store's last
        commit already holds (at or before its recorded position, in the same history as the
        copy's log): txn id -> "commit" or "abort". A staged plan of such a txn is a leftover:
        its rows are in the store, and it was removed only after that commit (when_durable),
        so a kill -9 between the two left it. Reloaded, it would wait for a decision no log
        replays (a copy takes decisions only from its primary's log, which is past it)."""
        replica = self.host.replicas.get((dataset_uuid, shard))
        durable = getattr(replica, "durable_position", None)
        oplog = self.oplog(dataset_uuid, shard)
        if not txn_ids or not oplog.last_seq or not await _holds_position(oplog, durable):
            return {}
        found: dict[str, str] = {}
        async for _, op in _logged_ops(oplog, oplog.first_seq, durable[0]):
            if op.WhichOneof("op") == "finish" and op.finish.txn_id in txn_ids:
                found[op.finish.txn_id] = op.finish.decision
        return found

    async def reapply_tails(self) -> int:
        """At start, before serving, after the participant reloaded its staged txns: applies
        again the ops the store may lack. Writes are group committed (shard/replica.py): the
        store's last commit records the (seq, term) of the last logged op it holds
        (`durable_position`, read from the store, never from memory), so every write, soft
        delete, restore and 2PC decision logged after it is applied again, in order (a
        committed decision's rows are group committed too, and its staged plan stays on disk
        until a store commit holds them, so the participant reloaded it). The last op is
        applied again whatever its kind: a crash between logging and applying left it in the
        log only. 2PC prepares before the last one are not: each was staged durably before the
        next op was logged. Applying an op twice changes nothing (ops are
        idempotent), and an ordered replay of a suffix the store partly holds ends in the same
        state. A store without a recorded position, or one whose position the log does not
        hold with the same term (another history), gets the last op only, as before group
        commit. Returns how many copies had ops applied."""
        applied = 0
        for (dataset_uuid, shard) in list(self.host.replicas):
            record = self.host.catalog.state.datasets.get(dataset_uuid)
            if record is None:
                continue
            oplog = self.oplog(dataset_uuid, shard)
            if not oplog.last_seq:
                continue
            replica = self.host.replicas.get((dataset_uuid, shard))
            durable = getattr(replica, "durable_position", None)
            first, from_durable = oplog.last_seq, False
            base = oplog.first_seq - 1
            if await _holds_position(oplog, durable):
                first, from_durable = durable[0] + 1, True
            elif durable is not None and durable[0] < base:
                # The log was reset at a snapshot's position (install_snapshot): those files
                # hold every op up to it, though their store recorded an older one (the last
                # ops before it changed no row: prepares). The log never trims an op at or past
                # a store's recorded position otherwise. So every op the log holds is past the
                # store. Replaying the last op only, as for another history, left a copy
                # restarted after a snapshot without the decisions it had taken since (chaos:
                # reshard seed 127, four batches missing on one copy).
                first, from_durable = base + 1, True
            replayed, seen = 0, first - 1
            async for logged, op in _logged_ops(oplog, first, oplog.last_seq):
                seen = logged.seq
                kind = op.WhichOneof("op")
                if kind in ("write", "soft_delete", "restore", "finish") or \
                        (kind == "prepare" and logged.seq == oplog.last_seq):
                    await self._apply_to_store(record, shard, op)
                    replayed += 1
            if from_durable and seen < oplog.last_seq:
                log.error("copy %s/%d: the op log no longer holds op %d, past the store's "
                          "last commit", dataset_uuid, shard, seen + 1)
            if replayed:
                applied += 1
                log.info("copy %s/%d: applied %d logged op(s) past the store's last commit "
                         "(op %s) again", dataset_uuid, shard, replayed,
                         durable[0] if durable else "unknown")
        return applied

    async def send_to_in_sync(self, record: DatasetRecord, shard: int,
                              ops: list[node_pb2.ReplicatedOp]) -> None:
        others = [n for n in record.in_sync_of(shard) if n != self.host.node_id]
        if not others:
            return
        ref = node_pb2.ShardRef(dataset_uuid=record.uuid, shard=shard, epoch=record.epoch)
        request = node_pb2.ReplicateRequest(shard=ref, term=record.term_of(shard), ops=ops)
        results = await asyncio.gather(*(
            self._call(node, "Replicate", request, limits.replication_ack_timeout_ms)
            for node in others), return_exceptions=True)
        for node, result in zip(others, results):
            if isinstance(result, BaseException):
                log.warning("copy %s of %s/%d missed ops up to %d (%s); taking it out of the "
                            "in-sync set", node, record.uuid, shard, ops[-1].seq,
                            getattr(result, "message", result))
                await self._refresh_quietly()
                fresh = self.host.catalog.state.datasets.get(record.uuid)
                if fresh is None or fresh.term_of(shard) != record.term_of(shard):
                    raise errors.Unavailable(f"shard {shard} changed primary term during the "
                                             "write; it was not acknowledged")
                if node not in fresh.in_sync_of(shard):
                    continue    # out of the set already (a finished move, another write)
                await self.set_in_sync(fresh, shard, node, False)
            else:
                self.progress[(record.uuid, shard, node)] = CopyProgress(result.last_seq,
                                                                         time.monotonic())

    async def set_in_sync(self, record: DatasetRecord, shard: int, node_id: str,
                          in_sync: bool) -> None:
        """Proposes the change in this primary's term; raises Unavailable when it cannot be
        made (this node was deposed, or the meta group is away)."""
        if in_sync and self.split is not None:
            await self.split.seal(record, shard)
        try:
            await self.meta.propose(commands.SetInSync(record.uuid, shard, node_id, in_sync,
                                                       record.term_of(shard),
                                                       int(time.time() * 1000)))
        except errors.TributaryError as exc:
            await self._refresh_quietly()
            raise errors.Unavailable(f"could not {'add' if in_sync else 'remove'} copy "
                                     f"{node_id} of shard {shard} to/from the in-sync set: "
                                     f"{exc.message}") from None
        await self.host.catalog.refresh()

    async def _refresh_quietly(self) -> None:
        try:
            await self.host.catalog.refresh()
        except errors.TributaryError:
            pass

    async def ensure_resynced(self, record: DatasetRecord, shard: int) -> None:
        """Before the first write of a term: take over ops another in-sync copy holds beyond
        this one's, and push what the others miss. Call with write_lock held."""
        key = (record.uuid, shard)
        term = record.term_of(shard)
        if self.split is not None:
            await self.split.seal(record, shard)
        if self._resynced_terms.get(key) == term:
            return
        oplog = self.oplog(*key)
        others = [n for n in record.in_sync_of(shard) if n != self.host.node_id]
        ref = node_pb2.ShardRef(dataset_uuid=record.uuid, shard=shard, epoch=record.epoch)
        statuses = await asyncio.gather(*(
            self._call(n, "CopyStatus", node_pb2.CopyStatusRequest(shard=ref),
                       limits.replication_ack_timeout_ms) for n in others),
            return_exceptions=True)
        ahead = sorted(((s.last_seq, n) for n, s in zip(others, statuses)
                        if not isinstance(s, BaseException) and s.last_seq > oplog.last_seq),
                       reverse=True)
        for _, node in ahead[:1]:
            while True:
                answer = await self._call(node, "FetchOps", node_pb2.FetchOpsRequest(
                    shard=ref, node_id=self.host.node_id, last_seq=oplog.last_seq,
                    last_term=oplog.last_term, ops_max=limits.replication_fetch_ops_max),
                    limits.replication_fetch_timeout_ms)
                if answer.start_over or not answer.ops:
                    break
                await self.apply_ops(record, shard, list(answer.ops))
        # Copies behind this one get what they miss now, or leave the in-sync set.
        for node, status in zip(others, statuses):
            if isinstance(status, BaseException) or status.last_seq >= oplog.last_seq:
                continue
            missing = await asyncio.to_thread(oplog.read_from, status.last_seq + 1,
                                              limits.replication_log_ops_max, 1 << 62)
            try:
                if missing is None:
                    raise errors.Unavailable("ops no longer held")
                ops = [_parse(op) for op in missing]
                await self._call(node, "Replicate", node_pb2.ReplicateRequest(
                    shard=ref, term=term, ops=ops), limits.replication_fetch_timeout_ms)
            except errors.TributaryError:
                await self.set_in_sync(record, shard, node, False)
        self._resynced_terms[key] = term

    # ---- copy: apply in order ------------------------------------------------------------------

    def known_term(self, record: DatasetRecord, shard: int) -> int:
        key = (record.uuid, shard)
        return max(self._known_terms.get(key, 0), record.term_of(shard))

    async def on_replicate(self, record: DatasetRecord, shard: int,
                           request: node_pb2.ReplicateRequest) -> int:
        """Applies a primary's ops in order; returns this copy's last sequence number."""
        key = (record.uuid, shard)
        async with self._apply_lock(key):
            known = self.known_term(record, shard)
            oplog = self.oplog(*key)
            for op in request.ops:
                held = oplog.term_at(op.seq) if op.seq <= oplog.last_seq else None
                decision = replicate_decision(oplog.last_seq, known, request.term, op.seq,
                                              op.term, held)
                if decision == STALE_TERM:
                    raise errors.StaleEpoch(f"primary term {request.term} is older than "
                                            f"{known}")
                if decision == GAP:
                    raise errors.Aborted(f"op {op.seq} arrived after op {oplog.last_seq}: "
                                         "this copy must catch up first")
                if decision == DIVERGED:
                    raise errors.Aborted(f"op {op.seq} differs from the one this copy holds")
                if decision == APPLY:
                    await run_to_the_end(self._apply_and_mirror(record, shard, op,
                                                                request.shard.epoch))
            self._known_terms[key] = max(known, request.term)
            return oplog.last_seq

    async def apply_ops(self, record: DatasetRecord, shard: int,
                        ops: list[node_pb2.ReplicatedOp]) -> None:
        """Applies ops pulled by this copy (catch-up), skipping those it already holds."""
        key = (record.uuid, shard)
        async with self._apply_lock(key):
            oplog = self.oplog(*key)
            for op in ops:
                if op.seq == oplog.last_seq + 1:
                    await run_to_the_end(self._apply_and_mirror(record, shard, op, None))

    async def _apply_and_mirror(self, record: DatasetRecord, shard: int,
                                op: node_pb2.ReplicatedOp, era_epoch: int | None) -> None:
        await self._log_and_apply(record, shard, op)
        if self.split is not None:
            await self.split.mirror(record, shard, [op], era_epoch)

    async def _apply_one(self, record: DatasetRecord, shard: int,
                         op: node_pb2.ReplicatedOp) -> None:
        """Logs, then applies, one op on a copy (as the primary does: the log never misses what
        the store holds). If applying fails, the logged op is applied again before the next.
        Runs to the end even when the call that asked for it is cancelled (run_to_the_end)."""
        await run_to_the_end(self._log_and_apply(record, shard, op))

    async def _log_and_apply(self, record: DatasetRecord, shard: int,
                             op: node_pb2.ReplicatedOp) -> None:
        key = (record.uuid, shard)
        if key in self._unapplied:
            await self._apply_to_store(record, shard, self._unapplied[key])
            del self._unapplied[key]
        await asyncio.to_thread(self.oplog(*key).append,
                                [LoggedOp(op.seq, op.term, op.SerializeToString())])
        if op.WhichOneof("op") == "finish":
            faults.crash_point(faults.COPY_AFTER_LOGGING_DECISION)
        self._unapplied[key] = op
        await self._apply_to_store(record, shard, op)
        del self._unapplied[key]
        self.remember_outcome(key, op)

    async def _apply_to_store(self, record: DatasetRecord, shard: int,
                              op: node_pb2.ReplicatedOp) -> None:
        replica = await self.host.replica_unfenced(record.uuid, shard)
        if replica is None:
            raise errors.NotFound("dataset not found (it may have been deleted)")
        kind = op.WhichOneof("op")
        now_ms = op.at_ms or None
        # A logged op's position: the store records it with the commit that holds the op
        # (group commit), and reapply_tails replays the log past it.
        position = (op.seq, op.term) if op.seq else None
        if kind == "write":
            write = op.write
            paths = frozenset(write.update_paths)
            if paths:
                records = update_records_from_protos(write.upserts, paths, record.dimensions,
                                                     record.metric_type, write.upsert_values)
                await asyncio.to_thread(replica.update, records, paths, now_ms, position)
            else:
                records = records_from_protos(write.upserts, record.dimensions,
                                              record.metric_type, write.upsert_values)
                await asyncio.to_thread(replica.write, records, list(write.delete_ids),
                                        ExistingPolicy.OVERWRITE, now_ms, position)
        elif kind == "soft_delete":
            await asyncio.to_thread(replica.soft_delete, list(op.soft_delete.ids), now_ms,
                                    position)
        elif kind == "restore":
            await asyncio.to_thread(replica.restore, list(op.restore.ids), position)
        elif kind == "prepare":
            await self.participant.adopt(record.uuid, shard, op.prepare)
        elif kind == "finish":
            await self.participant.finish_replicated(record.uuid, shard, op.finish.txn_id,
                                                     op.finish.decision, now_ms, position)

    # ---- serving a copy that catches up --------------------------------------------------------

    async def on_fetch(self, record: DatasetRecord, shard: int,
                       request: node_pb2.FetchOpsRequest) -> node_pb2.FetchOpsResponse:
        key = (record.uuid, shard)
        oplog = self.oplog(*key)
        is_primary = record.primary_of(shard) == self.host.node_id
        answer = node_pb2.FetchOpsResponse(term=record.term_of(shard))
        decision = fetch_decision(request.last_seq, request.last_term, oplog.last_seq,
                                  oplog.first_seq, oplog.term_at(request.last_seq),
                                  limits.replication_snapshot_behind_ops_max)
        answer.primary_last_seq = oplog.last_seq
        held = self.host.replicas.get(key)
        if decision == OPS and request.last_seq == 0 and held is not None and \
                held.count() >= limits.fresh_copy_snapshot_vectors_min:
            # A new copy (a shard move's target) of a large shard: copying the files is far
            # faster than replaying every write from the log.
            decision = START_OVER
        if decision == START_OVER:
            answer.start_over = True
            return answer
        if decision == OPS:
            held = await asyncio.to_thread(oplog.read_from, request.last_seq + 1,
                                           request.ops_max or limits.replication_fetch_ops_max,
                                           limits.replication_fetch_bytes_max)
            answer.ops.extend(_parse(op) for op in held or ())
            return answer
        if is_primary and request.node_id != self.host.node_id:
            async with self.write_lock(*key):
                # Under the write lock no op is in flight: the copy has everything. The log
                # is looked up again: a restore may have replaced the shard (and its log)
                # while this waited for the lock (node/backup.py install_restore).
                oplog = self.oplog(*key)
                fresh = self.host.catalog.state.datasets.get(record.uuid) or record
                if oplog.last_seq == request.last_seq and \
                        oplog.last_term == request.last_term and \
                        request.node_id not in fresh.in_sync_of(shard):
                    await self.set_in_sync(fresh, shard, request.node_id, True)
                    log.info("copy %s of %s/%d caught up at op %d and is in sync again",
                             request.node_id, record.uuid, shard, oplog.last_seq)
                answer.in_sync = oplog.last_seq == request.last_seq
        return answer

    async def catch_up(self, record: DatasetRecord, shard: int) -> bool:
        """One catch-up of this copy from the primary, bounded in time; True once in sync."""
        key = (record.uuid, shard)
        deadline = time.monotonic() + limits.replication_catch_up_round_ms / 1000
        ref = node_pb2.ShardRef(dataset_uuid=record.uuid, shard=shard, epoch=record.epoch)
        primary, term = record.primary_of(shard), record.term_of(shard)
        while time.monotonic() < deadline:
            oplog = self.oplog(*key)
            answer = await self._call(primary, "FetchOps", node_pb2.FetchOpsRequest(
                shard=ref, node_id=self.host.node_id, last_seq=oplog.last_seq,
                last_term=oplog.last_term, ops_max=limits.replication_fetch_ops_max),
                limits.replication_fetch_timeout_ms)
            if answer.in_sync:
                return True
            if not self._still_catching_up(record.uuid, shard, primary, term):
                return False
            if answer.start_over:
                log.warning("copy of %s/%d at op %d cannot replay the primary %s's log (at op "
                            "%d): copying its files", record.uuid, shard, oplog.last_seq,
                            primary, answer.primary_last_seq)
                await self.install_snapshot(record, shard, term)
                continue
            if not answer.ops:
                return False
            await self.apply_ops(record, shard, list(answer.ops))
            faults.crash_point(faults.MOVE_TARGET_MID_CATCH_UP)
        return False

    def _still_catching_up(self, dataset_uuid: str, shard: int, primary: str, term: int) -> bool:
        """catch_up_still_valid against this node's catalog now; says so when it is not."""
        now = self.host.catalog.state.datasets.get(dataset_uuid)
        if catch_up_still_valid(now, shard, self.host.node_id, primary, term):
            return True
        log.info("catch-up of %s/%d from %s (term %d) stopped: the catalog changed the shard's "
                 "primary or term meanwhile", dataset_uuid, shard, primary, term)
        return False

    async def hand_over(self, record: DatasetRecord, shard: int, target: str) -> None:
        """Makes the in-sync `target` the shard's primary (a move off this node). Under the write
        lock no write is in flight; writes waiting for the lock then find this node is no longer
        primary and are refused with StaleEpoch, which routers retry on the new primary."""
        async with self.write_lock(record.uuid, shard):
            await self.host.catalog.refresh()
            fresh = self.host.catalog.state.datasets.get(record.uuid)
            if fresh is None or fresh.primary_of(shard) != self.host.node_id or \
                    target not in fresh.in_sync_of(shard):
                return
            if self._hand_over_waits_for_txns(record.uuid, shard):
                return      # catch_up_all asks again in replication_catch_up_interval_ms
            faults.crash_point(faults.MOVE_SOURCE_BEFORE_HAND_OVER)
            await self.meta.propose(commands.PromotePrimary(
                record.uuid, shard, target, fresh.term_of(shard), int(time.time() * 1000)))
            await self.host.catalog.refresh()
        log.info("handed %s/%d over to %s", record.uuid, shard, target)

    def _hand_over_waits_for_txns(self, dataset_uuid: str, shard: int) -> bool:
        """Whether a hand-over should wait: a 2PC txn prepared on this shard (yes vote given,
        decision pending) would be aborted by recovery once the role moves, and its client would
        get an error for a write that a moment's patience lets commit. Called with the write lock
        held, so no new prepare can log meanwhile; waits at most move_hand_over_txn_wait_ms
        in all, so a steady stream of txns cannot hold a move back for ever."""
        key = (dataset_uuid, shard)
        prepared = getattr(self.participant, "prepared", None) or {}
        busy = any(p.dataset_uuid == dataset_uuid and p.shard == shard
                   for p in list(prepared.values()))
        now = time.monotonic()
        since = self._hand_over_waiting.setdefault(key, now)
        if busy and (now - since) * 1000 < limits.move_hand_over_txn_wait_ms:
            return True
        del self._hand_over_waiting[key]
        return False

    # ---- file copies (snapshots) ----------------------------------------------------------------

    async def snapshot_stream(self, record: DatasetRecord, shard: int):
        """The shard's files as SnapshotChunks: a cut copied aside under the write lock (so no
        op is half in it), then streamed outside it. The op log stays out: the copy starts its
        own at the cut's position, which the first chunk carries."""
        key = (record.uuid, shard)
        replica = await self.host.replica_unfenced(*key)   # open, so its directory exists
        if replica is not None:
            # The graph saved now travels with the files: the copy loads it and adds the few
            # rows written since, instead of rebuilding the whole index.
            await asyncio.to_thread(replica.save_index)
        source = self.host.shard_path(*key)
        cut = f"{source}.cut-{uuid.uuid4().hex}"
        async with self.write_lock(*key):
            oplog = self.oplog(*key)
            seq, term = oplog.last_seq, oplog.last_term
            if replica is not None:
                # Group commit: the files must hold every op up to the position they report.
                await asyncio.to_thread(replica.flush)
            files = await asyncio.to_thread(_copy_cut, source, cut)
        try:
            total = sum(size for _, size in files)
            first = node_pb2.SnapshotChunk(last_seq=seq, last_term=term, total_bytes=total)
            yield first
            for relative, _ in files:
                with open(os.path.join(cut, relative), "rb") as handle:
                    while True:
                        data = await asyncio.to_thread(handle.read,
                                                       limits.replication_snapshot_chunk_bytes_max)
                        yield node_pb2.SnapshotChunk(path=relative, data=data)
                        if len(data) < limits.replication_snapshot_chunk_bytes_max:
                            break
        finally:
            await asyncio.to_thread(shutil.rmtree, cut, True)

    async def install_snapshot(self, record: DatasetRecord, shard: int,
                               term: int | None = None) -> None:
        """Replaces this copy's files with a snapshot of the primary's, then starts its op log
        at the snapshot's position. The download goes to a directory beside the shard's and
        only a complete one is swapped in; a path that would leave it is refused. The swap
        holds the shard's write lock and apply lock, and happens only if the catalog still
        names that primary in `term` (default: the record's) then: a copy promoted during the
        download keeps its own files (catch_up_still_valid), and the download is dropped."""
        key = (record.uuid, shard)
        term = record.term_of(shard) if term is None else term
        target = self.host.shard_path(*key)
        incoming = f"{target}.incoming-{uuid.uuid4().hex}"
        primary = record.primary_of(shard)
        ref = node_pb2.ShardRef(dataset_uuid=record.uuid, shard=shard, epoch=record.epoch)
        started = time.monotonic()
        position = None
        received = 0
        try:
            os.makedirs(incoming)
            stream = self._stub(self._address(primary)).FetchSnapshot(
                node_pb2.FetchSnapshotRequest(shard=ref, node_id=self.host.node_id),
                timeout=limits.replication_snapshot_timeout_ms / 1000)
            async for chunk in stream:
                if position is None:
                    position = (chunk.last_seq, chunk.last_term, chunk.total_bytes)
                    continue
                destination = safe_join(incoming, chunk.path)
                await asyncio.to_thread(_append, destination, chunk.data)
                received += len(chunk.data)
            if position is None or received != position[2]:
                raise errors.Unavailable(f"snapshot of {record.uuid}/{shard} from {primary} "
                                         f"ended early ({received} bytes)")
        except grpc.aio.AioRpcError as exc:
            await asyncio.to_thread(shutil.rmtree, incoming, True)
            raise errors.from_wire(exc.code(), exc.details()) from None
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, incoming, True)
            raise
        async with self.write_lock(*key), self._apply_lock(key):
            if not self._still_catching_up(record.uuid, shard, primary, term):
                await asyncio.to_thread(shutil.rmtree, incoming, True)
                raise errors.Unavailable(f"the snapshot of {record.uuid}/{shard} from {primary} "
                                         "was not installed: the shard's primary changed")
            replica = self.host.replicas.pop(key, None)
            if replica is not None:
                await asyncio.to_thread(replica.close)
            self.forget(*key)
            if self.participant is not None:
                await self.participant.forget_shard(record.uuid, shard)
            await asyncio.to_thread(_swap_in, incoming, target)
            # A call that asked for the op log during the awaits above (a fetch, a status, a
            # write of a primary that does not know yet it was deposed) opened it in the old
            # directory, which the swap removed: open it afresh in the new one.
            self.forget(*key)
            await asyncio.to_thread(self.oplog(*key).reset, position[0], position[1])
            replica = await self.host.replica_unfenced(*key)
            if replica is not None and self.participant is not None:
                await self.participant.load_staged_of(record.uuid, shard, replica)
            if self.split is not None:
                await self.split.parent_replaced(record.uuid, shard)
        seconds = time.monotonic() - started
        log.info("copy of %s/%d installed a %d-byte snapshot of %s at op %d in %.1f s",
                 record.uuid, shard, received, primary, position[0], seconds)

    async def start_over(self, dataset_uuid: str, shard: int) -> None:
        async with self._apply_lock((dataset_uuid, shard)):
            replica = self.host.replicas.pop((dataset_uuid, shard), None)
            if replica is not None:
                await asyncio.to_thread(replica.close)
            self.forget(dataset_uuid, shard)
            if self.participant is not None:
                # What the participant held or remembers finishing belonged to these files: a
                # copy built here again replays its primary's prepares and decisions anew.
                await self.participant.forget_shard(dataset_uuid, shard)
            await asyncio.to_thread(shutil.rmtree, self.host.shard_path(dataset_uuid, shard),
                                    True)

    async def status(self, record: DatasetRecord, shard: int,
                     with_content_digest: bool = False) -> node_pb2.CopyStatusResponse:
        """This copy's log position, role and size; with `with_content_digest`, also the digest
        of its rows (ShardReplica.content_digest: a read of every row, in a worker thread). A
        copy with no replica open holds no rows here (open ones are reopened from disk at
        start), so its digest is that of no rows."""
        oplog = self.oplog(record.uuid, shard)
        replica = self.host.replicas.get((record.uuid, shard))
        answer = node_pb2.CopyStatusResponse(
            last_seq=oplog.last_seq, last_term=oplog.last_term,
            primary=record.primary_of(shard) == self.host.node_id,
            vector_count=replica.count() if replica is not None else 0)
        if with_content_digest:
            answer.content_digest = (await asyncio.to_thread(replica.content_digest)
                                     if replica is not None else hashlib.sha256().hexdigest())
        return answer

    async def catch_up_all(self) -> None:
        """One round over every copy this node holds outside the in-sync set; also drops the
        copies the catalog no longer places here (moved to another node while this one was
        away)."""
        me = self.host.node_id
        state = self.host.catalog.state
        placed = {(r.uuid, s) for r in state.datasets.values() for s in r.shards_on(me)}
        for dataset_uuid, shard in list(self.host.replicas):
            if self.split is not None and self.split.holds(dataset_uuid, shard):
                continue    # a shard split's child (node/split.py), not placed yet
            if dataset_uuid in state.datasets and (dataset_uuid, shard) not in placed:
                log.info("dropping copy %s/%d: the catalog places it elsewhere now",
                         dataset_uuid, shard)
                await self.start_over(dataset_uuid, shard)
        for move in list(state.moves.values()):
            record = state.datasets.get(move.dataset_uuid)
            if record is not None and move.source == me and record.primary_of(move.shard) == me \
                    and move.target in record.in_sync_of(move.shard):
                try:
                    await self.hand_over(record, move.shard, move.target)
                except errors.TributaryError as exc:
                    log.info("handing %s/%d over to %s: %s", record.uuid, move.shard,
                             move.target, exc.message)
        # Primary balance (consensus/rebalance.py StartTransfer): the same hand-over, no move.
        for transfer in list(state.transfers.values()):
            record = state.datasets.get(transfer.dataset_uuid)
            if record is not None and transfer.source == me and \
                    transfer.shard < record.shard_count and \
                    record.primary_of(transfer.shard) == me and \
                    transfer.target in record.in_sync_of(transfer.shard):
                try:
                    await self.hand_over(record, transfer.shard, transfer.target)
                except errors.TributaryError as exc:
                    log.info("handing %s/%d over to %s: %s", record.uuid, transfer.shard,
                             transfer.target, exc.message)
        for record in list(self.host.catalog.state.datasets.values()):
            for shard in record.shards_on(me):
                if record.primary_of(shard) == me or me in record.in_sync_of(shard):
                    continue
                try:
                    if await self.catch_up(record, shard):
                        await self._refresh_quietly()
                except errors.TributaryError as exc:
                    log.info("catching up %s/%d from %s: %s", record.uuid, shard,
                             record.primary_of(shard), exc.message)


def safe_join(root: str, relative: str) -> str:
    """root/relative, refusing anything that would not stay inside root (absolute paths, `..`,
    empty names): a snapshot's paths come from another process."""
    parts = relative.split("/")
    if not relative or relative.startswith("/") or any(p in ("", ".", "..") for p in parts) \
            or "\\" in relative or "\x00" in relative:
        raise errors.InvalidArgument(f"snapshot path {relative!r} is not a plain relative path")
    joined = os.path.join(root, *parts)
    if os.path.commonpath([os.path.realpath(root), os.path.realpath(joined)]) != \
            os.path.realpath(root):
        raise errors.InvalidArgument(f"snapshot path {relative!r} leaves the shard directory")
    return joined


def _copy_cut(source: str, cut: str) -> list[tuple[str, int]]:
    """Copies the shard's files (not its op log, not temporary files) to `cut`; returns
    (relative path, size) of each, sorted."""
    shutil.copytree(source, cut, ignore=lambda d, names: [
        n for n in names if (d == source and n == "oplog") or n.endswith(".tmp")])
    return list_files(cut)


def list_files(root: str) -> list[tuple[str, int]]:
    """(path relative to root with "/" separators, size) of every file below root, sorted."""
    files = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            files.append((os.path.relpath(path, root).replace(os.sep, "/"),
                          os.path.getsize(path)))
    return sorted(files)


def _append(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "ab") as handle:
        handle.write(data)


def _swap_in(incoming: str, target: str) -> None:
    """Makes `incoming` the shard's directory (the old one goes first), durably."""
    for directory, _, names in os.walk(incoming):
        for name in names:
            with open(os.path.join(directory, name), "rb") as handle:
                os.fsync(handle.fileno())
    shutil.rmtree(target, True)
    os.replace(incoming, target)
    fd = os.open(os.path.dirname(target), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def _holds_position(oplog: OpLog, position: tuple[int, int] | None) -> bool:
    """Whether `oplog` holds a store's recorded position (seq, term) with the same term: the
    store and the log share that history."""
    return position is not None and \
        await asyncio.to_thread(oplog.term_at, position[0]) == position[1]


async def _logged_ops(oplog: OpLog, first: int, last: int):
    """(logged, parsed op) for ops `first`..`last` of `oplog` in order, read a page at a time
    off the event loop; ends early where the log no longer holds the next op."""
    while first <= last:
        page = await asyncio.to_thread(oplog.read_from, first, limits.replication_fetch_ops_max,
                                       limits.replication_fetch_bytes_max)
        if not page:
            return
        for logged in page:
            if logged.seq > last:
                return
            yield logged, _parse(logged)
        first = page[-1].seq + 1


async def run_to_the_end(coro):
    """Awaits `coro` to its end even when the awaiting call is cancelled meanwhile, then
    raises that cancellation. For the steps of an op that must not stop half-way: an op log
    append runs on in its worker thread whatever becomes of the call that awaits it (a thread
    cannot be cancelled), so the apply, the mirror and the sends that follow it must run too.

    Found by chaos (reshard, seed 127): a copy paused past its primary's Replicate deadline
    ran the late request when it resumed, and grpc cancelled it, as it does a call whose
    deadline has passed, while its op log append was in its thread. The 2PC prepare op was
    logged and never staged, the catch-up that followed sent only the decision after it, and
    the copy committed a batch it held no plan for: its rows were missing on that copy alone,
    which answered reads without them. asyncio.shield alone would let the caller go on (and
    release the shard's apply lock) while the op is still being applied."""
    task = asyncio.ensure_future(coro)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                break
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return task.result()


def _parse(logged: LoggedOp) -> node_pb2.ReplicatedOp:
    op = node_pb2.ReplicatedOp()
    op.ParseFromString(logged.payload)
    return op


def write_effect(request: node_pb2.WriteRequest, skipped_ids) -> node_pb2.ReplicatedOp:
    """The op that reproduces a write on a copy: idempotent, whatever the original policy.
    An update keeps its paths (a merge of the same fields is idempotent); a write drops the
    ids it skipped and overwrites."""
    effect = node_pb2.WriteRequest()
    effect.CopyFrom(request)
    effect.ClearField("shard")
    if request.update_paths:
        return node_pb2.ReplicatedOp(write=effect)
    skipped = set(skipped_ids)
    if skipped:
        keep = [i for i, v in enumerate(request.upserts) if v.id not in skipped]
        effect.ClearField("upserts")
        effect.upserts.extend(request.upserts[i] for i in keep)
        if request.upsert_values:
            width = len(request.upsert_values) // max(1, len(request.upserts))
            effect.upsert_values = b"".join(
                request.upsert_values[i * width:(i + 1) * width] for i in keep)
    effect.existing = node_pb2.EXISTING_OVERWRITE
    return node_pb2.ReplicatedOp(write=effect)
