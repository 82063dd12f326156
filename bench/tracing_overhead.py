"""Search QPS with tracing at its default sampling against tracing off, in one run.

    .venv/bin/python -m bench.tracing_overhead [--vectors 10000] [--dims 64] [--threads 8]
                                               [--seconds 3] [--rounds 6] [--json]

Two local clusters (`tributary up`, 3 meta, 2 nodes, 1 router each) hold the same data: one in
mode "default" (no OTEL_* settings: parent-based sampling at limits.trace_sample_ratio, spans to
<data-dir>/traces), one in mode "off" (OTEL_SDK_DISABLED=true). Both run for the whole
benchmark but only one is queried at a time, in short slices alternated `--rounds` times (the
order flips every round: default/off, off/default, ...), so that load from elsewhere on the
machine falls on both modes alike. Each slice measures REST (POST /search) and gRPC
(SearchVectors) QPS with `--threads` client threads for `--seconds` after a short warm-up. The
figure is the median over rounds of the per-round ratio default / off; the target is >= 0.95.
Server CPU per query (router and nodes, from /proc) is reported beside it: on a loaded machine
it is the steadier measure of what tracing costs.
Both clusters are always stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import httpx
import numpy as np

from bench.e2e import LocalCluster, _cpu_seconds
from bench.timing import median, query_loop
from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc

MODES = {"default": {}, "off": {"OTEL_SDK_DISABLED": "true"}}


def _start(data_dir: str, mode: str) -> LocalCluster:
    for key in ("OTEL_SDK_DISABLED",):
        os.environ.pop(key, None)
    os.environ.update(MODES[mode])
    cluster = LocalCluster(data_dir)
    cluster.start()
    return cluster


def _load(cluster: LocalCluster, name: str, vectors: int, dims: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    data = rng.standard_normal((vectors, dims)).astype(np.float32)
    with httpx.Client(base_url=cluster.rest, timeout=120) as client:
        r = client.post("/datasets", json={"name": name, "dimensions": dims,
                                           "metric_type": "l2", "shard_count": 2})
        r.raise_for_status()
        for start in range(0, vectors, 1000):
            body = {"vectors": [{"id": f"v{i}", "values": data[i].tolist()}
                                for i in range(start, min(vectors, start + 1000))]}
            client.post(f"/datasets/{name}/vectors/batch", json=body).raise_for_status()
    return data


def _wait_searchable(cluster: LocalCluster, name: str, dims: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            r = httpx.post(f"{cluster.rest}/datasets/{name}/search",
                           json={"query_vector": [0.0] * dims, "options": {"top_k": 1}},
                           timeout=5)
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError("dataset not searchable after restart")


def _measure(cluster: LocalCluster, name: str, queries: np.ndarray, threads: int,
             seconds: float) -> dict:
    bodies = [json.dumps({"query_vector": q.tolist(), "options": {"top_k": 10}}).encode()
              for q in queries]
    channel = grpc.insecure_channel(cluster.grpc_target)
    stub = pb_grpc.SearchServiceStub(channel)
    requests = [pb.SearchVectorsRequest(dataset_id=name, query_vector=q.tolist(),
                                        options=pb.SearchOptions(top_k=10)) for q in queries]

    def grpc_call(request):
        stub.SearchVectors(request, timeout=30)

    # One httpx client per worker thread of query_loop.
    tls = threading.local()

    def rest_call_tls(body: bytes):
        client = getattr(tls, "client", None)
        if client is None:
            client = tls.client = httpx.Client(base_url=cluster.rest, timeout=30)
        client.post(f"/datasets/{name}/search", content=body,
                    headers={"Content-Type": "application/json"}).raise_for_status()

    pids = _server_pids(cluster)
    query_loop(rest_call_tls, bodies[:200], threads, max_seconds=1.0, min_queries=50)
    cpu = sum(_cpu_seconds(p) for p in pids)
    rest = query_loop(rest_call_tls, bodies, threads, max_seconds=seconds)
    rest_cpu = sum(_cpu_seconds(p) for p in pids) - cpu
    query_loop(grpc_call, requests[:200], threads, max_seconds=1.0, min_queries=50)
    cpu = sum(_cpu_seconds(p) for p in pids)
    grpc_result = query_loop(grpc_call, requests, threads, max_seconds=seconds)
    grpc_cpu = sum(_cpu_seconds(p) for p in pids) - cpu
    channel.close()
    # Server CPU per query (router and nodes): unlike QPS, barely moved by other load on the
    # machine, so the steadier figure of the tracing cost.
    return {"rest_qps": rest["qps"], "grpc_qps": grpc_result["qps"],
            "rest_p50_ms": rest["p50_ms"], "grpc_p50_ms": grpc_result["p50_ms"],
            "rest_cpu_ms_per_query": rest_cpu * 1000 / max(1, rest["queries"]),
            "grpc_cpu_ms_per_query": grpc_cpu * 1000 / max(1, grpc_result["queries"])}


def _server_pids(cluster: LocalCluster) -> list[int]:
    """The router and node processes of the cluster (meta members do no work per search)."""
    out = subprocess.run(["ps", "-o", "pid=,args=", "-g", str(cluster.process.pid)],
                         capture_output=True, text=True).stdout
    return [int(line.split(None, 1)[0]) for line in out.splitlines()
            if "tributary.cli router" in line or "tributary.cli node" in line]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=10_000)
    parser.add_argument("--dims", type=int, default=64)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="tributary-tracing-bench-")
    name = "tracing_bench"
    queries = np.random.default_rng(11).standard_normal((20_000, args.dims)).astype(np.float32)
    results: dict[str, list[dict]] = {mode: [] for mode in MODES}
    saved_env = {k: os.environ.get(k) for k in ("OTEL_SDK_DISABLED",)}
    clusters: dict[str, LocalCluster] = {}
    try:
        for mode in MODES:
            clusters[mode] = _start(os.path.join(work, mode), mode)
            _load(clusters[mode], name, args.vectors, args.dims)
            _wait_searchable(clusters[mode], name, args.dims)
        for round_no in range(args.rounds):
            order = list(MODES) if round_no % 2 == 0 else list(reversed(MODES))
            for mode in order:
                figures = _measure(clusters[mode], name, queries, args.threads, args.seconds)
                results[mode].append(figures)
                print(f"round {round_no} {mode:8s} REST {figures['rest_qps']:8.1f} q/s   gRPC "
                      f"{figures['grpc_qps']:8.1f} q/s", file=sys.stderr, flush=True)
        traces = sum(os.path.getsize(p) for p in _trace_files(os.path.join(work, "default")))
    finally:
        for cluster in clusters.values():
            cluster.stop()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(work, ignore_errors=True)
    summary = {}
    for api in ("rest", "grpc"):
        ratios = [on[f"{api}_qps"] / off[f"{api}_qps"]
                  for on, off in zip(results["default"], results["off"]) if off[f"{api}_qps"]]
        cpu_on = median([r[f"{api}_cpu_ms_per_query"] for r in results["default"]])
        cpu_off = median([r[f"{api}_cpu_ms_per_query"] for r in results["off"]])
        summary[api] = {"default_qps": round(median([r[f"{api}_qps"]
                                                     for r in results["default"]]), 1),
                        "off_qps": round(median([r[f"{api}_qps"] for r in results["off"]]), 1),
                        "ratio": round(median(ratios), 3) if ratios else None,
                        "default_cpu_ms_per_query": round(cpu_on, 3),
                        "off_cpu_ms_per_query": round(cpu_off, 3),
                        # QPS a CPU-bound server keeps with tracing on: off CPU / default CPU.
                        "cpu_ratio": round(cpu_off / cpu_on, 3) if cpu_on else None}
    report = {"threads": args.threads, "vectors": args.vectors, "dims": args.dims,
              "rounds": args.rounds, "trace_file_bytes": traces,
              "load_average": os.getloadavg(), "summary": summary, "runs": results}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for api, figures in summary.items():
            verdict = "ok" if figures["ratio"] and figures["ratio"] >= 0.95 else "BELOW 0.95"
            print(f"{api:5s} search QPS: tracing default {figures['default_qps']}, off "
                  f"{figures['off_qps']}; median per-round ratio {figures['ratio']}x "
                  f"({verdict}); server CPU per query {figures['default_cpu_ms_per_query']} "
                  f"vs {figures['off_cpu_ms_per_query']} ms ({figures['cpu_ratio']}x)")
    return 0


def _trace_files(data_dir: str) -> list[str]:
    folder = os.path.join(data_dir, "traces")
    return [os.path.join(folder, f) for f in os.listdir(folder)] if os.path.isdir(folder) else []


if __name__ == "__main__":
    sys.exit(main())
