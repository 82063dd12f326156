"""The records of the metadata state: frozen dataclasses, and MetaState that holds them.

Kept apart from the transition functions (state.py, tenancy.py, replication.py), which all build
on these records, so that none of those modules imports another's internals in a cycle.
"""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

DEFAULT_TENANT = "default"


class Table(dict):
    """A section of MetaState (datasets, tenants, nodes, ...) made from another by `put` or
    `drop`. It remembers which table it was made from (weakly, so no history is kept alive) and
    the keys it changed, so a revision's changes are found in O(changed records)
    (`changed_keys`, used by watch.catalog_changes and the name index) instead of by a scan of
    the section. Otherwise a plain dict: equal to one with the same items, and every reader and
    `to_doc` treat it as one."""

    __slots__ = ("_base", "changed", "__weakref__")

    def __reduce__(self):
        # Pickled or copied, it is a plain dict (a weak reference cannot be pickled).
        return dict, (dict(self),)

    def made_from(self) -> Mapping | None:
        base = self._base
        return base() if isinstance(base, weakref.ref) else base


def _derived(table: Mapping, changed: tuple) -> Table:
    new = Table(table)
    # A plain dict (fresh from a snapshot) cannot be referred to weakly; it is held until the
    # next write of the section replaces this table.
    new._base = weakref.ref(table) if isinstance(table, Table) else table
    new.changed = changed
    return new


def put(table: Mapping, key: Any, value: Any) -> Table:
    """`{**table, key: value}` that remembers the change (a new key goes last)."""
    new = _derived(table, (key,))
    new[key] = value
    return new


def drop(table: Mapping, keys: Iterable) -> Table:
    """`table` without `keys`, remembering the change."""
    keys = tuple(keys)
    new = _derived(table, keys)
    for key in keys:
        new.pop(key, None)
    return new


def changed_keys(before: Mapping, after: Mapping, steps_max: int = 8) -> list | None:
    """The keys `after` changed relative to `before`, in order, when it was made from it by
    `put` / `drop` (through at most `steps_max` tables); None when that is unknown (the caller
    compares the two in full)."""
    if after is before:
        return []
    keys: dict = {}
    table: Any = after
    for _ in range(steps_max):
        if not isinstance(table, Table):
            return None
        keys.update(dict.fromkeys(table.changed))
        table = table.made_from()
        if table is before:
            return list(keys)
    return None


def _setstate_with_defaults(self, pickled: dict) -> None:
    """Unpickling (pysyncobj's full dump) a record written before a field existed fills that
    field with its default, so an upgraded member loads its old snapshot."""
    for f in dataclasses.fields(self):
        if f.name not in pickled:
            if f.default is not dataclasses.MISSING:
                pickled[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                pickled[f.name] = f.default_factory()
    self.__dict__.update(pickled)


@dataclass(frozen=True)
class NodeRecord:
    node_id: str
    address: str
    registered_at_ms: int
    # active | draining (its copies are being moved off) | drained (it holds none)
    state: str = "active"
    # Failure domain from `tributary node --zone` (consensus/rebalance.py spreads copies over
    # zones); empty when the node carries no label.
    zone: str = ""

    __setstate__ = _setstate_with_defaults


@dataclass(frozen=True)
class TenantRecord:
    tenant_id: str
    created_at_ms: int
    # Set through the admin API (consensus/tenancy.py). A tenant created implicitly by its first
    # dataset is active with no quotas (unlimited).
    name: str = ""
    status: str = "active"
    quotas: dict[str, float] = field(default_factory=dict)
    updated_at_ms: int = 0

    __setstate__ = _setstate_with_defaults


@dataclass(frozen=True)
class ApiKeyRecord:
    """An API key, stored only as the sha256 of the whole key (keys are 256-bit random)."""

    key_id: str
    key_hash: str
    tenant_id: str
    role: str
    access: str
    datasets: tuple[str, ...]
    description: str
    created_at_ms: int


@dataclass(frozen=True)
class DatasetRecord:
    uuid: str
    tenant_id: str
    name: str
    description: str
    dimensions: int
    metric_type: str
    index_type: str
    metadata: dict[str, str]
    # placement[shard] is the shard's primary copy.
    placement: tuple[str, ...]
    epoch: int
    created_at_ms: int
    updated_at_ms: int
    # Replication (consensus/replication.py), per shard: every copy's node (sorted; the primary
    # among them), the in-sync copies (the primary always among them) and the primary term,
    # which only grows. Empty tuples are a dataset from before replication: one copy, the
    # primary, in term 1.
    replication_factor: int = 1
    copies: tuple[tuple[str, ...], ...] = ()
    in_sync: tuple[tuple[str, ...], ...] = ()
    terms: tuple[int, ...] = ()
    # The epoch at which the last shard split (consensus/reshard.py FinishReshard) switched
    # the shard count; 0: never split. An op accepted under an older epoch belongs to the
    # parent shard's history, which its child mirrors (node/split.py).
    split_epoch: int = 0

    __setstate__ = _setstate_with_defaults

    @property
    def shard_count(self) -> int:
        return len(self.placement)

    def primary_of(self, shard: int) -> str:
        return self.placement[shard]

    def copies_of(self, shard: int) -> tuple[str, ...]:
        return self.copies[shard] if self.copies else (self.placement[shard],)

    def in_sync_of(self, shard: int) -> tuple[str, ...]:
        return self.in_sync[shard] if self.in_sync else (self.placement[shard],)

    def term_of(self, shard: int) -> int:
        return self.terms[shard] if self.terms else 1

    def shards_on(self, node_id: str) -> list[int]:
        """The shards of which `node_id` holds a copy."""
        return [s for s in range(self.shard_count) if node_id in self.copies_of(s)]


@dataclass(frozen=True)
class MoveRecord:
    """A shard copy on its way from `source` to `target`: the target is a copy (outside the
    in-sync set until it has caught up) from the start; the source leaves when the target is in
    sync and, if the source was primary, has taken that role over."""

    move_id: str
    dataset_uuid: str
    shard: int
    source: str
    target: str
    created_at_ms: int
    reason: str = ""


TXN_COMMIT = "commit"
TXN_ABORT = "abort"


@dataclass(frozen=True)
class TxnRecord:
    txn_id: str
    decision: str
    participants: tuple[str, ...]
    acked: tuple[str, ...]
    idempotency_key: str
    outcome_json: str
    decided_at_ms: int


@dataclass(frozen=True)
class IdempotencyRecord:
    key: str
    txn_id: str
    outcome_json: str
    at_ms: int


@dataclass(frozen=True)
class MetaState:
    version: int = 0
    tenants: dict[str, TenantRecord] = field(default_factory=dict)
    # Keyed by dataset uuid. Names are unique per tenant (see dataset_by_name).
    datasets: dict[str, DatasetRecord] = field(default_factory=dict)
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    # 2PC decisions not yet confirmed by every participant.
    txns: dict[str, TxnRecord] = field(default_factory=dict)
    # Committed batches by idempotency key, kept for idempotency_ttl_ms; the dataset deletes
    # that named a request id (keys under state.DELETE_RECORD_PREFIX; outcome_json holds the
    # deleted dataset's uuid), kept for dataset_delete_record_ttl_ms; and the operators'
    # named requests (commands.Requested; keys under state.REQUEST_RECORD_PREFIX; outcome_json
    # holds the first answer), kept for request_record_ttl_ms, at most request_records_max.
    idempotency: dict[str, IdempotencyRecord] = field(default_factory=dict)
    # Decisions every participant confirmed: txn_id -> [decision, at_ms], kept for
    # txn_tombstone_ttl_ms so a coordinator that arrives late still meets the first decision.
    txn_tombstones: dict[str, tuple[str, int]] = field(default_factory=dict)
    # API keys by key_id (consensus/tenancy.py).
    api_keys: dict[str, ApiKeyRecord] = field(default_factory=dict)
    # Shard moves in progress (consensus/replication.py), by move id.
    moves: dict[str, "MoveRecord"] = field(default_factory=dict)
    # Commit fences by fence id, and dataset versions by "dataset uuid/tag"
    # (consensus/versions.py: FenceRecord, VersionRecord).
    fences: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    # Shard splits in progress by dataset uuid (consensus/reshard.py ReshardRecord).
    reshards: dict[str, Any] = field(default_factory=dict)
    # Primary hand-overs asked for by primary balancing, by transfer id
    # (consensus/rebalance.py TransferRecord).
    transfers: dict[str, Any] = field(default_factory=dict)
    # The most nodes registered at once (RegisterNode raises it, nothing lowers it): a router's
    # --min-nodes start-up gate is passed for good once it reaches the floor, so a drain or a
    # removal (a cluster scaled in on purpose) does not close it again.
    nodes_peak: int = 0

    __setstate__ = _setstate_with_defaults

    def move_of(self, dataset_uuid: str, shard: int) -> "MoveRecord | None":
        return next((m for m in self.moves.values()
                     if m.dataset_uuid == dataset_uuid and m.shard == shard), None)

    def dataset_by_name(self, tenant_id: str, name: str) -> DatasetRecord | None:
        """O(1): through an index (tenant, name) -> uuid that `bump` carries from state to state
        (built once, on first use, for a state that has none)."""
        uuid = _name_index(self).get((tenant_id, name))
        return None if uuid is None else self.datasets.get(uuid)

    def datasets_of(self, tenant_id: str) -> list[DatasetRecord]:
        return sorted((d for d in self.datasets.values() if d.tenant_id == tenant_id),
                      key=lambda d: d.name)


def error(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}}


def bump(state: MetaState, **changes: Any) -> MetaState:
    """The state with `changes` and the next version (the catalog revision watchers see)."""
    return _carry_index(state, dataclasses.replace(state, version=state.version + 1, **changes))


def without_bump(state: MetaState, **changes: Any) -> MetaState:
    """The state with `changes` at the same version: for 2PC bookkeeping (txns, tombstones,
    idempotency records), which lives in Raft but is no catalog change, so it wakes no watcher."""
    return _carry_index(state, dataclasses.replace(state, **changes))


# The name index is derived data, not a field: it never reaches to_doc, equality or a snapshot.
_INDEX_ATTR = "_dataset_name_index"


def _name_index(state: MetaState) -> dict[tuple[str, str], str]:
    index = state.__dict__.get(_INDEX_ATTR)
    if index is None:
        index = {(r.tenant_id, r.name): uuid for uuid, r in state.datasets.items()}
        object.__setattr__(state, _INDEX_ATTR, index)
    return index


def _same_keys(old: dict, new: dict) -> bool:
    """True when `new` has exactly `old`'s keys; O(1) for the common `{**old, key: value}` of
    an existing key (same length, last key unchanged or already present)."""
    if len(new) != len(old):
        return False
    return new.keys() == old.keys()


def _carry_index(old: MetaState, new: MetaState) -> MetaState:
    """Gives `new` the name index of `old`, updated for datasets added or removed. A dataset's
    tenant and name never change once created, so same uuids mean the same index."""
    index = old.__dict__.get(_INDEX_ATTR)
    if index is None:
        return new
    delta = changed_keys(old.datasets, new.datasets)
    if delta is not None:
        added = [u for u in delta if u in new.datasets and u not in old.datasets]
        removed = [u for u in delta if u in old.datasets and u not in new.datasets]
        if added or removed:
            index = dict(index)
            for uuid in removed:
                record = old.datasets[uuid]
                if index.get((record.tenant_id, record.name)) == uuid:
                    del index[(record.tenant_id, record.name)]
            for uuid in added:
                record = new.datasets[uuid]
                index[(record.tenant_id, record.name)] = uuid
    elif new.datasets is not old.datasets and not _same_keys(old.datasets, new.datasets):
        last = next(reversed(new.datasets), None)
        if len(new.datasets) == len(old.datasets) + 1 and last not in old.datasets:
            # A create: `{**old, uuid: record}` puts the new uuid last (dicts keep order).
            added, removed = {last}, set()
        else:
            added = new.datasets.keys() - old.datasets.keys()
            removed = old.datasets.keys() - new.datasets.keys()
        index = dict(index)
        for uuid in removed:
            record = old.datasets[uuid]
            if index.get((record.tenant_id, record.name)) == uuid:
                del index[(record.tenant_id, record.name)]
        for uuid in added:
            record = new.datasets[uuid]
            index[(record.tenant_id, record.name)] = uuid
    object.__setattr__(new, _INDEX_ATTR, index)
    return new
