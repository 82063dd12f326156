"""Atomic write batches: one phase for one shard, two-phase commit across shards.

The router is the 2PC coordinator. Its decisions are the pure step function of
router/txn_steps.py (states, transition table, events and actions); `_two_phase` here is its
driver, which only performs the actions (RPCs) and feeds their results back as events.

The decision is recorded in the meta group (DecideTxn) before phase two starts, so a router
that dies after deciding blocks nobody: participants that time out ask the group and apply what
it recorded. The first recorded decision wins. The client is answered once the decision is
recorded and every reachable participant has applied it; a participant that is down applies it
on recovery before it serves again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from consensus import commands
from consensus.client import MetaClient
from consensus.state import TXN_ABORT, TXN_COMMIT, DatasetRecord
from proto import deeplake_service_pb2 as pb
from proto import node_pb2
from router.metrics import TXN_LATENCY, TXNS
from router import txn_steps as steps
from router.shard_client import ShardClient
from tributary import errors, faults, limits, tracing

log = logging.getLogger("tributary.router.txn")

# The coordinator's states and transition table live with its pure step function.
STARTED, PREPARING, DECIDING, COMMITTING, COMMITTED, ABORTING, ABORTED = (
    steps.STARTED, steps.PREPARING, steps.DECIDING, steps.COMMITTING, steps.COMMITTED,
    steps.ABORTING, steps.ABORTED)
TRANSITIONS = steps.TRANSITIONS
is_transition_valid = steps.is_transition_valid


@dataclass
class ShardBatch:
    # Upserts carry no values: those travel packed in `values` (node.proto's upsert_values).
    upserts: list[pb.Vector] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    values: bytes = b""


@dataclass
class BatchOutcome:
    inserted: int = 0
    skipped: int = 0
    deleted: int = 0
    not_found: int = 0
    skipped_ids: list[str] = field(default_factory=list)
    txn_id: str = ""

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "BatchOutcome":
        return cls(**json.loads(text))


# on_shard(shard, call) runs call(address, ref) against the shard's current placement,
# refreshing it on StaleEpoch (RouterCore.on_shard).
OnShard = Callable[[int, Callable[[str, node_pb2.ShardRef], Awaitable]], Awaitable]


class Coordinator:
    def __init__(self, meta: MetaClient, catalog, shards: ShardClient, on_shard_factory):
        self.meta = meta
        self.catalog = catalog
        self.shards = shards
        self.on_shard_factory = on_shard_factory

    async def write(self, record: DatasetRecord, batches: dict[int, ShardBatch],
                    existing: int, idempotency_key: str = "") -> BatchOutcome:
        """Applies all of `batches` or none of them. Raises the error of the first participant
        that voted no, Aborted when the group decided abort, Unavailable when the decision's
        fate is unknown (retry with the same idempotency key to learn it)."""
        if len(batches) == 1 and not idempotency_key:
            # One phase: a write stuck on a primary that is failed over follows the failover.
            one_phase: OnShard = self.on_shard_factory(record, follow_failover=True,
                                                       planned=True)
            (shard, batch), = batches.items()
            # One id for every attempt: a new primary that took over an attempt which the
            # deposed one applied answers the retry with that attempt's outcome.
            write_id = uuid.uuid4().hex
            response = await one_phase(shard, lambda address, ref: self.shards.write(
                address, node_pb2.WriteRequest(
                    shard=ref, upserts=batch.upserts, delete_ids=batch.deletes,
                    existing=existing, upsert_values=batch.values, write_id=write_id)))
            return BatchOutcome(response.inserted, response.skipped, response.deleted,
                                response.not_found, list(response.skipped_ids))
        # A txn's prepared state lives on the participant it prepared on: 2PC calls stay there.
        # Prepares carry rows placed on the record's shard count (refused, so the batch aborts
        # and is planned again, once the count changed); decisions go to the shards prepared.
        on_shard: OnShard = self.on_shard_factory(record, follow_failover=False)
        prepare_on: OnShard = self.on_shard_factory(record, follow_failover=False, planned=True)
        return await self._two_phase(record, batches, existing, idempotency_key, on_shard,
                                     prepare_on)

    async def _two_phase(self, record: DatasetRecord, batches: dict[int, ShardBatch],
                         existing: int, idempotency_key: str, on_shard: OnShard,
                         prepare_on: OnShard) -> BatchOutcome:
        """The driver of the pure coordinator (router/txn_steps.py): performs each action step()
        asks for and feeds its result back as the next event, until a Reply."""
        txn_id = uuid.uuid4().hex
        scoped_key = f"{record.tenant_id}/{record.uuid}/{idempotency_key}" \
            if idempotency_key else ""
        participants = tuple(f"{record.uuid}/{s}" for s in sorted(batches))
        if scoped_key:
            # A retry of a batch that committed returns the first outcome without preparing
            # again (its prepare could now fail, e.g. on ids the first attempt created).
            # A linearizable read of that one record (the leader confirms itself without a log
            # entry); idempotency records are 2PC bookkeeping, outside the watched catalog.
            earlier = await self.meta.idempotency_record(scoped_key)
            if earlier is not None:
                TXNS.labels("deduplicated").inc()
                return BatchOutcome.from_json(earlier.outcome_json)
        TXNS.labels("started").inc()
        outcome = BatchOutcome(txn_id=txn_id)

        async def prepare(shard: int, batch: ShardBatch):
            return shard, await prepare_on(shard, lambda address, ref: self.shards.prepare(
                address, node_pb2.PrepareRequest(
                    txn_id=txn_id, shard=ref, upserts=batch.upserts, delete_ids=batch.deletes,
                    existing=existing, participants=participants,
                    upsert_values=batch.values)))

        async def perform(action) -> steps.Event | None:
            nonlocal outcome
            if isinstance(action, steps.SendPrepare):
                started = time.perf_counter()
                with tracing.span("2pc.prepare", {"tributary.txn_id": txn_id,
                                                  "tributary.participants": len(batches)}):
                    results = await asyncio.gather(
                        *(prepare(s, b) for s, b in batches.items()), return_exceptions=True)
                TXN_LATENCY.labels("prepare").observe(time.perf_counter() - started)
                refusal = next((r for r in results if isinstance(r, BaseException)), None)
                faults.crash_point(faults.ROUTER_AFTER_PREPARE)
                votes = [v for _, v in (r for r in results if not isinstance(r, BaseException))]
                outcome = BatchOutcome(
                    inserted=sum(v.inserted for v in votes),
                    skipped=sum(v.skipped for v in votes),
                    deleted=sum(v.deleted for v in votes),
                    not_found=sum(v.not_found for v in votes),
                    skipped_ids=[i for v in votes for i in v.skipped_ids], txn_id=txn_id)
                return steps.Voted(refusal)
            if isinstance(action, steps.RecordDecision):
                if action.decision == TXN_ABORT:
                    result = await self._record(txn_id, TXN_ABORT, participants, "", "")
                    return steps.Recorded(result["decision"])
                with tracing.span("2pc.decide", {"tributary.txn_id": txn_id}) as current:
                    try:
                        result = await self._record(txn_id, TXN_COMMIT, participants,
                                                    action.idempotency_key, outcome.to_json())
                    except errors.Unavailable as exc:
                        return steps.RecordFailed(exc.message)
                    if current is not None:
                        current.set_attribute("tributary.txn_decision",
                                              str(result.get("decision")))
                faults.crash_point(faults.ROUTER_AFTER_DECISION)
                return steps.Recorded(result["decision"], result.get("duplicate_of", ""),
                                      result.get("outcome_json", ""))
            if isinstance(action, steps.SendDecision):
                if action.decision == TXN_COMMIT:
                    commit_started = time.perf_counter()
                    with tracing.span("2pc.commit", {"tributary.txn_id": txn_id}):
                        await self._phase_two(batches, txn_id, TXN_COMMIT, on_shard,
                                              crash_midway=True)
                    TXN_LATENCY.labels("commit").observe(time.perf_counter() - commit_started)
                else:
                    await self._phase_two(batches, txn_id, TXN_ABORT, on_shard)
                return steps.Delivered()
            raise AssertionError(f"unknown action {action!r}")

        state = steps.CoordinatorState(txn_id, participants, scoped_key)
        state, actions = steps.step(state, steps.Begin())
        while True:
            (action,) = actions
            if isinstance(action, steps.Reply):
                return self._answer(action, outcome, txn_id)
            state, actions = steps.step(state, await perform(action))

    @staticmethod
    def _answer(reply: steps.Reply, outcome: BatchOutcome, txn_id: str) -> BatchOutcome:
        """The client's answer for the coordinator's Reply."""
        if reply.kind == "committed":
            TXNS.labels("committed").inc()
            return outcome
        if reply.kind == "deduplicated":
            # A retry of a batch that already committed: answer as the first time did.
            TXNS.labels("deduplicated").inc()
            return BatchOutcome.from_json(reply.outcome_json)
        if reply.kind == "in_doubt":
            TXNS.labels("in_doubt").inc()
            raise errors.Unavailable(
                f"could not record the decision of transaction {txn_id} ({reply.error}); its "
                "outcome is unknown: retry with the same Idempotency-Key to learn it")
        TXNS.labels("aborted").inc()
        if reply.kind == "refused":
            if isinstance(reply.error, errors.TributaryError):
                raise reply.error
            raise errors.Internal(f"prepare failed: {reply.error!r}")
        raise errors.Aborted(f"transaction {txn_id} was aborted by recovery before it could "
                             "commit; retry")

    async def _record(self, txn_id: str, decision: str, participants: tuple[str, ...],
                      scoped_key: str, outcome_json: str) -> dict:
        # A COMMIT meets a fence while a consistent cut of a dataset it touches is taken
        # (consensus/versions.py); nothing was recorded, so it is proposed again shortly. A
        # fence lasts cut_fence_max_ms at most; past twice that (cut after cut), the txn aborts.
        give_up_at = time.monotonic() + 2 * limits.cut_fence_max_ms / 1000
        try:
            while True:
                result = await self.meta.propose(commands.DecideTxn(
                    txn_id, decision, participants, scoped_key, outcome_json,
                    int(time.time() * 1000)))
                if "fenced_until_ms" not in result:
                    return result
                if time.monotonic() >= give_up_at:
                    decision, scoped_key, outcome_json = TXN_ABORT, "", ""
                else:
                    await asyncio.sleep(limits.cut_fence_retry_ms / 1000)
        except errors.TributaryError as exc:
            TXNS.labels("in_doubt").inc()
            if decision == TXN_ABORT:
                # Participants find no decision after their timeout and abort on their own.
                return {"decision": TXN_ABORT}
            raise errors.Unavailable(
                f"could not record the decision of transaction {txn_id} ({exc.message}); its "
                "outcome is unknown: retry with the same Idempotency-Key to learn it") from None

    async def _phase_two(self, batches: dict[int, ShardBatch], txn_id: str, decision: str,
                         on_shard: OnShard, crash_midway: bool = False) -> None:
        """Sends the recorded `decision` (TXN_COMMIT or TXN_ABORT) to every participant."""
        shards = sorted(batches)
        send_decision = self.shards.commit if decision == TXN_COMMIT else self.shards.abort
        method = "Commit" if decision == TXN_COMMIT else "Abort"

        async def send(shard: int) -> None:
            try:
                await on_shard(shard, lambda address, ref: send_decision(
                    address, node_pb2.TxnRequest(txn_id=txn_id, shard=ref)))
            except errors.TributaryError as exc:
                # Unreachable participants apply the recorded decision on recovery.
                log.warning("%s of txn %s on shard %d deferred to recovery: %s", method,
                            txn_id, shard, exc.message)

        if crash_midway and len(shards) > 1 and faults.enabled():
            # Only where a test can arm ROUTER_MID_COMMIT: one participant commits before the
            # others are sent theirs. Everywhere else all commits go out at once.
            await send(shards[0])
            faults.crash_point(faults.ROUTER_MID_COMMIT)
            shards = shards[1:]
        await asyncio.gather(*(send(s) for s in shards))
