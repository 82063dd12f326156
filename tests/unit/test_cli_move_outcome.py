"""`tributary admin shards move --wait` says how the move ended (tributary/cluster_cli.py
move_outcome): by the placement once the move has left the moves list, since a move whose target
stays away is rolled back and leaves the list just as a finished one does. The real command runs
against a cluster in tests/integration/test_move_crashes.py."""

from __future__ import annotations

import pytest

from tributary.cluster_cli import move_outcome


def placement(copies: list[str], shard: int = 0) -> dict:
    return {"dataset": "docs", "shards": [
        {"shard": 1 - shard, "primary": "node-9", "copies": [{"node_id": "node-9"}]},
        {"shard": shard, "primary": copies[0] if copies else "",
         "copies": [{"node_id": n, "in_sync": True} for n in copies]}]}


@pytest.mark.parametrize("copies, expected", [
    (["node-3", "node-1"], "finished"),
    (["node-0", "node-1"], "rolled back"),
    (["node-0", "node-1", "node-3"], "unclear"),
    (["node-1"], "unclear"),
    ([], "unclear"),
])
def test_the_placement_after_a_move_says_whether_it_finished_or_rolled_back(copies, expected):
    assert move_outcome(placement(copies), 0, "node-0", "node-3") == expected


def test_only_the_moved_shard_counts():
    # Shard 0 of this document holds node-9 only; shard 1 is the moved one.
    assert move_outcome(placement(["node-3"], shard=1), 1, "node-0", "node-3") == "finished"
    assert move_outcome(placement(["node-3"], shard=1), 0, "node-9", "node-3") == "rolled back"
    assert move_outcome({"shards": []}, 0, "node-0", "node-3") == "unclear"
