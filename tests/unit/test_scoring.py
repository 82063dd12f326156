"""Specification of distance-to-score conversion in shard/scoring.py."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shard.scoring import HNSW_SPACE, scores_from_hnsw


def test_each_metric_maps_to_the_hnsw_space_it_is_searched_in():
    assert HNSW_SPACE == {"cosine": "ip", "ip": "ip", "l2": "l2"}


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_a_smaller_raw_distance_always_scores_higher(metric):
    raw = np.array([0.0, 0.01, 0.5, 1.0, 1.5, 2.0, 10.0, 1e6])
    scores, _ = scores_from_hnsw(metric, raw)
    assert np.all(np.diff(scores) < 0)


@pytest.mark.parametrize("metric", ["cosine", "ip"])
def test_inner_product_scores_are_one_minus_the_hnsw_distance(metric):
    raw = np.array([-3.0, 0.0, 0.25, 2.0], dtype=np.float32)
    scores, distances = scores_from_hnsw(metric, raw)
    assert scores.dtype == np.float64 and distances.dtype == np.float64
    assert np.allclose(scores, [4.0, 1.0, 0.75, -1.0])
    assert np.allclose(distances, raw)


def test_cosine_score_is_the_cosine_similarity_of_unit_vectors():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 16))
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    raw = np.array([1.0 - float(np.dot(a, b))])  # hnswlib's "ip" distance
    scores, _ = scores_from_hnsw("cosine", raw)
    assert scores[0] == pytest.approx(float(np.dot(a, b)))
    assert -1.0 <= scores[0] <= 1.0


def test_l2_distance_is_euclidean_and_score_is_one_over_one_plus_distance():
    squared = np.array([0.0, 1.0, 4.0, 9.0])  # hnswlib returns squared L2
    scores, distances = scores_from_hnsw("l2", squared)
    assert np.allclose(distances, [0.0, 1.0, 2.0, 3.0])
    assert np.allclose(scores, [1.0, 0.5, 1 / 3, 0.25])


def test_l2_treats_tiny_negative_rounding_error_as_zero_distance():
    scores, distances = scores_from_hnsw("l2", np.array([-1e-7]))
    assert distances[0] == 0.0
    assert scores[0] == 1.0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(min_value=-1e-6, max_value=1e30, allow_nan=False), min_size=1,
                max_size=30))
def test_l2_scores_lie_in_zero_one_and_never_increase_with_distance(raw):
    raw = np.sort(np.asarray(raw, dtype=np.float32))
    scores, distances = scores_from_hnsw("l2", raw)
    assert np.all(scores > 0.0) and np.all(scores <= 1.0)
    assert np.all(distances >= 0.0)
    assert np.all(np.diff(scores) <= 0)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["cosine", "ip"]),
       st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1,
                max_size=30))
def test_inner_product_scores_never_increase_with_distance(metric, raw):
    raw = np.sort(np.asarray(raw, dtype=np.float32))
    scores, _ = scores_from_hnsw(metric, raw)
    assert np.all(np.diff(scores) <= 0)
