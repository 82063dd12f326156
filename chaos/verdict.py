"""The verdict of a chaos run: every checker over a recorded history and the final state.

`evaluate(history, final_state, ...)` is pure (no cluster, no clock), so a saved history can be
judged again (`chaos.run` does it live; the tests feed it doctored histories to prove the checkers
are not vacuous). Checkers:

* ``kv-linearizable``      put/get/delete per key, batch puts/reads split per key, and the final
                           reads, against `chaos.linearizability.KVModel` (what `check_kv` does,
                           with the sound shortcuts described at `_linearizability`).
* ``catalog-linearizable`` create/drop/list of datasets against `CatalogModel`.
* ``tenants-linearizable`` provision/delete/list of the admin workload's tenants, as a set,
                           against `CatalogModel` (the ops renamed to its kinds).
* ``admin-keys``           the admin workload's API keys: no create of a fresh random key
                           answered AlreadyExists, and no revoke of a key whose create was
                           acknowledged (and not yet its revoke) answered NotFound:
                           `admin_key_violations`.
* ``no-lost-writes``       the final state against the acknowledged writes:
                           `chaos.checkers.lost_acknowledged_writes`.
* ``no-partial-batches``   the final state against the multi-shard batches:
                           `chaos.checkers.partial_batches`.
* ``batch-reads-atomic``   during the run: a read of every id of a batch that was acknowledged
                           before the read started saw all of the batch (`batch_read_violations`).
* ``copies-agree``         after the final heal, once the workloads stopped, every copy of every
                           shard rejoined the in-sync set within the bound and all copies of a
                           shard hold the same content digest: `chaos.checkers.copy_disagreements`
                           over the last snapshot the run took (`copies`).
* ``backup-consistent-prefix`` (the `backup` scenario) the backup taken while the faults ran,
                           restored into a fresh cluster, holds a consistent prefix of the run:
                           `chaos.checkers.backup_prefix_violations`.
* ``reshard-finished``     (the `reshard` scenario) each workload dataset's split, started
                           while the faults ran, switched to twice its shard count within the
                           bound after the final heal, and the final reads and the copy
                           snapshot (so every checker above) judged the dataset at that count:
                           `reshard_finished`.
* ``rows-placed``          (the `reshard` scenario) after the split every row is where a read by
                           its id finds it: the listing of every shard shows each row once, with
                           the value its read by id returned, and the shards store no row they
                           do not own: `chaos.checkers.rows_out_of_place`.
* ``moves-ended``          (the `moves` scenario) every shard move started while the faults ran
                           ended within the bound after the final heal, each as a finished move
                           (the target holds the copy, the source none) or a rolled-back one
                           (as before), at least one finished, and in the copy snapshot every
                           shard of the moved datasets has its number of copies on distinct
                           nodes: `moves_ended`.
* ``drain-finished``       (the `drain` scenario) the node drained while the faults ran was
                           drained and removed within the bound after the final heal, no shard
                           of any dataset has a copy on it, and every shard of the workload
                           datasets has its number of copies on distinct nodes:
                           `drain_finished`.
* ``join-balanced``        (the `join` scenario) the node started during the run went live, a
                           rebalancing round after the final heal found copies even within the
                           bound, the node holds copies of the workload datasets, and each of
                           their shards has its number of copies on distinct nodes:
                           `join_balanced`.
* ``recovery``             after the final heal the service came back (health 200 and a search on
                           every dataset) within the bound, and stayed up: `recovered_within`.
* ``workloads-made-progress`` every workload that ran had writes and reads acknowledged, so the
                           checkers above judged something (a cluster that answered nothing
                           would otherwise pass them all).

A checker that has nothing to judge (its workload did not run) is "skipped", which passes. One
that could not finish (linearizability search out of time, final reads impossible) is
"inconclusive", which does not pass: a run passes only when every checker says so.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from chaos.checkers import (backup_prefix_violations, copy_disagreements, lost_acknowledged_writes, partial_batches,
                            recovered_within, rows_out_of_place)
from chaos.history import FAIL, OK, UNKNOWN, Op, freeze, origin_of
from chaos.linearizability import (ILLEGAL, LINEARIZABLE, TIMEOUT, CatalogModel, KVModel,
                                   check_partition, prepare)
from chaos.workload import CATALOG_TENANT

KV_KINDS = ("put", "get", "delete", "insert", "batch_put", "batch_get", "batch_delete")
CATALOG_KINDS = ("create", "drop", "list")
# The admin workload's tenant ops, and the catalog kinds they are judged as.
TENANT_KINDS = {"tenant_create": "create", "tenant_drop": "drop", "tenant_list": "list"}
KEY_KINDS = ("key_create", "key_revoke")
WRITE_KINDS = ("put", "delete", "insert", "batch_put", "batch_delete")

PASS = "pass"
FAILED = "FAIL"
INCONCLUSIVE = "inconclusive"
SKIPPED = "skipped"


@dataclass
class CheckerResult:
    name: str
    verdict: str
    summary: str
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict in (PASS, SKIPPED)

    def to_dict(self) -> dict:
        return {"name": self.name, "verdict": self.verdict, "summary": self.summary,
                "details": self.details}


@dataclass
class Report:
    checkers: list[CheckerResult]
    op_counts: dict[str, dict[str, int]]
    recovery_s: float | None = None
    recovery_bound_s: float | None = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checkers)

    def checker(self, name: str) -> CheckerResult:
        for c in self.checkers:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checkers": [c.to_dict() for c in self.checkers],
                "op_counts": self.op_counts, "recovery_s": self.recovery_s,
                "recovery_bound_s": self.recovery_bound_s}

    def lines(self, detail_lines: int = 40) -> list[str]:
        out = ["checkers:"]
        for c in self.checkers:
            out.append(f"  {c.verdict.upper() if c.verdict == FAILED else c.verdict:<12} "
                       f"{c.name:<22} {c.summary}")
            if not c.ok:
                shown = 0
                for d in c.details:
                    for line in d.splitlines():
                        if shown >= detail_lines:
                            break
                        out.append(f"      {line}")
                        shown += 1
        out.append("ops (ok / fail / unknown):")
        total = Counter()
        width = max([10, *map(len, self.op_counts)])
        for kind, counts in sorted(self.op_counts.items()):
            total.update(counts)
            out.append(f"  {kind:<{width}} {counts.get(OK, 0):6d} {counts.get(FAIL, 0):6d} "
                       f"{counts.get(UNKNOWN, 0):6d}")
        out.append(f"  {'total':<{width}} {total.get(OK, 0):6d} {total.get(FAIL, 0):6d} "
                   f"{total.get(UNKNOWN, 0):6d}")
        if self.recovery_bound_s is not None:
            rec = "not observed" if self.recovery_s is None else f"{self.recovery_s:.2f}s"
            out.append(f"recovery: {rec} after the final heal (bound {self.recovery_bound_s:.0f}s)")
        return out


def op_counts(history: Iterable[Op]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter] = {}
    for op in history:
        kind = op.kind if op.process != "final" else "final-get"
        counts.setdefault(kind, Counter())[op.status] += 1
    return {k: dict(v) for k, v in counts.items()}


def batch_read_violations(history: Iterable[Op]) -> list[str]:
    """Reads of a whole batch, started after the batch was acknowledged, that missed part of it.

    A key of the batch counts as missed when the read saw a value that no other non-failed
    write of that key (one not finished before the batch began) could explain."""
    history = list(history)
    origin = origin_of(history)
    writes: dict[Any, list[tuple[Op, Any]]] = {}
    batches: dict[frozenset, list[Op]] = {}
    for op in history:
        if op.status == FAIL:
            continue
        if op.kind == "batch_put":
            batches.setdefault(frozenset(op.value), []).append(op)
            for k, v in dict(op.value).items():
                writes.setdefault(freeze(k), []).append((op, freeze(v)))
        elif op.kind in ("put", "insert"):
            writes.setdefault(freeze(op.key), []).append((op, freeze(op.value)))
        elif op.kind == "delete":
            writes.setdefault(freeze(op.key), []).append((op, None))
        elif op.kind == "batch_delete":
            for k in op.value:
                writes.setdefault(freeze(k), []).append((op, None))
    out: list[str] = []
    for read in history:
        if read.kind != "batch_get" or read.status != OK:
            continue
        for batch in batches.get(frozenset(read.value), []):
            if batch.status != OK or not batch.complete_ns < read.invoke_ns:
                continue
            values = dict(batch.value)
            seen = {k: freeze(read.output.get(k)) for k in values}
            missed = []
            for k, v in values.items():
                if seen[k] == freeze(v):
                    continue
                explained = any(w is not batch and val == seen[k] and not w.precedes(batch)
                                for w, val in writes.get(freeze(k), []))
                if not explained:
                    missed.append(k)
            if missed:
                present = [k for k in values if k not in missed]
                out.append(f"read {read.describe(origin)} of acknowledged batch "
                           f"{batch.describe(origin)}: missed {missed!r}, saw the batch on "
                           f"{present!r}")
    return out


# ---- linearizability, with sound shortcuts -------------------------------------------------------
#
# Every unknown op (status "unknown": the client never learned its outcome) may or may not have
# taken effect, and the search must consider both, anywhere after its invocation: each one
# multiplies the work, and an outage leaves dozens per key. But a history with some unknown ops
# REMOVED is a special case of the full one (those ops simply never took effect), so when the
# reduced history is linearizable the full one is too. The check therefore tries, per partition:
#
#   kv:      1. unknown puts whose (unique) value some read returned; other unknown writes dropped
#            2. as 1, plus every unknown delete
#            3. the full partition
#   catalog: 1. no unknown op      2. the full partition
#
# and stops at the first linearizable one. Only the full partition can fail a run (ILLEGAL) or
# leave it inconclusive (search out of time), so the verdict is exactly the full history's.

def _kv_tiers(ops: list[Op]) -> list[tuple[str, list[Op]]]:
    observed = {freeze(op.output) for op in ops if op.kind == "get" and op.status == OK}

    def keep(op: Op, deletes: bool) -> bool:
        if op.status != UNKNOWN:
            return True
        if op.kind == "put":
            return freeze(op.value) in observed
        return deletes and op.kind == "delete"

    tiers = [("observed unknown writes only", [op for op in ops if keep(op, False)]),
             ("plus unknown deletes", [op for op in ops if keep(op, True)])]
    return [t for t in tiers if len(t[1]) < len(ops)] + [("full", ops)]


def _catalog_tiers(ops: list[Op]) -> list[tuple[str, list[Op]]]:
    definite = [op for op in ops if op.status != UNKNOWN]
    return ([("no unknown ops", definite)] if len(definite) < len(ops) else []) + [("full", ops)]


def _linearizability(name: str, ops: list[Op], model, tiers, timeout_s: float,
                     quick_s: float = 5.0) -> CheckerResult:
    if not ops:
        return CheckerResult(name, SKIPPED, "no ops")
    started = time.monotonic()
    deadline = started + timeout_s
    parts = model.partition(prepare(ops, model))
    origin = origin_of(ops)
    unresolved: list[tuple[Any, list[Op]]] = []
    shortcut = 0
    # Pass 1: the reduced tiers of every partition, each with a short budget.
    for key, part in parts.items():
        done = False
        for _label, reduced in tiers(part)[:-1]:
            r = check_partition(model, key, reduced, origin=origin,
                                deadline=min(deadline, time.monotonic() + quick_s))
            if r.verdict == LINEARIZABLE:
                done = True
                shortcut += 1
                break
        if not done:
            unresolved.append((key, part))
    # Pass 2: the full partitions left, sharing what remains of the budget.
    failures, timeouts = [], []
    for i, (key, part) in enumerate(unresolved):
        share = max(0.0, deadline - time.monotonic()) / (len(unresolved) - i)
        r = check_partition(model, key, part, origin=origin,
                            deadline=time.monotonic() + share)
        if r.verdict == ILLEGAL:
            failures.append(r)
        elif r.verdict == TIMEOUT:
            timeouts.append(r)
    elapsed = time.monotonic() - started
    n_ok = sum(1 for op in ops if op.status == OK)
    n_unknown = sum(1 for op in ops if op.status == UNKNOWN)
    if failures:
        return CheckerResult(name, FAILED, f"NOT linearizable on {len(failures)} partition(s): "
                                           f"{', '.join(repr(f.key) for f in failures[:5])}",
                             [f.explanation for f in failures])
    if timeouts:
        return CheckerResult(name, INCONCLUSIVE, f"search did not finish within {timeout_s:.0f}s "
                                                 f"on {len(timeouts)} partition(s)",
                             [r.explanation for r in timeouts])
    return CheckerResult(name, PASS, f"linearizable: {len(ops)} ops ({n_ok} ok, {n_unknown} "
                                     f"unknown), {len(parts)} partition(s) ({shortcut} proved on "
                                     f"a reduced history), {elapsed:.2f}s")


# What a workload must have had acknowledged for its run to count: (writes, reads).
PROGRESS_KINDS = {"kv": (("put", "delete"), ("get",)),
                  "batch": (("batch_put",), ("batch_get",)),
                  "catalog": (("create", "drop"), ("list",)),
                  "admin": (("tenant_create", "tenant_drop", "key_create", "key_revoke"),
                            ("tenant_list",))}


def admin_key_violations(history: Iterable[Op]) -> tuple[list[str], str]:
    """What contradicts the admin workload's key ops, and a summary. A key is random and
    fresh, so no create can meet an existing one; each worker revokes only keys it created,
    once, so a revoke after an acknowledged create finds the key (a 404 then means the create
    or the revoke was applied twice, or not at all). The 404 is allowed when the key's create
    was not acknowledged (it may not exist)."""
    ops = [op for op in history if op.kind in KEY_KINDS]
    created = {op.output["key_id"] for op in ops
               if op.kind == "key_create" and op.status == OK and isinstance(op.output, dict)
               and op.output.get("key_id")}
    problems = [f"op {op.id} ({op.process}): a create of a fresh key answered AlreadyExists: "
                f"{op.output['conflict']}" for op in ops
                if op.kind == "key_create" and op.status == OK and isinstance(op.output, dict)
                and "conflict" in op.output]
    problems += [f"op {op.id} ({op.process}): the revoke of key {op.key}, whose create was "
                 f"acknowledged, answered NotFound" for op in ops
                 if op.kind == "key_revoke" and op.status == OK and op.output == "not_found"
                 and op.key in created]
    counts = Counter((op.kind, op.status) for op in ops)
    summary = (f"{counts[('key_create', OK)]} key(s) created, {counts[('key_revoke', OK)]} "
               f"revoke(s) answered, {counts[('key_create', UNKNOWN)] + counts[('key_revoke', UNKNOWN)]}"
               f" unknown")
    return problems, summary


def progress(history: Iterable[Op], workloads: Iterable[str]) -> CheckerResult:
    ok = Counter(op.kind for op in history if op.status == OK and op.process != "final")
    missing = []
    for name in workloads:
        writes, reads = PROGRESS_KINDS[name]
        if not sum(ok[k] for k in writes):
            missing.append(f"{name}: no acknowledged write ({'/'.join(writes)})")
        if not sum(ok[k] for k in reads):
            missing.append(f"{name}: no acknowledged read ({'/'.join(reads)})")
    if missing:
        return CheckerResult("workloads-made-progress", FAILED, "; ".join(missing))
    return CheckerResult("workloads-made-progress", PASS,
                         ", ".join(f"{k} {v}" for k, v in sorted(ok.items())) or "nothing to do")


def copies_agree(snapshot: Mapping[str, Any] | None) -> CheckerResult:
    """The copies-agree verdict over the run's last copy snapshot (see chaos.checkers)."""
    if snapshot is None:
        return CheckerResult("copies-agree", SKIPPED, "no copy snapshot")
    problems = copy_disagreements(snapshot)
    waited = snapshot.get("waited_s")
    after = "" if waited is None else f" {waited:.1f}s after the heal"
    if problems:
        bound = snapshot.get("bound_s")
        return CheckerResult("copies-agree", FAILED,
                             f"{len(problems)} shard problem(s) still there{after}"
                             + ("" if bound is None else f" (bound {bound:g}s)"), problems)
    shards = sum(len(d["shards"]) for d in snapshot.get("datasets", {}).values())
    if not shards:
        return CheckerResult("copies-agree", INCONCLUSIVE, "the snapshot holds no shard")
    copies = sum(len(s["copies"]) for d in snapshot.get("datasets", {}).values()
                 for s in d["shards"])
    return CheckerResult("copies-agree", PASS, f"{copies} copies of {shards} shard(s) in sync "
                                               f"with equal content digests{after}")


def backup_consistent_prefix(history: Iterable[Op], backup: Mapping[str, Any]) -> CheckerResult:
    """The backup taken during the run, restored into a fresh cluster, holds a consistent
    prefix of the history (checkers.backup_prefix_violations). A backup that could not be taken
    or restored fails: an unfinished check counts as a failure."""
    name = "backup-consistent-prefix"
    if backup.get("error"):
        return CheckerResult(name, FAILED, backup["error"])
    restored = backup.get("restored") or {}
    history = [op for op in history if op.kind in KV_KINDS]
    violations = backup_prefix_violations(history, restored, backup["cut_from_ns"],
                                          backup["cut_until_ns"])
    batches = sum(1 for op in history if op.kind == "batch_put")
    if violations:
        return CheckerResult(name, FAILED, f"{len(violations)} violation(s) in the restored "
                                           f"backup", [v.explanation for v in violations])
    if backup.get("unread"):
        return CheckerResult(name, INCONCLUSIVE, f"{len(backup['unread'])} key(s) unread in "
                                                 "the restored cluster")
    return CheckerResult(name, PASS, (
        f"{len(restored)} key(s) of the restored backup are a consistent prefix ({batches} "
        f"batch(es) all-or-nothing, acknowledged-before-cut writes present); cut fences "
        f"{backup.get('fence_ms')} ms, backup {backup.get('seconds')} s, "
        f"{backup.get('bytes')} bytes, restore {backup.get('restore_s')} s"))


def _snapshot_shards(copies: Mapping[str, Any] | None, dataset: str) -> list[dict] | None:
    """The copy snapshot's shards of the workload dataset called `dataset` (the catalog
    workload's tenant holds other datasets, never of a workload's name), or None."""
    for label, doc in (copies or {}).get("datasets", {}).items():
        tenant, _, name = label.partition("/")
        if name == dataset and tenant != CATALOG_TENANT:
            return doc["shards"]
    return None


def reshard_finished(reshard: Mapping[str, Any], copies: Mapping[str, Any] | None
                     ) -> CheckerResult:
    """Every split of the run (chaos/reshard_probe.py) switched to its new count, no later
    than `bound_s` after the heal; the final reads ran at that count, and the copy snapshot
    covers every shard of it. A run with nothing split does not pass: it showed nothing."""
    name = "reshard-finished"
    splits = reshard.get("splits") or []
    if not splits:
        return CheckerResult(name, INCONCLUSIVE, "no dataset was split (the kv and batch "
                                                 "workloads' datasets are)")
    healed, bound = reshard.get("healed_at_s"), reshard.get("bound_s")
    problems, done = [], []
    for split in splits:
        label = f"{split['dataset']} {split['from_shards']}->{split['to_shards']}"
        last = split.get("last_progress")
        if split.get("error"):
            problems.append(f"{label}: {split['error']}")
            continue
        if split.get("switched_by_s") is None:
            problems.append(f"{label}: not switched "
                            + ("" if bound is None else f"within {bound:g}s after the heal ")
                            + f"({split.get('start_attempts')} start request(s), last "
                            f"progress {last!r:.400}; start errors {split.get('start_errors')})")
            continue
        late = (None if healed is None or bound is None
                else split["switched_by_s"] - (healed + bound))
        if late is not None and late > 0:
            problems.append(f"{label}: switched {split['switched_by_s'] - healed:.2f}s after "
                            f"the heal, above the bound of {bound:g}s")
        if split.get("count_at_final_reads") != split["to_shards"]:
            problems.append(f"{label}: the final reads ran at "
                            f"{split.get('count_at_final_reads')} shards")
        shards = _snapshot_shards(copies, split["dataset"])
        if copies is not None and (shards is None or len(shards) != split["to_shards"]):
            problems.append(f"{label}: the copy snapshot covers "
                            f"{'no' if shards is None else len(shards)} shard(s)")
        when = ("" if healed is None else
                f", {abs(split['switched_by_s'] - healed):.1f}s "
                f"{'before' if split['switched_by_s'] <= healed else 'after'} the heal")
        done.append(f"{label} in {split['seconds']}s (started at {split['requested_at_s']:.1f}s"
                    f"{when})")
    if problems:
        return CheckerResult(name, FAILED, f"{len(problems)} split problem(s)", problems)
    return CheckerResult(name, PASS, "; ".join(done) + ("" if bound is None else
                                                        f" (bound {bound:g}s after the heal)"))


def _stored_rows(shards: list[dict] | None) -> tuple[int | None, str]:
    """The rows a dataset's shards store (each shard's row count, which all its copies must
    report alike), or None and why not. Copies whose counts differ are copies-agree's failure,
    not a placement one: a listing may have read either of them."""
    if not shards:
        return None, "no copy snapshot of the dataset"
    total = 0
    for shard in shards:
        counts = {s.get("vector_count") for s in shard["status"].values()}
        if None in counts or not counts:
            return None, f"shard {shard['shard']} gave no row count"
        if len(counts) > 1:
            return None, f"the copies of shard {shard['shard']} differ (see copies-agree)"
        total += counts.pop()
    return total, ""


def rows_placed(reshard: Mapping[str, Any], final_state: Mapping[str, Any],
                unread: Iterable[str], copies: Mapping[str, Any] | None) -> CheckerResult:
    """After the split, every row of a split dataset is where a read by its id finds it
    (chaos.checkers.rows_out_of_place over the listing the probe took after the final reads,
    those reads, and the rows each shard stores in the copy snapshot)."""
    name = "rows-placed"
    splits = reshard.get("splits") or []
    if not splits:
        return CheckerResult(name, SKIPPED, "no dataset was split")
    unread = set(unread)
    problems, missing, summary = [], [], []
    for split in splits:
        dataset = split["dataset"]
        if split.get("listed") is None:
            missing.append(f"{dataset}: {split.get('list_error') or 'not listed'}")
            continue
        ids = split.get("ids") or []
        read = {i: final_state[i] for i in ids if i in final_state}
        shards = _snapshot_shards(copies, dataset)
        stored, why_not = _stored_rows(shards)
        found = rows_out_of_place(split["listed"], read, unread & set(ids), stored)
        problems += [f"{dataset}: {p}" for p in found]
        summary.append(f"{dataset} {len(split['listed'])} row(s) on {len(shards or [])} "
                       f"shard(s)" + ("" if stored is not None else
                                      f", stored rows not compared: {why_not}"))
    if problems:
        return CheckerResult(name, FAILED, f"{len(problems)} row(s) out of place", problems)
    if missing:
        return CheckerResult(name, INCONCLUSIVE, "; ".join(missing))
    return CheckerResult(name, PASS, "each row listed once, where its read by id finds it, "
                                     "no unpurged row stored: " + "; ".join(summary))


def _shards_without_their_copies(copies: Mapping[str, Any] | None, datasets: list[str],
                                 wanted: int | None, when: str) -> list[str]:
    """The shards of the workload `datasets` whose copies in the snapshot are not `wanted`
    many on distinct nodes (nothing to say without a snapshot)."""
    problems = []
    for dataset in datasets if copies is not None else []:
        shards = _snapshot_shards(copies, dataset)
        if not shards:
            problems.append(f"{dataset}: not in the copy snapshot")
            continue
        for shard in shards:
            held = shard.get("copies") or []
            if len(set(held)) != len(held) or (wanted is not None and len(held) != wanted):
                problems.append(f"{dataset}/{shard['shard']}: copies {held} {when} (wanted "
                                f"{wanted} on distinct nodes)")
    return problems


def drain_finished(drain: Mapping[str, Any], copies: Mapping[str, Any] | None) -> CheckerResult:
    """The node drained while the faults ran (chaos/move_probe.py DrainProbe) was drained and
    removed no later than `bound_s` after the heal; in the copy snapshot no shard of any dataset
    has a copy on it, and each shard of the workload datasets has `copies_per_shard` copies on
    distinct nodes."""
    name = "drain-finished"
    node, bound, healed = drain.get("node"), drain.get("bound_s"), drain.get("healed_at_s")
    problems = []
    if drain.get("drained_at_s") is None:
        problems.append(f"{node} not drained" + ("" if bound is None else
                                                  f" within {bound:g}s after the heal")
                        + f": {drain.get('copies_left')} copies left, "
                        f"{drain.get('drain_attempts')} drain request(s) (last errors "
                        f"{drain.get('drain_errors')})")
    elif drain.get("removed_at_s") is None:
        problems.append(f"{node} drained but not removed ({drain.get('remove_attempts')} "
                        f"request(s), last errors {drain.get('remove_errors')})")
    elif healed is not None and bound is not None and drain["removed_at_s"] > healed + bound:
        problems.append(f"{node} removed {drain['removed_at_s'] - healed:.2f}s after the heal, "
                        f"above the bound of {bound:g}s")
    # A node that registered again after its removal (a restart) is a member like any other:
    # datasets created from then on (the catalog workload's) may have copies on it. The
    # workload datasets, older than the drain, never may.
    rejoined = drain.get("rejoined_at_s") is not None
    for label, doc in (copies or {}).get("datasets", {}).items():
        tenant, _, dataset = label.partition("/")
        if rejoined and (tenant == CATALOG_TENANT
                         or dataset not in (drain.get("datasets") or [])):
            continue
        for shard in doc["shards"]:
            if node in (shard.get("copies") or []):
                problems.append(f"{label}/{shard['shard']}: a copy on {node} after its drain")
    problems += _shards_without_their_copies(copies, drain.get("datasets") or [],
                                             drain.get("copies_per_shard"), "after the drain")
    if problems:
        return CheckerResult(name, FAILED, f"{len(problems)} drain problem(s)", problems)
    took = ("" if drain.get("requested_at_s") is None else
            f" {drain['drained_at_s'] - drain['requested_at_s']:.1f}s after the first request")
    return CheckerResult(name, PASS, f"{node} drained{took} ({drain.get('planned_moves')} "
                                     f"move(s) planned) and removed"
                         + (f", registered again at {drain['rejoined_at_s']:.1f}s" if rejoined
                            else "")
                         + ("" if bound is None else f" (bound {bound:g}s after the heal)"))


def join_balanced(join: Mapping[str, Any], copies: Mapping[str, Any] | None) -> CheckerResult:
    """The node that joined during the run (chaos/join_probe.py) went live, a rebalancing round
    after the heal found copies even (nothing to plan, nothing in flight) no later than
    `bound_s` after it, the node holds at least one copy of the workload datasets in the copy
    snapshot, and each of their shards has `copies_per_shard` copies on distinct nodes."""
    name = "join-balanced"
    node, bound, healed = join.get("node"), join.get("bound_s"), join.get("healed_at_s")
    problems = []
    if join.get("live_at_s") is None:
        problems.append(f"{node} never showed live (started at {join.get('started_at_s')}s)")
    elif join.get("converged_at_s") is None:
        problems.append("copies not even" + ("" if bound is None else
                                                f" within {bound:g}s after the heal")
                        + f": {join.get('rounds')} round(s), {join.get('copies')} copies on "
                        f"{node}, last errors {join.get('round_errors')}")
    elif healed is not None and bound is not None and join["converged_at_s"] > healed + bound:
        problems.append(f"copies even {join['converged_at_s'] - healed:.2f}s after the heal, "
                        f"above the bound of {bound:g}s")
    datasets = join.get("datasets") or []
    held = sum(node in (shard.get("copies") or []) for dataset in datasets
               for shard in (_snapshot_shards(copies, dataset) if copies is not None else []))
    if copies is not None and not held:
        problems.append(f"{node} holds no copy of {', '.join(datasets)} after the rebalancing")
    problems += _shards_without_their_copies(copies, datasets, join.get("copies_per_shard"),
                                             "after the join")
    if problems:
        return CheckerResult(name, FAILED, f"{len(problems)} join problem(s)", problems)
    return CheckerResult(name, PASS, f"{node} live at {join['live_at_s']:.1f}s, holds {held} "
                                     f"copies after {join.get('moves_planned')} planned "
                                     f"move(s)/hand-over(s) in {join.get('rounds')} round(s)"
                         + ("" if bound is None else f" (bound {bound:g}s after the heal)"))


def moves_ended(moves: Mapping[str, Any], copies: Mapping[str, Any] | None) -> CheckerResult:
    """Every move of the run (chaos/move_probe.py) ended, no later than `bound_s` after the
    heal, finished or rolled back (or, its start answer lost, was never made); in the copy
    snapshot each shard of the moved datasets has `copies_per_shard` copies on distinct nodes.
    A run in which no move finished does not pass: it showed nothing."""
    name = "moves-ended"
    healed, bound = moves.get("healed_at_s"), moves.get("bound_s")
    problems, outcomes = [], Counter()
    for move in moves.get("moves") or []:
        label = (f"{move['dataset']}/{move['shard']} {move['from']} -> {move['to']}"
                 + (" (primary)" if move.get("primary") else ""))
        outcome = move.get("outcome")
        outcomes[outcome or "not ended"] += 1
        if outcome is None:
            problems.append(f"{label}: still in flight "
                            + ("" if bound is None else f"{bound:g}s after the heal ")
                            + f"(last phase {move.get('last_phase')}, "
                            f"started at {move.get('requested_at_s')}s)")
        elif outcome == "other":
            problems.append(f"{label}: ended with the copies neither moved nor as before: "
                            f"{move.get('detail')}")
        elif healed is not None and bound is not None and move.get("ended_at_s") is not None \
                and move["ended_at_s"] > healed + bound:
            problems.append(f"{label}: ended {move['ended_at_s'] - healed:.2f}s after the "
                            f"heal, above the bound of {bound:g}s")
    problems += _shards_without_their_copies(copies, moves.get("datasets") or [],
                                             moves.get("copies_per_shard"), "after the moves")
    summary = ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items())) or "no move"
    if problems:
        return CheckerResult(name, FAILED, f"{len(problems)} move problem(s); moves: {summary}",
                             problems)
    if not outcomes.get("finished"):
        return CheckerResult(name, INCONCLUSIVE, f"no move finished ({summary})")
    return CheckerResult(name, PASS, f"moves: {summary}"
                         + ("" if bound is None else f" (bound {bound:g}s after the heal)"))


def evaluate(history: Iterable[Op], final_state: Mapping[str, Any] | None, *,
             unread_keys: Iterable[str] = (), recovery_samples: list | None = None,
             recovery_bound_s: float | None = None, linearizability_timeout_s: float = 120.0,
             workloads: Iterable[str] | None = None,
             copies: Mapping[str, Any] | None = None,
             backup: Mapping[str, Any] | None = None,
             reshard: Mapping[str, Any] | None = None,
             moves: Mapping[str, Any] | None = None,
             drain: Mapping[str, Any] | None = None,
             join: Mapping[str, Any] | None = None) -> Report:
    """Runs every checker; see the module docstring. Without `copies` (a history judged with no
    copy snapshot) the copies-agree checker is skipped; without `backup`, `reshard`, `moves`,
    `drain` or `join` (what chaos/backup_probe.py, reshard_probe.py, move_probe.py or
    join_probe.py found), their scenario's checkers are not run."""
    history = list(history)
    final_state = dict(final_state or {})
    unread = sorted(set(unread_keys))
    kv_ops = [op for op in history if op.kind in KV_KINDS]
    catalog_ops = [op for op in history if op.kind in CATALOG_KINDS]
    checkers = [
        _linearizability("kv-linearizable", kv_ops, KVModel(), _kv_tiers,
                         linearizability_timeout_s),
        _linearizability("catalog-linearizable", catalog_ops, CatalogModel(), _catalog_tiers,
                         linearizability_timeout_s),
        _linearizability("tenants-linearizable",
                         [dataclasses.replace(op, kind=TENANT_KINDS[op.kind]) for op in history
                          if op.kind in TENANT_KINDS], CatalogModel(), _catalog_tiers,
                         linearizability_timeout_s),
    ]
    key_ops = [op for op in history if op.kind in KEY_KINDS]
    if not key_ops:
        checkers.append(CheckerResult("admin-keys", SKIPPED, "no key ops"))
    else:
        problems, summary = admin_key_violations(key_ops)
        checkers.append(CheckerResult("admin-keys", FAILED if problems else PASS,
                                      f"{len(problems)} violation(s) in {summary}" if problems
                                      else summary, problems))

    written = [op for op in kv_ops if op.kind in WRITE_KINDS]
    if not written:
        checkers.append(CheckerResult("no-lost-writes", SKIPPED, "no writes"))
    else:
        lost = lost_acknowledged_writes(written, final_state, missing_is_absent=False)
        acked = sum(1 for op in written if op.status == OK)
        if lost:
            checkers.append(CheckerResult(
                "no-lost-writes", FAILED, f"{len(lost)} key(s) contradict the acknowledged "
                                          f"writes", [x.explanation for x in lost]))
        elif unread:
            checkers.append(CheckerResult(
                "no-lost-writes", INCONCLUSIVE, f"{len(unread)} key(s) could not be read after "
                                                f"the run: {unread[:10]}"))
        else:
            checkers.append(CheckerResult(
                "no-lost-writes", PASS, f"{len(final_state)} key(s) read after the run agree "
                                        f"with {acked} acknowledged write(s)"))

    batch_ops = [op for op in kv_ops if op.kind == "batch_put"]
    if not batch_ops:
        checkers.append(CheckerResult("no-partial-batches", SKIPPED, "no batches"))
        checkers.append(CheckerResult("batch-reads-atomic", SKIPPED, "no batches"))
    else:
        partial = partial_batches(kv_ops, final_state, missing_is_absent=False)
        counts = Counter(op.status for op in batch_ops)
        summary = (f"{len(batch_ops)} batch(es): {counts.get(OK, 0)} ok, "
                   f"{counts.get(UNKNOWN, 0)} unknown, {counts.get(FAIL, 0)} failed")
        unread_batch = [k for k in unread if any(k in op.value for op in batch_ops)]
        if partial:
            checkers.append(CheckerResult("no-partial-batches", FAILED,
                                          f"{len(partial)} violation(s) in {summary}",
                                          [v.explanation for v in partial]))
        elif unread_batch:
            checkers.append(CheckerResult("no-partial-batches", INCONCLUSIVE,
                                          f"{len(unread_batch)} batch id(s) unread"))
        else:
            checkers.append(CheckerResult("no-partial-batches", PASS,
                                          f"all-or-nothing in the final state: {summary}"))
        reads = [op for op in kv_ops if op.kind == "batch_get"]
        bad = batch_read_violations(kv_ops)
        n_ok = sum(1 for op in reads if op.status == OK)
        if bad:
            checkers.append(CheckerResult("batch-reads-atomic", FAILED,
                                          f"{len(bad)} read(s) saw part of an acknowledged "
                                          f"batch", bad))
        else:
            checkers.append(CheckerResult("batch-reads-atomic", PASS,
                                          f"{n_ok} whole-batch read(s) ({len(reads)} issued) saw "
                                          f"acknowledged batches entirely"))

    checkers.append(copies_agree(copies))
    if backup is not None:
        checkers.append(backup_consistent_prefix(history, backup))
    if reshard is not None:
        checkers.append(reshard_finished(reshard, copies))
        checkers.append(rows_placed(reshard, final_state, unread, copies))
    if moves is not None:
        checkers.append(moves_ended(moves, copies))
    if drain is not None:
        checkers.append(drain_finished(drain, copies))
    if join is not None:
        checkers.append(join_balanced(join, copies))

    recovery_s = None
    if recovery_bound_s is not None:
        result = recovered_within(recovery_samples or [], recovery_bound_s)
        recovery_s = result.recovered_at_s
        checkers.append(CheckerResult("recovery", PASS if result.ok else FAILED,
                                      result.explanation))
    if workloads is not None:
        checkers.append(progress(history, workloads))
    return Report(checkers, op_counts(history), recovery_s, recovery_bound_s)


__all__ = ["evaluate", "admin_key_violations", "copies_agree", "reshard_finished", "rows_placed",
           "moves_ended", "drain_finished", "Report", "CheckerResult", "batch_read_violations", "op_counts", "progress",
           "PASS", "FAILED", "INCONCLUSIVE", "SKIPPED"]
