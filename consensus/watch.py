"""Catalog watches: revisions, changes and the history a member keeps to stream them.

The catalog is the part of MetaState that routers and nodes cache: tenants, datasets, nodes, API
keys and moves. Its revision is `MetaState.version`, which only catalog changes bump; 2PC
bookkeeping (txns, tombstones, idempotency records) is in the same Raft state but bumps nothing,
so a multi-shard batch wakes no watcher.

A change is `(section, key, document or None)`: the record's document as `state.to_doc` writes
it, or None when the key was removed. `catalog_changes(old, new)` computes them by identity (the
transition functions replace only the records they change), `apply_changes` replays them on a
client's copy. Both are pure; `WatchHistory` is the member's bounded, thread-safe log of them by
revision, like etcd's watchable store over its MVCC history.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Any

from consensus import state as meta_state
from consensus.records import MetaState, changed_keys

# versions: dataset versions (consensus/versions.py), which reads at a version resolve here.
# reshards: shard splits in progress (consensus/reshard.py), which nodes build children for;
# transfers: primary hand-overs the primaries carry out (consensus/rebalance.py).
CATALOG_SECTIONS = ("tenants", "datasets", "nodes", "api_keys", "moves", "versions",
                    "reshards", "transfers")
BOOKKEEPING_SECTIONS = ("txns", "idempotency", "txn_tombstones")

Change = tuple[str, str, Any]


def catalog_doc(state: MetaState) -> dict[str, Any]:
    """The state document without the 2PC bookkeeping (what a watch snapshot sends)."""
    doc = meta_state.to_doc(dataclasses.replace(state, txns={}, idempotency={},
                                                txn_tombstones={}))
    for section in BOOKKEEPING_SECTIONS:
        doc.pop(section, None)
    return doc


def catalog_from_doc(doc: dict[str, Any]) -> MetaState:
    return meta_state.from_doc(doc)


def _record_doc(section: str, key: str, record: Any) -> Any:
    return meta_state.to_doc(MetaState(**{section: {key: record}}))[section][key]


def _record_from_doc(section: str, key: str, doc: Any) -> Any:
    skeleton: dict[str, Any] = {"version": 0, "tenants": {}, "datasets": {}, "nodes": {}}
    skeleton[section] = {key: doc}
    return getattr(meta_state.from_doc(skeleton), section)[key]


def catalog_changes(old: MetaState, new: MetaState) -> list[Change]:
    """The catalog records that differ between two states, as changes. Sections the transition
    did not replace are skipped; a section made by `records.put` / `drop` names the keys it
    changed (O(changed records)); any other is compared record by record, by identity, and the
    removed keys are looked for only when the sizes say some were removed."""
    changes: list[Change] = []
    for section in CATALOG_SECTIONS:
        before, after = getattr(old, section), getattr(new, section)
        if before is after:
            continue
        delta = changed_keys(before, after)
        if delta is not None:
            for key in delta:
                record = after.get(key)
                if record is None:
                    if key in before:
                        changes.append((section, key, None))
                elif before.get(key) is not record:
                    changes.append((section, key, _record_doc(section, key, record)))
            continue
        added = 0
        for key, record in after.items():
            previous = before.get(key)
            if previous is not record:
                added += previous is None
                changes.append((section, key, _record_doc(section, key, record)))
        if len(before) + added > len(after):
            changes.extend((section, key, None) for key in before if key not in after)
    return changes


def apply_changes(state: MetaState, revision: int, changes: list[Change]) -> MetaState:
    """The client's copy of the catalog after one revision's changes."""
    sections: dict[str, dict] = {}
    for section, key, doc in changes:
        if section not in CATALOG_SECTIONS:
            continue
        table = sections.setdefault(section, dict(getattr(state, section)))
        if doc is None:
            table.pop(key, None)
        else:
            table[key] = _record_from_doc(section, key, doc)
    if "nodes" in sections:
        # The member's rule (RegisterNode): the most nodes held at once, never lowered.
        sections["nodes_peak"] = max(state.nodes_peak, len(sections["nodes"]))
    return dataclasses.replace(state, version=revision, **sections)


class Compacted(Exception):
    """The history no longer holds the changes after the revision asked for."""

    def __init__(self, oldest: int):
        super().__init__(f"changes before revision {oldest} are compacted")
        self.oldest = oldest


class WatchHistory:
    """The changes of the last `revisions_max` catalog revisions, and a condition that wakes
    the streams waiting for the next one. Written by the Raft thread, read by gRPC threads."""

    def __init__(self, revisions_max: int, base_revision: int = 0):
        self._changes: collections.deque[tuple[int, list[Change]]] = collections.deque(
            maxlen=revisions_max)
        self._base = base_revision      # changes after this revision are held
        self._revision = base_revision
        self._cond = threading.Condition()

    @property
    def revision(self) -> int:
        return self._revision

    def reset(self, revision: int) -> None:
        """A snapshot replaced the state: nothing before `revision` can be streamed as changes."""
        with self._cond:
            self._changes.clear()
            self._base = self._revision = revision
            self._cond.notify_all()

    def record(self, revision: int, changes: list[Change]) -> None:
        with self._cond:
            if revision <= self._revision:
                return
            if len(self._changes) == self._changes.maxlen:
                self._base = self._changes[0][0]
            self._changes.append((revision, changes))
            self._revision = revision
            self._cond.notify_all()

    def after(self, revision: int, wait_s: float) -> list[tuple[int, list[Change]]]:
        """The changes of every held revision after `revision`, waiting up to wait_s for one.
        Raises Compacted when some of them are no longer held."""
        with self._cond:
            if revision < self._base:
                raise Compacted(self._base)
            if self._revision <= revision:
                self._cond.wait(wait_s)
                if revision < self._base:
                    raise Compacted(self._base)
            return [(r, c) for r, c in self._changes if r > revision]
