"""Resident memory of an empty local cluster, per process: `tributary up` with 3 meta members,
2 nodes and 1 router (six server processes), each process's VmRSS once the cluster is ready and
has settled. The target (DESIGN.md): <= 400 MB for the six, empty.

    python -m bench.cluster_rss [--repo DIR] [--settle-s 5] [--runs 3] [--env K=V ...]

Each run measures the cluster twice: empty, and again after creating one small dataset of 2
shards (one copy each), which makes both nodes open a shard and so load Deep Lake (a node with
no shard does without it: tributary/lazy_import.py). `--env K=V` puts a variable in the
environment every process inherits, to measure a lever (e.g. MALLOC_ARENA_MAX=2) against a run
without it. `--repo` runs the cluster from another checkout (e.g. an older commit, as a baseline
in the same run). Prints each process's median VmRSS over the runs and the median totals; JSON
to `--out`.
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
import time

import grpc
import numpy as np

from bench import e2e
from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc

TARGET_EMPTY_MB = 400


def _vm_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _servers(group: int) -> list[tuple[int, str]]:
    out = subprocess.run(["ps", "-o", "pid=,args=", "-g", str(group)], capture_output=True,
                         text=True).stdout
    found = []
    for line in out.splitlines():
        pid, args = line.strip().split(None, 1)
        for kind in ("meta", "node", "router"):
            if f"tributary.cli {kind} " in args or args.endswith(f"tributary.cli {kind}"):
                found.append((int(pid), kind))
    return found


def snapshot(group: int) -> dict:
    """VmRSS of every server process of the cluster whose process group is `group`; processes
    of a kind are named in pid order (meta-0, meta-1, ...), as `tributary up` starts them."""
    processes = []
    counts: dict[str, int] = {}
    for pid, kind in sorted(_servers(group)):
        name = f"{kind}-{counts.get(kind, 0)}"
        counts[kind] = counts.get(kind, 0) + 1
        processes.append({"name": name, "pid": pid, "kind": kind,
                          "rss_mb": round(_vm_rss_kb(pid) / 1024, 1)})
    return {"processes": processes,
            "total_mb": round(sum(p["rss_mb"] for p in processes), 1)}


def _create_small_dataset(cluster: e2e.LocalCluster, vectors: int = 1_000) -> None:
    """A dataset of 2 shards (one copy each) holding `vectors` random 128-d vectors, so that
    each node opens a shard (nodes open a shard on its first use)."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal((vectors, 128)).astype(np.float32)
    with grpc.insecure_channel(cluster.grpc_target, options=e2e._GRPC_OPTIONS) as ch:
        pb_grpc.DatasetServiceStub(ch).CreateDataset(pb.CreateDatasetRequest(
            name="rss", dimensions=128, metric_type="cosine", index_type="hnsw",
            shard_count=2, replication_factor=1), timeout=60)
        pb_grpc.VectorServiceStub(ch).InsertVectors(pb.InsertVectorsRequest(
            dataset_id="rss", vectors=[pb.Vector(id=str(i), values=row)
                                       for i, row in enumerate(data.tolist())]), timeout=120)


def measure(repo: str, settle_s: float) -> dict:
    work = tempfile.mkdtemp(prefix="tributary-rss-")
    old_repo = e2e.REPO
    e2e.REPO = repo
    cluster = e2e.LocalCluster(os.path.join(work, "cluster"), nodes=2, meta=3)
    try:
        cluster.start()
        time.sleep(settle_s)    # let start-up allocations (first heartbeats, elections) settle
        empty = snapshot(cluster.process.pid)
        _create_small_dataset(cluster)
        time.sleep(settle_s)
        with_dataset = snapshot(cluster.process.pid)
    finally:
        cluster.stop()
        e2e.REPO = old_repo
        shutil.rmtree(work, ignore_errors=True)
    return {"empty": empty, "one_small_dataset": with_dataset}


def _medians(runs: list[dict], state: str) -> dict:
    per_name: dict[str, list[float]] = {}
    for run in runs:
        for p in run[state]["processes"]:
            per_name.setdefault(p["name"], []).append(p["rss_mb"])
    return {"processes_mb": {name: statistics.median(v) for name, v in per_name.items()},
            "total_mb": statistics.median(r[state]["total_mb"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=e2e.REPO)
    parser.add_argument("--settle-s", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--env", action="append", default=[], metavar="K=V",
                        help="a variable for every process of the cluster (repeatable)")
    parser.add_argument("--out", default="bench/results/cluster_rss.json")
    args = parser.parse_args()
    extra_env = dict(item.split("=", 1) for item in args.env)
    os.environ.update(extra_env)   # `tributary up` and its children inherit it
    load_before = os.getloadavg()
    runs = []
    for i in range(args.runs):
        run = measure(os.path.abspath(args.repo), args.settle_s)
        runs.append(run)
        print(f"run {i + 1}: empty {run['empty']['total_mb']} MB, one small dataset "
              f"{run['one_small_dataset']['total_mb']} MB", file=sys.stderr, flush=True)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "repo": os.path.abspath(args.repo),
              "env": extra_env, "load_average": [round(x, 1) for x in
                                                 load_before + os.getloadavg()],
              "empty": _medians(runs, "empty"),
              "one_small_dataset": _medians(runs, "one_small_dataset"), "runs": runs}
    empty, loaded = report["empty"], report["one_small_dataset"]
    print(f"{'process':<10} {'empty MB':>9} {'1k dataset MB':>14}")
    for name, mb in empty["processes_mb"].items():
        print(f"{name:<10} {mb:>9.1f} {loaded['processes_mb'].get(name, 0.0):>14.1f}")
    verdict = "met" if empty["total_mb"] <= TARGET_EMPTY_MB else "MISSED"
    print(f"{'total':<10} {empty['total_mb']:>9.1f} {loaded['total_mb']:>14.1f}   "
          f"(median of {args.runs}; target <= {TARGET_EMPTY_MB} MB empty: {verdict}; "
          f"load average {report['load_average']})")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
