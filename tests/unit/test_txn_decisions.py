"""2PC decisions in the meta state machine (DecideTxn, AckTxns), the coordinator's step function
(router/txn_steps.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import commands as c
from consensus.state import MetaState, apply
from router import txn_steps as cs
from tributary import limits

P = ("d/0", "d/1")


def decide(txn, decision="commit", key="", at_ms=1_000, participants=P, outcome="{}"):
    return c.DecideTxn(txn, decision, participants, key, outcome, at_ms)


# ---- DecideTxn / AckTxns -----------------------------------------------------------------------

def test_the_first_recorded_decision_wins_and_later_ones_get_it_back():
    state, first = apply(MetaState(), decide("x", "abort"))
    state, second = apply(state, decide("x", "commit"))
    assert first["first"] and first["decision"] == "abort"
    assert not second["first"] and second["decision"] == "abort"
    assert state.txns["x"].decision == "abort"


def test_a_commit_under_a_used_idempotency_key_is_recorded_as_abort_with_the_first_outcome():
    state, first = apply(MetaState(), decide("x1", key="k", outcome='{"inserted": 2}'))
    state, retry = apply(state, decide("x2", key="k", outcome='{"inserted": 0}'))
    assert first["decision"] == "commit"
    assert retry == {"decision": "abort", "outcome_json": '{"inserted": 2}', "first": True,
                     "duplicate_of": "x1"}
    assert state.idempotency["k"].txn_id == "x1"


def test_an_idempotency_key_is_forgotten_after_its_ttl():
    state, _ = apply(MetaState(), decide("x1", key="k", at_ms=0))
    state, later = apply(state, decide("x2", key="k", at_ms=limits.idempotency_ttl_ms))
    assert later["decision"] == "commit" and state.idempotency["k"].txn_id == "x2"


def test_a_txn_acked_by_every_participant_becomes_a_tombstone_that_still_answers():
    state, _ = apply(MetaState(), decide("x"))
    state, _ = apply(state, c.AckTxns((("x", "d/0"),), 2_000))
    assert state.txns["x"].acked == ("d/0",)
    state, _ = apply(state, c.AckTxns((("x", "d/1"), ("x", "d/1")), 2_000))
    assert "x" not in state.txns and state.txn_tombstones["x"] == ("commit", 2_000)
    # A coordinator arriving late meets the first decision, not its own.
    state, late = apply(state, decide("x", "abort", at_ms=3_000))
    assert late == {"decision": "commit", "outcome_json": "", "first": False}


def test_tombstones_expire_at_the_next_decision_after_their_ttl():
    state, _ = apply(MetaState(), decide("x", at_ms=0))
    state, _ = apply(state, c.AckTxns((("x", "d/0"), ("x", "d/1")), 0))
    state, _ = apply(state, decide("y", at_ms=limits.txn_tombstone_ttl_ms - 1))
    assert "x" in state.txn_tombstones
    state, _ = apply(state, decide("z", at_ms=limits.txn_tombstone_ttl_ms))
    assert "x" not in state.txn_tombstones


def test_acks_of_unknown_txns_change_nothing():
    state = MetaState()
    assert apply(state, c.AckTxns((("nope", "d/0"),), 1))[0] is state


_TXNS = st.sampled_from(["a", "b", "c", "d"])
_KEYS = st.sampled_from(["", "k1", "k2"])
_OPS = st.lists(st.one_of(
    st.tuples(st.just("decide"), _TXNS, st.sampled_from(["commit", "abort"]), _KEYS,
              st.integers(0, 3)),
    st.tuples(st.just("ack"), _TXNS, st.sampled_from(P), st.integers(0, 3))), max_size=40)


@settings(max_examples=300, deadline=None)
@given(_OPS)
def test_decisions_hold_against_a_model_of_first_writer_wins_and_dedupe(ops):
    """Oracle: per txn the first decision recorded (while its record or tombstone lives) is the
    one every later DecideTxn answers; a key commits at most one txn within its TTL; a txn leaves
    `txns` exactly when every participant has acked it; no decision bumps the catalog revision."""
    state, now = MetaState(), 0
    first: dict[str, str] = {}
    committed_by_key: dict[str, str] = {}
    acked: dict[str, set] = {}
    for op in ops:
        now += op[-1] * limits.txn_tombstone_ttl_ms // 2
        if op[0] == "decide":
            _, txn, decision, key, _ = op
            alive = txn in state.txns or txn in state.txn_tombstones
            if not alive:
                first.pop(txn, None)
                acked.pop(txn, None)
            state, result = apply(state, decide(txn, decision, key, at_ms=now))
            if txn in first:
                assert result["decision"] == first[txn] and not result["first"]
            else:
                first[txn] = result["decision"]
                if result["decision"] == "commit" and key:
                    assert key not in committed_by_key or \
                        committed_by_key[key][1] + limits.idempotency_ttl_ms <= now
                    committed_by_key[key] = (txn, now)
        else:
            _, txn, participant, _ = op
            state, _ = apply(state, c.AckTxns(((txn, participant),), now))
            if txn in state.txns or txn in state.txn_tombstones:
                acked.setdefault(txn, set()).add(participant)
        for txn, record in state.txns.items():
            assert set(record.acked) < set(P)
        assert state.version == 0


# ---- the coordinator's step function -----------------------------------------------------------

def run_coordinator(*events, key=""):
    state = cs.CoordinatorState("t", P, key)
    state, actions = cs.step(state, cs.Begin())
    trail = [actions]
    for event in events:
        state, actions = cs.step(state, event)
        trail.append(actions)
    return state, trail


def test_coordinator_records_commit_before_any_participant_hears_it():
    state, trail = run_coordinator(cs.Voted(None), cs.Recorded("commit"), cs.Delivered(),
                                   key="k")
    assert trail[0] == [cs.SendPrepare(P)]
    assert trail[1] == [cs.RecordDecision("commit", "k")]
    assert trail[2] == [cs.SendDecision("commit", P)]
    assert trail[3] == [cs.Reply("committed")] and state.phase == cs.COMMITTED


def test_coordinator_obeys_an_abort_the_group_recorded_first():
    state, trail = run_coordinator(cs.Voted(None), cs.Recorded("abort"), cs.Delivered())
    assert trail[2] == [cs.SendDecision("abort", P)]
    assert trail[3] == [cs.Reply("aborted")] and state.phase == cs.ABORTED


def test_coordinator_answers_a_duplicate_batch_with_the_first_outcome():
    _, trail = run_coordinator(cs.Voted(None), cs.Recorded("abort", "t0", '{"inserted": 1}'),
                               cs.Delivered())
    assert trail[3] == [cs.Reply("deduplicated", outcome_json='{"inserted": 1}')]


def test_coordinator_records_and_sends_abort_after_a_no_vote():
    state, trail = run_coordinator(cs.Voted("shard 1 said no"), cs.RecordFailed("down"),
                                   cs.Delivered())
    assert trail[1] == [cs.RecordDecision("abort", "")]
    assert trail[2] == [cs.SendDecision("abort", P)]
    assert trail[3] == [cs.Reply("refused", error="shard 1 said no")]


def test_coordinator_that_cannot_record_a_commit_is_in_doubt_and_sends_nothing():
    state, trail = run_coordinator(cs.Voted(None), cs.RecordFailed("meta down"))
    assert trail[2] == [cs.Reply("in_doubt", error="meta down")]
    assert state.phase == cs.IN_DOUBT


@pytest.mark.parametrize("phase", sorted({p for pair in cs.TRANSITIONS for p in pair}))
def test_every_phase_refuses_events_it_does_not_expect(phase):
    state = cs.CoordinatorState("t", P, phase=phase)
    unexpected = [e for e in (cs.Begin(), cs.Voted(None), cs.Recorded("commit"),
                              cs.RecordFailed("x"), cs.Delivered())
                  if not _expects(phase, e)]
    for event in unexpected:
        with pytest.raises(ValueError):
            cs.step(state, event)


def _expects(phase, event) -> bool:
    return (phase, type(event).__name__) in {
        (cs.STARTED, "Begin"), (cs.PREPARING, "Voted"), (cs.DECIDING, "Recorded"),
        (cs.DECIDING, "RecordFailed"), (cs.COMMITTING, "Delivered"), (cs.ABORTING, "Delivered"),
        (cs.ABORTING, "Recorded"), (cs.ABORTING, "RecordFailed")}


# The participant's step function has its own file: tests/unit/test_txn_participant_steps.py.
