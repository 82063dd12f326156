"""Tributary against its peers on the same data, in one run: a local Tributary cluster (gRPC
and REST; 3 meta members, 2 nodes, 1 router, 2 shards, one copy each), the Chroma server and
Chroma embedded, LanceDB embedded and raw hnswlib. Prints one table and writes JSON (and a plot,
when matplotlib is in the peers venv).

    make bench-peers-deps                 # once: Chroma, LanceDB, matplotlib in .venv-peers
    .venv/bin/python -m bench.peers [--size 100000] [--threads 16] [--ef 128] [--quick]

Each peer runs in a subprocess of the peers venv's Python (bench/peer_worker.py), one system at
a time; a peer whose package is missing is skipped with the reason. Search figures are medians
of `--reps` runs; ingest runs once per system. Memory is the resident set of the system's
processes after its searches (Tributary: the six server processes together).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from bench.datasets import make_dataset
from bench.timing import query_loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS_PYTHON = os.path.join(REPO, ".venv-peers", "bin", "python")
PEERS = {"chroma-server": "chromadb", "chroma-embedded": "chromadb", "lancedb": "lancedb"}
K = 10


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _searches(search, queries, truth, threads: int, reps: int, max_seconds: float) -> dict:
    found = [search(q) for q in queries]
    hits = sum(len(set(f[:K]) & set(t[:K].tolist())) for f, t in zip(found, truth))
    out = {"recall": round(hits / (len(queries) * K), 4)}
    for n in (1, threads):
        runs = [query_loop(search, list(queries), threads=n, max_seconds=max_seconds)
                for _ in range(reps)]
        out[f"{n}t"] = {key: round(statistics.median(r[key] for r in runs), 2)
                        for key in ("qps", "p50_ms", "p99_ms")}
    return out


def run_hnswlib(ds, args) -> dict:
    import hnswlib
    from tributary import limits
    index = hnswlib.Index(space="ip" if ds.metric == "cosine" else ds.metric, dim=ds.dim)
    index.init_index(max_elements=ds.size, M=limits.hnsw_m,
                     ef_construction=limits.hnsw_ef_construction)
    curve, step = [], max(args.batch, ds.size // 10)
    started = mark = time.perf_counter()
    for start in range(0, ds.size, step):
        stop = min(ds.size, start + step)
        index.add_items(ds.data[start:stop], np.arange(start, stop), num_threads=2)
        now = time.perf_counter()
        curve.append([stop, round((stop - start) / (now - mark))])
        mark = now
    seconds = time.perf_counter() - started
    index.set_ef(args.ef)

    def search(q):
        labels, _ = index.knn_query(q, k=K, num_threads=1)
        return labels[0].tolist()

    return {"ingest": {"vectors_per_s": round(ds.size / seconds), "curve": curve,
                       "note": "graph build, 2 threads"},
            **_searches(search, ds.queries, ds.truth, args.threads, args.reps,
                        args.max_seconds)}


def run_tributary(ds, args, work: str) -> dict:
    import grpc
    import httpx
    from bench.cluster_rss import _servers, _vm_rss_kb
    from bench.e2e import _GRPC_OPTIONS, LocalCluster, wait_nodes_idle
    from proto import deeplake_service_pb2 as pb
    from proto import deeplake_service_pb2_grpc as pb_grpc

    cluster = LocalCluster(os.path.join(work, "tributary"), nodes=2)
    cluster.start()
    try:
        channel = grpc.insecure_channel(cluster.grpc_target, options=_GRPC_OPTIONS)
        pb_grpc.DatasetServiceStub(channel).CreateDataset(pb.CreateDatasetRequest(
            name="peers", dimensions=ds.dim, metric_type=ds.metric, index_type="hnsw",
            shard_count=2, replication_factor=1), timeout=60)
        vectors = pb_grpc.VectorServiceStub(channel)
        requests = [(start, pb.InsertVectorsRequest(dataset_id="peers", vectors=[
            pb.Vector(id=str(i), values=row) for i, row in
            zip(range(start, min(ds.size, start + args.batch)),
                ds.data[start:start + args.batch].tolist())]))
            for start in range(0, ds.size, args.batch)]
        curve, lock = [], threading.Lock()
        step = max(args.batch, (ds.size // 10) // args.batch * args.batch)
        state = {"acked": 0, "mark": 0.0, "next": step}

        def insert(item):
            start, request = item
            vectors.InsertVectors(request, timeout=300)
            with lock:
                state["acked"] += len(request.vectors)
                if state["acked"] >= state["next"] or state["acked"] == ds.size:
                    now = time.perf_counter()
                    done = min(state["acked"], ds.size)
                    curve.append([done, round((done - (curve[-1][0] if curve else 0)) /
                                              (now - state["mark"]))])
                    state["mark"], state["next"] = now, state["next"] + step

        from concurrent.futures import ThreadPoolExecutor
        started = state["mark"] = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.ingest_concurrency) as pool:
            list(pool.map(insert, requests))
        seconds = time.perf_counter() - started
        del requests
        _log("  tributary: waiting for the graph to catch up")
        settle = wait_nodes_idle(cluster)
        search_stub = pb_grpc.SearchServiceStub(channel)
        options = pb.SearchOptions(top_k=K, ef_search=args.ef)

        def grpc_search(q):
            response = search_stub.SearchVectors(pb.SearchVectorsRequest(
                dataset_id="peers", query_vector=q.tolist(), options=options), timeout=30)
            return [int(r.vector.id) for r in response.results]

        rest = httpx.Client(base_url=cluster.rest, timeout=30,
                            limits=httpx.Limits(max_connections=args.threads * 2))

        def rest_search(q):
            response = rest.post("/datasets/peers/search", json={
                "query_vector": q.tolist(), "options": {"top_k": K, "ef_search": args.ef}})
            return [int(r["vector"]["id"]) for r in response.json()["results"]]

        _log("  tributary: gRPC searches")
        out_grpc = _searches(grpc_search, ds.queries, ds.truth, args.threads, args.reps,
                             args.max_seconds)
        _log("  tributary: REST searches")
        out_rest = _searches(rest_search, ds.queries, ds.truth, args.threads, args.reps,
                             args.max_seconds)
        rss = round(sum(_vm_rss_kb(pid) for pid, _ in _servers(cluster.process.pid)) / 1024, 1)
        ingest = {"vectors_per_s": round(ds.size / seconds), "curve": curve,
                  "graph_caught_up_after_s": round(settle, 1),
                  "note": f"gRPC InsertVectors, {args.ingest_concurrency} in flight"}
        rest.close()
        channel.close()
        return {"tributary-grpc": {"ingest": ingest, **out_grpc, "rss_mb": rss},
                "tributary-rest": {**out_rest, "rss_mb": rss}}
    finally:
        cluster.stop()


def run_peer(name: str, args, work: str) -> dict:
    if not os.path.exists(PEERS_PYTHON):
        return {"skipped": "no peers venv (make bench-peers-deps)"}
    probe = subprocess.run([PEERS_PYTHON, "-c", f"import {PEERS[name]}"], capture_output=True)
    if probe.returncode != 0:
        return {"skipped": f"{PEERS[name]} is not installed in .venv-peers"}
    out = subprocess.run([PEERS_PYTHON, "-m", "bench.peer_worker", "--system", name,
                          "--work", work, "--ef", str(args.ef), "--threads", str(args.threads),
                          "--batch", str(args.batch), "--reps", str(args.reps),
                          "--max-seconds", str(args.max_seconds)],
                         cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        return {"skipped": f"failed: {out.stderr.strip().splitlines()[-1:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(results: dict, threads: int) -> str:
    rows = ["| system | ingest vectors/s | seq QPS | "
            f"{threads}-thread QPS | {threads}-thread p99 ms | recall@10 | RSS MB |",
            "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if "skipped" in r:
            rows.append(f"| {name} | skipped: {r['skipped']} | | | | | |")
            continue
        ingest = r.get("ingest", {}).get("vectors_per_s")
        rows.append(f"| {name} | {ingest if ingest is not None else '-'} | "
                    f"{r['1t']['qps']:.0f} | {r[f'{threads}t']['qps']:.0f} | "
                    f"{r[f'{threads}t']['p99_ms']:.1f} | {r['recall']:.3f} | "
                    f"{r.get('rss_mb', '-')} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--ef", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--ingest-concurrency", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=5.0)
    parser.add_argument("--systems", default="hnswlib,tributary,chroma-server,chroma-embedded,"
                                             "lancedb")
    parser.add_argument("--quick", action="store_true", help="20k vectors, 2 s per QPS run")
    parser.add_argument("--out", default="bench/results/peers.json")
    parser.add_argument("--plot", default="bench/results/peers.png")
    args = parser.parse_args()
    if args.quick:
        args.size, args.max_seconds, args.queries = 20_000, 2.0, 500
    systems = args.systems.split(",")
    _log(f"dataset: clustered {args.size:,} x 128, {args.queries} queries, cosine")
    ds = make_dataset("clustered", args.size, args.queries, "cosine")
    work = tempfile.mkdtemp(prefix="tributary-peers-")
    results: dict = {}
    try:
        np.save(os.path.join(work, "data.npy"), ds.data)
        np.save(os.path.join(work, "queries.npy"), ds.queries)
        np.save(os.path.join(work, "truth.npy"), ds.truth)
        for name in systems:
            _log(f"{name} ...")
            if name == "hnswlib":
                results[name] = run_hnswlib(ds, args)
            elif name == "tributary":
                results.update(run_tributary(ds, args, work))
            else:
                results[name] = run_peer(name, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "size": ds.size, "dim": ds.dim,
              "ef": args.ef, "threads": args.threads, "reps": args.reps,
              "load_average": os.getloadavg(), "systems": results}
    if "hnswlib" in results and "tributary-grpc" in results:
        t = args.threads
        report["ratios"] = {
            "grpc_qps_over_hnswlib": round(results["tributary-grpc"][f"{t}t"]["qps"] /
                                           results["hnswlib"][f"{t}t"]["qps"], 3)}
        chroma = results.get("chroma-server", {})
        if "skipped" not in chroma and chroma:
            for proto in ("grpc", "rest"):
                report["ratios"][f"{proto}_qps_over_chroma_server"] = round(
                    results[f"tributary-{proto}"][f"{t}t"]["qps"] / chroma[f"{t}t"]["qps"], 2)
    print(table(results, args.threads))
    if "ratios" in report:
        print(json.dumps(report["ratios"]))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    if os.path.exists(PEERS_PYTHON) and args.plot:
        plotted = subprocess.run([PEERS_PYTHON, "-m", "bench.peer_worker", "--plot", args.out,
                                  "--out", args.plot], cwd=REPO, capture_output=True, text=True)
        _log(f"plot: {args.plot}" if plotted.returncode == 0 else
             f"no plot: {plotted.stderr.strip().splitlines()[-1:]}")


if __name__ == "__main__":
    main()
