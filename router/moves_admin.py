"""Scale-out over the admin API: shard moves, node drains and removal, rebalancing
(`tributary admin shards move | moves | nodes drain | nodes remove | rebalance`). Admin
credential; registered and documented by router/admin.py. The plans come from
consensus/rebalance.py; the moves themselves are Raft commands that the meta leader steps along
(consensus/failover.py), so they survive the crash of this router, of the leader and of the
nodes involved.

    POST   /admin/moves                  {dataset, shard, from, to}  start one move
    GET    /admin/moves                  moves in flight, with the target copy's progress
    DELETE /admin/moves/{move_id}        cancel: the shard is left exactly as before
    POST   /admin/nodes/{node_id}/drain  move every copy off it (refused when some copy has
                                         nowhere to go), then it is `drained`
    POST   /admin/nodes/{node_id}/remove {force}  forget it
    POST   /admin/rebalance              {dry_run, max_concurrent_moves}  the plan; started
                                         unless dry_run. Once copies are even it plans
                                         primary hand-overs (`kind: primary_transfer`, no
                                         data moves) that even primaries out
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from consensus import commands, rebalance
from proto import node_pb2
from router import auth
from router.http_common import read_json_body, served_core
from tributary import errors, limits, validation

PREFIX = "/admin"




async def _body(request: web.Request) -> dict:
    return await read_json_body(request)


def _integer(value, name: str) -> int:
    """A JSON integer (an integral number such as 3.0 counts, as JSON Schema says)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.InvalidArgument(f"'{name}' must be an integer")
    return value


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _live(core) -> set[str]:
    return set((await core.meta.leader_status()).live_nodes)


def _node(core, node_id: str):
    node = core.catalog.state.nodes.get(node_id)
    if node is None:
        raise errors.NotFound(f"node '{node_id}' not found")
    return node


async def move_docs(core) -> list[dict]:
    """Moves in flight, each with the target copy's progress against the primary's log."""
    await core.catalog.refresh()
    state = core.catalog.state
    docs = []
    for move in sorted(state.moves.values(), key=lambda m: m.created_at_ms):
        record = state.datasets.get(move.dataset_uuid)
        doc = {"move_id": move.move_id, "shard": move.shard, "from": move.source,
               "to": move.target, "reason": move.reason, "created_at_ms": move.created_at_ms,
               "dataset": record.name if record else None,
               "tenant_id": record.tenant_id if record else None}
        if record is not None:
            in_sync = move.target in record.in_sync_of(move.shard)
            doc["phase"] = ("finishing" if in_sync and record.primary_of(move.shard)
                            != move.source else "handing_over" if in_sync else "catching_up")
            ref = core.shard_ref(record, move.shard)

            async def seq_of(node_id: str) -> int | None:
                try:
                    status = await asyncio.wait_for(core.shards.copy_status(
                        core.node_address(node_id), node_pb2.CopyStatusRequest(shard=ref)),
                        limits.meta_rpc_timeout_ms / 1000)
                    return status.last_seq
                except (errors.TributaryError, asyncio.TimeoutError):
                    return None
            head, at = await asyncio.gather(seq_of(record.primary_of(move.shard)),
                                            seq_of(move.target))
            doc.update(primary_seq=head, target_seq=at)
        docs.append(doc)
    return docs


async def start_move(core, doc: dict) -> dict:
    for name in ("dataset", "from", "to"):
        if not isinstance(doc.get(name), str) or not doc[name]:
            raise errors.InvalidArgument(f"'{name}' must be a non-empty string")
    shard = _integer(doc.get("shard"), "shard")
    record = await core.dataset(doc.get("tenant_id") or "", doc["dataset"])
    source, target = _node(core, doc["from"]), _node(core, doc["to"])
    if target.node_id not in await _live(core):
        raise errors.InvalidArgument(f"node '{target.node_id}' is down")
    move = rebalance.PlannedMove(record.uuid, record.tenant_id, record.name, shard,
                                 source.node_id, target.node_id,
                                 0 <= shard < record.shard_count
                                 and record.primary_of(shard) == source.node_id)
    await core.meta.propose(move.command("requested", _now_ms()))
    await core.catalog.refresh()
    return {"move": move.to_doc()}


async def cancel_move(core, move_id: str) -> dict:
    await core.meta.propose(commands.CancelMove(move_id, _now_ms()))
    await core.catalog.refresh()
    return {"cancelled": move_id}


async def drain(core, node_id: str) -> dict:
    await core.catalog.refresh(linearizable=True)
    node = _node(core, node_id)
    moves, stuck = rebalance.plan_drain(core.catalog.state, await _live(core), node_id)
    if stuck:
        raise errors.InvalidArgument(
            f"cannot drain {node_id}: no live active node can take {', '.join(stuck[:10])} "
            "(each other node already holds a copy of it); add a node first")
    if node.state == "active":     # asked again (drain --wait polls), it writes nothing
        await core.meta.propose(commands.SetNodeState(node_id, "draining", _now_ms()))
        await core.catalog.refresh()
    return {"node_id": node_id, "state": core.catalog.state.nodes[node_id].state,
            "moves": [m.to_doc() for m in moves]}


async def remove(core, node_id: str, force: bool) -> dict:
    _node(core, node_id)
    result = await core.meta.propose(commands.RemoveNode(node_id, force, _now_ms()))
    await core.catalog.refresh()
    return {"removed": node_id, "dropped_copies": result.get("dropped_copies", [])}


async def plan(core, doc: dict) -> dict:
    dry_run = doc.get("dry_run", False)
    most = doc.get("max_concurrent_moves", limits.moves_concurrent_max)
    if not isinstance(dry_run, bool):
        raise errors.InvalidArgument("'dry_run' must be true or false")
    most = _integer(most, "max_concurrent_moves")
    if not 1 <= most <= 1_000:
        raise errors.InvalidArgument("'max_concurrent_moves' must be an integer from 1 to "
                                     "1000")
    await core.catalog.refresh(linearizable=True)
    state = core.catalog.state
    budget = max(0, most - len(state.moves) - len(state.transfers))
    live = await _live(core)
    planned = rebalance.plan_rebalance(state, live, budget)
    # Once copies are even (no move planned or in flight), primaries are evened out by
    # hand-overs to in-sync copies (no data moves); the primaries carry them out.
    transfers = [] if planned or state.moves else \
        rebalance.plan_primary_transfers(state, live, budget)
    if not dry_run:
        for move in planned:
            await core.meta.propose(move.command("rebalance", _now_ms()))
        for transfer in transfers:
            await core.meta.propose(transfer.command(_now_ms()))
        await core.catalog.refresh()
    return {"dry_run": dry_run,
            "moves": [m.to_doc() for m in planned] + [t.to_doc() for t in transfers],
            "in_flight": len(state.moves) + len(state.transfers)}


# ---- REST -----------------------------------------------------------------------------------

async def post_move(request: web.Request) -> web.Response:
    auth.require_admin_here(True)
    return web.json_response(await start_move(served_core(request), await _body(request)),
                             status=201)


async def get_moves(request: web.Request) -> web.Response:
    auth.require_admin_here(False)
    return web.json_response({"moves": await move_docs(served_core(request))})


async def delete_move(request: web.Request) -> web.Response:
    auth.require_admin_here(True)
    return web.json_response(await cancel_move(served_core(request), request.match_info["move_id"]))


async def post_drain(request: web.Request) -> web.Response:
    auth.require_admin_here(True)
    return web.json_response(await drain(served_core(request), request.match_info["node_id"]),
                             status=202)


async def post_remove(request: web.Request) -> web.Response:
    auth.require_admin_here(True)
    doc = await _body(request)
    force = doc.get("force", False)
    if not isinstance(force, bool):
        raise errors.InvalidArgument("'force' must be true or false")
    return web.json_response(await remove(served_core(request), request.match_info["node_id"],
                                          force))


async def post_rebalance(request: web.Request) -> web.Response:
    auth.require_admin_here(True)
    return web.json_response(await plan(served_core(request), await _body(request)))


def add_routes(app: web.Application) -> None:
    app.router.add_post(f"{PREFIX}/moves", post_move)
    app.router.add_get(f"{PREFIX}/moves", get_moves)
    app.router.add_delete(f"{PREFIX}/moves/{{move_id}}", delete_move)
    app.router.add_post(f"{PREFIX}/nodes/{{node_id}}/drain", post_drain)
    app.router.add_post(f"{PREFIX}/nodes/{{node_id}}/remove", post_remove)
    app.router.add_post(f"{PREFIX}/rebalance", post_rebalance)


_MOVE = {"type": "object", "properties": {
    "move_id": {"type": "string"}, "dataset_uuid": {"type": "string"},
    "dataset": {"type": "string"}, "tenant_id": {"type": "string"},
    "shard": {"type": "integer"}, "source": {"type": "string"}, "target": {"type": "string"},
    "primary": {"type": "boolean"}}}
_NODE_ID = {"name": "node_id", "in": "path", "required": True, "description": "A node id.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255}}


def extend_openapi(operations: dict, op) -> None:
    """Documents the routes above in router/openapi.py's table (called by router/admin.py)."""
    admin = (400, 401, 403, 500, 503)
    name = validation.name_json_schema()
    operations.update({
        ("POST", f"{PREFIX}/moves"): op(
            "startMove", "admin", "Move one shard copy from a node to another", ok=201,
            body={"type": "object", "required": ["dataset", "shard", "from", "to"],
                  "additionalProperties": False, "properties": {
                      "dataset": name, "tenant_id": name,
                      "shard": {"type": "integer", "minimum": 0},
                      "from": {"type": "string", "minLength": 1},
                      "to": {"type": "string", "minLength": 1}}},
            ok_schema={"type": "object", "properties": {"move": _MOVE}}, ok_text="Started",
            errors_=admin + (404, 409, 413)),
        ("GET", f"{PREFIX}/moves"): op(
            "listMoves", "admin", "Moves in flight, with the target copy's progress",
            errors_=admin, ok_schema={"type": "object", "properties": {
                "moves": {"type": "array", "items": {"type": "object"}}}}),
        ("DELETE", f"{PREFIX}/moves/{{move_id}}"): op(
            "cancelMove", "admin", "Cancel a move; the shard is left as it was",
            params=[{"name": "move_id", "in": "path", "required": True,
                     "schema": {"type": "string", "minLength": 1}}],
            errors_=admin + (404,), ok_schema={"type": "object"}),
        ("POST", f"{PREFIX}/nodes/{{node_id}}/drain"): op(
            "drainNode", "admin", "Move every copy off a node, then mark it drained",
            params=[_NODE_ID], ok=202, ok_text="Draining", errors_=admin + (404,),
            ok_schema={"type": "object", "properties": {
                "node_id": {"type": "string"}, "state": {"type": "string"},
                "moves": {"type": "array", "items": _MOVE}}}),
        ("POST", f"{PREFIX}/nodes/{{node_id}}/remove"): op(
            "removeNode", "admin", "Forget a node (refused while it holds copies, unless "
                                   "force)", params=[_NODE_ID],
            body={"type": "object", "additionalProperties": False,
                  "properties": {"force": {"type": "boolean"}}},
            errors_=admin + (404, 413), ok_schema={"type": "object"}),
        ("POST", f"{PREFIX}/rebalance"): op(
            "rebalance", "admin", "Plan (and unless dry_run, start) the moves that even copies "
                                  "out over the live nodes",
            body={"type": "object", "additionalProperties": False, "properties": {
                "dry_run": {"type": "boolean"},
                "max_concurrent_moves": {"type": "integer", "minimum": 1, "maximum": 1000}}},
            errors_=admin + (413,), ok_schema={"type": "object", "properties": {
                "dry_run": {"type": "boolean"}, "in_flight": {"type": "integer"},
                "moves": {"type": "array", "items": _MOVE}}}),
    })
