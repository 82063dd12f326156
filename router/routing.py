"""Pure routing helpers: which shard a vector id lives on, and the scatter-gather top-k merge."""

from __future__ import annotations

from typing import Iterable, TypeVar

from consensus.placement import stable_hash

T = TypeVar("T")


def shard_of(vector_id: str, shard_count: int) -> int:
    return stable_hash(vector_id) % shard_count


def merge_top_k(per_shard: Iterable[list[tuple[float, str, T]]], top_k: int
                ) -> list[tuple[float, str, T]]:
    """Merges per-shard hit lists of (score, vector_id, payload) into the global top-k.

    Higher scores win. Ties break on vector id so the order is deterministic whatever the order
    in which shards answered. Each input list may be in any order.
    """
    if top_k <= 0:
        return []
    candidates = [item for hits in per_shard for item in hits]
    # sorted()[:k] is what heapq.nsmallest promises to equal; merges hold shard_count * k items,
    # which C's sort orders faster than nsmallest's Python-level heap loop.
    candidates.sort(key=lambda item: (-item[0], item[1]))
    return candidates[:top_k]
