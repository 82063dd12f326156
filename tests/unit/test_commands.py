"""Specification of the Raft command codec in consensus/commands.py."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import commands as c

texts = st.text(max_size=20)
ints = st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1)
string_maps = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4)
quota_values = st.integers(min_value=0, max_value=2 ** 53) | st.floats(
    min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)
quota_maps = st.dictionaries(texts, quota_values, max_size=7)

STRATEGIES = {
    "RegisterNode": st.builds(c.RegisterNode, node_id=texts, address=texts, at_ms=ints),
    "CreateTenant": st.builds(c.CreateTenant, tenant_id=texts, at_ms=ints),
    "CreateDataset": st.builds(
        c.CreateDataset, uuid=texts, tenant_id=texts, name=texts, description=texts,
        dimensions=ints, metric_type=texts, index_type=texts, metadata=string_maps,
        placement=st.lists(texts, max_size=5).map(tuple), at_ms=ints,
        replication_factor=ints,
        copies=st.lists(st.lists(texts, max_size=3).map(tuple), max_size=4).map(tuple)),
    "UpdateDataset": st.builds(
        c.UpdateDataset, tenant_id=texts, name=texts, description=st.none() | texts,
        metadata=st.none() | string_maps, at_ms=ints),
    "DeleteDataset": st.builds(c.DeleteDataset, tenant_id=texts, name=texts, at_ms=ints),
    "PlaceShard": st.builds(c.PlaceShard, dataset_uuid=texts, shard=ints, node_id=texts,
                            at_ms=ints),
    "DecideTxn": st.builds(c.DecideTxn, txn_id=texts, decision=st.sampled_from(
        ["commit", "abort"]), participants=st.lists(texts, max_size=4).map(tuple),
        idempotency_key=texts, outcome_json=texts, at_ms=ints),
    "AckTxns": st.builds(c.AckTxns, acks=st.lists(st.tuples(texts, texts), max_size=4).map(
        tuple), at_ms=ints),
    "Barrier": st.builds(c.Barrier, at_ms=ints),
    "ProvisionTenant": st.builds(c.ProvisionTenant, tenant_id=texts, name=texts,
                                 quotas=quota_maps, status=texts, at_ms=ints),
    "SetTenantQuotas": st.builds(c.SetTenantQuotas, tenant_id=texts,
                                 quotas=st.dictionaries(texts, st.none() | quota_values,
                                                        max_size=7), at_ms=ints),
    "SetTenantStatus": st.builds(c.SetTenantStatus, tenant_id=texts, status=texts, at_ms=ints),
    "DeleteTenant": st.builds(c.DeleteTenant, tenant_id=texts, at_ms=ints),
    "CreateApiKey": st.builds(
        c.CreateApiKey, key_id=texts, key_hash=texts, tenant_id=texts, role=texts, access=texts,
        datasets=st.lists(texts, max_size=4).map(tuple), description=texts, at_ms=ints),
    "RevokeApiKey": st.builds(c.RevokeApiKey, key_id=texts, at_ms=ints),
    "SetInSync": st.builds(c.SetInSync, dataset_uuid=texts, shard=ints, node_id=texts,
                           in_sync=st.booleans(), term=ints, at_ms=ints),
    "PromotePrimary": st.builds(c.PromotePrimary, dataset_uuid=texts, shard=ints,
                                node_id=texts, term=ints, at_ms=ints),
    "ReplaceCopy": st.builds(c.ReplaceCopy, dataset_uuid=texts, shard=ints, old_node=texts,
                             new_node=texts, at_ms=ints),
    "SetNodeState": st.builds(c.SetNodeState, node_id=texts, state=texts, at_ms=ints),
    "RemoveNode": st.builds(c.RemoveNode, node_id=texts, force=st.booleans(), at_ms=ints),
    "StartMove": st.builds(c.StartMove, move_id=texts, dataset_uuid=texts, shard=ints,
                           source=texts, target=texts, reason=texts, at_ms=ints),
    "FinishMove": st.builds(c.FinishMove, move_id=texts, at_ms=ints),
    "CancelMove": st.builds(c.CancelMove, move_id=texts, at_ms=ints),
    "FenceCommits": st.builds(c.FenceCommits, dataset_uuid=texts, fence_id=texts, until_ms=ints,
                              at_ms=ints),
    "LiftFence": st.builds(c.LiftFence, fence_id=texts, at_ms=ints),
    "FenceSettled": st.builds(c.FenceSettled, fence_id=texts, at_ms=ints),
    "CreateVersion": st.builds(c.CreateVersion, dataset_uuid=texts, tag=texts,
                               deeplake_tag=texts, cut_json=texts, keep_max=ints, keep_ms=ints,
                               at_ms=ints),
    "DeleteVersion": st.builds(c.DeleteVersion, dataset_uuid=texts, tag=texts, at_ms=ints),
    "StartReshard": st.builds(c.StartReshard, dataset_uuid=texts, new_count=ints, at_ms=ints),
    "ReshardCopyReady": st.builds(c.ReshardCopyReady, dataset_uuid=texts, shard=ints,
                                  node_id=texts, ready=st.booleans(), at_ms=ints),
    "FinishReshard": st.builds(c.FinishReshard, dataset_uuid=texts, at_ms=ints),
    "CancelReshard": st.builds(c.CancelReshard, dataset_uuid=texts, at_ms=ints),
    "StartTransfer": st.builds(c.StartTransfer, transfer_id=texts, dataset_uuid=texts,
                               shard=ints, source=texts, target=texts, at_ms=ints),
    "EndTransfer": st.builds(c.EndTransfer, transfer_id=texts, at_ms=ints),
}

any_command = st.one_of(*STRATEGIES.values())


def example_of(cls):
    return {
        c.RegisterNode: c.RegisterNode("n1", "127.0.0.1:7000", 5),
        c.CreateTenant: c.CreateTenant("t1", 5),
        c.CreateDataset: c.CreateDataset("u1", "t1", "docs", "d", 8, "cosine", "hnsw",
                                         {"k": "v"}, ("n1", "n2"), 5),
        c.UpdateDataset: c.UpdateDataset("t1", "docs", None, {"k": "v"}, 5),
        c.DeleteDataset: c.DeleteDataset("t1", "docs", 5),
        c.PlaceShard: c.PlaceShard("u1", 0, "n2", 5),
        c.DecideTxn: c.DecideTxn("x1", "commit", ("u1/0", "u1/1"), "t1/u1/key", "{}", 5),
        c.AckTxns: c.AckTxns((("x1", "u1/0"),), 5),
        c.Barrier: c.Barrier(5),
        c.ProvisionTenant: c.ProvisionTenant("t1", "Tenant one", {"max_vectors": 10_000,
                                                                "max_requests_per_second": 2.5},
                                             "active", 5),
        c.SetTenantQuotas: c.SetTenantQuotas("t1", {"max_batch_size": 100, "max_vectors": None},
                                             5),
        c.SetTenantStatus: c.SetTenantStatus("t1", "read_only", 5),
        c.DeleteTenant: c.DeleteTenant("t1", 5),
        c.CreateApiKey: c.CreateApiKey("k1", "ab" * 32, "t1", "tenant", "read_only",
                                       ("docs",), "ci reader", 5),
        c.RevokeApiKey: c.RevokeApiKey("k1", 5),
        c.SetInSync: c.SetInSync("u1", 0, "n2", False, 3, 5),
        c.PromotePrimary: c.PromotePrimary("u1", 0, "n2", 3, 5),
        c.ReplaceCopy: c.ReplaceCopy("u1", 0, "n2", "n3", 5),
        c.SetNodeState: c.SetNodeState("n1", "draining", 5),
        c.RemoveNode: c.RemoveNode("n1", False, 5),
        c.StartMove: c.StartMove("m1", "u1", 0, "n1", "n3", "rebalance", 5),
        c.FinishMove: c.FinishMove("m1", 5),
        c.CancelMove: c.CancelMove("m1", 5),
        c.FenceCommits: c.FenceCommits("u1", "f1", 1_005, 5),
        c.LiftFence: c.LiftFence("f1", 5),
        c.FenceSettled: c.FenceSettled("f1", 5),
        c.CreateVersion: c.CreateVersion("u1", "v1", "version-v1", "[]", 100, 0, 5),
        c.DeleteVersion: c.DeleteVersion("u1", "v1", 5),
        c.StartReshard: c.StartReshard("u1", 4, 5),
        c.ReshardCopyReady: c.ReshardCopyReady("u1", 0, "n1", True, 5),
        c.FinishReshard: c.FinishReshard("u1", 5),
        c.CancelReshard: c.CancelReshard("u1", 5),
        c.StartTransfer: c.StartTransfer("t1", "u1", 0, "n1", "n2", 5),
        c.EndTransfer: c.EndTransfer("t1", 5),
    }[cls]


def test_strategies_cover_every_declared_command_type():
    assert set(STRATEGIES) == set(c.COMMAND_TYPES)


@pytest.mark.parametrize("name", sorted(c.COMMAND_TYPES))
def test_every_command_type_round_trips_through_encode_and_decode(name):
    command = example_of(c.COMMAND_TYPES[name])
    decoded = c.decode(c.encode(command))
    assert type(decoded) is type(command)
    assert decoded == command


@settings(max_examples=300, deadline=None)
@given(any_command)
def test_any_command_round_trips_with_equal_fields_and_type(command):
    decoded = c.decode(c.encode(command))
    assert type(decoded) is type(command)
    assert decoded == command


@settings(max_examples=100, deadline=None)
@given(STRATEGIES["CreateDataset"])
def test_decoded_create_dataset_placement_is_a_tuple(command):
    decoded = c.decode(c.encode(command))
    assert isinstance(decoded.placement, tuple)
    assert decoded.placement == command.placement


@settings(max_examples=100, deadline=None)
@given(any_command)
def test_encoding_is_canonical_json_tagged_with_the_type_name(command):
    text = c.encode(command)
    doc = json.loads(text)
    assert doc["type"] == type(command).__name__
    assert set(doc["fields"]) == {f.name for f in dataclasses.fields(command)}
    # Canonical: equal commands encode to identical text.
    assert c.encode(c.decode(text)) == text


def test_encode_refuses_an_object_that_is_not_a_command():
    @dataclasses.dataclass(frozen=True)
    class NotACommand:
        at_ms: int

    with pytest.raises(TypeError):
        c.encode(NotACommand(1))
    with pytest.raises(TypeError):
        c.encode({"type": "Barrier", "fields": {"at_ms": 1}})


def test_decode_refuses_an_unknown_type_tag():
    with pytest.raises(c.CommandDecodeError):
        c.decode(json.dumps({"type": "DropEverything", "fields": {"at_ms": 1}}))


def test_decode_refuses_a_type_tag_that_names_a_non_command_builtin():
    with pytest.raises(c.CommandDecodeError):
        c.decode(json.dumps({"type": "CommandDecodeError", "fields": {}}))


@pytest.mark.parametrize("name", sorted(c.COMMAND_TYPES))
def test_decode_refuses_a_document_with_a_missing_field(name):
    doc = json.loads(c.encode(example_of(c.COMMAND_TYPES[name])))
    dropped = sorted(doc["fields"])[0]
    del doc["fields"][dropped]
    with pytest.raises(c.CommandDecodeError):
        c.decode(json.dumps(doc))


def test_a_create_from_before_replication_decodes_with_one_copy():
    doc = json.loads(c.encode(example_of(c.CreateDataset)))
    del doc["fields"]["replication_factor"], doc["fields"]["copies"]
    decoded = c.decode(json.dumps(doc))
    assert decoded.replication_factor == 1 and decoded.copies == ()


@pytest.mark.parametrize("name", sorted(c.COMMAND_TYPES))
def test_decode_refuses_a_document_with_an_extra_field(name):
    doc = json.loads(c.encode(example_of(c.COMMAND_TYPES[name])))
    doc["fields"]["__class__"] = "x"
    with pytest.raises(c.CommandDecodeError):
        c.decode(json.dumps(doc))


@pytest.mark.parametrize("text", [
    "",
    "not json",
    "{",
    "[]",
    "null",
    "42",
    '"Barrier"',
    '{"fields": {"at_ms": 1}}',
    '{"type": "Barrier"}',
    '{"type": "Barrier", "fields": null}',
    '{"type": "Barrier", "fields": ["at_ms"]}',
    '{"type": ["Barrier"], "fields": {"at_ms": 1}}',
    '{"type": "CreateDataset", "fields": {"uuid": "u", "tenant_id": "t", "name": "n", '
    '"description": "", "dimensions": 2, "metric_type": "l2", "index_type": "flat", '
    '"metadata": {}, "placement": 7, "at_ms": 1}}',
])
def test_decode_refuses_malformed_documents_with_command_decode_error(text):
    with pytest.raises(c.CommandDecodeError):
        c.decode(text)


def test_command_decode_error_is_a_value_error():
    assert issubclass(c.CommandDecodeError, ValueError)


def test_commands_are_immutable():
    command = c.Barrier(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        command.at_ms = 2  # type: ignore[misc]
