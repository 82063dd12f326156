"""Server CPU per search: `tributary up` (3 meta, 2 nodes, 1 router), `--size` x 128 clustered
vectors in 2 shards (one copy each), searched by `--threads` client threads over gRPC and REST.
CPU per query is the sum of the router's and the nodes' CPU time (user + system, from
/proc/PID/stat) over the run, less what each process spent per second with no search running
(sampled for 2 s just before), divided by the queries answered. Meta members are left out: a
search never reaches them. Also QPS, sequential p99 and recall@10 against exact ground truth.
Target (DESIGN.md): <= 0.8 ms per query at 16 threads, 100k x 128, 2 shards.

    python -m bench.search_cpu [--size 100000] [--threads 16] [--reps 3] [--repos A,B]

`--repos` runs the same data dir from several checkouts in turn (e.g. a baseline made with
`git archive <commit> | tar -x -C /tmp/base`, then this tree), alternating their order between
repetitions, so every figure is compared with a baseline taken in the same run. The data is
loaded once, by the first checkout; the others restart the cluster on it. Medians of `--reps`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import grpc
import httpx
import numpy as np

from bench import e2e
from bench.cluster_rss import _servers
from bench.datasets import make_dataset, recall_at_k
from bench.timing import query_loop
from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc

K = 10
IDLE_SAMPLE_S = 2.0


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _server_pids(cluster: e2e.LocalCluster) -> list[int]:
    return [pid for pid, kind in _servers(cluster.process.pid) if kind in ("router", "node")]


def _load(cluster: e2e.LocalCluster, ds, batch: int) -> None:
    with grpc.insecure_channel(cluster.grpc_target, options=e2e._GRPC_OPTIONS) as channel:
        pb_grpc.DatasetServiceStub(channel).CreateDataset(pb.CreateDatasetRequest(
            name="cpu", dimensions=ds.dim, metric_type=ds.metric, index_type="hnsw",
            shard_count=2, replication_factor=1), timeout=60)
        vectors = pb_grpc.VectorServiceStub(channel)
        for start in range(0, ds.size, batch):
            rows = ds.data[start:start + batch]
            vectors.InsertVectors(pb.InsertVectorsRequest(dataset_id="cpu", vectors=[
                pb.Vector(id=str(start + i), values=row) for i, row in
                enumerate(rows.tolist())]), timeout=300)


def _wait_searchable(cluster: e2e.LocalCluster, query: list[float], timeout_s: float = 300.0
                     ) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with grpc.insecure_channel(cluster.grpc_target, options=e2e._GRPC_OPTIONS) as ch:
                response = pb_grpc.SearchServiceStub(ch).SearchVectors(pb.SearchVectorsRequest(
                    dataset_id="cpu", query_vector=query, options=pb.SearchOptions(top_k=K)),
                    timeout=5)
            if len(response.results) == K:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    raise TimeoutError("the cluster answered no search after its start")


def _measure(cluster: e2e.LocalCluster, search, queries, threads: int, max_seconds: float
             ) -> dict:
    servers = [(pid, kind) for pid, kind in _servers(cluster.process.pid)
               if kind in ("router", "node")]
    # What the processes spend with no search running (heartbeats, the catalog watch, metrics,
    # trace export) is not a search's: measured just before, and taken off the run's CPU.
    idle_from = {pid: e2e._cpu_seconds(pid) for pid, _ in servers}
    idle_started = time.perf_counter()
    time.sleep(IDLE_SAMPLE_S)
    idle_s = time.perf_counter() - idle_started
    idle_rate = {pid: (e2e._cpu_seconds(pid) - idle_from[pid]) / idle_s for pid, _ in servers}
    before = {pid: e2e._cpu_seconds(pid) for pid, _ in servers}
    run = query_loop(search, list(queries), threads=threads, max_seconds=max_seconds,
                     min_queries=min(len(queries), 500))
    spent = {pid: max(0.0, e2e._cpu_seconds(pid) - before[pid]
                      - idle_rate[pid] * run["seconds"]) for pid, _ in servers}
    per_query = {kind: sum(spent[pid] for pid, k in servers if k == kind) * 1000
                 / run["queries"] for kind in ("router", "node")}
    return {"qps": run["qps"], "p50_ms": run["p50_ms"], "p99_ms": run["p99_ms"],
            "queries": run["queries"], "cpu_ms_per_query": sum(per_query.values()),
            "router_cpu_ms_per_query": per_query["router"],
            "nodes_cpu_ms_per_query": per_query["node"]}


def _clients(cluster: e2e.LocalCluster, ef: int, threads: int):
    channel = grpc.insecure_channel(cluster.grpc_target, options=e2e._GRPC_OPTIONS)
    stub = pb_grpc.SearchServiceStub(channel)
    options = pb.SearchOptions(top_k=K, ef_search=ef)

    def grpc_search(q):
        response = stub.SearchVectors(pb.SearchVectorsRequest(
            dataset_id="cpu", query_vector=q, options=options), timeout=30)
        return [int(r.vector.id) for r in response.results]

    rest = httpx.Client(base_url=cluster.rest, timeout=30,
                        limits=httpx.Limits(max_connections=threads * 2))

    def rest_search(q):
        response = rest.post("/datasets/cpu/search", json={
            "query_vector": q, "options": {"top_k": K, "ef_search": ef}})
        response.raise_for_status()
        return [int(r["vector"]["id"]) for r in response.json()["results"]]

    def close():
        rest.close()
        channel.close()

    return {"grpc": grpc_search, "rest": rest_search}, close


def one_run(cluster: e2e.LocalCluster, ds, args) -> dict:
    """One repetition on a started cluster: for gRPC and REST, recall, the sequential loop and
    the concurrent loop with its CPU per query."""
    queries = [q.tolist() for q in ds.queries]
    searches, close = _clients(cluster, args.ef, args.threads)
    out = {}
    try:
        for api, search in searches.items():
            found = [search(q) for q in queries[:200]]      # also warms connections and caches
            recall = recall_at_k(found, ds.truth[:200], K)
            sequential = _measure(cluster, search, queries, 1, args.max_seconds)
            concurrent = _measure(cluster, search, queries, args.threads, args.max_seconds)
            out[api] = {"recall": round(recall, 4), "seq_p99_ms": round(sequential["p99_ms"], 2),
                        "seq_qps": round(sequential["qps"], 1),
                        "qps": round(concurrent["qps"], 1),
                        "p99_ms": round(concurrent["p99_ms"], 2),
                        "cpu_ms_per_query": round(concurrent["cpu_ms_per_query"], 3),
                        "router_cpu_ms_per_query": round(
                            concurrent["router_cpu_ms_per_query"], 3),
                        "nodes_cpu_ms_per_query": round(concurrent["nodes_cpu_ms_per_query"], 3),
                        "seq_cpu_ms_per_query": round(sequential["cpu_ms_per_query"], 3)}
            _log(f"    {api}: {out[api]}")
    finally:
        close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--ef", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=6.0)
    parser.add_argument("--repos", default=e2e.REPO,
                        help="comma-separated checkouts to run the cluster from, in turn")
    parser.add_argument("--out", default="bench/results/search_cpu.json")
    args = parser.parse_args()
    repos = [os.path.abspath(r) for r in args.repos.split(",")]
    _log(f"dataset: clustered {args.size:,} x 128, {args.queries} queries, cosine")
    ds = make_dataset("clustered", args.size, args.queries, "cosine")
    work = tempfile.mkdtemp(prefix="tributary-search-cpu-")
    cluster = e2e.LocalCluster(os.path.join(work, "cluster"), nodes=2)
    runs: dict[str, list[dict]] = {repo: [] for repo in repos}
    loads = []
    try:
        e2e.REPO = repos[0]
        cluster.start()
        started = time.perf_counter()
        _load(cluster, ds, args.batch)
        _log(f"loaded {args.size:,} in {time.perf_counter() - started:.1f} s; waiting for "
             f"the graph")
        e2e.wait_nodes_idle(cluster)
        for rep in range(args.reps):
            order = repos if rep % 2 == 0 else list(reversed(repos))
            for repo in order:
                cluster.stop()
                e2e.REPO = repo
                cluster.start()
                _wait_searchable(cluster, ds.queries[0].tolist())
                e2e.wait_nodes_idle(cluster)
                _log(f"rep {rep + 1}: {repo} (load {os.getloadavg()[0]:.1f})")
                loads.append(os.getloadavg()[0])
                runs[repo].append(one_run(cluster, ds, args))
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "size": args.size, "ef": args.ef,
              "threads": args.threads, "reps": args.reps, "load_averages": loads,
              "repos": {}}
    for repo, repo_runs in runs.items():
        report["repos"][repo] = {
            api: {key: statistics.median(r[api][key] for r in repo_runs)
                  for key in repo_runs[0][api]}
            for api in repo_runs[0]}
        report["repos"][repo]["runs"] = repo_runs
    rows = ["| checkout | API | CPU ms/query (router + nodes) | QPS | p99 ms | seq p99 ms | "
            "recall@10 |", "|---|---|---|---|---|---|---|"]
    for repo, figures in report["repos"].items():
        for api in ("grpc", "rest"):
            f = figures[api]
            rows.append(f"| {repo} | {api} | {f['cpu_ms_per_query']:.2f} "
                        f"({f['router_cpu_ms_per_query']:.2f} + {f['nodes_cpu_ms_per_query']:.2f})"
                        f" | {f['qps']:.0f} | "
                        f"{f['p99_ms']:.1f} | {f['seq_p99_ms']:.1f} | {f['recall']:.3f} |")
    print("\n".join(rows))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
