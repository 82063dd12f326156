"""The 2PC simulation (router/txn_sim.py) models group commit of 2PC decisions: a committed
decision's rows reach the store only with a later group commit, its plan stays staged until
then, and a restart replays the decisions logged past the store's last commit. These tests
break one of those rules and check that the simulation notices (lost commits show up as
txns that are not all-or-nothing, copies that differ, or acks of rows no store holds)."""

from __future__ import annotations

from consensus import txn_model as pm
from router import txn_sim
from router import txn_steps as cs


def violations(seeds: int = 8, steps: int = 3_000) -> list[str]:
    return [v for seed in range(seeds) for v in txn_sim.run(seed, steps).violations]


def test_the_simulation_keeps_every_acknowledged_commit_across_crashes_with_group_commit():
    for seed in range(3):
        report = txn_sim.run(seed, 4_000)
        assert report.violations == [], report.line()
        assert report.committed, report.line()


def test_the_simulation_catches_a_restart_that_replays_only_the_last_logged_op(monkeypatch):
    def last_op_only(self, name):
        copy = self.copies[name]
        copy.up = True
        for txn_id in sorted(copy.staged):
            self.participant_step(name, pm.Reload(txn_id))
        if copy.up and copy.log_len:
            self.participant_step(name, self.op_event(
                self.shards[copy.shard].log[copy.log_len - 1]))

    monkeypatch.setattr(txn_sim.Simulation, "restart", last_op_only)
    found = violations()
    assert any("commit" in v for v in found), found[:5]


def test_the_simulation_catches_a_plan_removed_before_the_group_commit_holds_its_rows(
        monkeypatch):
    real_perform = txn_sim.Simulation.perform

    def removes_at_once(self, name, action, reply_to):
        result = real_perform(self, name, action, reply_to)
        if isinstance(action, pm.ApplyDecision) and action.decision == cs.COMMIT:
            self.copies[name].staged.pop(action.txn_id, None)
        return result

    monkeypatch.setattr(txn_sim.Simulation, "perform", removes_at_once)
    found = violations()
    assert any("commit" in v for v in found), found[:5]
