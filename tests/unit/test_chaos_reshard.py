"""The `reshard` chaos scenario's pure pieces: how the probe reads a split's progress and a
start's answer (chaos/reshard_probe.py), the rows-placed judgement (chaos.checkers
.rows_out_of_place) and the two checkers it adds to the verdict (reshard-finished, rows-placed).
The scenario itself runs against a real cluster in the chaos matrix (`make chaos`)."""

from __future__ import annotations

import copy

import pytest

from chaos import scenarios
from chaos.checkers import rows_out_of_place
from chaos.history import OK, Op
from chaos.reshard_probe import (BUILDING, NOT_STARTED, SWITCHED, UNEXPECTED, classify_progress,
                                 splits_for, start_refused)
from chaos.verdict import FAILED, INCONCLUSIVE, PASS, SKIPPED, evaluate, reshard_finished, rows_placed
from chaos.workload import BATCH_DATASET, KV_DATASET, Reply


# ---- the probe's reading of the admin API ----------------------------------------------------

def progress(state: str, shard_count: int, **extra) -> dict:
    return {"dataset": KV_DATASET, "tenant_id": "default", "state": state,
            "shard_count": shard_count, "epoch": 3, "split_epoch": 0, **extra}


@pytest.mark.parametrize("doc, expected", [
    (progress("done", 4), SWITCHED),
    (progress("building", 2, old_count=2, new_count=4, children_built=1, children_needed=4),
     BUILDING),
    (progress("none", 2), NOT_STARTED),
    (progress("done", 2), NOT_STARTED),          # an earlier split's switch, not this one
    (progress("building", 2, old_count=2, new_count=8), UNEXPECTED),
    (progress("done", 8), UNEXPECTED),
    (progress("none", 3), UNEXPECTED),
    ({"error": {"type": "Internal"}}, UNEXPECTED),
    (None, UNEXPECTED),
])
def test_a_progress_document_says_whether_the_split_switched_builds_or_never_started(doc,
                                                                                     expected):
    assert classify_progress(doc, 2, 4) == expected


def test_only_a_refusal_no_retry_changes_stops_the_probe_starting_the_split():
    assert start_refused(Reply(403, {"error": {"type": "PermissionDenied"}}))
    assert start_refused(Reply(404, {"error": {"type": "NotFound"}}))
    # A split already in progress, a move in flight, a count already doubled, a 5xx or a lost
    # answer: the next progress read says what happened.
    for reply in (Reply(409, {"error": {"type": "Aborted", "retriable": True}}),
                  Reply(400, {"error": {"type": "InvalidArgument"}}),
                  Reply(503, {"error": {"type": "Unavailable"}}),
                  Reply(None, error="timed out"), Reply(None, error="refused", sent=False)):
        assert not start_refused(reply)


def test_every_workload_dataset_that_runs_is_split_to_twice_its_shards():
    assert splits_for(["kv", "batch", "catalog"]) == [(KV_DATASET, 2), (BATCH_DATASET, 4)]
    assert splits_for(["catalog"]) == []


# ---- rows placed ---------------------------------------------------------------------------------

READ = {"k0": "kv-0-1", "k1": None, "k2": "kv-2-7"}
LISTED = [["k0", "kv-0-1"], ["k2", "kv-2-7"]]


def test_rows_listed_once_with_the_values_read_by_id_and_all_purged_are_in_place():
    assert rows_out_of_place(LISTED, READ, stored_rows=2) == []


def test_a_row_listed_twice_is_held_by_two_shards():
    [problem] = rows_out_of_place(LISTED + [["k2", "kv-2-7"]], READ)
    assert "'k2' is listed 2 times" in problem


def test_a_listed_row_that_a_read_by_id_misses_is_on_a_shard_it_does_not_belong_to():
    [problem] = rows_out_of_place(LISTED + [["k1", "kv-1-3"]], READ)
    assert "'k1'" in problem and "does not belong" in problem


def test_a_listed_value_other_than_the_read_by_id_is_a_stale_copy_on_another_shard():
    [problem] = rows_out_of_place([["k0", "kv-0-0"], ["k2", "kv-2-7"]], READ)
    assert "'k0'" in problem and "stale" in problem


def test_a_row_read_by_id_that_no_shard_lists_is_a_problem_and_so_is_a_stranger():
    problems = rows_out_of_place([["k0", "kv-0-1"], ["zz", "?"]], READ)
    assert any("'k2'" in p and "misses it" in p for p in problems)
    assert any("'zz'" in p and "no workload" in p for p in problems)


def test_stores_holding_more_rows_than_they_list_kept_moved_rows_never_purged():
    [problem] = rows_out_of_place(LISTED, READ, stored_rows=3)
    assert "1 row(s) left on shards that do not own them" in problem


def test_ids_no_final_read_answered_are_not_judged():
    assert rows_out_of_place(LISTED + [["k1", "kv-1-3"]], {"k0": "kv-0-1", "k2": "kv-2-7"},
                             unread={"k1"}) == []


# ---- the verdict ---------------------------------------------------------------------------------

def shards(count: int, rows_each: int) -> list[dict]:
    return [{"shard": s, "primary": "node-0", "term": 1, "copies": ["node-0", "node-1"],
             "in_sync": ["node-0", "node-1"],
             "status": {n: {"last_seq": 9, "last_term": 1, "vector_count": rows_each,
                            "digest": f"d{s}"} for n in ("node-0", "node-1")}}
            for s in range(count)]


COPIES = {"datasets": {f"default/{KV_DATASET}": {"uuid": "u", "shards": shards(4, 1)},
                       f"chaos-catalog/{KV_DATASET}": {"uuid": "v", "shards": shards(2, 0)}}}
SPLIT = {"dataset": KV_DATASET, "from_shards": 2, "to_shards": 4, "requested_at_s": 6.0,
         "building_seen_at_s": 6.3, "switched_by_s": 7.5, "seconds": 1.5, "start_attempts": 1,
         "start_errors": [], "progress_reads": 6, "progress_errors": 0,
         "last_progress": progress("done", 4), "error": None, "count_at_final_reads": 4,
         "listed": [["k0", "kv-0-1"], ["k1", "kv-1-2"], ["k2", "kv-2-7"], ["k3", "kv-3-1"]],
         "list_error": None, "ids": ["k0", "k1", "k2", "k3", "k4"]}
RESHARD = {"at_s": 6.0, "bound_s": 45.0, "healed_at_s": 30.0, "splits": [SPLIT]}
FINAL = {"k0": "kv-0-1", "k1": "kv-1-2", "k2": "kv-2-7", "k3": "kv-3-1", "k4": None}


def with_split(**changes) -> dict:
    doc = copy.deepcopy(RESHARD)
    doc["splits"][0].update(changes)
    return doc


def test_a_split_switched_in_time_and_judged_at_its_new_count_passes():
    result = reshard_finished(RESHARD, COPIES)
    assert result.verdict == PASS, result
    assert f"{KV_DATASET} 2->4 in 1.5s" in result.summary


@pytest.mark.parametrize("changes, why", [
    ({"switched_by_s": None, "seconds": None}, "not switched within 45s after the heal"),
    ({"switched_by_s": 76.0, "seconds": 70.0}, "above the bound"),
    ({"count_at_final_reads": 2}, "the final reads ran at 2 shards"),
    ({"error": "start refused: 403 PermissionDenied"}, "start refused"),
])
def test_a_split_not_switched_in_time_or_not_judged_at_its_new_count_fails(changes, why):
    result = reshard_finished(with_split(**changes), COPIES)
    assert result.verdict == FAILED
    assert why in result.details[0]


def test_a_copy_snapshot_of_the_old_count_fails_reshard_finished():
    old = {"datasets": {f"default/{KV_DATASET}": {"uuid": "u", "shards": shards(2, 2)}}}
    result = reshard_finished(RESHARD, old)
    assert result.verdict == FAILED and "covers 2 shard(s)" in result.details[0]


def test_a_run_that_split_nothing_is_not_a_pass():
    assert reshard_finished({"splits": []}, COPIES).verdict == INCONCLUSIVE
    assert rows_placed({"splits": []}, FINAL, (), COPIES).verdict == SKIPPED


def test_rows_placed_counts_each_shards_rows_from_the_copy_snapshot():
    assert rows_placed(RESHARD, FINAL, (), COPIES).verdict == PASS
    unpurged = copy.deepcopy(COPIES)
    for status in unpurged["datasets"][f"default/{KV_DATASET}"]["shards"][3]["status"].values():
        status["vector_count"] = 2
    result = rows_placed(RESHARD, FINAL, (), unpurged)
    assert result.verdict == FAILED and "never purged" in result.details[0]


def test_copies_that_store_different_row_counts_are_left_to_copies_agree():
    diverged = copy.deepcopy(COPIES)
    diverged["datasets"][f"default/{KV_DATASET}"]["shards"][3]["status"]["node-0"][
        "vector_count"] = 2
    result = rows_placed(RESHARD, FINAL, (), diverged)
    assert result.verdict == PASS
    assert "the copies of shard 3 differ (see copies-agree)" in result.summary


def test_a_listing_that_could_not_be_read_leaves_rows_placed_inconclusive():
    result = rows_placed(with_split(listed=None, list_error="listing: 503"), FINAL, (), COPIES)
    assert result.verdict == INCONCLUSIVE and "503" in result.summary


def _history() -> list[Op]:
    ops = []
    for i, (key, value) in enumerate(FINAL.items()):
        if value is not None:
            ops.append(Op(process="kv-0", kind="put", key=key, value=value, invoke_ns=10 * i,
                          complete_ns=10 * i + 5, status=OK, id=len(ops)))
    ops.append(Op(process="reshard", kind="reshard", key=KV_DATASET, value=4, invoke_ns=1,
                  complete_ns=100, status=OK, output={"seconds": 1.5}, id=len(ops)))
    return ops


def test_the_verdict_adds_the_split_checkers_only_for_a_run_that_split():
    names = [c.name for c in evaluate(_history(), FINAL, copies=COPIES).checkers]
    assert "reshard-finished" not in names and "rows-placed" not in names
    report = evaluate(_history(), FINAL, copies=COPIES, reshard=RESHARD)
    verdicts = {c.name: c.verdict for c in report.checkers}
    assert verdicts["reshard-finished"] == PASS and verdicts["rows-placed"] == PASS
    # The split is an op of the history too, which no other checker mistakes for a write.
    assert verdicts["kv-linearizable"] == PASS and verdicts["no-lost-writes"] == PASS
    assert report.op_counts["reshard"] == {OK: 1}


def test_a_doctored_listing_fails_the_verdict():
    doctored = with_split(listed=SPLIT["listed"] + [["k4", "kv-4-9"]])
    report = evaluate(_history(), FINAL, copies=COPIES, reshard=doctored)
    assert not report.ok
    assert report.checker("rows-placed").verdict == FAILED


# ---- the registry -----------------------------------------------------------------------------------

def test_the_reshard_scenario_splits_under_node_faults_within_its_run_and_has_its_own_seeds():
    scenario = scenarios.get("reshard")
    assert scenario.reshard_at_s is not None and 0 < scenario.reshard_at_s < scenario.duration_s
    assert {s.name for s in scenario.specs()} >= {"kill", "primary-kill", "pause"}
    others = {seed for s in scenarios.SCENARIOS if s.name != "reshard" for seed in s.matrix_seeds}
    assert scenario.matrix_seeds and not set(scenario.matrix_seeds) & others
    # No other scenario splits (their runs and verdicts are unchanged).
    assert [s.name for s in scenarios.SCENARIOS if s.reshard_at_s is not None] == ["reshard"]
