"""Specification of the move planners (consensus/rebalance.py) and of the move commands they
drive (consensus/replication.py): moves even copies out, drains empty a node, and a shard never
has two copies on one node nor fewer in-sync copies than before."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import commands as c
from consensus.placement import plan_copies
from consensus.rebalance import plan_drain, plan_move_steps, plan_rebalance, copy_load
from consensus.state import MetaState, apply


def cluster(nodes, datasets=(("d0", 4, 2),)) -> MetaState:
    """`nodes` registered; each dataset (name, shards, factor) placed on the first nodes only,
    as if the others joined later."""
    state = MetaState()
    for n in nodes:
        state, _ = apply(state, c.RegisterNode(n, f"{n}:1", 1))
    for i, (name, shards, factor) in enumerate(datasets):
        primaries, copies = plan_copies("t", name, shards, factor, list(nodes[:factor]))
        state, result = apply(state, c.CreateDataset(f"u{i}", "t", name, "", 4, "cosine",
                                                     "hnsw", {}, primaries, 1, factor, copies))
        assert "error" not in result, result
    return state


def complete(state: MetaState, move_id: str) -> MetaState:
    """Plays what the data plane does for a move: the target catches up and joins the in-sync
    set, the source hands the primary role over if it had it; then the leader finishes it."""
    move = state.moves[move_id]
    record = state.datasets[move.dataset_uuid]
    term = record.term_of(move.shard)
    state, r = apply(state, c.SetInSync(move.dataset_uuid, move.shard, move.target, True, term,
                                        5))
    assert "error" not in r, r
    if record.primary_of(move.shard) == move.source:
        state, r = apply(state, c.PromotePrimary(move.dataset_uuid, move.shard, move.target,
                                                 term, 6))
        assert "error" not in r, r
    steps = [s for s in plan_move_steps(state, set(state.nodes), 7, 4)
             if isinstance(s, c.FinishMove) and s.move_id == move_id]
    assert steps, "the leader finishes a move whose target is in sync"
    state, r = apply(state, steps[0])
    assert "error" not in r, r
    return state


def test_a_rebalance_onto_a_new_node_evens_copies_with_the_fewest_moves():
    state = cluster(["n1", "n2", "n3"], (("d0", 6, 2),))     # 12 copies on n1, n2
    planned = plan_rebalance(state, {"n1", "n2", "n3"}, 10)
    assert len(planned) == 4 and {m.target for m in planned} == {"n3"}
    for move in planned:
        state, r = apply(state, move.command("rebalance", 2))
        assert "error" not in r, r
        state = complete(state, move.move_id)
    assert sorted(copy_load(state, ["n1", "n2", "n3"]).values()) == [4, 4, 4]
    assert plan_rebalance(state, {"n1", "n2", "n3"}, 10) == []


def test_a_rebalance_moves_nothing_that_is_already_moving_and_skips_down_nodes():
    state = cluster(["n1", "n2", "n3", "n4"], (("d0", 4, 2),))
    first = plan_rebalance(state, {"n1", "n2", "n3"}, 1)
    state, _ = apply(state, first[0].command("rebalance", 2))
    again = plan_rebalance(state, {"n1", "n2", "n3"}, 10)
    assert all((m.dataset_uuid, m.shard) != (first[0].dataset_uuid, first[0].shard)
               for m in again)
    assert all(m.target != "n4" for m in first + again)


def test_a_drain_moves_every_copy_off_the_node_and_then_marks_it_drained():
    state = cluster(["n1", "n2", "n3"], (("d0", 3, 2),))
    state, _ = apply(state, c.SetNodeState("n1", "draining", 2))
    for _ in range(10):
        steps = plan_move_steps(state, {"n1", "n2", "n3"}, 3, 2)
        if not steps:
            break
        for step in steps:
            state, r = apply(state, step)
            assert "error" not in r, (step, r)
        for move_id in list(state.moves):
            state = complete(state, move_id)
    assert state.nodes["n1"].state == "drained"
    assert all("n1" not in r.copies_of(s) for r in state.datasets.values()
               for s in range(r.shard_count))


def test_a_drain_names_the_copies_no_node_can_take():
    state = cluster(["n1", "n2"], (("d0", 2, 2),))
    moves, stuck = plan_drain(state, {"n1", "n2"}, "n1")
    assert moves == [] and stuck == ["d0/0", "d0/1"]


@pytest.mark.parametrize("bad, why", [
    (c.StartMove("m", "u0", 0, "n3", "n1", "", 2), "holds no copy"),
    (c.StartMove("m", "u0", 0, "n1", "n2", "", 2), "already holds a copy"),
    (c.StartMove("m", "u0", 0, "n1", "n9", "", 2), "unknown node"),
    (c.StartMove("m", "u0", 9, "n1", "n3", "", 2), "out of range"),
])
def test_a_bad_move_is_refused_and_changes_nothing(bad, why):
    state = cluster(["n1", "n2", "n3"])
    after, result = apply(state, bad)
    assert why in result["error"]["message"] and after is state


def test_moving_to_a_draining_node_or_a_shard_already_moving_is_refused():
    state = cluster(["n1", "n2", "n3", "n4"])
    state, _ = apply(state, c.SetNodeState("n4", "draining", 2))
    after, result = apply(state, c.StartMove("m", "u0", 0, "n1", "n4", "", 3))
    assert "is draining" in result["error"]["message"] and after is state
    state, _ = apply(state, c.StartMove("m1", "u0", 0, "n1", "n3", "", 3))
    after, result = apply(state, c.StartMove("m2", "u0", 0, "n2", "n3", "", 3))
    assert result["error"]["type"] == "Aborted" and after is state


def test_a_cancelled_move_leaves_the_shard_exactly_as_it_was():
    state = cluster(["n1", "n2", "n3"])
    before = state.datasets["u0"]
    state, _ = apply(state, c.StartMove("m1", "u0", 0, "n1", "n3", "", 2))
    state, _ = apply(state, c.SetInSync("u0", 0, "n3", True, 1, 3))
    state, result = apply(state, c.CancelMove("m1", 4))
    after = state.datasets["u0"]
    assert "error" not in result and not state.moves
    assert (after.copies_of(0), after.in_sync_of(0), after.primary_of(0)) == \
        (before.copies_of(0), before.in_sync_of(0), before.primary_of(0))


def test_a_node_with_copies_is_removed_only_by_force_and_never_with_a_shards_last_copy():
    state = cluster(["n1", "n2", "n3"])
    after, result = apply(state, c.RemoveNode("n1", False, 2))
    assert "which removing it would lose" in result["error"]["message"] and after is state
    state, result = apply(state, c.RemoveNode("n1", True, 2))
    assert "error" not in result and "n1" not in state.nodes
    record = state.datasets["u0"]
    for shard in range(record.shard_count):
        assert "n1" not in record.copies_of(shard)
        assert record.primary_of(shard) in record.in_sync_of(shard)
    single = cluster(["n1", "n2"], (("d0", 2, 1),))
    target = single.datasets["u0"].primary_of(0)
    after, result = apply(single, c.RemoveNode(target, True, 2))
    assert "no in-sync copy" in result["error"]["message"] and after is single


@settings(max_examples=60, deadline=None)
@given(shards=st.integers(1, 8), factor=st.integers(1, 3), new_nodes=st.integers(1, 3))
def test_every_rebalance_plan_applies_and_ends_balanced(shards, factor, new_nodes):
    old = [f"n{i}" for i in range(factor)]
    nodes = old + [f"x{i}" for i in range(new_nodes)]
    state = cluster(nodes, (("d0", shards, factor),))
    for _ in range(40):
        planned = plan_rebalance(state, set(nodes), 3)
        if not planned:
            break
        for move in planned:
            state, r = apply(state, move.command("rebalance", 2))
            assert "error" not in r, r
            state = complete(state, move.move_id)
    load = copy_load(state, nodes)
    assert max(load.values()) - min(load.values()) <= 1
    record = state.datasets["u0"]
    for shard in range(shards):
        assert len(set(record.copies_of(shard))) == factor
        assert record.in_sync_of(shard) == record.copies_of(shard)
