"""Specification of chaos/linearizability.py: hand-made histories with known verdicts, property
tests from sequential executions stretched into concurrent intervals, and a speed guard."""

from __future__ import annotations

import random
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaos.history import HistoryRecorder, Op
from chaos.linearizability import (ILLEGAL, LINEARIZABLE, TIMEOUT, CatalogModel, KVModel, Model,
                                   check, check_catalog, check_kv)

# ---- helpers ----------------------------------------------------------------------------------


class H:
    """Build a history by hand: H().put("k", "a", 0, 1).get("k", "a", 2, 3) ..."""

    def __init__(self):
        self.ops: list[Op] = []

    def add(self, kind, key=None, value=None, output=None, t0=0, t1=None, status="ok",
            process=None):
        op = Op(process=len(self.ops) if process is None else process, kind=kind, key=key,
                value=value, output=output, invoke_ns=t0,
                complete_ns=None if status == "unknown" else t1, status=status,
                id=len(self.ops))
        self.ops.append(op)
        return self

    def put(self, key, value, t0, t1, status="ok"):
        return self.add("put", key, value, None, t0, t1, status)

    def get(self, key, output, t0, t1, status="ok"):
        return self.add("get", key, None, output, t0, t1, status)

    def delete(self, key, t0, t1, output=None, status="ok"):
        return self.add("delete", key, None, output, t0, t1, status)


def kv(history: H | list[Op]):
    return check_kv(history.ops if isinstance(history, H) else history)


def assert_witness(result, model):
    """An ok result's witness order must respect real time and the model."""
    for part in result.results:
        order = part.linearization
        state = model.init()
        for op in order:
            legal, state = model.step(state, op)
            assert legal, op
        for a_pos, a in enumerate(order):
            for b in order[:a_pos]:
                assert not a.precedes(b), (a, b)
        # every definite op is in the witness
        assert {o.id for o in part.ops if o.status == "ok"} <= {o.id for o in order}


# ---- sequential histories ---------------------------------------------------------------------


def test_empty_history_is_linearizable():
    result = check_kv([])
    assert result.ok and result.verdict == LINEARIZABLE and result.partitions == 0
    assert result.key is None


def test_sequential_put_get_delete_get_linearizes_in_real_time_order():
    h = H().get("k", None, 0, 1).put("k", "a", 2, 3).get("k", "a", 4, 5).delete("k", 6, 7) \
        .get("k", None, 8, 9).put("k", "b", 10, 11).get("k", "b", 12, 13)
    result = kv(h)
    assert result.ok, result.explanation
    assert_witness(result, KVModel())
    assert [op.id for op in result.results[0].linearization] == list(range(7))


def test_sequential_overwrite_then_read_latest():
    h = H().put("k", "a", 0, 1).put("k", "b", 2, 3).get("k", "b", 4, 5)
    assert kv(h).ok


def test_stale_read_after_completed_write_is_illegal():
    h = H().put("k", "a", 0, 1).put("k", "b", 2, 3).get("k", "a", 4, 5)
    result = kv(h)
    assert not result.ok and result.verdict == ILLEGAL
    assert result.key == "k"
    part = result.failures[0]
    assert part.blocking_op.id == 2
    assert [op.id for op in part.longest_prefix] == [0, 1]
    assert part.state_after_prefix == "b"
    assert "'k'" in result.explanation and "#2" in result.explanation


def test_read_of_absent_after_completed_write_is_illegal():
    assert not kv(H().put("k", "a", 0, 1).get("k", None, 2, 3)).ok


def test_read_of_a_value_never_written_is_illegal():
    assert not kv(H().put("k", "a", 0, 1).get("k", "zzz", 2, 3)).ok
    # even when concurrent with a write
    assert not kv(H().put("k", "a", 0, 10).get("k", "zzz", 1, 2)).ok
    # and on a key nobody wrote
    assert not kv(H().get("k", "a", 0, 1)).ok


def test_two_sequential_reads_new_then_old_is_illegal():
    h = H().put("k", "a", 0, 1).put("k", "b", 2, 20).get("k", "b", 3, 4).get("k", "a", 5, 6)
    result = kv(h)
    assert not result.ok
    assert result.failures[0].blocking_op.id == 3


def test_delete_then_read_seeing_old_value_is_illegal():
    h = H().put("k", "a", 0, 1).delete("k", 2, 3).get("k", "a", 4, 5)
    assert not kv(h).ok
    # while the delete is still in flight, the old value is fine
    h = H().put("k", "a", 0, 1).delete("k", 2, 6).get("k", "a", 4, 5)
    assert kv(h).ok


def test_delete_outputs_are_checked():
    assert kv(H().delete("k", 0, 1, output="not_found")).ok
    assert not kv(H().put("k", "a", 0, 1).delete("k", 2, 3, output="not_found")).ok
    assert not kv(H().delete("k", 0, 1, output="deleted")).ok
    assert kv(H().put("k", "a", 0, 1).delete("k", 2, 3, output="deleted")).ok


def test_insert_is_put_if_absent():
    h = H().add("insert", "k", "a", "ok", 0, 1).add("insert", "k", "b", "already_exists", 2, 3) \
        .get("k", "a", 4, 5)
    assert kv(h).ok
    h = H().add("insert", "k", "a", "ok", 0, 1).add("insert", "k", "b", "ok", 2, 3)
    assert not kv(h).ok
    h = H().add("insert", "k", "a", "already_exists", 0, 1)
    assert not kv(h).ok


# ---- concurrency ------------------------------------------------------------------------------


def test_concurrent_put_and_get_may_see_either_value():
    for seen in ("a", None):
        h = H().put("k", "a", 0, 10).get("k", seen, 1, 2)
        assert kv(h).ok, seen


def test_concurrent_reads_may_disagree_while_the_write_is_in_flight():
    h = H().put("k", "a", 0, 10).get("k", "a", 1, 5).get("k", None, 2, 6)
    assert kv(h).ok


def test_once_a_read_sees_the_new_value_later_reads_must_too():
    h = H().put("k", "a", 0, 10).get("k", "a", 1, 2).get("k", None, 3, 4)
    assert not kv(h).ok


def test_two_concurrent_writers_agree_on_one_order():
    base = H().put("k", "a", 0, 10).put("k", "b", 0, 10)
    ok = H()
    ok.ops = list(base.ops)
    ok.get("k", "b", 11, 12).get("k", "a", 13, 14)
    assert not kv(ok).ok
    fine = H()
    fine.ops = list(base.ops)
    fine.get("k", "a", 11, 12).get("k", "a", 13, 14)
    assert kv(fine).ok
    # during the writes, a read can see b then a (a linearized after b)
    during = H()
    during.ops = list(base.ops)
    during.get("k", "b", 1, 2).get("k", "a", 3, 4).get("k", "a", 11, 12)
    assert kv(during).ok


def test_touching_intervals_count_as_concurrent():
    # put completes at 5, get invoked at 5: not ordered, so reading absent is allowed
    assert kv(H().put("k", "a", 0, 5).get("k", None, 5, 6)).ok
    assert not kv(H().put("k", "a", 0, 5).get("k", None, 6, 7)).ok


def test_many_concurrent_ops_witness_respects_real_time():
    h = H().put("k", "a", 0, 100).put("k", "b", 10, 30).get("k", "b", 20, 40) \
        .put("k", "c", 35, 50).get("k", "a", 60, 70).get("k", "a", 80, 90)
    result = kv(h)
    assert result.ok, result.explanation
    assert_witness(result, KVModel())


# ---- unknown and failed ops -------------------------------------------------------------------


def test_unknown_write_may_take_effect_late():
    h = H().put("k", "a", 0, 1).put("k", "b", 2, None, status="unknown") \
        .get("k", "a", 3, 4).get("k", "a", 50, 51).get("k", "b", 1000, 1001) \
        .get("k", "b", 2000, 2001)
    result = kv(h)
    assert result.ok, result.explanation
    assert_witness(result, KVModel())


def test_unknown_write_may_never_take_effect():
    h = H().put("k", "a", 0, 1).put("k", "b", 2, None, status="unknown") \
        .get("k", "a", 3, 4).get("k", "a", 1000, 1001)
    result = kv(h)
    assert result.ok
    # the witness leaves the unknown write out (it never happened, or happened unobserved)
    assert 1 not in [op.id for op in result.results[0].linearization]


def test_unknown_write_with_nothing_after_it():
    assert kv(H().put("k", "b", 0, None, status="unknown")).ok
    assert kv(H().put("k", "b", 0, None, status="unknown").get("k", None, 1, 2)).ok


def test_unknown_write_takes_effect_at_most_once_and_not_before_invoke():
    # once b is seen and then overwritten, b cannot come back
    h = H().put("k", "b", 0, None, status="unknown").get("k", "b", 1, 2).put("k", "c", 3, 4) \
        .get("k", "b", 5, 6)
    assert not kv(h).ok
    # b cannot be read before the write was even invoked
    h = H().get("k", "b", 0, 1).put("k", "b", 2, None, status="unknown")
    assert not kv(h).ok


def test_value_seen_from_unknown_write_then_old_value_is_illegal():
    h = H().put("k", "a", 0, 1).put("k", "b", 2, None, status="unknown") \
        .get("k", "b", 5, 6).get("k", "a", 7, 8)
    assert not kv(h).ok


def test_unknown_delete_may_take_effect_once_and_is_never_undone():
    base = [("put", "k", "a", None, 0, 1, "ok"), ("delete", "k", None, None, 2, None, "unknown")]

    def with_reads(*reads):
        h = H()
        for args in base:
            h.add(*args)
        for t, seen in enumerate(reads):
            h.get("k", seen, 10 + 2 * t, 11 + 2 * t)
        return h

    assert kv(with_reads("a", "a")).ok
    assert kv(with_reads("a", None)).ok
    assert kv(with_reads(None, None)).ok
    assert not kv(with_reads(None, "a")).ok


def test_unknown_reads_are_ignored_whatever_they_hold():
    h = H().put("k", "a", 0, 1).add("get", "k", None, "nonsense", 2, None, "unknown") \
        .get("k", "a", 3, 4)
    assert kv(h).ok


def test_many_unknown_writes_on_one_key_stay_fast():
    h = H()
    for i in range(20):
        h.put("k", f"u{i}", 10 * i, None, status="unknown")
        h.get("k", f"u{i}", 10 * i + 1, 10 * i + 2)
    started = time.monotonic()
    assert kv(h).ok
    assert time.monotonic() - started < 2


def test_failed_ops_are_ignored():
    h = H().put("k", "a", 0, 1).put("k", "b", 2, 3, status="fail").get("k", "a", 4, 5)
    assert kv(h).ok
    h = H().put("k", "a", 0, 1).put("k", "b", 2, 3, status="fail").get("k", "b", 4, 5)
    assert not kv(h).ok
    # a failed read's recorded output means nothing
    h = H().put("k", "a", 0, 1).add("get", "k", None, "junk", 2, 3, "fail")
    assert kv(h).ok


# ---- partitions -------------------------------------------------------------------------------


def test_keys_are_checked_independently():
    # The interleaving across keys is irrelevant: each key is its own register.
    h = H().put("x", "x1", 0, 1).put("y", "y1", 2, 3).get("x", "x1", 4, 5) \
        .get("y", "y1", 4, 5).put("x", "x2", 6, 7).get("y", "y1", 8, 9).get("x", "x2", 8, 9)
    result = kv(h)
    assert result.ok and result.partitions == 2


def test_failure_names_the_bad_key_only():
    h = H().put("x", "x1", 0, 1).put("y", "y1", 0, 1).get("x", "x1", 2, 3) \
        .get("y", None, 2, 3).put("z", "z1", 4, 5).get("z", "z1", 6, 7)
    result = kv(h)
    assert not result.ok
    assert result.key == "y"
    assert [f.key for f in result.failures] == ["y"]
    assert result.partitions == 3
    assert {r.key: r.verdict for r in result.results} == {"x": "ok", "y": "illegal", "z": "ok"}


def test_a_value_from_another_key_is_not_visible():
    h = H().put("x", "v", 0, 1).get("y", "v", 2, 3)
    result = kv(h)
    assert not result.ok and result.key == "y"


def test_tuple_keys_and_list_values_compare_by_value():
    h = H().put(("ds", "v1"), [1.0, 2.0], 0, 1).get(("ds", "v1"), (1.0, 2.0), 2, 3)
    assert kv(h).ok


def test_batch_put_splits_per_key():
    h = H().add("batch_put", None, {"x": "b1", "y": "b1"}, None, 0, 1) \
        .get("x", "b1", 2, 3).get("y", "b1", 2, 3)
    assert kv(h).ok
    h = H().add("batch_put", None, {"x": "b1", "y": "b1"}, None, 0, 1) \
        .get("x", "b1", 2, 3).get("y", None, 2, 3)
    result = kv(h)
    assert not result.ok and result.key == "y"


def test_batch_get_and_batch_delete_split_per_key():
    h = H().put("x", "a", 0, 1).put("y", "b", 0, 1) \
        .add("batch_get", None, ["x", "y"], {"x": "a", "y": "b"}, 2, 3) \
        .add("batch_delete", None, ["x", "y"], None, 4, 5) \
        .add("batch_get", None, ["x", "y"], {"x": None, "y": None}, 6, 7)
    assert kv(h).ok
    h.add("batch_get", None, ["x"], {"x": "a"}, 8, 9)
    assert not kv(h).ok


def test_put_of_none_is_rejected():
    with pytest.raises(ValueError):
        kv(H().put("k", None, 0, 1))


def test_malformed_history_is_rejected():
    with pytest.raises(ValueError):
        check_kv([Op(process=0, kind="put", key="k", value="a", invoke_ns=0, complete_ns=None,
                     status="ok", id=0)])


def test_timeout_gives_unknown_verdict_not_a_failure():
    # 16 overlapping writes and a read of a value nobody wrote: refuting it needs a large search
    h = H()
    for i in range(16):
        h.put("k", f"w{i}", 0, 100)
    h.get("k", "never", 50, 60)
    result = check_kv(h.ops, timeout_s=0.0)
    assert result.verdict == TIMEOUT
    assert not result.ok and not result.failures and result.timeouts


# ---- catalog model ----------------------------------------------------------------------------


class C(H):
    def create(self, name, output, t0, t1, status="ok"):
        return self.add("create", name, None, output, t0, t1, status)

    def drop(self, name, output, t0, t1, status="ok"):
        return self.add("drop", name, None, output, t0, t1, status)

    def list(self, names, t0, t1, status="ok"):
        return self.add("list", None, None, names, t0, t1, status)


def cat(history: C):
    return check_catalog(history.ops)


def test_sequential_catalog_creates_drops_and_lists_are_linearizable():
    h = C().list([], 0, 1).create("a", "ok", 2, 3).create("a", "already_exists", 4, 5) \
        .list(["a"], 6, 7).create("b", "ok", 8, 9).list({"b", "a"}, 10, 11) \
        .drop("a", "ok", 12, 13).drop("a", "not_found", 14, 15).list(["b"], 16, 17)
    result = cat(h)
    assert result.ok, result.explanation
    assert_witness(result, CatalogModel())


def test_double_create_drop_of_absent_name_and_stale_list_are_illegal():
    assert not cat(C().create("a", "ok", 0, 1).create("a", "ok", 2, 3)).ok
    assert not cat(C().create("a", "ok", 0, 1).drop("a", "not_found", 2, 3)).ok
    assert not cat(C().drop("a", "ok", 0, 1)).ok
    assert not cat(C().create("a", "already_exists", 0, 1)).ok
    result = cat(C().create("a", "ok", 0, 1).list([], 2, 3))
    assert not result.ok
    assert "{'a'}" in result.explanation
    assert not cat(C().create("a", "ok", 0, 1).drop("a", "ok", 2, 3).list(["a"], 4, 5)).ok


def test_concurrent_creates_of_one_name_have_one_winner_and_lists_never_go_back():
    # only one of two concurrent creates can win
    assert not cat(C().create("a", "ok", 0, 10).create("a", "ok", 1, 11)).ok
    assert cat(C().create("a", "ok", 0, 10).create("a", "already_exists", 1, 11)).ok
    # a list during a create may or may not show the name
    assert cat(C().create("a", "ok", 0, 10).list([], 1, 2).list(["a"], 3, 4)).ok
    assert not cat(C().create("a", "ok", 0, 10).list(["a"], 1, 2).list([], 3, 4)).ok


def test_unknown_catalog_ops_may_apply_or_not_and_failed_ones_never_apply():
    unknown = C().create("a", None, 0, None, status="unknown")
    assert cat(unknown).ok
    seen = C().create("a", None, 0, None, status="unknown").list(["a"], 5, 6)
    assert cat(seen).ok
    never = C().create("a", None, 0, None, status="unknown").list([], 5, 6).list([], 100, 101)
    assert cat(never).ok
    flip = C().create("a", None, 0, None, status="unknown").list(["a"], 5, 6).list([], 7, 8)
    assert not cat(flip).ok
    # after an unknown create, create -> already_exists and create -> ok are both possible
    assert cat(C().create("a", None, 0, None, status="unknown").create("a", "ok", 5, 6)).ok
    assert cat(C().create("a", None, 0, None, status="unknown")
               .create("a", "already_exists", 5, 6)).ok
    # a failed create never happened
    assert not cat(C().create("a", "ok", 0, 1, status="fail").list(["a"], 2, 3)).ok
    assert cat(C().create("a", "ok", 0, 1, status="fail").create("a", "ok", 2, 3)).ok


def test_catalog_partitions_by_name_without_lists():
    h = C().create("a", "ok", 0, 1).create("b", "ok", 0, 1).drop("b", "ok", 2, 3)
    assert check(h.ops, CatalogModel()).partitions == 2
    h.list(["a"], 4, 5)
    result = check(h.ops, CatalogModel())
    assert result.ok and result.partitions == 1


def test_custom_model_through_the_generic_check():
    class Counter(Model):
        name = "counter"

        def init(self):
            return 0

        def step(self, state, op):
            if op.kind == "incr":
                return True, state + 1
            return op.status != "ok" or op.output == state, state

        def prunable(self, op):
            return op.kind == "read"

    h = H().add("incr", t0=0, t1=1).add("incr", t0=0, t1=1).add("read", output=2, t0=2, t1=3)
    assert check(h.ops, Counter()).ok
    h.add("read", output=1, t0=4, t1=5)
    result = check(h.ops, Counter())
    assert not result.ok and result.key is None


# ---- property tests ---------------------------------------------------------------------------

KEYS = ["k0", "k1", "k2"]


@st.composite
def sequential_executions(draw):
    """A sequential run against the KV model, stretched into overlapping intervals.

    Each op gets an effect point 10*i in sequence order; its interval [invoke, complete] is drawn
    around that point, so the sequence is a valid linearization of the resulting history.
    Unknown ops may have been applied (at their effect point) or not; failed ops were not."""
    n = draw(st.integers(min_value=1, max_value=24))
    store: dict = {}
    ops: list[Op] = []
    for i in range(n):
        kind = draw(st.sampled_from(["put", "put", "get", "get", "delete"]))
        key = draw(st.sampled_from(KEYS))
        fate = draw(st.sampled_from(["ok"] * 8 + ["unknown-applied", "unknown-lost", "fail"]))
        applied = fate in ("ok", "unknown-applied")
        value = f"v{i}" if kind == "put" else None
        output = None
        if kind == "get":
            output = store.get(key)
        if applied:
            if kind == "put":
                store[key] = value
            elif kind == "delete":
                store.pop(key, None)
        effect = 10 * i
        before = draw(st.integers(min_value=0, max_value=45))
        after = draw(st.integers(min_value=0, max_value=45))
        status = {"ok": "ok", "fail": "fail"}.get(fate, "unknown")
        if status == "fail" and kind == "get":
            output = draw(st.sampled_from([None, "garbage"]))
        ops.append(Op(process=draw(st.integers(0, 7)), kind=kind, key=key, value=value,
                      output=output if status != "unknown" else None,
                      invoke_ns=effect - before,
                      complete_ns=None if status == "unknown" else effect + after,
                      status=status, id=i))
    # the history is recorded in invocation order, not in effect order
    ops.sort(key=lambda op: (op.invoke_ns, op.id))
    return ops


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequential_executions())
def test_stretched_sequential_executions_are_linearizable(ops):
    result = check_kv(ops)
    assert result.ok, result.explanation
    assert_witness(result, KVModel())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequential_executions(), st.randoms(use_true_random=False))
def test_a_read_of_a_never_written_value_is_caught(ops, rnd):
    gets = [op for op in ops if op.kind == "get" and op.status == "ok"]
    if not gets:
        ops = ops + [Op(process=9, kind="get", key="k0", output=None, invoke_ns=10_000,
                        complete_ns=10_001, status="ok", id=len(ops))]
        gets = [ops[-1]]
    victim = rnd.choice(gets)
    victim.output = "never-written"
    result = check_kv(ops)
    assert not result.ok
    assert result.key == victim.key
    assert victim.id in {op.id for op in result.failures[0].candidates}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequential_executions())
def test_verdict_survives_a_json_round_trip(ops):
    from chaos.history import history_from_json, history_to_json

    loaded = history_from_json(history_to_json(ops))
    assert [op.to_dict() for op in loaded] == [op.to_dict() for op in ops]
    assert check_kv(loaded).ok


@st.composite
def catalog_executions(draw):
    n = draw(st.integers(min_value=1, max_value=16))
    names: set = set()
    ops = []
    for i in range(n):
        kind = draw(st.sampled_from(["create", "create", "drop", "list"]))
        name = draw(st.sampled_from(["a", "b"])) if kind != "list" else None
        fate = draw(st.sampled_from(["ok"] * 6 + ["unknown-applied", "unknown-lost"]))
        if kind == "create":
            output = "already_exists" if name in names else "ok"
            if fate != "unknown-lost":
                names.add(name)
        elif kind == "drop":
            output = "ok" if name in names else "not_found"
            if fate != "unknown-lost":
                names.discard(name)
        else:
            output = sorted(names)
        status = "ok" if fate == "ok" else "unknown"
        effect = 10 * i
        ops.append(Op(process=i % 4, kind=kind, key=name,
                      output=output if status == "ok" else None,
                      invoke_ns=effect - draw(st.integers(0, 35)),
                      complete_ns=(effect + draw(st.integers(0, 35))
                                   if status == "ok" else None),
                      status=status, id=i))
    return ops


@settings(max_examples=150, deadline=None)
@given(catalog_executions())
def test_stretched_catalog_executions_are_linearizable(ops):
    result = check_catalog(ops)
    assert result.ok, result.explanation
    assert_witness(result, CatalogModel())


# ---- simulations and speed --------------------------------------------------------------------


def simulate(n_ops: int, n_keys: int, n_clients: int, seed: int, *, p_unknown=0.02,
             p_fail=0.02, max_duration=60, stale_reads=False) -> list[Op]:
    """A linearizable history: each client runs ops back to back, every op takes effect at a
    random instant inside its interval, effects are applied in instant order. With
    `stale_reads`, some reads return a value that two writes, ordered in real time before the
    read, have certainly replaced (a definite violation, since every value is written once)."""
    rng = random.Random(seed)
    clocks = [rng.randint(0, 20) for _ in range(n_clients)]
    planned = []
    for i in range(n_ops):
        c = min(range(n_clients), key=lambda j: (clocks[j], j))
        t0 = clocks[c]
        t1 = t0 + rng.randint(1, max_duration)
        clocks[c] = t1 + 1 + rng.randint(0, 5)
        r = rng.random()
        kind = "put" if r < 0.45 else "get" if r < 0.88 else "delete"
        fate = rng.random()
        status = "unknown" if fate < p_unknown else "fail" if fate < p_unknown + p_fail else "ok"
        applied = status == "ok" or (status == "unknown" and rng.random() < 0.5)
        planned.append((rng.uniform(t0, t1), i, c, kind, f"k{rng.randrange(n_keys)}", t0, t1,
                        status, applied))
    store: dict = {}
    written: dict = {}  # key -> [(value, t0, t1)] of ok writes, in effect order
    ops = []
    for effect, i, c, kind, key, t0, t1, status, applied in sorted(planned):
        value = f"v{i}" if kind == "put" else None
        output = None
        if kind == "get":
            output = store.get(key)
            if stale_reads and status == "ok" and rng.random() < 0.3:
                ws = written.get(key, [])
                # an old put P and a later write W with P < W < this read in real time
                stale = [p for p in ws if p[0] is not None and any(
                    p[2] < w[1] and w[2] < t0 for w in ws)]
                if stale:
                    output = stale[-1][0]
        elif applied:
            if status == "ok":
                written.setdefault(key, []).append((value, t0, t1))
            if kind == "put":
                store[key] = value
            else:
                store.pop(key, None)
        ops.append(Op(process=c, kind=kind, key=key, value=value,
                      output=output if status == "ok" else None, invoke_ns=t0 * 1000,
                      complete_ns=None if status == "unknown" else t1 * 1000, status=status,
                      id=i))
    ops.sort(key=lambda op: op.id)
    return ops


@pytest.mark.parametrize("seed", range(5))
def test_simulated_histories_are_linearizable(seed):
    ops = simulate(400, 5, 8, seed)
    result = check_kv(ops)
    assert result.ok, result.explanation
    assert_witness(result, KVModel())


@pytest.mark.parametrize("seed", range(5))
def test_simulated_stale_reads_are_caught(seed):
    ops = simulate(400, 5, 8, seed, stale_reads=True)
    result = check_kv(ops, timeout_s=20)
    assert result.verdict == ILLEGAL, result.explanation


def threaded_history(n_ops: int, n_keys: int, n_clients: int, seed: int) -> list[Op]:
    """A real concurrent run: client threads against a lock-protected dict, recorded with
    HistoryRecorder. Each op's effect happens under the lock, inside its recorded interval."""
    recorder = HistoryRecorder()
    store: dict = {}
    lock = threading.Lock()
    per_client = n_ops // n_clients

    def client(c: int):
        rng = random.Random(seed * 1000 + c)
        for j in range(per_client):
            key = f"k{rng.randrange(n_keys)}"
            r = rng.random()
            kind = "put" if r < 0.45 else "get" if r < 0.9 else "delete"
            value = f"c{c}-{j}" if kind == "put" else None
            handle = recorder.invoke(c, kind, key, value)
            time.sleep(rng.random() * 0.0002)
            fate = rng.random()
            if fate < 0.02:
                recorder.fail(handle, "refused")
                continue
            with lock:
                if kind == "put":
                    store[key] = value
                    output = None
                elif kind == "get":
                    output = store.get(key)
                else:
                    output = "deleted" if store.pop(key, None) is not None else "not_found"
            time.sleep(rng.random() * 0.0002)
            if fate < 0.04:
                recorder.unknown(handle, "timeout")  # applied, but the client never heard
            else:
                recorder.ok(handle, output)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return recorder.history()


def test_2000_threaded_ops_on_50_keys_are_checked_within_10_s():
    ops = threaded_history(2000, 50, 8, seed=7)
    assert len(ops) == 2000
    started = time.monotonic()
    result = check_kv(ops)
    elapsed = time.monotonic() - started
    assert result.ok, result.explanation
    assert result.partitions == 50
    assert elapsed < 10, f"took {elapsed:.1f}s"


def test_2000_heavily_overlapping_simulated_ops_are_checked_within_10_s():
    ops = simulate(2000, 50, 8, seed=11, max_duration=400, p_unknown=0.05)
    started = time.monotonic()
    result = check_kv(ops)
    assert result.ok, result.explanation
    assert time.monotonic() - started < 10
