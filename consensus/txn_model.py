"""The 2PC participant's decisions as a pure step function (no I/O, no clock).

`step(state, event) -> (state, actions)` for one participant (one shard's primary) and every
txn it has seen. node/txn.py does the I/O of the same decisions (staging to disk, locks,
replication); this model is what the seeded simulation (router/txn_sim.py) runs against the real
meta state machine and the real coordinator steps.

Per txn:  (unknown) --Prepare, keys free--> PREPARED --Decision--> COMMITTED | ABORTED
          (unknown) --Prepare, keys held by another txn--> ABORTED (votes no)
          (unknown) --Decision(abort)--> ABORTED
          PREPARED --Timeout--> asks the meta group; no decision recorded --> proposes abort,
          and applies whichever decision the group answers (first writer wins).

A prepared txn holds its keys' locks; prepared and finished txns are durable (a crash keeps
them). A late or repeated Prepare of a finished txn is answered from that memory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Union

PREPARED, COMMITTED, ABORTED = "prepared", "committed", "aborted"
COMMIT, ABORT = "commit", "abort"
TRANSITIONS = frozenset({(None, PREPARED), (None, ABORTED), (PREPARED, COMMITTED),
                         (PREPARED, ABORTED)})


def is_transition_valid(old: str | None, new: str) -> bool:
    return (old, new) in TRANSITIONS


@dataclass(frozen=True)
class Prepare:
    txn_id: str
    keys: frozenset[str]


@dataclass(frozen=True)
class Decision:
    """The coordinator's phase two, or the meta group's answer to AskMeta / ProposeAbort
    (decision None: the group holds none)."""

    txn_id: str
    decision: str | None


@dataclass(frozen=True)
class Timeout:
    """A prepared txn has waited txn_prepared_timeout_ms."""

    txn_id: str


Event = Union[Prepare, Decision, Timeout]


@dataclass(frozen=True)
class Vote:
    txn_id: str
    yes: bool


@dataclass(frozen=True)
class Ack:
    """Tell the meta group (AckTxns) this participant applied the txn's decision."""

    txn_id: str


@dataclass(frozen=True)
class AskMeta:
    txn_id: str


@dataclass(frozen=True)
class ProposeAbort:
    txn_id: str


@dataclass(frozen=True)
class Violation:
    """A message the protocol can never produce (e.g. commit of a txn never prepared)."""

    message: str


Action = Union[Vote, Ack, AskMeta, ProposeAbort, Violation]


def _frozen(mapping: dict) -> Mapping:
    return MappingProxyType(mapping)


@dataclass(frozen=True)
class ParticipantState:
    name: str
    # txn_id -> PREPARED | COMMITTED | ABORTED
    txns: Mapping[str, str] = field(default_factory=lambda: _frozen({}))
    # key -> txn_id of the prepared txn holding its lock
    locks: Mapping[str, str] = field(default_factory=lambda: _frozen({}))
    # txn_id -> keys it locked (while prepared)
    held: Mapping[str, frozenset] = field(default_factory=lambda: _frozen({}))

    def prepared(self) -> list[str]:
        return sorted(t for t, s in self.txns.items() if s == PREPARED)


def _set(state: ParticipantState, txn_id: str, new: str, **changes) -> ParticipantState:
    old = state.txns.get(txn_id)
    if not is_transition_valid(old, new):
        raise ValueError(f"participant {state.name} txn {txn_id}: {old} -> {new} not allowed")
    return dataclasses.replace(state, txns=_frozen({**state.txns, txn_id: new}), **changes)


def _finish(state: ParticipantState, txn_id: str, decision: str) -> ParticipantState:
    keys = state.held.get(txn_id, frozenset())
    locks = {k: t for k, t in state.locks.items() if not (k in keys and t == txn_id)}
    held = {t: k for t, k in state.held.items() if t != txn_id}
    return _set(state, txn_id, COMMITTED if decision == COMMIT else ABORTED,
                locks=_frozen(locks), held=_frozen(held))


def step(state: ParticipantState, event: Event) -> tuple[ParticipantState, list[Action]]:
    current = state.txns.get(event.txn_id)
    if isinstance(event, Prepare):
        if current is not None:
            # A repeated Prepare: the same vote as before (a finished commit voted yes).
            return state, [Vote(event.txn_id, current in (PREPARED, COMMITTED))]
        if any(k in state.locks for k in event.keys):
            # The real participant waits txn_lock_wait_ms, then votes no; the model votes no.
            return _set(state, event.txn_id, ABORTED), [Vote(event.txn_id, False)]
        locks = {**state.locks, **{k: event.txn_id for k in event.keys}}
        held = {**state.held, event.txn_id: event.keys}
        return _set(state, event.txn_id, PREPARED, locks=_frozen(locks),
                    held=_frozen(held)), [Vote(event.txn_id, True)]
    if isinstance(event, Decision):
        if event.decision is None:
            # The group holds no decision for a txn that timed out prepared: propose abort.
            if current == PREPARED:
                return state, [ProposeAbort(event.txn_id)]
            return state, []
        if current == PREPARED:
            return _finish(state, event.txn_id, event.decision), [Ack(event.txn_id)]
        if current is None:
            if event.decision == COMMIT:
                return state, [Violation(f"{state.name}: commit of {event.txn_id}, which it "
                                         "never prepared")]
            return _set(state, event.txn_id, ABORTED), [Ack(event.txn_id)]
        finished = COMMIT if current == COMMITTED else ABORT
        if finished != event.decision:
            return state, [Violation(f"{state.name}: {event.txn_id} finished {finished}, then "
                                     f"told {event.decision}")]
        return state, [Ack(event.txn_id)]
    if isinstance(event, Timeout):
        if current == PREPARED:
            return state, [AskMeta(event.txn_id)]
        return state, []
    raise ValueError(f"unknown event {event!r}")
