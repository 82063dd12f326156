"""`tributary chaos run`: one seeded chaos run against a fully proxied local cluster.

    tributary chaos run --scenario NAME [--seed 7] [--duration 60] [--workload kv ...]
    tributary chaos run --seed 7 --duration 60 [--nemesis partition:node --nemesis kill ...]
                        [--workload kv --workload batch ...] [--data-dir D]

A scenario (`tributary chaos list`, chaos/scenarios.py) names a mix of nemeses and a default
duration; without --scenario, the nemeses are those given by --nemesis (default: all).

1. prints the seed and the schedule (a pure function of seed, duration, nemeses and topology:
   the same command replays the same faults at the same offsets);
2. starts 3 meta members, 2 nodes (3 for `moves`, `drain` and `join`, which starts its third
   only at `join_at_s`) and 1 router with every link
   behind its own proxy (chaos.harness), creates the workloads' datasets;
3. runs the workloads (chaos.workload) while the nemesis runner applies the schedule, printing a
   progress line every few seconds and a line per fault;
4. at `--duration`: the final heal (every proxy reset, every process resumed or restarted), the
   workloads stop, and probes measure how long the service takes to come back;
5. reads every written id; then waits (up to --copies-bound seconds after the heal) until every
   copy of every shard is back in its in-sync set with the same content digest as the others,
   keeping the last snapshot of the copies (chaos.harness.copy_snapshot);
6. judges the history and that snapshot (chaos.verdict) and prints a report.

Exit status 0 when every checker passes, 1 otherwise. On failure the history, the schedule, the
nemesis journal and the report are saved under the run's directory in --data-dir (with the
processes' logs) and the path is printed; on success the run's directory is removed unless
--keep.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from chaos import scenarios
from chaos.checkers import copy_disagreements
from chaos.harness import ProxiedCluster
from chaos.history import OK, UNKNOWN, HistoryRecorder, Op, dump_history
from chaos.nemesis import (NemesisRunner, NemesisSpec, ScheduleConfig, make_schedule,
                           parse_specs, schedule_doc)
from chaos.topology import Topology
from chaos.verdict import Report, evaluate
from chaos.workload import (CATALOG_TENANT, WORKLOADS, Http, Workloads, final_reads,
                            probe_recovery, setup_datasets)

DEFAULT_DATA_DIR = os.path.join("tributary-data", "chaos")
DEFAULT_RECOVERY_BOUND_S = 30.0
# How long after the final heal every copy has to be back in sync and agree (copies-agree). A
# copy catches up from the primary's log in rounds (limits.replication_catch_up_*), after a
# restarted node has reopened its shards, so this is well above the recovery bound.
DEFAULT_COPIES_BOUND_S = 60.0
COPIES_POLL_S = 0.5
# How long after the final heal a split of the `reshard` scenario may take to switch to its new
# count. After the heal a killed node restarts and reopens its shards (the recovery bound, 30 s,
# covers that: every shard serves again), then builds or reopens its children and reports them in
# the meta leader's reshard rounds (every 500 ms, limits.reshard_round_interval_ms), and the
# switch waits for 2PC decisions of the dataset for at most limits.reshard_txn_wait_ms (10 s)
# from the split's start, long past by then. So 15 s on top of the recovery bound: a split that
# still has not switched is stuck, not slow (a tiny dataset's children are file copies).
DEFAULT_RESHARD_BOUND_S = DEFAULT_RECOVERY_BOUND_S + 15.0
# How long after the final heal the move in flight in the `moves` scenario may take to end. A
# killed node restarts and reopens its shards within the recovery bound; the target then
# catches up from the primary's log in rounds (limits.replication_catch_up_*), the primary
# hands its role over, and the meta leader's next round finishes the move. A move whose target
# stays away is rolled back after limits.move_target_away_cancel_ms (30 s), within the bound too.
DEFAULT_MOVES_BOUND_S = DEFAULT_RECOVERY_BOUND_S + 15.0
WORKLOAD_COPIES = 2
DEFAULT_DURATION_S = scenarios.DEFAULT_DURATION_S


@dataclass
class RunConfig:
    seed: int
    duration_s: float = DEFAULT_DURATION_S
    nemeses: list[NemesisSpec] = field(default_factory=lambda: parse_specs(None))
    workloads: list[str] = field(default_factory=lambda: list(WORKLOADS))
    data_dir: str = DEFAULT_DATA_DIR
    recovery_bound_s: float = DEFAULT_RECOVERY_BOUND_S
    copies_bound_s: float = DEFAULT_COPIES_BOUND_S
    reshard_bound_s: float = DEFAULT_RESHARD_BOUND_S
    moves_bound_s: float = DEFAULT_MOVES_BOUND_S
    topology: Topology = field(default_factory=Topology)
    request_timeout_s: float = 5.0
    linearizability_timeout_s: float = 120.0
    progress_every_s: float = 5.0
    keep: bool = False
    schedule_config: ScheduleConfig = field(default_factory=ScheduleConfig)
    env: dict[str, str] = field(default_factory=dict)
    scenario: str | None = None     # the registry name the nemeses came from, if any


@dataclass
class RunResult:
    config: RunConfig
    schedule: list
    journal: list[dict] = field(default_factory=list)
    history: list[Op] = field(default_factory=list)
    final_state: dict[str, Any] = field(default_factory=dict)
    unread: list[str] = field(default_factory=list)
    copies: dict | None = None
    samples: list[dict] = field(default_factory=list)
    report: Report | None = None
    error: str | None = None
    run_dir: str | None = None
    saved_to: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    # The `backup` scenario: the backup taken during the run and what its restore read back.
    backup: dict | None = None
    # The `reshard` scenario: each split's timing and outcome, and the rows listed after it.
    reshard: dict | None = None
    # The `moves` scenario: each move's timing and outcome.
    moves: dict | None = None
    # The `drain` scenario: the drained node and when it was drained and removed.
    drain: dict | None = None
    # The `join` scenario: the node started during the run and the rebalancing onto it.
    join: dict | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.report is not None and self.report.ok

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


def _counts_line(history: list[Op]) -> str:
    ok = sum(1 for op in history if op.status == OK and op.complete_ns is not None)
    unk = sum(1 for op in history if op.status == UNKNOWN and op.complete_ns is None)
    fail = len(history) - ok - unk
    return f"{len(history)} ops: {ok} ok, {fail} fail, {unk} unknown/in flight"


def save_artifacts(result: RunResult, directory: str) -> str:
    os.makedirs(directory, exist_ok=True)
    cfg = result.config
    meta = {"seed": cfg.seed, "duration_s": cfg.duration_s, "scenario": cfg.scenario,
            "nemeses": [str(s) for s in cfg.nemeses], "workloads": cfg.workloads}
    dump_history(result.history, os.path.join(directory, "history.json"), meta=meta)
    doc = schedule_doc(cfg.seed, cfg.duration_s, cfg.nemeses, cfg.topology, result.schedule,
                       cfg.schedule_config)
    with open(os.path.join(directory, "schedule.json"), "w") as f:
        json.dump(doc, f, indent=1)
    with open(os.path.join(directory, "journal.json"), "w") as f:
        json.dump(result.journal, f, indent=1)
    with open(os.path.join(directory, "final_state.json"), "w") as f:
        json.dump({"final_state": result.final_state, "unread": result.unread,
                   "recovery_samples": result.samples, "copies": result.copies}, f, indent=1)
    with open(os.path.join(directory, "report.json"), "w") as f:
        json.dump({"error": result.error, "timings": result.timings,
                   "report": result.report.to_dict() if result.report else None}, f, indent=1)
    if result.reshard is not None:
        with open(os.path.join(directory, "reshard.json"), "w") as f:
            json.dump(result.reshard, f, indent=1)
    for name, doc in (("moves", result.moves), ("drain", result.drain), ("join", result.join)):
        if doc is not None:
            with open(os.path.join(directory, f"{name}.json"), "w") as f:
                json.dump(doc, f, indent=1)
    return directory


def replay_command(cfg: RunConfig) -> str:
    """The command line that replays the run's schedule (by scenario name when it has one)."""
    words = ["tributary chaos run"]
    if cfg.scenario:
        words.append(f"--scenario {cfg.scenario}")
    words += [f"--seed {cfg.seed}", f"--duration {cfg.duration_s:g}"]
    if not cfg.scenario:
        words += [f"--nemesis {s}" for s in cfg.nemeses]
    words += [f"--workload {w}" for w in cfg.workloads]
    return " ".join(words)


def wait_for_copies(cluster: ProxiedCluster, healed_at: float, bound_s: float,
                    log: Callable[[str], None] = lambda line: None,
                    since: float | None = None,
                    also: Callable[[dict], list[str]] | None = None) -> dict:
    """Snapshots every shard's copies until they are all in sync and agree (and `also`, when
    given, finds nothing wrong with the snapshot either), or until `bound_s` after the heal, or
    after `since` when that is later (a split that switched after the heal: its children's
    other copies can rejoin only from then); returns the last snapshot with how long it waited
    after the heal ("waited_s")."""
    deadline = max(healed_at, since or healed_at) + bound_s
    while True:
        snapshot = cluster.copy_snapshot()
        now = time.monotonic()
        problems = copy_disagreements(snapshot) + (also(snapshot) if also else [])
        if not problems or now >= deadline:
            break
        time.sleep(COPIES_POLL_S)
    snapshot["waited_s"] = round(now - healed_at, 2)
    snapshot["bound_s"] = bound_s
    log(f"copies: {len(problems)} problem(s) {snapshot['waited_s']:.1f}s after the heal"
        + (f", first: {problems[0]}" if problems else ", every copy in sync and agreeing"))
    return snapshot


def _unpurged_rows(probe) -> Callable[[dict], list[str]]:
    """For wait_for_copies: what keeps a split dataset's stores from holding exactly the rows
    its listing showed (a shard's purge deletes the rows that moved away, as replicated writes,
    shortly after the switch). The rows-placed checker judges the last snapshot."""
    listed = {s.dataset: len(s.listed) for s in probe.splits if s.listed is not None}

    def problems(snapshot: dict) -> list[str]:
        out = []
        for label, doc in snapshot.get("datasets", {}).items():
            tenant, _, name = label.partition("/")
            if name not in listed or tenant == CATALOG_TENANT:
                continue
            stored = sum(s["status"].get(s["primary"], {}).get("vector_count") or 0
                         for s in doc["shards"])
            if stored != listed[name]:
                out.append(f"{label}: the shards store {stored} row(s), the listing showed "
                           f"{listed[name]}")
        return out
    return problems


def _give_up_at(cfg: RunConfig, t0: float, bound_s: float) -> float:
    """When a scenario probe stops polling at the latest: its settle() sets the real bound
    after the heal; this only caps a run whose heal never comes (a harness error)."""
    return t0 + cfg.duration_s + cfg.recovery_bound_s + bound_s + 60


def run_chaos(config: RunConfig, out: Callable[[str], None] = print) -> RunResult:
    """One whole run; never raises for cluster trouble (that becomes `result.error`)."""
    cfg = config
    schedule = make_schedule(cfg.seed, cfg.duration_s, cfg.nemeses, cfg.topology,
                             cfg.schedule_config)
    result = RunResult(cfg, schedule)
    out(f"chaos run: seed {cfg.seed}, duration {cfg.duration_s:g}s, "
        + (f"scenario {cfg.scenario}, " if cfg.scenario else "")
        + f"nemeses {' '.join(map(str, cfg.nemeses))}, workloads {' '.join(cfg.workloads)}")
    out(f"replay with: {replay_command(cfg)}")
    out(f"schedule ({len(schedule)} events):")
    for event in schedule:
        out("  " + event.describe())

    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = os.path.abspath(os.path.join(cfg.data_dir, f"run-seed{cfg.seed}-{stamp}"))
    result.run_dir = run_dir
    scenario = scenarios.BY_NAME[cfg.scenario] if cfg.scenario else None
    # The `join` scenario's node starts during the run (chaos/join_probe.py).
    joining = cfg.topology.node_members[-1] \
        if scenario is not None and scenario.join_at_s is not None else None
    cluster = ProxiedCluster(os.path.join(run_dir, "cluster"), cfg.topology, seed=cfg.seed,
                             env=cfg.env, log=lambda line: out(f"harness: {line}"),
                             late=(joining,) if joining else ())
    recorder = HistoryRecorder()
    workloads: Workloads | None = None
    backup_probe = None
    reshard_probe = None
    move_probe = None
    drain_probe = None
    join_probe = None
    runner = NemesisRunner(cluster, log=out)
    started = time.monotonic()
    try:
        cluster.start()
        result.timings["cluster_start_s"] = round(time.monotonic() - started, 2)
        out(f"harness: cluster healthy after {result.timings['cluster_start_s']:.1f}s "
            f"(logs in {cluster.logs_dir})")
        http_ = Http(cluster.rest_url, cfg.request_timeout_s)
        # Two copies of every workload shard (the product default) whatever the start-up race.
        setup_datasets(http_, cfg.workloads,
                       replication_factor=min(WORKLOAD_COPIES, cfg.topology.nodes))
        workloads = Workloads(cluster.rest_url, recorder, cfg.workloads, cfg.seed,
                              cfg.request_timeout_s)
        t0 = time.monotonic()
        workloads.start()
        backup_at_s = scenario.backup_at_s if scenario else None
        if backup_at_s is not None:
            # The `backup` scenario: a backup while the faults run, restored after the run.
            from chaos.backup_probe import BackupProbe
            backup_probe = BackupProbe(cluster.rest_url, os.path.join(run_dir, "backups"),
                                       min(backup_at_s, cfg.duration_s / 2),
                                       cfg.duration_s + cfg.recovery_bound_s, out)
            backup_probe.start(t0)
        if scenario is not None and scenario.reshard_at_s is not None:
            # The `reshard` scenario: every workload dataset split while the faults run.
            from chaos.reshard_probe import ReshardProbe, splits_for
            reshard_probe = ReshardProbe(cluster.rest_url, splits_for(cfg.workloads),
                                         min(scenario.reshard_at_s, cfg.duration_s / 2),
                                         recorder, out, cfg.request_timeout_s)
            reshard_probe.start(t0, give_up_at=_give_up_at(cfg, t0, cfg.reshard_bound_s))
        if scenario is not None and scenario.moves_at_s is not None:
            # The `moves` scenario: shard copies moved one at a time while the faults run.
            from chaos.move_probe import MoveProbe, datasets_for
            move_probe = MoveProbe(cluster.rest_url, datasets_for(cfg.workloads),
                                   min(scenario.moves_at_s, cfg.duration_s / 2), cfg.seed, out,
                                   cfg.request_timeout_s)
            move_probe.start(t0, give_up_at=_give_up_at(cfg, t0, cfg.moves_bound_s))
        if scenario is not None and scenario.drain_at_s is not None:
            # The `drain` scenario: one node drained, then removed, while the faults run.
            from chaos.move_probe import DrainProbe, datasets_for
            drained = random.Random(f"drain-{cfg.seed}").choice(cfg.topology.node_members)
            drain_probe = DrainProbe(cluster.rest_url, drained, datasets_for(cfg.workloads),
                                     min(scenario.drain_at_s, cfg.duration_s / 2), out,
                                     cfg.request_timeout_s)
            drain_probe.start(t0, give_up_at=_give_up_at(cfg, t0, cfg.moves_bound_s))
        if joining is not None:
            # The `join` scenario: a node starts, then rebalancing fills it, while the faults run.
            from chaos.join_probe import JoinProbe
            from chaos.move_probe import datasets_for
            join_probe = JoinProbe(cluster.rest_url, joining, datasets_for(cfg.workloads),
                                   min(scenario.join_at_s, cfg.duration_s / 2),
                                   lambda: cluster.join(joining), out, cfg.request_timeout_s)
            join_probe.start(t0, give_up_at=_give_up_at(cfg, t0, cfg.moves_bound_s))
        next_progress = [cfg.progress_every_s]

        def tick(now: float) -> None:
            if now >= next_progress[0]:
                next_progress[0] += cfg.progress_every_s
                active = ", ".join(f"#{i}" for i in sorted(runner.active)) or "none"
                out(f"[{now:7.2f}s] progress: {_counts_line(recorder.history())}; "
                    f"active faults: {active}")

        runner.run(schedule, t0, cfg.duration_s, tick=tick)
        if move_probe is not None:
            move_probe.stop_new()
        runner.heal_all()
        healed_at = time.monotonic()
        workloads.request_stop()
        out(f"[{healed_at - t0:7.2f}s] workloads stopping; probing recovery "
            f"(bound {cfg.recovery_bound_s:g}s)")
        result.samples = probe_recovery(Http(cluster.rest_url, 3.0), healed_at,
                                        cfg.recovery_bound_s, log=out)
        ups = [s for s in result.samples if s["ok"]]
        if ups:
            out(f"[{time.monotonic() - t0:7.2f}s] service up {ups[0]['t']:.2f}s after the heal "
                f"(first probe that stayed up: see report)")
        if not workloads.join(cfg.request_timeout_s * 3 + 10):
            out("warning: some workload threads are still running")
        switched_at = None
        if reshard_probe is not None:
            # The final reads and every checker after them judge the split datasets at their
            # new count: wait for the switch (up to the bound after the heal) first.
            out(f"[{time.monotonic() - t0:7.2f}s] reshard: waiting for the split(s) to switch "
                f"(bound {cfg.reshard_bound_s:g}s after the heal)")
            reshard_probe.settle(healed_at, cfg.reshard_bound_s)
            switched_at = reshard_probe.switched_at
            reshard_probe.read_counts()
        # The copies' bound runs from the last change to the placement when it came after the heal.
        placed_at = None
        def settle(probe, waiting_for: str, nodes_left: int) -> dict:
            out(f"[{time.monotonic() - t0:7.2f}s] {waiting_for} (bound "
                f"{cfg.moves_bound_s:g}s after the heal)")
            doc = probe.settle(healed_at, cfg.moves_bound_s)
            doc["copies_per_shard"] = min(WORKLOAD_COPIES, nodes_left)
            return doc
        if move_probe is not None:
            result.moves = settle(move_probe, "moves: waiting for the move in flight to end",
                                  cfg.topology.nodes)
            placed_at = move_probe.ended_at
        if drain_probe is not None:
            result.drain = settle(drain_probe, f"drain: waiting for {drain_probe.node} to be "
                                  "drained and removed", cfg.topology.nodes - 1)
            placed_at = drain_probe.removed_at
        if join_probe is not None:
            result.join = settle(join_probe, "join: waiting for copies to be even with "
                                 f"{joining}", cfg.topology.nodes)
            placed_at = join_probe.converged_at
        out(f"[{time.monotonic() - t0:7.2f}s] final reads of "
            f"{len(workloads.keys_to_read())} ids")
        result.final_state, result.unread = final_reads(cluster.rest_url, recorder,
                                                        workloads.keys_to_read())
        unpurged = None
        if reshard_probe is not None:
            reshard_probe.list_rows()
            unpurged = _unpurged_rows(reshard_probe)
        result.copies = wait_for_copies(cluster, healed_at, cfg.copies_bound_s,
                                        log=lambda line: out(f"[{time.monotonic() - t0:7.2f}s] "
                                                             f"{line}"),
                                        since=max(filter(None, (switched_at, placed_at)),
                                                  default=None), also=unpurged)
        if reshard_probe is not None:
            result.reshard = reshard_probe.result()
            keys = workloads.keys_to_read()
            for split in result.reshard["splits"]:
                split["ids"] = sorted({k for d, k in keys if d == split["dataset"]})
        if backup_probe is not None:
            backup_probe.join(cfg.duration_s + cfg.recovery_bound_s + 330)
            result.backup = backup_probe.restore_and_read(run_dir, workloads.keys_to_read())
        result.timings["run_s"] = round(time.monotonic() - t0, 2)
    except KeyboardInterrupt:
        result.error = "interrupted"
        out("chaos run: interrupted")
    except Exception as exc:  # noqa: BLE001 - report, save, clean up
        result.error = f"{type(exc).__name__}: {exc}"
        out(f"chaos run: harness error: {result.error}")
    finally:
        if workloads is not None:
            workloads.request_stop()
        for probe in (reshard_probe, move_probe, drain_probe, join_probe):
            if probe is not None:
                probe.abandon()
        result.journal = list(runner.journal)
        cluster.stop()

    result.history = recorder.history()
    if result.error is None:
        out(f"checking {len(result.history)} ops ...")
        check_started = time.monotonic()
        result.report = evaluate(result.history, result.final_state, unread_keys=result.unread,
                                 recovery_samples=result.samples,
                                 recovery_bound_s=cfg.recovery_bound_s,
                                 linearizability_timeout_s=cfg.linearizability_timeout_s,
                                 workloads=cfg.workloads, copies=result.copies,
                                 backup=result.backup, reshard=result.reshard,
                                 moves=result.moves, drain=result.drain, join=result.join)
        result.timings["check_s"] = round(time.monotonic() - check_started, 2)
        out(f"report (seed {cfg.seed}):")
        for line in result.report.lines():
            out("  " + line)
    result.timings["total_s"] = round(time.monotonic() - started, 2)
    if result.ok:
        out(f"chaos run: PASS (seed {cfg.seed}, {result.timings['total_s']:.0f}s)")
        if not cfg.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            result.saved_to = save_artifacts(result, run_dir)
            out(f"chaos run: artifacts kept in {result.saved_to}")
    else:
        result.saved_to = save_artifacts(result, run_dir)
        out(f"chaos run: FAIL (seed {cfg.seed}); history, schedule, journal and report saved in "
            f"{result.saved_to} (process logs in {os.path.join(run_dir, 'cluster', 'logs')})")
    return result


# ---- command line ---------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=None,
                        help="schedule seed (default: random, printed)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds of workload under faults (default: the scenario's, or "
                             f"{DEFAULT_DURATION_S:g})")
    faults = parser.add_mutually_exclusive_group()
    faults.add_argument("--scenario", default=None, metavar="NAME",
                        help="a named fault mix (list them with `tributary chaos list`)")
    faults.add_argument("--nemesis", action="append", default=None, metavar="NAME[:SCOPE]",
                        help="a nemesis to use; repeat or comma-separate (default: all). Names: "
                             "latency, bandwidth, timeout, reset-peer (scope: a link kind "
                             "client-router, router-node, router-meta, node-meta, meta-meta), "
                             "partition, kill, pause (scope: meta, node, router), "
                             "leader-isolation, primary-kill, primary-pause, "
                             "primary-copies-partition, primary-meta-partition")
    parser.add_argument("--workload", action="append", default=None, choices=WORKLOADS,
                        help="a workload to run; repeat (default: all)")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                        help="where runs keep their cluster, logs and (on failure) the history "
                             "(default %(default)s)")
    parser.add_argument("--recovery-bound", type=float, default=DEFAULT_RECOVERY_BOUND_S,
                        help="seconds the service may take to come back after the final heal")
    parser.add_argument("--copies-bound", type=float, default=DEFAULT_COPIES_BOUND_S,
                        help="seconds after the final heal within which every copy of every "
                             "shard must be in sync again and agree (default %(default)s)")
    parser.add_argument("--reshard-bound", type=float, default=DEFAULT_RESHARD_BOUND_S,
                        help="seconds after the final heal within which a split of the "
                             "`reshard` scenario must have switched to its new count "
                             "(default %(default)s)")
    parser.add_argument("--moves-bound", type=float, default=DEFAULT_MOVES_BOUND_S,
                        help="seconds after the final heal within which the move in flight of "
                             "the `moves` scenario must have ended, the node of the `drain` "
                             "scenario must be drained and removed, and the copies of the "
                             "`join` scenario even (default %(default)s)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run's directory and artifacts even when it passes")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run that the command line asks for; raises ValueError for an unknown scenario or
    nemesis (before anything starts)."""
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    duration_s = args.duration
    topology = Topology()
    if args.scenario is not None:
        scenario = scenarios.get(args.scenario)
        specs = scenario.specs()
        topology = scenario.topology()
        if duration_s is None:
            duration_s = scenario.duration_s
    else:
        specs = parse_specs(args.nemesis)
    if duration_s is None:
        duration_s = DEFAULT_DURATION_S
    if duration_s <= 0:
        raise ValueError(f"--duration must be positive, not {duration_s:g}")
    return RunConfig(seed=seed, duration_s=duration_s, nemeses=specs,
                     workloads=args.workload or list(WORKLOADS), data_dir=args.data_dir,
                     recovery_bound_s=args.recovery_bound,
                     copies_bound_s=getattr(args, "copies_bound", DEFAULT_COPIES_BOUND_S),
                     reshard_bound_s=getattr(args, "reshard_bound", DEFAULT_RESHARD_BOUND_S),
                     moves_bound_s=getattr(args, "moves_bound", DEFAULT_MOVES_BOUND_S),
                     topology=topology,
                     keep=args.keep,
                     scenario=args.scenario)


def run(args: argparse.Namespace) -> None:
    try:
        config = config_from_args(args)
    except ValueError as exc:
        raise SystemExit(f"tributary chaos run: {exc}") from None

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)   # SIGTERM cleans up like Ctrl-C
    try:
        result = run_chaos(config, out=lambda line: print(line, flush=True))
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.stdout.flush()
    sys.exit(result.exit_code)


__all__ = ["RunConfig", "RunResult", "run_chaos", "replay_command", "config_from_args",
           "save_artifacts", "add_arguments", "run", "wait_for_copies"]
