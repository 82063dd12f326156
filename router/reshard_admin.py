"""Shard splits over the admin API (`tributary admin datasets reshard NAME --shards 2N`).
Admin credential. The split itself is Raft commands (consensus/reshard.py) that the nodes build
children for (node/split.py) and the meta leader switches (consensus/failover.py), so it goes
on whatever happens to this router.

    POST   /api/v1/admin/datasets/{dataset_id}/reshard  {shards}  start: 202 with the progress
    GET    /api/v1/admin/datasets/{dataset_id}/reshard            progress (state building |
                                                                  done | none, rate, ETA)
    DELETE /api/v1/admin/datasets/{dataset_id}/reshard            cancel: nothing changes for
                                                                  readers or writers

The tenant is the X-Tenant-Id header (or the tenant_id query parameter), as for every dataset
route; the default tenant when absent.
"""

from __future__ import annotations

import time

from aiohttp import web

from consensus import commands, reshard
from router import auth
from router.http_common import read_json_body, request_tenant, served_core
from tributary import errors, limits, validation

PREFIX = "/api/v1/admin"
ROUTE = f"{PREFIX}/datasets/{{dataset_id}}/reshard"


def _now_ms() -> int:
    return int(time.time() * 1000)


def progress_doc(record, state, now_ms: int) -> dict:
    """The dataset's split as a document: `building` with children built of those needed, a
    rate (children per second since the start) and an ETA; `done` once the count is switched
    (the last split's epoch); `none` when no split is in progress or ever happened."""
    doc = {"dataset": record.name, "tenant_id": record.tenant_id,
           "shard_count": record.shard_count, "epoch": record.epoch,
           "split_epoch": record.split_epoch}
    building = reshard.progress(state, record.uuid)
    if building is None:
        return {**doc, "state": "done" if record.split_epoch else "none"}
    elapsed_s = max(0.0, (now_ms - building["started_at_ms"]) / 1000)
    built, needed = building["children_built"], building["children_needed"]
    rate = built / elapsed_s if elapsed_s > 0 else 0.0
    eta = (needed - built) / rate if rate > 0 else None
    return {**doc, **{k: v for k, v in building.items() if k != "dataset_uuid"},
            "state": "building", "elapsed_s": round(elapsed_s, 3),
            "rate_children_s": round(rate, 3),
            "eta_s": None if eta is None else round(eta, 3)}


async def _record(core, tenant_id: str, name: str):
    await core.catalog.refresh(linearizable=True)
    return await core.dataset(tenant_id, name)


async def start(core, tenant_id: str, name: str, doc: dict) -> dict:
    """Proposes StartReshard after the same checks the state machine makes (so a refusal says
    why, and changes nothing)."""
    unknown = sorted(set(doc) - {"shards"})
    if unknown:
        raise errors.InvalidArgument(f"unknown field(s) {unknown}; the body is {{\"shards\": "
                                     "2N}")
    shards = doc.get("shards")
    if isinstance(shards, float) and shards.is_integer():
        shards = int(shards)
    if isinstance(shards, bool) or not isinstance(shards, int):
        raise errors.InvalidArgument("'shards' must be an integer: twice the current count")
    record = await _record(core, tenant_id, name)
    state = core.catalog.state
    refused = reshard.reshard_refusal(state, record, shards)
    if refused:
        raise _error(refused["error"])
    # The state machine checks again (a refusal raises, and changes nothing).
    await core.meta.propose(commands.StartReshard(record.uuid, shards, _now_ms()))
    await core.catalog.refresh()
    return progress_doc(core.catalog.state.datasets.get(record.uuid, record),
                        core.catalog.state, _now_ms())


def _error(error: dict) -> errors.TributaryError:
    cls = getattr(errors, error.get("type", ""), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.TributaryError)):
        cls = errors.Internal
    return cls(error.get("message", ""))


async def status(core, tenant_id: str, name: str) -> dict:
    record = await _record(core, tenant_id, name)
    return progress_doc(record, core.catalog.state, _now_ms())


async def cancel(core, tenant_id: str, name: str) -> dict:
    record = await _record(core, tenant_id, name)
    if record.uuid not in core.catalog.state.reshards:
        raise errors.NotFound(f"dataset '{name}' has no reshard in progress")
    await core.meta.propose(commands.CancelReshard(record.uuid, _now_ms()))
    await core.catalog.refresh()
    return {**progress_doc(core.catalog.state.datasets.get(record.uuid, record),
                           core.catalog.state, _now_ms()), "cancelled": True}


# ---- REST -------------------------------------------------------------------------------------

def _tenant(request: web.Request) -> str:
    tenant = request_tenant(request)
    if tenant:
        validation.check_name(tenant, "tenant id")
    return tenant


async def post_reshard(request: web.Request) -> web.Response:
    auth.require_admin_here(True)
    doc = await read_json_body(request)
    if not isinstance(doc, dict):
        raise errors.InvalidArgument("the body must be a JSON object: {\"shards\": 2N}")
    return web.json_response(await start(served_core(request), _tenant(request),
                                         request.match_info["dataset_id"], doc), status=202)


async def get_reshard(request: web.Request) -> web.Response:
    auth.require_admin_here(False)
    return web.json_response(await status(served_core(request), _tenant(request),
                                          request.match_info["dataset_id"]))


async def delete_reshard(request: web.Request) -> web.Response:
    auth.require_admin_here(True)
    return web.json_response(await cancel(served_core(request), _tenant(request),
                                          request.match_info["dataset_id"]))


def add_routes(app: web.Application) -> None:
    app.router.add_post(ROUTE, post_reshard)
    app.router.add_get(ROUTE, get_reshard)
    app.router.add_delete(ROUTE, delete_reshard)


# ---- OpenAPI ----------------------------------------------------------------------------------

# What a reshard request must satisfy beyond its JSON Schema (router/openapi.STATEFUL_RULES).
STATEFUL_RULE = (r"a reshard doubles the shard count|is above shard_count_max",
                 "a reshard's `shards` is exactly twice the dataset's current shard count, and at "
                 f"most shard_count_max ({limits.shard_count_max})")

_PROGRESS = {"type": "object", "properties": {
    "dataset": {"type": "string"}, "tenant_id": {"type": "string"},
    "state": {"type": "string", "enum": ["building", "done", "none"]},
    "shard_count": {"type": "integer"}, "epoch": {"type": "integer"},
    "split_epoch": {"type": "integer"}, "old_count": {"type": "integer"},
    "new_count": {"type": "integer"}, "children_built": {"type": "integer"},
    "children_needed": {"type": "integer"}, "elapsed_s": {"type": "number"},
    "rate_children_s": {"type": "number"}, "eta_s": {"type": ["number", "null"]},
    "waiting_shards": {"type": "array", "items": {"type": "integer"}},
    "txns_in_doubt": {"type": "integer"}, "cancelled": {"type": "boolean"}}}


def extend_openapi(operations: dict, op) -> None:
    """Documents the routes above in router/openapi.py's table."""
    admin = (400, 401, 403, 404, 500, 503)
    params = [{"name": "dataset_id", "in": "path", "required": True,
               "description": "The dataset name.", "schema": validation.name_json_schema()},
              {"name": "X-Tenant-Id", "in": "header", "required": False,
               "description": "The dataset's tenant (default tenant `default`).",
               "schema": validation.name_json_schema("a tenant id", allow_empty=True)}]
    operations.update({
        ("POST", ROUTE): op(
            "startReshard", "admin", "Double a dataset's shard count online",
            description="Shard i splits into i and i + N. Writes are accepted throughout; the "
                        "switch to the new count is one Raft command fenced by the epoch. "
                        "Refused (nothing changes) unless `shards` is exactly twice the "
                        f"count and at most {limits.shard_count_max}, or while the dataset has "
                        "a move or another reshard in flight.",
            params=params, ok=202, ok_text="Started", ok_schema=_PROGRESS,
            body={"type": "object", "required": ["shards"], "additionalProperties": False,
                  "properties": {"shards": {"type": "integer", "minimum": 2,
                                            "maximum": limits.shard_count_max}}},
            errors_=admin + (409, 413)),
        ("GET", ROUTE): op(
            "getReshard", "admin", "A dataset's split: children built, rate and ETA",
            params=params, ok_schema=_PROGRESS, errors_=admin),
        ("DELETE", ROUTE): op(
            "cancelReshard", "admin", "Cancel a split in progress; readers never saw it",
            params=params, ok_schema=_PROGRESS, errors_=admin),
    })
