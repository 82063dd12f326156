"""The admission step (router/admission.py) over the operation table (router/operations.py):
its order (authorization, then the input guard, then quotas), scopes, and that every public
RPC of deeplake.v1 has exactly one descriptor."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from consensus import commands as c
from consensus.state import MetaState, apply
from proto import deeplake_service_pb2 as pb
from router import admission, auth, operations, quotas
from tributary import errors, limits

TENANT_RW = auth.Principal("tenant", tenant_id="acme")
TENANT_RO = auth.Principal("tenant", tenant_id="acme", can_write=False)
ADMIN = auth.Principal("admin")


class FakeCatalog:
    def __init__(self, state: MetaState):
        self.state = state


class FakeCore:
    def __init__(self, state: MetaState):
        self.catalog = FakeCatalog(state)


def enforcer(**tenant_quotas) -> quotas.QuotaEnforcer:
    state, _ = apply(MetaState(), c.ProvisionTenant("acme", "Acme", tenant_quotas, "active", 1))
    return quotas.QuotaEnforcer(FakeCore(state))


def admit(operation, principal, request, quota_enforcer=None):
    return asyncio.run(admission.admit(operation, principal, request, quota_enforcer))


def bad_insert() -> pb.InsertVectorsRequest:
    """Too long a document_id (input guard) in a batch of two (over max_batch_size=1)."""
    return pb.InsertVectorsRequest(dataset_id="docs", vectors=[
        pb.Vector(id="a", values=[1.0], document_id="d" * (limits.vector_id_bytes_max + 1)),
        pb.Vector(id="b", values=[1.0])])


def test_admission_checks_authorization_before_input_and_input_before_quotas():
    tight = enforcer(max_batch_size=1)
    with pytest.raises(errors.PermissionDenied, match="read-only"):
        admit(operations.INSERT_VECTORS, TENANT_RO, bad_insert(), tight)
    with pytest.raises(errors.InvalidArgument, match="document_id"):
        admit(operations.INSERT_VECTORS, TENANT_RW, bad_insert(), tight)
    request = bad_insert()
    del request.vectors[0]
    request.vectors.add(id="c", values=[1.0])
    with pytest.raises(errors.ResourceExhausted, match="Batch size quota exceeded: 2 / 1"):
        admit(operations.INSERT_VECTORS, TENANT_RW, request, tight)


def test_admission_fills_the_tenant_from_the_credential_and_returns_a_releasable_slot():
    limits_ = enforcer(max_concurrent_queries=1)
    request = pb.SearchVectorsRequest(dataset_id="docs")
    tenant, slot = admit(operations.SEARCH_VECTORS, TENANT_RW, request, limits_)
    assert (tenant, request.tenant_id) == ("acme", "acme")
    assert limits_.counters_of("acme").active_queries == 1
    slot.release()
    assert limits_.counters_of("acme").active_queries == 0


def test_an_admin_scoped_descriptor_refuses_tenant_credentials():
    admin_only = dataclasses.replace(operations.GET_DATASET, name="inspect_dataset",
                                     grpc_method="", scope=operations.Scope.ADMIN)
    with pytest.raises(errors.PermissionDenied, match="admin credential"):
        admit(admin_only, TENANT_RW, pb.GetDatasetRequest(dataset_id="docs"))
    assert admit(admin_only, ADMIN, pb.GetDatasetRequest(dataset_id="docs"))[0] == "default"


def test_every_public_rpc_has_exactly_one_descriptor():
    public = {method.name for service in pb.DESCRIPTOR.services_by_name.values()
              if service.name != "HealthService" for method in service.methods}
    described = [op.grpc_method for op in operations.OPERATIONS if op.grpc_method]
    assert sorted(described) == sorted(public)


def test_the_read_only_rpc_list_follows_the_descriptors():
    for operation in operations.OPERATIONS:
        if operation.grpc_method:
            assert (operation.grpc_method in auth.READ_RPCS) == (not operation.writes)
