"""The metadata state and its pure transition function.

`apply(state, command) -> (state, result)` is the whole state machine. It performs no I/O and reads
no clock, so it is tested directly, and every member that applies the same log reaches the same
state. A command that is refused (unknown dataset, duplicate name) leaves the state unchanged and
returns {"error": {"type", "message"}} with the type of a tributary.errors class.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from consensus import commands as c, rebalance, replication, reshard, tenancy, versions
from consensus.records import (  # noqa: F401 - the records are part of this module's interface
    DEFAULT_TENANT, TXN_ABORT, TXN_COMMIT, ApiKeyRecord, DatasetRecord, IdempotencyRecord,
    MetaState, MoveRecord, NodeRecord, TenantRecord, TxnRecord, bump as _bump,
    error as _error, without_bump)
from consensus.records import drop, put
from tributary import limits


def apply(state: MetaState, command: Any) -> tuple[MetaState, dict[str, Any]]:
    """Applies one command. Never raises for a refused command; returns the error as a result."""
    if isinstance(command, c.Barrier):
        return state, {"version": state.version}
    if isinstance(command, c.Requested):
        return _requested(state, command)

    # Tenants, quotas, statuses and API keys live in their own module.
    if isinstance(command, tenancy.COMMANDS):
        return tenancy.apply(state, command)
    refused = tenancy.refuse_by_status(state, command)
    if refused is not None:
        return state, refused

    if isinstance(command, c.RegisterNode):
        old = state.nodes.get(command.node_id)
        registered_at = old.registered_at_ms if old else command.at_ms
        nodes = put(state.nodes, command.node_id, NodeRecord(
            command.node_id, command.address, registered_at, old.state if old else "active",
            command.zone))
        return _bump(state, nodes=nodes, nodes_peak=max(state.nodes_peak, len(nodes))), \
            {"node_id": command.node_id}

    if isinstance(command, c.CreateTenant):
        if command.tenant_id in state.tenants:
            return state, _error("AlreadyExists", f"tenant '{command.tenant_id}' already exists")
        tenants = put(state.tenants, command.tenant_id,
                      TenantRecord(command.tenant_id, command.at_ms))
        return _bump(state, tenants=tenants), {"tenant_id": command.tenant_id}

    if isinstance(command, c.CreateDataset):
        existing = state.dataset_by_name(command.tenant_id, command.name)
        if existing is not None and existing.uuid == command.uuid:
            # A proposer's retry of a create that did commit: answer as the first time did.
            return state, {"uuid": existing.uuid}
        if existing is not None:
            return state, _error("AlreadyExists",
                                 f"dataset '{command.name}' already exists")
        if command.uuid in state.datasets:
            return state, _error("AlreadyExists", f"dataset uuid {command.uuid} already used")
        unknown = sorted(set(command.placement) - set(state.nodes))
        if not command.placement or unknown:
            return state, _error("InvalidArgument", f"placement names unknown nodes {unknown}")
        bad_copies = replication.check_copies(tuple(command.placement), command.copies,
                                              command.replication_factor, state.nodes)
        if bad_copies:
            return state, _error("InvalidArgument", bad_copies)
        tenants = state.tenants
        if command.tenant_id not in tenants:
            # Tenants are created implicitly by their first dataset until the admin API lands.
            tenants = put(tenants, command.tenant_id,
                          TenantRecord(command.tenant_id, command.at_ms))
        record = DatasetRecord(
            uuid=command.uuid, tenant_id=command.tenant_id, name=command.name,
            description=command.description, dimensions=command.dimensions,
            metric_type=command.metric_type, index_type=command.index_type,
            metadata=dict(command.metadata), placement=tuple(command.placement), epoch=1,
            created_at_ms=command.at_ms, updated_at_ms=command.at_ms,
            replication_factor=command.replication_factor)
        record = replication.normalized(record, command.copies)
        datasets = put(state.datasets, record.uuid, record)
        return _bump(state, tenants=tenants, datasets=datasets), {"uuid": record.uuid}

    if isinstance(command, c.UpdateDataset):
        record = state.dataset_by_name(command.tenant_id, command.name)
        if record is None:
            return state, _error("NotFound", f"dataset '{command.name}' not found")
        record = dataclasses.replace(
            record,
            description=record.description if command.description is None
            else command.description,
            metadata=record.metadata if command.metadata is None else dict(command.metadata),
            updated_at_ms=command.at_ms)
        return _bump(state, datasets=put(state.datasets, record.uuid, record)), \
            {"uuid": record.uuid}

    if isinstance(command, c.DeleteDataset):
        return _delete_dataset(state, command)

    if isinstance(command, c.PlaceShard):
        record = state.datasets.get(command.dataset_uuid)
        if record is None:
            return state, _error("NotFound", f"dataset uuid {command.dataset_uuid} not found")
        if not 0 <= command.shard < record.shard_count:
            return state, _error("InvalidArgument", f"shard {command.shard} out of range")
        if command.node_id not in state.nodes:
            return state, _error("InvalidArgument", f"unknown node '{command.node_id}'")
        placement = list(record.placement)
        placement[command.shard] = command.node_id
        record = dataclasses.replace(record, placement=tuple(placement), epoch=record.epoch + 1,
                                     updated_at_ms=command.at_ms)
        return _bump(state, datasets=put(state.datasets, record.uuid, record)), \
            {"epoch": record.epoch}

    if isinstance(command, replication.COMMANDS):
        return replication.apply(state, command)
    if isinstance(command, replication.MOVE_COMMANDS):
        return replication.apply_moves(state, command)

    if isinstance(command, versions.COMMANDS):
        return versions.apply(state, command)
    if isinstance(command, reshard.COMMANDS):
        return reshard.apply(state, command)
    if isinstance(command, rebalance.TRANSFER_COMMANDS):
        return rebalance.apply_transfer(state, command)

    if isinstance(command, c.DecideTxn):
        fenced = versions.fence_refusal(state, command)
        if fenced is not None:
            return state, fenced
        return _decide_txn(state, command)

    if isinstance(command, c.AckTxns):
        txns = dict(state.txns)
        tombstones = dict(state.txn_tombstones)
        for txn_id, participant in command.acks:
            record = txns.get(txn_id)
            if record is None or participant in record.acked:
                continue
            record = dataclasses.replace(record, acked=tuple(sorted({*record.acked,
                                                                     participant})))
            if set(record.acked) >= set(record.participants):
                del txns[txn_id]
                tombstones[txn_id] = (record.decision, command.at_ms)
            else:
                txns[txn_id] = record
        if txns == state.txns:
            return state, {}
        # 2PC bookkeeping: in Raft, but no catalog revision (it would wake every watcher).
        return without_bump(state, txns=txns, txn_tombstones=tombstones), {}

    return state, _error("InvalidArgument", f"unknown command {type(command).__name__}")


def _delete_dataset(state: MetaState, command: c.DeleteDataset
                    ) -> tuple[MetaState, dict[str, Any]]:
    record = state.dataset_by_name(command.tenant_id, command.name)
    if record is not None and command.uuid and record.uuid != command.uuid:
        record = None       # a later dataset of that name: not the one this command means
    # A record of each delete that named its request, kept dataset_delete_record_ttl_ms
    # (bookkeeping beside the 2PC idempotency records, outside the watched catalog).
    key = f"{DELETE_RECORD_PREFIX}{command.request_id}" if command.request_id else ""
    if record is None:
        earlier = state.idempotency.get(key) if key else None
        if earlier is not None and earlier.outcome_json == command.uuid:
            # The proposer's retry of a delete that did commit: answer as the first time did.
            return state, {"uuid": command.uuid, "placement": [], "repeated": True}
        return state, _error("NotFound", f"dataset '{command.name}' not found")
    datasets = drop(state.datasets, (record.uuid,))
    moves = {k: v for k, v in state.moves.items() if v.dataset_uuid != record.uuid}
    gone: dict[str, Any] = {}
    versions.forget_dataset(gone, state, record.uuid)
    if record.uuid in state.reshards:
        gone["reshards"] = {k: v for k, v in state.reshards.items() if k != record.uuid}
    if key:
        idempotency = {k: v for k, v in state.idempotency.items()
                       if not k.startswith(DELETE_RECORD_PREFIX) or
                       command.at_ms - v.at_ms < limits.dataset_delete_record_ttl_ms}
        idempotency[key] = IdempotencyRecord(key, "", record.uuid, command.at_ms)
        gone["idempotency"] = idempotency
    return _bump(state, datasets=datasets, moves=moves, **gone), {
        "uuid": record.uuid, "placement": list(record.placement)}


def _requested(state: MetaState, command: c.Requested) -> tuple[MetaState, dict[str, Any]]:
    """Applies a named request once: a repeat of one that changed the state gets the first
    answer (marked "repeated") from its record, and changes nothing. A refusal is not recorded:
    it changed nothing, so a repeat is judged afresh."""
    key = f"{REQUEST_RECORD_PREFIX}{command.request_id}"
    earlier = state.idempotency.get(key)
    if earlier is not None:
        return state, {**json.loads(earlier.outcome_json), "repeated": True}
    after, result = apply(state, command.command)
    if after is state or "error" in result:
        return after, result
    mine = sorted((v.at_ms, k) for k, v in after.idempotency.items()
                  if k.startswith(REQUEST_RECORD_PREFIX))
    stale = {k for at_ms, k in mine if command.at_ms - at_ms >= limits.request_record_ttl_ms}
    kept = [k for _, k in mine if k not in stale]
    stale.update(kept[:max(0, len(kept) - limits.request_records_max + 1)])
    records = {k: v for k, v in after.idempotency.items() if k not in stale}
    records[key] = IdempotencyRecord(key, "", json.dumps(result, sort_keys=True), command.at_ms)
    # The record is bookkeeping: the command's own change set the revision, this adds none.
    return without_bump(after, idempotency=records), result


# The prefix of the records of named requests (commands.Requested) in MetaState.idempotency.
REQUEST_RECORD_PREFIX = "/request/"

# The prefix of the bookkeeping records of dataset deletes in MetaState.idempotency. The 2PC
# records' keys start with a tenant id, which is never empty and never holds '/'.
DELETE_RECORD_PREFIX = "/delete-dataset/"


def _decide_txn(state: MetaState, command: c.DecideTxn) -> tuple[MetaState, dict[str, Any]]:
    existing = state.txns.get(command.txn_id)
    if existing is not None:
        return state, {"decision": existing.decision, "outcome_json": existing.outcome_json,
                       "first": False}
    if command.txn_id in state.txn_tombstones:
        return state, {"decision": state.txn_tombstones[command.txn_id][0], "outcome_json": "",
                       "first": False}
    if command.decision not in (TXN_COMMIT, TXN_ABORT):
        return state, _error("InvalidArgument", f"unknown decision '{command.decision}'")
    # Expire old idempotency records here, where the clock is the proposer's (pure apply).
    idempotency = {k: v for k, v in state.idempotency.items()
                   if command.at_ms - v.at_ms < limits.idempotency_ttl_ms}
    decision, outcome, duplicate_of = command.decision, command.outcome_json, ""
    key = command.idempotency_key
    if key and key in idempotency and decision == TXN_COMMIT:
        decision, duplicate_of = TXN_ABORT, idempotency[key].txn_id
        outcome = idempotency[key].outcome_json
    record = TxnRecord(command.txn_id, decision, tuple(command.participants), (),
                       key, outcome, command.at_ms)
    if decision == TXN_COMMIT and key:
        idempotency[key] = IdempotencyRecord(key, command.txn_id, outcome, command.at_ms)
    tombstones = {k: v for k, v in state.txn_tombstones.items()
                  if command.at_ms - v[1] < limits.txn_tombstone_ttl_ms}
    state = without_bump(state, txns={**state.txns, command.txn_id: record},
                         idempotency=idempotency, txn_tombstones=tombstones)
    return state, {"decision": decision, "outcome_json": outcome, "first": True,
                   "duplicate_of": duplicate_of}


def to_doc(state: MetaState) -> dict[str, Any]:
    return {
        "version": state.version,
        "tenants": {k: dataclasses.asdict(v) for k, v in state.tenants.items()},
        "datasets": {k: {**dataclasses.asdict(v), "placement": list(v.placement),
                         "copies": [list(c) for c in v.copies],
                         "in_sync": [list(c) for c in v.in_sync], "terms": list(v.terms)}
                     for k, v in state.datasets.items()},
        "nodes": {k: dataclasses.asdict(v) for k, v in state.nodes.items()},
        "nodes_peak": state.nodes_peak,
        "txns": {k: {**dataclasses.asdict(v), "participants": list(v.participants),
                     "acked": list(v.acked)} for k, v in state.txns.items()},
        "idempotency": {k: dataclasses.asdict(v) for k, v in state.idempotency.items()},
        "txn_tombstones": {k: list(v) for k, v in state.txn_tombstones.items()},
        "api_keys": {k: {**dataclasses.asdict(v), "datasets": list(v.datasets)}
                     for k, v in getattr(state, "api_keys", {}).items()},
        "moves": {k: dataclasses.asdict(v) for k, v in state.moves.items()},
        **versions.to_doc(state),
        **reshard.to_doc(state),
        **rebalance.to_doc(state),
    }


def from_doc(doc: dict[str, Any]) -> MetaState:
    return MetaState(
        version=int(doc["version"]),
        tenants={k: TenantRecord(**v) for k, v in doc["tenants"].items()},
        datasets={k: DatasetRecord(**{
            **v, "placement": tuple(v["placement"]),
            "copies": tuple(tuple(c) for c in v.get("copies", ())),
            "in_sync": tuple(tuple(c) for c in v.get("in_sync", ())),
            "terms": tuple(int(t) for t in v.get("terms", ()))})
                  for k, v in doc["datasets"].items()},
        nodes={k: NodeRecord(**v) for k, v in doc["nodes"].items()},
        # A document from before the peak was kept: the nodes it holds are the best bound.
        nodes_peak=int(doc.get("nodes_peak", len(doc["nodes"]))),
        txns={k: TxnRecord(**{**v, "participants": tuple(v["participants"]),
                              "acked": tuple(v["acked"])})
              for k, v in doc.get("txns", {}).items()},
        idempotency={k: IdempotencyRecord(**v) for k, v in doc.get("idempotency", {}).items()},
        txn_tombstones={k: (v[0], int(v[1])) for k, v in doc.get("txn_tombstones", {}).items()},
        api_keys={k: ApiKeyRecord(**{**v, "datasets": tuple(v["datasets"])})
                  for k, v in doc.get("api_keys", {}).items()},
        moves={k: MoveRecord(**v) for k, v in doc.get("moves", {}).items()},
        **versions.from_doc(doc),
        **reshard.from_doc(doc),
        **rebalance.from_doc(doc),
    )
