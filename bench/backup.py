"""Cluster backup and restore figures (issue 16): time, bytes and the write pause of
`tributary admin backup create` on one dataset of N x 128, while a writer keeps writing (one-
phase single-vector writes and two-shard 2PC batches), then the restore time of that backup
into the same cluster under a new name. Not part of `make bench`; run it directly:

    python -m bench.backup [--vectors 100000] [--dims 128] [--shards 2] [--load grpc|rest]

It starts `tributary up` (1 meta member, 2 nodes, 1 router) on free loopback ports in a
temporary directory, ingests N vectors, and prints one JSON document. `--load grpc` (the
default) loads through the public gRPC API (deeplake.v1 InsertVectors) in batches of
`batch_vectors_max` vectors that each hold one shard's ids, so every batch is one acknowledged
one-phase write and one Deep Lake commit per shard copy (a 1M load takes minutes instead of the
half hour of 2,000-vector 2PC batches over REST, whose per-commit cost grows with the commit
count). The figures:
- backup_s, backup_bytes, restore_s: wall time of the two commands, and the backup's size;
- cut_fence_ms: how long the cut held 2PC commits back (the only write pause by design);
- writes_during_backup: count, p50/p99/max latency of the writer's acknowledged writes while
  the backup ran, and the longest gap between two acknowledgements (the pause as a client
  sees it), against the same figures just before the backup; `writes_around_cut` is the same
  for the writes acknowledged from 1 s before the cut to 1 s after its fence came down, and
  `longest_gap_from_cut_s` says where the longest gap of the backup began, in seconds after
  the cut (negative: before it), so a pause can be told apart from the export's load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import numpy as np

from bench.timing import run_threads
from tributary import procs


def _start(data_dir: str) -> tuple[subprocess.Popen, str, str]:
    http_port, grpc_port, base = procs.cluster_port_plan(1, 2, 1)
    out = open(os.path.join(data_dir, "up.out"), "ab")
    up = subprocess.Popen(
        [sys.executable, "-m", "tributary.cli", "up", "--data-dir", data_dir, "--http-port",
         str(http_port), "--grpc-port", str(grpc_port), "--internal-port-base", str(base),
         "--meta", "1", "--nodes", "2", "--routers", "1"], stdout=out,
        stderr=subprocess.STDOUT, preexec_fn=procs.new_session_dying_with_parent(signal.SIGTERM))
    deadline = time.monotonic() + 120
    while '"status": "ready"' not in open(os.path.join(data_dir, "up.out")).read():
        if up.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("tributary up did not start")
        time.sleep(0.2)
    return up, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"


def _create(url: str, dims: int, shards: int) -> None:
    r = httpx.post(f"{url}/api/v1/datasets", timeout=60, json={
        "name": "bench", "dimensions": dims, "metric_type": "l2", "shard_count": shards})
    r.raise_for_status()


def _ingest_grpc(grpc_target: str, size: int, dims: int, shards: int) -> float:
    """Loads `size` vectors through deeplake.v1 InsertVectors, one shard's ids per batch (so
    each batch commits in one phase), one thread per shard; returns the wall time."""
    import grpc

    from bench.e2e import _GRPC_OPTIONS
    from proto import deeplake_service_pb2 as pb
    from proto import deeplake_service_pb2_grpc as pb_grpc
    from router.routing import shard_of
    from tributary import limits

    batch = limits.batch_vectors_max
    ids_by_shard: list[list[int]] = [[] for _ in range(shards)]
    for i in range(size):
        ids_by_shard[shard_of(f"v{i}", shards)].append(i)
    errors: list[BaseException] = []
    loaded = [0]
    lock = threading.Lock()

    def load(shard: int) -> None:
        rng = np.random.default_rng(shard)
        with grpc.insecure_channel(grpc_target, options=_GRPC_OPTIONS) as channel:
            stub = pb_grpc.VectorServiceStub(channel)
            ids = ids_by_shard[shard]
            for start in range(0, len(ids), batch):
                chunk = ids[start:start + batch]
                rows = rng.random((len(chunk), dims), dtype=np.float32)
                # overwrite: a batch the router retried after its first attempt was applied
                # (seen at load average 40) must not fail the load as AlreadyExists.
                request = pb.InsertVectorsRequest(dataset_id="bench", overwrite=True, vectors=[
                    pb.Vector(id=f"v{i}", values=row.tolist()) for i, row in zip(chunk, rows)])
                try:
                    stub.InsertVectors(request, timeout=600)
                except grpc.RpcError as exc:
                    errors.append(exc)
                    return
                with lock:
                    loaded[0] += len(chunk)
                    if loaded[0] // 100_000 != (loaded[0] - len(chunk)) // 100_000:
                        print(f"  loaded {loaded[0]:,}", file=sys.stderr, flush=True)

    elapsed = run_threads(load, shards)
    if errors:
        raise SystemExit(f"the load failed: {errors[0]!r}")
    return elapsed


def _ingest(url: str, size: int, dims: int, shards: int) -> float:
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=300) as client:
        for start in range(0, size, 2_000):
            rows = rng.random((min(2_000, size - start), dims), dtype=np.float32)
            # One shard per request (one-phase) keeps the ingest fast: ids by shard are not
            # known here, so each request is a 2PC batch; fine for a set-up step.
            r = client.post("/api/v1/datasets/bench/vectors", json={"vectors": [
                {"id": f"v{start + i}", "values": row.tolist()} for i, row in enumerate(rows)]})
            r.raise_for_status()
    return time.perf_counter() - started


class Writer:
    """Writes one vector at a time (and every tenth request a two-vector batch), recording
    (ack time, latency) of each acknowledged write."""

    def __init__(self, url: str, dims: int):
        self.url, self.dims = url, dims
        self.acks: list[tuple[float, float]] = []
        self.errors = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = np.random.default_rng(1)
        i = 0
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stop.is_set():
                count = 2 if i % 10 == 0 else 1
                body = {"vectors": [{"id": f"w{i}-{j}", "values": rng.random(self.dims).tolist()}
                                    for j in range(count)]}
                started = time.perf_counter()
                try:
                    ok = client.post("/api/v1/datasets/bench/vectors", json=body
                                     ).status_code == 201
                except httpx.HTTPError:
                    ok = False
                now = time.perf_counter()
                if ok:
                    self.acks.append((now, now - started))
                else:
                    self.errors += 1
                i += 1

    def figures(self, since: float, until: float) -> dict:
        window = [(t, lat) for t, lat in self.acks if since <= t <= until]
        if not window:
            return {"count": 0}
        return self._figures(window, since, until)

    def longest_gap_start(self, since: float, until: float) -> float:
        times = [since] + [t for t, _ in self.acks if since <= t <= until] + [until]
        return max(zip(times, times[1:]), key=lambda pair: pair[1] - pair[0])[0]

    @staticmethod
    def _figures(window, since: float, until: float) -> dict:
        latencies = sorted(lat * 1000 for _, lat in window)
        times = [since] + [t for t, _ in window] + [until]
        return {"count": len(window), "p50_ms": round(statistics.median(latencies), 1),
                "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 1),
                "max_ms": round(latencies[-1], 1),
                "longest_gap_ms": round(max(b - a for a, b in zip(times, times[1:])) * 1000, 1)}


def _cli(url: str, *args: str) -> tuple[float, dict]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tributary.cli", "admin", "backup", *args,
                           "--url", url, "--json", "--timeout", "120"], capture_output=True,
                          text=True, timeout=24 * 3600)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return time.perf_counter() - started, json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", "--size", dest="size", type=int, default=100_000)
    parser.add_argument("--load", choices=("grpc", "rest"), default="grpc")
    parser.add_argument("--dims", type=int, default=128)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    args = parser.parse_args()
    work = args.dir or tempfile.mkdtemp(prefix="tributary-bench-backup-")
    os.makedirs(os.path.join(work, "cluster"), exist_ok=True)
    up, url, grpc_target = _start(os.path.join(work, "cluster"))
    try:
        _create(url, args.dims, args.shards)
        print(f"loading {args.size:,} x {args.dims} over {args.load}", file=sys.stderr,
              flush=True)
        if args.load == "grpc":
            ingest_s = _ingest_grpc(grpc_target, args.size, args.dims, args.shards)
        else:
            ingest_s = _ingest(url, args.size, args.dims, args.shards)
        print(f"loaded in {ingest_s:.0f} s; backing up under writes", file=sys.stderr,
              flush=True)
        writer = Writer(url, args.dims)
        writer.thread.start()
        time.sleep(5)
        before_until = time.perf_counter()
        target = os.path.join(work, "backup")
        backup_s, backup = _cli(url, "create", "--to", target, "--wait")
        after = time.perf_counter()
        writer.stop.set()
        writer.thread.join(60)
        manifest = json.load(open(os.path.join(target, "manifest.json")))
        # The cut's instant on this process's perf_counter clock (router and bench share the
        # machine's wall clock).
        cut = manifest["datasets"][0]["cut"]
        cut_at = cut["at_ms"] / 1000 - time.time() + time.perf_counter()
        fence_s = cut["fence_ms"] / 1000
        restore_s, _ = _cli(url, "restore", "--from", target, "--dataset", "bench", "--as",
                            "bench-restored", "--wait")
        restored = httpx.get(f"{url}/api/v1/datasets/bench-restored", timeout=60).json()
        doc = {"size": args.size, "dims": args.dims, "shards": args.shards,
               "ingest_s": round(ingest_s, 1), "backup_s": round(backup_s, 2),
               "backup_bytes": manifest["total_bytes"],
               "vectors_in_backup": backup["datasets"][0]["vectors"],
               "cut_fence_ms": [d["cut"]["fence_ms"] for d in manifest["datasets"]],
               "restore_s": round(restore_s, 2),
               "restored_vector_count": restored["dataset"]["vector_count"],
               "writes_before_backup": writer.figures(before_until - 5, before_until),
               "writes_during_backup": writer.figures(before_until, after),
               "writes_around_cut": writer.figures(cut_at - 1 - fence_s, cut_at + 1),
               "longest_gap_from_cut_s": round(
                   writer.longest_gap_start(before_until, after) - cut_at, 2),
               "write_errors": writer.errors,
               "loadavg_end": [round(x, 1) for x in os.getloadavg()]}
        print(json.dumps(doc, indent=2))
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(60)
        if args.dir is None:
            shutil.rmtree(work, True)


if __name__ == "__main__":
    main()
