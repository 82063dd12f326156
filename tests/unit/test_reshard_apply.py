"""Specification of shard splits in the catalog (consensus/reshard.py): StartReshard refuses
bad input and changes nothing; FinishReshard is one command that doubles the shard count, bumps
the epoch, and gives child i + N the parent's copies, primary and term; it waits for every
in-sync copy's child and for 2PC decisions in doubt; CancelReshard leaves the dataset exactly
as it was."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import commands as c, reshard
from consensus.state import MetaState, apply, from_doc, to_doc
from consensus import watch

NODES = ("n1", "n2", "n3")


def cluster() -> MetaState:
    state = MetaState()
    for n in NODES:
        state, _ = apply(state, c.RegisterNode(n, f"{n}:1", 1))
    state, result = apply(state, c.CreateDataset(
        "u1", "t1", "docs", "", 4, "cosine", "hnsw", {}, ("n1", "n2"), 10, 2,
        (("n1", "n2"), ("n2", "n3"))))
    assert "error" not in result, result
    return state


def ok(state, command):
    after, result = apply(state, command)
    assert "error" not in result, result
    return after


def all_ready(state: MetaState) -> MetaState:
    record = state.datasets["u1"]
    for shard in range(record.shard_count):
        for node in record.copies_of(shard):
            state = ok(state, c.ReshardCopyReady("u1", shard, node, True, 20))
    return state


def test_finish_reshard_doubles_the_count_in_one_command_and_bumps_the_epoch():
    state = ok(cluster(), c.StartReshard("u1", 4, 11))
    before = state.datasets["u1"]
    assert before.shard_count == 2 and state.reshards["u1"].old_count == 2
    state = all_ready(state)
    assert state.datasets["u1"] is before       # building changes no routing
    state = ok(state, c.FinishReshard("u1", 30))
    after = state.datasets["u1"]
    assert after.shard_count == 4
    assert after.epoch == before.epoch + 1 == after.split_epoch
    assert after.placement == ("n1", "n2", "n1", "n2")
    assert after.copies_of(2) == before.copies_of(0) and after.copies_of(3) == \
        before.copies_of(1)
    assert after.in_sync_of(2) == ("n1",) and after.in_sync_of(3) == ("n2",)
    assert after.in_sync_of(0) == before.in_sync_of(0)
    assert after.term_of(2) == before.term_of(0)
    assert "u1" not in state.reshards


def test_finish_waits_for_every_in_sync_copy_to_have_built_its_child():
    state = ok(cluster(), c.StartReshard("u1", 4, 11))
    state = ok(state, c.ReshardCopyReady("u1", 0, "n1", True, 12))
    after, result = apply(state, c.FinishReshard("u1", 13))
    assert result["error"]["type"] == "Aborted" and after is state
    assert reshard.plan_reshard_steps(state, 13) == []


def test_finish_waits_for_2pc_decisions_in_doubt_on_the_dataset():
    state = all_ready(ok(cluster(), c.StartReshard("u1", 4, 11)))
    state, _ = apply(state, c.DecideTxn("t1", "commit", ("u1/0", "u1/1"), "", "", 12))
    assert reshard.plan_reshard_steps(state, 13) == []
    after, result = apply(state, c.FinishReshard("u1", 13))
    assert "2PC" in result["error"]["message"] and after is state
    state, _ = apply(state, c.AckTxns((("t1", "u1/0"), ("t1", "u1/1")), 14))
    assert reshard.plan_reshard_steps(state, 15) == [c.FinishReshard("u1", 15)]


def test_the_switch_stops_waiting_for_2pc_acks_after_reshard_txn_wait_ms():
    state = all_ready(ok(cluster(), c.StartReshard("u1", 4, 11)))
    state, _ = apply(state, c.DecideTxn("t1", "commit", ("u1/0", "u1/1"), "", "", 12))
    late = 11 + reshard.limits.reshard_txn_wait_ms
    assert reshard.plan_reshard_steps(state, late) == [c.FinishReshard("u1", late)]
    assert ok(state, c.FinishReshard("u1", late)).datasets["u1"].shard_count == 4


def test_bad_reshards_are_refused_and_change_nothing():
    state = cluster()
    for count, why in ((3, "must be 4"), (8, "must be 4"), (2, "must be 4")):
        after, result = apply(state, c.StartReshard("u1", count, 11))
        assert why in result["error"]["message"] and after is state
    after, result = apply(state, c.StartReshard("nope", 4, 11))
    assert result["error"]["type"] == "NotFound" and after is state
    moving = ok(state, c.StartMove("m1", "u1", 0, "n2", "n3", "", 11))
    after, result = apply(moving, c.StartReshard("u1", 4, 12))
    assert result["error"]["type"] == "Aborted" and after is moving
    started = ok(state, c.StartReshard("u1", 4, 11))
    after, result = apply(started, c.StartReshard("u1", 4, 12))
    assert "already" in result["error"]["message"] and after is started
    after, result = apply(started, c.StartMove("m1", "u1", 0, "n2", "n3", "", 12))
    assert "resharded" in result["error"]["message"] and after is started


def test_a_count_above_shard_count_max_is_refused(monkeypatch):
    monkeypatch.setattr(reshard.limits, "shard_count_max", 3)
    after, result = apply(cluster(), c.StartReshard("u1", 4, 11))
    assert "shard_count_max" in result["error"]["message"]


def test_cancel_leaves_the_dataset_exactly_as_it_was():
    state = cluster()
    started = all_ready(ok(state, c.StartReshard("u1", 4, 11)))
    cancelled = ok(started, c.CancelReshard("u1", 30))
    assert cancelled.datasets == state.datasets and cancelled.reshards == {}


def test_a_reshard_survives_a_snapshot_and_reaches_watchers():
    state = ok(ok(cluster(), c.StartReshard("u1", 4, 11)),
               c.ReshardCopyReady("u1", 1, "n3", True, 12))
    assert from_doc(to_doc(state)).reshards == state.reshards
    changes = watch.catalog_changes(cluster(), state)
    copy = watch.apply_changes(cluster(), state.version, changes)
    assert copy.reshards == state.reshards


def test_the_leader_cancels_the_reshard_of_a_deleted_dataset():
    state = ok(cluster(), c.StartReshard("u1", 4, 11))
    state = ok(state, c.DeleteDataset("t1", "docs", 12))
    assert state.reshards == {}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(("ready", "unready", "finish", "cancel", "start",
                                           "insync_out", "insync_in")),
                          st.integers(0, 1), st.sampled_from(NODES)), max_size=25))
def test_any_command_sequence_keeps_the_split_invariants(steps):
    """Whatever the order: the count is 2 or 4; it doubles only with an epoch bump recorded
    as split_epoch; a child's primary is its parent's primary and was ready; every child's
    in-sync set holds its primary."""
    state = cluster()
    at = 100
    for kind, shard, node in steps:
        at += 1
        record = state.datasets["u1"]
        command = {
            "ready": c.ReshardCopyReady("u1", shard, node, True, at),
            "unready": c.ReshardCopyReady("u1", shard, node, False, at),
            "finish": c.FinishReshard("u1", at),
            "cancel": c.CancelReshard("u1", at),
            "start": c.StartReshard("u1", record.shard_count * 2, at),
            "insync_out": c.SetInSync("u1", shard, node, False, record.term_of(shard), at),
            "insync_in": c.SetInSync("u1", shard, node, True, record.term_of(shard), at),
        }[kind]
        pending = state.reshards.get("u1")
        after, result = apply(state, command)
        new = after.datasets["u1"]
        if new.shard_count != record.shard_count:
            assert kind == "finish" and "error" not in result
            assert new.shard_count == 2 * record.shard_count
            assert new.epoch == record.epoch + 1 == new.split_epoch
            n = record.shard_count
            for s in range(n):
                assert new.primary_of(s + n) == record.primary_of(s)
                assert set(record.in_sync_of(s)) <= pending.ready_nodes(s)
                assert new.in_sync_of(s + n) == (record.primary_of(s),)
        for s in range(new.shard_count):
            assert new.primary_of(s) in new.in_sync_of(s)
        if "error" in result:
            assert after is state
        state = after
