"""Authentication of internal gRPC (router -> node, router -> meta, node -> meta, and later
node -> node) with a shared cluster secret: a proof on every message.

Every internal request message carries a proof of the cluster secret: an HMAC-SHA256, under a key
derived from the secret, of the method's path, a timestamp, a random nonce and the message's own
bytes. The proof rides at the end of the serialized message as one protobuf field with the
highest field number (so a process that does not check it would skip it as an unknown field).
Servers check it inside the request deserializer, before the message is parsed and before any
handler runs; a message without a valid proof is answered UNAUTHENTICATED. So:
- a captured proof cannot be reused for another message, method or time (the MAC covers them);
- a replayed message is refused: its nonce was seen within the accepted clock skew;
- the secret itself never travels.
It authenticates; it does not encrypt. Internal links carry data in the clear, so off a trusted
network put them inside a mesh or a VPN as well.

Why not gRPC call credentials or a library: gRPC only sends call credentials over TLS channels,
and call metadata cannot cover the message body; mutual TLS would need a CA, certificates and
their rotation in every deployment. A per-message MAC needs only the one secret that
`tributary up` creates and the Kubernetes manifests already take from a Secret.

The secret comes from `--cluster-secret-file PATH` or the environment
(`TRIBUTARY_CLUSTER_SECRET_FILE`, then `TRIBUTARY_CLUSTER_SECRET`). Every internal server and
client refuses to start without it unless `--insecure-dev` is given (`require`). The standard
gRPC health service stays open so that orchestrator probes need no secret.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import hmac
import inspect
import logging
import os
import struct
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import grpc
from google.protobuf import message_factory

from tributary import limits, tracing

log = logging.getLogger("tributary.cluster_auth")

ENV_SECRET = "TRIBUTARY_CLUSTER_SECRET"
ENV_SECRET_FILE = "TRIBUTARY_CLUSTER_SECRET_FILE"
MIN_SECRET_CHARS = 16
_KEY_LABEL = b"tributary internal gRPC message proof v2"
_OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
INSECURE_WARNING = ("WARNING: --insecure-dev: internal calls are NOT authenticated and the meta "
                    "group's Raft port unpickles what it receives; any local user can run code "
                    "in this cluster. For local development only.")

# The proof as a protobuf field: number 2**29 - 1 (the highest), wire type 2 (length-delimited),
# a 57-byte value: version (1), unix time in ms (8, big-endian), nonce (16), HMAC-SHA256 (32).
_PROOF_VERSION = 2
_PROOF_VALUE_BYTES = 1 + 8 + 16 + 32
_PROOF_TAG = b"\xfa\xff\xff\xff\x0f" + bytes([_PROOF_VALUE_BYTES])
PROOF_BYTES = len(_PROOF_TAG) + _PROOF_VALUE_BYTES


class ProofError(Exception):
    """A message whose proof is missing, malformed, stale, replayed or wrong."""


@dataclass
class ClusterToken:
    """The key derived from the cluster secret, and what signing and checking need."""

    key: bytes
    _seen: dict = field(default_factory=dict, repr=False, compare=False)
    _order: collections.deque = field(default_factory=collections.deque, repr=False,
                                      compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def from_secret(cls, secret: str) -> "ClusterToken":
        secret = secret.strip()
        if len(secret) < MIN_SECRET_CHARS:
            raise ValueError(f"the cluster secret must be at least {MIN_SECRET_CHARS} characters; "
                             "use a random one, e.g. `openssl rand -hex 32`")
        return cls(hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest())

    def _mac(self, method: str, stamp: bytes, nonce: bytes, body: bytes) -> bytes:
        path = method.encode()
        mac = hmac.new(self.key, struct.pack(">H", len(path)) + path + stamp + nonce,
                       hashlib.sha256)
        mac.update(body)
        return mac.digest()

    def sign(self, method: str, body: bytes, now_ms: int | None = None) -> bytes:
        """`body` with the proof appended (for the request serializer of `method`)."""
        stamp = struct.pack(">Q", int(time.time() * 1000) if now_ms is None else now_ms)
        nonce = os.urandom(16)
        return b"".join((body, _PROOF_TAG, bytes([_PROOF_VERSION]), stamp, nonce,
                         self._mac(method, stamp, nonce, body)))

    def verify(self, method: str, data: bytes, now_ms: int | None = None) -> bytes:
        """The message bytes without the proof. Raises ProofError unless the proof is valid,
        fresh and not seen before (each proof is accepted once)."""
        if len(data) < PROOF_BYTES or data[-PROOF_BYTES:-_PROOF_VALUE_BYTES] != _PROOF_TAG:
            raise ProofError("the message carries no cluster proof")
        proof = data[-_PROOF_VALUE_BYTES:]
        body = data[:-PROOF_BYTES]
        if proof[0] != _PROOF_VERSION:
            raise ProofError(f"unknown cluster proof version {proof[0]}")
        stamp, nonce, mac = proof[1:9], proof[9:25], proof[25:]
        if not hmac.compare_digest(mac, self._mac(method, stamp, nonce, body)):
            raise ProofError("the cluster proof does not match (is the cluster secret the same "
                             "everywhere?)")
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        sent_ms = struct.unpack(">Q", stamp)[0]
        if abs(now_ms - sent_ms) > limits.internal_proof_skew_ms:
            raise ProofError(f"the cluster proof is {abs(now_ms - sent_ms)} ms away from this "
                             f"server's clock (at most {limits.internal_proof_skew_ms} ms)")
        self._remember(nonce, sent_ms, now_ms)
        return body

    def _remember(self, nonce: bytes, sent_ms: int, now_ms: int) -> None:
        """Refuses a nonce seen within the skew window. Nonces older than the window are
        forgotten (their messages fail the clock check anyway); past nonces_max the oldest go
        first, which only narrows the replay window under extreme load."""
        with self._lock:
            if nonce in self._seen:
                raise ProofError("the cluster proof was already used (a replayed message)")
            self._seen[nonce] = sent_ms
            self._order.append((sent_ms, nonce))
            horizon = now_ms - limits.internal_proof_skew_ms
            while self._order and (self._order[0][0] < horizon
                                   or len(self._order) > limits.internal_proof_nonces_max):
                _, old = self._order.popleft()
                self._seen.pop(old, None)

    def open_method(self, method: str) -> bool:
        return method.startswith(_OPEN_PREFIXES)


# ----------------------------------------------------------------------------- start-up policy

def load(path: str | None = None) -> ClusterToken | None:
    """The token from a secret file, else from the environment; None when no secret is set.
    A secret that is set but unreadable or too short stops the process with a clear message."""
    path = path or os.environ.get(ENV_SECRET_FILE)
    try:
        if path:
            with open(path, encoding="utf-8") as handle:
                return ClusterToken.from_secret(handle.read())
        secret = os.environ.get(ENV_SECRET)
        return ClusterToken.from_secret(secret) if secret else None
    except OSError as exc:
        raise SystemExit(f"cannot read the cluster secret file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster-secret-file", default=None,
                        help="file holding the shared secret that authenticates internal gRPC "
                             f"(env {ENV_SECRET_FILE} or {ENV_SECRET}); required unless "
                             "--insecure-dev")
    parser.add_argument("--insecure-dev", action="store_true",
                        help="run without internal authentication (and, for meta members, "
                             "without a Raft password). Local development only: any local "
                             "user can then act as the cluster")


def require(args: argparse.Namespace, process: str) -> ClusterToken | None:
    """The token this process signs and checks internal calls with. Without a secret the process
    refuses to start, unless --insecure-dev was given (then None, and a warning)."""
    token = load(getattr(args, "cluster_secret_file", None))
    if token is not None:
        return token
    if getattr(args, "insecure_dev", False):
        log.warning(INSECURE_WARNING)
        return None
    raise SystemExit(f"refusing to start the {process}: no cluster secret (--cluster-secret-file, "
                     f"{ENV_SECRET_FILE} or {ENV_SECRET}); `tributary up` creates one, or pass "
                     "--insecure-dev for local development without internal authentication")


# ----------------------------------------------------------------------------- clients

def stub(service, channel, token: ClusterToken | None):
    """A client for every method of `service` (a ServiceDescriptor) on `channel` (sync or aio),
    whose request serializer appends the proof. Attribute names are the method names, as on a
    generated stub."""
    methods = {}
    for method in service.methods:
        path = f"/{service.full_name}/{method.name}"
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        if token is None:
            serializer = request.SerializeToString
        else:
            def serializer(message, _path=path, _token=token):
                return _token.sign(_path, message.SerializeToString())
        kind = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
                (True, False): channel.stream_unary, (True, True): channel.stream_stream}[
            (method.client_streaming, method.server_streaming)]
        # Every internal call carries the trace context and request id (tributary/tracing.py).
        methods[method.name] = tracing.traced_multicallable(
            kind(path, request_serializer=serializer, response_deserializer=response.FromString),
            path, not (method.client_streaming or method.server_streaming),
            isinstance(channel, grpc.aio.Channel))
    return SimpleNamespace(**methods)


# ----------------------------------------------------------------------------- servers

class _Refused:
    """What the checking deserializer returns for a message without a valid proof, so that the
    behaviour (not the deserializer, whose exceptions gRPC turns into INTERNAL) answers."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


def _checking(token: ClusterToken, method: str, deserializer):
    def deserialize(data: bytes):
        try:
            body = token.verify(method, data)
        except ProofError as exc:
            return _Refused(str(exc))
        return deserializer(body) if deserializer is not None else body
    return deserialize


def _message(reason: str) -> str:
    return f"internal call refused: {reason}"


def _wrap_aio(handler: grpc.RpcMethodHandler, token: ClusterToken, method: str):
    codec = dict(request_deserializer=_checking(token, method, handler.request_deserializer),
                 response_serializer=handler.response_serializer)
    code = grpc.StatusCode.UNAUTHENTICATED

    async def first_checked(request_iterator, context):
        """Reads the first message before the handler runs, then checks every later one."""
        iterator = request_iterator.__aiter__()
        try:
            first = await iterator.__anext__()
        except StopAsyncIteration:
            await context.abort(code, _message("a stream without any message"))
        if isinstance(first, _Refused):
            await context.abort(code, _message(first.reason))

        async def rest():
            yield first
            async for message in iterator:
                if isinstance(message, _Refused):
                    await context.abort(code, _message(message.reason))
                yield message
        return rest()

    if handler.unary_unary is not None:
        async def unary_unary(request, context):
            if isinstance(request, _Refused):
                await context.abort(code, _message(request.reason))
            return await handler.unary_unary(request, context)
        return grpc.unary_unary_rpc_method_handler(unary_unary, **codec)
    if handler.unary_stream is not None:
        async def unary_stream(request, context):
            if isinstance(request, _Refused):
                await context.abort(code, _message(request.reason))
            result = handler.unary_stream(request, context)
            if inspect.isasyncgen(result):
                async for response in result:
                    yield response
            else:
                await result
        return grpc.unary_stream_rpc_method_handler(unary_stream, **codec)
    if handler.stream_unary is not None:
        async def stream_unary(request_iterator, context):
            return await handler.stream_unary(await first_checked(request_iterator, context),
                                              context)
        return grpc.stream_unary_rpc_method_handler(stream_unary, **codec)

    async def stream_stream(request_iterator, context):
        result = handler.stream_stream(await first_checked(request_iterator, context), context)
        if inspect.isasyncgen(result):
            async for response in result:
                yield response
        else:
            await result
    return grpc.stream_stream_rpc_method_handler(stream_stream, **codec)


def _wrap_sync(handler: grpc.RpcMethodHandler, token: ClusterToken, method: str):
    codec = dict(request_deserializer=_checking(token, method, handler.request_deserializer),
                 response_serializer=handler.response_serializer)
    code = grpc.StatusCode.UNAUTHENTICATED

    def first_checked(request_iterator, context):
        first = next(request_iterator, None)
        if first is None:
            context.abort(code, _message("a stream without any message"))
        if isinstance(first, _Refused):
            context.abort(code, _message(first.reason))

        def rest():
            yield first
            for message in request_iterator:
                if isinstance(message, _Refused):
                    context.abort(code, _message(message.reason))
                yield message
        return rest()

    if handler.unary_unary is not None:
        def unary_unary(request, context):
            if isinstance(request, _Refused):
                context.abort(code, _message(request.reason))
            return handler.unary_unary(request, context)
        return grpc.unary_unary_rpc_method_handler(unary_unary, **codec)
    if handler.unary_stream is not None:
        def unary_stream(request, context):
            if isinstance(request, _Refused):
                context.abort(code, _message(request.reason))
            yield from handler.unary_stream(request, context)
        return grpc.unary_stream_rpc_method_handler(unary_stream, **codec)
    if handler.stream_unary is not None:
        def stream_unary(request_iterator, context):
            return handler.stream_unary(first_checked(request_iterator, context), context)
        return grpc.stream_unary_rpc_method_handler(stream_unary, **codec)

    def stream_stream(request_iterator, context):
        yield from handler.stream_stream(first_checked(request_iterator, context), context)
    return grpc.stream_stream_rpc_method_handler(stream_stream, **codec)


class AioServerInterceptor(grpc.aio.ServerInterceptor):
    """For the asyncio servers (nodes): every method but health checks each message's proof."""

    def __init__(self, token: ClusterToken):
        self.token = token

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or self.token.open_method(method):
            return handler
        return _wrap_aio(handler, self.token, method)


class ServerInterceptor(grpc.ServerInterceptor):
    """For the thread-pool servers (meta members)."""

    def __init__(self, token: ClusterToken):
        self.token = token

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or self.token.open_method(method):
            return handler
        return _wrap_sync(handler, self.token, method)
