"""Specification of the replication records in the catalog (consensus/replication.py and the
copies planner in consensus/placement.py): per shard, copies on distinct nodes, an in-sync set
that always holds the primary, a term that only grows, and an epoch bump on every change."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import commands as c
from consensus.placement import plan_copies
from consensus.state import MetaState, apply

NODES = ("n1", "n2", "n3", "n4")


def cluster() -> MetaState:
    state = MetaState()
    for n in NODES:
        state, _ = apply(state, c.RegisterNode(n, f"{n}:1", 1))
    return state


def create(state: MetaState, copies=(("n1", "n2", "n3"), ("n2", "n3", "n4")),
           placement=("n1", "n2"), rf=3) -> MetaState:
    state, result = apply(state, c.CreateDataset(
        "u1", "t1", "docs", "", 4, "cosine", "hnsw", {}, placement, 10, rf, copies))
    assert "error" not in result, result
    return state


def shard0(state: MetaState):
    record = state.datasets["u1"]
    return (record.primary_of(0), record.copies_of(0), record.in_sync_of(0), record.term_of(0),
            record.epoch)


def test_a_new_dataset_has_every_copy_in_sync_in_term_one():
    record = create(cluster()).datasets["u1"]
    assert record.replication_factor == 3
    assert record.copies == (("n1", "n2", "n3"), ("n2", "n3", "n4"))
    assert record.in_sync == record.copies and record.terms == (1, 1)
    assert record.shards_on("n4") == [1] and record.shards_on("n2") == [0, 1]


@pytest.mark.parametrize("copies, rf, why", [
    ((("n1", "n1", "n2"), ("n2", "n3", "n4")), 3, "two copies on one node"),
    ((("n2", "n3", "n4"), ("n2", "n3", "n4")), 3, "primary n1 is not among"),
    ((("n1", "n2"), ("n2", "n3")), 3, "has 2 copies, not 3"),
    ((("n1", "n2", "n9"), ("n2", "n3", "n4")), 3, "unknown nodes"),
    ((("n1", "n2", "n3"),), 3, "name 1 shard"),
    ((), 0, "at least 1"),
])
def test_a_create_with_bad_copies_is_refused_and_changes_nothing(copies, rf, why):
    state = cluster()
    after, result = apply(state, c.CreateDataset("u1", "t1", "docs", "", 4, "cosine", "hnsw",
                                                 {}, ("n1", "n2"), 10, rf, copies))
    assert why in result["error"]["message"] and result["error"]["type"] == "InvalidArgument"
    assert after is state


def test_a_copy_that_missed_a_write_leaves_the_in_sync_set_and_the_epoch_moves():
    state = create(cluster())
    state, result = apply(state, c.SetInSync("u1", 0, "n3", False, 1, 20))
    assert result["changed"] and result["epoch"] == 2
    assert shard0(state) == ("n1", ("n1", "n2", "n3"), ("n1", "n2"), 1, 2)
    # Said again (a retried proposal): no change, no new epoch.
    again, result = apply(state, c.SetInSync("u1", 0, "n3", False, 1, 21))
    assert result["changed"] is False and again is state


def test_a_caught_up_copy_rejoins_the_in_sync_set():
    state = create(cluster())
    state, _ = apply(state, c.SetInSync("u1", 0, "n3", False, 1, 20))
    state, result = apply(state, c.SetInSync("u1", 0, "n3", True, 1, 30))
    assert result["changed"] and shard0(state)[2] == ("n1", "n2", "n3")


def test_a_proposer_from_an_older_term_cannot_change_the_in_sync_set():
    state = create(cluster())
    state, _ = apply(state, c.PromotePrimary("u1", 0, "n2", 1, 20))
    after, result = apply(state, c.SetInSync("u1", 0, "n3", False, 1, 30))
    assert result["error"]["type"] == "StaleEpoch" and after is state


def test_the_primary_never_leaves_the_in_sync_set():
    state = create(cluster())
    after, result = apply(state, c.SetInSync("u1", 0, "n1", False, 1, 20))
    assert "primary cannot leave" in result["error"]["message"] and after is state


def test_promotion_takes_an_in_sync_copy_to_the_next_term_and_drops_the_old_primary():
    state = create(cluster())
    state, result = apply(state, c.PromotePrimary("u1", 0, "n3", 1, 20))
    assert result["old_primary"] == "n1" and result["term"] == 2
    assert shard0(state) == ("n3", ("n1", "n2", "n3"), ("n2", "n3"), 2, 2)
    assert state.datasets["u1"].placement == ("n3", "n2")


def test_two_failovers_from_the_same_term_cannot_both_win():
    state = create(cluster())
    state, first = apply(state, c.PromotePrimary("u1", 0, "n2", 1, 20))
    after, second = apply(state, c.PromotePrimary("u1", 0, "n3", 1, 20))
    assert "error" not in first and second["error"]["type"] == "StaleEpoch"
    assert after is state and shard0(state)[0] == "n2"


def test_a_copy_outside_the_in_sync_set_cannot_be_promoted():
    state = create(cluster())
    state, _ = apply(state, c.SetInSync("u1", 0, "n3", False, 1, 20))
    after, result = apply(state, c.PromotePrimary("u1", 0, "n3", 1, 30))
    assert "only an in-sync copy" in result["error"]["message"] and after is state


def test_a_copy_away_too_long_is_replaced_on_another_node_outside_the_in_sync_set():
    state = create(cluster())
    refused, result = apply(state, c.ReplaceCopy("u1", 0, "n3", "n4", 20))
    assert "take it out of the in-sync set first" in result["error"]["message"]
    state, _ = apply(state, c.SetInSync("u1", 0, "n3", False, 1, 20))
    state, result = apply(state, c.ReplaceCopy("u1", 0, "n3", "n4", 30))
    assert result["changed"]
    assert shard0(state)[1:3] == (("n1", "n2", "n4"), ("n1", "n2"))
    for bad, why in ((c.ReplaceCopy("u1", 0, "n4", "n2", 40), "in sync"),
                     (c.ReplaceCopy("u1", 0, "n1", "n9", 40), "is in sync"),
                     (c.ReplaceCopy("u1", 0, "n3", "n4", 40), "holds no copy")):
        after, result = apply(state, bad)
        assert "error" in result and after is state


def test_a_dataset_from_before_replication_has_one_copy_per_shard():
    state, _ = apply(cluster(), c.CreateDataset("u1", "t1", "docs", "", 4, "cosine", "hnsw", {},
                                                ("n1", "n2"), 10))
    record = state.datasets["u1"]
    assert record.copies == (("n1",), ("n2",)) and record.in_sync_of(1) == ("n2",)


# ---- properties over random command sequences -------------------------------------------------

replication_commands = st.one_of(
    st.builds(c.SetInSync, dataset_uuid=st.just("u1"), shard=st.integers(0, 1),
              node_id=st.sampled_from(NODES), in_sync=st.booleans(), term=st.integers(1, 4),
              at_ms=st.just(50)),
    st.builds(c.PromotePrimary, dataset_uuid=st.just("u1"), shard=st.integers(0, 1),
              node_id=st.sampled_from(NODES), term=st.integers(1, 4), at_ms=st.just(50)),
    st.builds(c.ReplaceCopy, dataset_uuid=st.just("u1"), shard=st.integers(0, 1),
              old_node=st.sampled_from(NODES), new_node=st.sampled_from(NODES),
              at_ms=st.just(50)))


@settings(max_examples=300, deadline=None)
@given(st.lists(replication_commands, max_size=30))
def test_every_sequence_of_replication_commands_keeps_the_invariants(sequence):
    state = create(cluster())
    for command in sequence:
        before = state.datasets["u1"]
        state, result = apply(state, command)
        after = state.datasets["u1"]
        if "error" in result or result.get("changed") is False:
            assert after is before
            continue
        assert after.epoch == before.epoch + 1
        for shard in range(after.shard_count):
            copies, in_sync = after.copies_of(shard), after.in_sync_of(shard)
            assert len(set(copies)) == len(copies) == after.replication_factor
            assert set(in_sync) <= set(copies)
            assert after.primary_of(shard) in in_sync
            assert after.term_of(shard) >= before.term_of(shard)
            if after.primary_of(shard) != before.primary_of(shard):
                assert after.term_of(shard) == before.term_of(shard) + 1
                assert after.primary_of(shard) in before.in_sync_of(shard)


@settings(max_examples=200, deadline=None)
@given(shards=st.integers(1, 12), rf=st.integers(1, 4),
       nodes=st.lists(st.sampled_from([f"n{i}" for i in range(8)]), min_size=1, max_size=8,
                      unique=True))
def test_planned_copies_are_distinct_balanced_and_hold_the_primary(shards, rf, nodes):
    if rf > len(nodes):
        with pytest.raises(ValueError, match="replication_factor"):
            plan_copies("t", "d", shards, rf, nodes)
        return
    primaries, copies = plan_copies("t", "d", shards, rf, nodes)
    assert len(copies) == shards
    load = {}
    for primary, per_shard in zip(primaries, copies):
        assert primary in per_shard and len(set(per_shard)) == rf
        for n in per_shard:
            load[n] = load.get(n, 0) + 1
    assert max(load.values()) <= -(-shards * rf // len(nodes)) + 1


# ---- the meta leader's repair planner ---------------------------------------------------------

from consensus.replication import plan_repairs  # noqa: E402


def test_a_primary_away_past_the_failover_delay_is_replaced_by_a_live_in_sync_copy():
    state = create(cluster())
    assert plan_repairs(state, {"n1": 1_500}, 99, 2_000, 60_000) == []
    planned = plan_repairs(state, {"n1": 2_000, "n2": 2_000}, 99, 2_000, 60_000)
    assert planned == [c.PromotePrimary("u1", 0, "n3", 1, 99),
                       c.PromotePrimary("u1", 1, "n4", 1, 99)]
    state, result = apply(state, planned[0])
    assert "error" not in result and shard0(state)[0] == "n3"


def test_no_promotion_without_a_live_in_sync_copy():
    state = create(cluster(), copies=(("n1", "n2"), ("n2", "n3")), rf=2)
    state, _ = apply(state, c.SetInSync("u1", 0, "n2", False, 1, 20))
    assert plan_repairs(state, {"n1": 9_000}, 99, 2_000, 60_000) == []


def test_a_copy_away_too_long_leaves_the_in_sync_set_then_moves_to_a_spare_node():
    state = create(cluster(), copies=(("n1", "n3"), ("n2", "n3")), rf=2)
    down = {"n3": 61_000}
    rounds = []
    for _ in range(4):
        planned = plan_repairs(state, down, 99, 2_000, 60_000)
        rounds.append(planned)
        for command in planned:
            state, result = apply(state, command)
            assert "error" not in result, result
    record = state.datasets["u1"]
    assert [type(x).__name__ for x in rounds[0]] == ["SetInSync", "SetInSync"]
    assert {type(x).__name__ for x in rounds[1]} == {"ReplaceCopy"}
    assert rounds[2] == rounds[3] == []
    assert "n3" not in record.copies_of(0) + record.copies_of(1)
    assert all(len(record.copies_of(s)) == 2 for s in (0, 1))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(NODES), st.sampled_from([0, 1_000, 2_000, 70_000])))
def test_planned_repairs_always_apply_and_keep_the_invariants(down):
    state = create(cluster(), copies=(("n1", "n2"), ("n2", "n3")), rf=2)
    for _ in range(5):
        for command in plan_repairs(state, down, 99, 2_000, 60_000):
            state, result = apply(state, command)
            assert "error" not in result, (command, result)
    record = state.datasets["u1"]
    for shard in (0, 1):
        assert record.primary_of(shard) in record.in_sync_of(shard)
        assert len(set(record.copies_of(shard))) == 2
