"""The 1M x 128 figures of issue 18, from one run on one local cluster (`tributary up`: 3 meta
members, 2 nodes, 1 router; a dataset of 2 shards, one copy each, cosine, HNSW at the default
ef):

1. load `--size` clustered 128-d vectors (bench/datasets.py) the fastest way the API offers:
   deeplake.v1 InsertVectors with one shard's ids per batch (a one-phase commit) and the
   values packed as float32 bytes (`packed_values`), one client thread per shard; then wait
   until every row is in the HNSW graph (GetDatasetStats: pending_index_vectors = 0);
2. each process's VmRSS and the total (after the graph is built, and again after the searches);
3. sequential search latency, p50 and p99, over gRPC and over REST (`--queries` each, after a
   warm-up), and recall@10 of both against brute-force truth over the same queries;
4. a restart of the whole cluster (SIGTERM to `tributary up`, then `tributary up` again on the
   same data dir): seconds from the new `tributary up` to the first gRPC search that answers
   with 10 hits, to the "ready" line, and to full readiness (every row counted and in the graph
   again); the node logs' start-up lines are kept to show where the time went.

    python -m bench.million [--size 1000000] [--queries 1000] [--work-dir DIR] [--keep]
    python -m bench.million --work-dir DIR --reuse      # restart + searches on a kept cluster

Targets (DESIGN.md, issue 18): cluster RSS <= 1.5 GB at 1M; search p99 <= 10 ms over REST and
gRPC; recall@10 >= 0.96; first search <= 10 s after a restart. Prints a table with met/MISSED;
JSON to `--out`. The harness asserts nothing: it is a report.
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import shutil
import signal
import statistics
import sys
import subprocess
import tempfile
import threading
import time

import grpc
import httpx
import numpy as np

from bench import cluster_rss, e2e
from bench.datasets import make_dataset, recall_at_k
from bench.timing import percentile, run_threads
from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc
from router.routing import shard_of
from tributary import limits, procs

NAME = "million"
K = 10
TARGETS = {"rss_total_mb": 1500.0, "p99_ms": 10.0, "recall": 0.96, "first_search_s": 10.0}


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _channel(cluster: e2e.LocalCluster) -> grpc.Channel:
    return grpc.insecure_channel(cluster.grpc_target, options=e2e._GRPC_OPTIONS)


def _stats(cluster: e2e.LocalCluster) -> dict[str, str]:
    with _channel(cluster) as ch:
        return dict(pb_grpc.DatasetServiceStub(ch).GetDatasetStats(
            pb.GetDatasetStatsRequest(dataset_id=NAME), timeout=30).stats)


def load(cluster: e2e.LocalCluster, data: np.ndarray, shards: int, replication: int) -> dict:
    """Creates the dataset and loads `data` (row i is vector id str(i)); returns the figures."""
    with _channel(cluster) as ch:
        pb_grpc.DatasetServiceStub(ch).CreateDataset(pb.CreateDatasetRequest(
            name=NAME, dimensions=data.shape[1], metric_type="cosine", index_type="hnsw",
            shard_count=shards, replication_factor=replication), timeout=60)
    rows_by_shard: list[list[int]] = [[] for _ in range(shards)]
    for i in range(len(data)):
        rows_by_shard[shard_of(str(i), shards)].append(i)
    batch = limits.batch_vectors_max
    errors: list[BaseException] = []
    loaded = [0]
    lock = threading.Lock()

    def load_shard(shard: int) -> None:
        rows = np.asarray(rows_by_shard[shard], dtype=np.int64)
        with _channel(cluster) as ch:
            stub = pb_grpc.VectorServiceStub(ch)
            for start in range(0, len(rows), batch):
                chunk = rows[start:start + batch]
                request = pb.InsertVectorsRequest(
                    dataset_id=NAME, overwrite=True,
                    vectors=[pb.Vector(id=str(i)) for i in chunk.tolist()],
                    packed_values=np.ascontiguousarray(data[chunk], dtype="<f4").tobytes())
                try:
                    # overwrite: a batch the router retried after a first attempt that was
                    # applied must not fail the load as AlreadyExists.
                    stub.InsertVectors(request, timeout=600)
                except grpc.RpcError as exc:
                    errors.append(exc)
                    return
                with lock:
                    before = loaded[0]
                    loaded[0] += len(chunk)
                    if loaded[0] // 100_000 != before // 100_000:
                        _log(f"acked {loaded[0]:,}")

    started = time.monotonic()
    acked_s = run_threads(load_shard, shards)
    if errors:
        raise SystemExit(f"the load failed: {errors[0]!r}")
    stats = _stats(cluster)
    pending_at_ack = int(stats.get("pending_index_vectors", "0"))
    _log(f"all {len(data):,} acked in {acked_s:.1f} s; {pending_at_ack:,} not in the graph yet")
    indexed_s = wait_indexed(cluster, len(data), timeout_s=3600)
    return {"acked_s": round(acked_s, 1), "acked_per_s": round(len(data) / acked_s),
            "pending_at_last_ack": pending_at_ack,
            "in_graph_s": round(time.monotonic() - started, 1),
            "graph_after_ack_s": round(indexed_s, 1)}


def wait_indexed(cluster: e2e.LocalCluster, size: int, timeout_s: float,
                 interval_s: float = 1.0) -> float:
    """Polls GetDatasetStats until `size` rows are counted and none waits for the graph."""
    started = time.monotonic()
    last_log = started
    while time.monotonic() - started < timeout_s:
        try:
            stats = _stats(cluster)
            active = int(stats.get("active_vectors", "0"))
            pending = int(stats.get("pending_index_vectors", "-1"))
            if active == size and pending == 0:
                return time.monotonic() - started
            if time.monotonic() - last_log > 30:
                _log(f"graph: {active:,} rows, {pending:,} pending")
                last_log = time.monotonic()
        except grpc.RpcError:
            pass
        time.sleep(interval_s)
    raise TimeoutError(f"not fully indexed after {timeout_s} s")


def _grpc_search(cluster: e2e.LocalCluster):
    channel = _channel(cluster)
    stub = pb_grpc.SearchServiceStub(channel)
    options = pb.SearchOptions(top_k=K)     # ef_search unset: the default ef

    def search(q: list[float]) -> list[int]:
        response = stub.SearchVectors(pb.SearchVectorsRequest(
            dataset_id=NAME, query_vector=q, options=options), timeout=30)
        return [int(r.vector.id) for r in response.results]
    return search, channel.close


def _rest_search(cluster: e2e.LocalCluster):
    client = httpx.Client(base_url=cluster.rest, timeout=30)

    def search(q: list[float]) -> list[int]:
        response = client.post(f"/datasets/{NAME}/search",
                               json={"query_vector": q, "options": {"top_k": K}})
        response.raise_for_status()
        return [int(r["vector"]["id"]) for r in response.json()["results"]]
    return search, client.close


def sequential(search, queries: list[list[float]], truth: np.ndarray, warmup: int) -> dict:
    """One client, one search at a time: latency percentiles and recall@10 over `queries`."""
    for q in queries[:warmup]:
        search(q)
    latencies, found = [], []
    for q in queries:
        started = time.perf_counter()
        ids = search(q)
        latencies.append(time.perf_counter() - started)
        found.append(ids)
    return {"queries": len(queries), "p50_ms": round(percentile(latencies, 50) * 1000, 2),
            "p99_ms": round(percentile(latencies, 99) * 1000, 2),
            "mean_ms": round(sum(latencies) / len(latencies) * 1000, 2),
            "recall_at_10": round(recall_at_k(found, truth, K), 4)}


# The first-search poller runs in its own process: a thread of this one calling gRPC while
# `tributary up` is forked breaks the child's gRPC (fork_posix: "Other threads are currently
# calling into gRPC"). It prints the monotonic time (system-wide) of its first full answer.
_POLLER = """
import sys, time, grpc
from bench import e2e
from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc
target, name, k, query = sys.argv[1], sys.argv[2], int(sys.argv[3]), [float(x) for x in sys.argv[4].split(",")]
deadline = time.monotonic() + float(sys.argv[5])
while time.monotonic() < deadline:
    try:
        with grpc.insecure_channel(target, options=e2e._GRPC_OPTIONS) as ch:
            response = pb_grpc.SearchServiceStub(ch).SearchVectors(pb.SearchVectorsRequest(
                dataset_id=name, query_vector=query, options=pb.SearchOptions(top_k=k)), timeout=5)
        if len(response.results) == k:
            print(time.monotonic(), flush=True)
            sys.exit(0)
    except grpc.RpcError:
        pass
    time.sleep(0.05)
sys.exit(1)
"""


def _start_poller(cluster: e2e.LocalCluster, query: list[float], timeout_s: float):
    return subprocess.Popen(
        [sys.executable, "-c", _POLLER, cluster.grpc_target, NAME, str(K),
         ",".join(repr(float(x)) for x in query), str(timeout_s)],
        cwd=e2e.REPO, stdout=subprocess.PIPE, text=True,
        preexec_fn=procs.die_with_parent)


def _start_lines(data_dir: str, since_wall: float, per_process: int = 30) -> dict[str, list[str]]:
    """Each process's log lines since `since_wall`, as "+seconds message": where a restart's
    time goes (a node opens its shards, loads their graphs and replays its logs before it
    serves)."""
    out = {}
    logs = os.path.join(data_dir, "logs")
    for name in sorted(os.listdir(logs)):
        if not name.endswith(".log") or name.startswith(("meta-1", "meta-2")):
            continue
        lines = []
        with open(os.path.join(logs, name), errors="replace") as f:
            for line in f:
                try:
                    doc = json.loads(line)
                    ts = doc["ts"]
                    at = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) \
                        + float("0" + ts[19:].rstrip("Z"))
                except (ValueError, KeyError, TypeError):
                    continue
                if at >= since_wall:
                    lines.append(f"+{at - since_wall:.2f}s {doc.get('message', '')}"[:200])
        out[name[:-4]] = lines[:per_process]
    return out


def restart(cluster: e2e.LocalCluster, size: int, query: list[float]) -> dict:
    """Stops the whole cluster, starts it again on the same data dir and times it."""
    stop_s = cluster.stop()
    # A fresh output file, so that start() waits for the new "ready" line.
    os.replace(cluster.output_path, cluster.output_path + f".{int(time.time())}")
    since_wall = time.time()
    started = time.monotonic()
    poller = _start_poller(cluster, query, timeout_s=900)
    found: dict = {}
    try:
        cluster.start(timeout_s=600)
        ready_s = time.monotonic() - started
        wait_indexed(cluster, size, timeout_s=1800, interval_s=0.2)
        full_s = time.monotonic() - started
        # CPU each process spent from its start to here: what a restart costs whatever the
        # load on the machine (wall time on a shared 2-core box is mostly waiting for a core).
        cpu_s = {p["name"]: round(e2e._cpu_seconds(p["pid"]), 2)
                 for p in cluster_rss.snapshot(cluster.process.pid)["processes"]}
        cpu_s["up"] = round(e2e._cpu_seconds(cluster.process.pid), 2)
        out, _ = poller.communicate(timeout=900)
        if poller.returncode == 0:
            found["first_search_s"] = round(float(out.split()[-1]) - started, 2)
    finally:
        if poller.poll() is None:
            poller.kill()
            poller.wait()
    _log(f"restart: CPU seconds per process to full readiness {cpu_s}")
    _log(f"restart: first search {found.get('first_search_s')} s, ready line {ready_s:.2f} s, "
         f"every row counted and in the graph {full_s:.2f} s (stop took {stop_s:.1f} s)")
    return {"stop_s": round(stop_s, 1), "first_search_s": found.get("first_search_s"),
            "ready_line_s": round(ready_s, 2), "fully_ready_s": round(full_s, 2),
            "cpu_s_to_full_readiness": cpu_s,
            "start_logs": _start_lines(cluster.data_dir, since_wall)}


def rss(cluster: e2e.LocalCluster) -> dict:
    snap = cluster_rss.snapshot(cluster.process.pid)
    return {"total_mb": snap["total_mb"],
            "processes_mb": {p["name"]: p["rss_mb"] for p in snap["processes"]}}


def _verdict(value, target: float, higher_is_better: bool = False) -> str:
    if value is None:
        return "not measured"
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "MISSED"


def print_table(report: dict) -> None:
    rows = []
    after = report.get("rss_after_searches") or {}
    built = report.get("rss_after_build") or {}
    peak = max(after.get("total_mb", 0.0), built.get("total_mb", 0.0)) or None
    rows.append(("Cluster RSS (six processes)", "<= 1,500 MB",
                 f"{built.get('total_mb')} MB after build, {after.get('total_mb')} MB after "
                 "searches", _verdict(peak, TARGETS["rss_total_mb"])))
    restarted = report.get("rss_after_restart") or {}
    if restarted:
        rows.append(("Cluster RSS after the restart", "<= 1,500 MB",
                     f"{restarted.get('total_mb')} MB",
                     _verdict(restarted.get("total_mb"), TARGETS["rss_total_mb"])))
    for api in ("grpc", "rest"):
        s = report.get(f"search_{api}") or {}
        rows.append((f"Search p99, sequential, {api}", "<= 10 ms",
                     f"p50 {s.get('p50_ms')} ms, p99 {s.get('p99_ms')} ms",
                     _verdict(s.get("p99_ms"), TARGETS["p99_ms"])))
    for api in ("grpc", "rest"):
        s = report.get(f"search_{api}") or {}
        rows.append((f"Recall@10, default ef, {api}", ">= 0.96", f"{s.get('recall_at_10')}",
                     _verdict(s.get("recall_at_10"), TARGETS["recall"], True)))
    r = report.get("restart") or {}
    rows.append(("Restart to first search", "<= 10 s", f"{r.get('first_search_s')} s",
                 _verdict(r.get("first_search_s"), TARGETS["first_search_s"])))
    rows.append(("Restart to full readiness", "(none)",
                 f"ready line {r.get('ready_line_s')} s, all rows in graph "
                 f"{r.get('fully_ready_s')} s", ""))
    ld = report.get("load") or {}
    if ld:
        rows.append(("Acked ingest (one-shard gRPC batches)", "(issue 18: >= 20k/s)",
                     f"{ld.get('acked_per_s'):,}/s; graph complete {ld.get('in_graph_s')} s "
                     "after the first batch", ""))
    width = [max(len(str(row[i])) for row in rows) for i in range(4)]
    if report.get("reused"):
        print("(a kept data dir: \"after build\" is after a start on it, no ingest in this run)")
    print(f"1M figures: {report['size']:,} x 128, 2 nodes, 2 shards x {report['replication']} "
          f"cop{'y' if report['replication'] == 1 else 'ies'}; load average "
          f"{report['load_average']}")
    for row in rows:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, width)))
    for name, mb in (after.get("processes_mb") or built.get("processes_mb") or {}).items():
        print(f"    {name:<9} {built.get('processes_mb', {}).get(name)} MB after build, "
              f"{mb} MB after searches, "
              f"{restarted.get('processes_mb', {}).get(name)} MB after the restart")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--replication", type=int, default=1)
    parser.add_argument("--work-dir", default=None, help="default: a temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the cluster's data dir")
    parser.add_argument("--reuse", action="store_true",
                        help="the work dir holds a loaded cluster: skip the load")
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--out", default="bench/results/million.json")
    args = parser.parse_args()
    work = args.work_dir or tempfile.mkdtemp(prefix="tributary-million-")
    os.makedirs(work, exist_ok=True)
    load_start = os.getloadavg()
    _log(f"generating {args.size:,} x 128 clustered vectors and the truth of "
         f"{args.queries} queries")
    ds = make_dataset("clustered", args.size, args.queries, metric="cosine", k=K)
    queries = [q.tolist() for q in ds.queries]
    cluster = e2e.LocalCluster(os.path.join(work, "cluster"), nodes=2, meta=3)
    if args.reuse and os.path.exists(cluster.output_path):
        os.replace(cluster.output_path, cluster.output_path + f".{int(time.time())}")
    report: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "size": args.size,
                    "shards": args.shards, "replication": args.replication,
                    "queries": args.queries, "ef_search": limits.ef_search_default}
    try:
        cluster.start(timeout_s=600)
        if args.reuse:
            report["reused"] = True
            wait_indexed(cluster, args.size, timeout_s=1800)
        else:
            _log("loading")
            report["load"] = load(cluster, ds.data, args.shards, args.replication)
        time.sleep(5)   # let the last commits and index saves settle
        report["rss_after_build"] = rss(cluster)
        _log(f"RSS after build: {report['rss_after_build']}")
        for api, make in (("grpc", _grpc_search), ("rest", _rest_search)):
            search, close = make(cluster)
            try:
                report[f"search_{api}"] = sequential(search, queries, ds.truth, args.warmup)
            finally:
                close()
            _log(f"{api}: {report[f'search_{api}']}")
        report["rss_after_searches"] = rss(cluster)
        restarts = []
        for _ in range(args.restarts):
            restarts.append(restart(cluster, args.size, queries[0]))
        report["restarts"] = restarts
        firsts = [r["first_search_s"] for r in restarts if r["first_search_s"]]
        if restarts:
            report["restart"] = {**restarts[-1], "first_search_s":
                                 statistics.median(firsts) if firsts else None}
            report["rss_after_restart"] = rss(cluster)
    finally:
        cluster.stop()
        if not args.keep and not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    report["load_average"] = [round(x, 1) for x in load_start + os.getloadavg()]
    print_table(report)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))   # run the finally: stop the cluster
    main()
