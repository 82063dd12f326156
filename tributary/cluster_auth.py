"""Optional authentication of internal gRPC (router -> node, router -> meta, node -> meta) with a
shared cluster secret.

When a secret is configured, every internal server refuses a call that does not carry the
cluster token with UNAUTHENTICATED, and every internal client sends it. The secret comes from
`--cluster-secret-file PATH` or the environment (`TRIBUTARY_CLUSTER_SECRET_FILE`, then
`TRIBUTARY_CLUSTER_SECRET`); `tributary up` children inherit the environment, and the Kubernetes
manifests map it from a Secret.

The token on the wire is HMAC-SHA256(secret, a fixed label), not the secret itself, so a token
read off an unencrypted internal link does not reveal a secret that may be reused elsewhere (for
example as the meta group's Raft password). It authenticates; it does not encrypt. Internal links
carry data in the clear, so off a trusted network put them inside a mesh or a VPN as well.

The standard gRPC health service stays open so that orchestrator probes need no secret.

grpc's call credentials would be the library's mechanism for this, but gRPC only sends call
credentials over TLS channels, and internal channels are plaintext; hence plain metadata.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
from dataclasses import dataclass

import grpc

METADATA_KEY = "x-tributary-cluster-token"
ENV_SECRET = "TRIBUTARY_CLUSTER_SECRET"
ENV_SECRET_FILE = "TRIBUTARY_CLUSTER_SECRET_FILE"
MIN_SECRET_CHARS = 16
_LABEL = b"tributary internal gRPC v1"
_OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
_REFUSAL = "internal call without a valid cluster token (is the cluster secret the same everywhere?)"


@dataclass(frozen=True)
class ClusterToken:
    """The derived token; `metadata` goes on every internal call."""

    value: str

    @classmethod
    def from_secret(cls, secret: str) -> "ClusterToken":
        secret = secret.strip()
        if len(secret) < MIN_SECRET_CHARS:
            raise ValueError(f"the cluster secret must be at least {MIN_SECRET_CHARS} characters; "
                             "use a random one, e.g. `openssl rand -hex 32`")
        return cls(hmac.new(secret.encode(), _LABEL, hashlib.sha256).hexdigest())

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((METADATA_KEY, self.value),)

    def admits(self, method: str, invocation_metadata) -> bool:
        if method.startswith(_OPEN_PREFIXES):
            return True
        sent = next((value for key, value in invocation_metadata or () if key == METADATA_KEY),
                    None)
        return isinstance(sent, str) and hmac.compare_digest(sent, self.value)


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
                             f"(env {ENV_SECRET_FILE} or {ENV_SECRET}); default: no internal auth")


def metadata_from_env() -> tuple[tuple[str, str], ...]:
    """For tools that call internal services directly (the chaos harness, tests)."""
    token = load()
    return token.metadata if token else ()


def _refusing(handler: grpc.RpcMethodHandler, refuse) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that runs `refuse(request, context)` instead.
    (grpc.aio needs `refuse` itself to be a coroutine function, so it is not wrapped.)"""
    codec = dict(request_deserializer=handler.request_deserializer,
                 response_serializer=handler.response_serializer)
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse, **codec)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse, **codec)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, **codec)
    return grpc.stream_stream_rpc_method_handler(refuse, **codec)


class AioServerInterceptor(grpc.aio.ServerInterceptor):
    """For the asyncio servers (nodes)."""

    def __init__(self, token: ClusterToken):
        self.token = token

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or self.token.admits(handler_call_details.method,
                                                handler_call_details.invocation_metadata):
            return handler

        async def refuse(_request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSAL)
        return _refusing(handler, refuse)


class ServerInterceptor(grpc.ServerInterceptor):
    """For the thread-pool servers (meta members)."""

    def __init__(self, token: ClusterToken):
        self.token = token

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or self.token.admits(handler_call_details.method,
                                                handler_call_details.invocation_metadata):
            return handler

        def refuse(_request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSAL)
        return _refusing(handler, refuse)
