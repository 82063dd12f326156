"""Specification of shard placement planning in consensus/placement.py."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.placement import plan_placement

node_sets = st.lists(st.text(alphabet="abcdefghij0123456789-", min_size=1, max_size=6),
                     min_size=1, max_size=8, unique=True)
shard_counts = st.integers(min_value=1, max_value=48)


@settings(max_examples=150, deadline=None)
@given(node_sets, shard_counts)
def test_plan_has_one_entry_per_shard_and_uses_only_the_given_nodes(nodes, shards):
    plan = plan_placement("t1", "docs", shards, nodes)
    assert isinstance(plan, tuple)
    assert len(plan) == shards
    assert set(plan) <= set(nodes)


@settings(max_examples=150, deadline=None)
@given(node_sets, shard_counts)
def test_no_node_gets_more_than_its_fair_share(nodes, shards):
    plan = plan_placement("t1", "docs", shards, nodes)
    cap = math.ceil(shards / len(nodes))
    assert max(Counter(plan).values()) <= cap


@settings(max_examples=100, deadline=None)
@given(node_sets, shard_counts, st.randoms(use_true_random=False))
def test_plan_is_deterministic_and_ignores_node_order_and_duplicates(nodes, shards, rnd):
    first = plan_placement("tenant", "name", shards, nodes)
    shuffled = list(nodes) + list(nodes[:2])
    rnd.shuffle(shuffled)
    assert plan_placement("tenant", "name", shards, shuffled) == first
    assert plan_placement("tenant", "name", shards, list(nodes)) == first


def test_plan_is_stable_across_calls_for_a_realistic_cluster():
    nodes = ["node-a", "node-b", "node-c"]
    plans = {plan_placement("default", "docs", 8, nodes) for _ in range(5)}
    assert len(plans) == 1


def test_when_shards_equal_nodes_every_node_gets_exactly_one():
    nodes = [f"n{i}" for i in range(5)]
    plan = plan_placement("t", "d", 5, nodes)
    assert sorted(plan) == sorted(nodes)


@pytest.mark.parametrize("shards", [1, 2, 7, 32])
def test_a_single_node_takes_every_shard(shards):
    assert plan_placement("t", "d", shards, ["only"]) == ("only",) * shards


@pytest.mark.parametrize("shards", [0, -1])
def test_planning_fewer_than_one_shard_is_refused(shards):
    with pytest.raises(ValueError):
        plan_placement("t", "d", shards, ["n1"])


def test_planning_with_no_live_nodes_is_refused():
    with pytest.raises(ValueError):
        plan_placement("t", "d", 3, [])


def test_input_node_list_is_not_modified():
    nodes = ["c", "a", "b", "a"]
    plan_placement("t", "d", 4, nodes)
    assert nodes == ["c", "a", "b", "a"]


def test_different_datasets_spread_their_first_shard_over_the_cluster():
    # The ring, not a fixed order, chooses: across many datasets every node leads some shard 0.
    nodes = ["n1", "n2", "n3", "n4"]
    leaders = Counter(plan_placement("t", f"ds-{i}", 1, nodes)[0] for i in range(200))
    assert set(leaders) == set(nodes)
    assert min(leaders.values()) >= 20
