"""The chaos harness against a real cluster whose every link runs through its own proxy.

`make test` runs ONE short seeded run of the `node-faults` scenario (a node partition,
router->node latency spikes, kill -9 of a node and kill -9 of a shard's primary, with the kv,
batch and catalog workloads) and requires every checker to pass (every copy of every shard back
in sync with the same content included) and the service to recover within the bound. The same
recorded
history, doctored (a lost write, a partial batch, a partial read, a catalog anomaly), must then
FAIL the same verdict code: the checkers are not vacuous. It also runs one short scenario by name
through the command line (`tributary chaos run --scenario NAME`), as an operator would.

The matrix (every scenario of chaos/scenarios.py at each of its seeds, and the CLI's failure
path) runs only with TRIBUTARY_CHAOS_FULL=1 (`make chaos`). TRIBUTARY_CHAOS_DURATION sets its
run length (default: each scenario's own).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys

import pytest

from chaos.history import OK, UNKNOWN, Op, load_history
from chaos.nemesis import make_schedule, parse_specs
from chaos.run import RunConfig, run_chaos, save_artifacts
from chaos.scenarios import SCENARIOS, get as get_scenario
from chaos.topology import Topology
from chaos.verdict import FAILED, PASS, evaluate

pytestmark = pytest.mark.integration

# make test's run: the node-faults scenario, shortened.
SHORT = get_scenario("node-faults")
SEED = 1
DURATION_S = 25.0
RECOVERY_BOUND_S = 30.0
# The run by name through the command line: 8 s in which seed 5 slows router->node-0, then
# kills node-1.
CLI_SCENARIO = "node-faults"
CLI_SEED = 5
CLI_DURATION_S = 8.0
FULL = os.environ.get("TRIBUTARY_CHAOS_FULL") == "1"
FULL_DURATION_S = (float(os.environ["TRIBUTARY_CHAOS_DURATION"])
                   if os.environ.get("TRIBUTARY_CHAOS_DURATION") else None)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRIBUTARY = os.path.join(os.path.dirname(sys.executable), "tributary")


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    config = RunConfig(seed=SEED, duration_s=DURATION_S, nemeses=SHORT.specs(),
                       data_dir=str(tmp_path_factory.mktemp("chaos")),
                       recovery_bound_s=RECOVERY_BOUND_S, scenario=SHORT.name)
    lines: list[str] = []

    def out(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    result = run_chaos(config, out=out)
    result.lines = lines
    return result


def verdicts(report) -> dict[str, str]:
    return {c.name: c.verdict for c in report.checkers}


def rejudge(result, history=None, final_state=None, copies=None):
    return evaluate(history if history is not None else result.history,
                    final_state if final_state is not None else result.final_state,
                    unread_keys=result.unread, recovery_samples=result.samples,
                    recovery_bound_s=result.config.recovery_bound_s,
                    workloads=result.config.workloads,
                    copies=copies if copies is not None else result.copies)


def test_short_seeded_run_passes_every_checker(short_run):
    r = short_run
    assert r.error is None, r.error
    report = r.report
    assert report.ok, "\n".join(report.lines())
    assert set(verdicts(report).values()) == {PASS}, verdicts(report)
    assert r.exit_code == 0
    # Recovery happened, within the bound.
    assert report.recovery_s is not None and report.recovery_s <= RECOVERY_BOUND_S
    # The run printed its seed and schedule, and the schedule is the seed's.
    assert f"seed {SEED}" in r.lines[0]
    assert r.schedule == make_schedule(SEED, DURATION_S, SHORT.specs(), Topology())
    assert {e.nemesis for e in r.schedule} == {"partition", "latency", "kill", "primary-kill"}
    # Every fault was really injected and undone.
    started = {j["event"] for j in r.journal if j["action"] == "start"}
    ended = {j["event"] for j in r.journal if j["action"] == "end"}
    assert started == {e.index for e in r.schedule}
    assert ended == {e.index for e in r.schedule}
    assert not [j for j in r.journal if j["action"] in ("error", "skip")]
    # The primary kill hit the node that was the shard's primary when it started (whether its
    # other copy was back in sync by then depends on timing: node-1 was partitioned just before).
    kill = next(j for j in r.journal if j["nemesis"] == "primary-kill" and j["action"] == "start")
    assert kill["primary"] in Topology().node_members
    assert kill["primary"] in kill["in_sync"].split(",")
    assert sorted(kill["copies"].split(",")) == Topology().node_members
    # Every shard of the workloads' datasets was compared across its two copies.
    workload = {label: d["shards"] for label, d in r.copies["datasets"].items()
                if label in ("default/chaos-kv", "default/chaos-batch")}
    assert {label: len(shards) for label, shards in workload.items()} == {
        "default/chaos-kv": 2, "default/chaos-batch": 4}
    assert all(len(s["copies"]) == 2 and len(s["status"]) == 2
               for shards in workload.values() for s in shards), r.copies
    # Enough happened for the verdict to mean something.
    counts = report.op_counts
    assert counts["put"].get(OK, 0) >= 10 and counts["get"].get(OK, 0) >= 10
    assert counts["batch_put"].get(OK, 0) >= 3 and counts["batch_get"].get(OK, 0) >= 1
    assert counts["list"].get(OK, 0) >= 2
    assert not r.unread


# ---- negative controls: the recorded history, doctored, must fail ------------------------------

def _time_after_workload(history: list[Op]) -> tuple[int, int]:
    """(just after every workload op completed, the first final read's invocation)."""
    workload = [op for op in history if op.process != "final"]
    last = max(op.complete_ns for op in workload if op.complete_ns is not None)
    first_final = min(op.invoke_ns for op in history if op.process == "final")
    assert last + 10 < first_final
    return last + 1, first_final


def test_an_injected_lost_write_fails_the_verdict(short_run):
    history = copy.deepcopy(short_run.history)
    t, _ = _time_after_workload(history)
    # A key whose final value only acknowledged writes explain (no unknown write could still
    # be the last one), so an acknowledged write after all of them must be what is read.
    unknown_values = {(op.key, op.value) for op in history
                      if op.status == UNKNOWN and op.kind in ("put", "delete")}
    candidates = [k for k, v in short_run.final_state.items()
                  if k.startswith("k") and v is not None and (k, v) not in unknown_values
                  and not any(op.key == k and op.kind == "delete" and op.status == UNKNOWN
                              for op in history)]
    assert candidates, "no key to inject a lost write on"
    key = candidates[0]
    history.append(Op(process="injected", kind="put", key=key, value="lost-write",
                      invoke_ns=t, complete_ns=t + 1, status=OK, id=len(history)))
    report = rejudge(short_run, history=history)
    assert not report.ok
    assert verdicts(report)["no-lost-writes"] == FAILED
    assert verdicts(report)["kv-linearizable"] == FAILED
    assert "lost-write" in "\n".join(report.checker("no-lost-writes").details)


def test_an_injected_partial_batch_fails_the_verdict(short_run):
    history = short_run.history
    batch = next(op for op in history if op.kind == "batch_put" and op.status == OK)
    final = dict(short_run.final_state)
    final[sorted(batch.value)[1]] = None
    report = rejudge(short_run, final_state=final)
    assert verdicts(report)["no-partial-batches"] == FAILED
    assert not report.ok


def test_an_injected_partial_read_fails_the_verdict(short_run):
    history = copy.deepcopy(short_run.history)
    t, _ = _time_after_workload(history)
    batch = next(op for op in history if op.kind == "batch_put" and op.status == OK)
    seen = dict(batch.value)
    seen[sorted(seen)[0]] = None
    history.append(Op(process="injected", kind="batch_get", value=list(seen), output=seen,
                      invoke_ns=t, complete_ns=t + 1, status=OK, id=len(history)))
    report = rejudge(short_run, history=history)
    assert verdicts(report)["batch-reads-atomic"] == FAILED
    assert verdicts(report)["kv-linearizable"] == FAILED


def test_an_injected_catalog_anomaly_fails_the_verdict(short_run):
    history = copy.deepcopy(short_run.history)
    t, _ = _time_after_workload(history)
    history.append(Op(process="injected", kind="create", key="never-used", output="ok",
                      invoke_ns=t, complete_ns=t + 1, status=OK, id=len(history)))
    history.append(Op(process="injected", kind="list", output=[], invoke_ns=t + 2,
                      complete_ns=t + 3, status=OK, id=len(history) + 1))
    report = rejudge(short_run, history=history)
    assert verdicts(report)["catalog-linearizable"] == FAILED


def test_an_injected_copy_divergence_fails_the_verdict(short_run):
    copies = copy.deepcopy(short_run.copies)
    shard = copies["datasets"]["default/chaos-kv"]["shards"][0]
    node = sorted(shard["status"])[1]
    shard["status"][node]["digest"] = "0" * 64
    report = rejudge(short_run, copies=copies)
    assert verdicts(report)["copies-agree"] == FAILED and not report.ok
    assert "default/chaos-kv shard 0" in report.checker("copies-agree").details[0]


def test_a_saved_history_gets_the_same_verdict(short_run, tmp_path):
    directory = save_artifacts(short_run, str(tmp_path / "saved"))
    history = load_history(os.path.join(directory, "history.json"))
    with open(os.path.join(directory, "schedule.json")) as f:
        schedule = json.load(f)
    assert schedule["seed"] == SEED and len(schedule["events"]) == len(short_run.schedule)
    with open(os.path.join(directory, "final_state.json")) as f:
        copies = json.load(f)["copies"]
    again = rejudge(short_run, history=history, copies=copies)
    assert verdicts(again) == verdicts(short_run.report)


# ---- a scenario by name, through the command line -------------------------------------------------

def test_a_scenario_run_by_name_from_the_command_line_passes(tmp_path):
    """`tributary chaos run --scenario NAME` plays that scenario's faults and exits 0 on a pass."""
    proc = subprocess.run(
        [TRIBUTARY, "chaos", "run", "--scenario", CLI_SCENARIO, "--seed", str(CLI_SEED),
         "--duration", f"{CLI_DURATION_S:g}", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert f"seed {CLI_SEED}" in lines[0] and f"scenario {CLI_SCENARIO}" in lines[0], lines[0]
    assert (f"replay with: tributary chaos run --scenario {CLI_SCENARIO} --seed {CLI_SEED} "
            f"--duration {CLI_DURATION_S:g}") in proc.stdout
    # The printed schedule is the scenario's, and it holds at least one fault.
    expected = make_schedule(CLI_SEED, CLI_DURATION_S, get_scenario(CLI_SCENARIO).specs(),
                             Topology())
    assert expected
    for event in expected:
        assert "  " + event.describe() in lines
    assert f"chaos run: PASS (seed {CLI_SEED}" in proc.stdout
    # A pass removes the run's directory (nothing is left running or kept).
    assert os.listdir(tmp_path) == []


# ---- the full matrix (make chaos) ------------------------------------------------------------------

# Real violations the matrix found, by (scenario, seed) -> (reason, strict), until they are
# fixed (chaos/DESIGN.md: reported with the seed, marked xfail with the reason, not hidden).
# strict=False only for a failure that depends on thread timing and so does not fail every run:
# a strict mark would then fail `make chaos` whenever the race went the other way.
# None open. Fixed since they were found: reshard 128 and 129 (b2dc84b: a child reported built
# that was never built) and reshard 127 (453fc05: a paused copy lost a 2PC batch's row;
# d973f9e: a copy promoted while it built its child served a stale value after the switch; and
# a copy restarted after a snapshot replayed only its last logged op, missing four batches), and
# reshard 128 again (c69a746: a child whose split switched while its node started was opened at
# its first request, its log not replayed: two batches' rows missing, one row on two shards).
KNOWN_FAILURES: dict[tuple[str, int], tuple[str, bool]] = {}

MATRIX = [pytest.param(scenario, seed, id=f"{scenario.name}-{seed}", marks=(
              [pytest.mark.xfail(reason=KNOWN_FAILURES[scenario.name, seed][0],
                                 strict=KNOWN_FAILURES[scenario.name, seed][1])]
              if (scenario.name, seed) in KNOWN_FAILURES else []))
          for scenario in SCENARIOS for seed in scenario.matrix_seeds]

full_only = pytest.mark.skipif(not FULL, reason="the full chaos matrix runs with "
                                                "TRIBUTARY_CHAOS_FULL=1 (make chaos)")


@full_only
@pytest.mark.parametrize("scenario, seed", MATRIX)
def test_every_scenario_passes_every_checker_at_each_matrix_seed(tmp_path, scenario, seed):
    duration_s = FULL_DURATION_S or scenario.duration_s
    result = run_chaos(RunConfig(seed=seed, duration_s=duration_s, nemeses=scenario.specs(),
                                 data_dir=str(tmp_path), scenario=scenario.name,
                                 topology=scenario.topology()),
                       out=lambda line: print(line, flush=True))
    assert result.error is None, result.error
    if scenario.reshard_at_s is not None:
        # A split scenario is judged by its split checkers too (and at the new shard count:
        # reshard-finished checks that the final reads and the copy snapshot saw it).
        names = {c.name for c in result.report.checkers}
        assert {"reshard-finished", "rows-placed"} <= names, names
    if scenario.moves_at_s is not None:
        assert "moves-ended" in {c.name for c in result.report.checkers}
    if scenario.drain_at_s is not None:
        assert "drain-finished" in {c.name for c in result.report.checkers}
    if scenario.join_at_s is not None:
        assert "join-balanced" in {c.name for c in result.report.checkers}
    assert result.report.ok, (f"{scenario.name} seed {seed}: history saved in "
                              f"{result.saved_to}\n" + "\n".join(result.report.lines()))


@full_only
def test_cli_failure_saves_history_and_schedule(tmp_path):
    """A run that cannot pass (recovery bound 0 s) exits 1 and saves what replays it."""
    proc = subprocess.run(
        [sys.executable, "-m", "tributary.cli", "chaos", "run", "--seed", "7", "--duration",
         "10", "--nemesis", "kill:node", "--workload", "kv", "--recovery-bound", "0",
         "--data-dir", str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "seed 7" in proc.stdout.splitlines()[0]
    match = re.search(r"saved in (\S+)", proc.stdout)
    assert match, proc.stdout
    saved = match.group(1)
    assert os.path.exists(os.path.join(saved, "history.json"))
    with open(os.path.join(saved, "schedule.json")) as f:
        doc = json.load(f)
    expected = make_schedule(7, 10, parse_specs(["kill:node"]), Topology())
    assert [e["index"] for e in doc["events"]] == [e.index for e in expected]
    assert [(e["nemesis"], e["target"], e["start_s"], e["duration_s"]) for e in doc["events"]] \
        == [(e.nemesis, e.target, e.start_s, e.duration_s) for e in expected]
