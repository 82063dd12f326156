"""Restart of a whole local cluster to its first search: `tributary up` (3 meta, 2 nodes, 1
router) with a dataset of `--size` vectors (2 shards, one copy each) is stopped with SIGTERM and
started again on the same data dir; the clock runs from the new `tributary up` to the first
gRPC search that answers with hits. Medians of `--runs` restarts. Target (DESIGN.md): <= 3 s at
100k, <= 10 s at 1M.

    python -m bench.cluster_restart [--size 100000] [--runs 3] [--repo DIR]

`--repo` runs the cluster from another checkout (a baseline in the same session).
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
import numpy as np

from bench import e2e
from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc


def _first_search_s(cluster: e2e.LocalCluster, query: list[float], started: float,
                    timeout_s: float = 300.0) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with grpc.insecure_channel(cluster.grpc_target, options=e2e._GRPC_OPTIONS) as ch:
                response = pb_grpc.SearchServiceStub(ch).SearchVectors(pb.SearchVectorsRequest(
                    dataset_id="restart", query_vector=query,
                    options=pb.SearchOptions(top_k=10)), timeout=5)
            if len(response.results) == 10:
                return time.monotonic() - started
        except grpc.RpcError:
            pass
        time.sleep(0.05)
    raise TimeoutError("no search answered after the restart")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repo", default=e2e.REPO)
    parser.add_argument("--out", default="bench/results/cluster_restart.json")
    args = parser.parse_args()
    e2e.REPO = os.path.abspath(args.repo)
    work = tempfile.mkdtemp(prefix="tributary-restart-")
    cluster = e2e.LocalCluster(os.path.join(work, "cluster"), nodes=2)
    rng = np.random.default_rng(0)
    data = rng.standard_normal((args.size, 128)).astype(np.float32)
    runs = []
    try:
        cluster.start()
        with grpc.insecure_channel(cluster.grpc_target, options=e2e._GRPC_OPTIONS) as ch:
            pb_grpc.DatasetServiceStub(ch).CreateDataset(pb.CreateDatasetRequest(
                name="restart", dimensions=128, metric_type="cosine", index_type="hnsw",
                shard_count=2, replication_factor=1), timeout=60)
            vectors = pb_grpc.VectorServiceStub(ch)
            for start in range(0, args.size, 2000):
                vectors.InsertVectors(pb.InsertVectorsRequest(dataset_id="restart", vectors=[
                    pb.Vector(id=str(i), values=row) for i, row in
                    zip(range(start, start + 2000), data[start:start + 2000].tolist())]),
                    timeout=300)
        print(f"loaded {args.size:,}; waiting for the graph", file=sys.stderr, flush=True)
        e2e.wait_nodes_idle(cluster)
        query = data[0].tolist()
        for i in range(args.runs):
            cluster.stop()
            started = time.monotonic()
            # start() returns at once here (its log file still holds the first start's ready
            # line), so the clock is the first search's alone.
            cluster.start()
            first = _first_search_s(cluster, query, started)
            runs.append({"first_search_s": round(first, 2)})
            print(f"restart {i + 1}: first search after {first:.2f} s", file=sys.stderr,
                  flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "repo": e2e.REPO, "size": args.size,
              "median_first_search_s": statistics.median(r["first_search_s"] for r in runs),
              "runs": runs}
    print(json.dumps(report))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
