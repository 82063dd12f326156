"""The admin API (REST, outside /api/v1 like seed 002's /admin/namespaces): tenants with quotas
and statuses, and API keys. Every route needs an admin credential while auth is on (the REST
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
its catalog before answering, so it enforces the change at once; other routers within
catalog_refresh_interval_ms (1 s).
"""

from __future__ import annotations

import secrets
import time

from aiohttp import web

from consensus import commands, tenancy
from proto import deeplake_service_pb2 as pb
from router import auth
from tributary import errors, limits, validation

PREFIX = "/admin"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _guarded(request: web.Request):
    from router.rest import CORE
    return request.app[CORE]


def _core(request: web.Request):
    guarded = _guarded(request)
    return getattr(guarded, "raw", guarded)


def _check_admin(write: bool) -> None:
    principal = auth.current_principal()
    if principal is not None:
        auth.require_admin(principal, write)


async def _doc(request: web.Request) -> dict:
    from router.rest import _body
    return await _body(request)


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


def _status_from(value) -> str:
    if value not in tenancy.STATUSES:
        raise errors.InvalidArgument(f"status must be one of {', '.join(tenancy.STATUSES)}, "
                                     f"got {value!r}")
    return value


async def _tenant(request: web.Request):
    core = _core(request)
    tenant_id = validation.check_name(request.match_info["tenant_id"], "tenant id")
    record = core.catalog.state.tenants.get(tenant_id)
    if record is None:
        await core.catalog.refresh(linearizable=True)
        record = core.catalog.state.tenants.get(tenant_id)
    if record is None:
        raise errors.NotFound(f"tenant '{tenant_id}' not found")
    return core, record


async def _answer_tenant(core, tenant_id: str, status: int = 200) -> web.Response:
    await core.catalog.refresh()
    state = core.catalog.state
    record = state.tenants.get(tenant_id)
    if record is None:
        raise errors.Unavailable(f"tenant '{tenant_id}' is not in the catalog yet; retry")
    return web.json_response({"tenant": tenant_doc(state, record)}, status=status)


# ---- tenants ------------------------------------------------------------------------------------

async def create_tenant(request: web.Request) -> web.Response:
    _check_admin(write=True)
    doc = await _doc(request)
    unknown = sorted(set(doc) - {"tenant_id", "id", "name", "quotas", "status"})
    if unknown:
        raise errors.InvalidArgument(f"unknown field(s) {', '.join(unknown)}")
    tenant_id = validation.check_name(doc.get("tenant_id", doc.get("id", "")), "tenant id")
    name = doc.get("name") or ""
    if not isinstance(name, str) or len(name.encode("utf-8")) > limits.name_bytes_max:
        raise errors.InvalidArgument(f"name must be a string of at most "
                                     f"{limits.name_bytes_max} bytes")
    quotas = {k: v for k, v in _quotas_from(doc.get("quotas"), allow_null=True).items()
              if v is not None}
    status = _status_from(doc.get("status", tenancy.ACTIVE))
    core = _core(request)
    await core.meta.propose(commands.ProvisionTenant(tenant_id=tenant_id, name=name,
                                                     quotas=quotas, status=status,
                                                     at_ms=_now_ms()))
    return await _answer_tenant(core, tenant_id, status=201)


async def list_tenants(request: web.Request) -> web.Response:
    _check_admin(write=False)
    core = _core(request)
    await core.catalog.refresh(linearizable=True)
    state = core.catalog.state
    tenants = [tenant_doc(state, r) for _, r in sorted(state.tenants.items())]
    return web.json_response({"tenants": tenants, "total_count": len(tenants)})


async def get_tenant(request: web.Request) -> web.Response:
    _check_admin(write=False)
    core, record = await _tenant(request)
    return web.json_response({"tenant": tenant_doc(core.catalog.state, record)})


async def update_quotas(request: web.Request) -> web.Response:
    _check_admin(write=True)
    doc = await _doc(request)
    core, record = await _tenant(request)
    # Seed 002 sends the quotas flat; {"quotas": {...}} is accepted too.
    quotas = _quotas_from(doc["quotas"] if set(doc) == {"quotas"} else doc, allow_null=True)
    await core.meta.propose(commands.SetTenantQuotas(tenant_id=record.tenant_id, quotas=quotas,
                                                     at_ms=_now_ms()))
    return await _answer_tenant(core, record.tenant_id)


async def update_status(request: web.Request) -> web.Response:
    _check_admin(write=True)
    doc = await _doc(request)
    if set(doc) != {"status"}:
        raise errors.InvalidArgument("the body must be {\"status\": ...}")
    status = _status_from(doc["status"])
    core, record = await _tenant(request)
    await core.meta.propose(commands.SetTenantStatus(tenant_id=record.tenant_id, status=status,
                                                     at_ms=_now_ms()))
    return await _answer_tenant(core, record.tenant_id)


async def tenant_stats(request: web.Request) -> web.Response:
    _check_admin(write=False)
    core, record = await _tenant(request)
    quotas = getattr(_guarded(request), "quotas", None)
    if quotas is None:
        from router.quotas import QuotaEnforcer
        quotas = QuotaEnforcer(core)
    return web.json_response(await quotas.tenant_stats(record.tenant_id))


async def delete_tenant(request: web.Request) -> web.Response:
    """Marks the tenant pending_deletion (no new writes or datasets), deletes its datasets, then
    removes it and revokes its keys. A retry after a failure part-way resumes."""
    _check_admin(write=True)
    core, record = await _tenant(request)
    tenant_id = record.tenant_id
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
    return web.json_response({"deleted": True, "tenant_id": tenant_id,
                              "datasets_deleted": deleted,
                              "revoked_keys": result.get("revoked_keys", [])})


# ---- API keys -----------------------------------------------------------------------------------

def new_api_key() -> tuple[str, str]:
    """(key_id, key): `trb_<12 hex>_<43 url-safe chars>`, 256 random bits after the id."""
    key_id = secrets.token_hex(6)
    return key_id, f"trb_{key_id}_{secrets.token_urlsafe(32)}"


async def create_key(request: web.Request) -> web.Response:
    _check_admin(write=True)
    doc = await _doc(request)
    unknown = sorted(set(doc) - {"tenant_id", "role", "access", "datasets", "description"})
    if unknown:
        raise errors.InvalidArgument(f"unknown field(s) {', '.join(unknown)}")
    role = doc.get("role", tenancy.ROLE_TENANT)
    if role not in tenancy.ROLES:
        raise errors.InvalidArgument(f"role must be one of {', '.join(tenancy.ROLES)}")
    access = doc.get("access", tenancy.READ_WRITE_ACCESS)
    if access not in tenancy.ACCESSES:
        raise errors.InvalidArgument(f"access must be one of {', '.join(tenancy.ACCESSES)}")
    datasets = doc.get("datasets") or []
    if not isinstance(datasets, list) or len(datasets) > limits.api_key_datasets_max:
        raise errors.InvalidArgument(f"datasets must be a list of at most "
                                     f"{limits.api_key_datasets_max} dataset names")
    datasets = [validation.check_name(d) for d in datasets]
    description = doc.get("description") or ""
    if not isinstance(description, str) or \
            len(description.encode("utf-8")) > limits.api_key_description_bytes_max:
        raise errors.InvalidArgument(f"description must be a string of at most "
                                     f"{limits.api_key_description_bytes_max} bytes")
    tenant_id = doc.get("tenant_id") or ""
    if role == tenancy.ROLE_ADMIN:
        if tenant_id or datasets:
            raise errors.InvalidArgument("an admin key names no tenant_id and no datasets")
    else:
        validation.check_name(tenant_id, "tenant id")
    core = _core(request)
    if role == tenancy.ROLE_TENANT and tenant_id not in core.catalog.state.tenants:
        await core.catalog.refresh(linearizable=True)
        if tenant_id not in core.catalog.state.tenants:
            raise errors.NotFound(f"tenant '{tenant_id}' not found; create it with "
                                  "POST /admin/tenants")
    key_id, key = new_api_key()
    at_ms = _now_ms()
    await core.meta.propose(commands.CreateApiKey(
        key_id=key_id, key_hash=auth.sha256_hex(key), tenant_id=tenant_id, role=role,
        access=access, datasets=tuple(datasets), description=description, at_ms=at_ms))
    await core.catalog.refresh()
    return web.json_response({
        "key": key, "key_id": key_id, "tenant_id": tenant_id, "role": role, "access": access,
        "datasets": datasets, "description": description, "created_at_ms": at_ms,
        "note": "store the key now: the cluster keeps only its sha256"}, status=201)


async def list_keys(request: web.Request) -> web.Response:
    _check_admin(write=False)
    core = _core(request)
    await core.catalog.refresh(linearizable=True)
    tenant_id = request.query.get("tenant_id")
    keys = [key_doc(k) for _, k in sorted(core.catalog.state.api_keys.items())
            if tenant_id is None or k.tenant_id == tenant_id]
    return web.json_response({"keys": keys, "total_count": len(keys)})


async def revoke_key(request: web.Request) -> web.Response:
    _check_admin(write=True)
    core = _core(request)
    key_id = request.match_info["key_id"]
    if len(key_id) > limits.name_bytes_max:
        raise errors.InvalidArgument("key_id is too long")
    await core.meta.propose(commands.RevokeApiKey(key_id=key_id, at_ms=_now_ms()))
    await core.catalog.refresh()
    return web.json_response({"revoked": True, "key_id": key_id})


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


# ---- OpenAPI ------------------------------------------------------------------------------------

_QUOTAS_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "description": "Absent or null: unlimited. Exceeding one is a 429 with Retry-After.",
    "properties": {name: {"type": ["number", "null"] if name in tenancy.FRACTIONAL_QUOTAS
                          else ["integer", "null"], "minimum": 0}
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
    """Adds the admin operations and the 401/403/429 statuses to router/openapi.py's table.
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
            continue
        extra = {401, 403} | ({429} if path.startswith("/api/v1/") else set())
        spec["errors"] = tuple(sorted(set(spec["errors"]) | extra))
    admin = (400, 401, 403, 500, 503)
    tenant_body = {"type": "object", "required": ["tenant_id"], "properties": {
        "tenant_id": {"type": "string"}, "id": {"type": "string",
                                                "description": "accepted for tenant_id"},
        "name": {"type": "string"}, "quotas": _QUOTAS_SCHEMA, "status": _STATUS_SCHEMA}}
    tenant_answer = {"type": "object", "properties": {"tenant": _TENANT_SCHEMA}}
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
            body={"type": "object", "required": ["status"],
                  "properties": {"status": _STATUS_SCHEMA}},
            ok_schema=tenant_answer, errors_=admin + (404, 413)),
        ("GET", f"{PREFIX}/tenants/{{tenant_id}}/stats"): op(
            "getTenantStats", "admin", "Usage against quotas and this router's counters",
            ok_schema={"type": "object"}, errors_=admin + (404,)),
        ("POST", f"{PREFIX}/keys"): op(
            "createApiKey", "admin", "Create an API key (returned once)",
            description="Only the key's sha256 is stored.",
            body={"type": "object", "properties": {
                "tenant_id": {"type": "string"},
                "role": {"type": "string", "enum": list(tenancy.ROLES)},
                "access": {"type": "string", "enum": list(tenancy.ACCESSES)},
                "datasets": {"type": "array", "items": {"type": "string"}},
                "description": {"type": "string"}}},
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
