"""Search latency while the HNSW index of a large shard is being saved. Not part of
`make bench` (building the shard takes minutes); run it directly:

    python -m bench.save_stall [--vectors 200000] [--dims 128] [--dir /tmp/tributary-save-stall]

It builds the shard once (reused by later runs if --dir holds it): the rows are written through
ShardReplica, then the graph is built in one go with two threads (as an open without a saved
index does). Then, in one process, searches run back to back on --threads threads for
--seconds while the index is saved every --save-gap seconds; with --ingest, a writer adds rows
meanwhile, so the indexer needs the graph too. It prints p50 / p99 / max latency of the
searches that overlapped a save and of those that did not (same window, same load), and the
save times.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import numpy as np


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
    print(f"  wrote {size:,} rows in {time.perf_counter() - started:.0f} s", flush=True)
    replica.close()
    if have < size:
        # Drop the partial graph: the next open rebuilds it from the store with two threads,
        # much faster than the low-priority one-thread indexer.
        for name in ("hnsw.bin", "hnsw.json"):
            try:
                os.remove(os.path.join(path, name))
            except FileNotFoundError:
                pass
    started = time.perf_counter()
    replica = ShardReplica(path, dims, "l2")
    print(f"  graph over {replica.count():,} rows built in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    replica.close()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def measure(replica, dims: int, seconds: float, threads: int, save_gap_s: float, ingest: bool
            ) -> dict:
    """Searches back to back for `seconds` while the index is saved every `save_gap_s` (never,
    if negative). Each search is counted as during a save when a save ran at any moment of it,
    else as outside: both sets come from the same window, under the same load."""
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((1000, dims)).astype(np.float32)
    during: list[float] = []
    outside: list[float] = []
    saves: list[float] = []
    saves_done = [0]        # saves finished so far
    saving = threading.Event()
    stop = threading.Event()
    lock = threading.Lock()

    def searcher(seed: int) -> None:
        i = seed
        mine_during, mine_outside = [], []
        while not stop.is_set():
            before = (saving.is_set(), saves_done[0])
            started = time.perf_counter()
            replica.search(queries[i % len(queries)], 10)
            elapsed = (time.perf_counter() - started) * 1000
            overlapped = before[0] or saving.is_set() or saves_done[0] != before[1]
            (mine_during if overlapped else mine_outside).append(elapsed)
            i += threads
        with lock:
            during.extend(mine_during)
            outside.extend(mine_outside)

    def saver() -> None:
        while not stop.wait(save_gap_s):
            saving.set()
            started = time.perf_counter()
            replica.save_index()
            saves.append((time.perf_counter() - started) * 1000)
            saving.clear()
            saves_done[0] += 1

    def writer() -> None:
        from shard.records import VectorRecord
        n = 0
        while not stop.is_set():
            data = rng.standard_normal((250, dims)).astype(np.float32)
            replica.write([VectorRecord(id=f"ingest-{time.time_ns()}-{n + j}", values=row)
                           for j, row in enumerate(data)], [])
            n += 250
            stop.wait(0.05)

    workers = [threading.Thread(target=searcher, args=(t,)) for t in range(threads)]
    if save_gap_s >= 0:
        workers.append(threading.Thread(target=saver))
    if ingest:
        workers.append(threading.Thread(target=writer))
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()

    def summary(latencies: list[float]) -> dict:
        return {"searches": len(latencies), "p50_ms": round(percentile(latencies, 50), 2),
                "p99_ms": round(percentile(latencies, 99), 2),
                "max_ms": round(max(latencies), 2) if latencies else None}

    return {"outside_saves": summary(outside), "during_saves": summary(during),
            "saves": len(saves), "save_ms_median": round(percentile(saves, 50), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=200_000)
    parser.add_argument("--dims", type=int, default=128)
    parser.add_argument("--dir", default="/tmp/tributary-save-stall")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=1, help="search threads")
    parser.add_argument("--save-gap", type=float, default=0.5,
                        help="seconds between the end of one save and the start of the next")
    parser.add_argument("--ingest", action="store_true",
                        help="write rows during both windows (the indexer then needs the graph)")
    args = parser.parse_args()
    path = os.path.join(args.dir, f"{args.vectors}x{args.dims}")
    from shard.replica import ShardReplica
    if not os.path.exists(os.path.join(path, "hnsw.json")):
        print(f"building {args.vectors:,} x {args.dims} at {path}", flush=True)
        build(path, args.vectors, args.dims)
    replica = ShardReplica(path, args.dims, "l2")
    try:
        measure(replica, args.dims, 1.0, args.threads, -1, False)   # warm-up
        result = measure(replica, args.dims, args.seconds, args.threads, args.save_gap,
                         args.ingest)
    finally:
        replica.close()
    print(json.dumps({"vectors": args.vectors, "dims": args.dims, "threads": args.threads,
                      "ingest": args.ingest, "index_bytes":
                      os.path.getsize(os.path.join(path, "hnsw.bin")), **result}, indent=1))


if __name__ == "__main__":
    main()
