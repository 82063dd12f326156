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

from tributary import limits


@dataclass(frozen=True)
class RegisterNode:
    node_id: str
    address: str
    at_ms: int
    # The node's failure domain (`tributary node --zone`); the move planners spread a shard's
    # copies over zones. Empty: no label.
    zone: str = ""


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
    # Every copy's node per shard (placement[shard], the primary, among them); empty: one copy.
    replication_factor: int = 1
    copies: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class UpdateDataset:
    tenant_id: str
    name: str
    description: str | None
    metadata: dict[str, str] | None
    at_ms: int


@dataclass(frozen=True)
class DeleteDataset:
    """Deletes the dataset `name` of a tenant. `uuid` names the dataset the proposer resolved:
    a later dataset of the same name is never deleted by this command (one committed late, or
    proposed again by a retry). `request_id` is the proposer's, the same on every retry: a
    retry after the first attempt did commit (its answer lost) is answered as that attempt
    was, not NotFound."""
    tenant_id: str
    name: str
    at_ms: int
    uuid: str = ""
    request_id: str = ""


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


# ---- replication (applied by consensus/replication.py) -----------------------------------------

@dataclass(frozen=True)
class SetInSync:
    """Takes a copy out of a shard's in-sync set (in_sync=False: it missed a write; proposed by
    the primary before it acknowledges that write) or puts it back (in_sync=True: it caught up).
    `term` is the proposer's view of the shard's primary term: a proposer from an older term is
    refused, so a deposed primary cannot shrink the set. The primary itself never leaves."""

    dataset_uuid: str
    shard: int
    node_id: str
    in_sync: bool
    term: int
    at_ms: int


@dataclass(frozen=True)
class PromotePrimary:
    """Makes an in-sync copy the shard's primary in term `term + 1`; refused unless `term` is the
    current term (so two failover attempts cannot both win). The old primary leaves the in-sync
    set: it may hold writes nobody acknowledged, so it recovers like a copy that was away."""

    dataset_uuid: str
    shard: int
    node_id: str
    term: int
    at_ms: int


@dataclass(frozen=True)
class ReplaceCopy:
    """Gives a shard a new copy on `new_node` in place of `old_node`, a copy outside the in-sync
    set (a node away for too long). The new copy starts outside the in-sync set and joins it
    once it has caught up."""

    dataset_uuid: str
    shard: int
    old_node: str
    new_node: str
    at_ms: int


@dataclass(frozen=True)
class SetNodeState:
    """active | draining (the leader moves its copies off) | drained (only once it holds no
    copy)."""

    node_id: str
    state: str
    at_ms: int


@dataclass(frozen=True)
class RemoveNode:
    """Forgets a node. Refused while it holds copies, unless `force`: then its copies are
    dropped (another in-sync copy takes over a primary role), never the last copy of a shard."""

    node_id: str
    force: bool
    at_ms: int


@dataclass(frozen=True)
class StartMove:
    """Starts moving shard `shard`'s copy from `source` to `target`: the target becomes a copy
    at once (outside the in-sync set until it has caught up)."""

    move_id: str
    dataset_uuid: str
    shard: int
    source: str
    target: str
    reason: str
    at_ms: int


@dataclass(frozen=True)
class FinishMove:
    """Drops the source copy of a move whose target is in sync and not behind the primary
    role (the source, if it was primary, has handed that over first)."""

    move_id: str
    at_ms: int


@dataclass(frozen=True)
class CancelMove:
    """Drops the target copy of a move, leaving the shard as it was before the move; refused
    once the target has taken the primary role over (finish it instead)."""

    move_id: str
    at_ms: int


# ---- tenants and API keys (the admin API; applied by consensus/tenancy.py) ---------------------

@dataclass(frozen=True)
class ProvisionTenant:
    """Creates a tenant with a display name, quotas and a status. Refused if it exists (the
    older CreateTenant, and a tenant's first dataset, create one with no quotas), except when
    this very command created it (a retried Propose): that answers success."""

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


# ---- commit fences and dataset versions (applied by consensus/versions.py) ----------------------

@dataclass(frozen=True)
class FenceCommits:
    """Holds back 2PC COMMIT decisions of txns touching the dataset until `until_ms` (the
    proposer's clock) or until LiftFence, for a consistent cut (router/cut.py)."""

    dataset_uuid: str
    fence_id: str
    until_ms: int
    at_ms: int


@dataclass(frozen=True)
class LiftFence:
    fence_id: str
    at_ms: int


@dataclass(frozen=True)
class FenceSettled:
    """Changes nothing: answers whether the fence is still up and which txns decided COMMIT
    before it are not yet applied by every participant of its dataset (the cut waits for
    none). A command, not a catalog read, so the answer is linearizable whatever is cached."""

    fence_id: str
    at_ms: int


@dataclass(frozen=True)
class CreateVersion:
    """Records a cut under a tag. `cut_json` lists the shards (consensus/versions.py
    ShardVersion documents); keep_max and keep_ms are the retention (0: unbounded) the
    proposer applies, oldest versions dropped first."""

    dataset_uuid: str
    tag: str
    deeplake_tag: str
    cut_json: str
    keep_max: int
    keep_ms: int
    at_ms: int


@dataclass(frozen=True)
class DeleteVersion:
    dataset_uuid: str
    tag: str
    at_ms: int


# ---- shard splits (applied by consensus/reshard.py) ---------------------------------------------

@dataclass(frozen=True)
class StartReshard:
    """Starts doubling a dataset's shard count to `new_count` (shard i splits into i and
    i + N). Refused unless new_count is exactly twice the count, within shard_count_max, and
    no move or reshard of the dataset is in flight. Changes no routing."""

    dataset_uuid: str
    new_count: int
    at_ms: int


@dataclass(frozen=True)
class ReshardCopyReady:
    """Node `node_id` has built (ready=True) or dropped (False) the child of its copy of
    parent shard `shard`."""

    dataset_uuid: str
    shard: int
    node_id: str
    ready: bool
    at_ms: int


@dataclass(frozen=True)
class FinishReshard:
    """The switch: the shard count becomes new_count, fenced by a new epoch. Refused until every
    in-sync copy of every parent has its child built and no 2PC decision of the dataset waits
    for its participants."""

    dataset_uuid: str
    at_ms: int


@dataclass(frozen=True)
class CancelReshard:
    """Drops a reshard in progress; readers and writers never saw its children."""

    dataset_uuid: str
    at_ms: int


# ---- primary balance (applied by consensus/rebalance.py) ----------------------------------------

@dataclass(frozen=True)
class StartTransfer:
    """Asks shard `shard`'s primary `source` to hand the primary role over to its in-sync copy
    `target` (primary balance). The primary does it under its write lock, once the txns
    prepared on the shard are decided, as a move's source does (node/replication.py
    hand_over); no copy moves."""

    transfer_id: str
    dataset_uuid: str
    shard: int
    source: str
    target: str
    at_ms: int


@dataclass(frozen=True)
class EndTransfer:
    """Forgets a transfer: done (the target is primary) or no longer possible."""

    transfer_id: str
    at_ms: int


COMMAND_TYPES: dict[str, type] = {cls.__name__: cls for cls in (
    RegisterNode, CreateTenant, CreateDataset, UpdateDataset, DeleteDataset, PlaceShard,
    DecideTxn, AckTxns, Barrier, ProvisionTenant, SetTenantQuotas, SetTenantStatus,
    DeleteTenant, CreateApiKey, RevokeApiKey, SetInSync, PromotePrimary, ReplaceCopy,
    SetNodeState, RemoveNode, StartMove, FinishMove, CancelMove, FenceCommits, LiftFence,
    FenceSettled, CreateVersion, DeleteVersion, StartReshard, ReshardCopyReady, FinishReshard,
    CancelReshard, StartTransfer, EndTransfer)}


# ---- a proposer's named request ------------------------------------------------------------------

@dataclass(frozen=True)
class Requested:
    """`command`, named by its proposer with `request_id` (a fresh uuid per proposal, the same on
    every retry of it). A proposal whose answer was lost is proposed again (MetaClient), and its
    first attempt may have committed: the state machine answers a repeat from its record of the
    first (consensus/state.py `_requested`) instead of applying the command twice, so a
    CreateApiKey is not refused as a duplicate and a DeleteTenant does not answer 404 after
    both did what they were asked."""

    request_id: str
    at_ms: int
    command: Any


# The commands MetaClient names (wraps in Requested): the operator's, whose repeat would be
# refused or would change the answer, and which come at an operator's pace. Not the 2PC, heartbeat
# and replication traffic: those are repeat-safe by design and far too frequent to record.
# CreateDataset and DeleteDataset carry their own uuid and request id (state.py).
ANSWERED_ONCE: tuple[type, ...] = (
    CreateTenant, UpdateDataset, ProvisionTenant, SetTenantQuotas, SetTenantStatus,
    DeleteTenant, CreateApiKey, RevokeApiKey, SetNodeState, RemoveNode, StartMove, CancelMove,
    CreateVersion, DeleteVersion, StartReshard, CancelReshard, StartTransfer)


class CommandDecodeError(ValueError):
    pass


def encode(command: Any) -> str:
    return json.dumps(_document(command), sort_keys=True, separators=(",", ":"))


def _document(command: Any) -> dict[str, Any]:
    if isinstance(command, Requested):
        if isinstance(command.command, Requested):
            raise TypeError("a Requested command cannot hold another")
        return {"type": "Requested", "fields": {
            "request_id": command.request_id, "at_ms": command.at_ms,
            "command": _document(command.command)}}
    name = type(command).__name__
    if name not in COMMAND_TYPES:
        raise TypeError(f"not a command: {name}")
    return {"type": name, "fields": dataclasses.asdict(command)}


def decode(text: str) -> Any:
    """Parses a command document; raises CommandDecodeError for anything not declared above."""
    try:
        doc = json.loads(text)
        if isinstance(doc, dict) and doc.get("type") == "Requested":
            raw = doc["fields"]
            if set(raw) != {"request_id", "at_ms", "command"}:
                raise CommandDecodeError(f"Requested fields {sorted(raw)} != "
                                         "['at_ms', 'command', 'request_id']")
            inner = raw["command"]
            if not isinstance(inner, dict) or inner.get("type") == "Requested":
                raise CommandDecodeError("a Requested command holds one plain command")
            request_id, at_ms = raw["request_id"], raw["at_ms"]
            if not isinstance(request_id, str) or not request_id or \
                    len(request_id.encode("utf-8")) > limits.request_id_bytes_max or \
                    isinstance(at_ms, bool) or not isinstance(at_ms, int):
                raise CommandDecodeError(f"Requested needs a request_id of 1 to "
                                         f"{limits.request_id_bytes_max} bytes and an "
                                         "integer at_ms")
            return Requested(request_id, at_ms, _decode_plain(inner))
        return _decode_plain(doc)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CommandDecodeError):
            raise
        raise CommandDecodeError(f"bad command document: {exc}") from exc


def _decode_plain(doc: Any) -> Any:
    try:
        cls = COMMAND_TYPES[doc["type"]]
        raw = doc["fields"]
        fields = dataclasses.fields(cls)
        expected = {f.name for f in fields}
        # A field added later may be absent (a proposer from before it); it takes its default.
        optional = {f.name for f in fields if f.default is not dataclasses.MISSING}
        if not set(raw) <= expected or not expected - optional <= set(raw):
            raise CommandDecodeError(f"{cls.__name__} fields {sorted(raw)} != {sorted(expected)}")
        for name in ("placement", "participants", "datasets"):
            if name in raw:
                raw = {**raw, name: tuple(raw[name])}
        if "copies" in raw:
            raw = {**raw, "copies": tuple(tuple(c) for c in raw["copies"])}
        if "acks" in raw:
            raw = {**raw, "acks": tuple(tuple(a) for a in raw["acks"])}
        return cls(**raw)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CommandDecodeError):
            raise
        raise CommandDecodeError(f"bad command document: {exc}") from exc
