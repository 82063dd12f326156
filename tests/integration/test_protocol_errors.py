"""Protocol errors are the client's: malformed protobuf, a client that leaves mid-body and a
declared body over the limit never look like server errors (issue 13, "every protocol error is
a client error").

- Malformed protobuf sent to any public gRPC RPC answers INVALID_ARGUMENT with a one-line
  reason, never UNKNOWN (grpc.aio's answer to a deserializer that raises) or INTERNAL. The RPCs
  come from the service descriptors the router serves (deeplake.v1 and tributary.admin.v1), so
  a new RPC is covered without touching this file; each message type gets a corpus built from
  its own fields (bad UTF-8 in a string field, an odd-length packed float field, ...).
- A REST client that disconnects mid-body is counted as 499 (client closed request), not 500.
- A declared Content-Length over request_bytes_max is answered 413 at once, before any of the
  body is read.
"""

from __future__ import annotations

import random
import re
import socket
import time
import uuid

import grpc
import httpx
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from cluster import Cluster, wait_for
from proto import admin_pb2
from proto import deeplake_service_pb2 as pb
from tributary import limits

pytestmark = pytest.mark.integration

ADMIN_KEY = "admin-" + uuid.uuid4().hex
CREDENTIALS = [("authorization", f"Bearer {ADMIN_KEY}")]
PUBLIC_SERVICES = [service for file in (pb.DESCRIPTOR, admin_pb2.DESCRIPTOR)
                   for service in file.services_by_name.values()]


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("protocol-errors"), meta=1, nodes=1, routers=1,
                extra_args=["--api-key", ADMIN_KEY]).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def channel(up):
    with grpc.insecure_channel(up.grpc_target) as ch:
        yield ch


# ---- the malformed-protobuf corpus --------------------------------------------------------------

def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _fields(descriptor: Descriptor, kind) -> list[FieldDescriptor]:
    return [f for f in descriptor.fields if kind(f)]


def _repeated(field: FieldDescriptor) -> bool:
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else field.label == FieldDescriptor.LABEL_REPEATED


def malformed_corpus(descriptor: Descriptor) -> dict[str, bytes]:
    """Bytes that are not a valid encoding of `descriptor`'s message, named by what is wrong.
    Field-specific entries use the message's own fields (or a sub-message's), so that the
    decoder meets them where the message declares them."""
    rng = random.Random(descriptor.full_name)
    corpus = {
        "truncated length-delimited field": _key(1, 2) + _varint(50) + b"short",
        "truncated varint": _key(1, 0) + b"\xff\xff\xff",
        "invalid wire type 7": _key(1, 7) + b"\x00",
        "end-group without start-group": _key(3, 4),
        "field number 0": _key(0, 0) + b"\x01",
        "random garbage": bytes(rng.randrange(256) for _ in range(96)),
        "all 0xff": b"\xff" * 32,
    }
    strings = _fields(descriptor, lambda f: f.type == FieldDescriptor.TYPE_STRING)
    if strings:
        corpus["bad UTF-8 in a string field"] = \
            _key(strings[0].number, 2) + _varint(4) + b"\xff\xfe\xc3\x28"
    floats = _fields(descriptor, lambda f: f.type == FieldDescriptor.TYPE_FLOAT
                     and _repeated(f))
    if floats:
        corpus["packed floats of odd length"] = _key(floats[0].number, 2) + _varint(3) + b"abc"
        corpus["packed floats, 6 bytes"] = _key(floats[0].number, 2) + _varint(6) + b"abcdef"
    scalars = _fields(descriptor, lambda f: f.type in (FieldDescriptor.TYPE_INT32,
                                                        FieldDescriptor.TYPE_BOOL))
    if scalars:
        # A varint field whose varint runs off the end of the message.
        corpus["varint field cut short"] = _key(scalars[0].number, 0) + b"\x80\x80"
    messages = _fields(descriptor, lambda f: f.type == FieldDescriptor.TYPE_MESSAGE
                       and not f.message_type.GetOptions().map_entry)
    if messages:
        inner = messages[0]
        inner_strings = _fields(inner.message_type,
                                lambda f: f.type == FieldDescriptor.TYPE_STRING)
        payload = (_key(inner_strings[0].number, 2) + _varint(2) + b"\xc3\x28"
                   if inner_strings else _key(1, 2) + _varint(9) + b"x")
        corpus["bad sub-message"] = _key(inner.number, 2) + _varint(len(payload)) + payload
    return corpus


def _call(channel, service, method, raw: bytes):
    path = f"/{service.full_name}/{method.name}"
    if method.client_streaming:
        stub = channel.stream_unary(path, request_serializer=None, response_deserializer=None)
        return stub(iter([raw]), metadata=CREDENTIALS, timeout=30)
    stub = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    return stub(raw, metadata=CREDENTIALS, timeout=30)


def test_malformed_protobuf_to_every_public_rpc_is_invalid_argument(channel):
    answers: dict[str, list[str]] = {}
    refused = 0
    for service in PUBLIC_SERVICES:
        for method in service.methods:
            for what, raw in malformed_corpus(method.input_type).items():
                try:
                    _call(channel, service, method, raw)
                    code, details = grpc.StatusCode.OK, ""
                except grpc.RpcError as exc:
                    code, details = exc.code(), exc.details() or ""
                label = f"{service.name}.{method.name} / {what}"
                answers.setdefault(code.name, []).append(f"{label}: {details[:200]}")
                if code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("malformed"):
                    refused += 1
                    assert "\n" not in details and "Traceback" not in details, label
    bad = answers.get("UNKNOWN", []) + answers.get("INTERNAL", [])
    assert not bad, "server errors for malformed protobuf:\n" + "\n".join(bad)
    methods = sum(len(service.methods) for service in PUBLIC_SERVICES)
    assert methods >= 25
    # Every RPC refused at least the entries no decoder can read as a message.
    assert refused >= 4 * methods, answers


def test_bulk_insert_stream_with_a_malformed_message_is_invalid_argument(up, channel):
    httpx.post(f"{up.rest}/datasets", json={"name": "bulk-malformed", "dimensions": 4},
               headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30).raise_for_status()
    good = pb.InsertVectorsRequest(dataset_id="bulk-malformed", vectors=[
        pb.Vector(id="a", values=[1, 2, 3, 4])]).SerializeToString()
    stub = channel.stream_unary("/deeplake.v1.VectorService/BulkInsertVectors",
                                request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as caught:
        stub(iter([good, b"\x0a\x02\xff\xfe"]), metadata=CREDENTIALS, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert "bad UTF-8" in caught.value.details()


def test_malformed_protobuf_without_credentials_is_unauthenticated_first(channel):
    stub = channel.unary_unary("/deeplake.v1.DatasetService/CreateDataset",
                               request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as caught:
        stub(b"\x0a\x02\xff\xfe", timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


# ---- REST: clients that leave, bodies that are too large ----------------------------------------

def _rest_counts(up, status: str) -> float:
    """tributary_router_requests_total for REST answers of `status`, over all routes."""
    text = httpx.get(f"{up.rest}/metrics", timeout=30).text
    # Route labels hold braces of their own ("/datasets/{dataset_id}").
    pattern = re.compile(r"^tributary_router_requests_total\{(.*)\} (\S+)$", re.M)
    total = 0.0
    for labels, value in pattern.findall(text):
        if 'protocol="rest"' in labels and f'status="{status}"' in labels:
            total += float(value)
    return total


def _raw_request(up, content_length: int, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", up.http_port), timeout=10)
    sock.sendall((f"POST /api/v1/datasets/anything/vectors HTTP/1.1\r\n"
                  f"Host: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
                  f"Content-Type: application/json\r\n"
                  f"Content-Length: {content_length}\r\n\r\n").encode() + body)
    return sock


def test_client_that_disconnects_mid_body_is_not_counted_as_a_server_error(up):
    server_errors = _rest_counts(up, "500")
    closed = _rest_counts(up, "499")
    for _ in range(3):
        sock = _raw_request(up, 10_000, b'{"vectors": [{"id": "a", "values": [1, 2')
        time.sleep(0.2)  # let the router start reading the body before the client leaves
        sock.close()
    wait_for(lambda: _rest_counts(up, "499") >= closed + 3, timeout_s=10,
             what="three closed requests counted as 499")
    assert _rest_counts(up, "500") == server_errors
    assert "unhandled error" not in up.output()


def test_declared_body_over_the_limit_is_refused_at_once_with_413(up):
    declared = 200_000_000
    assert declared > limits.request_bytes_max
    sock = _raw_request(up, declared, b'{"vectors": [')
    sock.settimeout(3)
    started = time.monotonic()
    answer = b""
    try:
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    except socket.timeout:
        pass
    finally:
        sock.close()
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 413"), f"after {elapsed:.1f}s: {answer[:200]!r}"
    assert elapsed < 2.0
