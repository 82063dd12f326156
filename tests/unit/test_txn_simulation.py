"""The seeded 2PC simulation (router/txn_sim.py): real coordinator steps, the participant model
and the real meta state machine over a network that drops, reorders and duplicates, with crashes
at every step. `make sim-2pc` runs many more seeds."""

from __future__ import annotations

import dataclasses

from router import txn_sim
from router import txn_steps as cs


def test_seeded_simulation_keeps_atomicity_and_leaves_no_stuck_locks():
    steps = 0
    for seed in range(3):
        report = txn_sim.run(seed, 4_000)
        steps += report.steps
        assert report.violations == [], report.line()
        # The schedule exercises every ending, so the checks above are not vacuous.
        assert report.committed and report.aborted, report.line()
    assert steps >= 10_000


def test_one_seed_replays_the_same_schedule():
    first, second = txn_sim.run(11, 2_000), txn_sim.run(11, 2_000)
    assert first == second


def test_the_simulation_catches_a_coordinator_that_ignores_the_recorded_decision(monkeypatch):
    real_step = cs.step

    def stubborn(state, event):
        # Commits whatever the group recorded (e.g. a participant's abort after its timeout).
        if isinstance(event, cs.Recorded) and state.phase == cs.DECIDING:
            event = dataclasses.replace(event, decision=cs.COMMIT)
        return real_step(state, event)

    monkeypatch.setattr(cs, "step", stubborn)
    found = [v for seed in range(10) for v in txn_sim.run(seed, 3_000).violations]
    assert any("the group recorded abort" in v or "group recorded None" in v for v in found), \
        found[:5]


def test_the_simulation_catches_a_coordinator_that_commits_before_recording(monkeypatch):
    real_step = cs.step

    def hasty(state, event):
        if isinstance(event, cs.Voted) and event.refusal is None and state.phase == cs.PREPARING:
            # Phase two before the decision is in the group: a participant that times out
            # meanwhile aborts what others commit.
            state = dataclasses.replace(state, phase=cs.COMMITTING)
            return state, [cs.SendDecision(cs.COMMIT, state.participants)]
        return real_step(state, event)

    monkeypatch.setattr(cs, "step", hasty)
    found = [v for seed in range(10) for v in txn_sim.run(seed, 3_000).violations]
    assert any("committed" in v for v in found), found[:5]
