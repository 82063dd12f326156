"""Specification of the metadata state machine in consensus/state.py."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import commands as c
from consensus.state import (DEFAULT_TENANT, DatasetRecord, MetaState, NodeRecord, apply,
                             from_doc, to_doc)


def run(state: MetaState, *cmds):
    result = None
    for cmd in cmds:
        state, result = apply(state, cmd)
    return state, result


def create(uuid="u1", tenant="t1", name="docs", placement=("n1",), at_ms=100, metadata=None,
           description="a dataset"):
    return c.CreateDataset(uuid=uuid, tenant_id=tenant, name=name, description=description,
                           dimensions=8, metric_type="cosine", index_type="hnsw",
                           metadata=metadata if metadata is not None else {"team": "search"},
                           placement=tuple(placement), at_ms=at_ms)


@pytest.fixture
def with_nodes() -> MetaState:
    state, _ = run(MetaState(), c.RegisterNode("n1", "10.0.0.1:7000", 10),
                   c.RegisterNode("n2", "10.0.0.2:7000", 11),
                   c.RegisterNode("n3", "10.0.0.3:7000", 12))
    return state


@pytest.fixture
def with_dataset(with_nodes) -> MetaState:
    state, result = apply(with_nodes, create(placement=("n1", "n2")))
    assert result == {"uuid": "u1"}
    return state


def is_error(result, kind):
    return "error" in result and result["error"]["type"] == kind \
        and isinstance(result["error"]["message"], str)


# ---- RegisterNode --------------------------------------------------------------------------


def test_register_node_adds_the_node_and_bumps_version():
    state, result = apply(MetaState(), c.RegisterNode("n1", "host:1", 42))
    assert result == {"node_id": "n1"}
    assert state.nodes == {"n1": NodeRecord("n1", "host:1", 42)}
    assert state.version == 1


def test_re_registering_a_node_keeps_registered_at_and_updates_address():
    state, _ = apply(MetaState(), c.RegisterNode("n1", "old:1", 42))
    state, result = apply(state, c.RegisterNode("n1", "new:2", 99))
    assert result == {"node_id": "n1"}
    assert state.nodes["n1"] == NodeRecord("n1", "new:2", 42)
    assert len(state.nodes) == 1


def test_the_node_peak_rises_with_registrations_and_never_falls(with_nodes):
    """MetaState.nodes_peak: the routers' --min-nodes gate stays passed after a scale-in."""
    assert with_nodes.nodes_peak == 3
    again, _ = apply(with_nodes, c.RegisterNode("n2", "10.0.0.9:7000", 20))
    assert again.nodes_peak == 3                   # a node registering again adds none
    state, _ = run(with_nodes, c.SetNodeState("n3", "draining", 30),
                   c.SetNodeState("n3", "drained", 31))
    state, result = apply(state, c.RemoveNode("n3", False, 32))
    assert "n3" not in state.nodes and state.nodes_peak == 3, result
    assert from_doc(json.loads(json.dumps(to_doc(state)))).nodes_peak == 3
    state, _ = apply(state, c.RegisterNode("n4", "10.0.0.4:7000", 40))
    assert state.nodes_peak == 3
    state, _ = apply(state, c.RegisterNode("n5", "10.0.0.5:7000", 41))
    assert state.nodes_peak == 4


def test_a_document_from_before_the_node_peak_counts_the_nodes_it_holds(with_nodes):
    doc = to_doc(with_nodes)
    del doc["nodes_peak"]
    assert from_doc(doc).nodes_peak == 3


# ---- CreateTenant --------------------------------------------------------------------------


def test_create_tenant_then_duplicate_is_refused_and_changes_nothing():
    state, result = apply(MetaState(), c.CreateTenant("t1", 5))
    assert result == {"tenant_id": "t1"}
    assert state.tenants["t1"].created_at_ms == 5
    again, result = apply(state, c.CreateTenant("t1", 6))
    assert is_error(result, "AlreadyExists")
    assert again is state
    assert again.tenants["t1"].created_at_ms == 5


# ---- CreateDataset -------------------------------------------------------------------------


def test_create_dataset_records_it_with_epoch_one_and_the_given_fields(with_nodes):
    state, result = apply(with_nodes, create(placement=("n1", "n2"), at_ms=100))
    assert result == {"uuid": "u1"}
    record = state.datasets["u1"]
    assert record == DatasetRecord(
        uuid="u1", tenant_id="t1", name="docs", description="a dataset", dimensions=8,
        metric_type="cosine", index_type="hnsw", metadata={"team": "search"},
        placement=("n1", "n2"), epoch=1, created_at_ms=100, updated_at_ms=100,
        replication_factor=1, copies=(("n1",), ("n2",)), in_sync=(("n1",), ("n2",)),
        terms=(1, 1))
    assert record.shard_count == 2
    assert state.dataset_by_name("t1", "docs") is record
    assert state.version == with_nodes.version + 1


def test_create_dataset_creates_its_tenant_implicitly(with_nodes):
    assert "t1" not in with_nodes.tenants
    state, _ = apply(with_nodes, create(tenant="t1", at_ms=77))
    assert state.tenants["t1"].tenant_id == "t1"
    assert state.tenants["t1"].created_at_ms == 77


def test_create_dataset_in_existing_tenant_keeps_the_tenant_record(with_nodes):
    state, _ = apply(with_nodes, c.CreateTenant("t1", 5))
    state, _ = apply(state, create(tenant="t1", at_ms=77))
    assert state.tenants["t1"].created_at_ms == 5


def test_create_dataset_with_taken_name_is_refused_and_changes_nothing(with_dataset):
    before = copy.deepcopy(to_doc(with_dataset))
    state, result = apply(with_dataset, create(uuid="u2", name="docs", placement=("n3",)))
    assert result["error"]["type"] == "AlreadyExists"
    assert state is with_dataset
    assert state.version == with_dataset.version
    assert to_doc(state) == before
    assert "u2" not in state.datasets


def test_create_dataset_with_same_name_in_another_tenant_is_accepted(with_dataset):
    state, result = apply(with_dataset, create(uuid="u2", tenant="t2", name="docs"))
    assert result == {"uuid": "u2"}
    assert state.dataset_by_name("t1", "docs").uuid == "u1"
    assert state.dataset_by_name("t2", "docs").uuid == "u2"
    assert state.version == with_dataset.version + 1


def test_create_dataset_retry_with_same_uuid_answers_success_and_changes_nothing(with_dataset):
    state, result = apply(with_dataset, create(uuid="u1", placement=("n3",), at_ms=999))
    assert result == {"uuid": "u1"}
    assert state is with_dataset
    assert state.datasets["u1"].placement == ("n1", "n2")
    assert state.datasets["u1"].created_at_ms == 100


def test_create_dataset_reusing_a_uuid_under_another_name_is_refused(with_dataset):
    state, result = apply(with_dataset, create(uuid="u1", tenant="t2", name="other"))
    assert is_error(result, "AlreadyExists")
    assert state is with_dataset


@pytest.mark.parametrize("placement", [("ghost",), ("n1", "ghost"), ()])
def test_create_dataset_with_placement_on_unknown_or_no_nodes_is_refused(with_nodes, placement):
    state, result = apply(with_nodes, create(placement=placement))
    assert is_error(result, "InvalidArgument")
    assert state is with_nodes
    assert state.datasets == {}
    assert state.tenants == {}


def test_create_dataset_copies_metadata_so_later_mutation_of_the_input_cannot_leak(with_nodes):
    metadata = {"k": "v"}
    state, _ = apply(with_nodes, create(metadata=metadata))
    metadata["k"] = "changed"
    assert state.datasets["u1"].metadata == {"k": "v"}


def test_datasets_of_lists_only_that_tenant_sorted_by_name(with_nodes):
    state, _ = run(with_nodes, create(uuid="u1", name="zeta"), create(uuid="u2", name="alpha"),
                   create(uuid="u3", tenant="t2", name="beta"))
    assert [d.name for d in state.datasets_of("t1")] == ["alpha", "zeta"]
    assert [d.name for d in state.datasets_of("t2")] == ["beta"]
    assert state.datasets_of(DEFAULT_TENANT) == []


# ---- DeleteDataset -------------------------------------------------------------------------


def test_delete_dataset_that_does_not_exist_is_not_found_and_changes_nothing(with_nodes):
    state, result = apply(with_nodes, c.DeleteDataset("t1", "nope", 5))
    assert is_error(result, "NotFound")
    assert state is with_nodes


def test_delete_dataset_removes_it_and_reports_its_placement(with_dataset):
    state, result = apply(with_dataset, c.DeleteDataset("t1", "docs", 200))
    assert result == {"uuid": "u1", "placement": ["n1", "n2"]}
    assert state.datasets == {}
    assert state.dataset_by_name("t1", "docs") is None
    assert state.version == with_dataset.version + 1
    assert "u1" in with_dataset.datasets  # the old state is untouched


def test_delete_dataset_only_looks_in_the_named_tenant(with_dataset):
    state, result = apply(with_dataset, c.DeleteDataset("t2", "docs", 200))
    assert is_error(result, "NotFound")
    assert state is with_dataset


def test_deleted_name_can_be_created_again_with_a_new_uuid(with_dataset):
    state, _ = apply(with_dataset, c.DeleteDataset("t1", "docs", 200))
    state, result = apply(state, create(uuid="u9"))
    assert result == {"uuid": "u9"}
    assert state.dataset_by_name("t1", "docs").uuid == "u9"


def test_a_retry_of_a_delete_that_committed_is_answered_as_the_first_attempt_was(
        with_dataset):
    # The meta client proposes again when an attempt's answer is lost (a leader change); the
    # first attempt may have committed. Chaos (meta-faults, seed 109) saw the retry answer 404
    # for a delete that had happened.
    delete = c.DeleteDataset("t1", "docs", 200, "u1", "r1")
    state, first = apply(with_dataset, delete)
    assert first == {"uuid": "u1", "placement": ["n1", "n2"]}
    again, result = apply(state, delete)
    assert result == {"uuid": "u1", "placement": [], "repeated": True}
    assert again is state
    # Another request finds nothing to delete.
    _, other = apply(state, c.DeleteDataset("t1", "docs", 201, "u1", "r2"))
    assert is_error(other, "NotFound")


def test_a_late_delete_never_deletes_a_later_dataset_of_the_same_name(with_dataset):
    state, _ = run(with_dataset, c.DeleteDataset("t1", "docs", 200, "u1", "r1"),
                   create(uuid="u9", at_ms=210))
    for late in (c.DeleteDataset("t1", "docs", 200, "u1", "r1"),
                 c.DeleteDataset("t1", "docs", 200, "u1", "r0")):
        after, result = apply(state, late)
        assert after is state and state.dataset_by_name("t1", "docs").uuid == "u9"
    assert result.get("repeated") or is_error(result, "NotFound")


def test_delete_records_are_bookkeeping_and_expire(with_dataset):
    from consensus.state import DELETE_RECORD_PREFIX
    from consensus.watch import catalog_doc
    from tributary import limits
    state, _ = run(with_dataset, c.DeleteDataset("t1", "docs", 200, "u1", "r1"))
    assert list(state.idempotency) == [f"{DELETE_RECORD_PREFIX}r1"]
    assert "idempotency" not in catalog_doc(state)
    assert from_doc(json.loads(json.dumps(to_doc(state)))).idempotency == state.idempotency
    later = 200 + limits.dataset_delete_record_ttl_ms
    state, _ = run(state, create(uuid="u2", at_ms=later),
                   c.DeleteDataset("t1", "docs", later, "u2", "r2"))
    assert list(state.idempotency) == [f"{DELETE_RECORD_PREFIX}r2"]
    # Past the record, a retry of r1 is an ordinary NotFound.
    _, result = apply(state, c.DeleteDataset("t1", "docs", 200, "u1", "r1"))
    assert is_error(result, "NotFound")


# ---- UpdateDataset -------------------------------------------------------------------------


def test_update_dataset_changes_given_fields_and_keeps_the_rest(with_dataset):
    state, result = apply(with_dataset, c.UpdateDataset("t1", "docs", "new desc", None, 300))
    assert result == {"uuid": "u1"}
    record = state.datasets["u1"]
    assert record.description == "new desc"
    assert record.metadata == {"team": "search"}
    assert record.updated_at_ms == 300
    assert record.created_at_ms == 100
    assert record.epoch == 1
    assert record.placement == ("n1", "n2")
    assert state.version == with_dataset.version + 1

    state, _ = apply(state, c.UpdateDataset("t1", "docs", None, {"x": "1"}, 400))
    assert state.datasets["u1"].description == "new desc"
    assert state.datasets["u1"].metadata == {"x": "1"}


def test_update_dataset_with_empty_values_clears_them(with_dataset):
    state, _ = apply(with_dataset, c.UpdateDataset("t1", "docs", "", {}, 300))
    assert state.datasets["u1"].description == ""
    assert state.datasets["u1"].metadata == {}


def test_update_of_missing_dataset_is_not_found_and_changes_nothing(with_dataset):
    state, result = apply(with_dataset, c.UpdateDataset("t1", "nope", "x", None, 300))
    assert is_error(result, "NotFound")
    assert state is with_dataset


# ---- PlaceShard ----------------------------------------------------------------------------


def test_place_shard_moves_the_shard_and_bumps_the_epoch(with_dataset):
    state, result = apply(with_dataset, c.PlaceShard("u1", 1, "n3", 500))
    assert result == {"epoch": 2}
    record = state.datasets["u1"]
    assert record.placement == ("n1", "n3")
    assert record.epoch == 2
    assert record.updated_at_ms == 500
    assert state.version == with_dataset.version + 1
    state, result = apply(state, c.PlaceShard("u1", 0, "n3", 600))
    assert result == {"epoch": 3}
    assert state.datasets["u1"].placement == ("n3", "n3")


@pytest.mark.parametrize("shard", [-1, 2, 100])
def test_place_shard_out_of_range_is_refused(with_dataset, shard):
    state, result = apply(with_dataset, c.PlaceShard("u1", shard, "n3", 500))
    assert is_error(result, "InvalidArgument")
    assert state is with_dataset
    assert state.datasets["u1"].epoch == 1


def test_place_shard_on_unknown_node_is_refused(with_dataset):
    state, result = apply(with_dataset, c.PlaceShard("u1", 0, "ghost", 500))
    assert is_error(result, "InvalidArgument")
    assert state is with_dataset


def test_place_shard_of_unknown_dataset_is_not_found(with_dataset):
    state, result = apply(with_dataset, c.PlaceShard("nope", 0, "n1", 500))
    assert is_error(result, "NotFound")
    assert state is with_dataset


# ---- Barrier, unknown commands, versions ---------------------------------------------------


def test_barrier_changes_nothing_and_reports_the_version(with_dataset):
    state, result = apply(with_dataset, c.Barrier(1))
    assert state is with_dataset
    assert result == {"version": with_dataset.version}


def test_an_unknown_command_is_refused_without_raising(with_dataset):
    state, result = apply(with_dataset, object())
    assert is_error(result, "InvalidArgument")
    assert state is with_dataset


def test_version_counts_exactly_the_successful_state_changes():
    state = MetaState()
    assert state.version == 0
    steps = [
        (c.RegisterNode("n1", "a", 1), 1),
        (c.Barrier(2), 0),
        (create(uuid="u1", placement=("n1",)), 1),
        (create(uuid="u1", placement=("n1",)), 0),  # retry
        (create(uuid="u2", placement=("n1",)), 0),  # taken name
        (c.UpdateDataset("t1", "docs", "d", None, 3), 1),
        (c.UpdateDataset("t1", "nope", "d", None, 3), 0),
        (c.PlaceShard("u1", 0, "n1", 4), 1),
        (c.PlaceShard("u1", 5, "n1", 4), 0),
        (c.CreateTenant("t1", 5), 0),  # implicitly created already
        (c.CreateTenant("t2", 5), 1),
        (c.DeleteDataset("t1", "docs", 6), 1),
        (c.DeleteDataset("t1", "docs", 6), 0),
    ]
    expected = 0
    for command, bump in steps:
        state, _ = apply(state, command)
        expected += bump
        assert state.version == expected, command


def test_apply_never_mutates_the_state_it_was_given(with_dataset):
    snapshot = copy.deepcopy(to_doc(with_dataset))
    frozen_dicts = (dict(with_dataset.datasets), dict(with_dataset.nodes),
                    dict(with_dataset.tenants))
    for command in [c.RegisterNode("n4", "x", 1), c.RegisterNode("n1", "moved", 1),
                    create(uuid="u2", name="other"), c.UpdateDataset("t1", "docs", "z", {}, 2),
                    c.PlaceShard("u1", 0, "n3", 3), c.DeleteDataset("t1", "docs", 4),
                    c.CreateTenant("t9", 5)]:
        new, result = apply(with_dataset, command)
        assert "error" not in result
        assert new is not with_dataset
        assert to_doc(with_dataset) == snapshot
        assert (with_dataset.datasets, with_dataset.nodes, with_dataset.tenants) == frozen_dicts


# ---- to_doc / from_doc ---------------------------------------------------------------------


def test_to_doc_is_json_serializable_and_from_doc_restores_an_equal_state(with_dataset):
    state, _ = run(with_dataset, c.CreateTenant("t7", 1), c.PlaceShard("u1", 0, "n3", 2))
    doc = to_doc(state)
    restored = from_doc(json.loads(json.dumps(doc)))
    assert restored == state
    assert isinstance(restored.datasets["u1"].placement, tuple)
    assert to_doc(restored) == doc


def test_from_doc_of_an_empty_doc_is_a_fresh_state():
    assert from_doc(to_doc(MetaState())) == MetaState()


# ---- property: determinism and snapshot round trip -----------------------------------------

NODES = ["n1", "n2", "n3"]
node_ids = st.sampled_from(NODES + ["ghost"])
tenants = st.sampled_from(["t1", "t2", DEFAULT_TENANT])
names = st.sampled_from(["a", "b", "c"])
uuids = st.sampled_from(["u1", "u2", "u3", "u4"])
at_ms = st.integers(min_value=0, max_value=10 ** 13)
meta_maps = st.dictionaries(st.sampled_from(["k", "team", "é"]), st.text(max_size=5), max_size=2)

commands = st.one_of(
    st.builds(c.RegisterNode, node_id=node_ids, address=st.sampled_from(["h:1", "h:2"]),
              at_ms=at_ms),
    st.builds(c.CreateTenant, tenant_id=tenants, at_ms=at_ms),
    st.builds(c.CreateDataset, uuid=uuids, tenant_id=tenants, name=names,
              description=st.text(max_size=5), dimensions=st.integers(1, 16),
              metric_type=st.sampled_from(["cosine", "l2", "ip"]),
              index_type=st.sampled_from(["hnsw", "flat"]), metadata=meta_maps,
              placement=st.lists(node_ids, min_size=0, max_size=3).map(tuple), at_ms=at_ms),
    st.builds(c.UpdateDataset, tenant_id=tenants, name=names,
              description=st.none() | st.text(max_size=5), metadata=st.none() | meta_maps,
              at_ms=at_ms),
    st.builds(c.DeleteDataset, tenant_id=tenants, name=names, at_ms=at_ms),
    st.builds(c.PlaceShard, dataset_uuid=uuids, shard=st.integers(-1, 3), node_id=node_ids,
              at_ms=at_ms),
    st.builds(c.Barrier, at_ms=at_ms),
)


def _without_version(doc):
    return {k: v for k, v in doc.items() if k != "version"}


@settings(max_examples=200, deadline=None)
@given(st.lists(commands, max_size=30))
def test_applying_the_same_log_twice_gives_the_same_results_and_state(log):
    results = []
    states = []
    for _ in range(2):
        state = MetaState()
        out = []
        for command in log:
            state, result = apply(state, command)
            out.append(result)
        results.append(out)
        states.append(state)
    assert results[0] == results[1]
    assert states[0] == states[1]
    assert to_doc(states[0]) == to_doc(states[1])


@settings(max_examples=200, deadline=None)
@given(st.lists(commands, max_size=30))
def test_every_step_is_pure_and_versions_move_by_exactly_one_on_change(log):
    state = MetaState()
    for command in log:
        before = copy.deepcopy(to_doc(state))
        new, result = apply(state, command)
        assert to_doc(state) == before, "apply mutated its input"
        # Also the command survives the log codec and gives the same outcome.
        assert apply(state, c.decode(c.encode(command))) == (new, result)
        if "error" in result:
            assert new is state
            assert set(result) == {"error"}
            assert result["error"]["type"] in {"AlreadyExists", "NotFound", "InvalidArgument"}
        if new is state:
            assert new.version == state.version
        else:
            assert new.version == state.version + 1
        if _without_version(to_doc(new)) != _without_version(before):
            assert new.version == state.version + 1
        state = new


@settings(max_examples=200, deadline=None)
@given(st.lists(commands, max_size=30))
def test_snapshot_documents_round_trip_through_json(log):
    state = MetaState()
    for command in log:
        state, _ = apply(state, command)
    doc = to_doc(state)
    text = json.dumps(doc, sort_keys=True)
    assert to_doc(from_doc(json.loads(text))) == doc
    assert to_doc(from_doc(to_doc(state))) == doc
    assert from_doc(doc) == state


@settings(max_examples=200, deadline=None)
@given(st.lists(commands, max_size=40))
def test_dataset_names_stay_unique_per_tenant_and_placements_name_registered_nodes(log):
    state = MetaState()
    for command in log:
        state, _ = apply(state, command)
        keys = [(d.tenant_id, d.name) for d in state.datasets.values()]
        assert len(keys) == len(set(keys))
        for uuid, record in state.datasets.items():
            assert record.uuid == uuid
            assert record.epoch >= 1
            assert record.shard_count >= 1
            assert set(record.placement) <= set(state.nodes)
            assert record.tenant_id in state.tenants
