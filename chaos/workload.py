"""Chaos workloads: concurrent clients of the public REST API that record what they did.

Every request is one op in a `chaos.history.HistoryRecorder`: invoked before the request is
sent, then resolved by `classify`:

* 2xx                                   -> ok
* 4xx                                   -> fail (a definite refusal: nothing was applied),
                                           except the answers that ARE results: 404 NotFound on a
                                           get/delete of a vector or a drop of a dataset, and 409
                                           AlreadyExists on a create
* 409 with "retriable": true (Aborted), -> unknown (the request may or may not have taken effect;
  any 5xx, timeouts, connection errors     its completion stays open)
  once the request may have left
* a TCP connect that failed (refused,   -> fail (no byte of the request left the client)
  connect timeout)

After an answer that is not ok a worker backs off briefly, so an outage does not turn into a
flood of unknown writes (each one multiplies the linearizability search).

Workloads (`WORKLOADS`):

* ``kv``      put / get / delete on a few vector ids of one dataset (`KV_DATASET`). put =
              POST .../vectors with "overwrite": true and a metadata value ``w`` unique to the
              write; get = GET .../vectors/{id}, reading ``w``; delete = DELETE .../vectors/{id}.
              Checked with `chaos.linearizability.check_kv`.
* ``batch``   a writer of multi-shard batches (one fresh id on every shard of `BATCH_DATASET`,
              so the router runs 2PC), recorded as ``batch_put``; a reader that reads every id
              of a batch, recorded as ``batch_get``. Ids are never reused, so a batch that was
              acknowledged before a read started must be entirely visible to it.
* ``catalog`` create / drop / list of a few dataset names in their own tenant
              (`CATALOG_TENANT`). Checked with `chaos.linearizability.check_catalog`.
* ``admin``   the operator's admin API: provision / delete / list of a few tenants
              (`ADMIN_TENANTS`), recorded as ``tenant_create`` / ``tenant_drop`` /
              ``tenant_list`` and checked as a set like the catalog; and API keys created and
              revoked in their own tenant (`KEYS_TENANT`), recorded as ``key_create`` /
              ``key_revoke``: a fresh random key is never a duplicate, so a create must never
              answer AlreadyExists, and this worker's revoke of a key it created and has not
              revoked must never answer NotFound (chaos.verdict `admin_key_violations`).

Standard library only (http.client): one connection per request, so a reset or a disabled proxy
never leaves a half-used keep-alive connection behind.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from chaos.history import FAIL, OK, UNKNOWN, HistoryRecorder

WORKLOADS = ("kv", "batch", "catalog", "admin")
KV_DATASET = "chaos-kv"
KV_SHARDS = 2
BATCH_DATASET = "chaos-batch"
BATCH_SHARDS = 4
CATALOG_TENANT = "chaos-catalog"
CATALOG_NAMES = ("c0", "c1", "c2", "c3")
ADMIN_TENANTS = ("chaos-t0", "chaos-t1", "chaos-t2")
KEYS_TENANT = "chaos-keys"
DIMS = 4
FINAL = "final"   # process name of the final reads


def shard_of(vector_id: str, shard_count: int) -> int:
    """The documented routing rule (README: blake2b(id) % shards); chaos imports no router."""
    digest = hashlib.blake2b(vector_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shard_count


# ---- HTTP ---------------------------------------------------------------------------------------

@dataclass
class Reply:
    """An HTTP answer (status + JSON body), or `error` when there was none. `sent` is False
    when the TCP connection could not even be opened, so no byte of the request left."""

    status: int | None
    doc: Any = None
    error: str | None = None
    sent: bool = True

    @property
    def error_type(self) -> str | None:
        try:
            return self.doc["error"]["type"]
        except (TypeError, KeyError):
            return None

    @property
    def retriable(self) -> bool:
        try:
            return bool(self.doc["error"]["retriable"])
        except (TypeError, KeyError):
            return False

    @property
    def message(self) -> str:
        if self.error:
            return self.error
        try:
            return f"{self.status} {self.doc['error']['type']}: {self.doc['error']['message']}"
        except (TypeError, KeyError):
            return f"{self.status}"


class Http:
    def __init__(self, base_url: str, timeout_s: float = 5.0):
        parts = urllib.parse.urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None, timeout_s: float | None = None,
                root: bool = False) -> Reply:
        """`path` is under the API prefix (/api/v1), or with `root` under the host's root (the
        tenant and key admin API is at /admin)."""
        conn = http.client.HTTPConnection(self.host, self.port,
                                          timeout=timeout_s or self.timeout_s)
        try:
            conn.connect()
        except OSError as exc:   # refused, unreachable, connect timeout: nothing was sent
            conn.close()
            return Reply(None, error=f"{type(exc).__name__} on connect: {exc}", sent=False)
        try:
            payload = None if body is None else json.dumps(body).encode()
            conn.request(method, path if root else self.prefix + path, body=payload, headers={
                "Content-Type": "application/json", "Connection": "close", **(headers or {})})
            resp = conn.getresponse()
            raw = resp.read()
            status = resp.status
        except (OSError, http.client.HTTPException) as exc:
            return Reply(None, error=f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()
        try:
            doc = json.loads(raw) if raw.strip() else None
        except ValueError:
            doc = {"raw": raw[:200].decode(errors="replace")}
        return Reply(status, doc)


def classify(reply: Reply) -> str:
    """ok / fail / unknown for a write or read, before op-specific answers are considered."""
    if reply.status is None:
        # A connection that was never opened carried no request: definitely not applied.
        # Anything later (reset, timeout, EOF before the answer) may have been applied.
        return FAIL if not reply.sent else UNKNOWN
    if 200 <= reply.status < 300:
        return OK
    if reply.status >= 500:
        return UNKNOWN
    if reply.status == 409 and reply.retriable:
        return UNKNOWN
    if 400 <= reply.status < 500:
        return FAIL
    return UNKNOWN


def _not_found(reply: Reply, what: str) -> bool:
    """A 404 NotFound whose message is about `what` ("vector '...' not found ...")."""
    try:
        message = reply.doc["error"]["message"]
    except (TypeError, KeyError):
        return False
    return (reply.status == 404 and reply.error_type == "NotFound"
            and isinstance(message, str) and message.startswith(f"{what} '"))


def _vector_missing(reply: Reply) -> bool:
    """The vector is absent (not the dataset, not the route)."""
    return _not_found(reply, "vector")


def _dataset_missing(reply: Reply) -> bool:
    return _not_found(reply, "dataset")


# ---- operations -----------------------------------------------------------------------------------

class Client:
    """The workload's API calls; each records one op and returns its status."""

    def __init__(self, http_: Http, recorder: HistoryRecorder):
        self.http = http_
        self.rec = recorder

    def _vector(self, rng: random.Random, vector_id: str, value: str) -> dict:
        return {"id": vector_id, "values": [round(rng.uniform(0.1, 1.0), 4) for _ in range(DIMS)],
                "metadata": {"w": value}}

    def put(self, process: Any, dataset: str, key: str, value: str, rng: random.Random) -> str:
        h = self.rec.invoke(process, "put", key, value)
        reply = self.http.request("POST", f"/datasets/{dataset}/vectors", {
            "overwrite": True, "vectors": [self._vector(rng, key, value)]})
        return self._resolve(h, reply)

    def batch_put(self, process: Any, dataset: str, values: dict[str, str],
                  rng: random.Random) -> str:
        h = self.rec.invoke(process, "batch_put", None, dict(values))
        reply = self.http.request("POST", f"/datasets/{dataset}/vectors", {
            "overwrite": True, "vectors": [self._vector(rng, k, v) for k, v in values.items()]})
        return self._resolve(h, reply)

    def _resolve(self, h: int, reply: Reply, output: Any = None) -> str:
        """Records the reply as the operation's completion (ok with `output`, fail or unknown,
        by classify) and returns that status."""
        status = classify(reply)
        if status == OK:
            self.rec.ok(h, output)
        elif status == FAIL:
            self.rec.fail(h, reply.message)
        else:
            self.rec.unknown(h, reply.message)
        return status

    def _read_one(self, dataset: str, key: str) -> tuple[str, Any, Reply]:
        reply = self.http.request("GET", f"/datasets/{dataset}/vectors/{key}")
        if _vector_missing(reply):
            return OK, None, reply
        status = classify(reply)
        if status == OK:
            try:
                return OK, reply.doc["vector"]["metadata"]["w"], reply
            except (TypeError, KeyError):
                return UNKNOWN, None, Reply(reply.status, reply.doc,
                                            f"unexpected body: {reply.doc!r:.200}")
        return status, None, reply

    def get(self, process: Any, dataset: str, key: str) -> tuple[str, Any]:
        h = self.rec.invoke(process, "get", key)
        status, value, reply = self._read_one(dataset, key)
        if status == OK:
            self.rec.ok(h, value)
        elif status == FAIL:
            self.rec.fail(h, reply.message)
        else:
            self.rec.unknown(h, reply.message)
        return status, value

    def batch_get(self, process: Any, dataset: str, keys: list[str]) -> str:
        """Reads every id one by one; unknown if any single read was not definite."""
        h = self.rec.invoke(process, "batch_get", None, list(keys))
        out: dict[str, Any] = {}
        for key in keys:
            status, value, reply = self._read_one(dataset, key)
            if status != OK:
                (self.rec.fail if status == FAIL else self.rec.unknown)(
                    h, f"{key}: {reply.message}")
                return status
            out[key] = value
        self.rec.ok(h, out)
        return OK

    def delete(self, process: Any, dataset: str, key: str) -> str:
        h = self.rec.invoke(process, "delete", key)
        reply = self.http.request("DELETE", f"/datasets/{dataset}/vectors/{key}")
        if _vector_missing(reply):
            self.rec.ok(h, "not_found")
            return OK
        return self._resolve(h, reply, "deleted")

    def create(self, process: Any, name: str) -> str:
        h = self.rec.invoke(process, "create", name)
        reply = self.http.request("POST", "/datasets", {
            "name": name, "dimensions": DIMS, "shard_count": 2},
            headers={"X-Tenant-Id": CATALOG_TENANT})
        return self._resolve_create(h, reply)

    def _resolve_create(self, h: int, reply: Reply) -> str:
        """A create's answer: 409 AlreadyExists is a result (the name is taken), not a
        refusal."""
        if reply.status == 409 and reply.error_type == "AlreadyExists":
            self.rec.ok(h, "already_exists")
            return OK
        return self._resolve(h, reply, "ok")

    def _resolve_drop(self, h: int, reply: Reply, missing: bool) -> str:
        """A drop's answer: `missing` (a 404 about the thing dropped) is a result."""
        if missing:
            self.rec.ok(h, "not_found")
            return OK
        return self._resolve(h, reply, "ok")

    def drop(self, process: Any, name: str) -> str:
        h = self.rec.invoke(process, "drop", name)
        reply = self.http.request("DELETE", f"/datasets/{name}",
                                  headers={"X-Tenant-Id": CATALOG_TENANT})
        return self._resolve_drop(h, reply, _dataset_missing(reply))

    def list(self, process: Any) -> str:
        h = self.rec.invoke(process, "list")
        reply = self.http.request("GET", "/datasets?page_size=1000",
                                  headers={"X-Tenant-Id": CATALOG_TENANT})
        status = classify(reply)
        if status == OK:
            try:
                if reply.doc.get("next_page_token"):
                    raise KeyError("paged")
                names = sorted(d["name"] for d in reply.doc["datasets"])
            except (AttributeError, TypeError, KeyError):
                self.rec.unknown(h, f"unexpected body: {reply.doc!r:.200}")
                return UNKNOWN
            self.rec.ok(h, names)
        elif status == FAIL:
            self.rec.fail(h, reply.message)
        else:
            self.rec.unknown(h, reply.message)
        return status

    def tenant_create(self, process: Any, tenant_id: str, n: int) -> str:
        # A name unique to the request: provisioning a tenant that exists with other content
        # is AlreadyExists (the same content would be the same request, answered as success).
        h = self.rec.invoke(process, "tenant_create", tenant_id)
        reply = self.http.request("POST", "/admin/tenants", {"tenant_id": tenant_id,
                                                              "name": f"{process}-{n}"},
                                  root=True)
        return self._resolve_create(h, reply)

    def tenant_drop(self, process: Any, tenant_id: str) -> str:
        h = self.rec.invoke(process, "tenant_drop", tenant_id)
        reply = self.http.request("DELETE", f"/admin/tenants/{tenant_id}", root=True)
        return self._resolve_drop(h, reply, _not_found(reply, "tenant"))

    def tenant_list(self, process: Any) -> str:
        h = self.rec.invoke(process, "tenant_list")
        reply = self.http.request("GET", "/admin/tenants", root=True)
        status = classify(reply)
        if status == OK:
            try:
                names = sorted(t["tenant_id"] for t in reply.doc["tenants"]
                               if t["tenant_id"] in ADMIN_TENANTS)
            except (AttributeError, TypeError, KeyError):
                self.rec.unknown(h, f"unexpected body: {reply.doc!r:.200}")
                return UNKNOWN
            self.rec.ok(h, names)
            return OK
        return self._resolve(h, reply)

    def key_create(self, process: Any) -> tuple[str, str | None]:
        """Returns the status and, when ok, the new key's id."""
        h = self.rec.invoke(process, "key_create", KEYS_TENANT)
        reply = self.http.request("POST", "/admin/keys", {"tenant_id": KEYS_TENANT,
                                                          "access": "read_only"},
                                  root=True)
        if reply.status == 409 and reply.error_type == "AlreadyExists":
            # Never a true answer for a fresh random key: recorded for the checker.
            self.rec.ok(h, {"conflict": reply.message})
            return OK, None
        key_id = reply.doc.get("key_id") if isinstance(reply.doc, dict) else None
        if classify(reply) == OK and not key_id:
            self.rec.unknown(h, f"unexpected body: {reply.doc!r:.200}")
            return UNKNOWN, None
        return self._resolve(h, reply, {"key_id": key_id}), key_id

    def key_revoke(self, process: Any, key_id: str) -> str:
        h = self.rec.invoke(process, "key_revoke", key_id)
        reply = self.http.request("DELETE", f"/admin/keys/{key_id}", root=True)
        return self._resolve_drop(h, reply, _not_found(reply, "API key"))


# ---- workers ----------------------------------------------------------------------------------------

@dataclass
class WorkloadState:
    """Shared between workers: batches written so far (for the batch reader)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    batches_acked: list[list[str]] = field(default_factory=list)
    batches_started: list[list[str]] = field(default_factory=list)
    kv_keys: list[str] = field(default_factory=list)


def kv_keys(count: int = 8) -> list[str]:
    return [f"k{i}" for i in range(count)]


def batch_ids(n: int, shards: int = BATCH_SHARDS) -> list[str]:
    """Fresh ids for batch n, one on every shard (so every batch is multi-shard)."""
    ids: dict[int, str] = {}
    i = 0
    while len(ids) < shards:
        candidate = f"b{n}-{i}"
        ids.setdefault(shard_of(candidate, shards), candidate)
        i += 1
    return [ids[s] for s in range(shards)]


def _pause(rng: random.Random, stop: threading.Event, lo: float, hi: float,
           status: str = OK) -> None:
    if status != OK:      # back off while the cluster is in trouble
        lo, hi = max(lo, 0.3), max(hi, 0.8)
    stop.wait(rng.uniform(lo, hi))


def kv_worker(client: Client, name: str, keys: list[str], stop: threading.Event,
              rng: random.Random) -> None:
    n = 0
    while not stop.is_set():
        key = rng.choice(keys)
        r = rng.random()
        if r < 0.4:
            n += 1
            status = client.put(name, KV_DATASET, key, f"{name}-{n}", rng)
        elif r < 0.85:
            status, _ = client.get(name, KV_DATASET, key)
        else:
            status = client.delete(name, KV_DATASET, key)
        _pause(rng, stop, 0.0, 0.05, status)


def batch_writer(client: Client, name: str, state: WorkloadState, stop: threading.Event,
                 rng: random.Random) -> None:
    n = 0
    while not stop.is_set():
        ids = batch_ids(n)
        with state.lock:
            state.batches_started.append(ids)
        status = client.batch_put(name, BATCH_DATASET, {i: f"b{n}" for i in ids}, rng)
        if status == OK:
            with state.lock:
                state.batches_acked.append(ids)
        n += 1
        _pause(rng, stop, 0.05, 0.2, status)


def batch_reader(client: Client, name: str, state: WorkloadState, stop: threading.Event,
                 rng: random.Random) -> None:
    while not stop.is_set():
        with state.lock:
            acked = list(state.batches_acked[-10:])
            started = list(state.batches_started[-2:])
        pool = acked if (acked and rng.random() < 0.7) else started
        status = client.batch_get(name, BATCH_DATASET, rng.choice(pool)) if pool else OK
        _pause(rng, stop, 0.05, 0.2, status)


def catalog_worker(client: Client, name: str, stop: threading.Event, rng: random.Random) -> None:
    while not stop.is_set():
        r = rng.random()
        target = rng.choice(CATALOG_NAMES)
        if r < 0.35:
            status = client.create(name, target)
        elif r < 0.65:
            status = client.drop(name, target)
        else:
            status = client.list(name)
        _pause(rng, stop, 0.1, 0.4, status)


def admin_worker(client: Client, name: str, stop: threading.Event, rng: random.Random) -> None:
    """Tenants provisioned, deleted and listed; keys created and revoked. Only this worker
    revokes the keys it created, so a revoke that answers NotFound for one whose create was
    acknowledged and whose revoke was never acknowledged contradicts the create."""
    n = 0
    keys: list[str] = []
    while not stop.is_set():
        r = rng.random()
        n += 1
        if r < 0.25:
            status = client.tenant_create(name, rng.choice(ADMIN_TENANTS), n)
        elif r < 0.45:
            status = client.tenant_drop(name, rng.choice(ADMIN_TENANTS))
        elif r < 0.6:
            status = client.tenant_list(name)
        elif r < 0.8 or not keys:
            status, key_id = client.key_create(name)
            if key_id:
                keys.append(key_id)
        else:
            key_id = keys.pop(rng.randrange(len(keys)))
            status = client.key_revoke(name, key_id)
        _pause(rng, stop, 0.1, 0.4, status)


class Workloads:
    """Starts the chosen workloads' threads and stops them."""

    def __init__(self, base_url: str, recorder: HistoryRecorder, names: list[str], seed: int,
                 timeout_s: float = 5.0, kv_clients: int = 3):
        unknown = set(names) - set(WORKLOADS)
        if unknown:
            raise ValueError(f"unknown workload(s) {sorted(unknown)} (known: "
                             f"{', '.join(WORKLOADS)})")
        self.names = list(dict.fromkeys(names))
        self.base_url = base_url
        self.recorder = recorder
        self.seed = seed
        self.timeout_s = timeout_s
        self.kv_clients = kv_clients
        self.state = WorkloadState(kv_keys=kv_keys())
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def _client(self) -> Client:
        return Client(Http(self.base_url, self.timeout_s), self.recorder)

    def start(self) -> None:
        specs: list[tuple[str, Callable, tuple]] = []
        if "kv" in self.names:
            for i in range(self.kv_clients):
                specs.append((f"kv-{i}", kv_worker, (self.state.kv_keys,)))
        if "batch" in self.names:
            specs.append(("batch-w", batch_writer, (self.state,)))
            specs.append(("batch-r", batch_reader, (self.state,)))
        if "catalog" in self.names:
            specs.append(("catalog", catalog_worker, ()))
        if "admin" in self.names:
            specs.append(("admin", admin_worker, ()))
        for name, fn, extra in specs:
            rng = random.Random(f"{self.seed}:{name}")
            t = threading.Thread(target=fn, args=(self._client(), name, *extra, self.stop, rng),
                                 name=f"chaos-{name}", daemon=True)
            self.threads.append(t)
            t.start()

    def request_stop(self) -> None:
        self.stop.set()

    def join(self, timeout_s: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout_s
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    def keys_to_read(self) -> list[tuple[str, str]]:
        """(dataset, id) of every id the workloads may have written."""
        out: list[tuple[str, str]] = []
        if "kv" in self.names:
            out += [(KV_DATASET, k) for k in self.state.kv_keys]
        if "batch" in self.names:
            with self.state.lock:
                started = list(self.state.batches_started)
            out += [(BATCH_DATASET, i) for ids in started for i in ids]
        return out


# ---- setup, final reads, recovery probes -------------------------------------------------------------

def setup_datasets(http_: Http, names: list[str], timeout_s: float = 60.0,
                   replication_factor: int | None = None) -> None:
    """Creates the workloads' datasets (idempotent), retrying while the cluster settles.
    With `replication_factor`, each shard gets exactly that many copies: the default is capped
    at the nodes live when the create arrives, which a node still registering would lower, and
    the replication checkers need every shard to have its copies from the start."""
    wanted = []
    if "kv" in names:
        wanted.append((KV_DATASET, KV_SHARDS))
    if "batch" in names:
        wanted.append((BATCH_DATASET, BATCH_SHARDS))
    deadline = time.monotonic() + timeout_s
    while "admin" in names:
        # The keys' tenant; the admin workload never deletes it.
        reply = http_.request("POST", "/admin/tenants", {"tenant_id": KEYS_TENANT}, root=True)
        if reply.status == 201 or (reply.status == 409 and reply.error_type == "AlreadyExists"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"cannot provision tenant {KEYS_TENANT}: {reply.message}")
        time.sleep(0.5)
    for name, shards in wanted:
        while True:
            body = {"name": name, "dimensions": DIMS, "shard_count": shards}
            if replication_factor is not None:
                body["replication_factor"] = replication_factor
            reply = http_.request("POST", "/datasets", body)
            if reply.status == 201 or (reply.status == 409 and reply.error_type == "AlreadyExists"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot create dataset {name}: {reply.message}")
            time.sleep(0.5)
        # First use creates the replicas; do it now, not under the first fault.
        while http_.request("POST", f"/datasets/{name}/search", {
                "query_vector": [0.5] * DIMS, "options": {"top_k": 1}}).status != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"dataset {name} is not searchable")
            time.sleep(0.5)


def final_reads(base_url: str, recorder: HistoryRecorder, keys: list[tuple[str, str]],
                timeout_s: float = 60.0, parallel: int = 4) -> tuple[dict[str, Any], list[str]]:
    """Reads every key until a definite answer; returns (key -> value or None, unread keys).

    Each successful read is also recorded as a `get` op (process "final")."""
    deadline = time.monotonic() + timeout_s

    def read(item: tuple[str, str]):
        dataset, key = item
        client = Client(Http(base_url, 10.0), recorder)
        while True:
            h = recorder.invoke(FINAL, "get", key)
            status, value, reply = client._read_one(dataset, key)
            if status == OK:
                recorder.ok(h, value)
                return key, True, value
            (recorder.fail if status == FAIL else recorder.unknown)(h, reply.message)
            if time.monotonic() > deadline:
                return key, False, reply.message
            time.sleep(0.3)

    state: dict[str, Any] = {}
    unread: list[str] = []
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for key, ok, value in pool.map(read, keys):
            if ok:
                state[key] = value
            else:
                unread.append(key)
    return state, unread


def probe(http_: Http, timeout_s: float = 3.0) -> tuple[bool, str]:
    """Health 200, and a search on every dataset (both tenants) succeeds: every shard serves."""
    reply = http_.request("GET", "/health", timeout_s=timeout_s)
    if reply.status != 200:
        return False, f"health: {reply.message}"
    for tenant in ("default", CATALOG_TENANT):
        headers = {"X-Tenant-Id": tenant}
        listing = http_.request("GET", "/datasets?page_size=1000", headers=headers,
                                timeout_s=timeout_s)
        if listing.status != 200:
            return False, f"list {tenant}: {listing.message}"
        for d in listing.doc.get("datasets", []):
            r = http_.request("POST", f"/datasets/{d['name']}/search", {
                "query_vector": [0.5] * int(d["dimensions"]), "options": {"top_k": 1}},
                headers=headers, timeout_s=timeout_s)
            if r.status != 200 and not _dataset_missing(r):   # dropped meanwhile: fine
                return False, f"search {tenant}/{d['name']}: {r.message}"
    return True, "ok"


def probe_recovery(http_: Http, healed_at: float, bound_s: float, stable_s: float = 3.0,
                   interval_s: float = 0.5, log: Callable[[str], None] = lambda s: None
                   ) -> list[dict]:
    """Probes from `healed_at` (monotonic) until the service has been up for `stable_s` or the
    bound (plus `stable_s`) has passed. Samples are {"t": seconds since the heal, "ok", "why"}."""
    samples: list[dict] = []
    up_since: float | None = None
    last_why = None
    while True:
        ok, why = probe(http_)
        t = time.monotonic() - healed_at
        samples.append({"t": round(t, 3), "ok": ok, "why": why})
        if ok:
            up_since = t if up_since is None else up_since
            if t - up_since >= stable_s:
                return samples
        else:
            up_since = None
            if why != last_why:
                log(f"[recovery +{t:5.1f}s] not yet: {why}")
        last_why = why
        if t > bound_s + stable_s:
            return samples
        time.sleep(interval_s)


__all__ = ["WORKLOADS", "Http", "Reply", "Client", "Workloads", "classify", "shard_of",
           "batch_ids", "kv_keys", "setup_datasets", "final_reads", "probe", "probe_recovery",
           "KV_DATASET", "BATCH_DATASET", "CATALOG_TENANT", "CATALOG_NAMES", "FINAL"]
