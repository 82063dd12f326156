"""Replication records in the catalog: the pure transitions of a shard's copies, in-sync set and
primary term (SetInSync, PromotePrimary, ReplaceCopy), and the checks a dataset's copies must
pass when it is created.

Like state.apply these are pure: no clock, no I/O; a refused command returns an error result and
leaves the state as it was. Invariants every transition keeps, per shard (tests/unit/
test_replication_apply.py checks them over random command sequences):
- the copies are on distinct known nodes, and the primary is one of them;
- the in-sync set is a subset of the copies and always holds the primary;
- the term never decreases, and a primary changes only with term + 1;
- every change bumps the dataset's placement epoch, so requests planned on the old view are
  fenced (a node refuses a stale epoch, the router refreshes and retries).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from consensus import commands as c
from consensus.records import DatasetRecord, MetaState, MoveRecord, bump, error, put

COMMANDS = (c.SetInSync, c.PromotePrimary, c.ReplaceCopy)
MOVE_COMMANDS = (c.SetNodeState, c.RemoveNode, c.StartMove, c.FinishMove, c.CancelMove)
NODE_STATES = ("active", "draining", "drained")


def check_copies(placement: tuple[str, ...], copies: tuple[tuple[str, ...], ...],
                 replication_factor: int, known_nodes) -> str | None:
    """Why a create's copies are not acceptable, or None."""
    if replication_factor < 1:
        return f"replication_factor must be at least 1, got {replication_factor}"
    if not copies:
        return None if replication_factor == 1 else "copies are missing"
    if len(copies) != len(placement):
        return f"copies name {len(copies)} shard(s), placement {len(placement)}"
    for shard, (primary, nodes) in enumerate(zip(placement, copies)):
        if len(set(nodes)) != len(nodes):
            return f"shard {shard} has two copies on one node"
        if len(nodes) != replication_factor:
            return f"shard {shard} has {len(nodes)} copies, not {replication_factor}"
        if primary not in nodes:
            return f"shard {shard}'s primary {primary} is not among its copies"
        unknown = sorted(set(nodes) - set(known_nodes))
        if unknown:
            return f"shard {shard}'s copies name unknown nodes {unknown}"
    return None


def normalized(record: DatasetRecord, copies: tuple[tuple[str, ...], ...]) -> DatasetRecord:
    """A new dataset's record with its replication fields filled: every copy in sync, term 1."""
    per_shard = copies or tuple((p,) for p in record.placement)
    sorted_copies = tuple(tuple(sorted(nodes)) for nodes in per_shard)
    return dataclasses.replace(record, copies=sorted_copies, in_sync=sorted_copies,
                               terms=tuple(1 for _ in record.placement))


def apply(state: MetaState, command: Any) -> tuple[MetaState, dict[str, Any]]:
    record = state.datasets.get(command.dataset_uuid)
    if record is None:
        return state, error("NotFound", f"dataset uuid {command.dataset_uuid} not found")
    if not isinstance(command.shard, int) or not 0 <= command.shard < record.shard_count:
        return state, error("InvalidArgument", f"shard {command.shard} out of range")
    record = normalized(record, record.copies) if not record.terms else record
    shard = command.shard
    if isinstance(command, c.SetInSync):
        return _set_in_sync(state, record, shard, command)
    if isinstance(command, c.PromotePrimary):
        return _promote(state, record, shard, command)
    return _replace_copy(state, record, shard, command)


def _stale_term(record: DatasetRecord, shard: int, term: int) -> dict[str, Any] | None:
    current = record.term_of(shard)
    if term != current:
        return error("StaleEpoch", f"shard {shard} is in primary term {current}, not {term}")
    return None


def _with_shard(record: DatasetRecord, shard: int, at_ms: int, **per_shard: Any) -> DatasetRecord:
    """The record with the named per-shard fields of `shard` replaced, and the epoch bumped."""
    changes = {}
    for name, value in per_shard.items():
        values = list(getattr(record, name))
        values[shard] = value
        changes[name] = tuple(values)
    return dataclasses.replace(record, epoch=record.epoch + 1, updated_at_ms=at_ms, **changes)


def _store(state: MetaState, record: DatasetRecord, result: dict[str, Any]):
    return bump(state, datasets=put(state.datasets, record.uuid, record)), \
        {**result, "epoch": record.epoch, "term": record.term_of(result.get("shard", 0))}


def _set_in_sync(state, record, shard, command: c.SetInSync):
    refused = _stale_term(record, shard, command.term)
    if refused:
        return state, refused
    in_sync = set(record.in_sync_of(shard))
    if command.node_id not in record.copies_of(shard):
        return state, error("InvalidArgument",
                            f"{command.node_id} holds no copy of shard {shard}")
    if command.in_sync == (command.node_id in in_sync):
        return state, {"changed": False, "epoch": record.epoch, "term": record.term_of(shard)}
    if not command.in_sync and command.node_id == record.primary_of(shard):
        return state, error("InvalidArgument", "the primary cannot leave the in-sync set")
    in_sync = in_sync | {command.node_id} if command.in_sync else in_sync - {command.node_id}
    record = _with_shard(record, shard, command.at_ms, in_sync=tuple(sorted(in_sync)))
    return _store(state, record, {"changed": True, "shard": shard})


def _promote(state, record, shard, command: c.PromotePrimary):
    refused = _stale_term(record, shard, command.term)
    if refused:
        return state, refused
    old = record.primary_of(shard)
    if command.node_id == old:
        return state, error("InvalidArgument", f"{command.node_id} is already the primary")
    if command.node_id not in record.in_sync_of(shard):
        return state, error("InvalidArgument",
                            f"only an in-sync copy can be promoted; {command.node_id} is not one")
    in_sync = tuple(sorted(set(record.in_sync_of(shard)) - {old}))
    record = _with_shard(record, shard, command.at_ms, placement=command.node_id,
                         in_sync=in_sync, terms=record.term_of(shard) + 1)
    return _store(state, record, {"changed": True, "shard": shard, "old_primary": old})


def copies_held(state: MetaState, node_id: str) -> list[str]:
    """"dataset name/shard" of every copy `node_id` holds."""
    return [f"{r.name}/{s}" for r in sorted(state.datasets.values(), key=lambda r: r.name)
            for s in r.shards_on(node_id)]


def apply_moves(state: MetaState, command: Any) -> tuple[MetaState, dict[str, Any]]:
    """Node states, node removal and shard moves (pure, like apply)."""
    if isinstance(command, c.SetNodeState):
        node = state.nodes.get(command.node_id)
        if node is None:
            return state, error("NotFound", f"node '{command.node_id}' not found")
        if command.state not in NODE_STATES:
            return state, error("InvalidArgument", f"node state must be one of "
                                                   f"{', '.join(NODE_STATES)}")
        held = copies_held(state, command.node_id)
        if command.state == "drained" and held:
            return state, error("InvalidArgument", f"node '{command.node_id}' still holds "
                                                   f"{len(held)} copies: {', '.join(held[:5])}")
        if node.state == command.state:
            return state, {"changed": False}
        nodes = {**state.nodes, node.node_id: dataclasses.replace(node, state=command.state)}
        return bump(state, nodes=nodes), {"changed": True}
    if isinstance(command, c.RemoveNode):
        return _remove_node(state, command)
    if isinstance(command, c.StartMove):
        return _start_move(state, command)
    move = state.moves.get(command.move_id)
    if move is None:
        return state, error("NotFound", f"move '{command.move_id}' not found")
    record = state.datasets.get(move.dataset_uuid)
    moves = {k: v for k, v in state.moves.items() if k != move.move_id}
    if record is None:   # the dataset is gone: so is its move
        return bump(state, moves=moves), {"changed": True}
    shard = move.shard
    record = normalized(record, record.copies) if not record.terms else record
    if isinstance(command, c.FinishMove):
        if move.target not in record.in_sync_of(shard):
            return state, error("InvalidArgument", f"move {move.move_id}: {move.target} is not "
                                                   "in sync yet")
        if record.primary_of(shard) == move.source:
            return state, error("InvalidArgument", f"move {move.move_id}: {move.source} is "
                                                   "still the primary")
        drop = move.source
    else:
        if record.primary_of(shard) == move.target:
            return state, error("InvalidArgument", f"move {move.move_id}: {move.target} is the "
                                                   "primary now; it can only finish")
        drop = move.target
    record = _with_shard(record, shard, command.at_ms,
                         copies=tuple(n for n in record.copies_of(shard) if n != drop),
                         in_sync=tuple(n for n in record.in_sync_of(shard) if n != drop))
    return bump(state, datasets={**state.datasets, record.uuid: record}, moves=moves), \
        {"changed": True, "epoch": record.epoch, "dropped": drop}


def _start_move(state: MetaState, command: c.StartMove):
    record = state.datasets.get(command.dataset_uuid)
    if record is None:
        return state, error("NotFound", f"dataset uuid {command.dataset_uuid} not found")
    if not isinstance(command.shard, int) or not 0 <= command.shard < record.shard_count:
        return state, error("InvalidArgument", f"shard {command.shard} out of range")
    if command.move_id in state.moves:
        return state, {"changed": False, "move_id": command.move_id}
    shard = command.shard
    record = normalized(record, record.copies) if not record.terms else record
    copies = record.copies_of(shard)
    target = state.nodes.get(command.target)
    if state.move_of(record.uuid, shard) is not None:
        return state, error("Aborted", f"{record.name}/{shard} is already moving")
    if record.uuid in state.reshards:
        return state, error("Aborted", f"{record.name} is being resharded; move its shards "
                                       "once the split is done")
    if command.source not in copies:
        return state, error("InvalidArgument", f"{command.source} holds no copy of "
                                               f"{record.name}/{shard}")
    if target is None:
        return state, error("InvalidArgument", f"unknown node '{command.target}'")
    if target.state != "active":
        return state, error("InvalidArgument", f"node '{command.target}' is {target.state}")
    if command.target in copies:
        return state, error("InvalidArgument", f"{command.target} already holds a copy of "
                                               f"{record.name}/{shard}")
    record = _with_shard(record, shard, command.at_ms,
                         copies=tuple(sorted((*copies, command.target))))
    move = MoveRecord(command.move_id, record.uuid, shard, command.source, command.target,
                      command.at_ms, command.reason)
    return bump(state, datasets={**state.datasets, record.uuid: record},
                moves={**state.moves, move.move_id: move}), \
        {"changed": True, "move_id": move.move_id, "epoch": record.epoch}


def _remove_node(state: MetaState, command: c.RemoveNode):
    node_id = command.node_id
    if node_id not in state.nodes:
        return state, error("NotFound", f"node '{node_id}' not found")
    held = copies_held(state, node_id)
    if held and not command.force:
        return state, error("InvalidArgument", f"node '{node_id}' holds {len(held)} copies, "
                            f"which removing it would lose: {', '.join(held[:10])}; drain it "
                            "first, or remove it with force")
    datasets = dict(state.datasets)
    for record in state.datasets.values():
        record = normalized(record, record.copies) if not record.terms else record
        for shard in record.shards_on(node_id):
            copies = [n for n in record.copies_of(shard) if n != node_id]
            in_sync = [n for n in record.in_sync_of(shard) if n != node_id]
            if not copies or not in_sync:
                return state, error("InvalidArgument", f"removing '{node_id}' would leave "
                                    f"{record.name}/{shard} with no in-sync copy")
            changes = {"copies": tuple(copies), "in_sync": tuple(in_sync)}
            if record.primary_of(shard) == node_id:
                changes.update(placement=in_sync[0], terms=record.term_of(shard) + 1)
            record = _with_shard(record, shard, command.at_ms, **changes)
        datasets[record.uuid] = record
    moves = {k: v for k, v in state.moves.items() if node_id not in (v.source, v.target)}
    nodes = {k: v for k, v in state.nodes.items() if k != node_id}
    return bump(state, nodes=nodes, datasets=datasets, moves=moves), \
        {"changed": True, "dropped_copies": held}


def _replace_copy(state, record, shard, command: c.ReplaceCopy):
    copies = record.copies_of(shard)
    if command.old_node not in copies:
        return state, error("InvalidArgument",
                            f"{command.old_node} holds no copy of shard {shard}")
    if command.old_node in record.in_sync_of(shard):
        return state, error("InvalidArgument", f"{command.old_node} is in sync; take it out of "
                                               "the in-sync set first")
    if command.new_node not in state.nodes:
        return state, error("InvalidArgument", f"unknown node '{command.new_node}'")
    if command.new_node in copies:
        return state, error("InvalidArgument",
                            f"{command.new_node} already holds a copy of shard {shard}")
    new_copies = tuple(sorted((set(copies) - {command.old_node}) | {command.new_node}))
    record = _with_shard(record, shard, command.at_ms, copies=new_copies)
    return _store(state, record, {"changed": True, "shard": shard})


def plan_repairs(state: MetaState, down_for_ms: dict[str, int], at_ms: int,
                 failover_after_ms: int, replace_after_ms: int) -> list[Any]:
    """The commands the meta leader proposes in one round, from how long each registered node
    has gone without a heartbeat (0 = live; a node missing from the map counts as live):
    - a primary away for failover_after_ms is replaced by a live in-sync copy (PromotePrimary,
      the least-loaded candidate first), so writes go on;
    - a copy away for replace_after_ms leaves the in-sync set and is replaced by a copy on a live
      node that holds none of the shard (ReplaceCopy), so the replication factor comes back.
    At most one change per shard and round: each command carries the term or state it was
    planned on, and the next round plans from the state it produced."""
    def down(node: str) -> int:
        return down_for_ms.get(node, 0)

    live = sorted(n for n in state.nodes if down(n) == 0)
    primaries: dict[str, int] = {n: 0 for n in state.nodes}
    copies_held: dict[str, int] = {n: 0 for n in state.nodes}
    for record in state.datasets.values():
        for shard in range(record.shard_count):
            primaries[record.primary_of(shard)] = primaries.get(record.primary_of(shard), 0) + 1
            for node in record.copies_of(shard):
                copies_held[node] = copies_held.get(node, 0) + 1
    planned: list[Any] = []
    for record in sorted(state.datasets.values(), key=lambda r: r.uuid):
        for shard in range(record.shard_count):
            primary, term = record.primary_of(shard), record.term_of(shard)
            if down(primary) >= failover_after_ms:
                candidates = [n for n in record.in_sync_of(shard) if n != primary and
                              down(n) == 0]
                if candidates:
                    chosen = min(candidates, key=lambda n: (primaries.get(n, 0), n))
                    primaries[chosen] = primaries.get(chosen, 0) + 1
                    planned.append(c.PromotePrimary(record.uuid, shard, chosen, term, at_ms))
                continue
            if state.move_of(record.uuid, shard) is not None:
                continue    # a move changes this shard's copies already
            away = [n for n in record.copies_of(shard)
                    if n != primary and down(n) >= replace_after_ms]
            spare = [n for n in live if n not in record.copies_of(shard)]
            if not away or not spare:
                continue
            old = away[0]
            if old in record.in_sync_of(shard):
                planned.append(c.SetInSync(record.uuid, shard, old, False, term, at_ms))
                continue
            new = min(spare, key=lambda n: (copies_held.get(n, 0), n))
            copies_held[new] = copies_held.get(new, 0) + 1
            planned.append(c.ReplaceCopy(record.uuid, shard, old, new, at_ms))
    return planned
