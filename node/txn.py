"""Two-phase commit, participant side, plus the id locks every write and read respects.

A participant's states for one txn (explicit transitions, see TRANSITIONS):
    (none) --prepare--> PREPARED --commit--> (applied, forgotten)
                                 --abort---> (dropped, forgotten)
Prepare validates the batch, locks its ids, decides what applying it means (ids skipped under
EXISTING_SKIP are removed, upserts overwrite, so applying twice gives the same state), and writes
that plan to <replica>/txns/<txn_id>.bin with fsync before voting yes. The plan is a protobuf
message (StagedTxn), never a pickle.

Recovery. A txn prepared for longer than txn_prepared_timeout_ms is resolved against the meta
group: a recorded decision is applied; no decision means abort, which the participant records
itself (first writer wins, so a slow coordinator's later COMMIT gets ABORT back). On start, a
node resolves every staged txn before it serves anything.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass

import numpy as np

from consensus import commands
from consensus.client import CatalogCache, MetaClient
from consensus.state import TXN_ABORT, TXN_COMMIT
from node.convert import records_from_protos
from proto import node_pb2
from shard.records import ExistingPolicy
from shard.replica import ShardReplica
from tributary import errors, faults, limits
from tributary.validation import pack_values

log = logging.getLogger("tributary.node.txn")

PREPARED = "prepared"
APPLIED = "applied"
DROPPED = "dropped"
TRANSITIONS = {(None, PREPARED), (PREPARED, APPLIED), (PREPARED, DROPPED)}

_TXN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def is_valid_transition(old: str | None, new: str) -> bool:
    return (old, new) in TRANSITIONS


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
    txn_id: str
    dataset_uuid: str
    shard: int
    staged: node_pb2.StagedTxn
    path: str
    state: str = PREPARED
    # The validated records to apply, kept from prepare so that commit neither parses nor
    # validates the batch again. None for a txn reloaded from disk (built from `staged` then).
    records: list | None = None


class Participant:
    def __init__(self, host, meta: MetaClient, catalog: CatalogCache, replication=None):
        self.host = host
        # node.replication.Replication: a commit applied here reaches the in-sync copies.
        self.replication = replication
        self.meta = meta
        self.catalog = catalog
        self.locks: dict[tuple[str, int], IdLocks] = {}
        # Keyed by (txn_id, participant): one txn may touch several shards on this node.
        self.prepared: dict[tuple[str, str], PreparedTxn] = {}
        self._pending_acks: list[tuple[str, str]] = []
        # One lock per replica serializes the finishing of its txns (commit, abort, recovery),
        # while txns of different replicas on this node apply in parallel.
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

    # ---- phase 1 -------------------------------------------------------------------------------

    async def prepare(self, request: node_pb2.PrepareRequest) -> node_pb2.PrepareResponse:
        if not _TXN_ID.match(request.txn_id):
            raise errors.InvalidArgument("txn_id must be 1-64 letters, digits, '-' or '_'")
        ref = request.shard
        key = (request.txn_id, participant_name(ref.dataset_uuid, ref.shard))
        if key in self.prepared:
            return self.prepared[key].staged.vote
        record, replica = await self.host.replica(request.shard, "write")
        upserts = records_from_protos(request.upserts, record.dimensions, record.metric_type,
                                      request.upsert_values)
        ids = [v.id for v in upserts] + list(request.delete_ids)
        if len(set(ids)) != len(ids):
            raise errors.InvalidArgument("a batch may not name the same id twice")
        locks = self.locks_for(ref.dataset_uuid, ref.shard)
        await locks.acquire(ids, request.txn_id, limits.txn_lock_wait_ms / 1000)
        if key in self.prepared:
            # A retried Prepare raced with the first one while it waited for locks.
            return self.prepared[key].staged.vote
        path = self._staged_path(replica, request.txn_id)
        try:
            # One worker-thread hand-off for the plan and its durable write.
            staged, apply = await asyncio.to_thread(_stage, replica, request, upserts, ids, path)
        except BaseException:
            await locks.release(request.txn_id)
            raise
        self.prepared[key] = PreparedTxn(request.txn_id, ref.dataset_uuid, ref.shard, staged,
                                         path, records=apply)
        try:
            # The in-sync copies stage the same plan before this participant votes yes.
            await self._replicate(ref.dataset_uuid, ref.shard, node_pb2.ReplicatedOp(
                prepare=staged))
        except _NotPrimary as exc:
            # A "no" vote before anything was logged or sent: no copy holds the plan, so it
            # goes here alone.
            await self._finish_here(key, TXN_ABORT, int(time.time() * 1000))
            raise errors.StaleEpoch(str(exc)) from None
        except BaseException:
            # A "no" vote. Copies that staged the plan learn the abort from the log; if even
            # that cannot be logged here, the txn stays prepared and is resolved like any other.
            try:
                await self._finish(key, TXN_ABORT)
            except errors.TributaryError:
                pass
            raise
        return staged.vote

    async def adopt(self, dataset_uuid: str, shard: int, staged: node_pb2.StagedTxn) -> None:
        """A copy stages its primary's prepared plan (a replicated op): the same file, the same
        locks, so that it can finish the txn if it becomes primary."""
        key = (staged.request.txn_id, participant_name(dataset_uuid, shard))
        if key in self.prepared:
            return
        replica = await self.host.replica_unfenced(dataset_uuid, shard)
        if replica is None:
            return
        path = self._staged_path(replica, staged.request.txn_id)
        await asyncio.to_thread(_write_durably, path, staged.SerializeToString())
        locks = self.locks_for(dataset_uuid, shard)
        for i in _locked_ids(staged):
            locks.owner[i] = staged.request.txn_id
        self.prepared[key] = PreparedTxn(staged.request.txn_id, dataset_uuid, shard, staged, path)

    async def finish_replicated(self, dataset_uuid: str, shard: int, txn_id: str,
                                decision: str, now_ms: int | None = None) -> None:
        """A copy applies or drops a txn on its primary's decision (a replicated op), stamping
        the rows with the primary's time."""
        await self._finish((txn_id, participant_name(dataset_uuid, shard)), decision,
                           replicate=False, now_ms=now_ms)

    async def _replicate(self, dataset_uuid: str, shard: int, op: node_pb2.ReplicatedOp) -> None:
        """Sends `op` to the shard's in-sync copies. Raises StaleEpoch when this node is no
        longer the shard's primary (a failover while the txn prepared): a plan the new primary
        never staged must not get a yes vote, or a commit would reach no copy that serves."""
        if self.replication is None:
            return
        async with self.replication.write_lock(dataset_uuid, shard):
            record = self.catalog.state.datasets.get(dataset_uuid)
            if record is None:
                raise errors.NotFound("dataset not found (it may have been deleted)")
            if record.primary_of(shard) != self.host.node_id:
                raise _NotPrimary(f"node {self.host.node_id} stopped being the primary of "
                                  f"shard {shard} while the txn prepared")
            await self.replication.ensure_resynced(record, shard)
            await self.replication.replicate(record, shard, [op])

    # ---- phase 2 -------------------------------------------------------------------------------

    async def commit(self, txn_id: str, ref: node_pb2.ShardRef) -> bool:
        faults.crash_point(faults.PARTICIPANT_AFTER_VOTE)
        return await self._finish((txn_id, participant_name(ref.dataset_uuid, ref.shard)),
                                  TXN_COMMIT)

    async def abort(self, txn_id: str, ref: node_pb2.ShardRef) -> bool:
        key = (txn_id, participant_name(ref.dataset_uuid, ref.shard))
        if key not in self.prepared:
            # Never prepared here (or already dropped): confirm so the decision can be forgotten.
            self._pending_acks.append(key)
            return False
        return await self._finish(key, TXN_ABORT)

    async def _finish(self, key: tuple[str, str], decision: str, replicate: bool = True,
                      now_ms: int | None = None) -> bool:
        """Applies or drops a prepared txn. Idempotent: an unknown key is already done.

        With replication (and unless replicate=False, which a copy applying its primary's logged
        decision passes), only the shard's primary finishes a txn, and it logs the decision
        first, then applies it, then sends it to the in-sync copies: a copy never applies a txn
        on its own, so no copy holds rows its op log does not know. Elsewhere this raises
        StaleEpoch (the coordinator retries on the primary; the resolver waits for the
        primary's decision)."""
        known = self.prepared.get(key)
        if known is None:
            return False
        now_ms = now_ms or int(time.time() * 1000)
        if not replicate or self.replication is None:
            return await self._finish_here(key, decision, now_ms)
        uuid_, shard = known.dataset_uuid, known.shard
        record = self.catalog.state.datasets.get(uuid_)
        if record is None:
            return await self._finish_here(key, decision, now_ms)
        if record.primary_of(shard) != self.host.node_id:
            raise errors.StaleEpoch(f"node {self.host.node_id} is not the primary of shard "
                                    f"{shard}; the primary finishes txn {key[0]}")
        async with self.replication.write_lock(uuid_, shard):
            record = self.catalog.state.datasets.get(uuid_) or record
            await self.replication.ensure_resynced(record, shard)
            op = node_pb2.ReplicatedOp(finish=node_pb2.TxnFinish(txn_id=key[0],
                                                                 decision=decision),
                                       at_ms=now_ms)
            await self.replication.log_ops(record, shard, [op])
            applied = await self._finish_here(key, decision, now_ms)
            await self.replication.send_to_in_sync(record, shard, [op])
        return applied

    async def _finish_here(self, key: tuple[str, str], decision: str, now_ms: int) -> bool:
        """Applies or drops a prepared txn on this node's store only."""
        txn_id = key[0]
        known = self.prepared.get(key)
        if known is None:
            return False
        lock = self._finish_locks.setdefault((known.dataset_uuid, known.shard), asyncio.Lock())
        async with lock:
            txn = self.prepared.get(key)
            if txn is None:
                return False
            new_state = APPLIED if decision == TXN_COMMIT else DROPPED
            if not is_valid_transition(txn.state, new_state):
                raise errors.Internal(f"txn {txn_id}: {txn.state} -> {new_state} is not allowed")
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
                # the write committed.
                await asyncio.to_thread(_apply_then_remove, replica, upserts,
                                        list(txn.staged.apply_deletes), txn.path, now_ms)
            else:
                await asyncio.to_thread(_remove, txn.path)
            txn.state = new_state
            del self.prepared[key]
            in_doubt_ms = time.time() * 1000 - txn.staged.prepared_at_ms
            self.max_in_doubt_ms = max(self.max_in_doubt_ms, in_doubt_ms)
            self.resolved += 1
            await self.locks_for(txn.dataset_uuid, txn.shard).release(txn_id)
            self._pending_acks.append(key)
        return True

    # ---- recovery ------------------------------------------------------------------------------

    async def load_staged(self) -> int:
        """Reloads staged txns of every open replica and re-takes their locks."""
        loaded = 0
        for (dataset_uuid, shard), replica in list(self.host.replicas.items()):
            loaded += await self.load_staged_of(dataset_uuid, shard, replica)
        return loaded

    async def forget_shard(self, dataset_uuid: str, shard: int) -> None:
        """Drops what this node had prepared for one shard (its copy's files were just replaced
        by a snapshot of its primary's, whose staged txns load_staged_of then takes)."""
        name = participant_name(dataset_uuid, shard)
        for key in [k for k in self.prepared if k[1] == name]:
            txn = self.prepared.pop(key)
            await self.locks_for(dataset_uuid, shard).release(txn.txn_id)

    async def load_staged_of(self, dataset_uuid: str, shard: int, replica) -> int:
        """Reloads one replica's staged txns (at start, or after a copy installed a snapshot
        of its primary's files) and takes their locks."""
        directory = os.path.join(replica.path, "txns")
        if not os.path.isdir(directory):
            return 0
        loaded = 0
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if not name.endswith(".bin"):
                await asyncio.to_thread(_remove, path)   # a torn .tmp from a crash
                continue
            staged = node_pb2.StagedTxn()
            with open(path, "rb") as f:
                staged.ParseFromString(f.read())
            txn_id = staged.request.txn_id
            key = (txn_id, participant_name(dataset_uuid, shard))
            if key in self.prepared:
                continue
            await self.locks_for(dataset_uuid, shard).acquire(_locked_ids(staged), txn_id, 0)
            self.prepared[key] = PreparedTxn(txn_id, dataset_uuid, shard, staged, path)
            loaded += 1
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
                    record.primary_of(txn.shard) == self.host.node_id:
                return True
        return False

    async def resolve_due(self, force: bool = False) -> None:
        now_ms = time.time() * 1000
        due = [t for t in list(self.prepared.values())
               if now_ms - t.staged.prepared_at_ms >= limits.txn_prepared_timeout_ms]
        if not due and not force:
            return
        try:
            state = await self.catalog.refresh(linearizable=True)
        except errors.TributaryError as exc:
            log.warning("cannot read txn decisions: %s", exc.message)
            return
        for key, txn in list(self.prepared.items()):
            decision = None
            record = state.txns.get(txn.txn_id)
            if record is not None:
                decision = record.decision
            elif txn.txn_id in state.txn_tombstones:
                decision = state.txn_tombstones[txn.txn_id][0]
            elif txn in due:
                participants = tuple(txn.staged.request.participants) or (
                    participant_name(txn.dataset_uuid, txn.shard),)
                try:
                    result = await self.meta.propose(commands.DecideTxn(
                        txn.txn_id, TXN_ABORT, participants, "", "", int(time.time() * 1000)))
                except errors.TributaryError as exc:
                    log.warning("cannot record abort of %s: %s", txn.txn_id, exc.message)
                    continue
                decision = result["decision"]
                log.info("txn %s timed out prepared; meta decision is %s", txn.txn_id,
                         decision)
            if decision is not None:
                try:
                    await self._finish(key, decision)
                except errors.StaleEpoch:
                    pass    # a copy: its primary logs the decision, and the copy applies that

    async def background(self) -> None:
        """Resolves timed-out txns and sends batched acks, until cancelled."""
        last_ack = time.monotonic()
        while True:
            await asyncio.sleep(limits.txn_resolve_interval_ms / 1000)
            try:
                await self.resolve_due()
            except Exception:  # noqa: BLE001 - keep resolving on the next round
                log.exception("txn resolution failed")
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
                       path: str, now_ms: int | None = None) -> None:
    replica.write(upserts, deletes, ExistingPolicy.OVERWRITE, now_ms)
    _remove(path)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
