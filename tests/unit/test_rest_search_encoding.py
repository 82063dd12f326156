"""REST search bodies read and answers written without protobuf's json_format (issue 18): the
generated encoders (router/http_common.py message_json) must give exactly the document
rest.to_json gives, and the plain-body reader (rest._plain_search) exactly the message
rest.parse builds, or step aside."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto import deeplake_service_pb2 as pb
from router.http_common import json_response, message_json
from router.rest import _plain_search, parse, to_json
from tributary import errors

FLOAT32_MAX = float.fromhex("0x1.fffffep+127")

float32s = st.one_of(
    st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True),
    st.sampled_from([0.0, -0.0, 0.1, 1.0, 1e-45, FLOAT32_MAX, 0.30000001192092896]))
doubles = st.floats(allow_nan=True, allow_infinity=True)
texts = st.text(max_size=12)
# Metadata keys may be the names of INT64_FIELDS, with any string value: maps of the user's
# strings are written as they are (http_common.STRING_MAPS).
metadata = st.dictionaries(texts, texts, max_size=3) | st.fixed_dictionaries(
    {"vector_count": texts | st.integers(-10**6, 10**6).map(str),
     "total_count": st.sampled_from(["", "many", "12", "-3"])})
timestamps = st.tuples(st.integers(0, 253402300799), st.integers(0, 999_999_999))


@st.composite
def vectors(draw) -> pb.Vector:
    vector = pb.Vector(
        id=draw(texts), dataset_id=draw(texts), document_id=draw(texts), chunk_id=draw(texts),
        values=draw(st.lists(float32s, max_size=4)), content=draw(texts),
        content_hash=draw(texts), metadata=draw(metadata), content_type=draw(texts),
        language=draw(texts), chunk_index=draw(st.integers(-2**31, 2**31 - 1)),
        chunk_count=draw(st.integers(0, 99)), model=draw(texts),
        dimensions=draw(st.integers(0, 4096)), tenant_id=draw(texts))
    for name in ("created_at", "updated_at"):
        if draw(st.booleans()):
            seconds, nanos = draw(timestamps)
            getattr(vector, name).seconds, getattr(vector, name).nanos = seconds, nanos
    return vector


@st.composite
def results(draw) -> pb.SearchResult:
    result = pb.SearchResult(score=draw(float32s), distance=draw(float32s),
                             rank=draw(st.integers(0, 1000)),
                             explanation=draw(st.dictionaries(texts, texts, max_size=2)))
    if draw(st.booleans()):
        result.vector.CopyFrom(draw(vectors()))
    return result


@st.composite
def stats(draw) -> pb.SearchStats:
    return pb.SearchStats(vectors_scanned=draw(st.integers(0, 2**62)),
                          index_hits=draw(st.integers(0, 2**40)),
                          filtered_results=draw(st.integers(-5, 2**40)),
                          reranking_time_ms=draw(doubles), database_time_ms=draw(doubles),
                          post_processing_time_ms=draw(doubles))


def _same(left, right) -> bool:
    """Equal documents, NaN equal to NaN (json_format writes it as the string "NaN" anyway)."""
    if isinstance(left, float) and isinstance(right, float):
        return left == right or (math.isnan(left) and math.isnan(right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_same(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(_same(a, b) for a, b in zip(left, right))
    return type(left) is type(right) and left == right


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([pb.SearchVectorsResponse, pb.SearchByTextResponse,
                        pb.HybridSearchResponse]),
       st.lists(results(), max_size=4), st.one_of(st.none(), stats()),
       st.integers(0, 100), st.booleans(), doubles)
def test_search_answers_encode_to_the_document_json_format_gives(kind, hits, stat, total,
                                                                 more, took):
    response = kind(results=hits, total_found=total, has_more=more, query_time_ms=took)
    if stat is not None:
        response.stats.CopyFrom(stat)
    assert _same(message_json(response), to_json(response))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=8), max_size=3), st.integers(0, 10**6), doubles)
def test_insert_answers_encode_to_the_document_json_format_gives(messages, inserted, took):
    response = pb.InsertVectorsResponse(inserted_count=inserted, error_messages=messages,
                                        processing_time_ms=took)
    assert _same(message_json(response), to_json(response))


def test_types_with_enums_or_other_well_known_types_keep_json_format():
    from google.protobuf import struct_pb2
    assert message_json(struct_pb2.Struct()) is None


@settings(max_examples=100, deadline=None)
@given(st.lists(results(), max_size=3))
def test_the_orjson_body_reads_back_as_the_document_with_the_usual_headers(hits):
    doc = to_json(pb.SearchVectorsResponse(results=hits))
    fast, usual = json_response(doc), web.json_response(doc)
    assert fast.content_type == usual.content_type and fast.charset == usual.charset
    assert _same(json.loads(fast.body), json.loads(usual.text))


def test_an_integer_orjson_cannot_write_still_gets_an_answer():
    body = json_response({"n": 2**70}).body
    assert json.loads(body) == {"n": 2**70}


# ---- reading search bodies ------------------------------------------------------------------

json_numbers = st.one_of(st.integers(-2**40, 2**40), st.floats(allow_nan=False),
                         st.sampled_from([FLOAT32_MAX, -FLOAT32_MAX, 3.5e38, 2**31, -2**31 - 1]))
odd_values = st.one_of(st.none(), st.booleans(), st.text(max_size=4), json_numbers,
                       st.lists(st.integers(0, 3), max_size=2), st.just({"x": 1}))
option_values = {
    "top_k": st.one_of(st.integers(-5, 2**32), odd_values),
    "ef_search": st.integers(0, 500), "nprobe": st.integers(0, 9),
    "include_content": st.booleans(), "include_metadata": st.one_of(st.booleans(), odd_values),
    "deduplicate": st.booleans(), "group_by_document": st.booleans(), "rerank": st.booleans(),
    "metric_type": st.one_of(st.sampled_from(["cosine", "l2", ""]), odd_values),
    "filter": st.text(max_size=10), "threshold": st.one_of(json_numbers, odd_values),
    "min_score": json_numbers, "max_distance": json_numbers,
    "filters": st.one_of(st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
                         st.just({"a": 1})),
    "unknown_option": st.integers(),
}


@st.composite
def search_bodies(draw) -> dict:
    body = {"dataset_id": "docs", "tenant_id": draw(st.sampled_from(["acme", "", 5]))}
    body["query_vector"] = draw(st.one_of(
        st.lists(st.floats(-10, 10, width=32), max_size=6),
        st.lists(json_numbers, max_size=3),
        st.lists(odd_values, max_size=2), odd_values))
    if draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from(sorted(option_values)), max_size=4, unique=True))
        body["options"] = {key: draw(option_values[key]) for key in keys}
    for key, values in (("exact", st.one_of(st.booleans(), odd_values)),
                        ("as_of_version", st.one_of(st.text(max_size=4), odd_values)),
                        ("as_of_time", st.just("2024-01-01T00:00:00Z")),
                        ("stray", st.integers())):
        if draw(st.integers(0, 3)) == 0:
            body[key] = draw(values)
    return body


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(search_bodies())
def test_a_plain_search_body_reads_as_json_format_reads_it_and_others_step_aside(body):
    plain = _plain_search(json.loads(json.dumps(body)))
    try:
        expected = parse(pb.SearchVectorsRequest, json.loads(json.dumps(body)))
    except (errors.InvalidArgument, ValueError, TypeError):
        assert plain is None
        return
    if plain is not None:
        assert plain.SerializeToString(deterministic=True) == \
            expected.SerializeToString(deterministic=True)


def test_the_usual_search_body_takes_the_plain_path():
    body = {"dataset_id": "docs", "tenant_id": "acme",
            "query_vector": np.linspace(-1, 1, 128).tolist(),
            "options": {"top_k": 10, "ef_search": 128, "include_metadata": True,
                        "filters": {"lang": "en"}, "min_score": 0}}
    plain = _plain_search(body)
    assert plain is not None
    assert plain == parse(pb.SearchVectorsRequest, body)
    assert plain.options.HasField("min_score") and not plain.options.HasField("threshold")


def test_metadata_and_explanation_keys_named_like_counts_keep_their_strings():
    """A user's metadata key "vector_count" holding "many" made every answer carrying it a 500
    (int("many")), and one holding "12" came back as the number 12. Maps of the user's strings
    are written as they are, by both encoders; the stats map still gives numbers."""
    hit = pb.SearchResult(score=0.5, explanation={"vector_count": "n/a"})
    hit.vector.CopyFrom(pb.Vector(id="a", metadata={"vector_count": "many",
                                                    "total_count": "12"}))
    response = pb.SearchVectorsResponse(results=[hit])
    for doc in (message_json(response), to_json(response)):
        assert doc["results"][0]["vector"]["metadata"] == {"vector_count": "many",
                                                           "total_count": "12"}
        assert doc["results"][0]["explanation"] == {"vector_count": "n/a"}
    stats = pb.GetDatasetStatsResponse(stats={"vector_count": "7"})
    assert to_json(stats)["stats"] == {"vector_count": 7}
