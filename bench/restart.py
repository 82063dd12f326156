"""Restart time of one large shard: how long a fresh process needs to open a saved shard and
answer its first query (no HNSW rebuild). Not part of `make bench` (building 1M x 128 takes
minutes); run it directly:

    python -m bench.restart [--size 1000000] [--dims 128] [--dir /tmp/tributary-restart]

It builds the shard once (reused by later runs if --dir holds it), then times `ShardReplica(...)`
plus one search in a new process, three times, and prints the median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

PROBE = """
import sys, time, json
t0 = time.perf_counter()
from shard.replica import ShardReplica
import numpy as np
t1 = time.perf_counter()
replica = ShardReplica(sys.argv[1], int(sys.argv[2]), "l2")
t2 = time.perf_counter()
hits = replica.search(np.zeros(int(sys.argv[2]), np.float32), 10).hits
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "open_s": t2 - t1, "first_query_s": t3 - t2,
                  "count": replica.count(), "repairs": replica.index_repairs,
                  "pending": replica.pending_count(), "hits": len(hits)}))
"""


def build(path: str, size: int, dims: int) -> None:
    from shard.records import VectorRecord
    from shard.replica import ShardReplica
    replica = ShardReplica(path, dims, "l2")
    have = replica.count()
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for start in range(have, size, 10_000):
        end = min(size, start + 10_000)
        data = rng.standard_normal((end - start, dims)).astype(np.float32)
        replica.write([VectorRecord(id=f"v{i}", values=row) for i, row in
                       zip(range(start, end), data)], [])
        if (start // 10_000) % 10 == 0:
            print(f"  wrote {end:,} rows ({time.perf_counter() - started:.0f} s, "
                  f"{replica.pending_count():,} not yet indexed)", flush=True)
    print("  waiting for the indexer ...", flush=True)
    replica.wait_indexed(timeout_s=24 * 3600)
    print(f"  indexed {replica.count():,} rows in {time.perf_counter() - started:.0f} s",
          flush=True)
    replica.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--dims", type=int, default=128)
    parser.add_argument("--dir", default="/tmp/tributary-restart")
    parser.add_argument("--out", default="bench/results/restart.json")
    args = parser.parse_args()
    path = os.path.join(args.dir, f"{args.size}x{args.dims}")
    print(f"building {args.size:,} x {args.dims} shard at {path}", flush=True)
    build(path, args.size, args.dims)
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", PROBE, path, str(args.dims)],
                             capture_output=True, text=True, check=True)
        total = time.perf_counter() - started
        runs.append({**json.loads(out.stdout.strip().splitlines()[-1]), "total_s": total})
        print(f"  fresh process: open {runs[-1]['open_s']:.2f} s, first query "
              f"{runs[-1]['first_query_s']:.3f} s, total {total:.2f} s, "
              f"repairs {runs[-1]['repairs']}", flush=True)
    report = {"date": time.strftime("%Y-%m-%d"), "size": args.size, "dims": args.dims,
              "median_open_s": statistics.median(r["open_s"] for r in runs),
              "median_ready_s": statistics.median(r["open_s"] + r["first_query_s"]
                                                  for r in runs),
              "target_s": 30, "runs": runs}
    report["target_met"] = report["median_ready_s"] <= 30 and all(
        r["repairs"].get("rebuilt", 0) == 0 for r in runs)
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
