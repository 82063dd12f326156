"""The restore CLI sends a shard again when its primary changed during the upload
(tributary/backup_cli.py `_restore_shard`).

Found by `python -m bench.backup --vectors 1000000` at load average 20-40: a node missed its
heartbeats, the restored shard's primary moved, and the install on the new primary found the
pieces staged on the old one missing ("the staged restore does not match its manifest"), so
the whole restore failed. The router is a fake here that stages pieces per primary, as the
nodes do."""

from __future__ import annotations

import base64
import os

import pytest

from tributary import backup_cli
from tributary.backup_cli import BackupError


class Router:
    """Stages PUT pieces on the current primary; the primary changes after `failover_after`
    pieces; install checks the current primary's staged files."""

    def __init__(self, failover_after: int | None):
        self.primary = "node-0"
        self.staged: dict[str, dict[str, bytes]] = {"node-0": {}, "node-1": {}}
        self.pieces = 0
        self.failover_after = failover_after

    def call(self, args, method, path, body=None):
        if method == "PUT":
            held = self.staged[self.primary]
            data = base64.b64decode(body["data"])
            old = held.get(body["path"], b"")
            held[body["path"]] = old[:body["offset"]] + data
            self.pieces += 1
            if self.pieces == self.failover_after:
                self.primary = "node-1"
            return {}
        assert method == "POST" and path.endswith("/install")
        held = self.staged[self.primary]
        missing = [f["path"] for f in body["files"] if f["path"] not in held]
        if missing:
            raise BackupError("400 InvalidArgument: the staged restore does not match its "
                              f"manifest (missing {missing}, unexpected [])", 400)
        return {"vector_count": 7}


def backup_dir(tmp_path) -> tuple[str, list[dict]]:
    root = tmp_path / "backup" / "shards" / "u1" / "0"
    os.makedirs(root / "store")
    entries = []
    for name, content in (("hnsw.bin", b"graph" * 10), ("store/chunk", b"rows" * 10)):
        (root / name).write_bytes(content)
        entries.append({"path": name, "size": len(content), "sha256": ""})
    return str(tmp_path / "backup"), entries


def test_a_shard_whose_primary_changed_during_the_upload_is_sent_again_and_installed(
        tmp_path, monkeypatch):
    directory, entries = backup_dir(tmp_path)
    router = Router(failover_after=1)
    monkeypatch.setattr(backup_cli, "_call", router.call)
    monkeypatch.setattr(backup_cli.time, "sleep", lambda s: None)
    progress = []

    answer = backup_cli._restore_shard(None, directory, "/r/shards/u1/0", "u1", 0, entries,
                                       progress.append)

    assert answer == {"vector_count": 7}
    assert set(router.staged["node-1"]) == {"hnsw.bin", "store/chunk"}
    assert sum(progress) == sum(e["size"] for e in entries)   # the retry rewound the bar


def test_a_refusal_that_is_not_a_short_staged_set_is_not_retried(tmp_path, monkeypatch):
    directory, entries = backup_dir(tmp_path)
    calls = []

    def refuse(args, method, path, body=None):
        calls.append(method)
        raise BackupError("409 AlreadyExists: dataset 'x' already exists", 409)

    monkeypatch.setattr(backup_cli, "_call", refuse)
    with pytest.raises(BackupError):
        backup_cli._restore_shard(None, directory, "/r/shards/u1/0", "u1", 0, entries,
                                  lambda n: None)
    assert calls == ["PUT"]
