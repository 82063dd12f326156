"""Cluster backups and restores end to end (issue 16, items 1 and 2): `tributary admin backup
create --to DIR --wait` against one real cluster, `restore --from DIR --wait` into another
(empty) one, and one dataset under a new name into a running cluster; the content read back
through the public API is equal. Refusals change nothing: a non-empty target directory, a
restore into a name that exists, and tampered backups (`..` names, a changed byte, a missing
file, no manifest)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys

import httpx
import pytest

from cluster import Cluster

pytestmark = pytest.mark.integration

DIMS = 8


def admin(c: Cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tributary.cli", "admin", *args],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TRIBUTARY_URL": c.rest.removesuffix("/api/v1")})


def content(c: Cluster, name: str) -> dict[str, dict]:
    """Every vector of the dataset, by id: values, metadata, content."""
    found: dict[str, dict] = {}
    token = ""
    with httpx.Client(base_url=c.rest, timeout=60) as client:
        while True:
            r = client.get(f"/datasets/{name}/vectors", params={
                "page_size": 500, "include_values": "true", **({"page_token": token}
                                                              if token else {})})
            assert r.status_code == 200, r.text
            doc = r.json()
            for v in doc.get("vectors", []):
                found[v["id"]] = {"values": [round(x, 5) for x in v.get("values", [])],
                                  "metadata": v.get("metadata", {}),
                                  "content": v.get("content", "")}
            token = doc.get("next_page_token", "")
            if not token:
                return found


def dataset_names(c: Cluster) -> set[str]:
    r = httpx.get(f"{c.rest}/datasets", timeout=30)
    assert r.status_code == 200, r.text
    return {d["name"] for d in r.json().get("datasets", [])}


@pytest.fixture(scope="module")
def clusters(tmp_path_factory):
    source = Cluster(tmp_path_factory.mktemp("backup-source"), meta=1, nodes=2).start()
    target = None
    try:
        target = Cluster(tmp_path_factory.mktemp("backup-target"), meta=1, nodes=2).start()
        rng = random.Random(16)
        r = httpx.post(f"{source.rest}/datasets", timeout=30, json={
            "name": "docs", "dimensions": DIMS, "metric_type": "l2", "shard_count": 2})
        assert r.status_code == 201, r.text
        with httpx.Client(base_url=source.rest, timeout=60) as client:
            for batch in range(6):
                # Batches of 50 ids span both shards: each is a 2PC transaction.
                r = client.post("/datasets/docs/vectors", json={"vectors": [
                    {"id": f"v{batch}-{i}", "values": [rng.random() for _ in range(DIMS)],
                     "content": f"river delta number {batch} {i}",
                     "metadata": {"batch": str(batch)}} for i in range(50)]})
                assert r.status_code == 201, r.text
            assert client.post("/datasets/docs/vectors/v0-1/soft-delete").status_code == 200
            assert client.delete("/datasets/docs/vectors/v0-2").status_code in (200, 204)
        yield source, target
    finally:
        source.stop()
        if target is not None:
            target.stop()


@pytest.fixture(scope="module")
def backup_dir(clusters, tmp_path_factory):
    source, _ = clusters
    directory = str(tmp_path_factory.mktemp("backups") / "full")
    result = admin(source, "backup", "create", "--to", directory, "--wait", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["datasets"][0]["vectors"] == 298
    return directory


def test_backup_then_restore_into_an_empty_cluster_gives_equal_content(clusters, backup_dir):
    source, target = clusters
    manifest = json.load(open(os.path.join(backup_dir, "manifest.json")))
    assert manifest["format"] == "tributary-backup" and manifest["format_version"] == 1
    assert all(len(f["sha256"]) == 64 for f in manifest["files"])
    assert manifest["datasets"][0]["cut"]["fence_ms"] <= 1000

    result = admin(target, "backup", "restore", "--from", backup_dir, "--wait", "--json")
    assert result.returncode == 0, result.stderr
    expected = content(source, "docs")
    assert len(expected) == 298
    assert content(target, "docs") == expected
    query = {"query_vector": [0.5] * DIMS, "options": {"top_k": 10}, "exact": True}
    hits = []
    for c in (source, target):
        r = httpx.post(f"{c.rest}/datasets/docs/search", json=query, timeout=30)
        assert r.status_code == 200, r.text
        hits.append([h["vector"]["id"] for h in r.json()["results"]])
    assert len(hits[0]) == 10 and hits[0] == hits[1]
    # The soft-deleted vector stays soft-deleted (and can be restored) after the restore.
    assert httpx.get(f"{target.rest}/datasets/docs/vectors/v0-1", timeout=30).status_code == 404
    assert httpx.post(f"{target.rest}/datasets/docs/vectors/v0-1/restore",
                      timeout=30).status_code == 200


def test_restore_of_one_dataset_under_a_new_name_into_a_running_cluster(clusters, backup_dir):
    source, _ = clusters
    result = admin(source, "backup", "restore", "--from", backup_dir, "--dataset", "docs",
                   "--as", "docs-copy", "--wait")
    assert result.returncode == 0, result.stderr
    assert content(source, "docs-copy") == content(source, "docs")
    # The copy is a dataset like any other: it takes writes.
    r = httpx.post(f"{source.rest}/datasets/docs-copy/vectors", timeout=30, json={
        "vectors": [{"id": "new", "values": [0.1] * DIMS}]})
    assert r.status_code == 201, r.text


def test_restore_into_an_existing_dataset_name_is_refused_and_changes_nothing(clusters,
                                                                              backup_dir):
    source, _ = clusters
    before = dataset_names(source)
    docs = content(source, "docs")
    result = admin(source, "backup", "restore", "--from", backup_dir, "--wait")
    assert result.returncode != 0
    assert "409" in result.stderr and "already exists" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert dataset_names(source) == before
    assert content(source, "docs") == docs


def test_backup_into_a_non_empty_directory_is_refused(clusters, tmp_path):
    source, _ = clusters
    (tmp_path / "someone-elses-file").write_text("keep me")
    result = admin(source, "backup", "create", "--to", str(tmp_path), "--wait")
    assert result.returncode != 0 and "not empty" in result.stderr
    assert os.listdir(tmp_path) == ["someone-elses-file"]


def _tampered(backup_dir: str, tmp_path, how: str) -> str:
    copy = str(tmp_path / f"tampered-{how}")
    shutil.copytree(backup_dir, copy)
    manifest_path = os.path.join(copy, "manifest.json")
    manifest = json.load(open(manifest_path))
    store_files = [f for f in manifest["files"] if f["path"].startswith("shards/")]
    victim = max(store_files, key=lambda f: f["size"])
    if how == "dotdot":
        # A name that climbs out of the backup directory, with the right checksum of a file
        # that sits where it points.
        outside = tmp_path / "outside.bin"
        outside.write_bytes(b"secret")
        victim["path"] = f"shards/{victim['path'].split('/')[1]}/0/../../../../outside.bin"
    elif how == "checksum":
        path = os.path.join(copy, *victim["path"].split("/"))
        data = bytearray(open(path, "rb").read())
        data[len(data) // 2] ^= 0x01
        open(path, "wb").write(bytes(data))
    elif how == "missing":
        os.remove(os.path.join(copy, *victim["path"].split("/")))
    elif how == "partial":
        os.remove(manifest_path)
        return copy
    elif how == "symlink":
        path = os.path.join(copy, *victim["path"].split("/"))
        os.remove(path)
        os.symlink("/etc/hostname", path)
    json.dump(manifest, open(manifest_path, "w"))
    return copy


@pytest.mark.parametrize("how, message", [
    ("dotdot", "unsafe path"), ("checksum", "sha256"), ("missing", "missing"),
    ("partial", "partial"), ("symlink", "symbolic link")])
def test_tampered_or_partial_backup_is_refused_and_nothing_is_written(clusters, backup_dir,
                                                                      tmp_path, how, message):
    _, target = clusters
    before = dataset_names(target)
    copy = _tampered(backup_dir, tmp_path, how)
    listing = sorted(os.listdir(tmp_path))
    result = admin(target, "backup", "restore", "--from", copy, "--dataset", "docs", "--as",
                   f"tampered-{how}", "--wait")
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert dataset_names(target) == before
    assert sorted(os.listdir(tmp_path)) == listing


def test_backup_progress_is_served_over_rest_with_an_eta(clusters):
    source, _ = clusters
    r = httpx.post(f"{source.rest}/admin/backups", json={"datasets": ["docs"]}, timeout=60)
    assert r.status_code == 201, r.text
    backup = r.json()["backup"]
    assert backup["datasets"][0]["cut"]["vector_count"] == 298
    progress = httpx.get(f"{source.rest}/admin/backups/{backup['backup_id']}",
                         timeout=30).json()["backup"]["progress"]
    assert {"bytes_done", "bytes_total", "eta_s", "shards_total"} <= set(progress)
    assert progress["shards_total"] == 2
    missing = httpx.get(f"{source.rest}/admin/backups/{'0' * 32}", timeout=30)
    assert missing.status_code == 404
