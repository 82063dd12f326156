"""Zones in the move planners (consensus/rebalance.py): nodes registered with `--zone` get each
shard's copies spread over as many zones as the live nodes offer, by rebalance and by drains;
evening copies never narrows a shard's spread; copy moves carry primaries onto nodes short of
them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import commands as c
from consensus.placement import plan_copies
from consensus.rebalance import (copy_load, plan_drain, plan_move_steps, plan_rebalance,
                                 primary_load, zones_of)
from consensus.state import MetaState, apply


def zoned_cluster(zones: dict[str, str], placed_on: list[str], shards: int,
                  factor: int) -> MetaState:
    state = MetaState()
    for node, zone in zones.items():
        state, _ = apply(state, c.RegisterNode(node, f"{node}:1", 1, zone))
    primaries, copies = plan_copies("t", "d0", shards, factor, placed_on)
    state, result = apply(state, c.CreateDataset("u0", "t", "d0", "", 4, "cosine", "hnsw", {},
                                                 primaries, 1, factor, copies))
    assert "error" not in result, result
    return state


def complete(state: MetaState, move) -> MetaState:
    """What the data plane and the leader do for a move: catch up, hand over, finish."""
    state, _ = apply(state, move.command("rebalance", 2))
    record = state.datasets[move.dataset_uuid]
    term = record.term_of(move.shard)
    state, _ = apply(state, c.SetInSync(move.dataset_uuid, move.shard, move.target, True,
                                        term, 3))
    if record.primary_of(move.shard) == move.source:
        state, _ = apply(state, c.PromotePrimary(move.dataset_uuid, move.shard, move.target,
                                                 term, 4))
    for step in plan_move_steps(state, set(state.nodes), 5, 100):
        if isinstance(step, c.FinishMove):
            state, result = apply(state, step)
            assert "error" not in result, result
    return state


def rebalance_fully(state: MetaState, live: set[str]) -> MetaState:
    for _ in range(60):
        planned = plan_rebalance(state, live, 3)
        if not planned:
            return state
        for move in planned:
            state = complete(state, move)
    raise AssertionError("rebalancing did not settle")


def test_a_shard_whose_copies_share_a_zone_gets_one_moved_to_the_other_zone():
    zones = {"a1": "a", "a2": "a", "b1": "b"}
    state = zoned_cluster(zones, ["a1", "a2"], 2, 2)        # both copies in zone a
    state = rebalance_fully(state, set(zones))
    record = state.datasets["u0"]
    for shard in range(2):
        assert zones_of(state, record.copies_of(shard)) == {"a", "b"}


def test_a_drain_prefers_a_target_that_keeps_the_copies_in_two_zones():
    zones = {"a1": "a", "b1": "b", "a2": "a", "b2": "b"}
    state = zoned_cluster(zones, ["a1", "b1"], 1, 2)
    moves, stuck = plan_drain(state, set(zones), "b1")
    assert stuck == [] and [m.target for m in moves] == ["b2"]


def test_primaries_are_evened_out_when_copies_move_onto_new_nodes():
    state = zoned_cluster({n: "" for n in ("n1", "n2", "n3", "n4")}, ["n1", "n2"], 8, 2)
    state = rebalance_fully(state, {"n1", "n2", "n3", "n4"})
    primaries = primary_load(state, ["n1", "n2", "n3", "n4"])
    assert max(primaries.values()) - min(primaries.values()) <= 1, primaries


@settings(max_examples=80, deadline=None)
@given(labels=st.lists(st.sampled_from(["a", "b", "c"]), min_size=2, max_size=6),
       shards=st.integers(1, 6), factor=st.integers(1, 3))
def test_every_rebalance_spreads_each_shard_over_the_most_zones_it_can(labels, shards,
                                                                       factor):
    zones = {f"n{i}": zone for i, zone in enumerate(labels)}
    nodes = list(zones)
    factor = min(factor, len(nodes))
    state = zoned_cluster(zones, nodes[:factor], shards, factor)
    state = rebalance_fully(state, set(nodes))
    record = state.datasets["u0"]
    for shard in range(shards):
        copies = record.copies_of(shard)
        assert len(set(copies)) == factor
        assert len(zones_of(state, copies)) == min(factor, len(set(labels)))
        assert record.primary_of(shard) in record.in_sync_of(shard)


@settings(max_examples=60, deadline=None)
@given(shards=st.integers(1, 8), factor=st.integers(1, 3), new_nodes=st.integers(1, 3))
def test_without_zone_labels_rebalancing_evens_copies_and_nearly_evens_primaries(shards, factor, new_nodes):
    nodes = [f"n{i}" for i in range(factor + new_nodes)]
    state = zoned_cluster({n: "" for n in nodes}, nodes[:factor], shards, factor)
    state = rebalance_fully(state, set(nodes))
    load = copy_load(state, nodes)
    assert max(load.values()) - min(load.values()) <= 1
    # Copy moves carry the primary role where a shard allows it; a shard whose copies already
    # sit on the node short of primaries cannot, so primaries end within two, not one.
    primaries = primary_load(state, nodes)
    assert max(primaries.values()) - min(primaries.values()) <= 2, primaries
