"""Backups and restores, node side (proto/node.proto: ExportShard, RestoreChunk, InstallRestore).

Export. A cluster backup records, at a consistent cut (router/cut.py), each shard primary's
Deep Lake version, and the cut's tag, which names that version in every store that holds it
(the commit id alone names another state in a store replaced by a snapshot since).
Versions are immutable, so the export needs no lock: a child process
(node/backup_export.py) opens that version read-only beside the live store (writes go on),
copies its rows into a fresh store in a directory beside the shard's (`<shard>.backup-<hex>`),
and the node streams that store's files as
SnapshotChunks: the cut's op-log position first, empty keepalive chunks while the copy runs,
then the total size, then the files. The fresh store
holds exactly the rows at the cut and no history; its graph file is an empty index, so a
restored replica serves at once (every row starts in the pending buffer, exactly scanned) while
the indexer builds the graph in the background, instead of a rebuild that would hold up its open.

Restore. The router sends a backup's files for one shard to the shard's primary in pieces
(RestoreChunk, written at their offsets, so a retried piece changes nothing) into a staging
directory beside the shard's (`<shard>.restore-<hex>`); every path goes through
`replication.safe_join`, so no name can leave it. InstallRestore then checks that the staged set
is exactly the manifest's (names, sizes, sha256), and under the shard's write lock takes the
other copies out of the in-sync set (in the primary's term), swaps the directory in whole and
starts the op log past every position a copy could hold, so the copies find that they diverged
and copy the primary's files (promise 7's catch-up, nothing written for it here). Leftover
staging and export directories are removed when the node next starts (ShardHost.reopen_from_disk
removes every shard directory entry that is not a shard number).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import uuid

from node import backup_export
from node.replication import _swap_in, list_files, safe_join
from proto import node_pb2
from tributary import errors, limits

log = logging.getLogger("tributary.node.backup")

_RESTORE_ID = re.compile(r"^[0-9a-f]{8,64}$")


# ---- export -----------------------------------------------------------------------------------

async def _export_in_child(store_url: str, version: str, destination: str, dimensions: int,
                           metric: str, index_type: str, tag: str) -> int:
    """backup_export.export_version in a child process at a lower priority. Never in the
    node's own process: a read-only Deep Lake handle on the live store, opened while another
    thread commits to it, can deadlock the whole process with the GIL held (reproduced with
    deeplake 4.7.4: a thread doing open_read_only + history[v].open() beside a writing thread
    froze every thread within seconds). And the copy is Python work over every row that would
    hold the GIL against the requests served meanwhile. Killed if the export is abandoned."""
    # Started by subprocess (fork and exec with no Python in between), waited on from a
    # thread, not through the event loop: under uvloop's own spawn (libuv) the child died of
    # SIGSEGV, with no output, in a node serving gRPC (tests/integration/
    # test_backup_restore.py), where asyncio's spawn had worked. No preexec_fn either:
    # Python code between fork and exec, in a process whose gRPC threads may hold locks, can
    # hang the child before its exec. The child lowers its priority itself (backup_export.main).
    child = subprocess.Popen(
        [sys.executable, "-m", "node.backup_export", store_url, version, destination,
         str(dimensions), metric, index_type, *([tag] if tag else [])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.to_thread(child.communicate)
    except BaseException:
        # Abandoned (cancelled): killing the child ends the thread's communicate too.
        if child.poll() is None:
            child.kill()
        await asyncio.to_thread(child.wait)
        raise
    message = (err.decode(errors="replace").strip().splitlines()
               or [f"(no output; exit status {child.returncode})"])[-1]
    if child.returncode == backup_export.EXIT_NOT_FOUND:
        raise errors.NotFound(message)
    if child.returncode != 0:
        raise errors.Internal(f"the export of {destination} failed: {message}")
    return int(out.split()[-1])


async def export_stream(host, record, shard: int, version: str, last_seq: int, tag: str = ""):
    """SnapshotChunks of the shard's rows at the cut: the commit its tag names, or `version`
    when the router sent no tag (see the module docstring and backup_export._open_version)."""
    replica = await host.replica_unfenced(record.uuid, shard)
    if replica is None:
        raise errors.NotFound("dataset not found (it may have been deleted)")
    staging = f"{host.shard_path(record.uuid, shard)}.backup-{uuid.uuid4().hex}"
    try:
        export = asyncio.ensure_future(_export_in_child(
            "file://" + os.path.join(replica.path, "store"), version, staging,
            record.dimensions, record.metric_type, record.index_type or "hnsw", tag))
        # The position first, then an empty chunk every backup_export_keepalive_ms while the
        # copy runs (so the router tells a long export from a dead node), then the size.
        yield node_pb2.SnapshotChunk(last_seq=last_seq)
        try:
            while not export.done():
                await asyncio.wait({export}, timeout=limits.backup_export_keepalive_ms / 1000)
                if not export.done():
                    yield node_pb2.SnapshotChunk()
        finally:
            if not export.done():
                export.cancel()
        rows = export.result()
        files = await asyncio.to_thread(list_files, staging)
        total = sum(size for _, size in files)
        log.info("exporting %s/%d at version %s (tag %s): %d rows, %d bytes", record.uuid,
                 shard, version, tag or "-", rows, total)
        yield node_pb2.SnapshotChunk(total_bytes=total)
        chunk_bytes = limits.replication_snapshot_chunk_bytes_max
        for relative, _ in files:
            with open(os.path.join(staging, relative), "rb") as handle:
                while True:
                    data = await asyncio.to_thread(handle.read, chunk_bytes)
                    yield node_pb2.SnapshotChunk(path=relative, data=data)
                    if len(data) < chunk_bytes:
                        break
    finally:
        await asyncio.to_thread(shutil.rmtree, staging, True)


# ---- restore ----------------------------------------------------------------------------------

def _staging(host, dataset_uuid: str, shard: int, restore_id: str) -> str:
    if not _RESTORE_ID.match(restore_id or ""):
        raise errors.InvalidArgument("restore_id must be 8 to 64 lowercase hex digits")
    return f"{host.shard_path(dataset_uuid, shard)}.restore-{restore_id}"


def _write_at(path: str, offset: int, data: bytes) -> int:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.islink(path):
        raise errors.InvalidArgument("a restored file may not be a symbolic link")
    mode = "r+b" if os.path.exists(path) else "wb"
    with open(path, mode) as handle:
        handle.seek(offset)
        handle.write(data)
        handle.seek(0, os.SEEK_END)
        return handle.tell()


async def restore_chunk(host, request: node_pb2.RestoreChunkRequest) -> int:
    staging = _staging(host, request.shard.dataset_uuid, request.shard.shard,
                       request.restore_id)
    os.makedirs(staging, exist_ok=True)
    destination = safe_join(staging, request.path)
    if request.offset + len(request.data) > limits.backup_file_bytes_max:
        raise errors.InvalidArgument(f"file {request.path!r} would exceed "
                                     f"backup_file_bytes_max={limits.backup_file_bytes_max}")
    return await asyncio.to_thread(_write_at, destination, request.offset, request.data)


def _check_staged(staging: str, files) -> None:
    """The staged directory holds exactly `files`, each of its size and sha256."""
    expected = {f.path: f for f in files}
    held = dict(list_files(staging)) if os.path.isdir(staging) else {}
    missing = sorted(set(expected) - set(held))
    extra = sorted(set(held) - set(expected))
    if missing or extra:
        raise errors.InvalidArgument(f"the staged restore does not match its manifest "
                                     f"(missing {missing[:3]}, unexpected {extra[:3]})")
    for path, wanted in expected.items():
        full = safe_join(staging, path)
        if os.path.islink(full) or held[path] != wanted.size:
            raise errors.InvalidArgument(f"staged file {path!r} has {held[path]} bytes, the "
                                         f"manifest says {wanted.size}")
        digest = hashlib.sha256()
        with open(full, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != wanted.sha256:
            raise errors.InvalidArgument(f"staged file {path!r} does not match its sha256")


async def install_restore(host, replication, record, request: node_pb2.InstallRestoreRequest
                          ) -> int:
    """Swaps the staged files in as this primary's copy of the shard; returns its vector
    count. Refused (InvalidArgument) unless the staged set is exactly the request's files."""
    shard = request.shard.shard
    staging = _staging(host, record.uuid, shard, request.restore_id)
    if request.discard:
        await asyncio.to_thread(shutil.rmtree, staging, True)
        return 0
    await asyncio.to_thread(_check_staged, staging, list(request.files))
    target = host.shard_path(record.uuid, shard)
    key = (record.uuid, shard)
    async with replication.write_lock(*key):
        fresh = host.catalog.state.datasets.get(record.uuid) or record
        for node in fresh.in_sync_of(shard):
            if node != host.node_id:
                await replication.set_in_sync(fresh, shard, node, False)
                fresh = host.catalog.state.datasets.get(record.uuid) or fresh
        # Past every position a copy may hold, in this term: a copy's log cannot match it, so
        # it copies this primary's files (FetchSnapshot) before it rejoins the in-sync set.
        position = replication.oplog(*key).last_seq + 1
        replica = host.replicas.pop(key, None)
        if replica is not None:
            await asyncio.to_thread(replica.close)
        replication.forget(*key)
        if replication.participant is not None:
            await replication.participant.forget_shard(record.uuid, shard)
        await asyncio.to_thread(_swap_in, staging, target)
        replication.forget(*key)
        await asyncio.to_thread(replication.oplog(*key).reset, position, fresh.term_of(shard))
        replica = await host.replica_unfenced(*key)
    count = replica.count() if replica is not None else 0
    log.info("restored %s/%d: %d vectors; the op log starts after %d", record.uuid, shard,
             count, position)
    return count
