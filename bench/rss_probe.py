"""Memory probe run in a fresh subprocess per system, so one system's allocations never count
against the other's.

    python -m bench.rss_probe --system hnswlib|shard --path P --warmup-path W --dim D
        --metric M --count N --queries Q.npy --ef EF

It reads VmRSS from /proc/self/status after the imports (`before`), after loading a tiny
warm-up index/shard (`warm`, so one-time runtime costs such as Deep Lake's thread pools and
caches are not charged per vector), and after loading the real one and running the queries
(`after`). Prints one JSON line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import numpy as np

from bench.timing import rss_kb, status_kb


class _OpenLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--system", choices=("hnswlib", "shard"), required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--warmup-path", required=True)
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--metric", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--queries", required=True)
    p.add_argument("--ef", type=int, default=128)
    args = p.parse_args(argv)
    queries = np.load(args.queries)

    if args.system == "hnswlib":
        import hnswlib
        from shard.scoring import HNSW_SPACE
        before = rss_kb()
        tiny = hnswlib.Index(space=HNSW_SPACE[args.metric], dim=args.dim)
        tiny.load_index(args.warmup_path)
        tiny.set_ef(args.ef)
        tiny.knn_query(queries[:1], k=1)
        warm = rss_kb()
        started = time.perf_counter()
        index = hnswlib.Index(space=HNSW_SPACE[args.metric], dim=args.dim)
        index.load_index(args.path, max_elements=args.count)
        open_s = time.perf_counter() - started
        index.set_ef(args.ef)
        for q in queries:
            index.knn_query(q.reshape(1, -1), k=10, num_threads=1)
        how = "loaded"
        count = index.get_current_count()
        pending_after_open, indexed_s = 0, open_s
    else:
        from shard.replica import ShardReplica
        handler = _OpenLog()
        shard_log = logging.getLogger("tributary.shard")
        shard_log.addHandler(handler)
        shard_log.setLevel(logging.INFO)
        before = rss_kb()
        tiny = ShardReplica(args.warmup_path, args.dim, args.metric)
        if hasattr(tiny, "wait_indexed"):
            tiny.wait_indexed(600)
        tiny.search(queries[0], 1, ef_search=args.ef)
        warm = rss_kb()
        handler.messages.clear()
        started = time.perf_counter()
        replica = ShardReplica(args.path, args.dim, args.metric)
        open_s = time.perf_counter() - started
        pending_after_open = replica.pending_count() if hasattr(replica, "pending_count") else 0
        if hasattr(replica, "wait_indexed"):
            replica.wait_indexed(3600)
        indexed_s = time.perf_counter() - started
        for q in queries:
            replica.search(q, 10, ef_search=args.ef)
        text = " ".join(handler.messages)
        how = "loaded" if "loaded HNSW index" in text else \
            "rebuilt" if "rebuilt HNSW index" in text else "unknown"
        count = replica.count()
    after = rss_kb()
    print(json.dumps({
        "system": args.system, "count": count, "rss_before_kb": before, "rss_warm_kb": warm,
        "rss_after_kb": after, "peak_kb": status_kb("VmHWM"), "open_s": open_s, "index": how,
        "pending_after_open": pending_after_open, "seconds_until_fully_indexed": indexed_s,
        "bytes_per_vector": (after - warm) * 1024 / max(1, count),
        "bytes_per_vector_incl_fixed": (after - before) * 1024 / max(1, count),
        "fixed_kb": warm - before,
    }), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
