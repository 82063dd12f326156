"""Specification of primary balancing (consensus/rebalance.py plan_primary_transfers and the
StartTransfer / EndTransfer commands): once copies are even, hand-overs to in-sync copies even
primaries out to within one of each other whenever the copies allow it, without moving data;
a transfer that is done or impossible is forgotten, and a bad one is refused."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import commands as c
from consensus.rebalance import (plan_move_steps, plan_primary_transfers, plan_rebalance,
                                 primary_load)
from consensus.state import MetaState, apply


def cluster(nodes, copies, primaries) -> MetaState:
    state = MetaState()
    for n in nodes:
        state, _ = apply(state, c.RegisterNode(n, f"{n}:1", 1))
    factor = len(copies[0])
    state, result = apply(state, c.CreateDataset("u0", "t", "d0", "", 4, "cosine", "hnsw", {},
                                                 tuple(primaries), 1, factor, tuple(copies)))
    assert "error" not in result, result
    return state


def hand_over(state: MetaState, transfer_id: str) -> MetaState:
    """Plays what the primary does (node/replication.py hand_over), then the leader's step."""
    transfer = state.transfers[transfer_id]
    record = state.datasets[transfer.dataset_uuid]
    state, r = apply(state, c.PromotePrimary(transfer.dataset_uuid, transfer.shard,
                                             transfer.target, record.term_of(transfer.shard), 5))
    assert "error" not in r, r
    # The old primary catches up and rejoins the in-sync set.
    record = state.datasets[transfer.dataset_uuid]
    state, r = apply(state, c.SetInSync(transfer.dataset_uuid, transfer.shard, transfer.source,
                                        True, record.term_of(transfer.shard), 6))
    assert "error" not in r, r
    steps = [s for s in plan_move_steps(state, set(state.nodes), 7, 4)
             if isinstance(s, c.EndTransfer)]
    assert c.EndTransfer(transfer_id, 7) in steps
    for step in steps:
        state, r = apply(state, step)
    assert transfer_id not in state.transfers
    return state


def balance(state: MetaState, nodes) -> MetaState:
    for _ in range(50):
        planned = plan_primary_transfers(state, set(nodes), 3)
        if not planned:
            break
        for transfer in planned:
            state, r = apply(state, transfer.command(2))
            assert "error" not in r, r
        for transfer in planned:
            state = hand_over(state, transfer.transfer_id)
    return state


def test_primaries_piled_on_one_node_spread_by_hand_overs_without_moving_copies():
    nodes = ["n1", "n2", "n3"]
    copies = [tuple(nodes)] * 6
    state = cluster(nodes, copies, ["n1"] * 6)
    assert plan_rebalance(state, set(nodes), 10) == []     # copies are even: no move helps
    state = balance(state, nodes)
    assert sorted(primary_load(state, nodes).values()) == [2, 2, 2]
    assert state.datasets["u0"].copies == tuple(tuple(sorted(c_)) for c_ in copies)


def test_a_transfer_to_a_copy_that_is_not_in_sync_or_of_a_moving_shard_is_refused():
    nodes = ["n1", "n2", "n3"]
    state = cluster(nodes, [("n1", "n2"), ("n1", "n3")], ["n1", "n1"])
    state, _ = apply(state, c.SetInSync("u0", 0, "n2", False, 1, 2))
    for bad, why in ((c.StartTransfer("x", "u0", 0, "n1", "n2", 3), "not another in-sync"),
                     (c.StartTransfer("x", "u0", 0, "n2", "n1", 3), "not the primary"),
                     (c.StartTransfer("x", "u0", 0, "n1", "n3", 3), "not another in-sync"),
                     (c.StartTransfer("x", "u9", 0, "n1", "n2", 3), "not found")):
        after, result = apply(state, bad)
        assert why in result["error"]["message"] and after is state
    moving, _ = apply(state, c.StartMove("m", "u0", 1, "n3", "n2", "", 3))
    after, result = apply(moving, c.StartTransfer("x", "u0", 1, "n1", "n3", 4))
    assert result["error"]["type"] == "Aborted" and after is moving
    assert plan_primary_transfers(moving, set(nodes), 5) == []


def test_a_transfer_whose_target_left_the_in_sync_set_is_forgotten():
    nodes = ["n1", "n2"]
    state = cluster(nodes, [("n1", "n2")] * 2, ["n1", "n1"])
    [transfer] = plan_primary_transfers(state, set(nodes), 5)
    state, _ = apply(state, transfer.command(2))
    state, _ = apply(state, c.SetInSync("u0", transfer.shard, "n2", False, 1, 3))
    assert c.EndTransfer(transfer.transfer_id, 4) in plan_move_steps(state, set(nodes), 4, 2)


@settings(max_examples=80, deadline=None)
@given(node_count=st.integers(2, 5), shards=st.integers(1, 10), data=st.data())
def test_hand_overs_end_with_primaries_within_one_when_every_node_holds_every_shard(
        node_count, shards, data):
    nodes = [f"n{i}" for i in range(node_count)]
    primaries = data.draw(st.lists(st.sampled_from(nodes), min_size=shards, max_size=shards))
    state = balance(cluster(nodes, [tuple(nodes)] * shards, primaries), nodes)
    load = primary_load(state, nodes)
    assert max(load.values()) - min(load.values()) <= 1, load


@settings(max_examples=80, deadline=None)
@given(node_count=st.integers(2, 5), shards=st.integers(1, 10), data=st.data())
def test_hand_overs_never_widen_the_primary_spread_and_only_go_to_in_sync_copies(
        node_count, shards, data):
    nodes = [f"n{i}" for i in range(node_count)]
    factor = data.draw(st.integers(1, node_count))
    copies = [tuple(data.draw(st.permutations(nodes))[:factor]) for _ in range(shards)]
    primaries = [data.draw(st.sampled_from(list(cs))) for cs in copies]
    state = cluster(nodes, copies, primaries)
    before = primary_load(state, nodes)
    for transfer in plan_primary_transfers(state, set(nodes), 100):
        record = state.datasets["u0"]
        assert transfer.target in record.in_sync_of(transfer.shard)
        assert record.primary_of(transfer.shard) == transfer.source
    after = primary_load(balance(state, nodes), nodes)
    assert max(after.values()) - min(after.values()) <= max(before.values()) - \
        min(before.values())
