"""The cluster's operator view over the admin API: the meta members, the nodes and their copies,
and a dataset's replication state shard by shard (`tributary admin status | nodes list |
datasets show`). Read-only, admin credential required, registered and documented by
router/admin.py.

    GET /admin/status                 {"meta": [{raft_address, grpc_address, role, term,
                                                  commit_index} | {grpc_address, error}]}
    GET /admin/nodes                  {"nodes": [{node_id, address, state, copies, primaries}]}
    GET /admin/datasets/{dataset_id}  {"dataset", "tenant_id", "replication_factor", "shards":
                                       [{shard, primary, term, in_sync, copies: [{node_id,
                                         in_sync, last_seq, lag, vector_count} | {.., error}]}]}
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from proto import node_pb2
from router import auth
from router.http_common import request_tenant, served_core
from tributary import errors, limits, validation

PREFIX = "/admin"




async def meta_status(core) -> dict:
    """Every meta member's own view; Unavailable when none answers."""
    members = await core.meta.member_statuses()
    if all("error" in m for m in members):
        raise errors.Unavailable("no metadata member answers")
    return {"meta": members}


async def nodes(core) -> dict:
    await core.catalog.refresh()
    state = core.catalog.state
    try:
        live = set((await core.meta.leader_status()).live_nodes)
    except errors.TributaryError:
        live = set()
    copies = {n: 0 for n in state.nodes}
    primaries = {n: 0 for n in state.nodes}
    for record in state.datasets.values():
        for shard in range(record.shard_count):
            primaries[record.primary_of(shard)] = primaries.get(record.primary_of(shard), 0) + 1
            for node in record.copies_of(shard):
                copies[node] = copies.get(node, 0) + 1
    return {"nodes": [{"node_id": n.node_id, "address": n.address,
                       "state": n.state if n.state != "active" else
                       "live" if n.node_id in live else "down",
                       "copies": copies.get(n.node_id, 0),
                       "primaries": primaries.get(n.node_id, 0), "zone": n.zone}
                      for n in sorted(state.nodes.values(), key=lambda n: n.node_id)]}


async def dataset_replication(core, tenant_id: str, name: str) -> dict:
    record = await core.dataset(tenant_id, name)

    async def copy(shard: int, node_id: str) -> dict:
        doc = {"node_id": node_id, "in_sync": node_id in record.in_sync_of(shard)}
        try:
            status = await asyncio.wait_for(core.shards.copy_status(
                core.node_address(node_id), node_pb2.CopyStatusRequest(
                    shard=core.shard_ref(record, shard))), limits.meta_rpc_timeout_ms / 1000)
        except (errors.TributaryError, asyncio.TimeoutError) as exc:
            return {**doc, "error": getattr(exc, "message", "no answer in time")}
        return {**doc, "last_seq": status.last_seq, "vector_count": status.vector_count}

    shards = []
    for shard in range(record.shard_count):
        copies = list(await asyncio.gather(*(copy(shard, n) for n in record.copies_of(shard))))
        head = next((c.get("last_seq") for c in copies
                     if c["node_id"] == record.primary_of(shard)), None)
        for c in copies:
            if head is not None and "last_seq" in c:
                c["lag"] = max(0, head - c["last_seq"])
        shards.append({"shard": shard, "primary": record.primary_of(shard),
                       "term": record.term_of(shard),
                       "in_sync": list(record.in_sync_of(shard)), "copies": copies})
    return {"dataset": record.name, "tenant_id": record.tenant_id,
            "replication_factor": record.replication_factor, "epoch": record.epoch,
            "shards": shards}


async def get_status(request: web.Request) -> web.Response:
    auth.require_admin_here(False)
    return web.json_response(await meta_status(served_core(request)))


async def list_nodes(request: web.Request) -> web.Response:
    auth.require_admin_here(False)
    return web.json_response(await nodes(served_core(request)))


async def show_dataset(request: web.Request) -> web.Response:
    auth.require_admin_here(False)
    return web.json_response(await dataset_replication(
        served_core(request), request_tenant(request), request.match_info["dataset_id"]))


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/status", get_status)
    app.router.add_get(f"{PREFIX}/nodes", list_nodes)
    app.router.add_get(f"{PREFIX}/datasets/{{dataset_id}}", show_dataset)


_META_MEMBER = {"type": "object", "properties": {
    "grpc_address": {"type": "string"}, "raft_address": {"type": "string"},
    "role": {"type": "string", "enum": ["leader", "follower"]},
    "term": {"type": "integer"}, "commit_index": {"type": "integer"},
    "error": {"type": "string"}}}
_NODE = {"type": "object", "required": ["node_id", "address", "state", "copies"],
         "properties": {"node_id": {"type": "string"}, "address": {"type": "string"},
                        "state": {"type": "string",
                                  "enum": ["live", "down", "draining", "drained"]},
                        "copies": {"type": "integer"}, "primaries": {"type": "integer"},
                        "zone": {"type": "string"}}}


def extend_openapi(operations: dict, op) -> None:
    """Documents the routes above in router/openapi.py's table (called by router/admin.py)."""
    admin = (400, 401, 403, 500, 503)
    operations.update({
        ("GET", f"{PREFIX}/status"): op(
            "getClusterStatus", "admin", "Every meta member's role, term and commit index",
            errors_=admin, ok_schema={"type": "object", "properties": {
                "meta": {"type": "array", "items": _META_MEMBER}}}),
        ("GET", f"{PREFIX}/nodes"): op(
            "listNodes", "admin", "Registered nodes, their state and the copies they hold",
            errors_=admin, ok_schema={"type": "object", "properties": {
                "nodes": {"type": "array", "items": _NODE}}}),
        ("GET", f"{PREFIX}/datasets/{{dataset_id}}"): op(
            "showDatasetReplication", "admin",
            "A dataset's shards: primary, term, in-sync set, and each copy's sequence number "
            "and lag", errors_=admin + (404,),
            params=[{"name": "dataset_id", "in": "path", "required": True,
                     "description": "The dataset name.",
                     "schema": validation.name_json_schema()},
                    {"name": "X-Tenant-Id", "in": "header", "required": False,
                     "description": "The dataset's tenant (default tenant `default`); the "
                                    "`tenant_id` query parameter is accepted as well.",
                     "schema": validation.name_json_schema("a tenant id", allow_empty=True)}],
            ok_schema={"type": "object"}),
    })
