"""The backup CLI's checks of a backup directory before a restore touches the cluster
(tributary/backup_cli.verify_backup), and the node's staging of restored files
(node/backup.py): no name may lead outside, and nothing corrupt or partial passes."""

import asyncio
import hashlib
import json
import os
import uuid

import pytest

from node import backup as node_backup
from proto import node_pb2
from tributary import backup_cli, errors
from tributary.backup_cli import BackupError, verify_backup

DATASET = str(uuid.UUID(int=7))


def _entry(root, path: str, data: bytes) -> dict:
    full = os.path.join(root, *path.split("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as handle:
        handle.write(data)
    return {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _backup(root) -> dict:
    files = [_entry(root, "catalog.json", b"{}"),
             _entry(root, f"shards/{DATASET}/0/store/chunk", b"rows of shard zero"),
             _entry(root, f"shards/{DATASET}/1/store/chunk", b"rows of shard one")]
    manifest = {"format": "tributary-backup", "format_version": 1, "files": files,
                "datasets": [{"uuid": DATASET, "name": "docs", "shard_count": 2}]}
    _write(root, manifest)
    return manifest


def _write(root, manifest: dict) -> None:
    with open(os.path.join(root, "manifest.json"), "w") as handle:
        json.dump(manifest, handle)


def test_an_intact_backup_passes(tmp_path):
    manifest = _backup(tmp_path)
    assert verify_backup(str(tmp_path)) == manifest
    assert [f["path"] for f in backup_cli.shard_files(manifest, DATASET, 1)] == ["store/chunk"]


@pytest.mark.parametrize("name", [
    "../outside", f"shards/{DATASET}/0/../../../../outside", "/etc/passwd",
    f"shards/{DATASET}/0/./store", f"shards/{DATASET}/0//x", "shards\\x", "a\x00b", ""])
def test_a_name_that_could_leave_the_backup_is_refused(tmp_path, name):
    manifest = _backup(tmp_path / "b")
    (tmp_path / "outside").write_bytes(b"secret")
    manifest["files"].append({"path": name, "size": 6,
                              "sha256": hashlib.sha256(b"secret").hexdigest()})
    _write(tmp_path / "b", manifest)
    with pytest.raises(BackupError, match="unsafe path"):
        verify_backup(str(tmp_path / "b"))


def test_a_file_reached_through_a_symbolic_link_is_refused(tmp_path):
    manifest = _backup(tmp_path / "b")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "chunk").write_bytes(b"rows of shard zero")
    store = tmp_path / "b" / "shards" / DATASET / "0" / "store"
    (store / "chunk").unlink()
    store.rmdir()
    os.symlink(tmp_path / "elsewhere", store)
    with pytest.raises(BackupError, match="symbolic link"):
        verify_backup(str(tmp_path / "b"))


def test_a_changed_byte_is_refused(tmp_path):
    _backup(tmp_path)
    (tmp_path / "shards" / DATASET / "1" / "store" / "chunk").write_bytes(b"rows of shard onE")
    with pytest.raises(BackupError, match="sha256"):
        verify_backup(str(tmp_path))


def test_a_missing_file_or_shard_is_refused(tmp_path):
    manifest = _backup(tmp_path)
    os.remove(tmp_path / "shards" / DATASET / "0" / "store" / "chunk")
    with pytest.raises(BackupError, match="missing"):
        verify_backup(str(tmp_path))
    manifest["files"] = [f for f in manifest["files"] if "/0/" not in f["path"]]
    _write(tmp_path, manifest)
    with pytest.raises(BackupError, match="shard 0 .* has no files"):
        verify_backup(str(tmp_path))


def test_a_backup_without_its_manifest_is_partial_and_refused(tmp_path):
    _backup(tmp_path)
    os.remove(tmp_path / "manifest.json")
    with pytest.raises(BackupError, match="partial"):
        verify_backup(str(tmp_path))


def test_another_format_version_is_refused(tmp_path):
    manifest = _backup(tmp_path)
    manifest["format_version"] = 99
    _write(tmp_path, manifest)
    with pytest.raises(BackupError, match="version 99"):
        verify_backup(str(tmp_path))


class _Host:
    def __init__(self, root):
        self.root = root

    def shard_path(self, dataset_uuid: str, shard: int) -> str:
        return os.path.join(self.root, "shards", dataset_uuid, str(shard))


@pytest.mark.parametrize("name", ["../escape", "store/../../escape", "/tmp/escape", ""])
def test_the_node_refuses_to_stage_a_file_outside_its_staging_directory(tmp_path, name):
    host = _Host(str(tmp_path))
    request = node_pb2.RestoreChunkRequest(
        shard=node_pb2.ShardRef(dataset_uuid=DATASET, shard=0), restore_id="ab" * 16,
        path=name, offset=0, data=b"x")
    with pytest.raises(errors.InvalidArgument):
        asyncio.run(node_backup.restore_chunk(host, request))
    written = [os.path.join(d, n) for d, _, names in os.walk(tmp_path) for n in names]
    assert written == []


def test_the_node_installs_only_the_exact_staged_set(tmp_path):
    host = _Host(str(tmp_path))
    ref = node_pb2.ShardRef(dataset_uuid=DATASET, shard=0)
    for offset, piece in ((0, b"hello "), (6, b"world"), (0, b"hello ")):   # a retried piece
        asyncio.run(node_backup.restore_chunk(host, node_pb2.RestoreChunkRequest(
            shard=ref, restore_id="cd" * 16, path="store/f", offset=offset, data=piece)))
    staging = host.shard_path(DATASET, 0) + ".restore-" + "cd" * 16
    good = node_pb2.RestoreFile(path="store/f", size=11,
                                sha256=hashlib.sha256(b"hello world").hexdigest())
    node_backup._check_staged(staging, [good])
    with pytest.raises(errors.InvalidArgument, match="sha256"):
        node_backup._check_staged(staging, [node_pb2.RestoreFile(
            path="store/f", size=11, sha256=hashlib.sha256(b"hello World").hexdigest())])
    with pytest.raises(errors.InvalidArgument, match="does not match its manifest"):
        node_backup._check_staged(staging, [good, node_pb2.RestoreFile(path="store/g")])
