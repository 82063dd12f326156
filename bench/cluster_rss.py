"""Resident memory of an empty local cluster, per process: `tributary up` with 3 meta members,
2 nodes and 1 router (six server processes), each process's VmRSS once the cluster is ready and
has settled. The target (DESIGN.md): <= 400 MB for the six, empty.

    python -m bench.cluster_rss [--repo DIR] [--settle-s 5] [--runs 3]

`--repo` runs the cluster from another checkout (e.g. an older commit, as a baseline in the
same run). Prints each run's processes and the median total; JSON to `--out`.
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

from bench import e2e


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


def measure(repo: str, settle_s: float) -> dict:
    work = tempfile.mkdtemp(prefix="tributary-rss-")
    old_repo = e2e.REPO
    e2e.REPO = repo
    cluster = e2e.LocalCluster(os.path.join(work, "cluster"), nodes=2, meta=3)
    try:
        cluster.start()
        time.sleep(settle_s)    # let start-up allocations (first heartbeats, elections) settle
        processes = [{"pid": pid, "kind": kind, "rss_mb": round(_vm_rss_kb(pid) / 1024, 1)}
                     for pid, kind in _servers(cluster.process.pid)]
    finally:
        cluster.stop()
        e2e.REPO = old_repo
        shutil.rmtree(work, ignore_errors=True)
    by_kind: dict[str, list[float]] = {}
    for p in processes:
        by_kind.setdefault(p["kind"], []).append(p["rss_mb"])
    return {"processes": processes, "total_mb": round(sum(p["rss_mb"] for p in processes), 1),
            "by_kind_mb": {k: round(statistics.mean(v), 1) for k, v in by_kind.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=e2e.REPO)
    parser.add_argument("--settle-s", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default="bench/results/cluster_rss.json")
    args = parser.parse_args()
    runs = []
    for i in range(args.runs):
        run = measure(os.path.abspath(args.repo), args.settle_s)
        runs.append(run)
        print(f"run {i + 1}: {len(run['processes'])} processes, {run['total_mb']} MB; mean per "
              f"kind {run['by_kind_mb']}", file=sys.stderr, flush=True)
    report = {"date": time.strftime("%Y-%m-%d"), "repo": os.path.abspath(args.repo),
              "median_total_mb": statistics.median(r["total_mb"] for r in runs), "runs": runs}
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
