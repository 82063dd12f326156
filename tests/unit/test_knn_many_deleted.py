"""A graph search where most rows are marked deleted (a split's purge marks half a shard)
answers with what hnswlib can reach instead of failing the search with "Cannot return the
results in a contiguous 2D array" (shard/replica.py ShardReplica._knn_widening)."""
from __future__ import annotations

import types

import hnswlib
import numpy as np

from shard.ef_gate import EfGate
from shard.replica import ShardReplica


def graph_with_few_live_rows(live: int = 3, total: int = 400, dims: int = 8):
    rng = np.random.default_rng(7)
    index = hnswlib.Index(space="l2", dim=dims)
    index.init_index(max_elements=total, M=16, ef_construction=64)
    index.add_items(rng.normal(size=(total, dims)).astype(np.float32), np.arange(total))
    for label in range(live, total):
        index.mark_deleted(label)
    fake = types.SimpleNamespace(_index=index, _ef_gate=EfGate(index, 16))
    fake._knn_once = types.MethodType(ShardReplica._knn_once, fake)
    return fake, rng.normal(size=(4, dims)).astype(np.float32)


def test_a_search_for_more_neighbours_than_live_rows_returns_the_live_ones():
    fake, queries = graph_with_few_live_rows(live=3)
    labels, distances = ShardReplica._knn_widening(fake, queries, 10, 16, True, 1)
    assert labels.shape[0] == 4 and labels.shape == distances.shape
    assert 1 <= labels.shape[1] <= 3
    assert set(labels.ravel().tolist()) <= {0, 1, 2}


def test_a_search_that_fits_answers_k_neighbours_at_once():
    fake, queries = graph_with_few_live_rows(live=50)
    labels, _ = ShardReplica._knn_widening(fake, queries, 10, 16, True, 1)
    assert labels.shape == (4, 10) and labels.max() < 50
