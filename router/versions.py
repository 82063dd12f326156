"""Dataset versions: tags over consistent cuts, and reads at a version (time travel).

A version is a consistent cut (router/cut.py) recorded in the catalog under a user's tag
(consensus/versions.py CreateVersion). A read names it by tag (`as_of_version`) or by time
(`as_of_time`: the newest version taken at or before it; there is no state between versions
that every shard agrees on). Each shard is then read at the Deep Lake tag its cut put on the
copies' stores, from a copy that carries it (`on_version`); old versions are searched by exact
scan on the node (shard/versions.py).

The core's coroutines (`RouterCore.create_version`, `.list_versions`, and the as_of branches of
get, list and search) call these functions; they hold the logic, the core stays one call each.
"""

from __future__ import annotations

from typing import Awaitable, Callable, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from consensus import commands
from consensus import versions as meta_versions
from consensus.records import DatasetRecord
from consensus.versions import VersionRecord
from proto import deeplake_service_pb2 as pb
from proto import node_pb2
from router.cut import consistent_cut
from tributary import errors, limits

T = TypeVar("T")


def check_tag(tag: str) -> str:
    if not meta_versions.TAG_PATTERN.match(tag or ""):
        raise errors.InvalidArgument(
            "a version tag is 1-63 letters, digits, '.', '_' or '-', starting with a letter or "
            f"digit; got {tag[:80]!r}")
    return tag


def _timestamp(ms: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def version_pb(record: DatasetRecord, version: VersionRecord) -> pb.DatasetVersion:
    return pb.DatasetVersion(tag=version.tag, created_at=_timestamp(version.at_ms),
                             vector_count=version.vector_count, dataset_id=record.name)


async def create_version(core, record: DatasetRecord, tag: str) -> pb.CreateVersionResponse:
    """Takes a consistent cut of the dataset and records it under `tag`. Raises
    InvalidArgument (bad tag), AlreadyExists (the tag is taken), Unavailable (no cut could be
    taken within its fence, after a few tries)."""
    check_tag(tag)
    state = await core.catalog.refresh(linearizable=True)
    if meta_versions.version_key(record.uuid, tag) in state.versions:
        raise errors.AlreadyExists(f"version '{tag}' already exists in dataset '{record.name}'")
    cut = None
    for attempt in range(limits.version_cut_attempts_max):
        try:
            cut = await consistent_cut(core, record)
            break
        except errors.Unavailable:
            if attempt + 1 == limits.version_cut_attempts_max:
                raise
    await core.meta.propose(commands.CreateVersion(
        record.uuid, tag, cut.deeplake_tag, meta_versions.shards_to_json(list(cut.shards)),
        limits.versions_per_dataset_max, limits.version_retention_ms, cut.at_ms))
    state = await core.catalog.refresh()
    version = state.versions.get(meta_versions.version_key(record.uuid, tag))
    if version is None:     # retention cannot drop the version just made; the cache lags
        version = VersionRecord(record.uuid, tag, cut.deeplake_tag, cut.at_ms, cut.shards)
    return pb.CreateVersionResponse(version=version_pb(record, version),
                                    commit_pause_ms=cut.fence_ms)


async def list_versions(core, record: DatasetRecord) -> pb.ListVersionsResponse:
    state = await core.catalog.refresh(linearizable=True)
    return pb.ListVersionsResponse(versions=[
        version_pb(record, v) for v in meta_versions.versions_of(state, record.uuid)])


async def resolve(core, record: DatasetRecord, tag: str, as_of_time: Timestamp | None
                  ) -> VersionRecord | None:
    """The version a read names, or None for a read of the present. Raises InvalidArgument
    (both given, a bad tag, a time before the dataset's first version), NotFound (no version
    with that tag) and Unavailable (the dataset's shards were split since the version)."""
    version = await _resolve(core, record, tag, as_of_time)
    if version is not None and len(version.shards) != record.shard_count:
        raise errors.Unavailable(f"version '{version.tag}' was taken with "
                                 f"{len(version.shards)} shards and the dataset has "
                                 f"{record.shard_count} now; it can no longer be read")
    return version


async def _resolve(core, record: DatasetRecord, tag: str, as_of_time: Timestamp | None
                   ) -> VersionRecord | None:
    if not tag and as_of_time is None:
        return None
    if tag and as_of_time is not None:
        raise errors.InvalidArgument("give as_of_version or as_of_time, not both")
    if tag:
        check_tag(tag)
        key = meta_versions.version_key(record.uuid, tag)
        version = core.catalog.state.versions.get(key)
        if version is None:
            # Perhaps made through another router just now: read the leader's state.
            version = (await core.catalog.refresh(linearizable=True)).versions.get(key)
        if version is None:
            raise errors.NotFound(f"version '{tag}' not found in dataset '{record.name}'")
        return version
    at_ms = as_of_time.ToMilliseconds()
    state = await core.catalog.refresh(linearizable=True)
    version = meta_versions.version_at(state, record.uuid, at_ms)
    if version is None:
        first = meta_versions.versions_of(state, record.uuid)
        when = (f"its first version was taken at {_timestamp(first[0].at_ms).ToJsonString()}"
                if first else "it has no version yet")
        raise errors.InvalidArgument(f"as_of_time {as_of_time.ToJsonString()} is before the "
                                     f"first version of dataset '{record.name}' ({when})")
    return version


def as_of_time_of(request) -> Timestamp | None:
    return request.as_of_time if request.HasField("as_of_time") else None


async def on_version(core, record: DatasetRecord, version: VersionRecord, shard: int,
                     call: Callable[[str, node_pb2.ShardRef], Awaitable[T]]) -> T:
    """call(address, ref) on a copy of `shard` whose store carries the version's tag: the
    copies that tagged it at the cut, if they still hold the shard, else any copy (one made
    from a tagged copy's files carries the tag too). A copy without it answers Unavailable and
    the next is asked (router/reads.py)."""
    for attempt in range(limits.router_stale_epoch_retries_max + 1):
        current = core.catalog.state.datasets.get(record.uuid) or record
        marked = [node for node, _ in version.shards[shard].marked]
        copies = tuple(n for n in marked if n in current.copies_of(shard)) or \
            current.copies_of(shard)
        ref = core.shard_ref(current, shard)
        try:
            return await core.reads.read(copies, lambda node: call(core.node_address(node), ref))
        except errors.StaleEpoch:
            if attempt == limits.router_stale_epoch_retries_max:
                raise
            await core.catalog.refresh(linearizable=True)
    raise AssertionError("unreachable")
