"""Checkers over the state a cluster is left in after a chaos run.

Linearizability (`chaos.linearizability`) judges what clients observed during the run. These
judge the end state against the history, once faults are healed and the cluster has settled:

* `lost_acknowledged_writes(history, final_reads)` - every key must hold a value that some write
  could have left last. An acknowledged write that nothing could have overwritten must be there.
* `partial_batches(history, final_state)` - a `batch_put` is atomic: a committed batch is fully
  visible (except keys that later writes may have overwritten), an unknown batch is all or
  nothing, a failed batch left no trace.
* `recovered_within(samples, bound_s)` - availability probes after a heal: the service must be
  back, and stay back, within the bound.
* `copy_disagreements(snapshot)` - replication: once healed and quiet, every copy of every shard
  is back in the in-sync set and holds the same content (the same content digest) as the others.
* `backup_prefix_violations(history, restored, cut_from_ns, cut_until_ns)` - a backup taken
  during the run and restored elsewhere holds a consistent prefix: every write acknowledged
  before the cut is there (or overwritten by a write that may also precede the cut), nothing
  written only after the cut is, and every batch is all there or all absent.

`final_reads` / `final_state` map key -> value, with None (or a missing key) meaning absent. They
are the result of reading every key the history wrote once the cluster is quiet. Writes are
identified by value, so the workload must give every write a unique value (e.g. "p3-w42").
Write kinds understood: put, delete, insert (put-if-absent), batch_put (value={key: value}),
batch_delete (value=[key, ...]); reads are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from chaos.history import FAIL, OK, UNKNOWN, Op, freeze, origin_of

ABSENT = None


@dataclass(frozen=True)
class Write:
    """One single-key effect of an op: `value` None means the key becomes absent."""

    op: Op
    key: Any
    value: Any


def writes_of(op: Op) -> list[Write]:
    """The single-key writes an op may perform (none for reads and no-op outcomes)."""
    kind = op.kind
    if kind == "put":
        return [Write(op, op.key, op.value)]
    if kind == "delete":
        return [Write(op, op.key, ABSENT)]
    if kind == "insert":
        if op.status == OK and op.output == "already_exists":
            return []
        return [Write(op, op.key, op.value)]
    if kind == "batch_put":
        return [Write(op, k, v) for k, v in dict(op.value).items()]
    if kind == "batch_delete":
        return [Write(op, k, ABSENT) for k in op.value]
    return []


def _writes_by_key(history: Iterable[Op], include_failed: bool = False) -> dict[Any, list[Write]]:
    out: dict[Any, list[Write]] = {}
    for op in history:
        if op.status == FAIL and not include_failed:
            continue
        for w in writes_of(op):
            out.setdefault(freeze(w.key), []).append(w)
    return out


def _read(final: Mapping, key: Any, missing_is_absent: bool):
    """(known, frozen value) for a key of the final state."""
    for k in (key, freeze(key)):
        try:
            if k in final:
                return True, freeze(final[k])
        except TypeError:  # unhashable spelling of the key
            continue
    return missing_is_absent, ABSENT


# ---- lost acknowledged writes -----------------------------------------------------------------

@dataclass
class LostWrite:
    """A key whose final value no write could have left last.

    kind: "lost" (an acknowledged write should be visible but is not) or "unexpected" (the key
    holds a value no non-failed op ever wrote). `acceptable` lists the values some write could
    have left last (None = absent); `acknowledged` the ok writes among them."""

    key: Any
    kind: str
    found: Any
    acceptable: list[Any]
    acknowledged: list[Op] = field(default_factory=list)
    explanation: str = ""


def acceptable_final_values(writes: Sequence[Write]) -> set:
    """Values (frozen; None = absent) that some linearization of these writes leaves last.

    A write can be last unless an acknowledged write certainly came after it (was invoked after
    it completed). Unknown writes never complete, so nothing certainly follows them. The initial
    absent state can be last only if no write certainly took effect."""
    definite = [w for w in writes if w.op.status == OK]
    out = set()
    for w in writes:
        end = w.op.end_ns
        if not any(end < d.op.invoke_ns for d in definite):
            out.add(freeze(w.value))
    if not definite:
        out.add(ABSENT)
    return out


def lost_acknowledged_writes(history: Iterable[Op], final_reads: Mapping, *,
                             missing_is_absent: bool = True) -> list[LostWrite]:
    """Keys whose final value contradicts the acknowledged writes (empty list: all good).

    Every put acknowledged ok and not possibly overwritten/deleted afterwards by an ok or unknown
    op must be present; when several writes may each be the last one, the final value must be one
    of theirs. Keys missing from `final_reads` count as absent unless `missing_is_absent=False`,
    in which case they are not judged."""
    history = list(history)
    origin = origin_of(history)
    by_key = _writes_by_key(history)
    failed_values = {k: {freeze(w.value) for w in ws}
                     for k, ws in _writes_by_key([op for op in history if op.status == FAIL],
                                                 include_failed=True).items()}
    findings: list[LostWrite] = []
    keys = list(by_key)
    for k, v in final_reads.items():
        fk = freeze(k)
        if fk not in by_key and v is not None:
            keys.append(fk)
    for key in keys:
        known, found = _read(final_reads, key, missing_is_absent)
        if not known:
            continue
        writes = by_key.get(key, [])
        acceptable = acceptable_final_values(writes)
        if found in acceptable:
            continue
        written = {freeze(w.value) for w in writes}
        acked = [w.op for w in writes if w.op.status == OK and freeze(w.value) in acceptable
                 and w.value is not ABSENT]
        if found is not ABSENT and found not in written:
            kind = "unexpected"
            why = ("a value written only by a failed op" if found in failed_values.get(key, ())
                   else "a value no op wrote")
            text = f"key {key!r} holds {found!r}: {why}"
        else:
            kind = "lost"
            text = (f"key {key!r} holds {'nothing' if found is ABSENT else repr(found)}, but "
                    f"the last write must be one of "
                    f"{sorted(map(repr, acceptable))}")
        if acked:
            text += "; acknowledged writes that should be visible:\n" + "\n".join(
                "  " + op.describe(origin) for op in acked)
        findings.append(LostWrite(key=key, kind=kind, found=found,
                                  acceptable=sorted(acceptable, key=repr), acknowledged=acked,
                                  explanation=text))
    return findings


# ---- batch atomicity --------------------------------------------------------------------------

@dataclass
class BatchViolation:
    """A batch_put seen partially (or, when committed, not at all; when failed, applied).

    kind: "partial" (some keys show the batch, others certainly do not), "lost" (a committed
    batch shows on no key that only it could explain), "failed_applied" (a failed batch's value
    is visible). Keys are split into `present` (hold the batch's value), `missing` (hold
    something else, and no other write could have come after the batch) and `overwritten`
    (hold something else that a later or concurrent write may explain)."""

    op: Op
    kind: str
    present: list[Any]
    missing: list[Any]
    overwritten: list[Any]
    explanation: str = ""


def partial_batches(history: Iterable[Op], final_state: Mapping, *,
                    missing_is_absent: bool = True) -> list[BatchViolation]:
    history = list(history)
    origin = origin_of(history)
    by_key = _writes_by_key(history)
    violations: list[BatchViolation] = []
    for op in history:
        if op.kind != "batch_put":
            continue
        present, missing, overwritten = [], [], []
        for k, v in dict(op.value).items():
            known, found = _read(final_state, k, missing_is_absent)
            if not known:
                continue
            if found == freeze(v):
                present.append(k)
                continue
            # Could another (non-failed) write on k have landed after this batch?
            later = [w for w in by_key.get(freeze(k), [])
                     if w.op is not op and not w.op.precedes(op)]
            (overwritten if later else missing).append(k)
        kind = None
        if op.status == OK and missing:
            kind = "partial" if present else "lost"
        elif op.status == UNKNOWN and missing and present:
            kind = "partial"
        elif op.status == FAIL and present:
            # Only a violation if no non-failed op wrote the same value to those keys.
            own = [k for k in present
                   if not any(w.op is not op and freeze(w.value) == freeze(op.value[k])
                              for w in by_key.get(freeze(k), []))]
            if own:
                kind = "failed_applied"
                present = own
        if kind is None:
            continue
        text = (f"batch {op.describe(origin)}: {kind}; present on {present!r}, missing on "
                f"{missing!r}, possibly overwritten on {overwritten!r}")
        violations.append(BatchViolation(op=op, kind=kind, present=present, missing=missing,
                                         overwritten=overwritten, explanation=text))
    return violations


# ---- recovery ---------------------------------------------------------------------------------

@dataclass
class RecoveryResult:
    """`recovered_at_s`: seconds after `since` of the first successful probe after which every
    probe succeeded (None: still failing at the last probe, or no probe)."""

    ok: bool
    recovered_at_s: float | None
    bound_s: float
    last_failure_s: float | None
    probes: int
    explanation: str

    def __bool__(self) -> bool:
        return self.ok


def _sample(s: Any) -> tuple[float, bool]:
    if isinstance(s, Mapping):
        return float(s["t"]), bool(s["ok"])
    if hasattr(s, "t") and hasattr(s, "ok"):
        return float(s.t), bool(s.ok)
    t, ok = s
    return float(t), bool(ok)


def recovered_within(samples: Iterable[Any], bound_s: float, *,
                     since: float = 0.0) -> RecoveryResult:
    """Did the service recover within `bound_s` seconds of `since` (the heal) and stay up?

    `samples` are probes as (t_seconds, ok) pairs, {"t": .., "ok": ..} dicts or objects with
    `t` and `ok`; t is in seconds on the same clock as `since` (e.g. seconds since the heal with
    since=0, or time.monotonic() values with since=heal time). Probes before `since` are ignored.
    """
    probes = sorted(p for p in map(_sample, samples) if p[0] >= since)
    if not probes:
        return RecoveryResult(False, None, bound_s, None, 0,
                              "no probe after the heal: recovery not observed")
    failures = [t for t, ok in probes if not ok]
    last_failure = (failures[-1] - since) if failures else None
    after = [t for t, ok in probes if ok and (not failures or t > failures[-1])]
    if not after:
        return RecoveryResult(False, None, bound_s, last_failure, len(probes),
                              f"still failing at the last probe "
                              f"({probes[-1][0] - since:.3f}s after the heal)")
    recovered = after[0] - since
    ok = recovered <= bound_s
    text = (f"recovered {recovered:.3f}s after the heal (bound {bound_s:.3f}s)"
            + (f", last failed probe at {last_failure:.3f}s" if last_failure is not None else "")
            + ("" if ok else ": too slow"))
    return RecoveryResult(ok, recovered, bound_s, last_failure, len(probes), text)


# ---- copies agree -----------------------------------------------------------------------------

def copy_disagreements(snapshot: Mapping[str, Any]) -> list[str]:
    """What is wrong with a copy snapshot (`chaos.harness.ProxiedCluster.copy_snapshot`): one
    line per shard with a copy outside its in-sync set, a copy that gave no status or no
    content digest, or copies whose digests differ. Empty when every copy of every shard is in
    sync and all copies of a shard hold the same content. A snapshot that could not be taken
    (its "error") is one line too: nothing was shown to agree."""
    if snapshot.get("error"):
        return [f"no copy snapshot: {snapshot['error']}"]
    out: list[str] = []
    for label, dataset in sorted(snapshot.get("datasets", {}).items()):
        for shard in dataset["shards"]:
            where = (f"{label} shard {shard['shard']} (primary {shard['primary']}, term "
                     f"{shard['term']}, copies {','.join(shard['copies'])})")
            behind = [c for c in shard["copies"] if c not in shard["in_sync"]]
            if behind:
                out.append(f"{where}: {', '.join(behind)} not in the in-sync set "
                           f"{','.join(shard['in_sync'])}")
            statuses = shard["status"]
            silent = {c: statuses.get(c, {}).get("error") or "no content digest"
                      for c in shard["copies"] if not statuses.get(c, {}).get("digest")}
            for copy, why in sorted(silent.items()):
                out.append(f"{where}: copy {copy} gave no digest ({why})")
            digests = {c: st["digest"] for c, st in statuses.items() if st.get("digest")}
            if len(set(digests.values())) > 1:
                held = "; ".join(f"{c} digest {d[:12]} at op {statuses[c].get('last_seq')} "
                                 f"(term {statuses[c].get('last_term')}), "
                                 f"{statuses[c].get('vector_count')} vectors"
                                 for c, d in sorted(digests.items()))
                out.append(f"{where}: copies hold different content: {held}")
    return out


__all__ = ["Write", "writes_of", "acceptable_final_values", "LostWrite",
           "lost_acknowledged_writes", "BatchViolation", "partial_batches", "RecoveryResult",
           "recovered_within", "copy_disagreements"]


# ---- backups: a consistent prefix -------------------------------------------------------------

@dataclass
class PrefixViolation:
    """What a restored backup holds that no consistent cut could: kind "missing" (a write
    acknowledged before the cut is not there and no write that may precede the cut explains
    what is), "future" (a value only a write invoked after the cut could have left) or
    "partial" (a batch present on some of its keys and not explained on the others)."""

    kind: str
    key: Any
    found: Any
    op: Op | None
    explanation: str = ""


def backup_prefix_violations(history: Iterable[Op], restored: Mapping, cut_from_ns: int,
                             cut_until_ns: int) -> list[PrefixViolation]:
    """Judges a restored backup's content against the run's history. The cut was taken at some
    instant in [cut_from_ns, cut_until_ns] (history clock): a write that completed before
    cut_from_ns is before it, one invoked after cut_until_ns is after it, anything else may be
    either. Keys missing from `restored` (not read) are not judged; a key read as absent is None.
    Values identify writes (the workloads give every write a unique value)."""
    history = list(history)
    origin = origin_of(history)
    by_key = _writes_by_key(history)
    violations: list[PrefixViolation] = []

    def may_be_in(w: Write) -> bool:
        return w.op.invoke_ns <= cut_until_ns

    def explained(key, found, unless: Op | None = None) -> bool:
        """Some write that may precede the cut, other than `unless` and not real-time before
        it, left `found` on `key`; None (absent) is also explained when no write precedes."""
        writes = by_key.get(freeze(key), [])
        candidates = [w for w in writes if may_be_in(w) and w.op is not unless
                      and (unless is None or not w.op.precedes(unless))]
        if any(freeze(w.value) == found for w in candidates):
            return True
        return found is ABSENT and unless is None and not any(
            w.op.status == OK and w.op.end_ns < cut_from_ns for w in writes)

    for key_frozen, writes in by_key.items():
        known, found = _read(restored, key_frozen, missing_is_absent=False)
        if not known:
            continue
        sample = writes[0].key
        if found is not ABSENT and not any(freeze(w.value) == found and may_be_in(w)
                                           for w in writes):
            violations.append(PrefixViolation("future", sample, found, None, (
                f"key {sample!r} holds {found!r}, which no write invoked before the cut "
                f"wrote")))
            continue
        # Every acknowledged write that completed before the cut is there, or a write that
        # may come after it (and before the cut) replaced it.
        for w in writes:
            if w.op.status != OK or w.op.end_ns >= cut_from_ns or freeze(w.value) == found:
                continue
            if explained(sample, found, unless=w.op):
                continue
            violations.append(PrefixViolation("missing", sample, found, w.op, (
                f"key {sample!r} holds {found!r}, but {w.op.describe(origin)} was acknowledged "
                f"before the cut and nothing that may follow it before the cut wrote that")))
            break
    for op in history:
        if op.kind != "batch_put" or op.status == FAIL:
            continue
        present, unexplained = [], []
        for k, v in dict(op.value).items():
            known, found = _read(restored, k, missing_is_absent=False)
            if not known:
                continue
            if found == freeze(v):
                present.append(k)
            elif not explained(k, found, unless=op):
                unexplained.append((k, found))
        if present and unexplained:
            k, found = unexplained[0]
            violations.append(PrefixViolation("partial", k, found, op, (
                f"batch {op.describe(origin)} is in the backup on {present!r} but not on "
                f"{[u[0] for u in unexplained]!r} (found {found!r})")))
    return violations



# ---- shard splits: every row where a read by its id finds it ------------------------------------

def rows_out_of_place(listed: Sequence[Sequence[Any]], read_by_id: Mapping[str, Any],
                      unread: Iterable[str] = (), stored_rows: int | None = None) -> list[str]:
    """What is wrong with where a dataset's rows sit after a shard split (empty: nothing).

    A read by id asks the one shard that `hash(id) % shard_count` names, so a row left on
    another shard is invisible to it: when that was the row's only copy, the acknowledged-write
    checkers see it lost. But a moved row also left behind on its old shard (a duplicate, a
    stale value, a deleted row) is not: reads by id never see it, while listings and searches,
    which ask every shard, do. So the listing (every shard's rows, `listed` as [id, value]
    pairs) must show each row once, with the value a read by its id returned (`read_by_id`:
    id -> value, None for absent), and nothing a read by id misses; and the shards' stores
    must hold no more rows than they list (`stored_rows`, the sum of each shard's row count:
    a listing hides the rows a shard does not own until its split's purge deletes them, the
    stores count them). Ids in `unread` (no final read answered) are not judged."""
    unread = set(unread)
    out: list[str] = []
    seen: dict[Any, list[Any]] = {}
    for vector_id, value in listed:
        seen.setdefault(vector_id, []).append(value)
    for vector_id, values in sorted(seen.items(), key=lambda item: str(item[0])):
        if vector_id in unread:
            continue
        if len(values) > 1:
            out.append(f"row {vector_id!r} is listed {len(values)} times (values "
                       f"{values!r}): more than one shard holds it")
        if vector_id not in read_by_id:
            out.append(f"row {vector_id!r} (value {values[0]!r}) is listed, but no workload "
                       "wrote that id")
            continue
        read = read_by_id[vector_id]
        if read is None:
            out.append(f"row {vector_id!r} is listed with value {values[0]!r}, but a read by "
                       "its id finds nothing: it is on a shard it does not belong to")
        elif any(freeze(v) != freeze(read) for v in values):
            out.append(f"row {vector_id!r} is listed with value(s) {values!r}, but a read by "
                       f"its id returns {read!r}: another shard holds a stale copy")
    for vector_id, value in sorted(read_by_id.items(), key=lambda item: str(item[0])):
        if value is not None and vector_id not in seen:
            out.append(f"row {vector_id!r} is read by its id (value {value!r}), but the "
                       "listing of every shard misses it")
    if stored_rows is not None and stored_rows != len(listed):
        more = stored_rows - len(listed)
        out.append(f"the shards store {stored_rows} row(s) and list {len(listed)}: "
                   + (f"{more} row(s) left on shards that do not own them (never purged)"
                      if more > 0 else "the listing shows rows no store holds"))
    return out


__all__ += ["rows_out_of_place"]
