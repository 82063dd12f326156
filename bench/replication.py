"""Replication benchmark: shard copies under faults, through a real local cluster.

    python -m bench.replication [--quick] [--runs 20] [--parts throughput,reads,catchup,kill]

One `tributary up --nodes 3 --meta 1` cluster (3 nodes, 1 meta member, 1 router; the box has 2
cores), and in it, one part after the other (issue 11, "Must show"):

- throughput: the same pre-encoded REST batches into a replication_factor 1 dataset and a
  replication_factor 2 dataset (3 shards each), alternating which goes first; vectors/s from the
  first request to the last 201. Target: 2 copies >= 0.7x one copy.
- reads: a GET loop and a search loop (one thread each) for a while with no fault, then as long
  again while the primary of one shard is SIGSTOPped. Targets: no failed read while frozen;
  search p99 while frozen <= 3x the p99 with no fault.
- catchup: one copy's node SIGSTOPped while `--behind` vectors go into its shard (the copy
  leaves the in-sync set), then SIGCONT; vectors/s = vectors behind / seconds from SIGCONT until
  the catalog has it back in the in-sync set. Target: >= 20k vectors/s.
- kill: `--runs` seeded runs; each makes a fresh dataset (3 shards, 2 copies), runs two writer
  threads (small batches on one shard, and small batches over all shards, i.e. 2PC), kill -9s
  the primary of that shard at a seeded moment, measures the time to the first acknowledged
  write on the shard, waits until every copy is in sync again, then lists the dataset and counts
  acknowledged ids that are missing. `tributary up` restarts the killed node after ~0.2 s; each
  run records whether the first ack came from a promoted copy (failover) or from the restarted
  old primary (restart). Targets: 0 acknowledged writes lost; median time to first ack <= 5 s.

Progress goes to stderr, the table and targets to stdout, every measurement to the JSON
(`--out`). There are no assertions: a missed target is a figure to report.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import numpy as np

from bench.e2e import LocalCluster, _cpu_seconds, wait_nodes_idle
from bench.timing import machine, median, percentile
from router.routing import shard_of
from tributary import cluster_auth, limits, local_secrets

HERE = os.path.dirname(os.path.abspath(__file__))
POLL_S = 0.1

TARGETS = {
    "acked_writes_lost": 0,
    "first_ack_after_kill_median_s": 5.0,
    "reads_failed_while_frozen": 0,
    "search_p99_frozen_over_baseline": 3.0,
    "throughput_rf2_over_rf1": 0.7,
    "catch_up_vectors_per_s": 20_000,
}


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# ---- the cluster's catalog and processes --------------------------------------------------------

class Catalog:
    """Linearizable reads of the meta group's state, from the main thread only (one event loop,
    one MetaClient for the whole run)."""

    def __init__(self, cluster: LocalCluster):
        from consensus.client import MetaClient
        secret = os.path.join(cluster.data_dir, local_secrets.SECRETS_DIR,
                              local_secrets.CLUSTER_SECRET)
        token = cluster_auth.load(secret) if os.path.exists(secret) else None
        self.token = token
        self._loop = asyncio.new_event_loop()
        address = f"127.0.0.1:{cluster.internal_base + 10}"

        async def make() -> MetaClient:   # grpc.aio channels belong to the loop they start on
            return MetaClient([address], token)
        self._client = self._loop.run_until_complete(make())

    def record(self, name: str):
        """The DatasetRecord named `name`, or None (also when the meta group does not answer)."""
        try:
            state = self._loop.run_until_complete(self._client.get_state(linearizable=True))
        except Exception:  # noqa: BLE001 - a meta hiccup is a poll that saw nothing
            return None
        if state is None:
            return None
        return next((r for r in state.datasets.values() if r.name == name), None)

    def close(self) -> None:
        self._loop.run_until_complete(self._client.close())
        self._loop.close()


def node_port(cluster: LocalCluster, node_id: str) -> int:
    return cluster.internal_base + 100 + int(node_id.rsplit("-", 1)[1])


def node_pid(cluster: LocalCluster, node_id: str) -> int | None:
    """The pid of the node process listening on node_id's port (None while it is not running)."""
    needle = f"--listen 127.0.0.1:{node_port(cluster, node_id)}"
    out = subprocess.run(["ps", "-o", "pid=,args=", "-g", str(cluster.process.pid)],
                         capture_output=True, text=True, timeout=10).stdout
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        if needle in args and "tributary.cli node" in args:
            return int(pid)
    return None


def check_copies(cluster: LocalCluster, token, record, acked: set[str]) -> dict:
    """Asks every in-sync copy of every shard, over the nodes' internal gRPC, for the acked ids
    that belong to its shard, and for its content digest. Returns per copy the acked ids it
    lacks, and per shard whether the copies' digests agree."""
    import grpc
    from proto import node_pb2
    service = node_pb2.DESCRIPTOR.services_by_name["ShardNode"]
    by_shard: dict[int, list[str]] = {}
    for vid in acked:
        by_shard.setdefault(shard_of(vid, record.shard_count), []).append(vid)
    out: dict = {"missing_on_copy": {}, "digests_agree": {}, "errors": []}
    for shard in range(record.shard_count):
        ref = node_pb2.ShardRef(dataset_uuid=record.uuid, shard=shard, epoch=record.epoch)
        digests = {}
        for node in record.in_sync_of(shard):
            key = f"{shard}/{node}"
            try:
                with grpc.insecure_channel(f"127.0.0.1:{node_port(cluster, node)}") as channel:
                    stub = cluster_auth.stub(service, channel, token)
                    ids = by_shard.get(shard, [])
                    found: set[str] = set()
                    for i in range(0, len(ids), 1000):
                        reply = stub.Get(node_pb2.GetRequest(shard=ref, ids=ids[i:i + 1000]),
                                         timeout=30)
                        found.update(v.id for v in reply.vectors)
                    out["missing_on_copy"][key] = sorted(set(ids) - found)[:50]
                    out.setdefault("missing_count_on_copy", {})[key] = len(set(ids) - found)
                    status = stub.CopyStatus(node_pb2.CopyStatusRequest(
                        shard=ref, with_content_digest=True), timeout=30)
                    digests[node] = (status.last_seq, status.vector_count, status.content_digest)
            except grpc.RpcError as exc:
                out["errors"].append(f"{key}: {exc.code()} {exc.details()}"[:300])
        out["digests_agree"][str(shard)] = len(set(digests.values())) == 1
        out.setdefault("copy_status", {})[str(shard)] = {
            n: {"last_seq": d[0], "vector_count": d[1], "digest": d[2][:16]}
            for n, d in digests.items()}
    out["missing_total"] = sum(out.get("missing_count_on_copy", {}).values())
    return out


def copy_ids(cluster: LocalCluster, token, record, shard: int, node: str) -> set[str]:
    """Every vector id one copy holds, paged through its internal List."""
    import grpc
    from proto import node_pb2
    service = node_pb2.DESCRIPTOR.services_by_name["ShardNode"]
    ref = node_pb2.ShardRef(dataset_uuid=record.uuid, shard=shard, epoch=record.epoch)
    ids: set[str] = set()
    after = -1
    with grpc.insecure_channel(f"127.0.0.1:{node_port(cluster, node)}") as channel:
        stub = cluster_auth.stub(service, channel, token)
        while True:
            reply = stub.List(node_pb2.ListRequest(shard=ref, after_label=after, limit=1000),
                              timeout=30)
            ids.update(v.id for v in reply.vectors)
            if reply.exhausted or not reply.vectors:
                return ids
            after = reply.last_label


def explain_difference(cluster: LocalCluster, token, record, shard: int,
                       outcome_of: dict[str, str]) -> dict:
    """For a shard whose copies differ: the ids some copy holds and another lacks, each with
    what the writer was told about it (201, another status, or 'no answer')."""
    held = {node: copy_ids(cluster, token, record, shard, node)
            for node in record.in_sync_of(shard)}
    every = set.union(*held.values())
    out = {}
    for node, ids in held.items():
        lacking = sorted(every - ids)
        out[node] = {"holds": len(ids), "lacks": len(lacking),
                     "lacked_ids": [(i, outcome_of.get(i, "never sent")) for i in lacking[:20]]}
    return out


def cluster_cpu(cluster: LocalCluster) -> dict[str, float]:
    """CPU seconds used so far by the node, router and meta processes, per kind."""
    out = subprocess.run(["ps", "-o", "pid=,args=", "-g", str(cluster.process.pid)],
                         capture_output=True, text=True, timeout=10).stdout
    totals: dict[str, float] = {}
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        for kind in ("node", "router", "meta"):
            if f"tributary.cli {kind} " in args:
                totals[kind] = totals.get(kind, 0.0) + _cpu_seconds(int(pid))
    return totals


def all_in_sync(record) -> bool:
    return record is not None and all(
        set(record.in_sync_of(s)) == set(record.copies_of(s))
        and len(record.copies_of(s)) >= record.replication_factor
        for s in range(record.shard_count))


def wait_in_sync(catalog: Catalog, name: str, timeout_s: float):
    """Polls until every copy of every shard of `name` is in its in-sync set. Returns
    (seconds waited, record) or (None, last record seen) at the deadline."""
    started = time.monotonic()
    record = None
    while time.monotonic() - started < timeout_s:
        record = catalog.record(name) or record
        if all_in_sync(record):
            return time.monotonic() - started, record
        time.sleep(POLL_S)
    return None, record


def create_dataset(client: httpx.Client, name: str, dims: int, shards: int, factor: int) -> dict:
    r = client.post("/datasets", json={"name": name, "dimensions": dims, "metric_type": "cosine",
                                       "shard_count": shards, "replication_factor": factor},
                    timeout=60)
    if r.status_code != 201:
        raise RuntimeError(f"create {name} failed: {r.status_code} {r.text[:300]}")
    return r.json()["dataset"]


def delete_dataset(client: httpx.Client, name: str) -> None:
    try:
        client.delete(f"/datasets/{name}", timeout=60)
    except httpx.HTTPError as exc:
        _log(f"  delete {name} failed: {exc!r}")


def batch_body(ids: list[str], values: np.ndarray) -> bytes:
    return json.dumps({"vectors": [{"id": i, "values": v}
                                   for i, v in zip(ids, values.tolist())]}).encode()


def post_body(client: httpx.Client, name: str, body: bytes, timeout_s: float) -> httpx.Response:
    return client.post(f"/datasets/{name}/vectors", content=body, timeout=timeout_s,
                       headers={"Content-Type": "application/json"})


def list_ids(client: httpx.Client, name: str) -> set[str]:
    """Every vector id of the dataset, by paging through GET .../vectors."""
    ids: set[str] = set()
    token = ""
    while True:
        r = client.get(f"/datasets/{name}/vectors",
                       params={"page_size": limits.list_page_size_max, "page_token": token},
                       timeout=60)
        if r.status_code != 200:
            raise RuntimeError(f"list {name} failed: {r.status_code} {r.text[:300]}")
        doc = r.json()
        ids.update(v["id"] for v in doc.get("vectors", []))
        token = doc.get("next_page_token", "")
        if not token:
            return ids


# ---- part 1: write throughput, one copy against two ---------------------------------------------

def part_throughput(cluster: LocalCluster, args, log) -> dict:
    rng = np.random.default_rng(args.seed)
    n, batch = args.throughput_vectors, args.throughput_batch
    log(f"throughput: encoding {n} x {args.dims} in batches of {batch}")
    bodies = [batch_body([f"t{i}" for i in range(s, min(n, s + batch))],
                         rng.standard_normal((min(n, s + batch) - s, args.dims),
                                             dtype=np.float32))
              for s in range(0, n, batch)]
    runs = []
    with httpx.Client(base_url=cluster.rest) as client:
        for rep in range(args.reps):
            order = (1, 2) if rep % 2 == 0 else (2, 1)
            rates, cpu = {}, {}
            for factor in order:
                name = f"tp-rf{factor}-{rep}"
                create_dataset(client, name, args.dims, args.shards, factor)
                wait_nodes_idle(cluster, timeout_s=120)
                cpu_before = cluster_cpu(cluster)
                started = time.perf_counter()
                for body in bodies:
                    r = post_body(client, name, body, 120)
                    if r.status_code != 201:
                        raise RuntimeError(f"insert into {name}: {r.status_code} {r.text[:300]}")
                took = time.perf_counter() - started
                cpu_after = cluster_cpu(cluster)
                cpu[factor] = {kind: cpu_after[kind] - cpu_before.get(kind, 0.0)
                               for kind in cpu_after}
                rates[factor] = n / took
                log(f"  rep {rep}: replication_factor {factor}: {n} vectors in {took:.2f} s "
                    f"= {rates[factor]:,.0f} vectors/s")
                delete_dataset(client, name)
            runs.append({"rep": rep, "order": list(order), "rf1_vectors_per_s": rates[1],
                         "rf2_vectors_per_s": rates[2], "ratio": rates[2] / rates[1],
                         "cpu_s_rf1": cpu[1], "cpu_s_rf2": cpu[2]})
    return {"vectors": n, "batch": batch, "shards": args.shards, "runs": runs,
            "node_cpu_s_per_1k_vectors_rf1": median(
                [r["cpu_s_rf1"].get("node", 0) / n * 1000 for r in runs]),
            "node_cpu_s_per_1k_vectors_rf2": median(
                [r["cpu_s_rf2"].get("node", 0) / n * 1000 for r in runs]),
            "router_cpu_s_per_1k_vectors_rf1": median(
                [r["cpu_s_rf1"].get("router", 0) / n * 1000 for r in runs]),
            "router_cpu_s_per_1k_vectors_rf2": median(
                [r["cpu_s_rf2"].get("router", 0) / n * 1000 for r in runs]),
            "rf1_vectors_per_s": median([r["rf1_vectors_per_s"] for r in runs]),
            "rf2_vectors_per_s": median([r["rf2_vectors_per_s"] for r in runs]),
            "ratio": median([r["ratio"] for r in runs])}


# ---- part 2: reads while a node is frozen -------------------------------------------------------

def _read_phase(rest: str, name: str, ids: list[str], dims: int, seconds: float,
                seed: int) -> dict:
    """One GET thread and one search thread for `seconds`. A read fails on any answer but 200,
    or on an exception (timeout 10 s)."""
    out = {"get": {"latencies": [], "failures": []}, "search": {"latencies": [], "failures": []}}
    stop_at = time.monotonic() + seconds

    def loop(kind: str, lane_seed: int) -> None:
        rng = np.random.default_rng(lane_seed)
        lane = out[kind]
        with httpx.Client(base_url=rest, timeout=10) as client:
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                try:
                    if kind == "get":
                        vid = ids[int(rng.integers(len(ids)))]
                        r = client.get(f"/datasets/{name}/vectors/{vid}")
                    else:
                        q = rng.standard_normal(dims, dtype=np.float32).tolist()
                        r = client.post(f"/datasets/{name}/search",
                                        json={"query_vector": q, "options": {"top_k": 10}})
                    ok = r.status_code == 200
                    detail = "" if ok else f"{r.status_code} {r.text[:120]}"
                except httpx.HTTPError as exc:
                    ok, detail = False, repr(exc)[:160]
                took = time.perf_counter() - started
                lane["latencies"].append(took)
                if not ok:
                    lane["failures"].append({"at_s": round(time.monotonic() - stop_at + seconds,
                                                           3), "error": detail})

    threads = [threading.Thread(target=loop, args=("get", seed)),
               threading.Thread(target=loop, args=("search", seed + 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary = {}
    for kind, lane in out.items():
        lat = lane["latencies"]
        summary[kind] = {"reads": len(lat), "failed": len(lane["failures"]),
                         "over_5s": sum(1 for x in lat if x > 5.0),
                         "p50_ms": percentile(lat, 50) * 1000, "p99_ms": percentile(lat, 99) * 1000,
                         "max_ms": max(lat) * 1000 if lat else float("nan"),
                         "failures": lane["failures"][:20]}
    return summary


def part_reads(cluster: LocalCluster, catalog: Catalog, args, log) -> dict:
    rng = np.random.default_rng(args.seed + 1)
    name = "reads"
    n = args.read_vectors
    ids = [f"r{i}" for i in range(n)]
    with httpx.Client(base_url=cluster.rest) as client:
        create_dataset(client, name, args.dims, args.shards, 2)
        log(f"reads: loading {n} x {args.dims} into '{name}' ({args.shards} shards, 2 copies)")
        for s in range(0, n, 1000):
            r = post_body(client, name, batch_body(ids[s:s + 1000], rng.standard_normal(
                (len(ids[s:s + 1000]), args.dims), dtype=np.float32)), 120)
            if r.status_code != 201:
                raise RuntimeError(f"load: {r.status_code} {r.text[:300]}")
    wait_nodes_idle(cluster, timeout_s=300)
    record = catalog.record(name)
    shard = random.Random(args.seed).randrange(record.shard_count)
    victim = record.primary_of(shard)
    pid = node_pid(cluster, victim)
    log(f"  no fault: {args.fault_seconds:.0f} s of GETs and searches")
    baseline = _read_phase(cluster.rest, name, ids, args.dims, args.fault_seconds, args.seed)
    log(f"    search p99 {baseline['search']['p99_ms']:.1f} ms, get p99 "
        f"{baseline['get']['p99_ms']:.1f} ms, failed {baseline['search']['failed']}"
        f"+{baseline['get']['failed']}")
    log(f"  SIGSTOP {victim} (pid {pid}, primary of shard {shard}) for {args.fault_seconds:.0f} s")
    os.kill(pid, signal.SIGSTOP)
    try:
        frozen = _read_phase(cluster.rest, name, ids, args.dims, args.fault_seconds,
                             args.seed + 2)
    finally:
        os.kill(pid, signal.SIGCONT)
    during = catalog.record(name)
    log(f"    search p99 {frozen['search']['p99_ms']:.1f} ms, get p99 "
        f"{frozen['get']['p99_ms']:.1f} ms, failed {frozen['search']['failed']}"
        f"+{frozen['get']['failed']}")
    resync_s, after = wait_in_sync(catalog, name, 300)
    log(f"  SIGCONT: every copy in sync again after {resync_s} s")
    with httpx.Client(base_url=cluster.rest) as client:
        delete_dataset(client, name)
    ratio = frozen["search"]["p99_ms"] / baseline["search"]["p99_ms"]
    return {"vectors": n, "shards": args.shards, "seconds_per_phase": args.fault_seconds,
            "victim": victim, "victim_shard": shard,
            "primary_of_victim_shard_after_freeze": during.primary_of(shard) if during else None,
            "term_before": record.term_of(shard),
            "term_after": during.term_of(shard) if during else None,
            "baseline": baseline, "frozen": frozen,
            "reads_failed_while_frozen": frozen["get"]["failed"] + frozen["search"]["failed"],
            "search_p99_ratio": ratio, "get_p99_ratio":
                frozen["get"]["p99_ms"] / baseline["get"]["p99_ms"],
            "in_sync_again_after_sigcont_s": resync_s}


# ---- part 3: a copy far behind catching up -------------------------------------------------------

def part_catchup(cluster: LocalCluster, catalog: Catalog, args, log) -> dict:
    rng = np.random.default_rng(args.seed + 3)
    name = "catchup"
    n, batch = args.behind, 5_000
    log(f"catchup: encoding {n} x {args.dims} in batches of {batch}")
    bodies = [batch_body([f"c{i}" for i in range(s, min(n, s + batch))],
                         rng.standard_normal((min(n, s + batch) - s, args.dims),
                                             dtype=np.float32))
              for s in range(0, n, batch)]
    result: dict = {"vectors_behind": n, "batch": batch, "shards": 1}
    with httpx.Client(base_url=cluster.rest) as client:
        create_dataset(client, name, args.dims, 1, 2)
        # One acknowledged batch first, so that both copies have opened the shard and hold
        # the same start before one of them is frozen.
        warm = batch_body([f"w{i}" for i in range(1000)],
                          rng.standard_normal((1000, args.dims), dtype=np.float32))
        r = post_body(client, name, warm, 120)
        if r.status_code != 201:
            raise RuntimeError(f"warm-up insert: {r.status_code} {r.text[:300]}")
        wait_in_sync(catalog, name, 60)
        record = catalog.record(name)
        primary = record.primary_of(0)
        lagging = next(c for c in record.copies_of(0) if c != primary)
        pid = node_pid(cluster, lagging)
        result.update(primary=primary, lagging_copy=lagging, term_before=record.term_of(0))
        log(f"  SIGSTOP {lagging} (pid {pid}, the copy beside primary {primary}); writing {n}")
        os.kill(pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            started = time.perf_counter()
            for body in bodies:
                r = post_body(client, name, body, 120)
                if r.status_code != 201:
                    raise RuntimeError(f"insert: {r.status_code} {r.text[:300]}")
            result["write_s"] = time.perf_counter() - started
            result["write_vectors_per_s"] = n / result["write_s"]
            record = catalog.record(name)
            result["in_sync_before_sigcont"] = list(record.in_sync_of(0))
            result["copies_before_sigcont"] = list(record.copies_of(0))
        finally:
            result["frozen_s"] = time.monotonic() - frozen_at
            os.kill(pid, signal.SIGCONT)
        resumed = time.monotonic()
        log(f"  wrote {n} in {result['write_s']:.1f} s; in sync: {result['in_sync_before_sigcont']}"
            f"; SIGCONT after {result['frozen_s']:.1f} s frozen")
        back = None
        while time.monotonic() - resumed < args.catchup_timeout:
            rec = catalog.record(name)
            if rec is not None and lagging in rec.in_sync_of(0):
                back = time.monotonic() - resumed
                record = rec
                break
            time.sleep(POLL_S)
        result["catch_up_s"] = back
        result["catch_up_vectors_per_s"] = n / back if back else None
        result["copies_after"] = list(record.copies_of(0)) if record else None
        result["term_after"] = record.term_of(0) if record else None
        log(f"  {lagging} back in the in-sync set after {back} s"
            + (f" = {n / back:,.0f} vectors/s" if back else ""))
        delete_dataset(client, name)
    return result


# ---- part 4: kill -9 of a primary under write load ----------------------------------------------

class Writer(threading.Thread):
    """Sends small batches with fresh ids in a loop; keeps (sent, answered, status, ids) for each.
    `shard` None spreads each batch over every shard (a 2PC batch)."""

    def __init__(self, rest: str, name: str, prefix: str, shard: int | None, shard_count: int,
                 dims: int, batch: int, seed: int):
        super().__init__(daemon=True)
        self.rest, self.name, self.prefix = rest, name, prefix
        self.shard, self.shard_count, self.dims, self.batch = shard, shard_count, dims, batch
        self.rng = np.random.default_rng(seed)
        self.stopping = threading.Event()
        self.records: list[tuple[float, float, int, list[str]]] = []
        self._counter = 0

    def _ids(self) -> list[str]:
        out = []
        while len(out) < self.batch:
            vid = f"{self.prefix}{self._counter}"
            self._counter += 1
            if self.shard is None or shard_of(vid, self.shard_count) == self.shard:
                out.append(vid)
        return out

    def run(self) -> None:
        with httpx.Client(base_url=self.rest) as client:
            while not self.stopping.is_set():
                ids = self._ids()
                body = batch_body(ids, self.rng.standard_normal((len(ids), self.dims),
                                                                dtype=np.float32))
                sent = time.monotonic()
                try:
                    status = post_body(client, self.name, body, 10).status_code
                except httpx.HTTPError:
                    status = 0
                self.records.append((sent, time.monotonic(), status, ids))
                if status != 201:
                    time.sleep(0.05)   # an error answer comes fast: do not spin on it

    def acked(self) -> list[str]:
        return [i for _, _, status, ids in self.records if status == 201 for i in ids]


def kill_run(cluster: LocalCluster, catalog: Catalog, args, run: int, log) -> dict:
    rng = random.Random(args.seed * 1000 + run)
    name = f"kill-{run}"
    with httpx.Client(base_url=cluster.rest) as client:
        create_dataset(client, name, args.dims, args.shards, 2)
    record = catalog.record(name)
    shard = rng.randrange(record.shard_count)
    victim = record.primary_of(shard)
    pid = None
    wait_until = time.monotonic() + 60
    while pid is None and time.monotonic() < wait_until:   # restarted by the previous run
        pid = node_pid(cluster, victim)
        if pid is None:
            time.sleep(POLL_S)
    if pid is None:
        raise RuntimeError(f"{victim} is not running")
    warmup_s = rng.uniform(1.0, 3.0)
    out: dict = {"run": run, "seed": args.seed * 1000 + run, "shard": shard, "victim": victim,
                 "term_before": record.term_of(shard), "warmup_s": round(warmup_s, 3)}
    on_shard = Writer(cluster.rest, name, f"k{run}s", shard, record.shard_count, args.dims,
                      args.kill_batch, rng.randrange(2**31))
    spread = Writer(cluster.rest, name, f"k{run}a", None, record.shard_count, args.dims,
                    args.kill_batch, rng.randrange(2**31))
    on_shard.start()
    spread.start()
    try:
        time.sleep(warmup_s)
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        failover_at = restart_at = first_ack_at = None
        primary_at_first_ack = term_at_first_ack = None
        deadline = killed_at + args.kill_timeout
        while time.monotonic() < deadline:
            rec = catalog.record(name)
            now = time.monotonic()
            if failover_at is None and rec is not None and rec.primary_of(shard) != victim:
                failover_at = now
            if restart_at is None:
                new_pid = node_pid(cluster, victim)
                if new_pid is not None and new_pid != pid:
                    restart_at = time.monotonic()
            if first_ack_at is None:
                # The first 201 on the shard for a request that was sent after the kill, or that
                # was in flight at the kill and answered more than 0.1 s later (an answer within
                # 0.1 s was already on its way before the kill took effect).
                acks = [done for sent, done, status, _ in list(on_shard.records)
                        if status == 201 and done > killed_at
                        and (sent >= killed_at or done - killed_at > 0.1)]
                if acks:
                    first_ack_at = min(acks)
                    if rec is not None:
                        primary_at_first_ack = rec.primary_of(shard)
                        term_at_first_ack = rec.term_of(shard)
            if first_ack_at is not None and restart_at is not None and (
                    failover_at is not None or time.monotonic() - first_ack_at > 1.0):
                break
            time.sleep(POLL_S)
        time.sleep(args.after_s)   # steady load goes on after the shard answers again
    finally:
        for w in (on_shard, spread):
            w.stopping.set()
        for w in (on_shard, spread):
            w.join(30)
    out["first_ack_s"] = first_ack_at - killed_at if first_ack_at else None
    out["failover_s"] = failover_at - killed_at if failover_at else None
    out["restart_seen_s"] = restart_at - killed_at if restart_at else None
    out["primary_at_first_ack"] = primary_at_first_ack
    out["term_at_first_ack"] = term_at_first_ack
    if first_ack_at is None:
        out["recovered_by"] = "none"
    elif primary_at_first_ack is not None and primary_at_first_ack != victim:
        out["recovered_by"] = "failover"
    else:
        out["recovered_by"] = "restart"
    statuses: dict[str, int] = {}
    for w in (on_shard, spread):
        for _, _, status, _ in w.records:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
    out["answers"] = statuses
    acked = set(on_shard.acked()) | set(spread.acked())
    out["acked"] = len(acked)
    out["acked_on_shard"] = len(on_shard.acked())
    in_sync_s, rec = wait_in_sync(catalog, name, args.recover_timeout)
    out["all_in_sync_after_s"] = time.monotonic() - killed_at if in_sync_s is not None else None
    out["in_sync_at_end"] = in_sync_s is not None
    out["copies_at_end"] = [list(rec.copies_of(s)) for s in range(rec.shard_count)] if rec else None
    out["in_sync_sets_at_end"] = [list(rec.in_sync_of(s)) for s in range(rec.shard_count)] \
        if rec else None
    out["term_at_end"] = rec.term_of(shard) if rec else None
    if rec is not None and in_sync_s is not None:
        copies = check_copies(cluster, catalog.token, rec, acked)
        out["copies_check"] = copies
        out["acked_missing_on_an_in_sync_copy"] = copies["missing_total"]
        out["copies_differ"] = [s for s, ok in copies["digests_agree"].items() if not ok]
        if out["copies_differ"]:
            # Once more after a pause, to tell a copy still applying from a lasting difference.
            time.sleep(5)
            rec2 = catalog.record(name) or rec
            again = check_copies(cluster, catalog.token, rec2, acked)
            out["copies_check_after_5s"] = again
            out["copies_differ"] = [s for s, ok in again["digests_agree"].items() if not ok]
            outcome_of = {}
            for w in (on_shard, spread):
                for _, _, status, ids in w.records:
                    for i in ids:
                        outcome_of[i] = str(status) if status else "no answer"
            try:
                out["copy_difference"] = {
                    s: explain_difference(cluster, catalog.token, rec2, int(s), outcome_of)
                    for s in out["copies_differ"]}
            except Exception as exc:  # noqa: BLE001 - the explanation is extra detail
                out["copy_difference_error"] = repr(exc)[:300]
    with httpx.Client(base_url=cluster.rest) as client:
        try:
            listed = list_ids(client, name)
            missing = sorted(acked - listed)
        except (RuntimeError, httpx.HTTPError) as exc:
            out["list_error"] = repr(exc)[:300]
            missing = sorted(acked)
        # Confirm each id the listing lacks with a GET of its own.
        lost = []
        for vid in missing:
            try:
                r = client.get(f"/datasets/{name}/vectors/{vid}", timeout=15)
                if r.status_code != 200:
                    lost.append(vid)
            except httpx.HTTPError:
                lost.append(vid)
        out["listing_missing"] = len(missing)
        out["listing_missing_ids"] = missing[:50]
        out["lost"] = len(lost)
        out["lost_ids"] = lost[:50]
        if args.keep_datasets is False:
            delete_dataset(client, name)
    return out


def part_kill(cluster: LocalCluster, catalog: Catalog, args, log) -> dict:
    runs = []
    for run in range(args.runs):
        r = kill_run(cluster, catalog, args, run, log)
        runs.append(r)
        first = f"{r['first_ack_s']:.2f} s" if r["first_ack_s"] is not None else "never"
        log(f"kill run {run + 1}/{args.runs} (seed {r['seed']}): kill -9 {r['victim']} "
            f"(primary of shard {r['shard']}); first ack after {first} by {r['recovered_by']}; "
            f"in sync after {r['all_in_sync_after_s'] or float('nan'):.1f} s; acked {r['acked']}, "
            f"lost {r['lost']} (listing lacked {r['listing_missing']}; missing on an in-sync "
            f"copy {r.get('acked_missing_on_an_in_sync_copy')}; copies differ on shards "
            f"{r.get('copies_differ')})")
        # The next run starts on a cluster where every node serves again.
        wait_nodes_idle(cluster, timeout_s=60)
    firsts = [r["first_ack_s"] for r in runs if r["first_ack_s"] is not None]
    return {"runs": runs, "lost_total": sum(r["lost"] for r in runs),
            "listing_missing_total": sum(r["listing_missing"] for r in runs),
            "missing_on_in_sync_copies_total": sum(r.get("acked_missing_on_an_in_sync_copy") or 0
                                                   for r in runs),
            "runs_with_differing_copies": sum(1 for r in runs if r.get("copies_differ")),
            "acked_total": sum(r["acked"] for r in runs),
            "runs_without_first_ack": sum(1 for r in runs if r["first_ack_s"] is None),
            "runs_not_in_sync_at_end": sum(1 for r in runs if not r["in_sync_at_end"]),
            "first_ack_median_s": median(firsts) if len(firsts) == len(runs) else
            # A run where the shard never answered counts as worse than any that did.
            median(firsts + [math.inf] * (len(runs) - len(firsts))),
            "first_ack_max_s": max(firsts) if firsts else None,
            "recovered_by": {k: sum(1 for r in runs if r["recovered_by"] == k)
                             for k in ("failover", "restart", "none")}}


# ---- report -------------------------------------------------------------------------------------

def _fmt(value, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        return "-"
    return f"{value:,.{digits}f}"


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "MISSED")


def summary_rows(report: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    k = report.get("kill")
    if k:
        rows.append((f"acknowledged writes lost, {len(k['runs'])} kill -9 runs",
                     f"{k['lost_total']} of {k['acked_total']:,}", "0",
                     _verdict(k["lost_total"] == 0)))
        m = k["first_ack_median_s"]
        rows.append(("kill -9 of a primary to first ack on its shard, median (max)",
                     f"{_fmt(m, 2)} s ({_fmt(k['first_ack_max_s'], 2)} s)", "<= 5 s",
                     _verdict(m is not None and m <= TARGETS["first_ack_after_kill_median_s"])))
        rows.append(("acked ids missing on an in-sync copy (internal Get per copy)",
                     f"{k['missing_on_in_sync_copies_total']}", "0",
                     _verdict(k["missing_on_in_sync_copies_total"] == 0)))
        rows.append(("runs whose in-sync copies differ after recovery (digest)",
                     f"{k['runs_with_differing_copies']} of {len(k['runs'])}", "0 (chaos checker)",
                     _verdict(k["runs_with_differing_copies"] == 0)))
    r = report.get("reads")
    if r:
        rows.append(("reads failed while a node is SIGSTOPped",
                     f"{r['reads_failed_while_frozen']} of "
                     f"{r['frozen']['get']['reads'] + r['frozen']['search']['reads']:,}", "0",
                     _verdict(r["reads_failed_while_frozen"] == 0)))
        rows.append(("search p99 frozen / no fault",
                     f"{r['frozen']['search']['p99_ms']:.1f} / "
                     f"{r['baseline']['search']['p99_ms']:.1f} ms = {r['search_p99_ratio']:.2f}x",
                     "<= 3x",
                     _verdict(r["search_p99_ratio"] <= TARGETS["search_p99_frozen_over_baseline"])))
    t = report.get("throughput")
    if t:
        rows.append(("write throughput, 2 copies / 1 copy",
                     f"{t['rf2_vectors_per_s']:,.0f} / {t['rf1_vectors_per_s']:,.0f} vectors/s"
                     f" = {t['ratio']:.2f}x", ">= 0.7x",
                     _verdict(t["ratio"] >= TARGETS["throughput_rf2_over_rf1"])))
    c = report.get("catchup")
    if c:
        rate = c.get("catch_up_vectors_per_s")
        rows.append((f"copy {c['vectors_behind']:,} vectors behind catching up",
                     f"{_fmt(rate)} vectors/s ({_fmt(c.get('catch_up_s'), 2)} s)",
                     ">= 20,000 vectors/s",
                     _verdict(rate is not None and rate >= TARGETS["catch_up_vectors_per_s"])))
    return rows


def render(report: dict) -> str:
    rows = summary_rows(report)
    header = ("measure", "figure", "target", "verdict")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = "  ".join("{:<%d}" % w for w in widths)
    out = [f"Replication ({report['cluster']['nodes']} nodes, {report['cluster']['meta']} meta, "
           f"1 router; {report['config']['dims']}-d; load "
           f"{report['machine']['loadavg_start'][0]:.1f} -> {report['loadavg_end'][0]:.1f})",
           line.format(*header), "  ".join("-" * w for w in widths)]
    out += [line.format(*row) for row in rows]
    if report.get("sources_changed_during_run"):
        out.append("WARNING: source files changed during the run: "
                   + ", ".join(report["sources_changed_during_run"][:10]))
    return "\n".join(out)


# ---- main ---------------------------------------------------------------------------------------

PARTS = ("throughput", "reads", "catchup", "kill")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes and 3 kill runs")
    p.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of "
                   + ", ".join(PARTS))
    p.add_argument("--runs", type=int, default=None, help="kill -9 runs (default 20, quick 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--meta", type=int, default=1)
    p.add_argument("--shards", type=int, default=3, help="shard_count of every dataset but the "
                   "catch-up one (1 shard)")
    p.add_argument("--dims", type=int, default=128)
    p.add_argument("--throughput-vectors", type=int, default=None,
                   help="vectors per throughput measurement (default 30000, quick 10000)")
    p.add_argument("--throughput-batch", type=int, default=1_000)
    p.add_argument("--reps", type=int, default=None, help="throughput repetitions (3, quick 2)")
    p.add_argument("--read-vectors", type=int, default=None,
                   help="vectors loaded for the read part (default 10000, quick 3000)")
    p.add_argument("--fault-seconds", type=float, default=None,
                   help="length of the no-fault and the frozen read phases (20, quick 8)")
    p.add_argument("--behind", type=int, default=None,
                   help="vectors written while the copy is frozen (100000, quick 20000)")
    p.add_argument("--catchup-timeout", type=float, default=600.0)
    p.add_argument("--kill-batch", type=int, default=10, help="vectors per writer batch")
    p.add_argument("--after-s", type=float, default=1.5,
                   help="seconds of write load after the shard's first ack following a kill")
    p.add_argument("--kill-timeout", type=float, default=60.0)
    p.add_argument("--recover-timeout", type=float, default=180.0)
    p.add_argument("--work-dir", default=None)
    p.add_argument("--keep", action="store_true", help="keep the work dir (the cluster's data "
                   "and logs)")
    p.add_argument("--keep-datasets", action="store_true",
                   help="do not delete each kill run's dataset")
    p.add_argument("--out", default="bench/results/replication.json")
    args = p.parse_args(argv)
    q = args.quick

    def pick(value, default, quick):
        return value if value is not None else (quick if q else default)

    args.runs = pick(args.runs, 20, 3)
    args.throughput_vectors = pick(args.throughput_vectors, 30_000, 10_000)
    args.reps = pick(args.reps, 3, 2)
    args.read_vectors = pick(args.read_vectors, 10_000, 3_000)
    args.fault_seconds = pick(args.fault_seconds, 20.0, 8.0)
    args.behind = pick(args.behind, 100_000, 20_000)
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        p.error(f"unknown parts: {sorted(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    from bench.run import source_fingerprint
    args = _parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="tributary-bench-replication-")
    os.makedirs(work_dir, exist_ok=True)
    fingerprint = source_fingerprint()
    started = time.monotonic()
    report: dict = {
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.replication"] + (argv if argv is not None
                                                                else sys.argv[1:])),
        "machine": machine(),
        "config": {k: v for k, v in vars(args).items() if k not in ("work_dir",)},
        "limits": {"failover_after_ms": limits.failover_after_ms,
                   "replication_ack_timeout_ms": limits.replication_ack_timeout_ms,
                   "copy_replace_after_ms": limits.copy_replace_after_ms,
                   "read_hedge_min_ms": limits.read_hedge_min_ms,
                   "read_suspect_ms": limits.read_suspect_ms},
        "targets": TARGETS,
        "cluster": {"nodes": args.nodes, "meta": args.meta, "routers": 1},
    }
    cluster = LocalCluster(os.path.join(work_dir, "cluster"), nodes=args.nodes, meta=args.meta)
    catalog = None
    try:
        _log(f"starting cluster ({args.meta} meta, {args.nodes} nodes, 1 router) in "
             f"{cluster.data_dir}")
        report["cluster"]["start_s"] = cluster.start()
        catalog = Catalog(cluster)
        parts = {"throughput": lambda: part_throughput(cluster, args, _log),
                 "reads": lambda: part_reads(cluster, catalog, args, _log),
                 "catchup": lambda: part_catchup(cluster, catalog, args, _log),
                 "kill": lambda: part_kill(cluster, catalog, args, _log)}
        for part in args.parts:
            part_started = time.monotonic()
            try:
                report[part] = parts[part]()
            except (RuntimeError, httpx.HTTPError, OSError, TypeError, AttributeError) as exc:
                # A part that cannot finish is reported as such; the others still run.
                _log(f"{part}: FAILED: {exc!r}")
                report.setdefault("errors", {})[part] = repr(exc)[:2000]
            report.setdefault("part_seconds", {})[part] = round(time.monotonic() - part_started, 1)
    finally:
        if catalog is not None:
            catalog.close()
        report["cluster"]["stop_s"] = cluster.stop()
        report["cluster"]["up_output_tail"] = cluster.output()[-3000:]
        report["loadavg_end"] = list(os.getloadavg())
        report["wall_s"] = round(time.monotonic() - started, 1)
        after = source_fingerprint()
        report["sources_changed_during_run"] = sorted(
            k for k in set(fingerprint) | set(after) if fingerprint.get(k) != after.get(k))
        report["summary"] = [dict(zip(("measure", "figure", "target", "verdict"), row))
                             for row in summary_rows(report)]
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "w") as f:
                json.dump(report, f, indent=2, default=str)
            _log(f"wrote {args.out}")
        if args.keep or args.work_dir:
            _log(f"kept {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
