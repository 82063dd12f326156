"""The admin API: tenants with quotas and statuses, and API keys. REST outside /api/v1 (like
seed 002's /admin/namespaces) and gRPC `tributary.admin.v1.AdminService` (proto/admin.proto),
both over `AdminOps`. Every route needs an admin credential while auth is on (the REST
middleware in router/auth.py checks it before the handler runs; handlers check again).

    POST   /admin/tenants                      {tenant_id, name?, quotas?, status?}
    GET    /admin/tenants
    GET    /admin/tenants/{tenant_id}
    DELETE /admin/tenants/{tenant_id}          deletes its datasets, then the tenant and its keys
    PUT    /admin/tenants/{tenant_id}/quotas   {max_vectors: 1000, ...} (null: unlimited)
    PUT    /admin/tenants/{tenant_id}/status   {status: active|suspended|read_only|
                                                         pending_deletion}
    GET    /admin/tenants/{tenant_id}/stats
    POST   /admin/keys                         {tenant_id | role: admin, access?, datasets?,
                                                description?} -> the key, shown once
    GET    /admin/keys[?tenant_id=]
    DELETE /admin/keys/{key_id}

Changes go through the meta group (consensus/tenancy.py commands). The serving router refreshes
its catalog before answering, so it enforces the change at once; other routers as soon as their
catalog watch delivers it (p99 under 200 ms at 10,000 datasets, `python -m bench.control_plane`).
"""

from __future__ import annotations

import secrets
import time

from aiohttp import web

from consensus import commands, tenancy
from proto import admin_pb2, admin_pb2_grpc
from proto import deeplake_service_pb2 as pb
from router import auth, cluster_admin, moves_admin
from router.http_common import CORE, read_json_body
from router.quotas import QuotaEnforcer
from tributary import errors, limits, validation

PREFIX = "/admin"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _guarded(request: web.Request):
    return request.app[CORE]


def _check_admin(write: bool) -> None:
    principal = auth.current_principal()
    if principal is not None:
        auth.require_admin(principal, write)


async def _doc(request: web.Request) -> dict:
    return await read_json_body(request)


def tenant_doc(state, record) -> dict:
    return {"tenant_id": record.tenant_id, "name": record.name, "status": record.status,
            "quotas": dict(record.quotas), "created_at_ms": record.created_at_ms,
            "updated_at_ms": record.updated_at_ms or record.created_at_ms,
            "dataset_count": len(state.datasets_of(record.tenant_id))}


def key_doc(record) -> dict:
    """An API key as listed: never its hash."""
    return {"key_id": record.key_id, "tenant_id": record.tenant_id, "role": record.role,
            "access": record.access, "datasets": list(record.datasets),
            "description": record.description, "created_at_ms": record.created_at_ms}


def _quotas_from(value, allow_null: bool) -> dict:
    problems = tenancy.quota_problems(value if value is not None else {}, allow_null)
    if problems:
        raise errors.InvalidArgument("; ".join(problems))
    return dict(value or {})


_KINDS = {str: "a string", list: "a list"}


def _field(doc: dict, name: str, kind: type, default):
    """An optional body field: absent or null means `default`; anything else must be of `kind`,
    so `"description": {}` is a 400 rather than silently no description."""
    value = doc.get(name)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise errors.InvalidArgument(f"{name} must be {_KINDS[kind]}, got "
                                     f"{type(value).__name__}")
    return value


def _status_from(value) -> str:
    if value not in tenancy.STATUSES:
        raise errors.InvalidArgument(f"status must be one of {', '.join(tenancy.STATUSES)}, "
                                     f"got {value!r}")
    return value


def new_api_key() -> tuple[str, str]:
    """(key_id, key): `trb_<12 hex>_<43 url-safe chars>`, 256 random bits after the id."""
    key_id = secrets.token_hex(6)
    return key_id, f"trb_{key_id}_{secrets.token_urlsafe(32)}"


class AdminOps:
    """The admin operations, shared by the REST routes and the gRPC AdminService. Arguments are
    plain values and dicts; answers are the REST JSON documents."""

    def __init__(self, guarded):
        self.core = getattr(guarded, "raw", guarded)
        quotas = getattr(guarded, "quotas", None)
        if quotas is None:
            quotas = QuotaEnforcer(self.core)
        self.quotas = quotas

    async def _record(self, tenant_id: str):
        tenant_id = validation.check_name(tenant_id, "tenant id")
        catalog = self.core.catalog
        record = catalog.state.tenants.get(tenant_id)
        if record is None:
            await catalog.refresh(linearizable=True)
            record = catalog.state.tenants.get(tenant_id)
        if record is None:
            raise errors.NotFound(f"tenant '{tenant_id}' not found")
        return record

    async def _answer(self, tenant_id: str) -> dict:
        await self.core.catalog.refresh()
        state = self.core.catalog.state
        record = state.tenants.get(tenant_id)
        if record is None:
            raise errors.Unavailable(f"tenant '{tenant_id}' is not in the catalog yet; retry")
        return {"tenant": tenant_doc(state, record)}

    async def create_tenant(self, doc: dict) -> dict:
        unknown = sorted(set(doc) - {"tenant_id", "id", "name", "quotas", "status"})
        if unknown:
            raise errors.InvalidArgument(f"unknown field(s) {', '.join(unknown)}")
        tenant_id = validation.check_name(
            _field(doc, "tenant_id", str, "") or _field(doc, "id", str, ""), "tenant id")
        name = _field(doc, "name", str, "")
        if len(name.encode("utf-8")) > limits.name_bytes_max:
            raise errors.InvalidArgument(f"name must be a string of at most "
                                         f"{limits.name_bytes_max} bytes")
        quotas = {k: v for k, v in _quotas_from(doc.get("quotas"), allow_null=True).items()
                  if v is not None}
        status = _status_from(_field(doc, "status", str, "") or tenancy.ACTIVE)
        await self.core.meta.propose(commands.ProvisionTenant(
            tenant_id=tenant_id, name=name, quotas=quotas, status=status, at_ms=_now_ms()))
        return await self._answer(tenant_id)

    async def list_tenants(self) -> dict:
        await self.core.catalog.refresh(linearizable=True)
        state = self.core.catalog.state
        tenants = [tenant_doc(state, r) for _, r in sorted(state.tenants.items())]
        return {"tenants": tenants, "total_count": len(tenants)}

    async def get_tenant(self, tenant_id: str) -> dict:
        record = await self._record(tenant_id)
        return {"tenant": tenant_doc(self.core.catalog.state, record)}

    async def update_quotas(self, tenant_id: str, quotas: dict) -> dict:
        quotas = _quotas_from(quotas, allow_null=True)
        record = await self._record(tenant_id)
        await self.core.meta.propose(commands.SetTenantQuotas(
            tenant_id=record.tenant_id, quotas=quotas, at_ms=_now_ms()))
        return await self._answer(record.tenant_id)

    async def update_status(self, tenant_id: str, status) -> dict:
        status = _status_from(status)
        record = await self._record(tenant_id)
        await self.core.meta.propose(commands.SetTenantStatus(
            tenant_id=record.tenant_id, status=status, at_ms=_now_ms()))
        return await self._answer(record.tenant_id)

    async def tenant_stats(self, tenant_id: str) -> dict:
        record = await self._record(tenant_id)
        return await self.quotas.tenant_stats(record.tenant_id)

    async def delete_tenant(self, tenant_id: str) -> dict:
        """Marks the tenant pending_deletion (no new writes or datasets), deletes its datasets,
        then removes it and revokes its keys. A retry after a failure part-way resumes."""
        record = await self._record(tenant_id)
        tenant_id, core = record.tenant_id, self.core
        if record.status != tenancy.PENDING_DELETION:
            await core.meta.propose(commands.SetTenantStatus(
                tenant_id=tenant_id, status=tenancy.PENDING_DELETION, at_ms=_now_ms()))
        await core.catalog.refresh(linearizable=True)
        deleted = 0
        for dataset in core.catalog.state.datasets_of(tenant_id):
            try:
                await core.delete_dataset(pb.DeleteDatasetRequest(dataset_id=dataset.name,
                                                                  tenant_id=tenant_id))
                deleted += 1
            except errors.NotFound:
                pass
        result = await core.meta.propose(commands.DeleteTenant(tenant_id=tenant_id,
                                                               at_ms=_now_ms()))
        await core.catalog.refresh()
        return {"deleted": True, "tenant_id": tenant_id, "datasets_deleted": deleted,
                "revoked_keys": result.get("revoked_keys", [])}

    async def create_key(self, doc: dict) -> dict:
        unknown = sorted(set(doc) - {"tenant_id", "role", "access", "datasets", "description"})
        if unknown:
            raise errors.InvalidArgument(f"unknown field(s) {', '.join(unknown)}")
        role = _field(doc, "role", str, "") or tenancy.ROLE_TENANT
        if role not in tenancy.ROLES:
            raise errors.InvalidArgument(f"role must be one of {', '.join(tenancy.ROLES)}")
        access = _field(doc, "access", str, "") or tenancy.READ_WRITE_ACCESS
        if access not in tenancy.ACCESSES:
            raise errors.InvalidArgument(f"access must be one of {', '.join(tenancy.ACCESSES)}")
        datasets = _field(doc, "datasets", list, [])
        if len(datasets) > limits.api_key_datasets_max:
            raise errors.InvalidArgument(f"datasets must be a list of at most "
                                         f"{limits.api_key_datasets_max} dataset names")
        datasets = [validation.check_name(d) for d in datasets]
        description = _field(doc, "description", str, "")
        if len(description.encode("utf-8")) > limits.api_key_description_bytes_max:
            raise errors.InvalidArgument(f"description must be a string of at most "
                                         f"{limits.api_key_description_bytes_max} bytes")
        tenant_id = _field(doc, "tenant_id", str, "")
        if role == tenancy.ROLE_ADMIN:
            if tenant_id or datasets:
                raise errors.InvalidArgument("an admin key names no tenant_id and no datasets")
        else:
            await self._record(tenant_id)
        key_id, key = new_api_key()
        at_ms = _now_ms()
        await self.core.meta.propose(commands.CreateApiKey(
            key_id=key_id, key_hash=auth.sha256_hex(key), tenant_id=tenant_id, role=role,
            access=access, datasets=tuple(datasets), description=description, at_ms=at_ms))
        await self.core.catalog.refresh()
        return {"key": key, "key_id": key_id, "tenant_id": tenant_id, "role": role,
                "access": access, "datasets": datasets, "description": description,
                "created_at_ms": at_ms,
                "note": "store the key now: the cluster keeps only its sha256"}

    async def list_keys(self, tenant_id: str | None) -> dict:
        await self.core.catalog.refresh(linearizable=True)
        keys = [key_doc(k) for _, k in sorted(self.core.catalog.state.api_keys.items())
                if tenant_id is None or k.tenant_id == tenant_id]
        return {"keys": keys, "total_count": len(keys)}

    async def revoke_key(self, key_id: str) -> dict:
        if not key_id or len(key_id) > limits.name_bytes_max:
            raise errors.InvalidArgument("key_id must be 1 to 255 characters")
        await self.core.meta.propose(commands.RevokeApiKey(key_id=key_id, at_ms=_now_ms()))
        await self.core.catalog.refresh()
        return {"revoked": True, "key_id": key_id}


# ---- REST ---------------------------------------------------------------------------------------

def _ops(request: web.Request) -> AdminOps:
    return AdminOps(_guarded(request))


async def create_tenant(request: web.Request) -> web.Response:
    _check_admin(write=True)
    answer = await _ops(request).create_tenant(await _doc(request))
    return web.json_response(answer, status=201)


async def list_tenants(request: web.Request) -> web.Response:
    _check_admin(write=False)
    return web.json_response(await _ops(request).list_tenants())


async def get_tenant(request: web.Request) -> web.Response:
    _check_admin(write=False)
    return web.json_response(await _ops(request).get_tenant(request.match_info["tenant_id"]))


async def update_quotas(request: web.Request) -> web.Response:
    _check_admin(write=True)
    doc = await _doc(request)
    # Seed 002 sends the quotas flat; {"quotas": {...}} is accepted too.
    quotas = doc["quotas"] if set(doc) == {"quotas"} else doc
    return web.json_response(await _ops(request).update_quotas(
        request.match_info["tenant_id"], quotas))


async def update_status(request: web.Request) -> web.Response:
    _check_admin(write=True)
    doc = await _doc(request)
    if set(doc) != {"status"}:
        raise errors.InvalidArgument("the body must be {\"status\": ...}")
    return web.json_response(await _ops(request).update_status(
        request.match_info["tenant_id"], doc["status"]))


async def tenant_stats(request: web.Request) -> web.Response:
    _check_admin(write=False)
    return web.json_response(await _ops(request).tenant_stats(request.match_info["tenant_id"]))


async def delete_tenant(request: web.Request) -> web.Response:
    _check_admin(write=True)
    return web.json_response(await _ops(request).delete_tenant(request.match_info["tenant_id"]))


async def create_key(request: web.Request) -> web.Response:
    _check_admin(write=True)
    answer = await _ops(request).create_key(await _doc(request))
    return web.json_response(answer, status=201)


async def list_keys(request: web.Request) -> web.Response:
    _check_admin(write=False)
    return web.json_response(await _ops(request).list_keys(request.query.get("tenant_id")))


async def revoke_key(request: web.Request) -> web.Response:
    _check_admin(write=True)
    return web.json_response(await _ops(request).revoke_key(request.match_info["key_id"]))


def add_routes(app: web.Application) -> None:
    app.router.add_post(f"{PREFIX}/tenants", create_tenant)
    app.router.add_get(f"{PREFIX}/tenants", list_tenants)
    app.router.add_get(f"{PREFIX}/tenants/{{tenant_id}}", get_tenant)
    app.router.add_delete(f"{PREFIX}/tenants/{{tenant_id}}", delete_tenant)
    app.router.add_put(f"{PREFIX}/tenants/{{tenant_id}}/quotas", update_quotas)
    app.router.add_put(f"{PREFIX}/tenants/{{tenant_id}}/status", update_status)
    app.router.add_get(f"{PREFIX}/tenants/{{tenant_id}}/stats", tenant_stats)
    app.router.add_post(f"{PREFIX}/keys", create_key)
    app.router.add_get(f"{PREFIX}/keys", list_keys)
    app.router.add_delete(f"{PREFIX}/keys/{{key_id}}", revoke_key)
    cluster_admin.add_routes(app)
    moves_admin.add_routes(app)


# ---- gRPC (proto/admin.proto) ------------------------------------------------------------------

def quotas_to_pb(quotas: dict) -> admin_pb2.TenantQuotas:
    message = admin_pb2.TenantQuotas()
    for name, value in quotas.items():
        setattr(message, name, float(value) if name in tenancy.FRACTIONAL_QUOTAS
                else int(value))
    return message


def quotas_from_pb(message: admin_pb2.TenantQuotas) -> dict:
    return {name: getattr(message, name) for name in tenancy.QUOTA_NAMES
            if message.HasField(name)}


def tenant_to_pb(doc: dict) -> admin_pb2.Tenant:
    return admin_pb2.Tenant(
        tenant_id=doc["tenant_id"], name=doc["name"], status=doc["status"],
        quotas=quotas_to_pb(doc["quotas"]), created_at_ms=doc["created_at_ms"],
        updated_at_ms=doc["updated_at_ms"], dataset_count=doc["dataset_count"])


def key_to_pb(doc: dict) -> admin_pb2.ApiKey:
    return admin_pb2.ApiKey(
        key_id=doc["key_id"], tenant_id=doc["tenant_id"], role=doc["role"],
        access=doc["access"], datasets=doc["datasets"], description=doc["description"],
        created_at_ms=doc["created_at_ms"])


def _grpc(write: bool):
    """Admin check (again; the interceptor checked first) and error mapping for one RPC."""
    def wrap(fn):
        async def handler(self, request, context):
            try:
                _check_admin(write)
                return await fn(self, request)
            except errors.TributaryError as exc:
                await context.abort(exc.grpc_code, exc.message)
        handler.__name__ = fn.__name__
        return handler
    return wrap


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, guarded):
        self.ops = AdminOps(guarded)

    @_grpc(write=True)
    async def CreateTenant(self, request):
        doc = {"tenant_id": request.tenant_id, "name": request.name,
               "quotas": quotas_from_pb(request.quotas), "status": request.status}
        return admin_pb2.TenantResponse(tenant=tenant_to_pb(
            (await self.ops.create_tenant(doc))["tenant"]))

    @_grpc(write=False)
    async def GetTenant(self, request):
        return admin_pb2.TenantResponse(tenant=tenant_to_pb(
            (await self.ops.get_tenant(request.tenant_id))["tenant"]))

    @_grpc(write=False)
    async def ListTenants(self, request):
        answer = await self.ops.list_tenants()
        return admin_pb2.ListTenantsResponse(
            tenants=[tenant_to_pb(t) for t in answer["tenants"]],
            total_count=answer["total_count"])

    @_grpc(write=True)
    async def DeleteTenant(self, request):
        answer = await self.ops.delete_tenant(request.tenant_id)
        return admin_pb2.DeleteTenantResponse(deleted=True,
                                              datasets_deleted=answer["datasets_deleted"],
                                              revoked_keys=answer["revoked_keys"])

    @_grpc(write=True)
    async def UpdateTenantQuotas(self, request):
        quotas: dict = quotas_from_pb(request.quotas)
        for name in request.clear:
            quotas[name] = None
        return admin_pb2.TenantResponse(tenant=tenant_to_pb(
            (await self.ops.update_quotas(request.tenant_id, quotas))["tenant"]))

    @_grpc(write=True)
    async def UpdateTenantStatus(self, request):
        return admin_pb2.TenantResponse(tenant=tenant_to_pb(
            (await self.ops.update_status(request.tenant_id, request.status))["tenant"]))

    @_grpc(write=False)
    async def GetTenantStats(self, request):
        doc = await self.ops.tenant_stats(request.tenant_id)
        return admin_pb2.GetTenantStatsResponse(
            tenant_id=doc["tenant_id"], status=doc["status"],
            dataset_count=doc["dataset_count"], vector_count=doc["vector_count"],
            storage_bytes=doc["storage_bytes"], quotas=quotas_to_pb(doc["quotas"]),
            quota_utilization=doc["quota_utilization"], live_routers=doc["live_routers"],
            this_router=doc["this_router"])

    @_grpc(write=True)
    async def CreateApiKey(self, request):
        doc = {"tenant_id": request.tenant_id, "role": request.role, "access": request.access,
               "datasets": list(request.datasets), "description": request.description}
        answer = await self.ops.create_key(doc)
        return admin_pb2.CreateApiKeyResponse(key=answer["key"], api_key=key_to_pb(answer))

    @_grpc(write=False)
    async def ListApiKeys(self, request):
        answer = await self.ops.list_keys(request.tenant_id or None)
        return admin_pb2.ListApiKeysResponse(keys=[key_to_pb(k) for k in answer["keys"]],
                                             total_count=answer["total_count"])

    @_grpc(write=True)
    async def RevokeApiKey(self, request):
        answer = await self.ops.revoke_key(request.key_id)
        return admin_pb2.RevokeApiKeyResponse(revoked=True, key_id=answer["key_id"])


def add_grpc_service(server, guarded) -> str:
    """Registers AdminService; returns its full name (for reflection)."""
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminService(guarded), server)
    return admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name


# ---- OpenAPI ------------------------------------------------------------------------------------

_QUOTAS_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "description": "Absent or null: unlimited. Exceeding one is a 429 with Retry-After.",
    "properties": {name: {"type": ["number", "null"] if name in tenancy.FRACTIONAL_QUOTAS
                          else ["integer", "null"], "minimum": 0, "maximum": 2 ** 62}
                   for name in tenancy.QUOTA_NAMES}}
_STATUS_SCHEMA = {"type": "string", "enum": list(tenancy.STATUSES)}
_TENANT_SCHEMA = {"type": "object", "properties": {
    "tenant_id": {"type": "string"}, "name": {"type": "string"}, "status": _STATUS_SCHEMA,
    "quotas": _QUOTAS_SCHEMA, "created_at_ms": {"type": "integer"},
    "updated_at_ms": {"type": "integer"}, "dataset_count": {"type": "integer"}}}
_KEY_SCHEMA = {"type": "object", "properties": {
    "key_id": {"type": "string"}, "tenant_id": {"type": "string"},
    "role": {"type": "string", "enum": list(tenancy.ROLES)},
    "access": {"type": "string", "enum": list(tenancy.ACCESSES)},
    "datasets": {"type": "array", "items": {"type": "string"}},
    "description": {"type": "string"}, "created_at_ms": {"type": "integer"}}}


def extend_openapi(operations: dict, status_text: dict, op) -> None:
    """Adds the admin operations and the 401/403/429 statuses to router/openapi.py's table, and
    marks the operations auth.DEFAULT_EXEMPT serves without credentials (`security: []`).
    Called once by router/openapi.py (which passes its table, status texts and `_op`)."""
    status_text.setdefault(401, "Unauthenticated: missing or invalid credentials (an API key "
                                "or JWT in 'Authorization: Bearer' or an 'api-key' header).")
    status_text.setdefault(403, "Permission denied (PermissionDenied): the credential's "
                                "tenant, datasets or read-only access do not cover the "
                                "request, or the tenant is suspended / read-only.")
    status_text.setdefault(429, "A tenant quota or rate limit was exceeded "
                                "(ResourceExhausted, retriable); see the Retry-After header.")
    exempt = set(auth.DEFAULT_EXEMPT)
    for (_method, path), spec in operations.items():
        if path in exempt:
            spec["security"] = []  # overrides the document's top-level requirement
            continue
        extra = {401, 403} | ({429} if path.startswith("/api/v1/") else set())
        spec["errors"] = tuple(sorted(set(spec["errors"]) | extra))
    admin = (400, 401, 403, 500, 503)
    tenant_body = {"type": "object", "required": ["tenant_id"], "additionalProperties": False,
                   "properties": {
        "tenant_id": validation.name_json_schema("a tenant id"),
        "id": {"type": "string", "description": "accepted for tenant_id when that is empty"},
        "name": validation.bytes_json_schema(limits.name_bytes_max, "a display name"),
        "quotas": _QUOTAS_SCHEMA, "status": _STATUS_SCHEMA}}
    tenant_answer = {"type": "object", "properties": {"tenant": _TENANT_SCHEMA}}
    cluster_admin.extend_openapi(operations, op)
    moves_admin.extend_openapi(operations, op)
    operations.update({
        ("POST", f"{PREFIX}/tenants"): op(
            "createTenant", "admin", "Create a tenant with quotas", body=tenant_body, ok=201,
            ok_schema=tenant_answer, ok_text="Created", errors_=admin + (409, 413)),
        ("GET", f"{PREFIX}/tenants"): op(
            "listTenants", "admin", "List tenants", errors_=admin,
            ok_schema={"type": "object", "properties": {
                "tenants": {"type": "array", "items": _TENANT_SCHEMA},
                "total_count": {"type": "integer"}}}),
        ("GET", f"{PREFIX}/tenants/{{tenant_id}}"): op(
            "getTenant", "admin", "Get a tenant", ok_schema=tenant_answer,
            errors_=admin + (404,)),
        ("DELETE", f"{PREFIX}/tenants/{{tenant_id}}"): op(
            "deleteTenant", "admin", "Delete a tenant, its datasets and its keys",
            description="Sets pending_deletion first, so nothing new is written meanwhile.",
            errors_=admin + (404,), ok_schema={"type": "object"}),
        ("PUT", f"{PREFIX}/tenants/{{tenant_id}}/quotas"): op(
            "updateTenantQuotas", "admin", "Change some quotas (null: unlimited)",
            body=_QUOTAS_SCHEMA, ok_schema=tenant_answer, errors_=admin + (404, 413)),
        ("PUT", f"{PREFIX}/tenants/{{tenant_id}}/status"): op(
            "updateTenantStatus", "admin", "Set active, suspended, read_only or "
                                           "pending_deletion",
            body={"type": "object", "required": ["status"], "additionalProperties": False,
                  "properties": {"status": _STATUS_SCHEMA}},
            ok_schema=tenant_answer, errors_=admin + (404, 413)),
        ("GET", f"{PREFIX}/tenants/{{tenant_id}}/stats"): op(
            "getTenantStats", "admin", "Usage against quotas and this router's counters",
            ok_schema={"type": "object"}, errors_=admin + (404,)),
        ("POST", f"{PREFIX}/keys"): op(
            "createApiKey", "admin", "Create an API key (returned once)",
            description="Only the key's sha256 is stored.",
            body={"type": "object", "additionalProperties": False, "properties": {
                "tenant_id": {"type": "string"},
                "role": {"type": "string", "enum": list(tenancy.ROLES)},
                "access": {"type": "string", "enum": list(tenancy.ACCESSES)},
                "datasets": {"type": "array", "items": validation.name_json_schema(),
                             "maxItems": limits.api_key_datasets_max},
                "description": validation.bytes_json_schema(
                    limits.api_key_description_bytes_max, "a description")},
                # A tenant key names its tenant; an admin key names no tenant and no datasets.
                "anyOf": [
                    {"required": ["tenant_id"], "properties": {
                        "tenant_id": validation.name_json_schema("a tenant id"),
                        "role": {"const": tenancy.ROLE_TENANT}}},
                    {"required": ["role"], "properties": {
                        "role": {"const": tenancy.ROLE_ADMIN},
                        "tenant_id": {"maxLength": 0}, "datasets": {"maxItems": 0}}}]},
            ok=201, ok_text="Created", errors_=admin + (404, 413),
            ok_schema={"allOf": [_KEY_SCHEMA, {"type": "object", "properties": {
                "key": {"type": "string"}}}]}),
        ("GET", f"{PREFIX}/keys"): op(
            "listApiKeys", "admin", "List API keys (never the keys or their hashes)",
            errors_=admin, ok_schema={"type": "object", "properties": {
                "keys": {"type": "array", "items": _KEY_SCHEMA},
                "total_count": {"type": "integer"}}}),
        ("DELETE", f"{PREFIX}/keys/{{key_id}}"): op(
            "revokeApiKey", "admin", "Revoke an API key", errors_=admin + (404,),
            ok_schema={"type": "object"}),
    })
