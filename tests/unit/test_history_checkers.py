"""Specification of chaos/history.py (recording, JSON) and chaos/checkers.py (end-state checks)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from chaos.checkers import (acceptable_final_values, lost_acknowledged_writes, partial_batches,
                            recovered_within, writes_of)
from chaos.history import (HistoryRecorder, Op, dump_history, freeze, history_from_json,
                           history_to_json, load_history, number_ops, validate_history)
from chaos.linearizability import check_kv


def op(i, kind, key=None, value=None, output=None, t0=0, t1=None, status="ok", process=0):
    return Op(process=process, kind=kind, key=key, value=value, output=output, invoke_ns=t0,
              complete_ns=None if status == "unknown" else t1, status=status, id=i)


# ---- recorder ---------------------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 0

    def __call__(self):
        self.now += 10
        return self.now


def test_recorder_records_invoke_and_outcomes():
    rec = HistoryRecorder(clock=FakeClock())
    a = rec.invoke(1, "put", "k", "v1")
    b = rec.invoke(2, "get", "k")
    c = rec.invoke(3, "delete", "k")
    d = rec.invoke(4, "put", "k", "v2")
    rec.ok(a)
    rec.ok(b, "v1")
    rec.fail(c, "InvalidArgument")
    rec.unknown(d, "timeout")
    ops = rec.history()
    assert [o.id for o in ops] == [0, 1, 2, 3]
    assert [o.status for o in ops] == ["ok", "ok", "fail", "unknown"]
    assert ops[0].invoke_ns == 10 and ops[0].complete_ns == 50
    assert ops[1].output == "v1" and ops[1].process == 2
    assert ops[2].error == "InvalidArgument" and ops[2].complete_ns is not None
    # an unknown op's completion stays open: it may take effect at any later time
    assert ops[3].complete_ns is None and ops[3].end_ns == float("inf")
    assert len(rec) == 4


def test_recorder_uses_monotonic_ns_by_default():
    rec = HistoryRecorder()
    h = rec.invoke(0, "get", "k")
    rec.ok(h, None)
    (o,) = rec.history()
    assert 0 < o.invoke_ns <= o.complete_ns


def test_recorder_refuses_double_resolution_and_bad_handles():
    rec = HistoryRecorder()
    h = rec.invoke(0, "put", "k", "v")
    rec.ok(h)
    with pytest.raises(ValueError):
        rec.unknown(h)
    with pytest.raises(KeyError):
        rec.ok(99)


def test_unresolved_ops_are_unknown_in_a_snapshot():
    rec = HistoryRecorder()
    rec.invoke(0, "put", "k", "v")
    (o,) = rec.history()
    assert o.status == "unknown" and o.complete_ns is None


def test_snapshot_is_a_copy():
    rec = HistoryRecorder()
    h = rec.invoke(0, "put", "k", "v")
    snap = rec.history()
    rec.ok(h)
    assert snap[0].status == "unknown" and rec.history()[0].status == "ok"


def test_operation_context_records_the_answer_or_unknown_when_none_came():
    rec = HistoryRecorder()
    with rec.operation(0, "get", "k") as call:
        call.ok("v")
    with pytest.raises(TimeoutError):
        with rec.operation(1, "put", "k", "w"):
            raise TimeoutError("deadline")
    with pytest.raises(RuntimeError):
        with rec.operation(2, "put", "k", "x") as call:
            call.fail("refused")
            raise RuntimeError("after the answer")
    with rec.operation(3, "put", "k", "y"):
        pass
    ops = rec.history()
    assert [o.status for o in ops] == ["ok", "unknown", "fail", "unknown"]
    assert ops[0].output == "v"
    assert "TimeoutError" in ops[1].error
    assert ops[2].error == "refused"


def test_recorder_is_thread_safe():
    rec = HistoryRecorder()

    def client(c):
        for j in range(300):
            h = rec.invoke(c, "put", f"k{j % 5}", f"{c}-{j}")
            (rec.ok if j % 3 else rec.unknown)(h)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ops = rec.history()
    assert len(ops) == 2400
    assert sorted(o.id for o in ops) == list(range(2400))
    assert len({o.value for o in ops}) == 2400
    validate_history(ops)
    per_process = {}
    for o in ops:
        per_process.setdefault(o.process, []).append(o)
    for seq in per_process.values():  # each client's ops are sequential in the history
        done = [o for o in seq if o.status == "ok"]
        assert all(a.complete_ns <= b.invoke_ns for a, b in zip(done, done[1:]))


# ---- JSON -------------------------------------------------------------------------------------


def sample_history():
    return [
        op(0, "put", ("ds", "v1"), [0.5, 1.5], None, 0, 10),
        op(1, "get", ("ds", "v1"), None, (0.5, 1.5), 11, 20),
        op(2, "batch_put", None, {("ds", "a"): "b1", ("ds", "b"): "b1"}, None, 21, None,
           "unknown"),
        op(3, "list", None, None, frozenset({"x", "y"}), 22, 30),
        op(4, "put", "plain", {"meta": {"n": 1}, "__odd": 2}, None, 31, 40, "fail"),
        op(5, "get", "plain", None, b"\x00bytes", 41, 50),
    ]


def test_json_round_trip_keeps_types(tmp_path):
    ops = sample_history()
    path = dump_history(ops, tmp_path / "sub" / "history.json", meta={"seed": 7})
    loaded = load_history(path)
    assert [o.to_dict() for o in loaded] == [o.to_dict() for o in ops]
    assert loaded[0].key == ("ds", "v1") and loaded[0].value == [0.5, 1.5]
    assert loaded[1].output == (0.5, 1.5)
    assert loaded[2].value == {("ds", "a"): "b1", ("ds", "b"): "b1"}
    assert loaded[2].complete_ns is None and loaded[2].status == "unknown"
    assert loaded[3].output == frozenset({"x", "y"})
    assert loaded[4].value == {"meta": {"n": 1}, "__odd": 2}
    assert loaded[5].output == b"\x00bytes"


def test_json_accepts_a_bare_list_and_rejects_other_versions():
    ops = sample_history()[:2]
    import json
    bare = json.dumps([o.to_dict() for o in ops])
    assert [o.id for o in history_from_json(bare)] == [0, 1]
    with pytest.raises(ValueError):
        history_from_json(json.dumps({"version": 99, "ops": []}))


def test_a_saved_failing_history_still_fails_after_loading(tmp_path):
    ops = [op(0, "put", "k", "a", None, 0, 1), op(1, "get", "k", None, None, 2, 3)]
    assert not check_kv(ops).ok
    loaded = load_history(dump_history(ops, tmp_path / "h.json"))
    result = check_kv(loaded)
    assert not result.ok and result.key == "k"


def test_json_rejects_unencodable_values():
    with pytest.raises(TypeError):
        history_to_json([op(0, "put", "k", object(), None, 0, 1)])


def test_validate_history_refuses_inverted_times_open_ok_ops_bad_statuses_and_reused_ids():
    validate_history(sample_history())
    with pytest.raises(ValueError):
        validate_history([op(0, "put", "k", "v", None, 5, 1)])
    with pytest.raises(ValueError):
        validate_history([Op(0, "put", "k", "v", status="ok", invoke_ns=0, complete_ns=None)])
    with pytest.raises(ValueError):
        validate_history([op(0, "put", "k", "v", None, 0, 1, status="maybe")])
    with pytest.raises(ValueError):
        validate_history([op(0, "put", "k", "v", None, 0, 1), op(0, "get", "k", None, "v", 2, 3)])


def test_number_ops_fills_missing_ids_after_the_highest_and_freeze_compares_by_value():
    ops = [Op(0, "get", "k"), Op(0, "get", "k", id=3), Op(0, "get", "k")]
    number_ops(ops)
    assert [o.id for o in ops] == [4, 3, 5]
    assert freeze([1, [2, 3]]) == (1, (2, 3))
    assert freeze({"a": [1]}) == freeze({"a": (1,)})
    assert freeze({1, 2}) == frozenset({1, 2})


def test_describe_is_readable():
    text = op(7, "put", "k", "v", None, 1_000_000, 3_000_000, process=2).describe(origin_ns=0)
    assert "#7" in text and "p2" in text and "put['k']('v')" in text and "ok" in text
    assert "inf" in op(8, "put", "k", "v", None, 0, None, "unknown").describe()


# ---- lost acknowledged writes -----------------------------------------------------------------


def lost(history, final, **kw):
    return lost_acknowledged_writes(history, final, **kw)


def test_acknowledged_write_present_is_fine():
    h = [op(0, "put", "k", "a", None, 0, 1)]
    assert lost(h, {"k": "a"}) == []


def test_acknowledged_write_missing_is_lost():
    h = [op(0, "put", "k", "a", None, 0, 1), op(1, "put", "j", "b", None, 0, 1)]
    (finding,) = lost(h, {"k": None, "j": "b"})
    assert finding.key == "k" and finding.kind == "lost" and finding.found is None
    assert [o.id for o in finding.acknowledged] == [0]
    assert "'k'" in finding.explanation
    # a key missing from the final reads counts as absent ...
    assert [f.key for f in lost(h, {"j": "b"})] == ["k"]
    # ... unless told otherwise
    assert lost(h, {"j": "b"}, missing_is_absent=False) == []


def test_overwritten_write_may_be_gone_but_the_newer_one_may_not():
    h = [op(0, "put", "k", "a", None, 0, 1), op(1, "put", "k", "b", None, 2, 3)]
    assert lost(h, {"k": "b"}) == []
    (finding,) = lost(h, {"k": "a"})  # the old value came back: b was lost
    assert finding.kind == "lost" and [o.id for o in finding.acknowledged] == [1]


def test_acknowledged_delete_after_a_write_leaves_the_key_absent():
    h = [op(0, "put", "k", "a", None, 0, 1), op(1, "delete", "k", None, None, 2, 3)]
    assert lost(h, {"k": None}) == []
    assert lost(h, {"k": "a"})[0].kind == "lost"


def test_concurrent_acknowledged_writes_either_may_win():
    h = [op(0, "put", "k", "a", None, 0, 10), op(1, "put", "k", "b", None, 5, 15)]
    assert lost(h, {"k": "a"}) == [] and lost(h, {"k": "b"}) == []
    (finding,) = lost(h, {"k": None})
    assert {o.id for o in finding.acknowledged} == {0, 1}


def test_unknown_writes_may_or_may_not_have_landed():
    h = [op(0, "put", "k", "a", None, 0, 1), op(1, "put", "k", "b", None, 2, None, "unknown")]
    assert lost(h, {"k": "a"}) == [] and lost(h, {"k": "b"}) == []
    assert lost(h, {"k": None})[0].kind == "lost"
    h = [op(0, "put", "k", "a", None, 0, 1), op(1, "delete", "k", None, None, 2, None, "unknown")]
    assert lost(h, {"k": None}) == [] and lost(h, {"k": "a"}) == []
    # an unknown write invoked before an acknowledged one may still land after it
    h = [op(0, "put", "k", "u", None, 0, None, "unknown"), op(1, "put", "k", "a", None, 5, 6)]
    assert lost(h, {"k": "u"}) == [] and lost(h, {"k": "a"}) == []
    # a key only ever written by unknown ops may be absent
    assert lost([op(0, "put", "k", "u", None, 0, None, "unknown")], {"k": None}) == []


def test_values_never_written_or_only_by_failed_ops_are_unexpected():
    h = [op(0, "put", "k", "a", None, 0, 1), op(1, "put", "k", "f", None, 2, 3, "fail")]
    (finding,) = lost(h, {"k": "f"})
    assert finding.kind == "unexpected" and "failed" in finding.explanation
    (finding,) = lost(h, {"k": "zzz"})
    assert finding.kind == "unexpected" and "no op wrote" in finding.explanation
    (finding,) = lost(h, {"k": "a", "other": "ghost"})
    assert finding.key == "other" and finding.kind == "unexpected"
    # a failed write alone means the key must still be absent
    assert lost([op(0, "put", "k", "f", None, 0, 1, "fail")], {"k": None}) == []


def test_batch_writes_and_inserts_count_as_writes():
    h = [op(0, "batch_put", None, {"x": "b1", "y": "b1"}, None, 0, 1),
         op(1, "insert", "z", "i1", "ok", 0, 1),
         op(2, "insert", "z", "i2", "already_exists", 2, 3)]
    assert lost(h, {"x": "b1", "y": "b1", "z": "i1"}) == []
    assert {f.key for f in lost(h, {"x": "b1", "y": None, "z": None})} == {"y", "z"}
    assert [w.key for w in writes_of(h[0])] == ["x", "y"]
    assert writes_of(h[2]) == []
    assert writes_of(op(3, "get", "k", None, "v", 0, 1)) == []


def test_values_compare_after_freezing():
    h = [op(0, "put", ("ds", "v"), [1.0, 2.0], None, 0, 1)]
    assert lost(h, {("ds", "v"): (1.0, 2.0)}) == []


def test_only_the_last_acknowledged_write_is_an_acceptable_final_value():
    from chaos.checkers import Write
    a = op(0, "put", "k", "a", None, 0, 1)
    b = op(1, "put", "k", "b", None, 2, 3)
    assert acceptable_final_values([Write(a, "k", "a"), Write(b, "k", "b")]) == {"b"}
    assert acceptable_final_values([]) == {None}


# ---- partial batches --------------------------------------------------------------------------


def batch(i, writes, t0, t1, status="ok"):
    return op(i, "batch_put", None, writes, None, t0, t1, status)


def test_committed_batch_fully_visible_is_fine():
    h = [batch(0, {"x": "b0", "y": "b0", "z": "b0"}, 0, 1)]
    assert partial_batches(h, {"x": "b0", "y": "b0", "z": "b0"}) == []


def test_committed_batch_partly_visible_is_partial():
    h = [batch(0, {"x": "b0", "y": "b0", "z": "b0"}, 0, 1)]
    (v,) = partial_batches(h, {"x": "b0", "y": "b0"})
    assert v.kind == "partial" and v.present == ["x", "y"] and v.missing == ["z"]
    assert v.op.id == 0 and "partial" in v.explanation


def test_committed_batch_not_visible_at_all_is_lost():
    h = [batch(0, {"x": "b0", "y": "b0"}, 0, 1)]
    (v,) = partial_batches(h, {})
    assert v.kind == "lost" and v.missing == ["x", "y"]


def test_keys_overwritten_later_do_not_count_against_a_batch():
    h = [batch(0, {"x": "b0", "y": "b0"}, 0, 1), op(1, "put", "y", "p1", None, 2, 3)]
    assert partial_batches(h, {"x": "b0", "y": "p1"}) == []
    h = [batch(0, {"x": "b0", "y": "b0"}, 0, 1), op(1, "delete", "y", None, None, 2, 3)]
    assert partial_batches(h, {"x": "b0", "y": None}) == []
    # a concurrent or unknown write may also have come after the batch
    h = [batch(0, {"x": "b0", "y": "b0"}, 0, 10), op(1, "put", "y", "p1", None, 5, 6)]
    assert partial_batches(h, {"x": "b0", "y": "p1"}) == []
    h = [op(1, "put", "y", "u", None, 0, None, "unknown"), batch(0, {"x": "b0", "y": "b0"}, 5, 6)]
    assert partial_batches(h, {"x": "b0", "y": "u"}) == []
    # but a write that completed before the batch started cannot explain it
    h = [op(1, "put", "y", "p1", None, 0, 1), batch(0, {"x": "b0", "y": "b0"}, 2, 3)]
    (v,) = partial_batches(h, {"x": "b0", "y": "p1"})
    assert v.kind == "partial" and v.missing == ["y"]
    # failed writes explain nothing
    h = [batch(0, {"x": "b0", "y": "b0"}, 0, 1), op(1, "put", "y", "p1", None, 2, 3, "fail")]
    assert partial_batches(h, {"x": "b0", "y": None})[0].kind == "partial"


def test_unknown_batch_is_all_or_nothing():
    h = [batch(0, {"x": "b0", "y": "b0"}, 0, None, "unknown")]
    assert partial_batches(h, {"x": "b0", "y": "b0"}) == []
    assert partial_batches(h, {}) == []
    (v,) = partial_batches(h, {"x": "b0"})
    assert v.kind == "partial" and v.present == ["x"] and v.missing == ["y"]
    # with y overwritten afterwards, x alone is consistent with "all"
    h.append(op(1, "put", "y", "p", None, 5, 6))
    assert partial_batches(h, {"x": "b0", "y": "p"}) == []


def test_failed_batch_must_leave_no_trace():
    h = [batch(0, {"x": "b0", "y": "b0"}, 0, 1, "fail")]
    assert partial_batches(h, {}) == []
    (v,) = partial_batches(h, {"x": "b0"})
    assert v.kind == "failed_applied" and v.present == ["x"]


def test_keys_not_read_can_be_skipped():
    h = [batch(0, {"x": "b0", "y": "b0"}, 0, 1)]
    assert partial_batches(h, {"x": "b0"}, missing_is_absent=False) == []


def test_non_batch_ops_are_ignored_by_partial_batches():
    h = [op(0, "put", "x", "a", None, 0, 1)]
    assert partial_batches(h, {}) == []


# ---- recovery ---------------------------------------------------------------------------------


def test_recovery_within_the_bound_is_timed_at_the_first_lasting_success():
    samples = [(0.0, False), (0.5, False), (1.0, True), (1.5, True), (2.0, True)]
    r = recovered_within(samples, bound_s=2.0)
    assert r.ok and bool(r) and r.recovered_at_s == 1.0 and r.last_failure_s == 0.5
    assert r.probes == 5 and "1.000s" in r.explanation


def test_recovery_past_the_bound_fails_as_too_slow():
    samples = [(t / 2, t >= 9) for t in range(12)]
    r = recovered_within(samples, bound_s=2.0)
    assert not r.ok and r.recovered_at_s == 4.5 and "too slow" in r.explanation


def test_flapping_counts_from_the_last_failure():
    samples = [(0.0, True), (1.0, False), (2.0, True), (3.0, False), (4.0, True), (5.0, True)]
    r = recovered_within(samples, bound_s=3.5)
    assert not r.ok and r.recovered_at_s == 4.0
    assert recovered_within(samples, bound_s=4.0).ok


def test_never_recovered_or_never_probed():
    r = recovered_within([(0.0, False), (5.0, False)], bound_s=10)
    assert not r.ok and r.recovered_at_s is None and "still failing" in r.explanation
    r = recovered_within([], bound_s=10)
    assert not r.ok and r.probes == 0


def test_all_probes_ok_recovers_at_the_first_probe():
    r = recovered_within([(0.25, True), (0.5, True)], bound_s=1)
    assert r.ok and r.recovered_at_s == 0.25 and r.last_failure_s is None


def test_recovery_is_timed_from_the_heal_over_any_sample_shape_and_order():
    heal = 100.0
    samples = [{"t": 99.0, "ok": False},  # before the heal: ignored
               SimpleNamespace(t=100.5, ok=False),
               (101.0, True),
               {"t": 102.0, "ok": True}]
    r = recovered_within(samples, bound_s=1.0, since=heal)
    assert r.ok and r.recovered_at_s == pytest.approx(1.0) and r.probes == 3
    # samples out of order are sorted
    r = recovered_within([(2.0, True), (1.0, False), (0.0, False)], bound_s=2.0)
    assert r.ok and r.recovered_at_s == 2.0
