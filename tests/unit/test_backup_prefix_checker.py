"""chaos/checkers.backup_prefix_violations: a restored backup must hold a consistent prefix of
the run. Each test doctors a restored state that no cut could produce (or one that a cut can)."""

from chaos.checkers import backup_prefix_violations
from chaos.history import Op

CUT_FROM, CUT_UNTIL = 1_000, 1_200


def op(i, kind, key=None, value=None, t0=0, t1=None, status="ok"):
    return Op(process=i, kind=kind, key=key, value=value, invoke_ns=t0,
              complete_ns=None if status == "unknown" else t1, status=status, id=i)


HISTORY = [
    op(0, "put", "a", "a0", 10, 20),                              # acked before the cut
    op(1, "batch_put", value={"x": "b1", "y": "b1"}, t0=30, t1=40),   # 2PC batch before
    op(2, "put", "a", "a2", 1_100, 1_150),                        # overlaps the cut
    op(3, "batch_put", value={"x": "b3", "y": "b3"}, t0=1_050, t1=1_180),  # overlaps the cut
    op(4, "put", "b", "late", 1_300, 1_310),                      # after the cut
    op(5, "batch_put", value={"y": "b5", "z": "b5"}, t0=1_400, t1=1_450, status="unknown"),
]


def kinds(restored):
    return sorted(v.kind for v in backup_prefix_violations(HISTORY, restored, CUT_FROM,
                                                           CUT_UNTIL))


def test_a_cut_before_or_after_the_overlapping_writes_is_a_consistent_prefix():
    assert kinds({"a": "a0", "x": "b1", "y": "b1", "b": None, "z": None}) == []
    assert kinds({"a": "a2", "x": "b3", "y": "b3", "b": None, "z": None}) == []


def test_an_acknowledged_write_before_the_cut_that_is_missing_is_caught():
    assert kinds({"a": None, "x": "b1", "y": "b1"}) == ["missing"]


def test_a_batch_present_on_one_key_only_is_caught():
    assert kinds({"a": "a0", "x": "b3", "y": "b1"}) == ["partial"]
    # ... and an acknowledged batch that is missing altogether.
    assert "missing" in kinds({"a": "a0", "x": None, "y": None})


def test_a_value_written_only_after_the_cut_is_caught():
    assert kinds({"a": "a0", "x": "b1", "y": "b1", "b": "late"}) == ["future"]
    assert "future" in kinds({"a": "a0", "x": "b1", "y": "b5", "z": "b5"})


def test_keys_that_were_not_read_are_not_judged():
    assert kinds({"a": "a0"}) == []
