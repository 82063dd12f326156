"""The 2PC coordinator's decisions as a pure step function (no I/O, no clock).

`step(state, event) -> (state, actions)`: the driver in router/txn.py performs each action (the
RPCs to participants and the meta group), turns its result into the next event, and calls step
again; the simulation (router/txn_sim.py) does the same over a simulated network. Every phase
change goes through TRANSITIONS, the explicit table (as aiokafka's
`TransactionState.is_transition_valid`); an event a phase does not expect is a programmer error.
Each step asks for exactly one action, so the driver is a loop: perform it, step its result.

    STARTED -> PREPARING -> DECIDING -> COMMITTING -> COMMITTED
                   |            |   \\
                   +------------+----+--> ABORTING -> ABORTED
                                 \\
                                  +--> IN_DOUBT   (the decision's fate is unknown)

The commit decision is recorded in the meta group (RecordDecision) before any participant hears
it; the first recorded decision wins, so the coordinator obeys the answer, not its own wish.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Union

STARTED, PREPARING, DECIDING, COMMITTING, COMMITTED, ABORTING, ABORTED, IN_DOUBT = (
    "started", "preparing", "deciding", "committing", "committed", "aborting", "aborted",
    "in_doubt")
TERMINAL = frozenset({COMMITTED, ABORTED, IN_DOUBT})
TRANSITIONS = frozenset({
    (STARTED, PREPARING), (PREPARING, DECIDING), (PREPARING, ABORTING),
    (DECIDING, COMMITTING), (DECIDING, ABORTING), (DECIDING, IN_DOUBT),
    (COMMITTING, COMMITTED), (ABORTING, ABORTED),
})
COMMIT, ABORT = "commit", "abort"


def is_transition_valid(old: str, new: str) -> bool:
    return (old, new) in TRANSITIONS


# ---- events (what happened) ----------------------------------------------------------------------

@dataclass(frozen=True)
class Begin:
    """The batch arrives: participants are the shards it touches."""


@dataclass(frozen=True)
class Voted:
    """Every participant answered Prepare; `refusal` is the first no (an error), or None."""

    refusal: Any = None


@dataclass(frozen=True)
class Recorded:
    """The meta group answered RecordDecision with the decision it holds (maybe not ours)."""

    decision: str
    duplicate_of: str = ""
    outcome_json: str = ""


@dataclass(frozen=True)
class RecordFailed:
    """The meta group could not be reached to record the decision."""

    message: str


@dataclass(frozen=True)
class Delivered:
    """Phase two ended: every reachable participant was sent the decision."""


Event = Union[Begin, Voted, Recorded, RecordFailed, Delivered]


# ---- actions (what the driver must do) -----------------------------------------------------------

@dataclass(frozen=True)
class SendPrepare:
    participants: tuple[str, ...]


@dataclass(frozen=True)
class RecordDecision:
    decision: str
    idempotency_key: str


@dataclass(frozen=True)
class SendDecision:
    decision: str
    participants: tuple[str, ...]


@dataclass(frozen=True)
class Reply:
    """Answer the client. kind: committed | deduplicated (outcome_json of the first batch) |
    refused (the participant's error) | aborted (recovery aborted it first) | in_doubt."""

    kind: str
    outcome_json: str = ""
    error: Any = None


Action = Union[SendPrepare, RecordDecision, SendDecision, Reply]


@dataclass(frozen=True)
class CoordinatorState:
    txn_id: str
    participants: tuple[str, ...]
    idempotency_key: str = ""
    phase: str = STARTED
    # What the client hears once phase two is over.
    pending_reply: Reply | None = None


def _to(state: CoordinatorState, phase: str, **changes: Any) -> CoordinatorState:
    if not is_transition_valid(state.phase, phase):
        raise ValueError(f"coordinator {state.txn_id}: {state.phase} -> {phase} not allowed")
    return dataclasses.replace(state, phase=phase, **changes)


def step(state: CoordinatorState, event: Event) -> tuple[CoordinatorState, list[Action]]:
    """The coordinator's next state and the actions it asks for. Raises ValueError for an
    event its phase does not expect (a driver bug)."""
    phase = state.phase
    if phase == STARTED and isinstance(event, Begin):
        return _to(state, PREPARING), [SendPrepare(state.participants)]
    if phase == PREPARING and isinstance(event, Voted):
        if event.refusal is not None:
            # Recorded, so a participant that prepared and times out finds the answer.
            return _to(state, ABORTING, pending_reply=Reply("refused", error=event.refusal)), \
                [RecordDecision(ABORT, "")]
        return _to(state, DECIDING), [RecordDecision(COMMIT, state.idempotency_key)]
    if phase == DECIDING and isinstance(event, Recorded):
        if event.decision == COMMIT:
            return _to(state, COMMITTING), [SendDecision(COMMIT, state.participants)]
        reply = (Reply("deduplicated", outcome_json=event.outcome_json) if event.duplicate_of
                 else Reply("aborted"))
        return _to(state, ABORTING, pending_reply=reply), \
            [SendDecision(ABORT, state.participants)]
    if phase == DECIDING and isinstance(event, RecordFailed):
        # Participants stay prepared until they time out and ask the group themselves.
        return _to(state, IN_DOUBT), [Reply("in_doubt", error=event.message)]
    if phase == COMMITTING and isinstance(event, Delivered):
        return _to(state, COMMITTED), [Reply("committed")]
    if phase == ABORTING and isinstance(event, Delivered):
        return _to(state, ABORTED), [state.pending_reply or Reply("aborted")]
    if phase == ABORTING and isinstance(event, (Recorded, RecordFailed)):
        # The answer to the abort recorded after a refusal. Only this coordinator can record a
        # commit, so the first writer's decision is an abort; participants that miss it find
        # no decision (or this abort) after their timeout and abort on their own.
        return state, [SendDecision(ABORT, state.participants)]
    raise ValueError(f"coordinator {state.txn_id} in {phase} does not expect "
                     f"{type(event).__name__}")
