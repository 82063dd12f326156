"""Tenants, quotas, statuses and API keys in the metadata state machine.

`apply(state, command)` handles the admin commands (ProvisionTenant, SetTenantQuotas,
SetTenantStatus, DeleteTenant, CreateApiKey, RevokeApiKey) and, like state.apply, is pure: it
never raises for a bad command, it returns {"error": ...}. The checks here are the last line:
the router validates the same things first, to answer with a precise 400.

`refuse_by_status` lets the state machine itself refuse a CreateDataset for a tenant that is
suspended, read-only or pending deletion, so a dataset cannot slip in while a tenant is being
deleted (the router checks statuses too, but a router's catalog may be a second old).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from consensus import commands as c
from consensus.records import ApiKeyRecord, MetaState, TenantRecord, bump as _bump, error as _error
from consensus.records import put

COMMANDS = (c.ProvisionTenant, c.SetTenantQuotas, c.SetTenantStatus, c.DeleteTenant,
            c.CreateApiKey, c.RevokeApiKey)

ACTIVE, SUSPENDED, READ_ONLY, PENDING_DELETION = ("active", "suspended", "read_only",
                                                  "pending_deletion")
STATUSES = (ACTIVE, SUSPENDED, READ_ONLY, PENDING_DELETION)

# The VecStore quota set (seed 002). Every one is optional; absent means unlimited.
QUOTA_NAMES = ("max_vectors", "max_storage_bytes", "max_requests_per_second",
               "max_concurrent_queries", "max_dimension", "max_results_per_query",
               "max_batch_size")
# Only the rate may be fractional (0.5 = one request every two seconds).
FRACTIONAL_QUOTAS = ("max_requests_per_second",)

ROLE_ADMIN, ROLE_TENANT = "admin", "tenant"
ROLES = (ROLE_ADMIN, ROLE_TENANT)
READ_ONLY_ACCESS, READ_WRITE_ACCESS = "read_only", "read_write"
ACCESSES = (READ_ONLY_ACCESS, READ_WRITE_ACCESS)

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def quota_problems(quotas: Any, allow_null: bool) -> list[str]:
    """What is wrong with a quotas map (empty when nothing is)."""
    if not isinstance(quotas, dict):
        return ["quotas must be an object"]
    problems = []
    for name, value in quotas.items():
        if name not in QUOTA_NAMES:
            problems.append(f"unknown quota '{name}' (known: {', '.join(QUOTA_NAMES)})")
        elif value is None:
            if not allow_null:
                problems.append(f"quota '{name}' is null; leave it out for unlimited")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"quota '{name}' must be a number or null")
        elif not math.isfinite(value) or value < 0:
            problems.append(f"quota '{name}' must be a finite number >= 0, got {value!r}")
        elif value > 2 ** 62:
            problems.append(f"quota '{name}' is too large (use null for unlimited)")
        elif name not in FRACTIONAL_QUOTAS and value != int(value):
            problems.append(f"quota '{name}' must be an integer, got {value!r}")
    return problems


def normalize_quotas(quotas: dict) -> dict[str, float]:
    """Integral quotas as ints (1000.0 -> 1000), the rate as given; nulls dropped."""
    return {name: (value if name in FRACTIONAL_QUOTAS else int(value))
            for name, value in quotas.items() if value is not None}


def _tenant_problem(state: MetaState, tenant_id: Any) -> dict | None:
    if not isinstance(tenant_id, str) or not tenant_id:
        return _error("InvalidArgument", "tenant_id must be a non-empty string")
    if tenant_id not in state.tenants:
        return _error("NotFound", f"tenant '{tenant_id}' not found")
    return None


def _provisioned(command: c.ProvisionTenant) -> TenantRecord:
    """The tenant a valid ProvisionTenant creates."""
    return TenantRecord(tenant_id=command.tenant_id, created_at_ms=command.at_ms,
                        name=command.name, status=command.status,
                        quotas=normalize_quotas(command.quotas), updated_at_ms=command.at_ms)


def apply(state: MetaState, command: Any) -> tuple[MetaState, dict[str, Any]]:
    if isinstance(command, c.ProvisionTenant):
        if not isinstance(command.tenant_id, str) or not command.tenant_id:
            return state, _error("InvalidArgument", "tenant_id must be a non-empty string")
        existing = state.tenants.get(command.tenant_id)
        problems = quota_problems(command.quotas, allow_null=False)
        valid = command.status in STATUSES and not problems and isinstance(command.name, str)
        if existing is not None:
            if valid and existing == _provisioned(command):
                # The same command committed before: a Propose retried on another member after
                # the first attempt missed its deadline (the proposer's at_ms makes it the same
                # request). It answers as the first did and changes nothing.
                return state, {"tenant_id": existing.tenant_id}
            return state, _error("AlreadyExists", f"tenant '{command.tenant_id}' already exists")
        if command.status not in STATUSES:
            return state, _error("InvalidArgument", f"unknown status '{command.status}'")
        if problems or not isinstance(command.name, str):
            return state, _error("InvalidArgument", "; ".join(problems) or "bad tenant name")
        record = _provisioned(command)
        return _bump(state, tenants=put(state.tenants, record.tenant_id, record)), \
            {"tenant_id": record.tenant_id}

    if isinstance(command, c.SetTenantQuotas):
        problem = _tenant_problem(state, command.tenant_id)
        if problem:
            return state, problem
        problems = quota_problems(command.quotas, allow_null=True)
        if problems:
            return state, _error("InvalidArgument", "; ".join(problems))
        record = state.tenants[command.tenant_id]
        merged = {**record.quotas, **command.quotas}
        record = dataclasses.replace(record, quotas=normalize_quotas(merged),
                                     updated_at_ms=command.at_ms)
        return _bump(state, tenants=put(state.tenants, record.tenant_id, record)), \
            {"tenant_id": record.tenant_id, "quotas": dict(record.quotas)}

    if isinstance(command, c.SetTenantStatus):
        problem = _tenant_problem(state, command.tenant_id)
        if problem:
            return state, problem
        if command.status not in STATUSES:
            return state, _error("InvalidArgument", f"status must be one of "
                                                    f"{', '.join(STATUSES)}")
        record = dataclasses.replace(state.tenants[command.tenant_id], status=command.status,
                                     updated_at_ms=command.at_ms)
        return _bump(state, tenants=put(state.tenants, record.tenant_id, record)), \
            {"tenant_id": record.tenant_id, "status": record.status}

    if isinstance(command, c.DeleteTenant):
        problem = _tenant_problem(state, command.tenant_id)
        if problem:
            return state, problem
        left = state.datasets_of(command.tenant_id)
        if left:
            return state, _error("InvalidArgument",
                                 f"tenant '{command.tenant_id}' still has {len(left)} "
                                 f"dataset(s); delete them first")
        tenants = {k: v for k, v in state.tenants.items() if k != command.tenant_id}
        keys = {k: v for k, v in state.api_keys.items() if v.tenant_id != command.tenant_id}
        revoked = sorted(set(state.api_keys) - set(keys))
        return _bump(state, tenants=tenants, api_keys=keys), \
            {"tenant_id": command.tenant_id, "revoked_keys": revoked}

    if isinstance(command, c.CreateApiKey):
        if not isinstance(command.key_id, str) or not command.key_id:
            return state, _error("InvalidArgument", "key_id must be a non-empty string")
        if command.key_id in state.api_keys:
            return state, _error("AlreadyExists", f"API key '{command.key_id}' already exists")
        if not isinstance(command.key_hash, str) or not _SHA256_HEX.fullmatch(command.key_hash):
            return state, _error("InvalidArgument", "key_hash must be a sha256 hex digest")
        if any(k.key_hash == command.key_hash for k in state.api_keys.values()):
            return state, _error("AlreadyExists", "an API key with this hash already exists")
        if command.role not in ROLES or command.access not in ACCESSES:
            return state, _error("InvalidArgument", f"role must be one of {ROLES} and access "
                                                    f"one of {ACCESSES}")
        if not all(isinstance(d, str) and d for d in command.datasets):
            return state, _error("InvalidArgument", "datasets must be non-empty strings")
        if command.role == ROLE_ADMIN:
            if command.tenant_id or command.datasets:
                return state, _error("InvalidArgument",
                                     "an admin key names no tenant and no datasets")
        else:
            problem = _tenant_problem(state, command.tenant_id)
            if problem:
                return state, problem
        record = ApiKeyRecord(key_id=command.key_id, key_hash=command.key_hash,
                              tenant_id=command.tenant_id, role=command.role,
                              access=command.access, datasets=tuple(command.datasets),
                              description=str(command.description),
                              created_at_ms=command.at_ms)
        return _bump(state, api_keys=put(state.api_keys, record.key_id, record)), \
            {"key_id": record.key_id}

    if isinstance(command, c.RevokeApiKey):
        if not isinstance(command.key_id, str) or command.key_id not in state.api_keys:
            return state, _error("NotFound", f"API key '{command.key_id}' not found")
        keys = {k: v for k, v in state.api_keys.items() if k != command.key_id}
        return _bump(state, api_keys=keys), {"key_id": command.key_id}

    return state, _error("InvalidArgument", f"unknown command {type(command).__name__}")


def refuse_by_status(state: MetaState, command: Any) -> dict | None:
    """A CreateDataset for a tenant whose status forbids writes is refused (PermissionDenied)."""
    if not isinstance(command, c.CreateDataset):
        return None
    tenant = state.tenants.get(command.tenant_id)
    if tenant is None or tenant.status == ACTIVE:
        return None
    return _error("PermissionDenied", f"tenant '{command.tenant_id}' is {tenant.status}; "
                                      "it cannot create datasets")
