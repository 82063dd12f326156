"""Linearizability checking for chaos histories (Wing & Gong / Lowe / Porcupine style).

Why this file exists: there is no linearizability checker on PyPI. The established ones are
Porcupine (Go, github.com/anishathalye/porcupine), Knossos and Elle (Clojure, part of Jepsen);
none is a Python package we could depend on, and calling out to Go or the JVM from the chaos
harness would add a toolchain to every developer machine and to CI. The algorithm is small, so it
is written here, following Porcupine's `checkSingle`:

* The history of one partition becomes a doubly linked list of call and return entries sorted by
  time (on equal times calls go first, so touching intervals count as concurrent).
* Just-in-time linearization (Lowe): walk the list from the head; at a call entry try to apply the
  op to the model state. If that is legal and the pair (bitset of linearized ops, new state) has
  not been seen before (memoization), push (entry, old state) on a stack, "lift" the op's call and
  return entries out of the list and restart from the head. At a return entry (an op that must
  already have taken effect but has not been linearized) backtrack: pop the last op, restore its
  state and entries, and try the next entry after it. The history is linearizable when every op
  has been lifted; it is not when the stack is empty at a return entry.
* P-compositionality: linearizability is local, so a model may split the history into
  independent partitions (one register per key) that are checked one by one. That keeps each
  search small: 2,000 ops over 50 keys is 50 searches over ~40 ops each.

Ops that ended "fail" are dropped (definitely not applied). Ops that ended "unknown" may have
taken effect at any time after their invocation - or never. As in Porcupine they get a return time
of +infinity, so the search may place them anywhere after their call. "Never" is covered too:
once every op that completed "ok" has been linearized, the remaining unknown ops can all be put
after everything else, where their effect is observed by nobody - exactly as if they had never
happened - so the search stops with success at that point (which also spares it from ever
enumerating their late placements). The models accept any output for an unknown op, and unknown
read-only ops are pruned before the search because they constrain nothing.

Entry points: `check(history, model)` for any `Model`, and `check_kv` / `check_catalog` for the
two models defined here: `KVModel` (a register per key: put / get / delete, plus insert and batch
ops that split into per-key ops) and `CatalogModel` (a set of dataset names: create / drop /
list).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Hashable, Iterable, Mapping, Sequence

from chaos.history import FAIL, OK, UNKNOWN, Op, freeze, origin_of, validate_history

# Verdicts
LINEARIZABLE = "ok"
ILLEGAL = "illegal"
TIMEOUT = "unknown"


# ---- models -----------------------------------------------------------------------------------

class Model:
    """A sequential specification. States must be hashable and compare by value.

    `step(state, op)` returns (legal, new_state): whether `op` with its recorded output is a
    legal transition from `state`. For an op with status "unknown" the output is not known, so
    `step` must accept any output and return the state the op would produce if it took effect.
    """

    name = "model"

    def init(self) -> Hashable:
        return None

    def step(self, state: Any, op: Op) -> tuple[bool, Any]:
        raise NotImplementedError

    def partition(self, history: Sequence[Op]) -> Mapping[Any, list[Op]]:
        """Independent sub-histories; the default is the whole history as one partition."""
        return {None: list(history)}

    def prunable(self, op: Op) -> bool:
        """True for ops that constrain nothing when unknown (reads): dropped before the search."""
        return False

    def describe_state(self, state: Any) -> str:
        return repr(state)


ABSENT = None


class KVModel(Model):
    """A register per key. State: the frozen value, or None when the key is absent.

    Kinds (`value` is the input, `output` the answer recorded for an "ok" op):

    * ``put``     value=v               -> any output; the key holds v afterwards. v must not be
                                           None (None means absent).
    * ``get``                           -> output v, or None when absent.
    * ``delete``                        -> None/"ok" (no claim), "not_found" (key was absent) or
                                           "deleted" (key was present); the key is absent after.
    * ``insert``  value=v (put-if-absent) -> "ok"/None when it wrote v (key was absent),
                                           "already_exists" when the key was present (no change).
    * ``batch_put``  value={key: v, ...} - split into one put per key (cross-key atomicity is
                                           `chaos.checkers.partial_batches`' job).
    * ``batch_get``  value=[key, ...], output={key: v or None} - split into one get per key.
    * ``batch_delete`` value=[key, ...]  - split into one delete per key (no claim per key).

    Values are compared after `freeze` (lists -> tuples ...), so JSON round-trips are harmless.
    Give every write a unique value so that a read pins down which write it saw.
    """

    name = "kv-register"
    kinds = ("put", "get", "delete", "insert", "batch_put", "batch_get", "batch_delete")

    def init(self) -> Hashable:
        return ABSENT

    def step(self, state: Any, op: Op) -> tuple[bool, Any]:
        kind = op.kind
        unknown = op.status != OK
        if kind == "put":
            return True, freeze(op.value)
        if kind == "get":
            if unknown:
                return True, state
            return freeze(op.output) == state, state
        if kind == "delete":
            if unknown or op.output in (None, "ok", True):
                return True, ABSENT
            if op.output == "not_found":
                return state is ABSENT, ABSENT
            if op.output == "deleted":
                return state is not ABSENT, ABSENT
            raise ValueError(f"op {op.id}: delete output {op.output!r} is not one of None, "
                             f"'ok', 'not_found', 'deleted'")
        if kind == "insert":
            if unknown:
                return True, freeze(op.value) if state is ABSENT else state
            if op.output in (None, "ok", True):
                return state is ABSENT, freeze(op.value)
            if op.output == "already_exists":
                return state is not ABSENT, state
            raise ValueError(f"op {op.id}: insert output {op.output!r} is not one of None, "
                             f"'ok', 'already_exists'")
        raise ValueError(f"op {op.id}: kind {kind!r} is not a KV op {self.kinds}")

    def prunable(self, op: Op) -> bool:
        return op.kind in ("get", "batch_get")

    def partition(self, history: Sequence[Op]) -> Mapping[Any, list[Op]]:
        parts: dict[Any, list[Op]] = {}
        for op in history:
            for sub in self.split(op):
                parts.setdefault(freeze(sub.key), []).append(sub)
        return parts

    @staticmethod
    def split(op: Op) -> list[Op]:
        """One single-key op per key touched (batch ops split; the id stays the batch's id)."""
        if op.kind == "batch_put":
            return [replace(op, kind="put", key=k, value=v, output=None)
                    for k, v in dict(op.value).items()]
        if op.kind == "batch_get":
            out = op.output if op.status == OK else None
            if op.status == OK and not isinstance(out, Mapping):
                raise ValueError(f"op {op.id}: batch_get output must map key -> value")
            return [replace(op, kind="get", key=k, value=None,
                            output=(out.get(k) if out is not None else None))
                    for k in op.value]
        if op.kind == "batch_delete":
            return [replace(op, kind="delete", key=k, value=None, output=None) for k in op.value]
        if op.kind == "put" and op.value is None:
            raise ValueError(f"op {op.id}: put of None (None means absent; use delete)")
        return [op]


class CatalogModel(Model):
    """The dataset catalog as a set of names. State: frozenset of names.

    * ``create`` key=name -> "ok"/None (it was absent; now present) or "already_exists".
    * ``drop``   key=name -> "ok"/None (it was present; now absent) or "not_found".
    * ``list``            -> output: the collection of names (any iterable).

    Without list ops every name is independent and is checked as its own partition; with list
    ops the whole catalog is one partition.
    """

    name = "catalog-set"
    kinds = ("create", "drop", "list")

    def init(self) -> Hashable:
        return frozenset()

    def step(self, state: Any, op: Op) -> tuple[bool, Any]:
        kind = op.kind
        unknown = op.status != OK
        if kind == "list":
            if unknown:
                return True, state
            return frozenset(freeze(n) for n in op.output) == state, state
        name = freeze(op.key)
        if kind == "create":
            if unknown:
                return True, state | {name}
            if op.output in (None, "ok", True):
                return name not in state, state | {name}
            if op.output == "already_exists":
                return name in state, state
            raise ValueError(f"op {op.id}: create output {op.output!r} is not one of None, "
                             f"'ok', 'already_exists'")
        if kind == "drop":
            if unknown:
                return True, state - {name}
            if op.output in (None, "ok", True):
                return name in state, state - {name}
            if op.output == "not_found":
                return name not in state, state
            raise ValueError(f"op {op.id}: drop output {op.output!r} is not one of None, "
                             f"'ok', 'not_found'")
        raise ValueError(f"op {op.id}: kind {kind!r} is not a catalog op {self.kinds}")

    def prunable(self, op: Op) -> bool:
        return op.kind == "list"

    def partition(self, history: Sequence[Op]) -> Mapping[Any, list[Op]]:
        if any(op.kind == "list" for op in history):
            return {None: list(history)}
        parts: dict[Any, list[Op]] = {}
        for op in history:
            parts.setdefault(freeze(op.key), []).append(op)
        return parts

    def describe_state(self, state: Any) -> str:
        return "{" + ", ".join(sorted(repr(n) for n in state)) + "}"


# ---- results ----------------------------------------------------------------------------------

@dataclass
class PartitionResult:
    """The verdict on one partition (one key for the KV model)."""

    key: Any
    verdict: str
    ops: list[Op]
    linearization: list[Op] = field(default_factory=list)
    longest_prefix: list[Op] = field(default_factory=list)
    state_after_prefix: Any = None
    blocking_op: Op | None = None
    candidates: list[Op] = field(default_factory=list)
    explanation: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict == LINEARIZABLE


@dataclass
class CheckResult:
    """`ok` is True only when every partition is linearizable. `key` names the first failing
    partition; `failures` holds every illegal partition with its explanation, `timeouts` those
    the time budget did not allow to finish (verdict "unknown" when there is no failure)."""

    verdict: str
    model: str
    partitions: int
    failures: list[PartitionResult] = field(default_factory=list)
    timeouts: list[PartitionResult] = field(default_factory=list)
    results: list[PartitionResult] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.verdict == LINEARIZABLE

    @property
    def key(self) -> Any:
        return self.failures[0].key if self.failures else None

    @property
    def explanation(self) -> str:
        if self.ok:
            return (f"linearizable: {self.partitions} partition(s) checked against "
                    f"{self.model} in {self.elapsed_s:.3f}s")
        parts = [r.explanation for r in self.failures]
        if self.timeouts:
            parts.append("check did not finish for key(s) " +
                         ", ".join(repr(r.key) for r in self.timeouts))
        return "\n\n".join(parts)

    def __bool__(self) -> bool:
        return self.ok


# ---- the search -------------------------------------------------------------------------------

class _Timeout(Exception):
    pass


def _search(model: Model, ops: list[Op], deadline: float | None):
    """Porcupine's checkSingle. Returns (ok, stack of op indices, state, best prefix, best state).

    On success the stack is a witness linearization (unknown ops left out were never applied or
    applied last, which nobody observed). On failure the best prefix is the longest sequence of
    ops found that could be linearized.
    """
    n = len(ops)
    events = []
    for i, op in enumerate(ops):
        events.append((op.invoke_ns, 0, i))
        events.append((op.end_ns, 1, i))
    events.sort()
    head = 2 * n
    nxt = [0] * (2 * n + 1)
    prv = [0] * (2 * n + 1)
    is_call = [False] * (2 * n)
    op_of = [0] * (2 * n)
    match = [0] * (2 * n)
    call_node = [0] * n
    for pos, (_, what, i) in enumerate(events):
        op_of[pos] = i
        if what == 0:
            is_call[pos] = True
            call_node[i] = pos
        else:
            match[call_node[i]] = pos
    for pos in range(2 * n):
        nxt[pos] = pos + 1 if pos + 1 < 2 * n else -1
        prv[pos] = pos - 1 if pos > 0 else head
    nxt[head] = 0 if n else -1

    definite = [op.status == OK for op in ops]
    remaining = sum(definite)
    state = model.init()
    if remaining == 0:
        return True, [], state, [], state
    step = model.step
    linearized = 0
    cache: set = set()
    calls: list[tuple[int, Any]] = []
    best: list[int] = []
    best_state = state
    entry = nxt[head]
    iterations = 0
    while True:
        iterations += 1
        if deadline is not None and not iterations & 0xFFF and time.monotonic() > deadline:
            raise _Timeout(best, best_state)
        if is_call[entry]:
            i = op_of[entry]
            legal, new_state = step(state, ops[i])
            if legal:
                new_lin = linearized | (1 << i)
                memo = (new_lin, new_state)
                if memo not in cache:
                    cache.add(memo)
                    calls.append((entry, state))
                    state = new_state
                    linearized = new_lin
                    # lift the call and its return out of the list
                    r = match[entry]
                    p, q = prv[entry], nxt[entry]
                    nxt[p] = q
                    if q != -1:
                        prv[q] = p
                    p, q = prv[r], nxt[r]
                    nxt[p] = q
                    if q != -1:
                        prv[q] = p
                    if definite[i]:
                        remaining -= 1
                        if remaining == 0:
                            return True, [op_of[c] for c, _ in calls], state, [], state
                    if len(calls) > len(best):
                        best = [op_of[c] for c, _ in calls]
                        best_state = state
                    entry = nxt[head]
                    continue
            entry = nxt[entry]
        else:
            # A return entry: that op had to be linearized by now. Backtrack.
            if not calls:
                return False, [], state, best, best_state
            entry, state = calls.pop()
            i = op_of[entry]
            linearized &= ~(1 << i)
            if definite[i]:
                remaining += 1
            # unlift: return entry first, then the call entry
            r = match[entry]
            nxt[prv[r]] = r
            if nxt[r] != -1:
                prv[nxt[r]] = r
            nxt[prv[entry]] = entry
            if nxt[entry] != -1:
                prv[nxt[entry]] = entry
            entry = nxt[entry]


def _explain(model: Model, key: Any, ops: list[Op], prefix: list[Op], state: Any,
             origin: int, limit: int = 12) -> tuple[str, Op | None, list[Op]]:
    done = {id(op) for op in prefix}
    rest = [op for op in ops if id(op) not in done]
    pending = [op for op in rest if op.status == OK]
    blocking = min(pending, key=lambda op: (op.complete_ns, op.invoke_ns)) if pending else None
    candidates = ([op for op in rest if op.invoke_ns <= blocking.complete_ns]
                  if blocking is not None else [])
    candidates.sort(key=lambda op: (op.invoke_ns, op.id))
    where = "the history" if key is None else f"key {key!r}"
    lines = [f"{where}: not linearizable against {model.name} ({len(ops)} op(s) after dropping "
             f"failed ops and unknown reads)."]
    lines.append(f"Longest linearizable prefix found: {len(prefix)} op(s), leaving state "
                 f"{model.describe_state(state)}:")
    shown = prefix[-limit:]
    if len(prefix) > len(shown):
        lines.append(f"  ... {len(prefix) - len(shown)} earlier op(s)")
    lines.extend("  " + op.describe(origin) for op in shown)
    if blocking is not None:
        lines.append(f"Then {blocking.describe(origin)} must take effect before it returns, "
                     f"but no order of the ops that may still go before it is legal. Those ops "
                     f"(legality of each as the next step from that state):")
        for op in candidates:
            try:
                legal = model.step(state, op)[0]
            except Exception as exc:  # a malformed op: show it rather than hide the report
                legal = f"error: {exc}"
            lines.append(f"  {op.describe(origin)}   "
                         f"{'legal' if legal is True else 'ILLEGAL' if legal is False else legal}")
    return "\n".join(lines), blocking, candidates


def check_partition(model: Model, key: Any, ops: Sequence[Op], *,
                    deadline: float | None = None, origin: int | None = None) -> PartitionResult:
    ops = list(ops)
    origin = origin_of(ops) if origin is None else origin
    try:
        ok, order, _, best, best_state = _search(model, ops, deadline)
    except _Timeout as t:
        best, best_state = t.args
        prefix = [ops[i] for i in best]
        return PartitionResult(key=key, verdict=TIMEOUT, ops=ops, longest_prefix=prefix,
                               state_after_prefix=best_state,
                               explanation=f"key {key!r}: search did not finish in time "
                                           f"({len(ops)} ops; longest prefix {len(prefix)})")
    if ok:
        lin = [ops[i] for i in order]
        return PartitionResult(key=key, verdict=LINEARIZABLE, ops=ops, linearization=lin,
                               longest_prefix=lin)
    prefix = [ops[i] for i in best]
    text, blocking, candidates = _explain(model, key, ops, prefix, best_state, origin)
    return PartitionResult(key=key, verdict=ILLEGAL, ops=ops, longest_prefix=prefix,
                           state_after_prefix=best_state, blocking_op=blocking,
                           candidates=candidates, explanation=text)


def prepare(history: Iterable[Op], model: Model) -> list[Op]:
    """Drop failed ops and unknown ops the model can prune (reads); validate the rest."""
    history = list(history)
    validate_history(history)
    return [op for op in history
            if op.status != FAIL and not (op.status == UNKNOWN and model.prunable(op))]


def check(history: Iterable[Op], model: Model, *, timeout_s: float | None = None,
          stop_at_first_failure: bool = False) -> CheckResult:
    """Check a whole history against `model`, one partition at a time."""
    started = time.monotonic()
    deadline = started + timeout_s if timeout_s is not None else None
    history = list(history)
    origin = origin_of(history)
    parts = model.partition(prepare(history, model))
    result = CheckResult(verdict=LINEARIZABLE, model=model.name, partitions=len(parts))
    for key, ops in parts.items():
        r = check_partition(model, key, ops, deadline=deadline, origin=origin)
        result.results.append(r)
        if r.verdict == ILLEGAL:
            result.failures.append(r)
            if stop_at_first_failure:
                break
        elif r.verdict == TIMEOUT:
            result.timeouts.append(r)
    if result.failures:
        result.verdict = ILLEGAL
    elif result.timeouts:
        result.verdict = TIMEOUT
    result.elapsed_s = time.monotonic() - started
    return result


def check_kv(history: Iterable[Op], **kwargs) -> CheckResult:
    return check(history, KVModel(), **kwargs)


def check_catalog(history: Iterable[Op], **kwargs) -> CheckResult:
    return check(history, CatalogModel(), **kwargs)


__all__ = ["Model", "KVModel", "CatalogModel", "CheckResult", "PartitionResult", "check",
           "check_kv", "check_catalog", "check_partition", "prepare", "LINEARIZABLE", "ILLEGAL",
           "TIMEOUT", "UNKNOWN"]
