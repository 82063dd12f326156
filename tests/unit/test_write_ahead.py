"""A primary logs a write before applying it (node/server.py Write, node/replication.py): the
op log never misses rows the store holds. ShardReplica.plan_write answers what write() would
do without touching the store; a copy re-applies its last logged op at start."""

from __future__ import annotations

import numpy as np
import pytest

from shard.records import ExistingPolicy, VectorRecord
from shard.replica import ShardReplica
from tributary import errors


def rec(vid: str, x: float) -> VectorRecord:
    return VectorRecord(id=vid, values=np.asarray([x, 1.0, 0.5, 0.25], dtype=np.float32))


@pytest.fixture()
def replica(tmp_path):
    r = ShardReplica(str(tmp_path / "s"), 4, "l2")
    r.write([rec("a", 1), rec("b", 2)], [], ExistingPolicy.ERROR)
    yield r
    r.close()


@pytest.mark.parametrize("policy, upserts, deletes", [
    (ExistingPolicy.SKIP, ["a", "c"], []),
    (ExistingPolicy.OVERWRITE, ["a", "c"], ["b", "zz"]),
    (ExistingPolicy.ERROR, ["c", "d"], ["a"]),
    (ExistingPolicy.REQUIRE, ["a", "b"], []),
])
def test_a_planned_write_counts_exactly_what_the_write_then_does(replica, policy, upserts,
                                                                  deletes):
    batch = [rec(v, 9) for v in upserts]
    before = replica.count()
    planned = replica.plan_write(batch, deletes, policy)
    assert replica.count() == before            # the plan touched nothing
    done = replica.write(batch, deletes, policy)
    assert (planned.inserted, planned.skipped, planned.deleted, planned.not_found,
            planned.skipped_ids) == (done.inserted, done.skipped, done.deleted,
                                     done.not_found, done.skipped_ids)


@pytest.mark.parametrize("policy, upserts, error", [
    (ExistingPolicy.ERROR, ["a"], errors.AlreadyExists),
    (ExistingPolicy.REQUIRE, ["zz"], errors.NotFound),
    (ExistingPolicy.OVERWRITE, ["c", "c"], errors.InvalidArgument),
])
def test_a_planned_write_refuses_what_the_write_would_refuse(replica, policy, upserts, error):
    with pytest.raises(error):
        replica.plan_write([rec(v, 3) for v in upserts], [], policy)
    assert replica.count() == 2


def test_a_planned_update_refuses_unknown_fields_and_missing_or_soft_deleted_ids(replica):
    assert replica.plan_update([rec("a", 5)], frozenset({"content"})).inserted == 1
    with pytest.raises(errors.InvalidArgument, match="cannot update"):
        replica.plan_update([rec("a", 5)], frozenset({"colour"}))
    replica.soft_delete(["b"])
    for vid in ("b", "zz"):
        with pytest.raises(errors.NotFound):
            replica.plan_update([rec(vid, 5)], frozenset({"content"}))
