"""Specification of the commit fence and the settle check behind consistent cuts
(consensus/versions.py, applied through consensus/state.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import commands as c
from consensus import versions
from consensus.state import TXN_ABORT, TXN_COMMIT, MetaState, apply, from_doc, to_doc


def run(state: MetaState, *cmds):
    result = None
    for cmd in cmds:
        state, result = apply(state, cmd)
    return state, result


def dataset(uuid: str, name: str, shards: int = 2) -> c.CreateDataset:
    return c.CreateDataset(uuid=uuid, tenant_id="t", name=name, description="",
                           dimensions=4, metric_type="l2", index_type="hnsw", metadata={},
                           placement=tuple("n1" for _ in range(shards)), at_ms=1)


def base() -> MetaState:
    state, _ = run(MetaState(), c.RegisterNode("n1", "h:1", 0), dataset("A", "a"),
                   dataset("B", "b"))
    return state


def decide(txn: str, at_ms: int, decision: str = TXN_COMMIT, parts=("A/0", "A/1")):
    return c.DecideTxn(txn, decision, tuple(parts), "", "{}", at_ms)


def test_commit_decision_is_held_back_while_its_dataset_is_fenced():
    state, _ = run(base(), c.FenceCommits("A", "f1", 1_100, 100))
    after, result = apply(state, decide("t1", 200))
    assert result == {"fenced_until_ms": 1_100}
    assert "t1" not in after.txns and after == state


def test_abort_decision_is_recorded_while_fenced():
    state, _ = run(base(), c.FenceCommits("A", "f1", 1_100, 100))
    state, result = apply(state, decide("t1", 200, TXN_ABORT))
    assert result["decision"] == TXN_ABORT and state.txns["t1"].decision == TXN_ABORT


def test_fence_expires_by_itself_at_until_ms():
    state, _ = run(base(), c.FenceCommits("A", "f1", 1_100, 100))
    state, result = apply(state, decide("t1", 1_100))
    assert result["decision"] == TXN_COMMIT and result["first"]


def test_lifted_fence_lets_commits_through():
    state, _ = run(base(), c.FenceCommits("A", "f1", 1_100, 100), c.LiftFence("f1", 150))
    state, result = apply(state, decide("t1", 200))
    assert result["decision"] == TXN_COMMIT


def test_fence_of_another_dataset_holds_nothing_here():
    state, _ = run(base(), c.FenceCommits("B", "f1", 1_100, 100))
    _, result = apply(state, decide("t1", 200))
    assert result["decision"] == TXN_COMMIT


def test_txn_touching_a_fenced_dataset_among_others_is_held_back():
    state, _ = run(base(), c.FenceCommits("B", "f1", 1_100, 100))
    _, result = apply(state, decide("t1", 200, parts=("A/0", "B/1")))
    assert result == {"fenced_until_ms": 1_100}


def test_a_txn_decided_before_the_fence_keeps_answering_its_decision():
    state, _ = run(base(), decide("t1", 50), c.FenceCommits("A", "f1", 1_100, 100))
    _, result = apply(state, decide("t1", 200))
    assert result["decision"] == TXN_COMMIT and result["first"] is False


def test_settle_lists_commits_until_every_participant_of_the_dataset_acked():
    state, _ = run(base(), decide("t1", 50, parts=("A/0", "A/1", "B/0")),
                   decide("t2", 60, TXN_ABORT), c.FenceCommits("A", "f1", 1_100, 100))
    _, answer = apply(state, c.FenceSettled("f1", 120))
    assert answer == {"fenced": True, "until_ms": 1_100, "unsettled": ["t1"]}
    state, _ = apply(state, c.AckTxns((("t1", "A/0"),), 130))
    assert apply(state, c.FenceSettled("f1", 140))[1]["unsettled"] == ["t1"]
    # B's participant has not acked, but the cut of A does not wait for it.
    state, _ = apply(state, c.AckTxns((("t1", "A/1"),), 150))
    assert apply(state, c.FenceSettled("f1", 160))[1]["unsettled"] == []


def test_settle_reports_a_lapsed_fence():
    state, _ = run(base(), c.FenceCommits("A", "f1", 1_100, 100))
    assert apply(state, c.FenceSettled("f1", 1_100))[1] == {"fenced": False, "unsettled": []}
    assert apply(state, c.FenceSettled("nope", 200))[1]["fenced"] is False


def test_fence_on_unknown_dataset_is_refused():
    _, result = apply(base(), c.FenceCommits("Z", "f1", 1_100, 100))
    assert result["error"]["type"] == "NotFound"


def test_fences_survive_a_snapshot_round_trip_and_go_with_their_dataset():
    state, _ = run(base(), c.FenceCommits("A", "f1", 1_100, 100))
    assert from_doc(to_doc(state)).fences == state.fences
    state, _ = apply(state, c.DeleteDataset("t", "a", 200))
    assert state.fences == {}


def test_fence_commands_round_trip_through_their_json_encoding():
    for command in (c.FenceCommits("A", "f1", 1_100, 100), c.LiftFence("f1", 5),
                    c.FenceSettled("f1", 6)):
        assert c.decode(c.encode(command)) == command


# ---- property: no COMMIT is ever recorded inside a fence of a dataset it touches -------------

_step = st.one_of(
    st.tuples(st.just("fence"), st.sampled_from("AB"), st.integers(1, 500)),
    st.tuples(st.just("lift"), st.integers(0, 5), st.just(0)),
    st.tuples(st.just("decide"), st.sampled_from(["A", "B", "AB"]),
              st.sampled_from([TXN_COMMIT, TXN_ABORT])),
    st.tuples(st.just("ack"), st.integers(0, 20), st.just(0)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_step, st.integers(0, 50)), max_size=40))
def test_no_commit_is_recorded_while_a_fence_of_its_dataset_is_up(steps):
    state, now = base(), 1_000
    fences: dict[str, tuple[str, int, int | None]] = {}   # id -> (dataset, until, lifted at)
    decided: list[tuple[str, str, int]] = []               # (txn, datasets, at)
    for n, ((kind, arg, extra), gap) in enumerate(steps):
        now += gap
        if kind == "fence":
            state, _ = apply(state, c.FenceCommits(arg, f"f{n}", now + extra, now))
            fences[f"f{n}"] = (arg, now + extra, None)
        elif kind == "lift":
            ids = sorted(fences)
            if ids:
                fid = ids[arg % len(ids)]
                state, _ = apply(state, c.LiftFence(fid, now))
                d, until, lifted = fences[fid]
                fences[fid] = (d, until, lifted if lifted is not None else now)
        elif kind == "decide":
            parts = tuple(f"{d}/0" for d in arg)
            state, result = apply(state, decide(f"t{n}", now, extra, parts))
            if result.get("first") and result["decision"] == TXN_COMMIT:
                decided.append((f"t{n}", arg, now))
        else:
            txns = sorted(state.txns)
            if txns:
                record = state.txns[txns[arg % len(txns)]]
                state, _ = apply(state, c.AckTxns(tuple((record.txn_id, p)
                                                        for p in record.participants), now))
        for fid, (d, until, lifted) in fences.items():
            end = min(until, lifted if lifted is not None else until)
            start = int(fid[1:])
            for txn, datasets, at in decided:
                # A commit decided after the fence went up and before it ended is a violation.
                assert not (d in datasets and int(txn[1:]) > start and at < end), \
                    (txn, fid, fences, decided)
    for fid in state.fences:
        assert fid in fences
    assert versions.unsettled_commits(state, "A") == sorted(
        t.txn_id for t in state.txns.values() if t.decision == TXN_COMMIT and
        any(p.startswith("A/") and p not in t.acked for p in t.participants))
