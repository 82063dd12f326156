"""The `moves` chaos scenario's pure pieces: how the probe picks a move and reads how it ended
(chaos/move_probe.py), and the moves-ended checker it adds to the verdict. The scenario itself
runs against a real three-node cluster in the chaos matrix (`make chaos`)."""

from __future__ import annotations

import copy
import random

import pytest

from chaos import scenarios
from chaos.move_probe import (FINISHED, NOT_STARTED, OTHER, ROLLED_BACK, datasets_for,
                              outcome_of, pick_move, start_refused)
from chaos.verdict import FAILED, INCONCLUSIVE, PASS, evaluate, moves_ended
from chaos.workload import BATCH_DATASET, KV_DATASET, Reply

NODES = ["node-0", "node-1", "node-2"]


def placement(*shards: tuple[str, list[str]]) -> dict:
    """GET /admin/datasets/NAME as router/cluster_admin.py answers it: (primary, copies)."""
    return {"dataset": KV_DATASET, "tenant_id": "default", "replication_factor": 2,
            "shards": [{"shard": i, "primary": primary, "term": 1, "in_sync": copies,
                        "copies": [{"node_id": n, "in_sync": True, "last_seq": 3}
                                   for n in copies]}
                       for i, (primary, copies) in enumerate(shards)]}


# ---- picking a move -----------------------------------------------------------------------------

def test_a_move_takes_a_copy_to_the_live_node_that_holds_none_of_the_shard():
    doc = placement(("node-0", ["node-0", "node-1"]), ("node-1", ["node-1", "node-2"]))
    for seed in range(20):
        for primary in (True, False):
            shard, source, target = pick_move(doc, NODES, random.Random(seed), primary)
            copies = [c["node_id"] for c in doc["shards"][shard]["copies"]]
            assert source in copies
            assert (source == doc["shards"][shard]["primary"]) == primary
            assert target in NODES and target not in copies


def test_the_same_seed_picks_the_same_moves():
    doc = placement(("node-0", ["node-0", "node-1"]), ("node-1", ["node-1", "node-2"]),
                    ("node-2", ["node-2", "node-0"]))
    first = [pick_move(doc, NODES, rng, i % 2 == 0) for rng in [random.Random(7)]
             for i in range(6)]
    again = [pick_move(doc, NODES, rng, i % 2 == 0) for rng in [random.Random(7)]
             for i in range(6)]
    assert first == again


def test_no_move_when_no_live_node_is_free_or_the_placement_is_unreadable():
    doc = placement(("node-0", ["node-0", "node-1"]))
    assert pick_move(doc, ["node-0", "node-1"], random.Random(1), True) is None   # node-2 down
    assert pick_move(None, NODES, random.Random(1), True) is None
    assert pick_move({"error": {"type": "Unavailable"}}, NODES, random.Random(1), True) is None
    # A single copy moves as the primary's, whichever kind was asked for.
    single = placement(("node-0", ["node-0"]))
    shard, source, target = pick_move(single, NODES, random.Random(1), primary=False)
    assert (shard, source) == (0, "node-0") and target in ("node-1", "node-2")


# ---- how a move ended ---------------------------------------------------------------------------

@pytest.mark.parametrize("copies, seen, expected", [
    (["node-2", "node-1"], True, FINISHED),
    (["node-2", "node-1"], False, FINISHED),     # a lost start answer that was proposed
    (["node-0", "node-1"], True, ROLLED_BACK),
    (["node-0", "node-1"], False, NOT_STARTED),
    (["node-0", "node-1", "node-2"], True, OTHER),   # both: the source never dropped
    (["node-1"], True, OTHER),                        # neither: a copy lost
])
def test_the_placement_after_a_move_says_how_it_ended(copies, seen, expected):
    doc = placement(("node-1", copies))
    assert outcome_of(doc, 0, "node-0", "node-2", seen) == expected


def test_a_placement_without_the_shard_says_nothing():
    assert outcome_of(placement(("node-1", ["node-1"])), 3, "node-0", "node-2", True) is None
    assert outcome_of(None, 0, "node-0", "node-2", True) is None


def test_only_a_4xx_start_answer_is_a_refusal():
    assert start_refused(Reply(400, {"error": {"type": "InvalidArgument"}}))
    assert start_refused(Reply(409, {"error": {"type": "Aborted"}}))
    for reply in (Reply(503, {"error": {"type": "Unavailable"}}), Reply(None, error="timed out"),
                  Reply(None, error="refused", sent=False)):
        assert not start_refused(reply)


def test_the_kv_and_batch_datasets_are_moved():
    assert datasets_for(["kv", "batch", "catalog", "admin"]) == [KV_DATASET, BATCH_DATASET]
    assert datasets_for(["catalog"]) == []


# ---- the verdict --------------------------------------------------------------------------------

def snapshot_shards(copies_per_shard: list[list[str]]) -> list[dict]:
    return [{"shard": s, "primary": copies[0], "term": 1, "copies": copies, "in_sync": copies,
             "status": {n: {"last_seq": 9, "last_term": 1, "vector_count": 3, "digest": "d"}
                        for n in copies}}
            for s, copies in enumerate(copies_per_shard)]


COPIES = {"datasets": {
    f"default/{KV_DATASET}": {"uuid": "u", "shards": snapshot_shards(
        [["node-2", "node-1"], ["node-1", "node-0"]])},
    f"chaos-catalog/{KV_DATASET}": {"uuid": "v", "shards": snapshot_shards([["node-0"]])}}}
MOVE = {"dataset": KV_DATASET, "shard": 0, "from": "node-0", "to": "node-2", "primary": True,
        "move_id": "u-0-node-0-node-2", "requested_at_s": 4.1, "acknowledged": True,
        "seen_in_flight": True, "ended_at_s": 7.3, "seconds": 3.2, "outcome": FINISHED,
        "detail": None, "last_phase": "finishing"}
MOVES = {"at_s": 4.0, "bound_s": 45.0, "healed_at_s": 40.0, "datasets": [KV_DATASET],
         "admin_read_errors": 0, "copies_per_shard": 2,
         "moves": [MOVE, {**MOVE, "shard": 1, "from": "node-2", "to": "node-0",
                          "primary": False, "outcome": ROLLED_BACK, "ended_at_s": 20.0}]}


def with_moves(*changes: dict) -> dict:
    doc = copy.deepcopy(MOVES)
    for move, change in zip(doc["moves"], changes):
        move.update(change)
    return doc


def test_moves_that_ended_finished_or_rolled_back_with_every_shard_whole_pass():
    result = moves_ended(MOVES, COPIES)
    assert result.verdict == PASS, result
    assert "1 finished" in result.summary and "1 rolled-back" in result.summary


@pytest.mark.parametrize("change, why", [
    ({"outcome": None, "ended_at_s": None}, "still in flight"),
    ({"outcome": OTHER, "detail": "placement: both"}, "neither moved nor as before"),
    ({"ended_at_s": 90.0}, "above the bound"),
])
def test_a_move_not_ended_in_time_or_ended_oddly_fails(change, why):
    result = moves_ended(with_moves(change), COPIES)
    assert result.verdict == FAILED
    assert why in result.details[0]


def test_a_shard_left_with_too_few_copies_or_two_on_one_node_fails():
    for copies in (["node-2"], ["node-2", "node-2"], ["node-0", "node-1", "node-2"]):
        doctored = copy.deepcopy(COPIES)
        doctored["datasets"][f"default/{KV_DATASET}"]["shards"][0]["copies"] = copies
        result = moves_ended(MOVES, doctored)
        assert result.verdict == FAILED and "wanted 2 on distinct nodes" in result.details[0]


def test_a_run_in_which_no_move_finished_is_not_a_pass():
    assert moves_ended(with_moves({"outcome": ROLLED_BACK}), COPIES).verdict == INCONCLUSIVE
    assert moves_ended({**MOVES, "moves": []}, COPIES).verdict == INCONCLUSIVE


def test_the_verdict_adds_moves_ended_only_for_a_run_that_moved():
    assert "moves-ended" not in [c.name for c in evaluate([], {}, copies=COPIES).checkers]
    report = evaluate([], {}, copies=COPIES, moves=with_moves({"outcome": OTHER}))
    assert report.checker("moves-ended").verdict == FAILED and not report.ok


# ---- the registry -------------------------------------------------------------------------------

def test_the_moves_scenario_runs_three_nodes_under_node_faults_with_its_own_seeds():
    scenario = scenarios.get("moves")
    assert scenario.moves_at_s is not None and 0 < scenario.moves_at_s < scenario.duration_s
    assert scenario.topology().nodes == 3
    assert {s.name for s in scenario.specs()} >= {"kill", "primary-kill", "pause",
                                                  "primary-pause", "leader-isolation"}
    assert scenario.meta_faults      # the leader steps moves along: it is hit too
    others = {seed for s in scenarios.SCENARIOS if s.name != "moves" for seed in s.matrix_seeds}
    assert scenario.matrix_seeds and not set(scenario.matrix_seeds) & others
    # No other scenario moves copies or changes the cluster's size.
    assert [s.name for s in scenarios.SCENARIOS if s.moves_at_s is not None] == ["moves"]
    assert {s.topology().nodes for s in scenarios.SCENARIOS if s.name != "moves"} == {2}
