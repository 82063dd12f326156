"""Specification of the pure routing helpers in router/routing.py."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.routing import merge_top_k, shard_of, stable_hash

# Computed once, independently, with hashlib.blake2b(key.encode("utf-8"), digest_size=8) read as a
# big-endian unsigned integer. If these change, every stored vector moves to another shard.
KNOWN_HASHES = {
    "vec-1": 13027416232506359292,  # b4caae0a8fb2fdfc
    "": 16476032584258269876,       # e4a6a0577479b2b4
    "héllo": 1395503932212621259,   # 135dd36ec231afcb
}


@pytest.mark.parametrize("key,expected", sorted(KNOWN_HASHES.items()))
def test_stable_hash_matches_pinned_blake2b_values(key, expected):
    assert stable_hash(key) == expected
    assert stable_hash(key) == stable_hash(key)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_stable_hash_is_blake2b_64_bit_big_endian(key):
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    assert stable_hash(key) == int.from_bytes(digest, "big")
    assert 0 <= stable_hash(key) < 2 ** 64


@settings(max_examples=300, deadline=None)
@given(st.text(), st.integers(min_value=1, max_value=1024))
def test_shard_of_is_in_range_and_stable(vector_id, shard_count):
    shard = shard_of(vector_id, shard_count)
    assert 0 <= shard < shard_count
    assert shard_of(vector_id, shard_count) == shard


def test_shard_of_with_one_shard_is_always_zero():
    assert {shard_of(f"id-{i}", 1) for i in range(100)} == {0}


def test_shard_of_spreads_ids_over_all_shards():
    counts = [0] * 8
    for i in range(8000):
        counts[shard_of(f"id-{i}", 8)] += 1
    assert min(counts) > 800 and max(counts) < 1200


# ---- merge_top_k ---------------------------------------------------------------------------


def oracle(per_shard, k):
    everything = [item for hits in per_shard for item in hits]
    return sorted(everything, key=lambda item: (-item[0], item[1]))[:max(k, 0)]


scores = st.one_of(st.sampled_from([0.0, 0.5, 1.0, -1.0, 0.25]),
                   st.floats(allow_nan=False, width=32))
ids = st.text(alphabet="abcde", min_size=1, max_size=3)


@st.composite
def shard_lists(draw):
    counter = iter(range(10 ** 6))
    shards = draw(st.lists(st.lists(st.tuples(scores, ids), max_size=12), max_size=6))
    # Payload is a unique serial, so the comparison checks which exact hit was kept.
    return [[(s, vid, next(counter)) for s, vid in hits] for hits in shards]


@settings(max_examples=200, deadline=None)
@given(shard_lists(), st.integers(min_value=-2, max_value=80))
def test_merge_top_k_equals_sorting_everything_and_taking_k(per_shard, k):
    assert merge_top_k(per_shard, k) == oracle(per_shard, k)


@settings(max_examples=100, deadline=None)
@given(shard_lists(), st.integers(min_value=1, max_value=40), st.randoms(use_true_random=False))
def test_merge_top_k_does_not_depend_on_shard_or_hit_order(per_shard, k, rnd):
    expected = [(s, vid) for s, vid, _ in merge_top_k(per_shard, k)]
    shuffled = [list(hits) for hits in per_shard]
    for hits in shuffled:
        rnd.shuffle(hits)
    rnd.shuffle(shuffled)
    assert [(s, vid) for s, vid, _ in merge_top_k(shuffled, k)] == expected


@settings(max_examples=30, deadline=None)
@given(shard_lists())
def test_merge_top_k_accepts_a_one_shot_generator_of_lists(per_shard):
    assert merge_top_k((hits for hits in per_shard), 10) == oracle(per_shard, 10)


def test_merge_top_k_orders_by_score_descending():
    merged = merge_top_k([[(0.1, "a", 1), (0.9, "b", 2)], [(0.5, "c", 3)]], 3)
    assert [vid for _, vid, _ in merged] == ["b", "c", "a"]


def test_merge_top_k_breaks_score_ties_by_vector_id():
    merged = merge_top_k([[(0.5, "zeta", 1)], [(0.5, "alpha", 2)], [(0.5, "mid", 3)]], 2)
    assert [vid for _, vid, _ in merged] == ["alpha", "mid"]


def test_merge_top_k_with_k_larger_than_total_returns_everything_sorted():
    merged = merge_top_k([[(0.2, "a", None)], [], [(0.3, "b", None)]], 100)
    assert merged == [(0.3, "b", None), (0.2, "a", None)]


@pytest.mark.parametrize("k", [0, -1])
def test_merge_top_k_with_non_positive_k_returns_nothing(k):
    assert merge_top_k([[(1.0, "a", None)]], k) == []


def test_merge_top_k_of_no_shards_is_empty():
    assert merge_top_k([], 5) == []
    assert merge_top_k([[], []], 5) == []


def test_merge_top_k_never_compares_payloads():
    class Opaque:
        def __lt__(self, other):
            raise AssertionError("payload compared")

    merged = merge_top_k([[(0.5, "a", Opaque())], [(0.5, "a", Opaque())]], 2)
    assert len(merged) == 2
