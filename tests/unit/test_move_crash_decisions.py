"""The leader's decisions for moves whose nodes crash (consensus/rebalance.py plan_move_steps
with `gone`, consensus/replication.py plan_repairs): a move whose target stays away rolls back
and leaves the shard exactly as it was; a move whose source dies finishes on the survivors; and
under any interleaving of move steps, catch-ups, hand-overs and crashes, no move command ever
leaves a shard with fewer in-sync copies than it had when the move started (less the copies
that crashed nodes lost on their own)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import commands as c
from consensus.placement import plan_copies
from consensus.rebalance import plan_move_steps, plan_rebalance
from consensus.replication import plan_repairs
from consensus.state import MetaState, apply

NODES = ["n1", "n2", "n3", "n4"]


def cluster(nodes, datasets=(("d0", 4, 2),)) -> MetaState:
    """`nodes` registered; each dataset (name, shards, factor) placed on the first nodes."""
    state = MetaState()
    for n in nodes:
        state, _ = apply(state, c.RegisterNode(n, f"{n}:1", 1))
    for i, (name, shards, factor) in enumerate(datasets):
        primaries, copies = plan_copies("t", name, shards, factor, list(nodes[:factor]))
        state, result = apply(state, c.CreateDataset(f"u{i}", "t", name, "", 4, "cosine",
                                                     "hnsw", {}, primaries, 1, factor, copies))
        assert "error" not in result, result
    return state


def test_a_move_whose_target_is_gone_is_cancelled_and_leaves_the_shard_as_it_was():
    state = cluster(["n1", "n2", "n3"])
    before = state.datasets["u0"]
    state, _ = apply(state, c.StartMove("m1", "u0", 0, before.primary_of(0), "n3", "", 2))
    assert plan_move_steps(state, {"n1", "n2"}, 3, 2) == []      # away, not yet gone: wait
    steps = plan_move_steps(state, {"n1", "n2"}, 3, 2, gone={"n3"})
    assert steps == [c.CancelMove("m1", 3)]
    state, result = apply(state, steps[0])
    after = state.datasets["u0"]
    assert "error" not in result and not state.moves
    assert (after.copies_of(0), after.in_sync_of(0), after.primary_of(0)) == \
        (before.copies_of(0), before.in_sync_of(0), before.primary_of(0))


def test_a_move_whose_gone_target_already_took_the_primary_role_is_not_cancelled():
    state = cluster(["n1", "n2", "n3"])
    source = state.datasets["u0"].primary_of(0)
    state, _ = apply(state, c.StartMove("m1", "u0", 0, source, "n3", "", 2))
    state, _ = apply(state, c.SetInSync("u0", 0, "n3", True, 1, 3))
    state, _ = apply(state, c.PromotePrimary("u0", 0, "n3", 1, 4))
    steps = plan_move_steps(state, {"n1", "n2"}, 5, 2, gone={"n3"})
    assert not any(isinstance(s, c.CancelMove) for s in steps)
    assert c.FinishMove("m1", 5) in steps


def test_a_move_whose_source_primary_dies_finishes_on_the_promoted_copy():
    state = cluster(["n1", "n2", "n3"])
    record = state.datasets["u0"]
    source = record.primary_of(0)
    state, _ = apply(state, c.StartMove("m1", "u0", 0, source, "n3", "", 2))
    state, _ = apply(state, c.SetInSync("u0", 0, "n3", True, 1, 3))
    for step in plan_repairs(state, {source: 5_000}, 4, 2_000, 60_000):
        state, result = apply(state, step)
        assert "error" not in result
    assert state.datasets["u0"].primary_of(0) != source
    steps = plan_move_steps(state, set(NODES) - {source}, 5, 2, gone={source})
    assert c.FinishMove("m1", 5) in steps
    state, _ = apply(state, c.FinishMove("m1", 5))
    after = state.datasets["u0"]
    assert source not in after.copies_of(0) and len(after.in_sync_of(0)) == 2


EVENTS = st.lists(st.tuples(st.sampled_from(["plan", "catch_up", "hand_over", "crash",
                                             "return", "leader"]),
                            st.integers(0, 3), st.integers(0, 7)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(events=EVENTS)
def test_no_interleaving_of_move_steps_and_crashes_loses_an_in_sync_copy_to_a_move(events):
    state = cluster(NODES, (("d0", 4, 2),))
    down: dict[str, int] = {}
    at = 10
    # Per move: the shard's in-sync count when it started, less what crashes took since.
    floor: dict[str, int] = {}

    def run(command):
        nonlocal state
        before = state
        state, result = apply(state, command)
        if "error" in result:
            assert state is before
            return
        moving = (command.move_id if isinstance(command, (c.FinishMove, c.CancelMove,
                                                          c.StartMove)) else None)
        if isinstance(command, c.StartMove):
            record = before.datasets[command.dataset_uuid]
            floor[command.move_id] = len(record.in_sync_of(command.shard))
        elif moving in floor:
            move = before.moves[moving]
            assert len(state.datasets[move.dataset_uuid].in_sync_of(move.shard)) >= \
                floor.pop(moving), (command, before.datasets[move.dataset_uuid])
        for record in state.datasets.values():
            for shard in range(record.shard_count):
                copies, in_sync = record.copies_of(shard), record.in_sync_of(shard)
                assert len(set(copies)) == len(copies)
                assert record.primary_of(shard) in in_sync and set(in_sync) <= set(copies)
        if isinstance(command, (c.SetInSync, c.PromotePrimary)):
            # A crash (not a move) took a copy out of the in-sync set: lower the floor.
            for move_id, move in state.moves.items():
                if (move.dataset_uuid, move.shard) == (command.dataset_uuid, command.shard):
                    old = len(before.datasets[move.dataset_uuid].in_sync_of(move.shard))
                    new = len(state.datasets[move.dataset_uuid].in_sync_of(move.shard))
                    if new < old and move_id in floor:
                        floor[move_id] -= old - new

    for kind, node_index, pick in events:
        at += 1
        node = NODES[node_index]
        live = {n for n in NODES if n not in down}
        if kind == "plan":
            for move in plan_rebalance(state, live, 2):
                run(move.command("rebalance", at))
        elif kind == "crash":
            down[node] = 100_000
        elif kind == "return":
            down.pop(node, None)
        elif kind == "leader":
            for command in plan_repairs(state, down, at, 2_000, 60_000):
                run(command)
            for command in plan_move_steps(state, live, at, 2, gone=set(down)):
                run(command)
        elif state.moves:
            move = sorted(state.moves.values(), key=lambda m: m.move_id)[pick % len(state.moves)]
            record = state.datasets[move.dataset_uuid]
            primary = record.primary_of(move.shard)
            if kind == "catch_up" and move.target in live and primary in live:
                run(c.SetInSync(record.uuid, move.shard, move.target, True,
                                record.term_of(move.shard), at))
            elif kind == "hand_over" and primary == move.source and move.source in live:
                run(c.PromotePrimary(record.uuid, move.shard, move.target,
                                     record.term_of(move.shard), at))
