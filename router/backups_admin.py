"""Cluster backups and restores over the admin API (`tributary admin backup create | restore`,
tributary/backup_cli.py). Admin credential. The data travels through this router, so the CLI
can run on any machine that reaches it: nodes export and import shards over internal gRPC
(node/backup.py), the router relays.

    POST /api/v1/admin/backups                  {datasets?: [name], tenant_id?}  take a backup:
                                                one consistent cut per dataset (router/cut.py),
                                                and the catalog as it is now; 201 with the job
    GET  /api/v1/admin/backups                  the jobs this router holds
    GET  /api/v1/admin/backups/{backup_id}      one job, with progress (bytes, ETA)
    GET  /api/v1/admin/backups/{backup_id}/catalog   the catalog document of the backup
    GET  /api/v1/admin/backups/{backup_id}/shards/{dataset_uuid}/{shard}
                                                the shard's files at its cut position, framed
                                                (below); a copy the cut marked exports them
    POST /api/v1/admin/backups/{backup_id}/complete  {files, bytes}  the client wrote it all
    POST /api/v1/admin/restores                 {catalog, datasets: [{uuid, name}], full}
                                                creates the datasets (409 if a name exists,
                                                before anything is created), and in a full
                                                restore the tenants and keys that are missing
    GET  /api/v1/admin/restores/{restore_id}    progress
    PUT  /api/v1/admin/restores/{restore_id}/shards/{dataset_uuid}/{shard}
                                                {path, offset, data (base64)}: one piece of a
                                                file, staged on the shard's primary
    POST /api/v1/admin/restores/{restore_id}/shards/{dataset_uuid}/{shard}/install
                                                {files: [{path, size, sha256}]}: check, swap in
    POST /api/v1/admin/restores/{restore_id}/abort   drop every dataset (and tenant and key)
                                                the restore created: nothing stays half-written

The framing of a shard's stream: records of a 4-byte big-endian header length, a JSON header,
then `size` raw bytes. The first header is {"position": {...}}; {"keepalive": true} while the
node copies the rows; {"total_bytes": N}; then one {"path", "size"} per piece of a file, in
order; the last {"end": true, "bytes": N}. A failure
midway is a last {"error": {"type", "message"}} header; the client discards the shard's files
and asks again.

Jobs live in the memory of the router that started them (restart: take the backup again), at
most `backup_jobs_max`; one idle for `backup_job_idle_ms` is forgotten. What the catalog copy
holds: tenants, API keys (by hash, as the catalog stores them) and each dataset's definition.
What it leaves out, because it belongs to the running cluster and not to its data: nodes,
placement, copies, in-sync sets, terms and epochs (a restore plans its own), 2PC decisions and
tombstones, idempotency records (a key replayed against the restored cluster must not answer
with an outcome that cluster never produced), moves and version tags (they name Deep Lake
commits of the source's stores, which a backup does not carry).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import re
import struct
import time
import uuid

from aiohttp import web

from consensus import commands
from consensus.state import DEFAULT_TENANT
from proto import deeplake_service_pb2 as pb
from proto import node_pb2
from router import auth
from router.http_common import read_json_body, served_core
from tributary import errors, limits, validation

log = logging.getLogger("tributary.router.backups")

PREFIX = "/api/v1/admin"
FORMAT = "tributary-backup"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">I")
_HEX = re.compile(r"^[0-9a-f]{32}$")




def _now_ms() -> int:
    return int(time.time() * 1000)


def frame(header: dict, data: bytes = b"") -> bytes:
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return _HEADER.pack(len(encoded)) + encoded + data


def progress_doc(started: float, done: int, total: int, shards_done: int,
                 shards_total: int) -> dict:
    """Bytes so far against the (estimated) total, the rate and the time left at that rate."""
    elapsed = max(time.monotonic() - started, 1e-3)
    rate = done / elapsed
    total = max(total, done)
    left = (total - done) / rate if rate > 0 else None
    return {"bytes_done": done, "bytes_total": total, "shards_done": shards_done,
            "shards_total": shards_total, "elapsed_s": round(elapsed, 1),
            "rate_bytes_s": round(rate), "eta_s": None if left is None else round(left, 1)}


# ---- backup -----------------------------------------------------------------------------------

@dataclasses.dataclass
class BackupJob:
    backup_id: str
    created_at_ms: int
    catalog: dict
    datasets: list[dict]            # each: the dataset's definition and its cut
    estimates: dict[str, int]       # "uuid/shard" -> bytes expected (the real size once known)
    started: float = dataclasses.field(default_factory=time.monotonic)
    seen: float = dataclasses.field(default_factory=time.monotonic)
    sent: dict[str, int] = dataclasses.field(default_factory=dict)
    finished_shards: set = dataclasses.field(default_factory=set)
    state: str = "ready"
    completed: dict | None = None

    def doc(self) -> dict:
        shards_total = sum(d["shard_count"] for d in self.datasets)
        return {"backup_id": self.backup_id, "state": self.state,
                "created_at_ms": self.created_at_ms, "format": FORMAT,
                "format_version": FORMAT_VERSION, "datasets": self.datasets,
                "completed": self.completed,
                "progress": progress_doc(self.started, sum(self.sent.values()),
                                         sum(self.estimates.values()),
                                         len(self.finished_shards), shards_total)}


class Jobs:
    """The backup and restore jobs of this router, bounded in number and idle time."""

    def __init__(self):
        self.backups: dict[str, BackupJob] = {}
        self.restores: dict[str, "RestoreJob"] = {}

    def _trim(self, table: dict) -> None:
        now = time.monotonic()
        for key, job in list(table.items()):
            if now - job.seen > limits.backup_job_idle_ms / 1000:
                del table[key]
        while len(table) >= limits.backup_jobs_max:
            del table[min(table, key=lambda k: table[k].seen)]

    def add_backup(self, job: BackupJob) -> None:
        self._trim(self.backups)
        self.backups[job.backup_id] = job

    def add_restore(self, job: "RestoreJob") -> None:
        self._trim(self.restores)
        self.restores[job.restore_id] = job

    def backup(self, backup_id: str) -> BackupJob:
        job = self.backups.get(backup_id)
        if job is None:
            raise errors.NotFound(f"backup '{backup_id}' not found on this router")
        job.seen = time.monotonic()
        return job

    def restore(self, restore_id: str) -> "RestoreJob":
        job = self.restores.get(restore_id)
        if job is None:
            raise errors.NotFound(f"restore '{restore_id}' not found on this router")
        job.seen = time.monotonic()
        return job


_JOBS = web.AppKey("backup_jobs", Jobs)


def _jobs(request: web.Request) -> Jobs:
    return request.app[_JOBS]


def catalog_doc(state) -> dict:
    """What a backup keeps of the catalog (see the module docstring for what it leaves out)."""
    return {
        "tenants": {k: dataclasses.asdict(v) for k, v in state.tenants.items()},
        "api_keys": {k: {**dataclasses.asdict(v), "datasets": list(v.datasets)}
                     for k, v in state.api_keys.items()},
        "datasets": {r.uuid: dataset_definition(r) for r in state.datasets.values()},
    }


def dataset_definition(record) -> dict:
    return {"uuid": record.uuid, "tenant_id": record.tenant_id, "name": record.name,
            "description": record.description, "dimensions": record.dimensions,
            "metric_type": record.metric_type, "index_type": record.index_type,
            "metadata": dict(record.metadata), "shard_count": record.shard_count,
            "replication_factor": record.replication_factor,
            "created_at_ms": record.created_at_ms}


async def _cut(core, record, deadline: float) -> dict:
    """The dataset's consistent cut, tried up to backup_cut_attempts_max times while the
    failure is retriable and `deadline` (time.monotonic()) has not passed: every attempt may
    wait, unfenced, for a shard whose node is down (router/cut.py step 0)."""
    from router.cut import consistent_cut   # the primitive of router/cut.py
    last: errors.TributaryError | None = None
    cut = None
    for attempt in range(limits.backup_cut_attempts_max):
        if attempt and time.monotonic() >= deadline:
            break
        try:
            cut = await consistent_cut(core, record, settle_deadline=deadline)
            break
        except errors.TributaryError as exc:
            if not exc.retriable:
                raise
            last = exc
            await core.catalog.refresh(linearizable=True)
            record = core.catalog.state.datasets.get(record.uuid) or record
    if cut is None:
        raise errors.Unavailable(f"could not take a consistent cut of '{record.name}': "
                                 f"{last.message if last else 'no attempt'}")
    return {"cut_id": cut.cut_id, "at_ms": cut.at_ms, "fence_ms": cut.fence_ms,
            "deeplake_tag": cut.deeplake_tag, "vector_count": cut.vector_count,
            "shards": [{"shard": s.shard, "primary": s.primary, "commit_id": s.commit_id,
                        "seq": s.seq, "term": s.term, "vector_count": s.vector_count,
                        "marked": [list(m) for m in s.marked]} for s in cut.shards]}


async def create_backup(core, jobs: Jobs, doc: dict) -> BackupJob:
    """Takes the cuts and the catalog copy; the shards' files are exported as the client asks
    for them (each from a copy that the cut marked, at its recorded commit)."""
    unknown = set(doc) - {"datasets", "tenant_id"}
    if unknown:
        raise errors.InvalidArgument(f"unknown field(s) {sorted(unknown)}")
    names = doc.get("datasets")
    if names is not None and (not isinstance(names, list) or
                              not all(isinstance(n, str) for n in names)):
        raise errors.InvalidArgument("'datasets' must be a list of dataset names")
    tenant = doc.get("tenant_id")
    if tenant is not None and not isinstance(tenant, str):
        raise errors.InvalidArgument("'tenant_id' must be a string")
    await core.catalog.refresh(linearizable=True)
    state = core.catalog.state
    if names is None:
        records = sorted(state.datasets.values(), key=lambda r: (r.tenant_id, r.name))
        if tenant:
            records = [r for r in records if r.tenant_id == tenant]
    else:
        records = [await core.dataset(tenant or "", name) for name in names]
    datasets, estimates = [], {}
    # The cuts of every dataset end within backup_cut_wait_ms, so the request answers in time.
    deadline = time.monotonic() + limits.backup_cut_wait_ms / 1000
    for record in list(records):
        try:
            cut = await _cut(core, record, deadline)
        except errors.NotFound:
            if names is not None:
                raise
            records.remove(record)     # deleted meanwhile: a backup of the cluster after it
            continue
        datasets.append({**dataset_definition(record), "cut": cut})
        for shard in cut["shards"]:
            # Rows times dimensions as float32, twice over for the other columns: an estimate
            # for the ETA until the export says its real size.
            estimates[f"{record.uuid}/{shard['shard']}"] = \
                shard["vector_count"] * record.dimensions * 4 * 2
    catalog = catalog_doc(state)
    # Datasets left out of a partial backup are left out of its catalog copy as well.
    chosen = {r.uuid for r in records}
    catalog["datasets"] = {k: v for k, v in catalog["datasets"].items() if k in chosen}
    job = BackupJob(uuid.uuid4().hex, _now_ms(), catalog, datasets, estimates)
    jobs.add_backup(job)
    log.info("backup %s: cut %d dataset(s), fences %s ms", job.backup_id, len(datasets),
             [d["cut"]["fence_ms"] for d in datasets])
    return job


async def shard_stream(core, job: BackupJob, dataset_uuid: str, shard: int):
    """Frames of the shard's export, from the first marked copy that answers."""
    dataset = next((d for d in job.datasets if d["uuid"] == dataset_uuid), None)
    if dataset is None or not 0 <= shard < dataset["shard_count"]:
        raise errors.NotFound(f"backup {job.backup_id} holds no shard {dataset_uuid}/{shard}")
    position = dataset["cut"]["shards"][shard]
    key = f"{dataset_uuid}/{shard}"
    await core.catalog.refresh()
    record = core.catalog.state.datasets.get(dataset_uuid)
    if record is None:
        raise errors.NotFound(f"dataset {dataset['name']} was deleted since the backup's cut")
    ref = node_pb2.ShardRef(dataset_uuid=dataset_uuid, shard=shard, epoch=record.epoch)
    failures = []
    for node_id, commit_id in position["marked"]:
        node = core.catalog.state.nodes.get(node_id)
        if node is None:
            continue
        request = node_pb2.ExportShardRequest(shard=ref, version=commit_id,
                                              last_seq=position["seq"],
                                              tag=dataset["cut"]["deeplake_tag"])
        started = False
        chunks = core.shards.export_shard(node.address, request)
        try:
            while True:
                try:
                    # A node that stops sending (keepalives included) is taken for dead.
                    chunk = await asyncio.wait_for(chunks.__anext__(),
                                                   limits.backup_export_idle_ms / 1000)
                except StopAsyncIteration:
                    break
                except asyncio.TimeoutError:
                    raise errors.Unavailable(f"node {node_id} sent nothing for "
                                             f"{limits.backup_export_idle_ms} ms") from None
                if not started:
                    started = True
                    job.sent[key] = 0
                    yield frame({"position": {**position, "exported_by": node_id}})
                elif chunk.total_bytes:
                    job.estimates[key] = chunk.total_bytes
                    yield frame({"total_bytes": chunk.total_bytes})
                elif chunk.path:
                    job.sent[key] += len(chunk.data)
                    job.seen = time.monotonic()
                    yield frame({"path": chunk.path, "size": len(chunk.data)}, chunk.data)
                else:
                    yield frame({"keepalive": True})
            job.finished_shards.add(key)
            yield frame({"end": True, "bytes": job.sent.get(key, 0)})
            return
        except errors.TributaryError as exc:
            if started:
                yield frame({"error": {"type": type(exc).__name__, "message": exc.message}})
                return
            failures.append(f"{node_id}: {exc.message}")
        finally:
            await chunks.aclose()
    raise errors.Unavailable(f"no copy marked by the cut could export shard {shard} of "
                             f"{dataset['name']}: {'; '.join(failures) or 'none is registered'}")


# ---- restore ----------------------------------------------------------------------------------

@dataclasses.dataclass
class RestoreJob:
    restore_id: str
    created_at_ms: int
    datasets: dict[str, dict]       # source uuid -> {tenant_id, name, uuid, shard_count}
    created_tenants: list[str]
    created_keys: list[str]
    bytes_total: int
    started: float = dataclasses.field(default_factory=time.monotonic)
    seen: float = dataclasses.field(default_factory=time.monotonic)
    received: int = 0
    installed: dict[str, int] = dataclasses.field(default_factory=dict)
    state: str = "uploading"

    def doc(self) -> dict:
        shards_total = sum(d["shard_count"] for d in self.datasets.values())
        return {"restore_id": self.restore_id, "state": self.state,
                "created_at_ms": self.created_at_ms,
                "datasets": [{"source_uuid": k, **v} for k, v in self.datasets.items()],
                "installed": self.installed,
                "progress": progress_doc(self.started, self.received, self.bytes_total,
                                         len(self.installed), shards_total)}


def _field(doc: dict, name: str, kind, required: bool = True):
    value = doc.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise errors.InvalidArgument(f"'{name}' must be a {getattr(kind, '__name__', kind)}")
    return value


def _definition(source: dict) -> dict:
    """A dataset definition from a backup's catalog, checked as a create request would be."""
    if not isinstance(source, dict):
        raise errors.InvalidArgument("each dataset definition must be an object")
    shard_count = _field(source, "shard_count", int)
    if not 1 <= shard_count <= limits.shard_count_max:
        raise errors.InvalidArgument(f"shard_count must be between 1 and "
                                     f"{limits.shard_count_max}")
    return {"tenant_id": validation.check_name(_field(source, "tenant_id", str), "tenant id"),
            "name": validation.check_name(_field(source, "name", str)),
            "description": _field(source, "description", str, required=False) or "",
            "dimensions": validation.check_dimensions(_field(source, "dimensions", int)),
            "metric_type": validation.check_metric(_field(source, "metric_type", str)),
            "index_type": validation.check_index_type(_field(source, "index_type", str)),
            "metadata": validation.check_metadata(
                _field(source, "metadata", dict, required=False) or {}),
            "shard_count": shard_count,
            "replication_factor": max(1, _field(source, "replication_factor", int))}


# What a restore request must satisfy beyond its JSON Schema (router/openapi.STATEFUL_RULES):
# its 400s say "the backup's catalog".
STATEFUL_RULE = (r"the backup's catalog",
                 "a restore's `catalog` is a backup's catalog document (GET /api/v1/admin/"
                 "backups/{backup_id}/catalog) that defines every dataset the restore names")


async def start_restore(core, jobs: Jobs, doc: dict) -> RestoreJob:
    """Creates what the restore needs in the catalog. Every check runs before the first
    change; a change that fails is undone (abort_restore) before the error is returned."""
    try:
        return await _start_restore(core, jobs, doc)
    except errors.InvalidArgument as exc:
        raise errors.InvalidArgument(f"the backup's catalog is not usable: {exc.message}"
                                     ) from None


async def _start_restore(core, jobs: Jobs, doc: dict) -> RestoreJob:
    unknown = set(doc) - {"catalog", "datasets", "full", "bytes_total"}
    if unknown:
        raise errors.InvalidArgument(f"unknown field(s) {sorted(unknown)}")
    catalog = _field(doc, "catalog", dict)
    wanted = _field(doc, "datasets", list)
    full = bool(_field(doc, "full", bool, required=False))
    bytes_total = _field(doc, "bytes_total", int, required=False) or 0
    if not wanted:
        raise errors.InvalidArgument("'datasets' names no dataset to restore")
    definitions = catalog.get("datasets")
    if not isinstance(definitions, dict):
        raise errors.InvalidArgument("the catalog holds no 'datasets' object")
    plan = {}
    for item in wanted:
        if not isinstance(item, dict) or not isinstance(item.get("uuid"), str):
            raise errors.InvalidArgument("each of 'datasets' must be {uuid, name?}")
        source = definitions.get(item["uuid"])
        if source is None:
            raise errors.InvalidArgument(f"the catalog holds no dataset {item['uuid']!r}")
        definition = _definition(source)
        if item.get("name") is not None:
            definition["name"] = validation.check_name(_field(item, "name", str))
        if item["uuid"] in plan:
            raise errors.InvalidArgument(f"dataset {item['uuid']} is named twice")
        plan[item["uuid"]] = definition
    targets = [(d["tenant_id"], d["name"]) for d in plan.values()]
    if len(set(targets)) != len(targets):
        raise errors.InvalidArgument("two restored datasets would have the same name")
    await core.catalog.refresh(linearizable=True)
    state = core.catalog.state
    for tenant, name in targets:
        if state.dataset_by_name(tenant, name) is not None:
            raise errors.AlreadyExists(f"dataset '{name}' already exists in tenant '{tenant}'; "
                                       "restore it under another name (--as NEW)")
    job = RestoreJob(uuid.uuid4().hex, _now_ms(), {}, [], [], bytes_total)
    try:
        if full:
            await _restore_tenants_and_keys(core, job, catalog)
        for source_uuid, d in plan.items():
            live = list((await core.meta.leader_status()).live_nodes)
            created = await core.create_dataset(pb.CreateDatasetRequest(
                tenant_id=d["tenant_id"], name=d["name"], description=d["description"],
                dimensions=d["dimensions"], metric_type=d["metric_type"],
                index_type=d["index_type"], metadata=d["metadata"],
                shard_count=d["shard_count"],
                replication_factor=min(d["replication_factor"], max(1, len(live)))))
            record = await core.dataset(d["tenant_id"], created.dataset.name)
            job.datasets[source_uuid] = {"tenant_id": record.tenant_id, "name": record.name,
                                         "uuid": record.uuid,
                                         "shard_count": record.shard_count}
    except BaseException:
        await abort_restore(core, job)
        raise
    jobs.add_restore(job)
    return job


async def _restore_tenants_and_keys(core, job: RestoreJob, catalog: dict) -> None:
    state = core.catalog.state
    tenants = catalog.get("tenants") or {}
    keys = catalog.get("api_keys") or {}
    if not isinstance(tenants, dict) or not isinstance(keys, dict):
        raise errors.InvalidArgument("the catalog's tenants and api_keys must be objects")
    for tenant_id, tenant in sorted(tenants.items()):
        if tenant_id in state.tenants or tenant_id == DEFAULT_TENANT:
            continue
        if not isinstance(tenant, dict):
            raise errors.InvalidArgument(f"tenant {tenant_id!r} must be an object")
        answer = await core.meta.propose(commands.ProvisionTenant(
            validation.check_name(tenant_id, "tenant id"), str(tenant.get("name") or ""),
            dict(tenant.get("quotas") or {}), str(tenant.get("status") or "active"),
            _now_ms()))
        if "error" in answer:
            raise errors.InvalidArgument(f"tenant {tenant_id!r}: "
                                         f"{answer['error'].get('message')}")
        job.created_tenants.append(tenant_id)
    for key_id, key in sorted(keys.items()):
        if key_id in state.api_keys:
            continue
        if not isinstance(key, dict) or not re.fullmatch(r"[0-9a-f]{64}",
                                                         str(key.get("key_hash"))):
            raise errors.InvalidArgument(f"API key {key_id!r} has no sha256 key_hash")
        answer = await core.meta.propose(commands.CreateApiKey(
            str(key_id), key["key_hash"], str(key.get("tenant_id") or ""),
            str(key.get("role") or "tenant"), str(key.get("access") or "read_write"),
            tuple(str(d) for d in key.get("datasets") or ()), str(key.get("description") or ""),
            _now_ms()))
        if "error" in answer:
            raise errors.InvalidArgument(f"API key {key_id!r}: "
                                         f"{answer['error'].get('message')}")
        job.created_keys.append(key_id)
    await core.catalog.refresh()


def _target(job: RestoreJob, source_uuid: str, shard: int) -> dict:
    target = job.datasets.get(source_uuid)
    if target is None or not 0 <= shard < target["shard_count"]:
        raise errors.NotFound(f"restore {job.restore_id} has no shard {source_uuid}/{shard}")
    return target


async def restore_piece(core, job: RestoreJob, source_uuid: str, shard: int, doc: dict) -> int:
    target = _target(job, source_uuid, shard)
    if job.state != "uploading":
        raise errors.InvalidArgument(f"restore {job.restore_id} is {job.state}")
    path = _field(doc, "path", str)
    offset = _field(doc, "offset", int)
    if offset < 0:
        raise errors.InvalidArgument("'offset' must not be negative")
    try:
        data = base64.b64decode(_field(doc, "data", str), validate=True)
    except ValueError:
        raise errors.InvalidArgument("'data' must be base64") from None
    request = node_pb2.RestoreChunkRequest(restore_id=job.restore_id, path=path,
                                           offset=offset, data=data)

    async def send(_record, address, ref):
        request.shard.CopyFrom(ref)
        return await core.shards.restore_chunk(address, request)
    answer = await core.on_shard(target["tenant_id"], target["name"], shard, send)
    job.received += len(data)
    return answer.size


async def install_shard(core, job: RestoreJob, source_uuid: str, shard: int, doc: dict) -> int:
    target = _target(job, source_uuid, shard)
    files = _field(doc, "files", list)
    request = node_pb2.InstallRestoreRequest(restore_id=job.restore_id)
    for item in files:
        if not isinstance(item, dict):
            raise errors.InvalidArgument("each of 'files' must be {path, size, sha256}")
        request.files.add(path=_field(item, "path", str), size=_field(item, "size", int),
                          sha256=_field(item, "sha256", str))

    async def install(_record, address, ref):
        request.shard.CopyFrom(ref)
        return await core.shards.install_restore(address, request)
    answer = await core.on_shard(target["tenant_id"], target["name"], shard, install)
    job.installed[f"{source_uuid}/{shard}"] = answer.vector_count
    if len(job.installed) == sum(d["shard_count"] for d in job.datasets.values()):
        job.state = "installed"
    return answer.vector_count


async def abort_restore(core, job: RestoreJob) -> dict:
    """Undoes the restore: its datasets (and their staged files), then the keys and tenants
    it created. Best effort per item, so one failure does not keep the others."""
    dropped = []
    for source_uuid, target in list(job.datasets.items()):
        for shard in range(target["shard_count"]):
            async def discard(_record, address, ref):
                return await core.shards.install_restore(address, node_pb2.InstallRestoreRequest(
                    shard=ref, restore_id=job.restore_id, discard=True))
            try:
                await core.on_shard(target["tenant_id"], target["name"], shard, discard)
            except errors.TributaryError:
                pass    # removed with the shard, or when its node next starts
        try:
            await core.delete_dataset(pb.DeleteDatasetRequest(tenant_id=target["tenant_id"],
                                                              dataset_id=target["name"]))
            dropped.append(target["name"])
        except errors.NotFound:
            pass
        except errors.TributaryError as exc:
            log.warning("restore %s: could not drop %s: %s", job.restore_id, target["name"],
                        exc.message)
    for key_id in job.created_keys:
        try:
            await core.meta.propose(commands.RevokeApiKey(key_id, _now_ms()))
        except errors.TributaryError:
            pass
    for tenant_id in job.created_tenants:
        try:
            await core.meta.propose(commands.DeleteTenant(tenant_id, _now_ms()))
        except errors.TributaryError:
            pass
    job.state = "aborted"
    return {"restore_id": job.restore_id, "state": job.state, "dropped": dropped}


# ---- REST -------------------------------------------------------------------------------------

def _shard_of(request: web.Request) -> tuple[str, int]:
    dataset_uuid = request.match_info["dataset_uuid"]
    try:
        shard = int(request.match_info["shard"])
        uuid.UUID(dataset_uuid)
    except ValueError:
        raise errors.NotFound("no such shard") from None
    return dataset_uuid, shard


async def post_backup(request: web.Request) -> web.Response:
    auth.require_admin_here(True)
    body = await read_json_body(request) if request.body_exists else {}
    job = await create_backup(served_core(request), _jobs(request), body)
    return web.json_response({"backup": job.doc()}, status=201)


async def list_backups(request: web.Request) -> web.Response:
    auth.require_admin_here(False)
    jobs = _jobs(request)
    return web.json_response({"backups": [j.doc() for j in jobs.backups.values()]})


async def get_backup(request: web.Request) -> web.Response:
    auth.require_admin_here(False)
    return web.json_response({"backup": _jobs(request).backup(
        request.match_info["backup_id"]).doc()})


async def get_backup_catalog(request: web.Request) -> web.Response:
    auth.require_admin_here(False)
    return web.json_response(_jobs(request).backup(request.match_info["backup_id"]).catalog)


async def get_backup_shard(request: web.Request) -> web.StreamResponse:
    auth.require_admin_here(False)
    job = _jobs(request).backup(request.match_info["backup_id"])
    dataset_uuid, shard = _shard_of(request)
    frames = shard_stream(served_core(request), job, dataset_uuid, shard)
    first = await frames.__anext__()     # errors before the first byte are a plain answer
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await response.prepare(request)
    try:
        await response.write(first)
        async for data in frames:
            await response.write(data)
    finally:
        await frames.aclose()   # a client that went away stops the node's export too
    await response.write_eof()
    return response


async def complete_backup(request: web.Request) -> web.Response:
    auth.require_admin_here(True)
    job = _jobs(request).backup(request.match_info["backup_id"])
    doc = await read_json_body(request)
    job.completed = {"files": _field(doc, "files", int), "bytes": _field(doc, "bytes", int),
                     "at_ms": _now_ms()}
    job.state = "complete"
    return web.json_response({"backup": job.doc()})


async def post_restore(request: web.Request) -> web.Response:
    auth.require_admin_here(True)
    job = await start_restore(served_core(request), _jobs(request), await read_json_body(request))
    return web.json_response({"restore": job.doc()}, status=201)


async def get_restore(request: web.Request) -> web.Response:
    auth.require_admin_here(False)
    return web.json_response({"restore": _jobs(request).restore(
        request.match_info["restore_id"]).doc()})


async def put_restore_piece(request: web.Request) -> web.Response:
    auth.require_admin_here(True)
    job = _jobs(request).restore(request.match_info["restore_id"])
    dataset_uuid, shard = _shard_of(request)
    size = await restore_piece(served_core(request), job, dataset_uuid, shard,
                               await read_json_body(request))
    return web.json_response({"size": size})


async def post_install(request: web.Request) -> web.Response:
    auth.require_admin_here(True)
    job = _jobs(request).restore(request.match_info["restore_id"])
    dataset_uuid, shard = _shard_of(request)
    count = await install_shard(served_core(request), job, dataset_uuid, shard,
                                await read_json_body(request))
    return web.json_response({"vector_count": count, "restore": job.doc()})


async def post_abort(request: web.Request) -> web.Response:
    auth.require_admin_here(True)
    job = _jobs(request).restore(request.match_info["restore_id"])
    return web.json_response(await abort_restore(served_core(request), job))


def add_routes(app: web.Application) -> None:
    app[_JOBS] = Jobs()
    backups, restores = f"{PREFIX}/backups", f"{PREFIX}/restores"
    app.router.add_post(backups, post_backup)
    app.router.add_get(backups, list_backups)
    app.router.add_get(f"{backups}/{{backup_id}}", get_backup)
    app.router.add_get(f"{backups}/{{backup_id}}/catalog", get_backup_catalog)
    app.router.add_get(f"{backups}/{{backup_id}}/shards/{{dataset_uuid}}/{{shard}}",
                       get_backup_shard)
    app.router.add_post(f"{backups}/{{backup_id}}/complete", complete_backup)
    app.router.add_post(restores, post_restore)
    app.router.add_get(f"{restores}/{{restore_id}}", get_restore)
    app.router.add_put(f"{restores}/{{restore_id}}/shards/{{dataset_uuid}}/{{shard}}",
                       put_restore_piece)
    app.router.add_post(f"{restores}/{{restore_id}}/shards/{{dataset_uuid}}/{{shard}}/install",
                        post_install)
    app.router.add_post(f"{restores}/{{restore_id}}/abort", post_abort)


# ---- OpenAPI ----------------------------------------------------------------------------------

_TENANT_HEADER = {"name": "X-Tenant-Id", "in": "header", "required": False,
                  "description": "Ignored: backups and restores are admin operations over every "
                                 "tenant.",
                  "schema": validation.name_json_schema("a tenant id", allow_empty=True)}
_HEX_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
_SHARD_PARAMS = [
    {"name": "dataset_uuid", "in": "path", "required": True,
     "schema": {"type": "string", "format": "uuid"}},
    {"name": "shard", "in": "path", "required": True,
     "schema": {"type": "integer", "minimum": 0, "maximum": limits.shard_count_max}}]
_PROGRESS = {"type": "object", "properties": {
    name: {"type": "integer"} for name in ("bytes_done", "bytes_total", "shards_done",
                                           "shards_total", "rate_bytes_s")} | {
    "elapsed_s": {"type": "number"}, "eta_s": {"type": ["number", "null"]}}}
_BACKUP = {"type": "object", "properties": {"backup": {"type": "object", "properties": {
    "backup_id": {"type": "string"}, "state": {"type": "string"}, "progress": _PROGRESS,
    "datasets": {"type": "array", "items": {"type": "object"}}}}}}
_RESTORE = {"type": "object", "properties": {"restore": {"type": "object", "properties": {
    "restore_id": {"type": "string"}, "state": {"type": "string"}, "progress": _PROGRESS,
    "datasets": {"type": "array", "items": {"type": "object"}}}}}}


def extend_openapi(operations: dict, op) -> None:
    """Documents the routes above in router/openapi.py's table."""
    admin = (400, 401, 403, 500, 503)
    name = validation.name_json_schema()
    backup_id = {"name": "backup_id", "in": "path", "required": True, "schema": _HEX_ID}
    restore_id = {"name": "restore_id", "in": "path", "required": True, "schema": _HEX_ID}
    backups, restores = f"{PREFIX}/backups", f"{PREFIX}/restores"
    operations.update({
        ("POST", backups): op(
            "createBackup", "admin", "Start a consistent backup (cuts and catalog copy)",
            description="Takes one consistent cut per dataset (multi-shard batches all in or "
                        "all out; writes pause for at most cut_fence_max_ms); the shards' files "
                        "are then fetched from the shard route. `tributary admin backup create` "
                        "drives the whole backup.",
            params=[_TENANT_HEADER], ok=201, ok_text="Started", ok_schema=_BACKUP,
            body={"type": "object", "additionalProperties": False, "properties": {
                "datasets": {"type": "array", "items": name, "maxItems": 100},
                "tenant_id": name}},
            errors_=admin + (404, 413)),
        ("GET", backups): op(
            "listBackups", "admin", "The backup jobs this router holds", params=[_TENANT_HEADER],
            errors_=admin, ok_schema={"type": "object", "properties": {
                "backups": {"type": "array", "items": {"type": "object"}}}}),
        ("GET", f"{backups}/{{backup_id}}"): op(
            "getBackup", "admin", "A backup job with its progress (bytes, rate, ETA)",
            params=[backup_id, _TENANT_HEADER], ok_schema=_BACKUP, errors_=admin + (404,)),
        ("GET", f"{backups}/{{backup_id}}/catalog"): op(
            "getBackupCatalog", "admin", "The catalog copy of a backup (tenants, keys by "
                                         "hash, dataset definitions)",
            params=[backup_id, _TENANT_HEADER], ok_schema={"type": "object"},
            errors_=admin + (404,)),
        ("GET", f"{backups}/{{backup_id}}/shards/{{dataset_uuid}}/{{shard}}"): op(
            "getBackupShard", "admin", "One shard's files at its cut, framed",
            description="Records of a 4-byte big-endian header length, a JSON header and "
                        "`size` bytes: the position first, keepalives while the node copies, "
                        "the total size, one record per file piece, then `{end: true}` (or "
                        "`{error}`).",
            params=[backup_id, *_SHARD_PARAMS, _TENANT_HEADER],
            ok_content={"application/octet-stream": {"schema": {"type": "string",
                                                                "format": "binary"}}},
            errors_=admin + (404,)),
        ("POST", f"{backups}/{{backup_id}}/complete"): op(
            "completeBackup", "admin", "Record that the client holds the whole backup",
            params=[backup_id, _TENANT_HEADER], ok_schema=_BACKUP, errors_=admin + (404, 413),
            body={"type": "object", "required": ["files", "bytes"],
                  "additionalProperties": False, "properties": {
                      "files": {"type": "integer", "minimum": 0},
                      "bytes": {"type": "integer", "minimum": 0}}}),
        ("POST", restores): op(
            "startRestore", "admin", "Start a restore: create the datasets (and, in a full "
                                     "restore, missing tenants and keys)",
            description="Refused with 409 before anything is created when a dataset name "
                        "exists. `tributary admin backup restore` checks every checksum first "
                        "and drives the whole restore.",
            params=[_TENANT_HEADER], ok=201, ok_text="Started", ok_schema=_RESTORE,
            body={"type": "object", "required": ["catalog", "datasets"],
                  "additionalProperties": False, "properties": {
                      "catalog": {"type": "object"},
                      "datasets": {"type": "array", "items": {
                          "type": "object", "required": ["uuid"], "properties": {
                              "uuid": {"type": "string"}, "name": name}}},
                      "full": {"type": "boolean"},
                      "bytes_total": {"type": "integer", "minimum": 0}}},
            errors_=admin + (404, 409, 413)),
        ("GET", f"{restores}/{{restore_id}}"): op(
            "getRestore", "admin", "A restore job with its progress",
            params=[restore_id, _TENANT_HEADER], ok_schema=_RESTORE, errors_=admin + (404,)),
        ("PUT", f"{restores}/{{restore_id}}/shards/{{dataset_uuid}}/{{shard}}"): op(
            "putRestorePiece", "admin", "One piece of one file of a shard, staged on its "
                                        "primary",
            params=[restore_id, *_SHARD_PARAMS, _TENANT_HEADER],
            body={"type": "object", "required": ["path", "offset", "data"],
                  "additionalProperties": False, "properties": {
                      "path": {"type": "string", "minLength": 1},
                      "offset": {"type": "integer", "minimum": 0},
                      "data": {"type": "string", "contentEncoding": "base64"}}},
            ok_schema={"type": "object", "properties": {"size": {"type": "integer"}}},
            errors_=admin + (404, 413)),
        ("POST", f"{restores}/{{restore_id}}/shards/{{dataset_uuid}}/{{shard}}/install"): op(
            "installRestoredShard", "admin", "Check a shard's staged files and swap them in",
            params=[restore_id, *_SHARD_PARAMS, _TENANT_HEADER],
            body={"type": "object", "required": ["files"], "additionalProperties": False,
                  "properties": {"files": {"type": "array", "items": {
                      "type": "object", "required": ["path", "size", "sha256"],
                      "properties": {"path": {"type": "string"},
                                     "size": {"type": "integer", "minimum": 0},
                                     "sha256": {"type": "string"}}}}}},
            ok_schema={"type": "object", "properties": {"vector_count": {"type": "integer"}}},
            errors_=admin + (404, 413)),
        ("POST", f"{restores}/{{restore_id}}/abort"): op(
            "abortRestore", "admin", "Drop everything the restore created",
            params=[restore_id, _TENANT_HEADER], ok_schema={"type": "object"},
            errors_=admin + (404,)),
    })
