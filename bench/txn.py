"""2PC benchmark: latency of atomic write batches through a real local cluster.

    python -m bench.txn [--batches 40] [--batch-size 1000] [--nodes 2]

Measures, in one run on one cluster:
- a 1,000-vector batch over 4 shards (two-phase commit), p50/p99;
- the same batch into a 1-shard dataset (one phase), the baseline that pays no 2PC;
- the 4-shard batch with an Idempotency-Key (2PC plus the dedupe lookup).
Targets (issue: atomic multi-shard writes): 4-shard p50 <= 50 ms; single-shard writes do not pay
for 2PC (they take the one-phase path, which this run shows by its latency and by the router's
tributary_txns_total counter staying flat during the single-shard series).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np

from tributary import procs


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _txn_counter(rest: str) -> float:
    text = httpx.get(f"{rest}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith('tributary_txns_total{outcome="started"}'):
            total += float(line.split()[-1])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=1_000)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--dims", type=int, default=128)
    parser.add_argument("--out", default="bench/results/txn.json")
    args = parser.parse_args()

    http_port, grpc_port, base = procs.cluster_port_plan(meta=3, nodes=args.nodes)
    data_dir = tempfile.mkdtemp(prefix="tributary-bench-txn-")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tributary.cli", "up", "--data-dir", data_dir,
         "--http-port", str(http_port), "--grpc-port", str(grpc_port),
         "--internal-port-base", str(base), "--nodes", str(args.nodes)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    rest = f"http://127.0.0.1:{http_port}/api/v1"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if '"status": "ready"' in line:
                break
        else:
            raise SystemExit("cluster did not become ready")
        rng = np.random.default_rng(0)
        client = httpx.Client(base_url=rest, timeout=120)
        for name, shards in (("multi", 4), ("single", 1)):
            r = client.post("/datasets", json={"name": name, "dimensions": args.dims,
                                               "metric_type": "cosine", "shard_count": shards})
            assert r.status_code == 201, r.text

        def series(dataset: str, label: str, headers_for=lambda i: {}) -> list[float]:
            latencies = []
            for b in range(args.batches + 3):
                vectors = rng.standard_normal((args.batch_size, args.dims)).astype(np.float32)
                body = {"vectors": [{"id": f"{label}-{b}-{i}", "values": v.tolist()}
                                    for i, v in enumerate(vectors)]}
                payload = json.dumps(body)
                started = time.perf_counter()
                r = client.post(f"/datasets/{dataset}/vectors", content=payload,
                                headers={"Content-Type": "application/json", **headers_for(b)})
                elapsed = (time.perf_counter() - started) * 1000
                assert r.status_code == 201, r.text
                if b >= 3:      # the first batches open shards and warm caches
                    latencies.append(elapsed)
            return latencies

        before_single = _txn_counter(rest)
        single = series("single", "s")
        single_txns = _txn_counter(rest) - before_single
        multi = series("multi", "m")
        keyed = series("multi", "k", lambda b: {"Idempotency-Key": f"bench-{b}"})
        report = {
            "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
            "batch_size": args.batch_size, "batches": args.batches, "dims": args.dims,
            "nodes": args.nodes,
            "single_shard_one_phase_ms": {"p50": _percentile(single, 50),
                                          "p99": _percentile(single, 99)},
            "four_shard_2pc_ms": {"p50": _percentile(multi, 50), "p99": _percentile(multi, 99)},
            "four_shard_2pc_idempotent_ms": {"p50": _percentile(keyed, 50),
                                             "p99": _percentile(keyed, 99)},
            "txns_started_during_single_shard_series": single_txns,
            "target_four_shard_p50_ms": 50,
        }
        report["four_shard_p50_target_met"] = report["four_shard_2pc_ms"]["p50"] <= 50
        print(json.dumps(report, indent=2))
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
        print(f"median 4-shard 2PC p50 {statistics.median(multi):.1f} ms vs one-phase single "
              f"shard {statistics.median(single):.1f} ms")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
