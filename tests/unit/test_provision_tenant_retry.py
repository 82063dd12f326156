"""A retried ProvisionTenant (the meta client proposes the same command again on another member
when the first attempt missed its deadline, though it may have committed) answers as the first
attempt did, instead of AlreadyExists; a different request for an existing tenant is still
refused."""

from __future__ import annotations

import dataclasses

from consensus import commands as c
from consensus.state import MetaState, apply

PROVISION = c.ProvisionTenant("acme", "Acme", {"max_vectors": 1000.0}, "active", 7)


def test_a_retried_provision_tenant_answers_success_and_changes_nothing():
    state, first = apply(MetaState(), PROVISION)
    # The retry arrives as its encoded bytes do, decoded again.
    again, second = apply(state, c.decode(c.encode(PROVISION)))
    assert first == second == {"tenant_id": "acme"}
    assert again == state and again.version == state.version


def test_another_request_for_an_existing_tenant_is_still_refused():
    state, _ = apply(MetaState(), PROVISION)
    for other in (dataclasses.replace(PROVISION, at_ms=8),
                  dataclasses.replace(PROVISION, name="Other"),
                  dataclasses.replace(PROVISION, quotas={"max_vectors": 5})):
        after, result = apply(state, other)
        assert result["error"]["type"] == "AlreadyExists", other
        assert after == state


def test_a_retry_after_the_tenant_changed_is_refused():
    state, _ = apply(MetaState(), PROVISION)
    state, _ = apply(state, c.SetTenantQuotas("acme", {"max_vectors": 5}, 9))
    _, result = apply(state, PROVISION)
    assert result["error"]["type"] == "AlreadyExists"
