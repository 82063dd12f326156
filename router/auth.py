"""Authentication and authorization for the router's public APIs.

Two layers, so that both adapters enforce the same rules and a new route cannot slip through:

1. The adapters' edge: the REST middleware (`rest_middleware`) and the gRPC interceptor
   (`AuthInterceptor`) turn the credential (`Authorization: Bearer <token>` or an `api-key`
   header / metadata) into a `Principal` (401 UNAUTHENTICATED when it is missing or does not
   verify), then refuse, before any body is parsed, what the route alone says is out of scope
   (403 PERMISSION_DENIED): an admin route for a non-admin, a write route for a read-only
   credential, a tenant header naming another tenant, a path dataset outside an allow-list.
2. The admission step (router/admission.py), driven by each operation's descriptor
   (router/operations.py): it fills the tenant from the credential (a different tenant_id in
   the body is 403) and checks the dataset allow-list against every dataset the request names
   with the checks below (`resolve_tenant`, `check_write`, `check_dataset`), then runs the
   input guard and the quotas. A core coroutine without a descriptor is admin-only while auth
   is on (fail closed).

Credentials:
- API keys `trb_<12 hex id>_<43 chars>` (256 random bits) are created by the admin API and
  stored in the meta group only as sha256(key). A fast unsalted hash is enough for keys this
  random; it is not for passwords.
- The bootstrap admin key (`tributary up --api-key`, `--admin-key-sha256`, env
  TRIBUTARY_ADMIN_KEY / TRIBUTARY_ADMIN_KEY_SHA256) is held by the router only as a sha256.
- JWTs (pyjwt): HS256 with a shared secret and/or RS256 with a public key; the token's own
  `alg` picks the key, and only configured algorithms are accepted. Claims: `exp` (required),
  `tenant_id` (required unless `role` is `admin`), `access` (`read_only` | `read_write`,
  default read_write) and optional `datasets`: a list of names, or {name: access}.

Auth is off only when no credential source is configured and every listen address is loopback
(the `tributary up` default); `tributary router` refuses to start otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import hashlib
import hmac
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Mapping

import grpc
from aiohttp import web

from consensus import tenancy
from router import operations
from router.http_common import CORE, request_tenant
from tributary.netaddr import is_loopback
from tributary import errors, limits, validation

log = logging.getLogger("tributary.router.auth")

API_KEY_PATTERN = re.compile(r"trb_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
ADMIN_PREFIX = "/admin/"
# The cluster-wide admin routes under the public API (backups, restores: router/backups_admin.py).
API_ADMIN_PREFIX = "/api/v1/admin/"
ADMIN_SERVICE = "/tributary.admin.v1.AdminService/"

# Served without credentials unless --auth-exempt says otherwise. An entry ending in "/" is a
# prefix. gRPC entries are full method names.
DEFAULT_EXEMPT = (
    "/api/v1/health", "/api/v1/ready", "/api/v1/metrics",
    "/deeplake.v1.HealthService/Check", "/deeplake.v1.HealthService/GetMetrics",
    "/grpc.health.v1.Health/",
    # Server reflection describes the public proto, nothing more.
    "/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/",
)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---- principals ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Principal:
    """Who is calling. kind: "admin" (any tenant), "tenant" (one tenant) or "open" (auth off,
    or an exempt route: behaves as auth did before it existed)."""

    kind: str
    tenant_id: str = ""
    can_write: bool = True
    # Allow-list within the tenant: dataset name -> may write. None: every dataset.
    datasets: Mapping[str, bool] | None = None
    subject: str = ""

    @property
    def is_admin(self) -> bool:
        return self.kind in ("admin", "open")


OPEN = Principal("open", subject="auth off")

_PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "tributary_principal", default=None)
_GRPC_CONTEXT: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "tributary_grpc_context", default=None)


def current_principal() -> Principal | None:
    return _PRINCIPAL.get()


def resolve_tenant(principal: Principal, requested: str) -> str:
    """The tenant a request acts on. A tenant credential fixes it; naming another is 403 (checked
    before any lookup, so the answer says nothing about the other tenant)."""
    if principal.kind == "tenant":
        if requested and requested != principal.tenant_id:
            raise errors.PermissionDenied(
                f"this credential is scoped to tenant '{principal.tenant_id}'; the request "
                f"names tenant '{requested}'")
        return principal.tenant_id
    return requested


def check_write(principal: Principal, what: str) -> None:
    if not principal.can_write:
        raise errors.PermissionDenied(f"this credential is read-only; {what} writes")


def check_dataset(principal: Principal, name: str, write: bool) -> None:
    if principal.datasets is None or not name:
        return
    if name not in principal.datasets:
        raise errors.PermissionDenied(f"this credential does not cover dataset '{name}'")
    if write and not principal.datasets[name]:
        raise errors.PermissionDenied(f"this credential may only read dataset '{name}'")


def require_admin(principal: Principal | None, write: bool) -> Principal:
    if principal is None:
        raise errors.Unauthenticated("missing credentials")
    if not principal.is_admin:
        raise errors.PermissionDenied("the admin API needs an admin credential")
    if write:
        check_write(principal, "this admin call")
    return principal


def require_admin_here(write: bool) -> None:
    """For an admin handler: the current request's principal must be an admin (with auth off
    there is no principal and nothing to check)."""
    principal = current_principal()
    if principal is not None:
        require_admin(principal, write=write)


# ---- configuration and authentication ---------------------------------------------------------

@dataclass
class AuthConfig:
    enabled: bool = False
    admin_key_hashes: frozenset[str] = frozenset()
    hs256_secret: bytes | None = None
    rs256_public_key: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    exempt: tuple[str, ...] = DEFAULT_EXEMPT

    @property
    def has_credentials(self) -> bool:
        return bool(self.admin_key_hashes or self.hs256_secret or self.rs256_public_key)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--auth", choices=("auto", "on", "off"), default=env("TRIBUTARY_AUTH",
                                                                             "auto"),
                        help="auto: on when any credential source is configured (env "
                             "TRIBUTARY_AUTH). off is refused off loopback")
    parser.add_argument("--admin-key-sha256", default=env("TRIBUTARY_ADMIN_KEY_SHA256"),
                        help="sha256 hex of the bootstrap admin API key (env "
                             "TRIBUTARY_ADMIN_KEY_SHA256; or the key itself in env "
                             "TRIBUTARY_ADMIN_KEY, hashed at start)")
    parser.add_argument("--jwt-secret-file", default=env("TRIBUTARY_JWT_SECRET_FILE"),
                        help="HS256 secret for JWTs (or the secret itself in env "
                             "TRIBUTARY_JWT_SECRET)")
    parser.add_argument("--jwt-public-key-file", default=env("TRIBUTARY_JWT_PUBLIC_KEY_FILE"),
                        help="PEM public key for RS256 JWTs")
    parser.add_argument("--jwt-audience", default=env("TRIBUTARY_JWT_AUDIENCE"),
                        help="required `aud` claim, if set")
    parser.add_argument("--jwt-issuer", default=env("TRIBUTARY_JWT_ISSUER"),
                        help="required `iss` claim, if set")
    parser.add_argument("--auth-exempt", default=env("TRIBUTARY_AUTH_EXEMPT",
                                                     ",".join(DEFAULT_EXEMPT)),
                        help="comma-separated REST paths / gRPC methods served without "
                             "credentials (a trailing / makes a prefix)")


def config_from_args(args: argparse.Namespace, listen: list[str]) -> AuthConfig:
    """Builds the config and enforces the start-up rule: no auth off loopback."""
    hashes = set()
    if getattr(args, "admin_key_sha256", None):
        for value in args.admin_key_sha256.split(","):
            value = value.strip().lower()
            if not re.fullmatch(r"[0-9a-f]{64}", value):
                raise SystemExit("--admin-key-sha256 must be a sha256 hex digest")
            hashes.add(value)
    plain = os.environ.pop("TRIBUTARY_ADMIN_KEY", None)
    if plain:
        hashes.add(sha256_hex(plain))
    secret = None
    if getattr(args, "jwt_secret_file", None):
        with open(args.jwt_secret_file, "rb") as f:
            secret = f.read().strip()
    elif os.environ.get("TRIBUTARY_JWT_SECRET"):
        secret = os.environ.pop("TRIBUTARY_JWT_SECRET").encode()
    if secret is not None and len(secret) < 32:
        raise SystemExit("the HS256 JWT secret must be at least 32 bytes")
    public_key = None
    if getattr(args, "jwt_public_key_file", None):
        with open(args.jwt_public_key_file) as f:
            public_key = f.read()
    exempt = tuple(e.strip() for e in (getattr(args, "auth_exempt", None) or "").split(",")
                   if e.strip())
    config = AuthConfig(admin_key_hashes=frozenset(hashes), hs256_secret=secret,
                        rs256_public_key=public_key,
                        jwt_audience=getattr(args, "jwt_audience", None) or None,
                        jwt_issuer=getattr(args, "jwt_issuer", None) or None, exempt=exempt)
    mode = getattr(args, "auth", "auto") or "auto"
    config.enabled = mode == "on" or (mode == "auto" and config.has_credentials)
    if not config.enabled:
        exposed = [a for a in listen if not is_loopback(a)]
        if exposed:
            raise SystemExit(
                f"refusing to start: the router listens on {', '.join(exposed)} (not loopback) "
                "with authentication off; configure credentials (TRIBUTARY_ADMIN_KEY, "
                "--admin-key-sha256, --jwt-secret-file or --jwt-public-key-file)")
    return config


class Authenticator:
    def __init__(self, config: AuthConfig, catalog=None):
        self.config = config
        self.catalog = catalog
        self._index_version = -1
        self._by_hash: dict[str, Any] = {}
        self._last_forced_refresh = 0.0

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def is_exempt(self, path: str) -> bool:
        for entry in self.config.exempt:
            if path == entry or (entry.endswith("/") and path.startswith(entry)):
                return True
        return False

    # -- API keys --

    def _key_index(self) -> dict[str, Any]:
        state = self.catalog.state if self.catalog is not None else None
        if state is None:
            return {}
        if state.version != self._index_version:
            self._by_hash = {k.key_hash: k for k in getattr(state, "api_keys", {}).values()}
            self._index_version = state.version
        return self._by_hash

    async def _api_key(self, key: str) -> Principal:
        digest = sha256_hex(key)
        for admin_hash in self.config.admin_key_hashes:
            if hmac.compare_digest(digest, admin_hash):
                return Principal("admin", subject="bootstrap admin key")
        record = self._key_index().get(digest)
        if record is None and API_KEY_PATTERN.fullmatch(key) and self.catalog is not None:
            # Created through another router a moment ago? One linearizable read per interval.
            now = time.monotonic()
            if now - self._last_forced_refresh >= limits.auth_refresh_min_interval_ms / 1000:
                self._last_forced_refresh = now
                try:
                    await self.catalog.refresh(linearizable=True)
                except errors.TributaryError as exc:
                    log.warning("catalog refresh for an unknown API key failed: %s",
                                exc.message)
                record = self._key_index().get(digest)
        if record is None:
            raise errors.Unauthenticated("invalid API key")
        can_write = record.access == tenancy.READ_WRITE_ACCESS
        if record.role == tenancy.ROLE_ADMIN:
            return Principal("admin", can_write=can_write, subject=f"key {record.key_id}")
        datasets = {name: can_write for name in record.datasets} if record.datasets else None
        return Principal("tenant", tenant_id=record.tenant_id, can_write=can_write,
                         datasets=datasets, subject=f"key {record.key_id}")

    # -- JWTs --

    def _jwt(self, token: str) -> Principal:
        import jwt  # pyjwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise errors.Unauthenticated(f"invalid token: {exc}") from None
        alg = header.get("alg")
        if alg == "HS256" and self.config.hs256_secret:
            key: Any = self.config.hs256_secret
        elif alg == "RS256" and self.config.rs256_public_key:
            key = self.config.rs256_public_key
        else:
            raise errors.Unauthenticated(f"invalid token: algorithm {alg!r} is not accepted")
        required = ["exp"] + (["aud"] if self.config.jwt_audience else []) + \
            (["iss"] if self.config.jwt_issuer else [])
        try:
            claims = jwt.decode(token, key, algorithms=[alg], audience=self.config.jwt_audience,
                                issuer=self.config.jwt_issuer,
                                leeway=limits.jwt_leeway_ms / 1000,
                                options={"require": required})
        except jwt.ExpiredSignatureError:
            raise errors.Unauthenticated("invalid token: expired") from None
        except jwt.InvalidTokenError as exc:
            raise errors.Unauthenticated(f"invalid token: {exc}") from None
        return principal_from_claims(claims)

    async def authenticate(self, credential: str | None) -> Principal:
        if not self.enabled:
            return OPEN
        if not credential:
            raise errors.Unauthenticated(
                "missing credentials: send 'Authorization: Bearer <token or API key>' or an "
                "'api-key' header (gRPC: metadata 'authorization' or 'api-key')")
        if len(credential) > 16 * 1024:
            raise errors.Unauthenticated("invalid credentials: too long")
        if credential.count(".") == 2 and credential.startswith("eyJ"):
            return self._jwt(credential)
        return await self._api_key(credential)


_ACCESS_WORDS = {"read": False, "read_only": False, "write": True, "read_write": True}


def principal_from_claims(claims: dict) -> Principal:
    subject = f"jwt {claims.get('sub', '')}".strip()
    access = claims.get("access", "read_write")
    if not isinstance(access, str) or access not in _ACCESS_WORDS:
        raise errors.Unauthenticated("invalid token: access must be read_only or read_write")
    can_write = _ACCESS_WORDS[access]
    if claims.get("role") == "admin":
        return Principal("admin", can_write=can_write, subject=subject)
    tenant = claims.get("tenant_id")
    if not isinstance(tenant, str) or not tenant:
        raise errors.Unauthenticated("invalid token: no tenant_id claim")
    try:
        validation.check_name(tenant, "tenant_id claim")
    except errors.InvalidArgument as exc:
        raise errors.Unauthenticated(f"invalid token: {exc.message}") from None
    raw = claims.get("datasets")
    datasets: dict[str, bool] | None = None
    if isinstance(raw, list) and all(isinstance(d, str) for d in raw):
        datasets = {d: can_write for d in raw}
    elif isinstance(raw, dict) and all(isinstance(k, str) and isinstance(v, str)
                                       and v in _ACCESS_WORDS
                                       for k, v in raw.items()):
        datasets = {k: can_write and _ACCESS_WORDS[v] for k, v in raw.items()}
    elif raw is not None:
        raise errors.Unauthenticated("invalid token: datasets must be a list of names or an "
                                     "object of name -> read_only | read_write")
    return Principal("tenant", tenant_id=tenant, can_write=can_write, datasets=datasets,
                     subject=subject)


def _bearer(authorization: str | None, api_key: str | None) -> str | None:
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise errors.Unauthenticated("the Authorization header must be 'Bearer <token>'")
        return value.strip()
    return api_key.strip() if api_key else None


# ---- what a route or RPC needs, before its body is parsed ---------------------------------------

# The gRPC methods a read-only credential may call: the read operations' (router/operations.py)
# and health's. Any other method needs write access, so a new RPC defaults to needing it.
READ_RPCS = frozenset({op.grpc_method for op in operations.OPERATIONS
                       if op.grpc_method and not op.writes} | {"Check", "GetMetrics"})


def is_read_route(method: str, canonical: str) -> bool:
    """GET and HEAD read; so do the search POSTs (.../search, .../search/text, /search/...).
    Every other route is a write, so a new route defaults to needing write access."""
    if method in ("GET", "HEAD"):
        return True
    return method == "POST" and (canonical.endswith("/search") or "/search/" in canonical)


def rest_route_check(principal: Principal, request: web.Request) -> None:
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else request.path
    write = not is_read_route(request.method, canonical)
    if canonical.startswith((ADMIN_PREFIX, API_ADMIN_PREFIX)) or \
            request.path.startswith((ADMIN_PREFIX, API_ADMIN_PREFIX)):
        require_admin(principal, write)
        return
    if write:
        check_write(principal, f"{request.method} {canonical}")
    resolve_tenant(principal, request_tenant(request))
    check_dataset(principal, request.match_info.get("dataset_id", ""), write)


def grpc_method_check(principal: Principal, method: str, request: Any = None) -> None:
    """request is None for a client stream: its messages are checked one by one later."""
    name = method.rsplit("/", 1)[-1]
    if method.startswith(ADMIN_SERVICE):
        require_admin(principal, write=not name.startswith(("Get", "List")))
        return
    write = name not in READ_RPCS
    if write:
        check_write(principal, name)
    if request is None:
        return
    resolve_tenant(principal, getattr(request, "tenant_id", "") or "")
    dataset = getattr(request, "dataset_id", "")
    if isinstance(dataset, str):
        check_dataset(principal, dataset, write)


def _render(exc: errors.TributaryError) -> web.Response:
    headers = {}
    if isinstance(exc, errors.Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="tributary"'
    if isinstance(exc, errors.ResourceExhausted):
        headers["Retry-After"] = str(exc.retry_after_s)
    return web.json_response(exc.to_json(), status=exc.http_status, headers=headers)


@web.middleware
async def rest_middleware(request: web.Request, handler):
    """Authenticates, checks the route's scope, and renders 401/403/429 with their headers."""
    authenticator = getattr(request.app.get(CORE), "authenticator", None)
    resource = request.match_info.route.resource
    # Exemption follows the route the request matched (its template), not the raw path.
    route = resource.canonical if resource is not None else request.path
    try:
        if authenticator is None or not authenticator.enabled \
                or (resource is not None and authenticator.is_exempt(route)):
            principal = OPEN
        else:
            principal = await authenticator.authenticate(_bearer(
                request.headers.get("Authorization"), request.headers.get("api-key")))
            rest_route_check(principal, request)
    except (errors.Unauthenticated, errors.PermissionDenied) as exc:
        return _render(exc)
    token = _PRINCIPAL.set(principal)
    try:
        return await handler(request)
    except (errors.Unauthenticated, errors.PermissionDenied, errors.ResourceExhausted) as exc:
        return _render(exc)
    finally:
        _PRINCIPAL.reset(token)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """The gRPC edge: authenticates every non-exempt RPC (unary or streaming) and checks its
    scope; exempt RPCs run as OPEN. `wrap` builds a method's guarded handler once (the router
    applies it when it registers its services, router/server.py); as an interceptor it keeps
    one wrapped handler per method instead of building one per call."""

    def __init__(self, authenticator: Authenticator):
        self.authenticator = authenticator
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or not self.authenticator.enabled:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, self.wrap(method, handler))
        return cached[1]

    def wrap(self, method: str, handler):
        """`handler` (of RPC `method`) behind authentication and the method's scope check; the
        credential is read from the call's metadata. While authentication is off the handler
        runs as it is."""
        if handler is None:
            return None
        auth = self.authenticator
        exempt = auth.is_exempt(method)

        async def admit(context, request=None) -> Principal:
            if exempt:
                return OPEN
            try:
                metadata = dict(context.invocation_metadata() or ())
                principal = await auth.authenticate(_bearer(metadata.get("authorization"),
                                                             metadata.get("api-key")))
                grpc_method_check(principal, method, request)
                return principal
            except errors.TributaryError as exc:
                await context.abort(exc.grpc_code, exc.message)
                raise  # abort raises; this is for type checkers

        def bind(principal: Principal, context):
            return _PRINCIPAL.set(principal), _GRPC_CONTEXT.set(context)

        def unbind(tokens) -> None:
            with contextlib.suppress(ValueError):
                _GRPC_CONTEXT.reset(tokens[1])
                _PRINCIPAL.reset(tokens[0])

        codec = dict(request_deserializer=handler.request_deserializer,
                     response_serializer=handler.response_serializer)
        if handler.unary_unary is not None:
            inner_unary = handler.unary_unary

            async def unary_unary(request, context):
                if not auth.enabled:
                    return await inner_unary(request, context)
                tokens = bind(await admit(context, request), context)
                try:
                    return await inner_unary(request, context)
                finally:
                    unbind(tokens)
            return grpc.unary_unary_rpc_method_handler(unary_unary, **codec)
        if handler.stream_unary is not None:
            inner_client_stream = handler.stream_unary

            async def stream_unary(request_iterator, context):
                if not auth.enabled:
                    return await inner_client_stream(request_iterator, context)
                tokens = bind(await admit(context), context)
                try:
                    return await inner_client_stream(request_iterator, context)
                finally:
                    unbind(tokens)
            return grpc.stream_unary_rpc_method_handler(stream_unary, **codec)

        inner = handler.unary_stream or handler.stream_stream
        is_unary = handler.unary_stream is not None

        async def streaming(request_or_iterator, context):
            tokens = None
            if auth.enabled:
                tokens = bind(await admit(context, request_or_iterator if is_unary else None),
                              context)
            try:
                result = inner(request_or_iterator, context)
                if hasattr(result, "__aiter__"):
                    async for item in result:
                        yield item
                else:
                    await result
            finally:
                if tokens is not None:
                    unbind(tokens)
        if is_unary:
            return grpc.unary_stream_rpc_method_handler(streaming, **codec)
        return grpc.stream_stream_rpc_method_handler(streaming, **codec)


def set_retry_after(exc: errors.ResourceExhausted) -> None:
    """On gRPC, a 429 carries `retry-after` in its trailing metadata."""
    context = _GRPC_CONTEXT.get()
    if context is not None:
        try:
            context.set_trailing_metadata((("retry-after", str(exc.retry_after_s)),))
        except Exception:  # noqa: BLE001 - metadata is best effort
            pass
