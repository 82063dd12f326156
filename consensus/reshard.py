"""Online shard splits: a dataset's shard count doubles, shard i splitting into i and i + N.

Routing is `stable_hash(id) % shard_count`, so under 2N shards an id of shard i stays in i or
goes to i + N. The split is three kinds of Raft command, all pure here (no clock, no I/O):

- `StartReshard` records a reshard in progress. Nothing changes for readers or writers: the
  dataset keeps its N shards, its placement and its epoch.
- Every node holding a copy of a parent shard i builds the child i + N beside it: a file copy of
  its parent copy taken under the parent's lock, which then mirrors every op the parent copy
  logs (same sequence numbers, same terms: node/split.py). It reports the child built with
  `ReshardCopyReady`.
- `FinishReshard` is THE switch, one command: once every in-sync copy of every parent shard
  (its primary among them) has a child built, and no 2PC decision touching the dataset waits
  for its participants (for at most `reshard_txn_wait_ms` from the start), the shard count
  becomes 2N and the epoch is bumped. Child i + N gets
  the parent's copies, its primary (whose mirror is exact: it mirrors before it acknowledges)
  and its term; its in-sync set is that primary alone, and the other mirrors rejoin through the
  ordinary catch-up (their logs are prefixes of the primary's). `split_epoch` records the
  epoch of the switch: an op a primary accepted under an older epoch still belongs to the
  parent's mirror (node/split.py), and nodes refuse requests planned before it (fencing).
- `CancelReshard` drops the record; the nodes drop the children they built. Readers never saw
  them.

`plan_reshard_steps` is what the meta leader proposes each round (consensus/failover.py), so a
reshard survives the crash of whoever asked for it and of the leader: the next leader reads the
same record. `reshard_refusal` is the check the admin API runs before proposing; apply runs it
again, so a refused StartReshard changes nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from consensus import commands as c
from consensus.records import DatasetRecord, MetaState, bump, error
from tributary import limits

COMMANDS = (c.StartReshard, c.ReshardCopyReady, c.FinishReshard, c.CancelReshard)


@dataclass(frozen=True)
class ReshardRecord:
    """A split in progress of one dataset (keyed by its uuid) from old_count to new_count
    shards. `ready` holds "parent shard/node id" of every child copy built (node/split.py)."""

    dataset_uuid: str
    old_count: int
    new_count: int
    started_at_ms: int
    ready: tuple[str, ...] = ()

    def ready_nodes(self, shard: int) -> set[str]:
        prefix = f"{shard}/"
        return {r[len(prefix):] for r in self.ready if r.startswith(prefix)}


def reshard_refusal(state: MetaState, record: DatasetRecord | None,
                    new_count: int) -> dict[str, Any] | None:
    """Why a split of `record` to `new_count` shards cannot start, as an error result, or None.
    Exactly 2N (a split doubles), at most shard_count_max, no move or other reshard of the
    dataset in flight."""
    if record is None:
        return error("NotFound", "dataset not found")
    old = record.shard_count
    if isinstance(new_count, bool) or not isinstance(new_count, int) or new_count != 2 * old:
        return error("InvalidArgument", f"a reshard doubles the shard count: dataset "
                                        f"'{record.name}' has {old} shards, so --shards must be "
                                        f"{2 * old}, not {new_count}")
    if new_count > limits.shard_count_max:
        return error("InvalidArgument", f"{new_count} shards is above shard_count_max "
                                        f"({limits.shard_count_max})")
    if record.uuid in state.reshards:
        return error("Aborted", f"dataset '{record.name}' is already being resharded to "
                                f"{state.reshards[record.uuid].new_count} shards")
    moving = sorted(m.shard for m in state.moves.values() if m.dataset_uuid == record.uuid)
    if moving:
        return error("Aborted", f"dataset '{record.name}' has shard moves in flight (shards "
                                f"{moving}); reshard once they are done")
    return None


def txns_in_doubt(state: MetaState, dataset_uuid: str) -> list[str]:
    """2PC txns decided but not yet acknowledged by every participant of this dataset: the
    switch waits for them (a participant of the old count must have applied its decision)."""
    prefix = f"{dataset_uuid}/"
    return sorted(t.txn_id for t in state.txns.values()
                  if any(p.startswith(prefix) for p in t.participants))


def waited_long_enough(reshard: ReshardRecord, at_ms: int) -> bool:
    """Whether the switch stops waiting for 2PC acks (`reshard_txn_wait_ms` after the start,
    by the proposer's clock): under a steady stream of multi-shard batches some decision is
    almost always waiting for an ack. Waiting is a courtesy, not a need: a txn prepared on a
    parent before the switch is staged on its child too (the mirror), and a decision that
    reaches only the parent after it is applied on the child when the child's primary resolves
    the txn against the meta group (node/txn.py, after txn_prepared_timeout_ms)."""
    return at_ms - reshard.started_at_ms >= limits.reshard_txn_wait_ms


def unready_shards(state: MetaState, reshard: ReshardRecord) -> list[int]:
    """Parent shards some in-sync copy of which (the primary always is one) has no child built
    yet."""
    record = state.datasets.get(reshard.dataset_uuid)
    if record is None:
        return []
    return [s for s in range(record.shard_count)
            if not set(record.in_sync_of(s)) <= reshard.ready_nodes(s)]


def split_record(record: DatasetRecord, at_ms: int) -> DatasetRecord:
    """The dataset after the switch: 2N shards, child i + N with parent i's copies, primary and
    term, in sync on its primary only; the epoch bumped and recorded as split_epoch."""
    count = record.shard_count
    primaries = tuple(record.primary_of(s) for s in range(count))
    copies = tuple(record.copies_of(s) for s in range(count))
    in_sync = tuple(record.in_sync_of(s) for s in range(count))
    terms = tuple(record.term_of(s) for s in range(count))
    epoch = record.epoch + 1
    return dataclasses.replace(
        record, placement=primaries + primaries, copies=copies + copies,
        in_sync=in_sync + tuple((p,) for p in primaries), terms=terms + terms, epoch=epoch,
        split_epoch=epoch, updated_at_ms=at_ms)


def apply(state: MetaState, command: Any) -> tuple[MetaState, dict[str, Any]]:
    record = state.datasets.get(command.dataset_uuid)
    reshard = state.reshards.get(command.dataset_uuid)
    if isinstance(command, c.StartReshard):
        if reshard is not None and record is not None and \
                reshard.new_count == command.new_count and \
                reshard.started_at_ms == command.at_ms:
            # A proposer's retry of a start that did commit.
            return state, {"changed": False, "new_count": reshard.new_count}
        refused = reshard_refusal(state, record, command.new_count)
        if refused:
            return state, refused
        reshard = ReshardRecord(record.uuid, record.shard_count, command.new_count,
                                command.at_ms)
        return bump(state, reshards={**state.reshards, record.uuid: reshard}), \
            {"changed": True, "new_count": command.new_count}
    if isinstance(command, c.CancelReshard):
        if reshard is None:
            return state, error("NotFound", "no reshard of this dataset is in progress")
        return bump(state, reshards={k: v for k, v in state.reshards.items()
                                     if k != command.dataset_uuid}), {"changed": True}
    if reshard is None:
        return state, error("NotFound", "no reshard of this dataset is in progress")
    if record is None:
        return state, error("NotFound", f"dataset uuid {command.dataset_uuid} not found")
    if isinstance(command, c.ReshardCopyReady):
        if not isinstance(command.shard, int) or not 0 <= command.shard < reshard.old_count:
            return state, error("InvalidArgument", f"shard {command.shard} out of range")
        if command.node_id not in record.copies_of(command.shard):
            return state, error("InvalidArgument", f"{command.node_id} holds no copy of "
                                                   f"shard {command.shard}")
        entry = f"{command.shard}/{command.node_id}"
        ready = set(reshard.ready)
        if (entry in ready) == command.ready:
            return state, {"changed": False}
        ready = ready | {entry} if command.ready else ready - {entry}
        reshard = dataclasses.replace(reshard, ready=tuple(sorted(ready)))
        return bump(state, reshards={**state.reshards, record.uuid: reshard}), \
            {"changed": True}
    # FinishReshard: the switch.
    if record.shard_count != reshard.old_count:
        return state, error("Aborted", f"dataset has {record.shard_count} shards, not the "
                                       f"{reshard.old_count} the reshard started from")
    waiting = unready_shards(state, reshard)
    if waiting:
        return state, error("Aborted", f"shards {waiting} have in-sync copies whose child is "
                                       "not built yet")
    doubt = txns_in_doubt(state, record.uuid)
    if doubt and not waited_long_enough(reshard, command.at_ms):
        return state, error("Aborted", f"{len(doubt)} 2PC txn(s) of the dataset are decided "
                                       "but not yet applied by every participant")
    record = split_record(record, command.at_ms)
    return bump(state, datasets={**state.datasets, record.uuid: record},
                reshards={k: v for k, v in state.reshards.items() if k != record.uuid}), \
        {"changed": True, "epoch": record.epoch, "shard_count": record.shard_count}


def plan_reshard_steps(state: MetaState, at_ms: int) -> list[Any]:
    """What the meta leader proposes for reshards in one round: CancelReshard for one whose
    dataset is gone, FinishReshard for one whose children are all built and whose dataset has
    no 2PC decision waiting for its participants."""
    planned: list[Any] = []
    for uuid, reshard in sorted(state.reshards.items()):
        record = state.datasets.get(uuid)
        if record is None or record.shard_count != reshard.old_count:
            planned.append(c.CancelReshard(uuid, at_ms))
        elif not unready_shards(state, reshard) and (
                not txns_in_doubt(state, uuid) or waited_long_enough(reshard, at_ms)):
            planned.append(c.FinishReshard(uuid, at_ms))
    return planned


def progress(state: MetaState, dataset_uuid: str) -> dict[str, Any] | None:
    """The reshard of a dataset as a document: children built of those the switch waits for."""
    reshard = state.reshards.get(dataset_uuid)
    record = state.datasets.get(dataset_uuid)
    if reshard is None or record is None:
        return None
    needed = sum(len(record.in_sync_of(s)) for s in range(reshard.old_count))
    built = sum(len(set(record.in_sync_of(s)) & reshard.ready_nodes(s))
                for s in range(reshard.old_count))
    return {"dataset_uuid": dataset_uuid, "old_count": reshard.old_count,
            "new_count": reshard.new_count, "started_at_ms": reshard.started_at_ms,
            "children_built": built, "children_needed": needed,
            "waiting_shards": unready_shards(state, reshard),
            "txns_in_doubt": len(txns_in_doubt(state, dataset_uuid))}


def to_doc(state: MetaState) -> dict[str, Any]:
    return {"reshards": {k: {**dataclasses.asdict(v), "ready": list(v.ready)}
                         for k, v in state.reshards.items()}}


def from_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """The MetaState fields of this module from a snapshot document (absent: none)."""
    return {"reshards": {k: ReshardRecord(**{**v, "ready": tuple(v["ready"])})
                         for k, v in doc.get("reshards", {}).items()}}
