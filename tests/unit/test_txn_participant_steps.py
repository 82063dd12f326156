"""The 2PC participant's step function (consensus/txn_model.py), which the shard node runs
(node/txn.py is its driver) and the seeded simulation drives (router/txn_sim.py).

The table: every (state, event) pair is a listed transition or an explicit refusal. The
behaviours node/txn.py relied on when it held them as guards inside its I/O: a deposed primary
votes no and drops its plan, a primary logs a decision before it applies it, a copy refuses a
coordinator's decision, a restarted copy reloads its plans and applies its last logged decision.
And the simulation catches a participant step that breaks one of them.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import txn_model as pm
from router import txn_sim
from tributary import limits

P = pm.ParticipantState("d/0")


def run(state, *events):
    """Feeds events in turn; returns the last state and every action, in order."""
    actions = []
    for event in events:
        state, more = pm.step(state, event)
        actions += more
    return state, actions


def prepared(txn="t", state=P):
    state, _ = run(state, pm.Prepare(txn), pm.Staged(txn), pm.Replicated(txn))
    return state


# ---- the table ----------------------------------------------------------------------------------

def test_every_state_and_event_pair_has_a_listed_handler():
    assert {(s, e) for s in pm.STATES for e in pm.EVENT_TYPES} == set(pm.TABLE)


def _event(kind: str, txn: str, decision, source, role, due):
    return {
        "prepare": lambda: pm.Prepare(txn), "staged": lambda: pm.Staged(txn),
        "stage_failed": lambda: pm.StageFailed(txn, "locked"),
        "replicated": lambda: pm.Replicated(txn), "not_primary": lambda: pm.NotPrimary(txn),
        "replication_failed": lambda: pm.ReplicationFailed(txn, "down", role),
        "adopt": lambda: pm.Adopt(txn), "reload": lambda: pm.Reload(txn),
        "decision": lambda: pm.Decision(txn, decision, source, role, due),
        "timeout": lambda: pm.Timeout(txn), "finished": lambda: pm.Finished(txn),
        "finish_failed": lambda: pm.FinishFailed(txn), "forget": lambda: pm.Forget(txn),
    }[kind]()


events = st.builds(
    _event, st.sampled_from(["prepare", "staged", "stage_failed", "replicated", "not_primary",
                             "replication_failed", "adopt", "reload", "decision", "timeout",
                             "finished", "finish_failed", "forget"]),
    st.sampled_from(["t1", "t2"]), st.sampled_from([pm.COMMIT, pm.ABORT, None]),
    st.sampled_from([pm.COORDINATOR, pm.META, pm.LOG]),
    st.sampled_from([pm.PRIMARY, pm.COPY, pm.ALONE]), st.booleans())


@settings(max_examples=400, deadline=None)
@given(st.lists(events, max_size=30))
def test_any_event_sequence_moves_only_along_the_transition_table(sequence):
    state = P
    for event in sequence:
        before = state.txns.get(event.txn_id)
        state, actions = pm.step(state, event)           # raises outside TRANSITIONS
        after = state.txns.get(event.txn_id)
        assert pm.is_transition_valid(before, after)
        for action in actions:
            if isinstance(action, pm.Vote) and action.yes:
                # A yes only from a plan held (or committed) here.
                assert after in (pm.PREPARED, pm.COMMITTING, pm.COMMITTED)
            if isinstance(action, pm.LogDecision):
                # Only a primary logs, and always before it applies.
                kinds = [type(a) for a in actions]
                assert kinds.index(pm.LogDecision) < kinds.index(pm.ApplyDecision)
        kinds = [type(a) for a in actions]
        if pm.ApplyDecision in kinds and isinstance(event, pm.Decision) \
                and event.source != pm.LOG and event.role == pm.PRIMARY:
            assert pm.LogDecision in kinds
        if isinstance(event, pm.NotPrimary):
            assert not any(isinstance(a, pm.Vote) and a.yes for a in actions)


# ---- phase one ----------------------------------------------------------------------------------

def test_a_primary_stages_then_replicates_its_plan_before_it_votes_yes():
    state, actions = run(P, pm.Prepare("t"))
    assert actions == [pm.StagePlan("t")] and state.txns["t"] == pm.STAGING
    state, actions = run(state, pm.Staged("t"))
    assert actions == [pm.ReplicatePlan("t")] and state.txns["t"] == pm.REPLICATING
    state, actions = run(state, pm.Replicated("t"))
    assert actions == [pm.Vote("t", True)] and state.txns["t"] == pm.PREPARED


def test_a_primary_deposed_while_preparing_drops_its_plan_and_votes_no():
    state, _ = run(P, pm.Prepare("t"), pm.Staged("t"))
    state, actions = run(state, pm.NotPrimary("t"))
    assert actions == [pm.DropStaged("t"), pm.Vote("t", False, pm.NOT_PRIMARY)]
    assert "t" not in state.txns


def test_a_plan_that_cannot_be_staged_is_dropped_with_a_no_vote_carrying_the_error():
    state, actions = run(P, pm.Prepare("t"), pm.StageFailed("t", "ids locked"))
    assert actions[1:] == [pm.DropStaged("t"), pm.Vote("t", False, "ids locked")]
    assert "t" not in state.txns


def test_a_failed_replication_aborts_through_the_log_and_votes_no():
    state, _ = run(P, pm.Prepare("t"), pm.Staged("t"))
    state, actions = run(state, pm.ReplicationFailed("t", "copy down", pm.PRIMARY))
    assert actions == [pm.LogDecision("t", pm.ABORT), pm.ApplyDecision("t", pm.ABORT),
                       pm.SendToCopies("t", pm.ABORT), pm.Ack("t"),
                       pm.Vote("t", False, "copy down")]
    assert state.txns["t"] == pm.ABORTING


def test_a_prepare_repeated_while_the_first_still_stages_votes_no_retriably():
    state, _ = run(P, pm.Prepare("t"))
    assert run(state, pm.Prepare("t"))[1] == [pm.Vote("t", False, pm.IN_PROGRESS)]


def test_repeated_prepares_get_the_first_answer_and_a_late_one_after_an_abort_is_refused():
    state = prepared()
    assert run(state, pm.Prepare("t"))[1] == [pm.Vote("t", True)]
    state, _ = run(P, pm.Decision("t", pm.ABORT))       # the abort came first
    assert run(state, pm.Prepare("t"))[1] == [pm.Vote("t", False, pm.ALREADY_ABORTED)]


# ---- phase two ----------------------------------------------------------------------------------

def test_a_primary_logs_the_decision_before_applying_it_then_sends_it_to_its_copies():
    state, actions = run(prepared(), pm.Decision("t", pm.COMMIT, pm.COORDINATOR, pm.PRIMARY))
    assert actions == [pm.LogDecision("t", pm.COMMIT), pm.ApplyDecision("t", pm.COMMIT),
                       pm.SendToCopies("t", pm.COMMIT), pm.Ack("t"), pm.Answer("t", True)]
    state, actions = run(state, pm.Finished("t"))
    assert state.txns["t"] == pm.COMMITTED and state.holding() == []


def test_a_copy_refuses_a_coordinators_decision_and_applies_its_primarys_logged_one():
    state, _ = run(P, pm.Adopt("t"))
    assert run(state, pm.Decision("t", pm.COMMIT, pm.COORDINATOR, pm.COPY))[1] == \
        [pm.Refuse("t")]
    assert run(state, pm.Decision("t", pm.COMMIT, pm.META, pm.COPY))[1] == []
    state, actions = run(state, pm.Decision("t", pm.COMMIT, pm.LOG, pm.ALONE))
    assert actions == [pm.ApplyDecision("t", pm.COMMIT), pm.Ack("t")]


def test_a_copy_holding_a_plan_its_primary_never_logged_drops_it_on_the_groups_abort():
    # A primary staged the plan, crashed before logging it and came back a copy: no primary
    # will ever log its end, so the group's abort (no row changes) is applied here.
    state, _ = run(P, pm.Reload("t"), pm.Timeout("t"))
    state, actions = run(state, pm.Decision("t", None, pm.META, pm.COPY, due=True))
    assert actions == [pm.ProposeAbort("t")]
    state, actions = run(state, pm.Decision("t", pm.ABORT, pm.META, pm.COPY))
    assert actions == [pm.ApplyDecision("t", pm.ABORT), pm.Ack("t")]


def test_a_prepared_txn_asks_the_group_after_its_timeout_and_proposes_abort_only_when_due():
    state, actions = run(prepared(), pm.Timeout("t"))
    assert actions == [pm.AskMeta("t")]
    assert run(state, pm.Decision("t", None, pm.META, pm.PRIMARY, due=False))[1] == []
    assert run(state, pm.Decision("t", None, pm.META, pm.PRIMARY, due=True))[1] == \
        [pm.ProposeAbort("t")]


def test_a_failed_finish_leaves_the_txn_held_and_a_second_commit_waits_for_the_first():
    state, _ = run(prepared(), pm.Decision("t", pm.COMMIT))
    assert run(state, pm.Decision("t", pm.COMMIT))[1] == [pm.AwaitFinish("t")]
    state, _ = run(state, pm.FinishFailed("t"))
    assert state.txns["t"] == pm.UNCONFIRMED and state.prepared() == ["t"]


def test_a_finished_txn_told_the_other_decision_is_a_violation():
    state, _ = run(prepared(), pm.Decision("t", pm.COMMIT), pm.Finished("t"))
    assert run(state, pm.Decision("t", pm.COMMIT))[1] == [pm.Ack("t"), pm.Answer("t", False)]
    assert isinstance(run(state, pm.Decision("t", pm.ABORT))[1][0], pm.Violation)


def test_a_restarted_copy_reloads_its_plan_then_applies_its_last_logged_decision():
    state, actions = run(P, pm.Reload("t"), pm.Decision("t", pm.COMMIT, pm.LOG, pm.ALONE))
    assert actions == [pm.TakeLocks("t"), pm.ApplyDecision("t", pm.COMMIT), pm.Ack("t")]
    # The other way round (decision before reload) the decision found no plan, and the plan
    # stayed prepared while the log said it was done.
    state, actions = run(P, pm.Decision("t", pm.COMMIT, pm.LOG, pm.ALONE), pm.Reload("t"))
    assert state.txns["t"] == pm.UNCONFIRMED


def test_a_plan_found_on_disk_never_votes_yes_but_is_resolved_like_any_prepared_txn():
    # Staged, then a crash before the plan reached the op log: a retried Prepare answered yes
    # would let the coordinator commit rows the shard's copies never hold.
    state, actions = run(P, pm.Reload("t"), pm.Prepare("t"))
    assert actions == [pm.TakeLocks("t"), pm.Vote("t", False, pm.UNCONFIRMED)]
    assert run(state, pm.Timeout("t"))[1] == [pm.AskMeta("t")]
    state, actions = run(state, pm.Decision("t", pm.ABORT, pm.META, pm.PRIMARY))
    assert actions[:2] == [pm.LogDecision("t", pm.ABORT), pm.ApplyDecision("t", pm.ABORT)]


def test_finished_txns_are_remembered_up_to_the_limit(monkeypatch):
    monkeypatch.setattr(limits, "txn_finished_remembered_max", 3)
    state = P
    for i in range(5):
        state, _ = run(state, pm.Decision(f"t{i}", pm.ABORT))
    assert sorted(state.txns) == ["t2", "t3", "t4"] and state.finished == ("t2", "t3", "t4")


# ---- the simulation drives this same function, and catches a broken one ------------------------

def _violations(monkeypatch, broken) -> list[str]:
    real_step = pm.step
    monkeypatch.setattr(pm, "step", lambda state, event: broken(real_step, state, event))
    return [v for seed in range(4) for v in txn_sim.run(seed, 3_000).violations]


def test_the_simulation_catches_a_deposed_primary_that_votes_yes(monkeypatch):
    def votes_yes_when_deposed(real_step, state, event):
        if isinstance(event, pm.NotPrimary) and state.txns.get(event.txn_id) == pm.REPLICATING:
            return pm._to(state, event.txn_id, pm.PREPARED), [pm.Vote(event.txn_id, True)]
        return real_step(state, event)

    found = _violations(monkeypatch, votes_yes_when_deposed)
    assert any("not all-or-nothing" in v or "differ" in v for v in found), found[:5]


def test_the_simulation_catches_a_primary_that_applies_before_it_logs(monkeypatch):
    def applies_first(real_step, state, event):
        state, actions = real_step(state, event)
        logged = [a for a in actions if isinstance(a, pm.LogDecision)]
        if logged:
            rest = [a for a in actions if not isinstance(a, pm.LogDecision)]
            at = next(i for i, a in enumerate(rest) if isinstance(a, pm.ApplyDecision)) + 1
            actions = rest[:at] + logged + rest[at:]
        return state, actions

    found = _violations(monkeypatch, applies_first)
    assert any("which its op log does not hold" in v for v in found), found[:5]


def test_the_simulation_catches_a_copy_that_waits_for_a_log_entry_that_never_comes(monkeypatch):
    def copy_ignores_abort(real_step, state, event):
        if isinstance(event, pm.Decision) and event.role == pm.COPY and \
                event.source == pm.META and state.txns.get(event.txn_id) in pm.IN_DOUBT:
            return state, []
        return real_step(state, event)

    found = _violations(monkeypatch, copy_ignores_abort)
    assert any("stuck lock" in v for v in found), found[:5]

