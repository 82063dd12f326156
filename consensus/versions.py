"""Commit fences and dataset versions: the metadata side of the consistent cut (router/cut.py).

A cut of a dataset must hold every multi-shard batch whole or not at all. The meta group makes
that possible with a fence: while a dataset is fenced, a 2PC COMMIT decision for a txn that
touches it is not recorded (the proposer gets `fenced_until_ms` back and retries); ABORT
decisions still are, since an aborted txn changes no store. Decisions recorded before the fence
are finished by their participants, who acknowledge them (AckTxns); once none touching the
dataset is left unacknowledged (`unsettled_commits`), every shard's store holds exactly the
committed txns, and a position read from each shard then is one consistent cut.

A fence expires by itself at `until_ms` (the proposer's clock), so a router that dies while its
fence is up blocks 2PC commits of that dataset for at most `cut_fence_max_ms`. Fence and expiry
are decided here, purely: `apply` reads no clock but the commands' `at_ms`.

A version is a cut recorded under a tag: per shard, the Deep Lake tag every in-sync copy put on
its store at the cut (node `CutShard`), the primary's commit id, op-log position and row count.
Retention by count and age runs when a version is created (the limits travel in the command so
that applying it stays pure).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any

from consensus import commands as c
from consensus.records import TXN_COMMIT, MetaState, bump, error

# A version tag: what a user may name a version (REST path-safe, Deep Lake tag-safe).
TAG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclass(frozen=True)
class FenceRecord:
    fence_id: str
    dataset_uuid: str
    until_ms: int


@dataclass(frozen=True)
class ShardVersion:
    """One shard's state in a version. `marked` are the copies (node, their own commit id)
    whose store carries the Deep Lake tag `deeplake_tag` on that state; any of them serves
    reads of the version, and so does a later copy made from their files."""

    shard: int
    primary: str
    commit_id: str
    seq: int
    term: int
    vector_count: int
    marked: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class VersionRecord:
    dataset_uuid: str
    tag: str
    deeplake_tag: str
    at_ms: int
    shards: tuple[ShardVersion, ...]

    @property
    def vector_count(self) -> int:
        return sum(s.vector_count for s in self.shards)


COMMANDS = (c.FenceCommits, c.LiftFence, c.FenceSettled, c.CreateVersion,
            c.DeleteVersion)


def version_key(dataset_uuid: str, tag: str) -> str:
    return f"{dataset_uuid}/{tag}"


def live_fences(state: MetaState, dataset_uuid: str, at_ms: int) -> list[FenceRecord]:
    return [f for f in state.fences.values()
            if f.dataset_uuid == dataset_uuid and f.until_ms > at_ms]


def fence_refusal(state: MetaState, command: c.DecideTxn) -> dict[str, Any] | None:
    """The answer to a COMMIT decision while a dataset it touches is fenced (nothing is
    recorded; the proposer retries), or None when the decision may be recorded. A txn already
    decided keeps its first decision whatever the fences, so a retry learns it."""
    if command.decision != TXN_COMMIT or command.txn_id in state.txns or \
            command.txn_id in state.txn_tombstones:
        return None
    datasets = {p.rsplit("/", 1)[0] for p in command.participants}
    until = [f.until_ms for d in sorted(datasets) for f in live_fences(state, d, command.at_ms)]
    if not until:
        return None
    return {"fenced_until_ms": max(until)}


def unsettled_commits(state: MetaState, dataset_uuid: str) -> list[str]:
    """Txns decided COMMIT that some participant of `dataset_uuid` has not yet acknowledged
    applying: while any is left, a shard's position may hold half of it."""
    prefix = f"{dataset_uuid}/"
    return sorted(t.txn_id for t in state.txns.values()
                  if t.decision == TXN_COMMIT and any(
                      p.startswith(prefix) and p not in t.acked for p in t.participants))


def versions_of(state: MetaState, dataset_uuid: str) -> list[VersionRecord]:
    """The dataset's versions, oldest first."""
    return sorted((v for v in state.versions.values() if v.dataset_uuid == dataset_uuid),
                  key=lambda v: (v.at_ms, v.tag))


def version_at(state: MetaState, dataset_uuid: str, at_ms: int) -> VersionRecord | None:
    """The newest version taken at or before `at_ms`, or None when there is none."""
    found = [v for v in versions_of(state, dataset_uuid) if v.at_ms <= at_ms]
    return found[-1] if found else None


def apply(state: MetaState, command: Any) -> tuple[MetaState, dict[str, Any]]:
    if isinstance(command, c.FenceCommits):
        if command.dataset_uuid not in state.datasets:
            return state, error("NotFound", f"dataset uuid {command.dataset_uuid} not found")
        if command.until_ms <= command.at_ms:
            return state, error("InvalidArgument", "a fence must end after it starts")
        # Expired fences are forgotten here, where the clock is the proposer's.
        fences = {k: v for k, v in state.fences.items() if v.until_ms > command.at_ms}
        fences[command.fence_id] = FenceRecord(command.fence_id, command.dataset_uuid,
                                               command.until_ms)
        return bump(state, fences=fences), {"fence_id": command.fence_id,
                                            "until_ms": command.until_ms}
    if isinstance(command, c.LiftFence):
        if command.fence_id not in state.fences:
            return state, {"lifted": False}
        fences = {k: v for k, v in state.fences.items() if k != command.fence_id}
        return bump(state, fences=fences), {"lifted": True}
    if isinstance(command, c.FenceSettled):
        fence = state.fences.get(command.fence_id)
        if fence is None or fence.until_ms <= command.at_ms:
            return state, {"fenced": False, "unsettled": []}
        return state, {"fenced": True, "until_ms": fence.until_ms,
                       "unsettled": unsettled_commits(state, fence.dataset_uuid)}
    if isinstance(command, c.CreateVersion):
        return _create_version(state, command)
    if isinstance(command, c.DeleteVersion):
        key = version_key(command.dataset_uuid, command.tag)
        if key not in state.versions:
            return state, error("NotFound", f"version '{command.tag}' not found")
        return bump(state, versions={k: v for k, v in state.versions.items() if k != key}), \
            {"deleted": command.tag}
    return state, error("InvalidArgument", f"unknown command {type(command).__name__}")


def _create_version(state: MetaState, command: c.CreateVersion):
    record = state.datasets.get(command.dataset_uuid)
    if record is None:
        return state, error("NotFound", f"dataset uuid {command.dataset_uuid} not found")
    if not TAG_PATTERN.match(command.tag):
        return state, error("InvalidArgument", "a version tag is 1-63 letters, digits, '.', "
                                               "'_' or '-', starting with a letter or digit")
    key = version_key(command.dataset_uuid, command.tag)
    if key in state.versions:
        return state, error("AlreadyExists", f"version '{command.tag}' already exists")
    try:
        shards = shards_from_json(command.cut_json)
    except (KeyError, TypeError, ValueError) as exc:
        return state, error("InvalidArgument", f"bad cut document: {exc}")
    if sorted(s.shard for s in shards) != list(range(record.shard_count)):
        return state, error("InvalidArgument", "a version needs every shard of the dataset "
                                               "exactly once")
    version = VersionRecord(command.dataset_uuid, command.tag, command.deeplake_tag,
                            command.at_ms, tuple(sorted(shards, key=lambda s: s.shard)))
    versions = {**state.versions, key: version}
    # Retention: by age, then by count, never the version just made.
    expired = [v for v in versions.values() if v.dataset_uuid == command.dataset_uuid and
               command.keep_ms > 0 and command.at_ms - v.at_ms > command.keep_ms and
               v.tag != command.tag]
    for old in expired:
        del versions[version_key(old.dataset_uuid, old.tag)]
    mine = sorted((v for v in versions.values() if v.dataset_uuid == command.dataset_uuid),
                  key=lambda v: (v.at_ms, v.tag))
    dropped = [v.tag for v in expired]
    if command.keep_max > 0:
        extra = [v for v in mine if v.tag != command.tag][:max(0, len(mine) - command.keep_max)]
        for old in extra:
            del versions[version_key(old.dataset_uuid, old.tag)]
            dropped.append(old.tag)
    return bump(state, versions=versions), {"tag": command.tag, "dropped": sorted(dropped),
                                            "vector_count": version.vector_count}


def forget_dataset(state_fields: dict[str, Any], state: MetaState, dataset_uuid: str) -> None:
    """Adds to `state_fields` the fences and versions without those of a deleted dataset."""
    state_fields["fences"] = {k: v for k, v in state.fences.items()
                              if v.dataset_uuid != dataset_uuid}
    state_fields["versions"] = {k: v for k, v in state.versions.items()
                                if v.dataset_uuid != dataset_uuid}


# ---- documents (snapshots and the cut document a CreateVersion carries) -----------------------

def shards_to_json(shards: list[ShardVersion]) -> str:
    return json.dumps([_shard_doc(s) for s in shards], sort_keys=True, separators=(",", ":"))


def shards_from_json(text: str) -> list[ShardVersion]:
    return [_shard_from_doc(d) for d in json.loads(text)]


def _shard_doc(shard: ShardVersion) -> dict[str, Any]:
    return {**dataclasses.asdict(shard), "marked": [list(m) for m in shard.marked]}


def _shard_from_doc(doc: dict[str, Any]) -> ShardVersion:
    fields = {f.name for f in dataclasses.fields(ShardVersion)}
    if set(doc) != fields:
        raise ValueError(f"shard fields {sorted(doc)} != {sorted(fields)}")
    return ShardVersion(shard=int(doc["shard"]), primary=str(doc["primary"]),
                        commit_id=str(doc["commit_id"]), seq=int(doc["seq"]),
                        term=int(doc["term"]), vector_count=int(doc["vector_count"]),
                        marked=tuple((str(n), str(v)) for n, v in doc["marked"]))


def to_doc(state: MetaState) -> dict[str, Any]:
    return {
        "fences": {k: dataclasses.asdict(v) for k, v in state.fences.items()},
        "versions": {k: {**dataclasses.asdict(v), "shards": [_shard_doc(s) for s in v.shards]}
                     for k, v in state.versions.items()},
    }


def from_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """The MetaState fields of this module from a snapshot document (absent: none)."""
    return {
        "fences": {k: FenceRecord(**v) for k, v in doc.get("fences", {}).items()},
        "versions": {k: VersionRecord(**{**v, "shards": tuple(_shard_from_doc(s)
                                                              for s in v["shards"])})
                     for k, v in doc.get("versions", {}).items()},
    }
