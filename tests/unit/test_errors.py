"""Specification of the error hierarchy and its wire format in tributary/errors.py."""

from __future__ import annotations

import json

import grpc
import pytest

from tributary import errors
from tributary.errors import (AlreadyExists, DeadlineExceeded, Internal, InvalidArgument,
                              NotFound, PayloadTooLarge, TributaryError, Unavailable,
                              all_error_types, from_wire)

ALL = all_error_types()
IDS = [cls.__name__ for cls in ALL]


def test_all_error_types_finds_the_whole_hierarchy_once():
    assert TributaryError in ALL
    assert len(ALL) == len(set(ALL))
    for name in ("InvalidArgument", "NotFound", "AlreadyExists", "PayloadTooLarge",
                 "StaleEpoch", "NotLeader", "Unavailable", "DeadlineExceeded", "Unimplemented",
                 "Internal", "Unauthenticated", "PermissionDenied", "ResourceExhausted"):
        assert getattr(errors, name) in ALL
    assert all(issubclass(cls, TributaryError) for cls in ALL)


@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_every_error_type_has_an_http_status_and_a_grpc_code(cls):
    assert isinstance(cls.http_status, int)
    assert 400 <= cls.http_status <= 599
    assert isinstance(cls.grpc_code, grpc.StatusCode)
    assert cls.grpc_code is not grpc.StatusCode.OK
    assert isinstance(cls.retriable, bool)


@pytest.mark.parametrize("cls", ALL, ids=IDS)
@pytest.mark.parametrize("message", ["boom", "", "ünïcødé \"quoted\" {json}", "line\nbreak"])
def test_to_wire_then_from_wire_rebuilds_the_same_class_and_message(cls, message):
    original = cls(message)
    rebuilt = from_wire(cls.grpc_code, original.to_wire())
    assert type(rebuilt) is cls
    assert rebuilt.message == message
    assert str(rebuilt) == message


@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_the_wire_type_wins_over_the_grpc_code(cls):
    rebuilt = from_wire(grpc.StatusCode.UNKNOWN, cls("m").to_wire())
    assert type(rebuilt) is cls


@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_to_json_carries_type_message_and_retriable(cls):
    doc = cls("msg").to_json()
    assert doc == {"error": {"type": cls.__name__, "message": "msg",
                             "retriable": cls.retriable}}
    json.dumps(doc)


def test_retriable_errors_are_the_transient_ones():
    retriable = {cls.__name__ for cls in ALL if cls.retriable}
    assert retriable == {"StaleEpoch", "ShardCountChanged", "NotLeader", "Unavailable",
                         "DeadlineExceeded", "Aborted", "ResourceExhausted"}
    assert not InvalidArgument.retriable and not NotFound.retriable
    assert not errors.Unauthenticated.retriable and not errors.PermissionDenied.retriable


def test_auth_and_quota_errors_map_to_401_403_429():
    assert (errors.Unauthenticated.http_status, errors.Unauthenticated.grpc_code) == (
        401, grpc.StatusCode.UNAUTHENTICATED)
    assert (errors.PermissionDenied.http_status, errors.PermissionDenied.grpc_code) == (
        403, grpc.StatusCode.PERMISSION_DENIED)
    assert (errors.ResourceExhausted.http_status, errors.ResourceExhausted.grpc_code) == (
        429, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert errors.ResourceExhausted("x", retry_after_s=7).retry_after_s == 7
    assert errors.ResourceExhausted("x", retry_after_s=0).retry_after_s == 1
    # A bare RESOURCE_EXHAUSTED from a peer is usually gRPC's message-size limit, not a quota.
    assert type(from_wire(grpc.StatusCode.RESOURCE_EXHAUSTED, "too big")) is Internal


@pytest.mark.parametrize("code,details,expected", [
    (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses", Unavailable),
    (grpc.StatusCode.UNAVAILABLE, None, Unavailable),
    (grpc.StatusCode.CANCELLED, "Cancelled", Unavailable),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", DeadlineExceeded),
    (grpc.StatusCode.DATA_LOSS, "lost", Internal),
    (grpc.StatusCode.UNKNOWN, "Exception calling application", Internal),
    (grpc.StatusCode.UNKNOWN, None, Internal),
    (grpc.StatusCode.INTERNAL, "<html>oops</html>", Internal),
    (grpc.StatusCode.NOT_FOUND, "Method not found!", NotFound),
    (grpc.StatusCode.ALREADY_EXISTS, "", AlreadyExists),
])
def test_from_wire_falls_back_on_the_grpc_code_for_non_json_details(code, details, expected):
    rebuilt = from_wire(code, details)
    assert type(rebuilt) is expected
    assert isinstance(rebuilt.message, str) and rebuilt.message


@pytest.mark.parametrize("details", ['"a string"', "[1, 2]", "null", "42",
                                    '{"type": "NoSuchError", "message": "x"}', "{}"])
def test_from_wire_falls_back_on_the_code_for_json_without_a_known_type(details):
    assert type(from_wire(grpc.StatusCode.UNAVAILABLE, details)) is Unavailable
    assert type(from_wire(grpc.StatusCode.DATA_LOSS, details)) is Internal


def test_from_wire_keeps_the_raw_details_in_the_message_of_a_fallback():
    rebuilt = from_wire(grpc.StatusCode.UNAVAILABLE, "connection refused")
    assert "connection refused" in rebuilt.message


def test_from_wire_of_a_missing_message_gives_an_empty_message():
    rebuilt = from_wire(grpc.StatusCode.NOT_FOUND, json.dumps({"type": "NotFound"}))
    assert type(rebuilt) is NotFound
    assert rebuilt.message == ""


def test_from_wire_of_a_bare_invalid_argument_status_is_invalid_argument():
    rebuilt = from_wire(grpc.StatusCode.INVALID_ARGUMENT, "bad request")
    assert type(rebuilt) is InvalidArgument
    assert type(rebuilt) is not PayloadTooLarge


def test_from_wire_never_raises_for_a_json_type_that_is_not_a_string():
    rebuilt = from_wire(grpc.StatusCode.INTERNAL, '{"type": ["NotFound"], "message": "x"}')
    assert isinstance(rebuilt, TributaryError)
