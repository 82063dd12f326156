"""`tributary admin backup create | restore`: consistent cluster backups into a local directory,
and restores from one, through a router's admin API (router/backups_admin.py).

    tributary admin backup create --to DIR [--dataset NAME ...] [--tenant T] [--wait] [--json]
    tributary admin backup restore --from DIR [--dataset NAME [--as NEW]] [--tenant T] [--wait]

The router is --url (env TRIBUTARY_URL), the admin credential --api-key (env
TRIBUTARY_API_KEY), as for every `tributary admin` command. The data reaches DIR through the
router, so this can run on another machine than the cluster.

A backup directory:

    DIR/catalog.json                        tenants, API keys (by hash), dataset definitions
    DIR/shards/<dataset uuid>/<shard>/...   each shard's Deep Lake store at the cut
    DIR/manifest.json                       written last: format and version, the backup's
                                            datasets and their cut positions, and every file's
                                            path, size and sha256

`create` refuses a DIR that exists and is not empty. Without manifest.json a directory is a
partial backup, and `restore` refuses it. `restore` checks everything before it changes the
cluster: the manifest, each path (relative, no `..`, no symbolic link, inside DIR), each size and
each sha256. It then restores every dataset into a cluster that has none of their names (and
the tenants and keys it lacks), or with --dataset one dataset (under --as NEW). A name that
exists is refused (409) before anything is written; a failure midway drops what the restore
created.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from tributary import admin_cli, limits

FORMAT = "tributary-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CATALOG = "catalog.json"
_HEADER = struct.Struct(">I")
_SHARD_FILE = re.compile(r"^shards/([0-9a-f-]{36})/(\d+)/(.+)$")


class BackupError(Exception):
    """A backup or restore that cannot go on; the message is one line for the operator.
    `status` is the router's HTTP status when it answered with an error."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class DatasetGone(BackupError):
    """A dataset was deleted after the backup's cut, before its files were fetched."""


# ---- paths and the manifest (pure, no network) --------------------------------------------------

def check_relative(path: str) -> str:
    """`path` if it is a plain relative path (slash-separated, no empty, `.` or `..` part, no
    backslash or NUL); BackupError otherwise."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path or \
            "\x00" in path or any(part in ("", ".", "..") for part in path.split("/")):
        raise BackupError(f"unsafe path {path!r} in the backup: only plain relative paths "
                          "are allowed")
    return path


def contained(root: str, relative: str) -> str:
    """root/relative, refused when it would leave root or pass through a symbolic link."""
    check_relative(relative)
    real_root = os.path.realpath(root)
    full = os.path.join(real_root, *relative.split("/"))
    probe = real_root
    for part in relative.split("/"):
        probe = os.path.join(probe, part)
        if os.path.islink(probe):
            raise BackupError(f"{relative!r} passes through a symbolic link; refused")
    if os.path.commonpath([real_root, os.path.realpath(full)]) != real_root:
        raise BackupError(f"{relative!r} leaves the backup directory; refused")
    return full


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_backup(directory: str) -> dict:
    """The manifest of the backup in `directory`, after checking it whole: format, paths, and
    every file's size and sha256. Raises BackupError (one line) on the first problem."""
    if not os.path.isdir(directory):
        raise BackupError(f"{directory} is not a directory")
    manifest_path = os.path.join(directory, MANIFEST)
    if not os.path.exists(manifest_path):
        raise BackupError(f"{directory} holds no {MANIFEST}: not a backup, or a partial one "
                          "(a backup writes its manifest last)")
    if os.path.islink(manifest_path):
        raise BackupError(f"{MANIFEST} is a symbolic link; refused")
    try:
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError) as exc:
        raise BackupError(f"{MANIFEST} is unreadable: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{MANIFEST} is not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(f"backup format version {manifest.get('format_version')!r} is not "
                          f"supported (this tributary reads version {FORMAT_VERSION})")
    files = manifest.get("files")
    datasets = manifest.get("datasets")
    if not isinstance(files, list) or not isinstance(datasets, list):
        raise BackupError(f"{MANIFEST} lacks its files or datasets list")
    seen = set()
    shards_with_files = set()
    for entry in files:
        if not isinstance(entry, dict) or not isinstance(entry.get("size"), int) or \
                not isinstance(entry.get("sha256"), str):
            raise BackupError(f"{MANIFEST} has a malformed file entry: {entry!r}"[:200])
        path = check_relative(entry.get("path"))
        if path in seen:
            raise BackupError(f"{path!r} is listed twice in {MANIFEST}")
        seen.add(path)
        match = _SHARD_FILE.match(path)
        if path != CATALOG and match is None:
            raise BackupError(f"unexpected file {path!r} in {MANIFEST}")
        if match:
            shards_with_files.add((match.group(1), int(match.group(2))))
        full = contained(directory, path)
        if not os.path.isfile(full):
            raise BackupError(f"{path} is missing: the backup is incomplete")
        size = os.path.getsize(full)
        if size != entry["size"]:
            raise BackupError(f"{path} has {size} bytes, the manifest says {entry['size']}: "
                              "the backup is corrupt")
        if sha256_of(full) != entry["sha256"]:
            raise BackupError(f"{path} does not match its sha256: the backup is corrupt")
    if CATALOG not in seen:
        raise BackupError(f"{MANIFEST} lists no {CATALOG}")
    for dataset in datasets:
        if not isinstance(dataset, dict) or not isinstance(dataset.get("shard_count"), int):
            raise BackupError(f"{MANIFEST} has a malformed dataset entry")
        for shard in range(dataset["shard_count"]):
            if (dataset.get("uuid"), shard) not in shards_with_files:
                raise BackupError(f"shard {shard} of dataset {dataset.get('name')!r} has no "
                                  "files: the backup is incomplete")
    return manifest


def shard_files(manifest: dict, dataset_uuid: str, shard: int) -> list[dict]:
    """The manifest's files of one shard, their paths relative to the shard's directory."""
    prefix = f"shards/{dataset_uuid}/{shard}/"
    return [{**f, "path": f["path"][len(prefix):]} for f in manifest["files"]
            if f["path"].startswith(prefix)]


# ---- HTTP -------------------------------------------------------------------------------------

def _url(args, path: str) -> str:
    return args.url.rstrip("/").removesuffix("/api/v1") + path


def _open(args, method: str, path: str, body: dict | None = None, timeout: float | None = None):
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if args.api_key:
        headers["Authorization"] = f"Bearer {args.api_key}"
    request = urllib.request.Request(_url(args, path), data=data, method=method,
                                     headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout or args.timeout)
    except urllib.error.HTTPError as exc:
        raise BackupError(admin_cli.http_error_message(exc), exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        raise BackupError(f"cannot reach {_url(args, path)}: "
                          f"{getattr(exc, 'reason', exc)}") from None


def _call(args, method: str, path: str, body: dict | None = None) -> dict:
    with _open(args, method, path, body) as response:
        return json.loads(response.read() or b"{}")


def _read_exactly(stream, size: int) -> bytes:
    parts, left = [], size
    while left:
        part = stream.read(left)
        if not part:
            raise BackupError("the router's stream ended early")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _frames(stream):
    """(header, data) records of a shard stream (router/backups_admin.py)."""
    while True:
        head = stream.read(_HEADER.size)
        if not head:
            raise BackupError("the router's stream ended without its end mark")
        if len(head) < _HEADER.size:
            head += _read_exactly(stream, _HEADER.size - len(head))
        (length,) = _HEADER.unpack(head)
        header = json.loads(_read_exactly(stream, length))
        data = _read_exactly(stream, header.get("size", 0)) if header.get("size") else b""
        yield header, data
        if header.get("end") or header.get("error"):
            return


# ---- create -----------------------------------------------------------------------------------

def _progress(args, description: str, total: int):
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)
    progress = Progress(TextColumn(description), BarColumn(), DownloadColumn(),
                        TransferSpeedColumn(), TimeRemainingColumn(),
                        console=Console(stderr=True), disable=args.json or args.quiet)
    return progress


def _download_shard(args, directory: str, backup_id: str, dataset_uuid: str, shard: int,
                    advance) -> list[dict]:
    """Writes one shard's files under DIR/shards/<uuid>/<shard>/; returns their entries."""
    root = f"shards/{dataset_uuid}/{shard}"
    path = f"/api/v1/admin/backups/{backup_id}/shards/{dataset_uuid}/{shard}"
    last_error = ""
    for _attempt in range(limits.backup_shard_attempts_max):
        written: dict[str, tuple] = {}
        try:
            with _open(args, "GET", path, timeout=2 * limits.backup_export_idle_ms / 1000) as s:
                for header, data in _frames(s):
                    if "error" in header:
                        raise BackupError(f"{header['error']['type']}: "
                                          f"{header['error']['message']}")
                    if "end" in header:
                        break
                    if "path" not in header:
                        continue
                    relative = f"{root}/{check_relative(header['path'])}"
                    if relative not in written:
                        full = os.path.join(directory, *relative.split("/"))
                        os.makedirs(os.path.dirname(full), exist_ok=True)
                        written[relative] = (open(full, "wb"), hashlib.sha256(), [0])
                    handle, digest, size = written[relative]
                    handle.write(data)
                    digest.update(data)
                    size[0] += len(data)
                    advance(len(data))
            entries = []
            for relative, (handle, digest, size) in sorted(written.items()):
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
                entries.append({"path": relative, "size": size[0],
                                "sha256": digest.hexdigest()})
            return entries
        except (BackupError, OSError) as exc:      # OSError: the read timed out
            last_error = str(exc)
            exc = exc if isinstance(exc, BackupError) else BackupError(last_error)
            for handle, _, size in written.values():
                handle.close()
                advance(-size[0])
            shutil.rmtree(os.path.join(directory, *root.split("/")), True)
            if exc.status == 404 and "deleted since the backup's cut" in last_error:
                raise DatasetGone(last_error, 404) from None
            time.sleep(min(2.0 ** _attempt, 10.0))   # a node restarting, a failover
    raise BackupError(f"shard {shard} of {dataset_uuid}: {last_error}")


def _write_json(path: str, doc: dict) -> tuple[int, str]:
    data = json.dumps(doc, indent=2, sort_keys=True).encode()
    with open(path + ".tmp", "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(path + ".tmp", path)
    return len(data), hashlib.sha256(data).hexdigest()


def create_backup(args) -> dict:
    directory = os.path.abspath(args.to)
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise BackupError(f"{directory} is not empty; a backup goes into an empty or new "
                          "directory")
    body = {}
    if args.dataset:
        body["datasets"] = args.dataset
    if args.tenant:
        body["tenant_id"] = args.tenant
    started = time.monotonic()
    job = _call(args, "POST", "/api/v1/admin/backups", body)["backup"]
    backup_id = job["backup_id"]
    os.makedirs(directory, exist_ok=True)
    catalog = _call(args, "GET", f"/api/v1/admin/backups/{backup_id}/catalog")
    files: list[dict] = []
    gone: list[str] = []
    with _progress(args, "backup", job["progress"]["bytes_total"]) as progress:
        task = progress.add_task("backup", total=max(1, job["progress"]["bytes_total"]))
        done = [0]

        def advance(count: int) -> None:
            done[0] += count
            progress.update(task, completed=done[0],
                            total=max(done[0], progress.tasks[0].total or 1))
        for dataset in job["datasets"]:
            try:
                for shard in range(dataset["shard_count"]):
                    files += _download_shard(args, directory, backup_id, dataset["uuid"],
                                             shard, advance)
            except DatasetGone:
                # Deleted after its cut: its files are gone with it, so the backup leaves the
                # dataset out (its catalog copy too), as if taken after the deletion.
                gone.append(dataset["name"])
                files = [f for f in files if not f["path"].startswith(
                    f"shards/{dataset['uuid']}/")]
                shutil.rmtree(os.path.join(directory, "shards", dataset["uuid"]), True)
                catalog.get("datasets", {}).pop(dataset["uuid"], None)
    datasets = [d for d in job["datasets"] if d["name"] not in gone]
    size, digest = _write_json(os.path.join(directory, CATALOG), catalog)
    files.insert(0, {"path": CATALOG, "size": size, "sha256": digest})
    total = sum(f["size"] for f in files)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "backup_id": backup_id,
                "created_at_ms": job["created_at_ms"], "completed_at_ms": int(time.time() * 1000),
                "source": {"url": args.url}, "datasets": datasets, "files": files,
                "total_bytes": total, "left_out_deleted": gone}
    _write_json(os.path.join(directory, MANIFEST), manifest)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        _call(args, "POST", f"/api/v1/admin/backups/{backup_id}/complete",
              {"files": len(files), "bytes": total})
    except BackupError:
        pass    # the backup is complete on disk; the router's job record is only a report
    return {"backup_id": backup_id, "directory": directory, "files": len(files),
            "bytes": total, "seconds": round(time.monotonic() - started, 2),
            "datasets": [{"name": d["name"], "tenant_id": d["tenant_id"],
                          "vectors": d["cut"]["vector_count"],
                          "cut_fence_ms": d["cut"]["fence_ms"]} for d in datasets],
            "left_out_deleted": gone}


# ---- restore ----------------------------------------------------------------------------------

def _chosen(args, manifest: dict) -> list[dict]:
    datasets = manifest["datasets"]
    if not args.dataset:
        if args.as_name:
            raise BackupError("--as needs --dataset")
        return [{"uuid": d["uuid"], "source": d} for d in datasets]
    if len(args.dataset) != 1 and args.as_name:
        raise BackupError("--as renames one dataset: give one --dataset")
    chosen = []
    for name in args.dataset:
        found = [d for d in datasets if d["name"] == name and
                 (not args.tenant or d["tenant_id"] == args.tenant)]
        if not found:
            raise BackupError(f"the backup holds no dataset {name!r}")
        if len(found) > 1:
            raise BackupError(f"the backup holds {name!r} in several tenants: give --tenant")
        chosen.append({"uuid": found[0]["uuid"], "name": args.as_name or name,
                       "source": found[0]})
    return chosen


def _upload_shard(args, directory: str, base: str, dataset_uuid: str, shard: int,
                  entries: list[dict], advance) -> int:
    """Sends one shard's files to the router in pieces (each staged on the shard's current
    primary); returns the bytes sent."""
    piece = limits.backup_upload_piece_bytes_max
    sent = 0
    for entry in entries:
        full = contained(directory, f"shards/{dataset_uuid}/{shard}/{entry['path']}")
        with open(full, "rb") as handle:
            offset = 0
            while True:
                data = handle.read(piece)
                if data or offset == 0:
                    _call(args, "PUT", base, {"path": entry["path"], "offset": offset,
                                              "data": base64.b64encode(data).decode()})
                    advance(len(data))
                    sent += len(data)
                offset += len(data)
                if len(data) < piece:
                    break
    return sent


def _restore_shard(args, directory: str, base: str, dataset_uuid: str, shard: int,
                   entries: list[dict], advance) -> dict:
    """Uploads one shard's files and installs them; returns the install's answer. Pieces are
    staged on the shard's primary, so when the primary changed during the upload (a failover:
    the install finds the staged set short) or a node was briefly away, the shard is sent
    again from the start (same bytes at the same offsets), up to backup_shard_attempts_max
    times. Nothing is installed until the staged set matches the manifest."""
    last = None
    for attempt in range(limits.backup_shard_attempts_max):
        sent = 0
        try:
            sent = _upload_shard(args, directory, base, dataset_uuid, shard, entries, advance)
            return _call(args, "POST", f"{base}/install", {"files": [
                {"path": e["path"], "size": e["size"], "sha256": e["sha256"]}
                for e in entries]})
        except BackupError as exc:
            again = exc.status == 503 or (exc.status == 400 and
                                          "does not match its manifest" in str(exc))
            if not again:
                raise
            last = exc
            advance(-sent)
            time.sleep(min(2.0 ** attempt, 10.0))
    raise BackupError(f"shard {shard} of {dataset_uuid}: {last}", last.status)


def restore_backup(args) -> dict:
    directory = os.path.abspath(args.source)
    manifest = verify_backup(directory)
    with open(os.path.join(directory, CATALOG), encoding="utf-8") as handle:
        catalog = json.load(handle)
    chosen = _chosen(args, manifest)
    started = time.monotonic()
    total = sum(f["size"] for c in chosen for s in range(c["source"]["shard_count"])
                for f in shard_files(manifest, c["uuid"], s))
    job = _call(args, "POST", "/api/v1/admin/restores", {
        "catalog": catalog, "full": not args.dataset, "bytes_total": total,
        "datasets": [{"uuid": c["uuid"], **({"name": c["name"]} if "name" in c else {})}
                     for c in chosen]})["restore"]
    restore_id = job["restore_id"]
    targets = {d["source_uuid"]: d for d in job["datasets"]}
    try:
        with _progress(args, "restore", total) as progress:
            task = progress.add_task("restore", total=max(1, total))
            for c in chosen:
                source = c["source"]
                for shard in range(source["shard_count"]):
                    base = f"/api/v1/admin/restores/{restore_id}/shards/{c['uuid']}/{shard}"
                    entries = shard_files(manifest, c["uuid"], shard)
                    answer = _restore_shard(args, directory, base, c["uuid"], shard, entries,
                                            lambda count: progress.advance(task, count))
                    expected = source["cut"]["shards"][shard]["vector_count"]
                    if answer["vector_count"] != expected:
                        raise BackupError(f"shard {shard} of {source['name']} holds "
                                          f"{answer['vector_count']} vectors after the restore, "
                                          f"the backup's cut {expected}")
        if args.wait:
            _wait_in_sync(args, [targets[c["uuid"]] for c in chosen])
    except (BackupError, KeyboardInterrupt):
        try:
            _call(args, "POST", f"/api/v1/admin/restores/{restore_id}/abort", {})
        except BackupError:
            pass
        raise
    return {"restore_id": restore_id, "bytes": total,
            "seconds": round(time.monotonic() - started, 2),
            "datasets": [{"name": targets[c["uuid"]]["name"],
                          "tenant_id": targets[c["uuid"]]["tenant_id"],
                          "vectors": c["source"]["cut"]["vector_count"]} for c in chosen]}


def _wait_in_sync(args, targets: list[dict]) -> None:
    """Until every restored shard has all its copies in sync again (they copy the restored
    primary's files), bounded by --wait-timeout."""
    deadline = time.monotonic() + args.wait_timeout
    while True:
        behind = []
        for target in targets:
            name = urllib.parse.quote(target["name"], safe="")
            tenant = urllib.parse.quote(target["tenant_id"], safe="")
            doc = _call(args, "GET", f"/admin/datasets/{name}?tenant_id={tenant}")
            behind += [f"{target['name']}/{s['shard']}" for s in doc["shards"]
                       if not all(c["in_sync"] for c in s["copies"])]
        if not behind:
            return
        if time.monotonic() > deadline:
            raise BackupError(f"copies of {', '.join(behind[:5])} are not in sync after "
                              f"{args.wait_timeout:.0f} s")
        time.sleep(0.5)


# ---- command line -----------------------------------------------------------------------------

def _run(func, args) -> None:
    try:
        doc = func(args)
    except BackupError as exc:
        raise SystemExit(f"tributary admin backup: {exc}") from None
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    elif not args.quiet:
        print(json.dumps(doc, sort_keys=True))


def create(args) -> None:
    _run(create_backup, args)


def restore(args) -> None:
    _run(restore_backup, args)


def add_parsers(admin_sub, command) -> None:
    """`backup create` and `backup restore` under `tributary admin`; `command` is
    cluster_cli._command (the common flags)."""
    sub = admin_sub.add_parser("backup", help="consistent cluster backups and restores"
                               ).add_subparsers(dest="backup_command", required=True)
    p = command(sub, "create", "back the cluster up into an empty directory", create,
                wait="the backup is complete")
    p.add_argument("--to", required=True, help="the directory (new or empty)")
    p.add_argument("--dataset", action="append", default=[],
                   help="only this dataset (repeatable; default: every dataset)")
    p.add_argument("--tenant", default=None)
    p.add_argument("--quiet", action="store_true", help="no progress, no summary")
    p = command(sub, "restore", "restore a backup into the cluster", restore,
                wait="every restored shard has all its copies in sync")
    p.add_argument("--from", dest="source", required=True, help="the backup's directory")
    p.add_argument("--dataset", action="append", default=[],
                   help="only this dataset (default: all, into a cluster without them)")
    p.add_argument("--as", dest="as_name", default=None,
                   help="the restored dataset's name (with one --dataset)")
    p.add_argument("--tenant", default=None)
    p.add_argument("--quiet", action="store_true", help="no progress, no summary")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `tributary admin backup create|restore ...`")
