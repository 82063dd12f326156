"""Two-phase commit, participant side: the driver of consensus/txn_model.py, plus the id locks
every write and read respects.

The participant's decisions are the pure step function `txn_model.step(state, event) ->
(state, actions)`, one state per shard copy (`Participant.states`), with its explicit transition
table; the seeded simulation (router/txn_sim.py) runs the same function. This module is its
driver: it turns a Prepare / Commit / Abort request, a replicated op of the primary, a staged
file found at start, a meta answer and the result of each of its own I/O actions into the next
event (`_drive`), and performs the actions in the order the step gives them: lock and stage,
replicate the plan, vote, log the decision, apply it, send it to the copies, ack it.

Staging validates the batch, locks its ids, decides what applying it means (ids skipped under
EXISTING_SKIP are removed, upserts overwrite, so applying twice gives the same state), and writes
that plan to <replica>/txns/<txn_id>.bin with fsync before the vote. The plan is a protobuf
message (StagedTxn), never a pickle.

Recovery. A txn prepared for longer than txn_prepared_timeout_ms is resolved against the meta
group: a recorded decision is applied; no decision means abort, which the participant records
itself (first writer wins, so a slow coordinator's later COMMIT gets ABORT back). A logged
COMMIT's rows are group committed (the plan file stays until a store commit holds them). On
start, a node reloads every staged txn, then replays each copy's log past its store's last
commit (decisions included), then resolves the txns of the shards it is primary of before it
serves anything. Acks go to the meta group in
batches, so a crash can lose one: the primary is given again every decision the group still
lists as unacknowledged by its shard (resend_unacked), and confirms it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from consensus import commands
from consensus import txn_model as model
from consensus.client import CatalogCache, MetaClient
from consensus.state import TXN_ABORT, TXN_COMMIT
from node.convert import records_from_protos
from node.replication import run_to_the_end
from proto import node_pb2
from shard.records import ExistingPolicy
from shard.replica import ShardReplica
from tributary import errors, faults, limits
from tributary.validation import pack_values

log = logging.getLogger("tributary.node.txn")

_TXN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# The actions of a decision's finishing that a failed LogDecision / ApplyDecision cancels.
_FINISHING = (model.LogDecision, model.ApplyDecision, model.SendToCopies, model.Ack,
              model.Answer)


def participant_name(dataset_uuid: str, shard: int) -> str:
    return f"{dataset_uuid}/{shard}"


class IdLocks:
    """Exclusive locks on vector ids within one replica, held by a txn or a plain write.

    acquire() takes all ids at once or none, so no holder ever waits while holding part of a
    batch in this replica. Waits are bounded; a timeout is a retriable Aborted.
    """

    def __init__(self):
        self.owner: dict[str, str] = {}
        self._changed = asyncio.Condition()

    def held(self) -> int:
        return len(self.owner)

    async def acquire(self, ids: list[str], holder: str, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        async with self._changed:
            while True:
                blocking = {self.owner[i] for i in ids if self.owner.get(i, holder) != holder}
                if not blocking:
                    for i in ids:
                        self.owner[i] = holder
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise errors.Aborted(
                        f"ids are locked by transaction {sorted(blocking)[0]}; retry")
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except asyncio.TimeoutError:
                    pass

    async def release(self, holder: str) -> None:
        async with self._changed:
            for i in [i for i, h in self.owner.items() if h == holder]:
                del self.owner[i]
            self._changed.notify_all()

    async def wait_unlocked(self, ids: list[str], wait_s: float) -> None:
        """Readers wait for in-doubt writes to resolve, so they never see half a txn."""
        deadline = time.monotonic() + wait_s
        async with self._changed:
            while any(i in self.owner for i in ids):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise errors.Unavailable("ids are held by an unresolved transaction; retry")
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except asyncio.TimeoutError:
                    pass


@dataclass
class PreparedTxn:
    """A plan this node holds (staged on disk, its ids locked), from staging to its end."""

    txn_id: str
    dataset_uuid: str
    shard: int
    staged: node_pb2.StagedTxn
    path: str
    # The validated records to apply, kept from prepare so that commit neither parses nor
    # validates the batch again. None for a txn reloaded from disk (built from `staged` then).
    records: list | None = None


@dataclass
class _Drive:
    """What one `_drive` call carries between its actions."""

    dataset_uuid: str
    shard: int
    request: node_pb2.PrepareRequest | None = None      # a Prepare
    staged: node_pb2.StagedTxn | None = None            # an Adopt or a Reload
    path: str = ""                                      # an Adopt or a Reload; a StagePlan's
    replica: Any = None                                 # an Adopt
    now_ms: int = 0                                     # the rows' time (the primary's)
    not_primary: str = ""
    answer: Any = None
    refusal: BaseException | None = None
    locks: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    record: Any = None
    op: node_pb2.ReplicatedOp | None = None
    # The (seq, term) of the logged decision being applied (the primary's LogDecision, or the
    # replicated / replayed op): its rows are group committed, and the plan stays on disk until
    # a store commit holds that position. None when no log holds the decision.
    position: tuple[int, int] | None = None


class Participant:
    def __init__(self, host, meta: MetaClient, catalog: CatalogCache, replication=None):
        self.host = host
        # node.replication.Replication: a commit applied here reaches the in-sync copies.
        self.replication = replication
        self.meta = meta
        self.catalog = catalog
        self.locks: dict[tuple[str, int], IdLocks] = {}
        # The step function's state, one per shard copy (keyed by participant_name).
        self.states: dict[str, model.ParticipantState] = {}
        # The plans held, keyed by (txn_id, participant): one txn may touch several shards on
        # this node. From staging (or adoption, or reload) until the txn ends here.
        self.prepared: dict[tuple[str, str], PreparedTxn] = {}
        # Set when a txn leaves COMMITTING / ABORTING: a second Commit waits for the first.
        self._finishing: dict[tuple[str, str], asyncio.Event] = {}
        self._pending_acks: list[tuple[str, str]] = []
        # One lock per replica serializes the applying of its txns, while txns of different
        # replicas on this node apply in parallel.
        self._finish_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self.max_in_doubt_ms = 0.0
        self.resolved = 0

    def locks_for(self, dataset_uuid: str, shard: int) -> IdLocks:
        key = (dataset_uuid, shard)
        if key not in self.locks:
            self.locks[key] = IdLocks()
        return self.locks[key]

    def locked_ids(self) -> int:
        return sum(locks.held() for locks in self.locks.values())

    @staticmethod
    def _staged_path(replica: ShardReplica, txn_id: str) -> str:
        return os.path.join(replica.path, "txns", f"{txn_id}.bin")

    def _drive_for(self, dataset_uuid: str, shard: int) -> tuple[str, _Drive]:
        """The copy's role now, and a drive that remembers the record it was read from."""
        record = self.catalog.state.datasets.get(dataset_uuid)
        return self._role(dataset_uuid, shard), _Drive(dataset_uuid, shard, record=record)

    def _role(self, dataset_uuid: str, shard: int) -> str:
        """This copy's role as the catalog says now: PRIMARY logs and sends decisions, COPY
        takes them from its primary, ALONE (no replication, or the dataset is gone) applies
        them at once. A shard the catalog does not hold yet is a split's child (node/split.py)
        before its switch: it mirrors its parent copy's log, decisions included, so it is a
        COPY."""
        if self.replication is None:
            return model.ALONE
        record = self.catalog.state.datasets.get(dataset_uuid)
        if record is None:
            return model.ALONE
        return model.PRIMARY if _primary_of(record, shard) == self.host.node_id else model.COPY

    # ---- the step function and its driver ------------------------------------------------------

    def _step(self, name: str, event: model.Event) -> list[model.Action]:
        """One step of the copy's state machine. Synchronous, so no other call interleaves."""
        before = self.states.get(name) or model.ParticipantState(name)
        after, actions = model.step(before, event)
        self.states[name] = after
        key = (event.txn_id, name)
        finishing = (model.COMMITTING, model.ABORTING)
        if after.txns.get(event.txn_id) in finishing:
            self._finishing.setdefault(key, asyncio.Event())
        elif before.txns.get(event.txn_id) in finishing:
            done = self._finishing.pop(key, None)
            if done is not None:
                done.set()
        return actions

    async def _drive(self, event: model.Event, drive: _Drive) -> Any:
        """Feeds `event` to the copy's step function and performs the actions it returns, in
        order, feeding the result of each I/O action back as the next event. Returns what the
        actions answered (a vote, an applied flag), or raises the refusal they gave.

        A failed LogDecision or ApplyDecision is fed back as FinishFailed (the txn stays
        held) and cancels the rest of that finishing; a vote still goes out. A plan that could
        not be stored or locked is fed back as Forget."""
        name = participant_name(drive.dataset_uuid, drive.shard)
        queue = deque(self._step(name, event))
        failure: BaseException | None = None
        try:
            while queue:
                action = queue.popleft()
                try:
                    result = await self._perform(name, action, drive)
                except BaseException as exc:   # noqa: BLE001 - fed back, then raised below
                    # A cancelled RPC too: its txn must not stay half-finished in the state.
                    if failure is not None or isinstance(action, model.Vote):
                        raise
                    failure = exc
                    await drive.locks.aclose()
                    if isinstance(action, (model.LogDecision, model.ApplyDecision)):
                        queue.extend(self._step(name, model.FinishFailed(action.txn_id)))
                    elif isinstance(action, (model.StoreCopy, model.TakeLocks)):
                        # Not held after all: a re-sent prepare op adopts it again.
                        queue.extend(self._step(name, model.Forget(action.txn_id)))
                    keep = (model.Vote,) if not isinstance(action, model.SendToCopies) else (
                        model.Vote, model.Ack)
                    queue = deque(a for a in queue if isinstance(a, keep) or
                                  not isinstance(a, _FINISHING))
                    continue
                if result is not None:
                    queue.extend(self._step(name, result))
        finally:
            await drive.locks.aclose()
        if drive.refusal is not None:
            raise drive.refusal
        if failure is not None:
            raise failure
        return drive.answer

    async def _perform(self, name: str, action: model.Action,
                       drive: _Drive) -> model.Event | None:
        """Performs one action; returns the event its result is, if it has one."""
        txn_id = action.txn_id if not isinstance(action, model.Violation) else ""
        key = (txn_id, name)
        if isinstance(action, model.StagePlan):
            return await self._stage_plan(key, drive)
        if isinstance(action, model.ReplicatePlan):
            return await self._replicate_plan(key, drive)
        if isinstance(action, model.Vote):
            if action.yes:
                held = self.prepared.get(key)
                # A txn committed here already has no plan left: its counts went with the
                # first answer.
                drive.answer = held.staged.vote if held else node_pb2.PrepareResponse()
            else:
                drive.refusal = self._refusal(action.reason, drive)
            return None
        if isinstance(action, model.StoreCopy):
            await asyncio.to_thread(_write_durably, drive.path,
                                    drive.staged.SerializeToString())
            self._take_locks(key, drive)
            return None
        if isinstance(action, model.TakeLocks):
            self._take_locks(key, drive)
            return None
        if isinstance(action, model.DropStaged):
            held = self.prepared.pop(key, None)
            path = held.path if held else drive.path
            if path:
                await asyncio.to_thread(_remove, path)
            await self.locks_for(drive.dataset_uuid, drive.shard).release(txn_id)
            return None
        if isinstance(action, model.Release):
            self.prepared.pop(key, None)
            await self.locks_for(drive.dataset_uuid, drive.shard).release(txn_id)
            return None
        if isinstance(action, model.LogDecision):
            await self._log_decision(key, action.decision, drive)
            return None
        if isinstance(action, model.ApplyDecision):
            await self._apply_decision(key, action.decision, drive)
            return model.Finished(txn_id)
        if isinstance(action, model.SendToCopies):
            await self.replication.send_to_in_sync(drive.record, drive.shard, [drive.op])
            await drive.locks.aclose()
            return None
        if isinstance(action, model.Ack):
            self._pending_acks.append(key)
            return None
        if isinstance(action, model.Answer):
            drive.answer = action.applied
            return None
        if isinstance(action, model.Refuse):
            drive.refusal = errors.StaleEpoch(
                f"node {self.host.node_id} is not the primary of shard {drive.shard}; the "
                f"primary finishes txn {txn_id}")
            return None
        if isinstance(action, model.AwaitFinish):
            done = self._finishing.get(key)
            if done is not None:
                await done.wait()
            drive.answer = False
            return None
        if isinstance(action, model.AskMeta):
            state = await self.catalog.refresh(linearizable=True)
            return model.Decision(txn_id, _recorded(state, txn_id), model.META,
                                  self._role(drive.dataset_uuid, drive.shard), True)
        if isinstance(action, model.ProposeAbort):
            return await self._propose_abort(key, drive)
        if isinstance(action, model.Violation):
            log.warning("2PC: %s", action.message)
            return None
        raise AssertionError(f"unknown action {action!r}")

    def _refusal(self, reason: Any, drive: _Drive) -> BaseException:
        if isinstance(reason, BaseException):
            return reason
        if reason == model.NOT_PRIMARY:
            return errors.StaleEpoch(drive.not_primary or f"node {self.host.node_id} is not "
                                     f"the primary of shard {drive.shard}")
        if reason == model.UNCONFIRMED:
            return errors.Aborted("the transaction's plan may not have reached the shard's "
                                  "copies (recovered after a failure); it is being resolved")
        if reason == model.IN_PROGRESS:
            return errors.Aborted("the transaction is being prepared by an earlier request; "
                                  "retry")
        return errors.Aborted("the transaction was aborted")

    def _take_locks(self, key: tuple[str, str], drive: _Drive) -> None:
        """A plan adopted from the primary or reloaded from disk takes its ids' locks at once:
        no live txn can hold them (the primary granted them, or nothing ran yet)."""
        locks = self.locks_for(drive.dataset_uuid, drive.shard)
        for i in _locked_ids(drive.staged):
            locks.owner[i] = key[0]
        self.prepared[key] = PreparedTxn(key[0], drive.dataset_uuid, drive.shard, drive.staged,
                                         drive.path)

    async def _stage_plan(self, key: tuple[str, str], drive: _Drive) -> model.Event:
        request = drive.request
        try:
            record, replica = await self.host.replica(request.shard, "write")
            upserts = records_from_protos(request.upserts, record.dimensions,
                                          record.metric_type, request.upsert_values)
            ids = [v.id for v in upserts] + list(request.delete_ids)
            if len(set(ids)) != len(ids):
                raise errors.InvalidArgument("a batch may not name the same id twice")
            await self.locks_for(drive.dataset_uuid, drive.shard).acquire(
                ids, key[0], limits.txn_lock_wait_ms / 1000)
            drive.path = self._staged_path(replica, key[0])
            # One worker-thread hand-off for the plan and its durable write.
            staged, apply = await asyncio.to_thread(_stage, replica, request, upserts, ids,
                                                    drive.path)
        except BaseException as exc:   # noqa: BLE001 - a "no" vote that carries the error
            # (a cancelled RPC included: the vote raises it again after the cleanup)
            return model.StageFailed(key[0], exc)
        self.prepared[key] = PreparedTxn(key[0], drive.dataset_uuid, drive.shard, staged,
                                         drive.path, records=apply)
        return model.Staged(key[0])

    async def _replicate_plan(self, key: tuple[str, str], drive: _Drive) -> model.Event:
        held = self.prepared.get(key)
        if held is None:    # forgotten meanwhile (the copy's files were replaced)
            return model.NotPrimary(key[0], "the shard's copy was replaced while it prepared")
        try:
            # The in-sync copies stage the same plan before this participant votes yes.
            await self._replicate(drive.dataset_uuid, drive.shard,
                                  node_pb2.ReplicatedOp(prepare=held.staged))
        except _NotPrimary as exc:
            drive.not_primary = str(exc)
            return model.NotPrimary(key[0], str(exc))
        except BaseException as exc:  # noqa: BLE001 - a cancelled RPC aborts the txn too
            return model.ReplicationFailed(key[0], exc,
                                           self._role(drive.dataset_uuid, drive.shard))
        return model.Replicated(key[0])

    async def _replicate(self, dataset_uuid: str, shard: int, op: node_pb2.ReplicatedOp) -> None:
        """Sends `op` to the shard's in-sync copies. Raises _NotPrimary when this node is no
        longer the shard's primary (a failover while the txn prepared): a plan the new primary
        never staged must not get a yes vote, or a commit would reach no copy that serves."""
        if self.replication is None:
            return
        async with self.replication.write_lock(dataset_uuid, shard):
            record = self.catalog.state.datasets.get(dataset_uuid)
            if record is None:
                raise errors.NotFound("dataset not found (it may have been deleted)")
            if _primary_of(record, shard) != self.host.node_id:
                raise _NotPrimary(f"node {self.host.node_id} stopped being the primary of "
                                  f"shard {shard} while the txn prepared")
            await self.replication.ensure_resynced(record, shard)
            await self.replication.replicate(record, shard, [op])

    async def _log_decision(self, key: tuple[str, str], decision: str, drive: _Drive) -> None:
        """Takes the shard's write lock (held until SendToCopies) and logs the decision."""
        await drive.locks.enter_async_context(
            self.replication.write_lock(drive.dataset_uuid, drive.shard))
        record = self.catalog.state.datasets.get(drive.dataset_uuid) or drive.record
        if record is None:
            raise errors.NotFound("dataset not found (it may have been deleted)")
        drive.record = record
        await self.replication.ensure_resynced(record, drive.shard)
        drive.now_ms = drive.now_ms or int(time.time() * 1000)
        drive.op = node_pb2.ReplicatedOp(
            finish=node_pb2.TxnFinish(txn_id=key[0], decision=decision), at_ms=drive.now_ms)
        await self.replication.log_ops(record, drive.shard, [drive.op])
        drive.position = (drive.op.seq, drive.op.term)

    async def _apply_decision(self, key: tuple[str, str], decision: str, drive: _Drive) -> None:
        """Applies (commit) or drops (abort) a held plan on this node's store only, then
        releases its locks.

        A commit whose decision is in the op log (`drive.position`) is group committed: its
        rows are applied at once (readable and searchable) and reach Deep Lake with the
        replica's next background commit, which records a log position at or past the
        decision's. Until then the staged plan stays on disk (removed by that commit), so a
        restart replays the logged decision from the plan (Replication.reapply_tails): a plan
        is removed only after its rows are committed to the store. A decision no log holds
        (a copy alone) is committed before this returns, as before."""
        now_ms = drive.now_ms or int(time.time() * 1000)
        lock = self._finish_locks.setdefault((drive.dataset_uuid, drive.shard), asyncio.Lock())
        async with lock:
            txn = self.prepared.get(key)
            if txn is None:
                return
            replica = None
            if decision == TXN_COMMIT:
                replica = await self.host.replica_unfenced(txn.dataset_uuid, txn.shard)
            if replica is not None:
                upserts = txn.records
                if upserts is None:
                    dataset = self.catalog.state.datasets.get(txn.dataset_uuid)
                    dims = replica.dimensions if dataset is None else dataset.dimensions
                    metric = replica.metric if dataset is None else dataset.metric_type
                    upserts = records_from_protos(txn.staged.apply_upserts, dims, metric,
                                                  txn.staged.apply_values)
                # One worker-thread hand-off for both steps; the staged file goes only after
                # a store commit holds the rows.
                await asyncio.to_thread(_apply_then_remove, replica, upserts,
                                        list(txn.staged.apply_deletes), txn.path, now_ms,
                                        drive.position)
            else:
                await asyncio.to_thread(_remove, txn.path)
            del self.prepared[key]
            in_doubt_ms = time.time() * 1000 - txn.staged.prepared_at_ms
            self.max_in_doubt_ms = max(self.max_in_doubt_ms, in_doubt_ms)
            self.resolved += 1
            await self.locks_for(txn.dataset_uuid, txn.shard).release(key[0])

    async def _propose_abort(self, key: tuple[str, str], drive: _Drive) -> model.Event | None:
        held = self.prepared.get(key)
        participants = tuple(held.staged.request.participants) if held else ()
        participants = participants or (key[1],)
        try:
            result = await self.meta.propose(commands.DecideTxn(
                key[0], TXN_ABORT, participants, "", "", int(time.time() * 1000)))
        except errors.TributaryError as exc:
            log.warning("cannot record abort of %s: %s", key[0], exc.message)
            return None
        log.info("txn %s timed out prepared; meta decision is %s", key[0], result["decision"])
        return model.Decision(key[0], result["decision"], model.META,
                              self._role(drive.dataset_uuid, drive.shard), True)

    # ---- phase 1 -------------------------------------------------------------------------------

    async def prepare(self, request: node_pb2.PrepareRequest) -> node_pb2.PrepareResponse:
        """Stages the batch's plan and votes: the PrepareResponse (yes), or raises the refusal
        (StaleEpoch on a deposed primary, Aborted on a lock wait past txn_lock_wait_ms, the
        existing-id policy's NotFound / AlreadyExists, ...)."""
        if not _TXN_ID.match(request.txn_id):
            raise errors.InvalidArgument("txn_id must be 1-64 letters, digits, '-' or '_'")
        ref = request.shard
        return await self._drive(model.Prepare(request.txn_id),
                                 _Drive(ref.dataset_uuid, ref.shard, request=request))

    async def adopt(self, dataset_uuid: str, shard: int, staged: node_pb2.StagedTxn) -> None:
        """A copy stages its primary's prepared plan (a replicated op): the same file, the same
        locks, so that it can finish the txn if it becomes primary."""
        replica = await self.host.replica_unfenced(dataset_uuid, shard)
        if replica is None:
            return
        txn_id = staged.request.txn_id
        await self._drive(model.Adopt(txn_id), _Drive(
            dataset_uuid, shard, staged=staged, path=self._staged_path(replica, txn_id),
            replica=replica))

    async def finish_replicated(self, dataset_uuid: str, shard: int, txn_id: str,
                                decision: str, now_ms: int | None = None,
                                position: tuple[int, int] | None = None) -> None:
        """A copy applies or drops a txn on its primary's logged decision (a replicated op, or
        a restarted node's replay of its log), stamping the rows with the primary's time.
        `position` is the decision's place in this copy's op log (its rows are then group
        committed, see _apply_decision)."""
        await self._drive(model.Decision(txn_id, decision, model.LOG, model.ALONE),
                          _Drive(dataset_uuid, shard, now_ms=now_ms or 0, position=position))

    # ---- phase 2 -------------------------------------------------------------------------------

    async def commit(self, txn_id: str, ref: node_pb2.ShardRef) -> bool:
        faults.crash_point(faults.PARTICIPANT_AFTER_VOTE)
        return await self._decide(txn_id, ref, TXN_COMMIT)

    async def abort(self, txn_id: str, ref: node_pb2.ShardRef) -> bool:
        return await self._decide(txn_id, ref, TXN_ABORT)

    async def _decide(self, txn_id: str, ref: node_pb2.ShardRef, decision: str) -> bool:
        """The coordinator's decision. Idempotent: True when this call applied it. Only the
        shard's primary finishes a txn (it logs the decision first, then applies it, then
        sends it to the in-sync copies); elsewhere this raises StaleEpoch (the coordinator
        retries on the primary).

        Runs to the end even when the coordinator's call is cancelled (its deadline passed,
        or it went away): a decision logged here is applied and sent before the shard's write
        lock goes, as a write's op is (replication.run_to_the_end). Cut short after its log
        append, the decision would sit in the primary's log unapplied until the txn's
        recovery asked the meta group, and the shard's next write would send it to the
        copies first."""
        async def steps() -> bool:
            role, drive = self._drive_for(ref.dataset_uuid, ref.shard)
            applied = await self._drive(
                model.Decision(txn_id, decision, model.COORDINATOR, role), drive)
            await self._finish_split_children(txn_id, ref.dataset_uuid, ref.shard, decision)
            return applied
        return await run_to_the_end(steps())

    async def _finish_split_children(self, txn_id: str, dataset_uuid: str, shard: int,
                                     decision: str) -> None:
        """Gives the coordinator's decision, just taken on `shard`, to the split children this
        node is the primary of that hold the same txn. A child mirrored the prepare of a txn
        planned before its split's switch; a decision its parent logs after the switch is not
        mirrored (the child has a log of its own by then), and the router, which planned on
        the old count, never sends it one. Left to the child's recovery, the txn's ids would
        stay locked for txn_prepared_timeout_ms, and a retry of the same batch, planned on the
        new count, would wait for them in vain. Runs after the parent's drive has released
        its write lock: a child's first write after the switch takes it (Splitter.seal).

        A shard the txn names as a participant gets the decision from the coordinator itself,
        so it is not one of these; nor is a child before the switch (not in the catalog yet:
        a COPY, which takes the decision by mirroring)."""
        parent = participant_name(dataset_uuid, shard)
        for (held_id, name), txn in list(self.prepared.items()):
            if held_id != txn_id or name == parent or txn.dataset_uuid != dataset_uuid or \
                    name in txn.staged.request.participants:
                continue
            role, drive = self._drive_for(dataset_uuid, txn.shard)
            if role != model.PRIMARY:
                continue
            try:
                if await self._drive(model.Decision(txn_id, decision, model.COORDINATOR,
                                                    role), drive):
                    log.info("txn %s: split child %s finished with its parent's %s", txn_id,
                             name, decision)
            except errors.TributaryError as exc:
                # Its own recovery asks the meta group after txn_prepared_timeout_ms.
                log.warning("txn %s: could not finish split child %s: %s", txn_id, name,
                            exc.message)

    # ---- recovery ------------------------------------------------------------------------------

    async def load_staged(self) -> int:
        """Reloads staged txns of every open replica and re-takes their locks."""
        loaded = 0
        for (dataset_uuid, shard), replica in list(self.host.replicas.items()):
            loaded += await self.load_staged_of(dataset_uuid, shard, replica)
        return loaded

    async def forget_shard(self, dataset_uuid: str, shard: int) -> None:
        """Drops what this node held for one shard (its copy's files were just replaced by a
        snapshot of its primary's, whose staged txns load_staged_of then takes)."""
        name = participant_name(dataset_uuid, shard)
        state = self.states.get(name) or model.ParticipantState(name)
        held = set(state.holding()) | {k[0] for k in self.prepared if k[1] == name}
        for txn_id in sorted(held):
            await self._drive(model.Forget(txn_id), _Drive(dataset_uuid, shard))
            if (txn_id, name) in self.prepared:     # a plan the state did not know
                self.prepared.pop((txn_id, name))
                await self.locks_for(dataset_uuid, shard).release(txn_id)
        # What it remembers of finished txns belonged to the replaced files: a plan the
        # snapshot brings back must load, even one this copy saw end (an abort it dropped
        # on its own while its primary still held the plan).
        self.states.pop(name, None)

    async def load_staged_of(self, dataset_uuid: str, shard: int, replica) -> int:
        """Reloads one replica's staged txns (at start, or after a copy installed a snapshot
        of its primary's files) and takes their locks."""
        directory = os.path.join(replica.path, "txns")
        if not os.path.isdir(directory):
            return 0
        plans: list[tuple[str, node_pb2.StagedTxn]] = []
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if not name.endswith(".bin"):
                await asyncio.to_thread(_remove, path)   # a torn .tmp from a crash
                continue
            staged = node_pb2.StagedTxn()
            with open(path, "rb") as f:
                staged.ParseFromString(f.read())
            plans.append((path, staged))
        # A plan whose decision the store's last commit already holds outlived that commit
        # only because a kill came before its removal (see Replication.decided_in_store).
        decided = {} if self.replication is None or not plans else \
            await self.replication.decided_in_store(
                dataset_uuid, shard, {staged.request.txn_id for _, staged in plans})
        loaded = 0
        for path, staged in plans:
            key = (staged.request.txn_id, participant_name(dataset_uuid, shard))
            if key[0] in decided:
                log.info("txn %s on %s: the store's last commit holds its %s; removing its "
                         "leftover plan", key[0], key[1], decided[key[0]])
                await asyncio.to_thread(_remove, path)
                continue
            if key in self.prepared:
                continue
            await self._drive(model.Reload(staged.request.txn_id),
                              _Drive(dataset_uuid, shard, staged=staged, path=path))
            loaded += key in self.prepared
        return loaded

    async def resolve_all(self) -> None:
        """Blocks until no prepared txn is left on a shard this node is the primary of (used
        before a restarted node serves); a copy's staged txns wait for its primary's decision."""
        while self._own_prepared():
            await self.resolve_due(force=True)
            if self._own_prepared():
                await asyncio.sleep(limits.txn_resolve_interval_ms / 1000)

    def _own_prepared(self) -> bool:
        for txn in self.prepared.values():
            record = self.catalog.state.datasets.get(txn.dataset_uuid)
            if record is None or self.replication is None or \
                    _primary_of(record, txn.shard) == self.host.node_id:
                return True
        return False

    async def resolve_due(self, force: bool = False) -> None:
        """Asks the meta group about every prepared txn once one has waited
        txn_prepared_timeout_ms (or always, with force): each Timeout's AskMeta is answered
        from one linearizable read; a due txn with no decision gets an abort proposed."""
        now_ms = time.time() * 1000
        held = list(self.prepared.items())
        due = {key for key, t in held
               if now_ms - t.staged.prepared_at_ms >= limits.txn_prepared_timeout_ms}
        if not due and not force:
            return
        asked = []
        for key, txn in held:
            actions = self._step(key[1], model.Timeout(key[0]))
            if any(isinstance(a, model.AskMeta) for a in actions):
                asked.append((key, txn))
        if not asked:
            return
        try:
            state = await self.catalog.refresh(linearizable=True)
        except errors.TributaryError as exc:
            log.warning("cannot read txn decisions: %s", exc.message)
            return
        for key, txn in asked:
            role, drive = self._drive_for(txn.dataset_uuid, txn.shard)
            event = model.Decision(key[0], _recorded(state, key[0]), model.META, role,
                                   key in due)
            try:
                await self._drive(event, drive)
            except errors.TributaryError as exc:
                log.warning("cannot finish txn %s: %s", key[0], exc.message)

    def _unacked_here(self, state) -> list[tuple[str, str, str, int]]:
        """(txn id, decision, dataset uuid, shard) of each decision in `state` that the group
        lists as not acknowledged by a shard this node holds and is not a mere copy of (the
        primary, or alone), decided at least txn_unacked_resend_after_ms ago, with no ack of
        it waiting to be sent."""
        now_ms = time.time() * 1000
        pending = set(self._pending_acks)
        found = []
        for txn_id, record in state.txns.items():
            if now_ms - record.decided_at_ms < limits.txn_unacked_resend_after_ms:
                continue
            for name in record.participants:
                if name in record.acked or (txn_id, name) in pending:
                    continue
                dataset_uuid, _, shard_text = name.rpartition("/")
                if not shard_text.isdigit():
                    continue
                shard = int(shard_text)
                if (dataset_uuid, shard) in self.host.replicas and \
                        self._role(dataset_uuid, shard) != model.COPY:
                    found.append((txn_id, record.decision, dataset_uuid, shard))
        return sorted(found)

    async def resend_unacked(self) -> int:
        """Gives this node's primaries again the decisions the meta group still lists as not
        acknowledged by their shard (an ack lost with a crashed node's memory: acks are sent
        in batches): a primary holding the txn finishes it; one that finished it, or holds no
        plan for a COMMIT (applied, then forgotten by a restart), confirms it
        (txn_model._decide_unknown). Looks in the bookkeeping the catalog cache holds (read at
        start and by every linearizable read), and reads it afresh before it acts. Returns
        how many decisions it gave."""
        if not self._unacked_here(self.catalog.state):
            return 0
        try:
            state = await self.catalog.refresh(linearizable=True)
        except errors.TributaryError as exc:
            log.warning("cannot read txn decisions: %s", exc.message)
            return 0
        given = 0
        for txn_id, decision, dataset_uuid, shard in self._unacked_here(state):
            role, drive = self._drive_for(dataset_uuid, shard)
            try:
                await self._drive(model.Decision(txn_id, decision, model.META, role, False),
                                  drive)
                given += 1
            except errors.TributaryError as exc:
                log.warning("cannot confirm txn %s: %s", txn_id, exc.message)
        if given:
            log.info("gave %d unacknowledged txn decision(s) again", given)
        return given

    async def background(self) -> None:
        """Resolves timed-out txns, sends batched acks and gives unacknowledged decisions
        again, until cancelled."""
        last_ack = last_unacked_check = time.monotonic()
        while True:
            await asyncio.sleep(limits.txn_resolve_interval_ms / 1000)
            try:
                await self.resolve_due()
            except Exception:  # noqa: BLE001 - keep resolving on the next round
                log.exception("txn resolution failed")
            if (time.monotonic() - last_unacked_check) * 1000 >= \
                    limits.txn_unacked_check_interval_ms:
                last_unacked_check = time.monotonic()
                try:
                    await self.resend_unacked()
                except Exception:  # noqa: BLE001 - look again on the next round
                    log.exception("giving unacknowledged txn decisions again failed")
            if self._pending_acks and (time.monotonic() - last_ack) * 1000 >= \
                    limits.txn_ack_batch_interval_ms:
                acks, self._pending_acks = self._pending_acks, []
                try:
                    await self.meta.propose(commands.AckTxns(tuple(acks),
                                                             int(time.time() * 1000)))
                    last_ack = time.monotonic()
                except errors.TributaryError as exc:
                    log.debug("ack failed, will retry: %s", exc.message)
                    self._pending_acks = acks + self._pending_acks


def _primary_of(record, shard: int) -> str | None:
    """The shard's primary, or None for a shard the record does not hold yet (a split's child
    before the switch, whose parent's primary decides its txns)."""
    return record.primary_of(shard) if 0 <= shard < len(record.placement) else None


def _recorded(state, txn_id: str) -> str | None:
    """The decision the meta state holds for a txn (a live record or a tombstone), or None."""
    record = state.txns.get(txn_id)
    if record is not None:
        return record.decision
    tombstone = state.txn_tombstones.get(txn_id)
    return tombstone[0] if tombstone is not None else None


class _NotPrimary(Exception):
    """Raised before a prepare was logged or sent: this node is no longer the primary. Kept
    out of the errors hierarchy (prepare turns it into StaleEpoch) so the wire table stays
    one class per code."""


def _stage(replica: ShardReplica, request: node_pb2.PrepareRequest, upserts: list,
           ids: list[str], path: str) -> tuple[node_pb2.StagedTxn, list]:
    """Resolves the existing-id policy into the txn's plan and writes it durably (a worker
    thread runs this; the caller holds the ids' locks). Returns the plan and the records to
    apply; raises NotFound / AlreadyExists for a "no" vote."""
    existing = set(replica.existing_ids(ids))
    policy = ExistingPolicy(int(request.existing))
    present = [v.id for v in upserts if v.id in existing]
    if policy is ExistingPolicy.REQUIRE:
        absent = [v.id for v in upserts if v.id not in existing]
        if absent:
            raise errors.NotFound(f"vector '{absent[0]}' not found")
    if present and policy is ExistingPolicy.ERROR:
        raise errors.AlreadyExists(f"vector '{present[0]}' already exists; use "
                                   "overwrite or skip_existing")
    skipped = set(present) if policy is ExistingPolicy.SKIP else set()
    deletes = [i for i in request.delete_ids if i in existing]
    vote = node_pb2.PrepareResponse(
        inserted=len(upserts) - len(skipped), skipped=len(skipped),
        deleted=len(deletes), not_found=len(request.delete_ids) - len(deletes),
        skipped_ids=sorted(skipped))
    apply = [r for r in upserts if r.id not in skipped]
    staged = _staged_txn(request, apply, deletes, vote)
    _write_durably(path, staged.SerializeToString())
    return staged, apply


def _staged_txn(request: node_pb2.PrepareRequest, apply: list, deletes: list[str],
                vote: node_pb2.PrepareResponse) -> node_pb2.StagedTxn:
    """The durable plan of a prepared txn. Each vector is written once: the stored request
    keeps everything but its upserts (its txn id, deletes, participants), apply_upserts holds
    the vectors to apply without values, and apply_values their values, packed. The ids the txn
    locked are apply_upserts' and the vote's skipped_ids plus the deletes (_locked_ids)."""
    staged = node_pb2.StagedTxn(prepared_at_ms=int(time.time() * 1000), apply_deletes=deletes,
                                vote=vote)
    kept = staged.request
    kept.CopyFrom(request)
    kept.ClearField("upserts")
    kept.ClearField("upsert_values")
    if len(apply) == len(request.upserts) and request.upsert_values:
        # Nothing skipped and values already packed (the usual case): store them as they came.
        staged.apply_upserts.extend(request.upserts)
        staged.apply_values = request.upsert_values
        return staged
    applied = {r.id for r in apply}
    staged.apply_upserts.extend(v for v in request.upserts if v.id in applied)
    for vector in staged.apply_upserts:
        if vector.values:
            vector.ClearField("values")     # the older encoding carried values per vector
    if apply:
        staged.apply_values = pack_values(np.stack([r.values for r in apply]))
    return staged


def _locked_ids(staged: node_pb2.StagedTxn) -> list[str]:
    """The ids a staged txn locked at prepare: every upsert (skipped ones too) and delete.
    Files written before the stored request dropped its upserts list them there."""
    if staged.request.upserts:
        upserts = [v.id for v in staged.request.upserts]
    else:
        upserts = [v.id for v in staged.apply_upserts] + list(staged.vote.skipped_ids)
    return upserts + list(staged.request.delete_ids)


def _write_durably(path: str, data: bytes) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex[:6]}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _apply_then_remove(replica: ShardReplica, upserts: list, deletes: list[str],
                       path: str, now_ms: int | None = None,
                       position: tuple[int, int] | None = None) -> None:
    """Writes a committed plan's rows, then removes its staged file once a store commit holds
    them: at once without a log position (the write commits), or when the replica's group
    commit reaches `position`."""
    replica.write(upserts, deletes, ExistingPolicy.OVERWRITE, now_ms, position=position)
    if position is None:
        _remove(path)
    else:
        replica.when_durable(position, lambda: _remove(path))


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
