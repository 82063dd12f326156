"""A catalog write costs a meta member time in the records it changes, not in the size of the
catalog: the sections a transition writes (`records.put` / `drop`) name the keys they changed,
so the watched changes of a revision (watch.catalog_changes) are found without reading the
unchanged records, and the dataset name index is carried without comparing key sets. The
answers are those of the full comparison. `python -m bench.catalog_write` has the figures."""

from __future__ import annotations

import dataclasses
import gc

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import commands as c
from consensus import records, watch
from consensus.state import MetaState, apply


class CountingTable(dict):
    """A section (as a snapshot loads it: a plain dict) that counts the records read from it."""

    def get(self, key, default=None):
        self.reads += 1
        return super().get(key, default)

    def __getitem__(self, key):
        self.reads += 1
        return super().__getitem__(key)


def _create(i: int, tenant: str = "t1") -> c.CreateDataset:
    return c.CreateDataset(f"u{i}", tenant, f"d{i}", "", 4, "l2", "hnsw", {}, ("n1",), 1)


def _catalog(datasets: int) -> MetaState:
    state, _ = apply(MetaState(), c.RegisterNode("n1", "n1:1", 0))
    for i in range(datasets):
        state, _ = apply(state, _create(i))
    return state


def _full_changes(old: MetaState, new: MetaState) -> list:
    """catalog_changes by the full comparison: the sections as plain dicts name no keys."""
    plain = {s: dict(getattr(new, s)) for s in watch.CATALOG_SECTIONS
             if getattr(new, s) is not getattr(old, s)}
    return watch.catalog_changes(old, dataclasses.replace(new, **plain))


def test_a_dataset_update_reads_only_the_changed_record_of_a_large_catalog():
    state = _catalog(1_000)
    counting = CountingTable(state.datasets)
    counting.reads = 0
    state = dataclasses.replace(state, datasets=counting)
    new, result = apply(state, c.UpdateDataset("t1", "d7", "changed", None, 2))
    assert "error" not in result
    counting.reads = 0
    changes = watch.catalog_changes(state, new)
    assert [(section, key) for section, key, _ in changes] == [("datasets", "u7")]
    assert counting.reads <= 2      # the full comparison reads all 1,000


def test_a_section_does_not_keep_the_tables_it_was_made_from_alive():
    state = _catalog(3)
    first = state.datasets
    for i in range(3, 50):
        state, _ = apply(state, _create(i))
    gc.collect()
    tables = [o for o in gc.get_objects() if isinstance(o, records.Table)
              and "u0" in o and len(o) < len(state.datasets) and o is not first]
    assert tables == []


_COMMANDS = st.lists(st.one_of(
    st.builds(lambda i, t: _create(i, t), st.integers(0, 5), st.sampled_from(["t1", "t2"])),
    st.builds(lambda i, t: c.DeleteDataset(t, f"d{i}", 2), st.integers(0, 5),
              st.sampled_from(["t1", "t2"])),
    st.builds(lambda i: c.UpdateDataset("t1", f"d{i}", "x", None, 3), st.integers(0, 5)),
    st.builds(lambda i, n: c.PlaceShard(f"u{i}", 0, n, 3), st.integers(0, 5),
              st.sampled_from(["n1", "n2"])),
    st.builds(lambda n: c.RegisterNode(n, f"{n}:1", 4), st.sampled_from(["n1", "n2"])),
    st.builds(lambda t: c.ProvisionTenant(t, t, {}, "active", 5), st.sampled_from(["t3"])),
    st.builds(lambda q: c.SetTenantQuotas("t3", {"max_vectors": q}, 6), st.integers(1, 3)),
    st.builds(lambda t: c.DeleteTenant(t, 6), st.sampled_from(["t3"])),
), max_size=30)


@settings(max_examples=150, deadline=None)
@given(_COMMANDS)
def test_the_changes_named_by_the_sections_are_those_of_the_full_comparison(cmds):
    state, _ = apply(MetaState(), c.RegisterNode("n1", "n1:1", 0))
    for command in cmds:
        records._name_index(state)      # so that apply carries it (rather than builds it)
        new, _ = apply(state, command)
        assert sorted(map(str, watch.catalog_changes(state, new))) == \
            sorted(map(str, _full_changes(state, new)))
        for (tenant, name), uuid in records._name_index(new).items():
            assert new.datasets[uuid].tenant_id == tenant and new.datasets[uuid].name == name
        assert len(records._name_index(new)) == len(new.datasets)
        state = new
