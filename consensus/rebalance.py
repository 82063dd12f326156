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

from dataclasses import asdict, dataclass
from typing import Any

from consensus import commands as c
from consensus.records import MetaState


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
    busy = {(m.dataset_uuid, m.shard) for m in state.moves.values()}
    # A dataset being split (consensus/reshard.py) keeps its copies where they are.
    busy |= {(uuid, s) for uuid in state.reshards if uuid in state.datasets
             for s in range(state.datasets[uuid].shard_count)}
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
