"""The 2PC participant's decisions as a pure step function (no I/O, no clock).

`step(state, event) -> (state, actions)` for one copy of one shard (a participant) and every txn
it holds. node/txn.py is its driver: it turns a Prepare, Commit or Abort request, a replicated
op, a staged file found at start, a meta answer and the result of each of its own I/O actions
into an event, and performs the actions in the order given. The seeded simulation
(router/txn_sim.py) drives this same function over a simulated network with crashes, so the
decisions the node runs are the ones the simulation checks. It lives in consensus/ because both
node/ and router/ may import consensus/, and neither may import the other.

Per txn (TRANSITIONS; None is "not held here"):

    None --Prepare--> STAGING --Staged--> REPLICATING --Replicated--> PREPARED (votes yes)
                         |                    |--NotPrimary--> None (drops its plan, votes no)
                         |                    +--ReplicationFailed--> ABORTING (votes no)
                         +--StageFailed--> None (votes no)
    None --Adopt (a copy stages its primary's plan)--> PREPARED
    None --Reload (a staged file found at start)--> UNCONFIRMED (like PREPARED, never votes yes)
    PREPARED | UNCONFIRMED --Decision--> COMMITTING | ABORTING --Finished--> COMMITTED | ABORTED
                                                 --FinishFailed--> UNCONFIRMED
    None --Decision(abort)--> ABORTED
    any held --Forget (the copy's files were replaced)--> None

How a decision is finished depends on the copy's role, which the driver reads from the catalog
and puts in the event: a primary logs the decision in the shard's op log, then applies it, then
sends it to the in-sync copies (so no copy holds rows its log does not know); a copy refuses a
coordinator's decision (the coordinator retries on the primary) and applies only what its
primary logged; a copy alone (no replication, or its dataset is gone) applies at once.

A txn prepared longer than txn_prepared_timeout_ms asks the meta group (Timeout -> AskMeta);
no decision recorded means the participant proposes abort (ProposeAbort), and whichever decision
the group answers is applied (first writer wins). A copy whose primary never logged its plan
(the primary was deposed after staging it) drops that plan when the group answers abort: an
abort changes no row, so no log entry is needed for it.

A decision the group still lists as unacknowledged by a shard (its Ack was lost with the
node's memory: a crash between applying and the batched AckTxns) is given again to the shard's
primary (node/txn.py's resend_unacked, router/txn_sim.py's resend): one that holds the txn
finishes it; one that finished it, or that holds no plan for a COMMIT (it was applied and
forgotten, see _decide_unknown), confirms it.

Finished txns are remembered (at most txn_finished_remembered_max per copy, in memory only: a
restart forgets them), so a late or repeated Prepare is answered as the first was and a late
prepare op re-sent to a copy is not staged again.

TABLE maps every (state, event type) pair to its handler: a listed transition, or an explicit
refusal (an answer that changes nothing). `step` raises ValueError only for a transition a
handler makes outside TRANSITIONS, a programmer error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Union

from tributary import limits

STAGING, REPLICATING, PREPARED = "staging", "replicating", "prepared"
# Prepared, but whether the plan reached the op log is unknown (found on disk at start, or its
# replication or finishing failed): resolved like PREPARED, but it never votes yes.
UNCONFIRMED = "unconfirmed"
COMMITTING, ABORTING, COMMITTED, ABORTED = "committing", "aborting", "committed", "aborted"
STATES = (None, STAGING, REPLICATING, PREPARED, UNCONFIRMED, COMMITTING, ABORTING, COMMITTED,
          ABORTED)
FINISHED = frozenset({COMMITTED, ABORTED})
# Prepared txns: waiting for a decision.
IN_DOUBT = frozenset({PREPARED, UNCONFIRMED})
# States whose txn holds its ids' locks and its staged plan.
HOLDING = frozenset({STAGING, REPLICATING, PREPARED, UNCONFIRMED, COMMITTING, ABORTING})
COMMIT, ABORT = "commit", "abort"
TRANSITIONS = frozenset({
    (None, STAGING), (STAGING, REPLICATING), (STAGING, None),
    (REPLICATING, PREPARED), (REPLICATING, None), (REPLICATING, ABORTING),
    (REPLICATING, UNCONFIRMED),
    (None, PREPARED), (None, UNCONFIRMED), (None, ABORTED),
    (PREPARED, COMMITTING), (PREPARED, ABORTING), (PREPARED, None),
    (UNCONFIRMED, COMMITTING), (UNCONFIRMED, ABORTING), (UNCONFIRMED, None),
    (COMMITTING, COMMITTED), (COMMITTING, UNCONFIRMED), (COMMITTING, None),
    (ABORTING, ABORTED), (ABORTING, UNCONFIRMED), (ABORTING, None),
})

# Where a decision comes from.
COORDINATOR, META, LOG = "coordinator", "meta", "log"
# The copy's role when the driver read the catalog.
PRIMARY, COPY, ALONE = "primary", "copy", "alone"
# Reasons of a "no" vote or refusal the driver turns into a typed error.
NOT_PRIMARY = "not_primary"
# (UNCONFIRMED: a plan that may not have reached the op log.)
IN_PROGRESS = "in_progress"
ALREADY_ABORTED = "already_aborted"


def is_transition_valid(old: str | None, new: str | None) -> bool:
    return old == new or (old, new) in TRANSITIONS


# ---- events (what happened) ----------------------------------------------------------------------

@dataclass(frozen=True)
class Prepare:
    """A coordinator's Prepare reached the shard's primary (the driver validated its input).
    `keys` are the ids it locks; only the simulation reads them (the driver locks the ids)."""

    txn_id: str
    keys: frozenset = frozenset()


@dataclass(frozen=True)
class Staged:
    """StagePlan succeeded: the ids are locked and the plan is durable here."""

    txn_id: str


@dataclass(frozen=True)
class StageFailed:
    """StagePlan failed (ids locked past txn_lock_wait_ms, the existing-id policy refused, or
    a disk error); `error` is what the coordinator hears."""

    txn_id: str
    error: Any = None


@dataclass(frozen=True)
class Replicated:
    """ReplicatePlan succeeded: the plan is in the shard's op log and on every in-sync copy
    (or the node runs without replication)."""

    txn_id: str


@dataclass(frozen=True)
class NotPrimary:
    """ReplicatePlan found, under the shard's write lock, that this node is no longer the
    shard's primary: nothing was logged or sent."""

    txn_id: str
    message: str = ""


@dataclass(frozen=True)
class ReplicationFailed:
    """ReplicatePlan failed after it may have logged or sent the plan."""

    txn_id: str
    error: Any = None
    role: str = PRIMARY


@dataclass(frozen=True)
class Adopt:
    """A copy receives its primary's prepared plan (a replicated prepare op)."""

    txn_id: str
    keys: frozenset = frozenset()


@dataclass(frozen=True)
class Reload:
    """A staged plan found on disk (at start, or in the files of a snapshot just installed)."""

    txn_id: str
    keys: frozenset = frozenset()


@dataclass(frozen=True)
class Decision:
    """A decision for the txn: from its coordinator (Commit / Abort RPC), from the meta group
    (an answer to AskMeta or ProposeAbort; None: the group holds none), or from the shard's
    op log (a copy applying its primary's logged decision, or a restarted node its last logged
    op). `due`: the txn has been prepared for txn_prepared_timeout_ms."""

    txn_id: str
    decision: str | None
    source: str = COORDINATOR
    role: str = PRIMARY
    due: bool = True


@dataclass(frozen=True)
class Timeout:
    """The resolver looks at a prepared txn (it has waited txn_prepared_timeout_ms, or the node
    is starting and resolves everything before it serves)."""

    txn_id: str


@dataclass(frozen=True)
class Finished:
    """ApplyDecision succeeded: the rows are written (commit) or the plan dropped (abort)."""

    txn_id: str


@dataclass(frozen=True)
class FinishFailed:
    """LogDecision or ApplyDecision failed: the txn stays prepared and is resolved later."""

    txn_id: str


@dataclass(frozen=True)
class Forget:
    """The copy's files were replaced by a snapshot of its primary's: what it held is gone
    (the snapshot's staged plans come back as Reload)."""

    txn_id: str


Event = Union[Prepare, Staged, StageFailed, Replicated, NotPrimary, ReplicationFailed, Adopt,
              Reload, Decision, Timeout, Finished, FinishFailed, Forget]
EVENT_TYPES = (Prepare, Staged, StageFailed, Replicated, NotPrimary, ReplicationFailed, Adopt,
               Reload, Decision, Timeout, Finished, FinishFailed, Forget)


# ---- actions (what the driver must do, in this order) --------------------------------------------

@dataclass(frozen=True)
class StagePlan:
    """Lock the batch's ids (bounded wait), resolve the existing-id policy into a plan and write
    it durably. Result: Staged or StageFailed."""

    txn_id: str


@dataclass(frozen=True)
class ReplicatePlan:
    """Under the shard's write lock: check this node is still the primary, log the plan and
    send it to the in-sync copies. Result: Replicated, NotPrimary or ReplicationFailed."""

    txn_id: str


@dataclass(frozen=True)
class StoreCopy:
    """A copy writes its primary's plan durably and takes its ids' locks."""

    txn_id: str


@dataclass(frozen=True)
class TakeLocks:
    """Take the locks of a reloaded plan."""

    txn_id: str


@dataclass(frozen=True)
class DropStaged:
    """Remove the staged plan and release its locks (nothing was logged or sent)."""

    txn_id: str


@dataclass(frozen=True)
class Release:
    """Release the locks and forget the plan; its files are already gone."""

    txn_id: str


@dataclass(frozen=True)
class LogDecision:
    """Append the decision to the shard's op log (the primary, under the write lock, which it
    holds until SendToCopies)."""

    txn_id: str
    decision: str


@dataclass(frozen=True)
class ApplyDecision:
    """Commit: write the plan's rows; the plan is removed only once a store commit holds them
    (at once when no log holds the decision; else the store's group commit, and a restart
    replays the decisions logged past the store's last commit from their plans). Abort: remove
    the plan. Then release the locks. Result: Finished or FinishFailed."""

    txn_id: str
    decision: str


@dataclass(frozen=True)
class SendToCopies:
    """Send the logged decision to the shard's in-sync copies."""

    txn_id: str
    decision: str


@dataclass(frozen=True)
class Ack:
    """Tell the meta group (AckTxns, batched) this copy applied the txn's decision."""

    txn_id: str


@dataclass(frozen=True)
class Vote:
    """Answer the Prepare: yes, or no with `reason` (the StageFailed / ReplicationFailed error,
    NOT_PRIMARY, IN_PROGRESS or ALREADY_ABORTED)."""

    txn_id: str
    yes: bool
    reason: Any = None


@dataclass(frozen=True)
class Answer:
    """Answer a Commit / Abort: whether this call applied the decision."""

    txn_id: str
    applied: bool


@dataclass(frozen=True)
class Refuse:
    """Refuse a coordinator's decision: this copy is not the primary (StaleEpoch)."""

    txn_id: str
    reason: str = NOT_PRIMARY


@dataclass(frozen=True)
class AwaitFinish:
    """Another call is finishing the txn: wait for it, then answer applied=False."""

    txn_id: str


@dataclass(frozen=True)
class AskMeta:
    """Read the txn's decision from the meta group (a linearizable read). Result: Decision
    with source META."""

    txn_id: str


@dataclass(frozen=True)
class ProposeAbort:
    """Propose DecideTxn(abort) to the meta group. Result: Decision with source META."""

    txn_id: str


@dataclass(frozen=True)
class Violation:
    """A message the protocol can never produce (a finished txn told the other decision)."""

    message: str


Action = Union[StagePlan, ReplicatePlan, StoreCopy, TakeLocks, DropStaged, Release, LogDecision,
               ApplyDecision, SendToCopies, Ack, Vote, Answer, Refuse, AwaitFinish, AskMeta,
               ProposeAbort, Violation]


# ---- state ---------------------------------------------------------------------------------------

def _frozen(mapping: dict) -> Mapping:
    return MappingProxyType(mapping)


@dataclass(frozen=True)
class ParticipantState:
    name: str
    # txn_id -> one of STATES (never None; a txn not held here is absent)
    txns: Mapping[str, str] = field(default_factory=lambda: _frozen({}))
    # finished txn ids, oldest first: at most txn_finished_remembered_max are remembered
    finished: tuple[str, ...] = ()

    def prepared(self) -> list[str]:
        return sorted(t for t, s in self.txns.items() if s in IN_DOUBT)

    def holding(self) -> list[str]:
        return sorted(t for t, s in self.txns.items() if s in HOLDING)


def _to(state: ParticipantState, txn_id: str, new: str | None) -> ParticipantState:
    old = state.txns.get(txn_id)
    if not is_transition_valid(old, new):
        raise ValueError(f"participant {state.name} txn {txn_id}: {old} -> {new} not allowed")
    txns = dict(state.txns)
    finished = state.finished
    if new is None:
        txns.pop(txn_id, None)
    else:
        txns[txn_id] = new
    if new in FINISHED and old not in FINISHED:
        finished = finished + (txn_id,)
        if len(finished) > limits.txn_finished_remembered_max:
            for gone in finished[:-limits.txn_finished_remembered_max]:
                if txns.get(gone) in FINISHED:
                    del txns[gone]
            finished = finished[-limits.txn_finished_remembered_max:]
    return dataclasses.replace(state, txns=_frozen(txns), finished=finished)


def _finish_actions(txn_id: str, decision: str, role: str) -> list[Action]:
    """How a copy in `role` finishes a decision: a primary logs it before it applies it and
    sends it to its copies after; a copy alone applies it."""
    if role == PRIMARY:
        return [LogDecision(txn_id, decision), ApplyDecision(txn_id, decision),
                SendToCopies(txn_id, decision), Ack(txn_id)]
    return [ApplyDecision(txn_id, decision), Ack(txn_id)]


def _finishing(decision: str) -> str:
    return COMMITTING if decision == COMMIT else ABORTING


# ---- handlers: (state, event) -> (state, actions) ------------------------------------------------

Handler = Callable[[ParticipantState, Any, "str | None"], tuple[ParticipantState, list[Action]]]


def _ignore(state, event, current):
    """An explicit refusal: the event changes nothing here (a late or repeated message)."""
    return state, []


def _prepare_new(state, event: Prepare, current):
    return _to(state, event.txn_id, STAGING), [StagePlan(event.txn_id)]


def _prepare_in_progress(state, event: Prepare, current):
    # A retry racing the first Prepare: a yes now could come before the plan reaches the
    # copies (and the first may still find itself deposed), so it votes no, retriable.
    return state, [Vote(event.txn_id, False, IN_PROGRESS)]


def _prepare_again(state, event: Prepare, current):
    # A repeated Prepare of a txn prepared or committed here: the same yes as before.
    return state, [Vote(event.txn_id, True)]


def _prepare_aborted(state, event: Prepare, current):
    return state, [Vote(event.txn_id, False, ALREADY_ABORTED)]


def _prepare_unconfirmed(state, event: Prepare, current):
    # A plan found on disk may never have reached the op log (a crash between staging and
    # replicating it): a yes now could commit rows no copy holds. If this copy did vote yes
    # before, the coordinator has that vote already.
    return state, [Vote(event.txn_id, False, UNCONFIRMED)]


def _staged(state, event: Staged, current):
    return _to(state, event.txn_id, REPLICATING), [ReplicatePlan(event.txn_id)]


def _staged_unknown(state, event: Staged, current):
    # Forgotten while it staged (the copy's files were replaced): its plan is not ours.
    return state, [DropStaged(event.txn_id)]


def _stage_failed(state, event: StageFailed, current):
    return _to(state, event.txn_id, None), [DropStaged(event.txn_id),
                                            Vote(event.txn_id, False, event.error)]


def _stage_failed_unknown(state, event: StageFailed, current):
    return state, [DropStaged(event.txn_id), Vote(event.txn_id, False, event.error)]


def _replicated(state, event: Replicated, current):
    return _to(state, event.txn_id, PREPARED), [Vote(event.txn_id, True)]


def _not_primary(state, event: NotPrimary, current):
    # Deposed while it prepared: no copy holds the plan, so it goes here alone, and the vote
    # is no (a yes would let the coordinator commit a plan the new primary never staged).
    return _to(state, event.txn_id, None), [DropStaged(event.txn_id),
                                            Vote(event.txn_id, False, NOT_PRIMARY)]


def _replication_failed(state, event: ReplicationFailed, current):
    # Copies that staged the plan learn the abort from the log. A copy by now (the catalog
    # changed) cannot log: the txn stays prepared and is resolved like any other.
    if event.role == COPY:
        return _to(state, event.txn_id, UNCONFIRMED), [Vote(event.txn_id, False, event.error)]
    return _to(state, event.txn_id, ABORTING), \
        _finish_actions(event.txn_id, ABORT, event.role) + \
        [Vote(event.txn_id, False, event.error)]


def _result_unexpected(state, event, current):
    # A result for a txn no longer in that phase (forgotten meanwhile): the vote is no.
    reason = getattr(event, "error", None) or NOT_PRIMARY
    return state, [Vote(event.txn_id, False, reason)]


def _adopt(state, event, current):
    return _to(state, event.txn_id, PREPARED), [StoreCopy(event.txn_id)]


def _reload(state, event, current):
    return _to(state, event.txn_id, UNCONFIRMED), [TakeLocks(event.txn_id)]


def _decide_prepared(state, event: Decision, current):
    txn_id, decision = event.txn_id, event.decision
    if decision is None:
        # The group holds no decision: once the txn is due, propose abort (first writer wins).
        return state, ([ProposeAbort(txn_id)] if event.due else [])
    if event.source == LOG:
        # The primary logged it: apply here, log and send nothing (copies read the log).
        return _to(state, txn_id, _finishing(decision)), \
            _finish_actions(txn_id, decision, ALONE)
    if event.role == COPY:
        if event.source == META and decision == ABORT:
            # Only the primary logs decisions, but an abort changes no row: a copy drops the
            # plan at once, whether or not its primary ever logged it (one that was deposed
            # right after staging it never did, and would never log its end).
            return _to(state, txn_id, ABORTING), [ApplyDecision(txn_id, ABORT), Ack(txn_id)]
        # The coordinator retries on the primary; the resolver waits for the primary's log.
        return state, ([Refuse(txn_id)] if event.source == COORDINATOR else [])
    actions = _finish_actions(txn_id, decision, event.role)
    if event.source == COORDINATOR:
        actions.append(Answer(txn_id, True))
    return _to(state, txn_id, _finishing(decision)), actions


def _decide_unknown(state, event: Decision, current):
    txn_id = event.txn_id
    actions: list[Action] = []
    if event.decision == ABORT:
        # Never prepared here (or finished and forgotten): remember the abort, so a late
        # Prepare is refused, and confirm it so the group can forget the decision.
        actions.append(Ack(txn_id))
        if event.source == COORDINATOR:
            actions.append(Answer(txn_id, False))
        return _to(state, txn_id, ABORTED), actions
    if event.decision == COMMIT and event.source != LOG and event.role in (PRIMARY, ALONE):
        # A commit of a txn its shard's primary does not hold: applied and forgotten (a
        # restart forgets, and may have lost the Ack). The group records COMMIT only after
        # every participant voted yes, and this shard's primary voted yes only once its plan
        # was durable here and on every in-sync copy (the only copies ever promoted, and a
        # copy built later replays or copies that plan); a plan is removed only after its
        # rows are committed to the store. So not holding it means it was applied: confirm
        # it, or the group lists the batch as unapplied for ever (and no cut of the dataset
        # can settle). A copy, or a decision read from the log, may not have its plan yet:
        # it confirms nothing.
        actions.append(Ack(txn_id))
    if event.source == COORDINATOR:
        actions.append(Answer(txn_id, False))
    return state, actions


def _decide_while_staging(state, event: Decision, current):
    # A decision can reach a txn that has not voted yet only as an abort (no yes, no commit).
    if event.decision == COMMIT:
        return state, [Violation(f"{state.name}: commit of {event.txn_id} before it voted")]
    return state, ([Answer(event.txn_id, False)] if event.source == COORDINATOR else [])


def _decide_while_finishing(state, event: Decision, current):
    finishing = COMMIT if current == COMMITTING else ABORT
    if event.decision not in (None, finishing):
        return state, [Violation(f"{state.name}: {event.txn_id} finishing {finishing}, then "
                                 f"told {event.decision}")]
    return state, ([AwaitFinish(event.txn_id)] if event.source == COORDINATOR else [])


def _decide_finished(state, event: Decision, current):
    finished = COMMIT if current == COMMITTED else ABORT
    if event.decision not in (None, finished):
        return state, [Violation(f"{state.name}: {event.txn_id} finished {finished}, then "
                                 f"told {event.decision}")]
    if event.decision is None:
        return state, []
    actions: list[Action] = [Ack(event.txn_id)]
    if event.source == COORDINATOR:
        actions.append(Answer(event.txn_id, False))
    return state, actions


def _timeout(state, event: Timeout, current):
    return state, [AskMeta(event.txn_id)]


def _finished(state, event: Finished, current):
    return _to(state, event.txn_id, COMMITTED if current == COMMITTING else ABORTED), []


def _finish_failed(state, event: FinishFailed, current):
    # Its decision's fate is open again, and so (after a failed replication's abort) is
    # whether the plan reached the copies: it stays held but votes yes no more.
    return _to(state, event.txn_id, UNCONFIRMED), []


def _forget(state, event: Forget, current):
    return _to(state, event.txn_id, None), [Release(event.txn_id)]


def _table() -> dict[tuple[str | None, type], Handler]:
    table: dict[tuple[str | None, type], Handler] = {}
    for s in STATES:
        for event_type in EVENT_TYPES:
            table[(s, event_type)] = _ignore
    table[(None, Prepare)] = _prepare_new
    for s in (STAGING, REPLICATING):
        table[(s, Prepare)] = _prepare_in_progress
    for s in (PREPARED, COMMITTING, COMMITTED):
        table[(s, Prepare)] = _prepare_again
    for s in (ABORTING, ABORTED):
        table[(s, Prepare)] = _prepare_aborted
    table[(STAGING, Staged)] = _staged
    table[(None, Staged)] = _staged_unknown
    table[(STAGING, StageFailed)] = _stage_failed
    table[(None, StageFailed)] = _stage_failed_unknown
    table[(REPLICATING, Replicated)] = _replicated
    table[(REPLICATING, NotPrimary)] = _not_primary
    table[(REPLICATING, ReplicationFailed)] = _replication_failed
    for s in STATES:
        if s != REPLICATING:
            for event_type in (Replicated, NotPrimary, ReplicationFailed):
                table[(s, event_type)] = _result_unexpected
    table[(None, Adopt)] = _adopt
    table[(None, Reload)] = _reload
    table[(None, Decision)] = _decide_unknown
    table[(STAGING, Decision)] = _decide_while_staging
    table[(REPLICATING, Decision)] = _decide_while_staging
    table[(PREPARED, Decision)] = _decide_prepared
    table[(UNCONFIRMED, Decision)] = _decide_prepared
    table[(UNCONFIRMED, Prepare)] = _prepare_unconfirmed
    table[(UNCONFIRMED, Timeout)] = _timeout
    table[(COMMITTING, Decision)] = _decide_while_finishing
    table[(ABORTING, Decision)] = _decide_while_finishing
    table[(COMMITTED, Decision)] = _decide_finished
    table[(ABORTED, Decision)] = _decide_finished
    table[(PREPARED, Timeout)] = _timeout
    table[(COMMITTING, Finished)] = _finished
    table[(ABORTING, Finished)] = _finished
    table[(COMMITTING, FinishFailed)] = _finish_failed
    table[(ABORTING, FinishFailed)] = _finish_failed
    for s in (STAGING, REPLICATING, PREPARED, UNCONFIRMED, COMMITTING, ABORTING):
        table[(s, Forget)] = _forget
    return table


# Every (state, event type) pair: a listed transition or an explicit refusal (_ignore and the
# handlers that answer without changing the state).
TABLE: Mapping[tuple[str | None, type], Handler] = MappingProxyType(_table())


def step(state: ParticipantState, event: Event) -> tuple[ParticipantState, list[Action]]:
    """The participant's next state and the actions it asks for, to be performed in order.
    Raises ValueError for an unknown event type or a transition outside TRANSITIONS."""
    current = state.txns.get(event.txn_id)
    handler = TABLE.get((current, type(event)))
    if handler is None:
        raise ValueError(f"unknown event {event!r}")
    return handler(state, event, current)
