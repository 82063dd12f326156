"""Specification of the shared input checks in tributary/validation.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tributary import limits
from tributary.errors import InvalidArgument
from tributary.validation import (as_vector, check_batch_size, check_dimensions,
                                  check_index_type, check_metadata, check_metric, check_name,
                                  check_top_k, check_vector_id)

# ---- check_name ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "docs", "my-dataset_1", "a.b", "a b", "x" * 255, "données", "数据集", "Ωmega",
    "é" * 127, "name with . dot", "UPPER",
])
def test_check_name_accepts_ordinary_names_and_returns_them(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", [
    "a/b", "/", "..", "a..b", "../etc", "a\\b", "\\",
    "a\x00b", "a\nb", "\n", "a\tb", "a\x7fb", "a\u200bb",
    "", " a", "a ", "\u3000a", "a\u00a0",
    "x" * 256, "é" * 128, "数" * 86,
])
def test_check_name_refuses_unsafe_or_oversized_names(name):
    with pytest.raises(InvalidArgument):
        check_name(name)


@pytest.mark.parametrize("name", ["\udc84", "ten\udcc2ant"])
def test_check_name_refuses_lone_surrogates_as_not_utf8(name):
    """aiohttp hands non-UTF-8 header bytes over as lone surrogates: a 400, not an encode
    error (which answered 500)."""
    with pytest.raises(InvalidArgument, match="is not valid UTF-8"):
        check_name(name, "tenant id")


@pytest.mark.parametrize("name", [None, 7, b"docs", ["docs"]])
def test_check_name_refuses_non_strings(name):
    with pytest.raises(InvalidArgument):
        check_name(name)


def test_check_name_error_message_names_what_was_checked():
    with pytest.raises(InvalidArgument, match="tenant id"):
        check_name("", what="tenant id")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(categories=["Lu", "Ll", "Lo", "Nd"]), min_size=1,
               max_size=60))
def test_check_name_accepts_any_short_name_of_letters_and_digits(name):
    assert check_name(name) == name


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=300))
def test_check_name_either_returns_a_safe_name_or_raises_invalid_argument(name):
    try:
        out = check_name(name)
    except InvalidArgument:
        return
    assert out == name
    assert "/" not in name and "\\" not in name and ".." not in name
    assert len(name.encode("utf-8")) <= limits.name_bytes_max
    assert name.strip() == name
    assert all(ord(ch) >= 0x20 and ch != "\x7f" for ch in name)


# ---- other scalar checks -------------------------------------------------------------------


def test_check_vector_id_accepts_slashes_but_not_control_chars_or_oversize():
    assert check_vector_id("doc/1#chunk 2") == "doc/1#chunk 2"
    for bad in ["", "a\x00", "a\n", "x" * (limits.vector_id_bytes_max + 1), None]:
        with pytest.raises(InvalidArgument):
            check_vector_id(bad)


def test_check_metric_and_index_type_accept_only_known_values():
    for metric in ("cosine", "l2", "ip"):
        assert check_metric(metric) == metric
    for index_type in ("hnsw", "flat"):
        assert check_index_type(index_type) == index_type
    with pytest.raises(InvalidArgument):
        check_metric("COSINE")
    with pytest.raises(InvalidArgument):
        check_index_type("ivf")


@pytest.mark.parametrize("bad", [0, -1, limits.dimensions_max + 1, True, 3.0, "8"])
def test_check_dimensions_refuses_out_of_range_or_non_integers(bad):
    with pytest.raises(InvalidArgument):
        check_dimensions(bad)


def test_check_dimensions_accepts_bounds():
    assert check_dimensions(1) == 1
    assert check_dimensions(limits.dimensions_max) == limits.dimensions_max


# ---- as_vector -----------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
@pytest.mark.parametrize("values", [[], None, np.array([], dtype=np.float32)])
def test_as_vector_refuses_an_empty_vector(metric, values):
    with pytest.raises(InvalidArgument, match="empty"):
        as_vector(values, 3, metric)


@pytest.mark.parametrize("values", [[1.0, 2.0], [1.0, 2.0, 3.0, 4.0]])
def test_as_vector_refuses_the_wrong_dimension(values):
    with pytest.raises(InvalidArgument, match="dimension"):
        as_vector(values, 3, "l2")


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e39, -1e39])
def test_as_vector_refuses_nan_inf_and_values_beyond_float32(metric, bad):
    with pytest.raises(InvalidArgument):
        as_vector([1.0, bad, 0.5], 3, metric)


@pytest.mark.parametrize("values", [["a", "b", "c"], [1.0, {}, 2.0], [1.0, object(), 2.0],
                                    [[1.0], [2.0, 3.0], [4.0]]])
def test_as_vector_refuses_non_numeric_values(values):
    with pytest.raises(InvalidArgument):
        as_vector(values, 3, "l2")


def test_as_vector_refuses_nested_lists_even_with_matching_length():
    with pytest.raises(InvalidArgument, match="flat"):
        as_vector([[1.0, 2.0], [3.0, 4.0]], 2, "l2")


def test_as_vector_refuses_a_zero_vector_for_cosine_only():
    with pytest.raises(InvalidArgument, match="zero"):
        as_vector([0.0, 0.0, 0.0], 3, "cosine")
    for metric in ("l2", "ip"):
        out = as_vector([0.0, 0.0, 0.0], 3, metric)
        assert out.dtype == np.float32
        assert np.array_equal(out, np.zeros(3, dtype=np.float32))


def test_as_vector_keeps_l2_and_ip_values_as_float32_unchanged():
    for metric in ("l2", "ip"):
        out = as_vector([1, 2.5, -3], 3, metric)
        assert out.dtype == np.float32
        assert out.shape == (3,)
        assert out.tolist() == [1.0, 2.5, -3.0]


def test_as_vector_accepts_a_numpy_array():
    out = as_vector(np.array([3.0, 4.0]), 2, "cosine")
    assert np.allclose(out, [0.6, 0.8])


# Components are zero or comfortably inside the normal float32 range; subnormal and huge inputs
# have their own tests below.
normal_float32_components = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).filter(
    lambda x: x == 0.0 or abs(x) >= 1e-30)


@settings(max_examples=300, deadline=None)
@given(st.lists(normal_float32_components, min_size=1, max_size=64))
def test_as_vector_cosine_output_is_unit_norm_float32_in_the_same_direction(values):
    if float(np.linalg.norm(np.asarray(values, dtype=np.float32).astype(np.float64))) == 0.0:
        with pytest.raises(InvalidArgument):
            as_vector(values, len(values), "cosine")
        return
    out = as_vector(values, len(values), "cosine")
    assert out.dtype == np.float32
    assert out.shape == (len(values),)
    assert abs(float(np.linalg.norm(out.astype(np.float64))) - 1.0) < 1e-5
    reference = np.asarray(values, dtype=np.float64)
    reference = reference / np.linalg.norm(reference)
    assert float(np.dot(out.astype(np.float64), reference)) > 1 - 1e-5


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_as_vector_cosine_normalizes_large_float32_values_to_unit_length():
    out = as_vector([3e38, 3e38], 2, "cosine")  # each value is a valid float32
    assert np.allclose(out, [math.sqrt(0.5)] * 2)


def test_as_vector_cosine_normalizes_subnormal_values_to_unit_length():
    out = as_vector([1.4e-45, 1.4e-45], 2, "cosine")  # gives [1, 1], norm 1.414
    assert abs(float(np.linalg.norm(out.astype(np.float64))) - 1.0) < 1e-5


def test_as_vector_cosine_normalizes_moderately_large_values_to_unit_length():
    out = as_vector([1e30, 1e30], 2, "cosine")
    assert np.allclose(out, [math.sqrt(0.5)] * 2)


# ---- check_top_k / check_batch_size --------------------------------------------------------


@pytest.mark.parametrize("top_k", [1, 10, limits.top_k_max])
def test_check_top_k_accepts_values_within_bounds(top_k):
    assert check_top_k(top_k) == top_k


@pytest.mark.parametrize("top_k", [0, -1, limits.top_k_max + 1, True, 5.0, "5", None])
def test_check_top_k_refuses_out_of_bounds_or_non_integers(top_k):
    with pytest.raises(InvalidArgument):
        check_top_k(top_k)


@pytest.mark.parametrize("count", [1, limits.batch_vectors_max])
def test_check_batch_size_accepts_one_up_to_the_limit(count):
    assert check_batch_size(count) is None


@pytest.mark.parametrize("count", [0, limits.batch_vectors_max + 1])
def test_check_batch_size_refuses_empty_and_oversized_batches(count):
    with pytest.raises(InvalidArgument):
        check_batch_size(count)


# ---- check_metadata ------------------------------------------------------------------------


def test_check_metadata_stringifies_scalars():
    out = check_metadata({"s": "x", "i": 3, "neg": -7, "f": 1.5, "t": True, "n": False,
                          "e": "", "big": 10 ** 20})
    assert out == {"s": "x", "i": "3", "neg": "-7", "f": "1.5", "t": "true", "n": "false",
                   "e": "", "big": str(10 ** 20)}
    assert all(isinstance(v, str) for v in out.values())


def test_check_metadata_of_none_is_empty_and_input_is_not_modified():
    assert check_metadata(None) == {}
    original = {"a": 1}
    out = check_metadata(original)
    assert original == {"a": 1}
    assert out == {"a": "1"}


@pytest.mark.parametrize("metadata", [
    {"nested": {"a": 1}}, {"list": [1, 2]}, {"none": None}, {"bytes": b"x"},
    {"nan": math.nan}, {"inf": math.inf}, {"ninf": -math.inf},
    {1: "int key"}, {"": "empty key"},
    ["not", "a", "dict"], "a=b",
])
def test_check_metadata_refuses_nested_non_finite_or_malformed_values(metadata):
    with pytest.raises(InvalidArgument):
        check_metadata(metadata)


def test_check_metadata_accepts_exactly_the_key_limit_and_refuses_one_more():
    at_limit = {f"k{i}": i for i in range(limits.metadata_keys_max)}
    assert len(check_metadata(at_limit)) == limits.metadata_keys_max
    over = {f"k{i}": i for i in range(limits.metadata_keys_max + 1)}
    with pytest.raises(InvalidArgument, match="keys"):
        check_metadata(over)


def test_check_metadata_refuses_more_bytes_than_the_limit():
    with pytest.raises(InvalidArgument, match="larger"):
        check_metadata({"k": "x" * limits.metadata_bytes_max})
    ok = check_metadata({"k": "x" * (limits.metadata_bytes_max - 1)})
    assert len(ok["k"]) == limits.metadata_bytes_max - 1
