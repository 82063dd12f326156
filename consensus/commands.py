"""Typed commands of the metadata state machine, with explicit JSON serialization.

A command is a frozen dataclass. It travels through the Raft log as a JSON document tagged with
its type name, never as a pickled object, so a member only ever decodes the fields declared here.
Wall-clock times are stamped by the proposer (`at_ms`) so that applying a command is a pure
function of the state and the command.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RegisterNode:
    node_id: str
    address: str
    at_ms: int


@dataclass(frozen=True)
class CreateTenant:
    tenant_id: str
    at_ms: int


@dataclass(frozen=True)
class CreateDataset:
    uuid: str
    tenant_id: str
    name: str
    description: str
    dimensions: int
    metric_type: str
    index_type: str
    metadata: dict[str, str]
    placement: tuple[str, ...]
    at_ms: int


@dataclass(frozen=True)
class UpdateDataset:
    tenant_id: str
    name: str
    description: str | None
    metadata: dict[str, str] | None
    at_ms: int


@dataclass(frozen=True)
class DeleteDataset:
    tenant_id: str
    name: str
    at_ms: int


@dataclass(frozen=True)
class PlaceShard:
    """Moves one shard to another node. Bumps the dataset's placement epoch (fencing)."""

    dataset_uuid: str
    shard: int
    node_id: str
    at_ms: int


@dataclass(frozen=True)
class DecideTxn:
    """Records a 2PC decision. The first decision for a txn_id wins; later ones get it back.

    participants are "dataset_uuid/shard" strings. A COMMIT carrying an idempotency_key that
    already names another committed txn is recorded as ABORT and answered with that txn's
    outcome, so a retried batch applies nothing twice.
    """

    txn_id: str
    decision: str
    participants: tuple[str, ...]
    idempotency_key: str
    outcome_json: str
    at_ms: int


@dataclass(frozen=True)
class AckTxns:
    """Participants confirm they applied their txns' decisions; fully acked txns are forgotten."""

    acks: tuple[tuple[str, str], ...]
    at_ms: int


@dataclass(frozen=True)
class Barrier:
    """Changes nothing. Committing it proves the leader is current, for linearizable reads."""

    at_ms: int


# ---- tenants and API keys (the admin API; applied by consensus/tenancy.py) ---------------------

@dataclass(frozen=True)
class ProvisionTenant:
    """Creates a tenant with a display name, quotas and a status. Refused if it exists (the
    older CreateTenant, and a tenant's first dataset, create one with no quotas)."""

    tenant_id: str
    name: str
    quotas: dict[str, float]
    status: str
    at_ms: int


@dataclass(frozen=True)
class SetTenantQuotas:
    """Merges `quotas` into the tenant's; a null value removes that limit (unlimited)."""

    tenant_id: str
    quotas: dict[str, float | None]
    at_ms: int


@dataclass(frozen=True)
class SetTenantStatus:
    tenant_id: str
    status: str
    at_ms: int


@dataclass(frozen=True)
class DeleteTenant:
    """Removes a tenant that has no datasets left, and revokes its API keys."""

    tenant_id: str
    at_ms: int


@dataclass(frozen=True)
class CreateApiKey:
    """Stores an API key by its sha256 only. role: admin | tenant; access: read_only |
    read_write; datasets: an allow-list within the tenant (empty: every dataset)."""

    key_id: str
    key_hash: str
    tenant_id: str
    role: str
    access: str
    datasets: tuple[str, ...]
    description: str
    at_ms: int


@dataclass(frozen=True)
class RevokeApiKey:
    key_id: str
    at_ms: int


COMMAND_TYPES: dict[str, type] = {cls.__name__: cls for cls in (
    RegisterNode, CreateTenant, CreateDataset, UpdateDataset, DeleteDataset, PlaceShard,
    DecideTxn, AckTxns, Barrier, ProvisionTenant, SetTenantQuotas, SetTenantStatus,
    DeleteTenant, CreateApiKey, RevokeApiKey)}


class CommandDecodeError(ValueError):
    pass


def encode(command: Any) -> str:
    name = type(command).__name__
    if name not in COMMAND_TYPES:
        raise TypeError(f"not a command: {name}")
    fields = dataclasses.asdict(command)
    return json.dumps({"type": name, "fields": fields}, sort_keys=True, separators=(",", ":"))


def decode(text: str) -> Any:
    """Parses a command document; raises CommandDecodeError for anything not declared above."""
    try:
        doc = json.loads(text)
        cls = COMMAND_TYPES[doc["type"]]
        raw = doc["fields"]
        expected = {f.name for f in dataclasses.fields(cls)}
        if set(raw) != expected:
            raise CommandDecodeError(f"{cls.__name__} fields {sorted(raw)} != {sorted(expected)}")
        for name in ("placement", "participants", "datasets"):
            if name in raw:
                raw = {**raw, name: tuple(raw[name])}
        if "acks" in raw:
            raw = {**raw, "acks": tuple(tuple(a) for a in raw["acks"])}
        return cls(**raw)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CommandDecodeError):
            raise
        raise CommandDecodeError(f"bad command document: {exc}") from exc
