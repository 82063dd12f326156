"""The `moves` and `drain` chaos scenarios' pure pieces: how the probes pick a move, read how it
ended and read a node's state (chaos/move_probe.py), and the moves-ended and drain-finished
checkers they add to the verdict. The scenarios themselves run against a real three-node cluster
in the chaos matrix (`make chaos`)."""

from __future__ import annotations

import copy
import os
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from chaos import scenarios
from chaos.nemesis import make_schedule
from chaos.harness import Proc, ProxiedCluster
from chaos.move_probe import (FINISHED, NOT_STARTED, OTHER, ROLLED_BACK, datasets_for,
                              node_state, outcome_of, pick_move, start_refused)
from chaos.verdict import (FAILED, INCONCLUSIVE, PASS, drain_finished, evaluate, join_balanced,
                           moves_ended)
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


# ---- a drain ------------------------------------------------------------------------------------

def test_a_node_list_says_the_drained_nodes_state_or_that_it_is_gone():
    doc = {"nodes": [{"node_id": "node-0", "state": "live", "copies": 3},
                     {"node_id": "node-2", "state": "draining", "copies": 2}]}
    assert node_state(doc, "node-2") == "draining"
    assert node_state(doc, "node-0") == "live"
    assert node_state(doc, "node-1") == "gone"
    assert node_state({"error": {"type": "Unavailable"}}, "node-2") is None
    assert node_state(None, "node-2") is None


AFTER_DRAIN = {"datasets": {
    f"default/{KV_DATASET}": {"uuid": "u", "shards": snapshot_shards(
        [["node-0", "node-1"], ["node-1", "node-0"]])},
    f"chaos-catalog/c1": {"uuid": "v", "shards": snapshot_shards([["node-0"]])}}}
DRAIN = {"node": "node-2", "at_s": 5.0, "bound_s": 45.0, "healed_at_s": 40.0,
         "requested_at_s": 5.0, "draining_seen_at_s": 5.6, "drained_at_s": 19.7,
         "removed_at_s": 19.7, "drain_attempts": 1, "drain_errors": [], "remove_attempts": 1,
         "remove_errors": [], "copies_left": 0, "planned_moves": 6, "copies_per_shard": 2,
         "datasets": [KV_DATASET]}


def test_a_node_drained_and_removed_with_every_shard_whole_passes():
    result = drain_finished(DRAIN, AFTER_DRAIN)
    assert result.verdict == PASS, result
    assert "node-2 drained 14.7s after the first request" in result.summary


@pytest.mark.parametrize("change, why", [
    ({"drained_at_s": None, "removed_at_s": None, "copies_left": 2}, "2 copies left"),
    ({"removed_at_s": None}, "drained but not removed"),
    ({"drained_at_s": 80.0, "removed_at_s": 90.0}, "above the bound"),
])
def test_a_drain_not_done_in_time_fails(change, why):
    result = drain_finished({**DRAIN, **change}, AFTER_DRAIN)
    assert result.verdict == FAILED and why in result.details[0]


def test_a_copy_left_on_the_drained_node_fails_whatever_the_dataset():
    for label in (f"default/{KV_DATASET}", "chaos-catalog/c1"):
        doctored = copy.deepcopy(AFTER_DRAIN)
        doctored["datasets"][label]["shards"][0]["copies"] = ["node-0", "node-2"]
        result = drain_finished(DRAIN, doctored)
        assert result.verdict == FAILED
        assert f"{label}/0: a copy on node-2 after its drain" in result.details


def test_a_node_that_registered_again_after_its_removal_may_hold_new_datasets_only():
    # A nemesis restarted the removed node: it joined again, and the catalog workload placed a
    # new dataset on it. The workload datasets, older than the drain, still may not be.
    doctored = copy.deepcopy(AFTER_DRAIN)
    doctored["datasets"]["chaos-catalog/c1"]["shards"][0]["copies"] = ["node-0", "node-2"]
    rejoined = {**DRAIN, "rejoined_at_s": 24.0}
    assert drain_finished(DRAIN, doctored).verdict == FAILED
    result = drain_finished(rejoined, doctored)
    assert result.verdict == PASS and "registered again at 24.0s" in result.summary
    doctored["datasets"][f"default/{KV_DATASET}"]["shards"][0]["copies"] = ["node-0", "node-2"]
    result = drain_finished(rejoined, doctored)
    assert result.verdict == FAILED
    assert result.details == [f"default/{KV_DATASET}/0: a copy on node-2 after its drain"]


# ---- a join -------------------------------------------------------------------------------------

AFTER_JOIN = {"datasets": {
    f"default/{KV_DATASET}": {"uuid": "u", "shards": snapshot_shards(
        [["node-0", "node-2"], ["node-1", "node-0"], ["node-2", "node-1"]])},
    "chaos-catalog/c1": {"uuid": "v", "shards": snapshot_shards([["node-0"]])}}}
JOIN = {"node": "node-2", "datasets": [KV_DATASET], "at_s": 5.0, "bound_s": 45.0,
        "healed_at_s": 40.0, "started_at_s": 5.0, "live_at_s": 6.7, "converged_at_s": 44.4,
        "rounds": 35, "round_errors": [], "moves_planned": 14, "copies": 2,
        "copies_per_shard": 2}


def test_a_late_member_waits_through_heals_and_outlives_the_thread_that_joins_it(tmp_path):
    """A heal before the join does not start the late node. The probe that joins it runs in a
    thread that ends before the run does, and the kernel kills a child when the thread that
    forked it ends (PR_SET_PDEATHSIG): the join must fork from a thread that lives on."""
    cluster = ProxiedCluster(str(tmp_path), late=("node-2",))
    # What start() sets up for a late member, without the rest of a cluster.
    cluster.procs["node-2"] = Proc("node-2", [sys.executable, "-c", "import time; "
                                              "time.sleep(60)"], str(tmp_path / "node-2.log"),
                                   dict(os.environ))
    cluster._waiting = {"node-2"}
    cluster._spawner = ThreadPoolExecutor(1)
    try:
        assert cluster.heal_processes() == [] and cluster.procs["node-2"].popen is None
        cluster.restart("node-2")
        assert cluster.procs["node-2"].popen is None
        joiner = threading.Thread(target=cluster.join, args=("node-2",))
        joiner.start()
        joiner.join(30)
        assert not joiner.is_alive() and cluster.procs["node-2"].alive
        watched_until = time.monotonic() + 1.0
        while time.monotonic() < watched_until:     # a PDEATHSIG kill lands at once
            assert cluster.procs["node-2"].alive, "the node died with the thread that joined it"
            time.sleep(0.05)
    finally:
        cluster.stop()


def test_a_joined_node_that_ends_with_copies_and_every_shard_whole_passes():
    result = join_balanced(JOIN, AFTER_JOIN)
    assert result.verdict == PASS, result
    assert "node-2 live at 6.7s, holds 2 copies after 14 planned" in result.summary


@pytest.mark.parametrize("change, why", [
    ({"live_at_s": None, "converged_at_s": None}, "node-2 never showed live"),
    ({"converged_at_s": None}, "copies not even within 45s after the heal"),
    ({"converged_at_s": 90.0}, "above the bound"),
])
def test_a_join_not_even_in_time_fails(change, why):
    result = join_balanced({**JOIN, **change}, AFTER_JOIN)
    assert result.verdict == FAILED and why in result.details[0]


def test_a_joined_node_left_without_a_workload_copy_fails():
    # Copies on it of other datasets (the catalog workload's, created after it joined) do not
    # count: the workload datasets were placed before it ran, so only a move puts them there.
    doctored = copy.deepcopy(AFTER_JOIN)
    doctored["datasets"][f"default/{KV_DATASET}"]["shards"] = snapshot_shards(
        [["node-0", "node-1"], ["node-1", "node-0"], ["node-0", "node-1"]])
    doctored["datasets"]["chaos-catalog/c1"]["shards"][0]["copies"] = ["node-2"]
    result = join_balanced(JOIN, doctored)
    assert result.verdict == FAILED
    assert result.details == [f"node-2 holds no copy of {KV_DATASET} after the rebalancing"]


# ---- what a drain and a join share ---------------------------------------------------------------

SCALING = pytest.mark.parametrize("checker, name, arg, doc, snapshot, unfinished", [
    (drain_finished, "drain-finished", "drain", DRAIN, AFTER_DRAIN, {"removed_at_s": None}),
    (join_balanced, "join-balanced", "join", JOIN, AFTER_JOIN, {"converged_at_s": None}),
], ids=["drain", "join"])


@SCALING
def test_a_workload_shard_left_with_one_copy_after_the_scaling_fails(checker, name, arg, doc,
                                                                     snapshot, unfinished):
    doctored = copy.deepcopy(snapshot)
    doctored["datasets"][f"default/{KV_DATASET}"]["shards"][1]["copies"] = ["node-1"]
    result = checker(doc, doctored)
    assert result.verdict == FAILED and "wanted 2 on distinct nodes" in result.details[-1]


@SCALING
def test_the_verdict_adds_the_scaling_checker_only_for_a_run_that_scaled(checker, name, arg, doc,
                                                                         snapshot, unfinished):
    assert name not in [c.name for c in evaluate([], {}, copies=snapshot).checkers]
    report = evaluate([], {}, copies=snapshot, **{arg: {**doc, **unfinished}})
    assert report.checker(name).verdict == FAILED and not report.ok


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
    # No other scenario moves copies by hand, and only those that move copies run three nodes.
    assert [s.name for s in scenarios.SCENARIOS if s.moves_at_s is not None] == ["moves"]
    assert {s.name for s in scenarios.SCENARIOS if s.topology().nodes != 2} == {"moves",
                                                                                "drain", "join"}


def test_the_join_matrix_cuts_the_new_node_off_before_and_after_its_start():
    """The joining node is partitioned in the matrix twice over: from before its start (it
    starts cut off and registers once healed) and once it runs (its moves are in flight)."""
    scenario = scenarios.get("join")
    late = scenario.topology().node_members[-1]
    across_start, after_start = set(), set()
    for seed in scenario.matrix_seeds:
        for event in make_schedule(seed, scenario.duration_s, scenario.specs(),
                                   scenario.topology()):
            if event.nemesis != "partition" or event.target != late:
                continue
            if event.start_s < scenario.join_at_s < event.start_s + event.duration_s:
                across_start.add(seed)
            elif event.start_s > scenario.join_at_s:
                after_start.add(seed)
    assert across_start and after_start


@pytest.mark.parametrize("name, at", [("drain", "drain_at_s"), ("join", "join_at_s")])
def test_the_scaling_scenarios_run_three_nodes_under_node_faults_with_their_own_seeds(name, at):
    """`drain` drains one of three nodes; `join` starts the third late."""
    scenario = scenarios.get(name)
    assert getattr(scenario, at) is not None and 0 < getattr(scenario, at) < scenario.duration_s
    assert scenario.topology().nodes == 3
    assert {s.name for s in scenario.specs()} >= {"kill", "primary-kill", "pause"}
    others = {seed for s in scenarios.SCENARIOS if s.name != name for seed in s.matrix_seeds}
    assert scenario.matrix_seeds and not set(scenario.matrix_seeds) & others
    assert [s.name for s in scenarios.SCENARIOS if getattr(s, at) is not None] == [name]
