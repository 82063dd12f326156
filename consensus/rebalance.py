"""Planning shard moves: evening copies out over the nodes (rebalance), moving every copy off a
node (drain), and the steps the meta leader takes for moves in flight. Pure functions of the
catalog and of which nodes are live; the leader's repair loop (consensus/failover.py) and the
admin API (router/cluster_admin.py) are their drivers.

A move (consensus/replication.py StartMove) makes the target a copy at once; the replication
machinery brings it up to date (ops or a file copy) and into the in-sync set; the source, if it
is the primary, hands that role over under its write lock (node/replication.py); then FinishMove
drops the source. The shard never has fewer in-sync copies than before the move.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

from consensus import commands as c
from consensus.records import MetaState, bump, error

TRANSFER_COMMANDS = (c.StartTransfer, c.EndTransfer)


@dataclass(frozen=True)
class PlannedMove:
    dataset_uuid: str
    tenant_id: str
    dataset: str
    shard: int
    source: str
    target: str
    primary: bool          # the source holds the primary role (it hands it over first)

    @property
    def move_id(self) -> str:
        return f"{self.dataset_uuid[:8]}-{self.shard}-{self.source}-{self.target}"

    def to_doc(self) -> dict:
        return {**asdict(self), "move_id": self.move_id}

    def command(self, reason: str, at_ms: int) -> c.StartMove:
        return c.StartMove(self.move_id, self.dataset_uuid, self.shard, self.source,
                           self.target, reason, at_ms)


def _eligible(state: MetaState, live: set[str]) -> list[str]:
    """Nodes that may receive copies: registered, live and active."""
    return sorted(n.node_id for n in state.nodes.values() if n.state == "active" and
                  n.node_id in live)


def copy_load(state: MetaState, nodes: list[str]) -> dict[str, int]:
    load = {n: 0 for n in nodes}
    for record in state.datasets.values():
        for shard in range(record.shard_count):
            for node in record.copies_of(shard):
                if node in load:
                    load[node] += 1
    return load


def _shards(state: MetaState):
    for record in sorted(state.datasets.values(), key=lambda r: (r.tenant_id, r.name)):
        for shard in range(record.shard_count):
            yield record, shard


def _zone(state: MetaState, node: str) -> str:
    record = state.nodes.get(node)
    return record.zone if record is not None else ""


def zones_of(state: MetaState, nodes) -> set[str]:
    """The zones of `nodes`; a node with no label counts as its own zone, so that with no
    labels at all spreading over zones is spreading over nodes (which copies are anyway)."""
    return {_zone(state, n) or f"node:{n}" for n in nodes}


def _spread_after(state: MetaState, copies: tuple[str, ...], source: str, target: str) -> int:
    return len(zones_of(state, [n for n in copies if n != source] + [target]))


def primary_load(state: MetaState, nodes: list[str]) -> dict[str, int]:
    load = {n: 0 for n in nodes}
    for record in state.datasets.values():
        for shard in range(record.shard_count):
            if record.primary_of(shard) in load:
                load[record.primary_of(shard)] += 1
    return load


def plan_rebalance(state: MetaState, live: set[str], max_moves: int) -> list[PlannedMove]:
    """The moves that spread each shard's copies over the most zones (`tributary node --zone`)
    the live active nodes offer, then the fewest moves that even out copies over those nodes
    (until the most and the least loaded differ by at most one) without narrowing any shard's
    spread. Copies of a shard stay on distinct nodes; shards already moving are left alone. A
    node holding more than its even share of primaries gives up primary copies first (the move
    hands the role over) to a node with at least two fewer, otherwise non-primary copies go first. Zone spread wins over evenness
    when the zones are of unequal size."""
    nodes = _eligible(state, live)
    if len(nodes) < 2 or max_moves < 1:
        return []
    load = copy_load(state, nodes)
    primaries = primary_load(state, nodes)
    # Shards moving, handing over, or of a dataset being split (consensus/reshard.py), keep
    # their copies where they are.
    busy = _busy_shards(state)
    planned: list[PlannedMove] = []
    copies_now: dict[tuple[str, int], tuple[str, ...]] = {}

    def copies(record, shard) -> tuple[str, ...]:
        return copies_now.get((record.uuid, shard), record.copies_of(shard))

    def take(record, shard, source, target) -> None:
        is_primary = record.primary_of(shard) == source
        planned.append(PlannedMove(record.uuid, record.tenant_id, record.name, shard, source,
                                   target, is_primary))
        busy.add((record.uuid, shard))
        copies_now[(record.uuid, shard)] = tuple(n for n in copies(record, shard)
                                                 if n != source) + (target,)
        load[target] += 1
        if source in load:
            load[source] -= 1
        if is_primary:
            primaries[target] += 1
            if source in primaries:
                primaries[source] -= 1

    available = zones_of(state, nodes)
    for record, shard in _shards(state):
        if len(planned) >= max_moves:
            return planned
        held = copies(record, shard)
        if (record.uuid, shard) in busy or \
                len(zones_of(state, held)) >= min(len(held), len(available)):
            continue
        # Copies on live active nodes that share a zone with another copy of the shard (a
        # copy on a down node is the repair loop's to replace).
        crowded = [n for n in held if n in load and
                   sum(zones_of(state, [m]) == zones_of(state, [n]) for m in held) > 1]
        if not crowded:
            continue
        source = max(crowded, key=lambda n: (record.primary_of(shard) != n, load.get(n, 0), n))
        targets = [n for n in nodes if n not in held and
                   _spread_after(state, held, source, n) > len(zones_of(state, held))]
        if targets:
            take(record, shard, source, min(targets, key=lambda n: (load[n], n)))

    while len(planned) < max_moves:
        source = max(nodes, key=lambda n: (load[n], n))
        targets = sorted(nodes, key=lambda n: (load[n], n))
        move = None
        for target in targets:
            if load[source] - load[target] <= 1:
                break
            # A primary copy goes (the move hands the role over) only when that evens primaries
            # out; otherwise non-primary copies move, which needs no hand-over.
            give_primaries = primaries[source] >= primaries[target] + 2
            options = [((record.primary_of(shard) == source) != give_primaries, record.name,
                        shard, record)
                       for record, shard in _shards(state)
                       if source in copies(record, shard)
                       and target not in copies(record, shard)
                       and (record.uuid, shard) not in busy
                       and _spread_after(state, copies(record, shard), source, target)
                       >= len(zones_of(state, copies(record, shard)))]
            if options:
                _, _, shard, record = min(options, key=lambda o: o[:3])
                move = (record, shard, target)
                break
        if move is None:
            break
        take(move[0], move[1], source, move[2])
    return planned


def plan_drain(state: MetaState, live: set[str], node_id: str
               ) -> tuple[list[PlannedMove], list[str]]:
    """(moves that take every copy off `node_id`, the copies no node can take). Each copy goes
    to a live active node without a copy of its shard: one that keeps the shard's copies over
    the most zones, then the least loaded."""
    nodes = [n for n in _eligible(state, live) if n != node_id]
    load = copy_load(state, nodes)
    moves, stuck = [], []
    for record, shard in _shards(state):
        if node_id not in record.copies_of(shard):
            continue
        existing = state.move_of(record.uuid, shard)
        if existing is not None and existing.source == node_id:
            continue
        if record.uuid in state.reshards:
            continue    # a split in progress: the drain moves it once the split is done
        held = record.copies_of(shard)
        options = [n for n in nodes if n not in held]
        if not options:
            stuck.append(f"{record.name}/{shard}")
            continue
        target = min(options, key=lambda n: (-_spread_after(state, held, node_id, n),
                                             load[n], n))
        load[target] += 1
        moves.append(PlannedMove(record.uuid, record.tenant_id, record.name, shard, node_id,
                                 target, record.primary_of(shard) == node_id))
    return moves, stuck


def plan_move_steps(state: MetaState, live: set[str], at_ms: int,
                    max_concurrent_moves: int, gone: frozenset[str] | set[str] = frozenset()
                    ) -> list[Any]:
    """What the meta leader proposes for moves and drains in one round: FinishMove for a move
    whose target is in sync and holds the primary role if the source held it; CancelMove for a
    move whose dataset is gone, or whose target is `gone` (away for move_target_away_cancel_ms)
    and is not the primary (a move rolls back rather than wait for ever on a dead target; a
    drain then plans the copy onto a live node); new moves for draining nodes, within
    max_concurrent_moves; and `drained` for a draining node that holds no copy any more."""
    planned: list[Any] = []
    in_flight = len(state.moves)
    for move in sorted(state.moves.values(), key=lambda m: m.move_id):
        record = state.datasets.get(move.dataset_uuid)
        if record is None:
            planned.append(c.CancelMove(move.move_id, at_ms))
            in_flight -= 1
        elif move.target in record.in_sync_of(move.shard) and \
                record.primary_of(move.shard) != move.source:
            planned.append(c.FinishMove(move.move_id, at_ms))
        elif move.target in gone and record.primary_of(move.shard) != move.target:
            planned.append(c.CancelMove(move.move_id, at_ms))
            in_flight -= 1
    planned += transfer_steps(state, at_ms)
    for node in sorted(state.nodes.values(), key=lambda n: n.node_id):
        if node.state != "draining":
            continue
        moves, _ = plan_drain(state, live, node.node_id)
        held = any(node.node_id in r.copies_of(s) for r, s in _shards(state))
        if not held:
            planned.append(c.SetNodeState(node.node_id, "drained", at_ms))
            continue
        for move in moves:
            if in_flight >= max_concurrent_moves:
                break
            planned.append(move.command(f"drain {node.node_id}", at_ms))
            in_flight += 1
    return planned


# ---- primary balance: hand-overs without copy moves --------------------------------------------

@dataclass(frozen=True)
class TransferRecord:
    """A primary hand-over in flight: `source`, the shard's primary, hands the role over to its
    in-sync copy `target` (node/replication.py hand_over, under the write lock)."""

    transfer_id: str
    dataset_uuid: str
    shard: int
    source: str
    target: str
    created_at_ms: int


@dataclass(frozen=True)
class PlannedTransfer:
    dataset_uuid: str
    tenant_id: str
    dataset: str
    shard: int
    source: str
    target: str

    @property
    def transfer_id(self) -> str:
        return f"{self.dataset_uuid[:8]}-{self.shard}-{self.source}-{self.target}-primary"

    def to_doc(self) -> dict:
        # The fields of a planned move, so `rebalance --json` stays one array of moves.
        return {**asdict(self), "move_id": self.transfer_id, "primary": True,
                "kind": "primary_transfer"}

    def command(self, at_ms: int) -> c.StartTransfer:
        return c.StartTransfer(self.transfer_id, self.dataset_uuid, self.shard, self.source,
                               self.target, at_ms)


def _busy_shards(state: MetaState) -> set[tuple[str, int]]:
    busy = {(m.dataset_uuid, m.shard) for m in state.moves.values()}
    busy |= {(t.dataset_uuid, t.shard) for t in state.transfers.values()}
    busy |= {(uuid, s) for uuid in state.reshards if uuid in state.datasets
             for s in range(state.datasets[uuid].shard_count)}
    return busy


def plan_primary_transfers(state: MetaState, live: set[str], max_transfers: int
                           ) -> list[PlannedTransfer]:
    """Hand-overs that even primaries out over the live active nodes: while a node holds two
    more primaries than another that holds an in-sync copy of one of its shards, that shard's
    role goes to the least-loaded such copy. Each hand-over narrows the gap, so primaries end
    within one of each other whenever the in-sync copies allow it (always when every node
    holds a copy of every shard). Shards moving, splitting or already handing over are left
    alone; primaries on down or draining nodes are the repair loop's and the drain's."""
    nodes = _eligible(state, live)
    if len(nodes) < 2 or max_transfers < 1:
        return []
    primaries = primary_load(state, nodes)
    busy = _busy_shards(state)
    planned: list[PlannedTransfer] = []
    while len(planned) < max_transfers:
        chosen = None
        for source in sorted(nodes, key=lambda n: (-primaries[n], n)):
            options = []
            for record, shard in _shards(state):
                if record.primary_of(shard) != source or (record.uuid, shard) in busy:
                    continue
                for target in record.in_sync_of(shard):
                    if target in primaries and primaries[target] <= primaries[source] - 2:
                        options.append((primaries[target], target, record.name, shard, record))
            if options:
                _, target, _, shard, record = min(options, key=lambda o: o[:4])
                chosen = (record, shard, source, target)
                break
        if chosen is None:
            break
        record, shard, source, target = chosen
        planned.append(PlannedTransfer(record.uuid, record.tenant_id, record.name, shard,
                                       source, target))
        busy.add((record.uuid, shard))
        primaries[source] -= 1
        primaries[target] += 1
    return planned


def transfer_steps(state: MetaState, at_ms: int) -> list[Any]:
    """EndTransfer for each transfer that is done (its target is primary) or can no longer be
    (the dataset is gone, the source is not the primary, the target is not in sync)."""
    steps: list[Any] = []
    for transfer in sorted(state.transfers.values(), key=lambda t: t.transfer_id):
        record = state.datasets.get(transfer.dataset_uuid)
        if record is None or transfer.shard >= record.shard_count or \
                record.primary_of(transfer.shard) != transfer.source or \
                transfer.target not in record.in_sync_of(transfer.shard):
            steps.append(c.EndTransfer(transfer.transfer_id, at_ms))
    return steps


def apply_transfer(state: MetaState, command: Any) -> tuple[MetaState, dict[str, Any]]:
    """StartTransfer records a hand-over (refused unless the source is the shard's primary and
    the target one of its other in-sync copies, and the shard is not moving, splitting or
    handing over); EndTransfer forgets one. Pure, like every transition."""
    if isinstance(command, c.EndTransfer):
        if command.transfer_id not in state.transfers:
            return state, {"changed": False}
        return bump(state, transfers={k: v for k, v in state.transfers.items()
                                      if k != command.transfer_id}), {"changed": True}
    if command.transfer_id in state.transfers:
        return state, {"changed": False, "transfer_id": command.transfer_id}
    record = state.datasets.get(command.dataset_uuid)
    if record is None:
        return state, error("NotFound", f"dataset uuid {command.dataset_uuid} not found")
    if not isinstance(command.shard, int) or not 0 <= command.shard < record.shard_count:
        return state, error("InvalidArgument", f"shard {command.shard} out of range")
    if (record.uuid, command.shard) in _busy_shards(state):
        return state, error("Aborted", f"{record.name}/{command.shard} is moving, splitting or "
                                       "handing over already")
    if record.primary_of(command.shard) != command.source:
        return state, error("InvalidArgument", f"{command.source} is not the primary of "
                                               f"{record.name}/{command.shard}")
    if command.target == command.source or \
            command.target not in record.in_sync_of(command.shard):
        return state, error("InvalidArgument", f"{command.target} is not another in-sync copy "
                                               f"of {record.name}/{command.shard}")
    transfer = TransferRecord(command.transfer_id, record.uuid, command.shard, command.source,
                              command.target, command.at_ms)
    return bump(state, transfers={**state.transfers, transfer.transfer_id: transfer}), \
        {"changed": True, "transfer_id": transfer.transfer_id}


def to_doc(state: MetaState) -> dict[str, Any]:
    return {"transfers": {k: dataclasses.asdict(v) for k, v in state.transfers.items()}}


def from_doc(doc: dict[str, Any]) -> dict[str, Any]:
    return {"transfers": {k: TransferRecord(**v)
                          for k, v in doc.get("transfers", {}).items()}}
