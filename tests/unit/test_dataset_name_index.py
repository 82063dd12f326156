"""consensus/records.py: dataset_by_name answers from an index (tenant, name) -> uuid that each
transition carries along, checked against a scan of every dataset (the dumb oracle)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import commands as c
from consensus.state import MetaState, apply


def _scan(state: MetaState, tenant: str, name: str):
    return next((r for r in state.datasets.values() if r.tenant_id == tenant and r.name == name),
                None)


def _create(uuid: str, tenant: str, name: str) -> c.CreateDataset:
    return c.CreateDataset(uuid=uuid, tenant_id=tenant, name=name, description="",
                           dimensions=4, metric_type="cosine", index_type="hnsw", metadata={},
                           placement=("n1",), at_ms=1)


_TENANTS = st.sampled_from(["t1", "t2"])
_NAMES = st.sampled_from(["a", "b", "c"])
_OPS = st.lists(st.one_of(
    st.tuples(st.just("create"), st.integers(0, 5), _TENANTS, _NAMES),
    st.tuples(st.just("delete"), _TENANTS, _NAMES),
    st.tuples(st.just("place"), st.integers(0, 5)),
    st.tuples(st.just("lookup"), _TENANTS, _NAMES)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(_OPS)
def test_dataset_by_name_agrees_with_a_scan_after_any_commands(ops):
    state, _ = apply(MetaState(), c.RegisterNode("n1", "h:1", 1))
    for op in ops:
        if op[0] == "create":
            state, _ = apply(state, _create(f"u{op[1]}", op[2], op[3]))
        elif op[0] == "delete":
            state, _ = apply(state, c.DeleteDataset(op[1], op[2], 2))
        elif op[0] == "place":
            state, _ = apply(state, c.PlaceShard(f"u{op[1]}", 0, "n1", 3))
        else:
            assert state.dataset_by_name(op[1], op[2]) == _scan(state, op[1], op[2])
        for tenant in ("t1", "t2"):
            for name in ("a", "b", "c"):
                assert state.dataset_by_name(tenant, name) == _scan(state, tenant, name)


def test_lookup_on_a_large_catalog_does_not_scan_it():
    state, _ = apply(MetaState(), c.RegisterNode("n1", "h:1", 1))
    for i in range(2_000):
        state, _ = apply(state, _create(f"u{i}", f"t{i % 100}", f"d{i}"))
    # Every record's name is read by a scan; the index reads none of them.
    reads = 0

    class Counting(dict):
        def values(self):
            nonlocal reads
            reads += 1
            return super().values()

        def items(self):
            nonlocal reads
            reads += 1
            return super().items()

    object.__setattr__(state, "datasets", Counting(state.datasets))
    assert state.dataset_by_name("t7", "d7").uuid == "u7"
    assert state.dataset_by_name("t7", "missing") is None
    assert reads == 0
