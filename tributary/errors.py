"""The one error hierarchy, mapped once to HTTP statuses and gRPC codes.

Every error the world can see is a subclass of TributaryError. Each class carries its HTTP status,
its gRPC status code and whether a retry may succeed. Routers, nodes and meta members raise these;
the REST and gRPC layers translate them with `http_status` / `grpc_code` and nothing else.
Across internal gRPC hops an error travels as (grpc code, details JSON {"type", "message"}) and is
rebuilt by `from_wire`, so a NotFound raised on a node reaches the client as a NotFound.
"""

from __future__ import annotations

import json

import grpc


class TributaryError(Exception):
    http_status: int = 500
    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    retriable: bool = False

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def to_wire(self) -> str:
        return json.dumps({"type": type(self).__name__, "message": self.message})

    def to_json(self) -> dict:
        return {"error": {"type": type(self).__name__, "message": self.message,
                          "retriable": self.retriable}}


class InvalidArgument(TributaryError):
    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(TributaryError):
    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(TributaryError):
    http_status = 409
    grpc_code = grpc.StatusCode.ALREADY_EXISTS


class Aborted(TributaryError):
    """A transaction lost a conflict or was aborted by recovery; retrying may succeed."""

    http_status = 409
    grpc_code = grpc.StatusCode.ABORTED
    retriable = True


class PayloadTooLarge(TributaryError):
    http_status = 413
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class StaleEpoch(TributaryError):
    """The router planned with an older placement epoch than the node knows: refresh and retry."""

    http_status = 503
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    retriable = True


class ShardCountChanged(StaleEpoch):
    """The dataset's shard count changed (a split switched) after the router planned the
    request on the old count: the router plans it again; a client sees it only when that keeps
    failing."""


class NotLeader(TributaryError):
    """A meta member that is not the Raft leader was asked for a leader-only answer."""

    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE
    retriable = True


class Unavailable(TributaryError):
    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE
    retriable = True


class DeadlineExceeded(TributaryError):
    http_status = 504
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    retriable = True


class Unimplemented(TributaryError):
    http_status = 501
    grpc_code = grpc.StatusCode.UNIMPLEMENTED


class Internal(TributaryError):
    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL


class Unauthenticated(TributaryError):
    """No credentials, or credentials that do not verify (unknown key, bad signature, expired)."""

    http_status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(TributaryError):
    """Valid credentials whose scope does not cover the request (tenant, dataset, write)."""

    http_status = 403
    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(TributaryError):
    """A tenant quota or rate limit was hit. `retry_after_s` travels as the REST Retry-After
    header and the gRPC trailing metadata `retry-after`."""

    http_status = 429
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retriable = True

    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = max(1, int(retry_after_s))


def all_error_types() -> list[type[TributaryError]]:
    found, todo = [], [TributaryError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


_BY_NAME = {cls.__name__: cls for cls in all_error_types()}


def from_wire(code: grpc.StatusCode, details: str | None) -> TributaryError:
    """Rebuilds the error a peer raised from its gRPC status; unknown shapes map by code."""
    try:
        doc = json.loads(details or "")
        cls = _BY_NAME.get(doc.get("type", ""))
        if cls is not None:
            return cls(str(doc.get("message", "")))
    except (ValueError, AttributeError, TypeError):
        pass
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return Unavailable(f"peer unavailable: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"peer timed out: {details}")
    cls = _BY_CODE.get(code, Internal)
    return cls(details or code.name)


# A bare status from a peer that did not send our details maps to the plainest class for its
# code. FAILED_PRECONDITION is deliberately not StaleEpoch: only a node that says so is stale.
_BY_CODE: dict[grpc.StatusCode, type[TributaryError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
}
