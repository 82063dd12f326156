"""Plans shard placement over the live nodes with a consistent-hash ring (uhashring).

The ring is only the planner. The plan is recorded in the Raft group, and that record is the
truth. Keys are `tenant/dataset/shard`, so the same dataset planned over the same nodes lands the
same way. To keep small clusters balanced, a shard walks the ring from its key and takes the first
node that holds fewer than ceil(shards / nodes) of this dataset's shards.
"""

from __future__ import annotations

import hashlib
import math

from uhashring import HashRing


def stable_hash(key: str) -> int:
    """A hash that is the same in every process and release (unlike Python's hash()). A vector
    lives on shard stable_hash(id) % shard_count: routers route by it, and nodes purge the rows
    a shard split moved away by it (node/split.py)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")


def plan_placement(tenant_id: str, dataset_name: str, shard_count: int,
                   live_nodes: list[str]) -> tuple[str, ...]:
    if shard_count < 1:
        raise ValueError("shard_count must be at least 1")
    if not live_nodes:
        raise ValueError("no live nodes to place shards on")
    nodes = sorted(set(live_nodes))
    ring = HashRing(nodes=nodes)
    cap = math.ceil(shard_count / len(nodes))
    load = {n: 0 for n in nodes}
    placement = []
    for shard in range(shard_count):
        key = f"{tenant_id}/{dataset_name}/{shard}"
        start = ring.get_node(key)
        order = [start] + [n for n in _ring_walk(ring, key) if n != start]
        chosen = next(n for n in order if load[n] < cap)
        load[chosen] += 1
        placement.append(chosen)
    return tuple(placement)


def _ring_walk(ring: HashRing, key: str) -> list[str]:
    seen: list[str] = []
    for node in ring.range(key, unique=True):
        name = node["nodename"] if isinstance(node, dict) else node
        if name not in seen:
            seen.append(name)
    return seen


def plan_copies(tenant_id: str, dataset_name: str, shard_count: int, replication_factor: int,
                live_nodes: list[str]) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """(primaries, copies per shard): the primaries as plan_placement places them, and
    `replication_factor` copies per shard on distinct nodes, each extra copy on the least-loaded
    node (ring order breaks ties), so that no node holds more than one copy above an even share
    (ceil(shards * factor / nodes)) of this dataset's copies. Raises ValueError when the factor
    exceeds the live nodes."""
    nodes = sorted(set(live_nodes))
    if not 1 <= replication_factor <= len(nodes):
        raise ValueError(f"replication_factor must be between 1 and the {len(nodes)} live "
                         f"node(s), got {replication_factor}")
    primaries = plan_placement(tenant_id, dataset_name, shard_count, nodes)
    ring = HashRing(nodes=nodes)
    load = {n: 0 for n in nodes}
    for primary in primaries:
        load[primary] += 1
    copies = []
    for shard, primary in enumerate(primaries):
        chosen = [primary]
        walk = [n for n in _ring_walk(ring, f"{tenant_id}/{dataset_name}/{shard}/copies")
                if n != primary]
        walk += [n for n in nodes if n not in walk and n != primary]
        while len(chosen) < replication_factor:
            candidates = [n for n in walk if n not in chosen]
            pick = min(candidates, key=lambda n: (load[n], walk.index(n)))
            load[pick] += 1
            chosen.append(pick)
        copies.append(tuple(sorted(chosen)))
    return primaries, tuple(copies)
