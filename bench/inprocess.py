"""In-process comparison: raw hnswlib (the baseline) against ShardReplica, in one run.

Both get the same data, the same M / ef_construction (tributary.limits) and the same ef_search.
Figures: recall@10, search QPS with 1 and N client threads, p50/p99 latency, ingest vectors/s
(hnswlib add_items; the shard both to acknowledgement, i.e. committed in Deep Lake, and to
"in the graph", i.e. after wait_indexed() when the replica indexes in the background), RSS per
vector (a fresh subprocess per system, bench/rss_probe.py), and restart time (close + reopen;
whether the HNSW index was loaded or rebuilt). Works with replicas that add to hnswlib inside
write() (no wait_indexed) and with ones that index behind the acknowledgement."""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import subprocess
import sys
import time

import hnswlib
import numpy as np

from bench.datasets import Dataset, recall_at_k
from bench.timing import query_loop, summarize
from shard.records import ExistingPolicy, VectorRecord
from shard.replica import ShardReplica, directory_bytes
from shard.scoring import HNSW_SPACE
from tributary import limits

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _ShardLog(logging.Handler):
    """Collects tributary.shard log lines, to tell a loaded index from a rebuilt one."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def index_action(self) -> str:
        text = " ".join(self.messages)
        if "loaded HNSW index" in text:
            return "loaded"
        if "rebuilt HNSW index" in text:
            return "rebuilt"
        return "unknown"


def _new_baseline(ds: Dataset) -> hnswlib.Index:
    index = hnswlib.Index(space=HNSW_SPACE[ds.metric], dim=ds.dim)
    index.init_index(max_elements=ds.size, M=limits.hnsw_m,
                     ef_construction=limits.hnsw_ef_construction)
    return index


def _records(ds: Dataset, start: int, stop: int) -> list[VectorRecord]:
    return [VectorRecord(id=str(i), values=ds.data[i]) for i in range(start, stop)]


def wait_indexed(replica: ShardReplica, timeout_s: float = 3600.0) -> bool:
    """Blocks until the shard's graph holds every acknowledged row. Replicas whose write adds to
    hnswlib before returning have no wait_indexed and are always indexed on return."""
    wait = getattr(replica, "wait_indexed", None)
    return True if wait is None else bool(wait(timeout_s))


def pending(replica: ShardReplica) -> int:
    count = getattr(replica, "pending_count", None)
    return 0 if count is None else int(count())


def _ingest_baseline(ds: Dataset, batch: int) -> tuple[hnswlib.Index, dict]:
    baseline = _new_baseline(ds)
    spent = []
    for start in range(0, ds.size, batch):
        stop = min(ds.size, start + batch)
        t = time.perf_counter()
        baseline.add_items(ds.data[start:stop], np.arange(start, stop, dtype=np.int64),
                           num_threads=1)
        spent.append(time.perf_counter() - t)
    total = sum(spent)
    return baseline, {"vectors_per_s": ds.size / total, "seconds": total,
                      "batches": len(spent), "batch_size": batch,
                      "note": "add_items(num_threads=1) per batch, like the shard's indexer"}


def _ingest_shard(ds: Dataset, batch: int, shard_path: str, log) -> tuple[ShardReplica, dict]:
    """ShardReplica.write per batch. `ack` counts until the last write returned (committed in
    Deep Lake; the replica's contract says when that is searchable); `indexed` until every row is
    also in the HNSW graph (wait_indexed), the figure comparable with hnswlib's add_items."""
    shutil.rmtree(shard_path, ignore_errors=True)
    replica = ShardReplica(shard_path, ds.dim, ds.metric)
    bounds = [(start, min(ds.size, start + batch)) for start in range(0, ds.size, batch)]
    batches = [(start, stop, _records(ds, start, stop)) for start, stop in bounds]
    spent = []
    started = time.perf_counter()
    for b, (start, stop, records) in enumerate(batches):
        t = time.perf_counter()
        result = replica.write(records, [], ExistingPolicy.ERROR)
        spent.append(time.perf_counter() - t)
        if result.inserted != len(records):
            raise RuntimeError(f"shard inserted {result.inserted} of {len(records)}")
        if log and (b + 1) % 10 == 0:
            log(f"    shard acknowledged {stop}/{ds.size}")
    pending_at_ack = pending(replica)
    if not wait_indexed(replica):
        raise RuntimeError("shard did not finish indexing within the timeout")
    indexed_s = time.perf_counter() - started
    return replica, {"ack_vectors_per_s": ds.size / sum(spent), "ack_seconds": sum(spent),
                     "vectors_per_s": ds.size / indexed_s, "indexed_seconds": indexed_s,
                     "pending_at_last_ack": pending_at_ack, "batches": len(spent),
                     "batch_size": batch}


def _probe(system: str, path: str, warmup_path: str, ds: Dataset, queries_file: str,
           ef: int) -> dict:
    cmd = [sys.executable, "-m", "bench.rss_probe", "--system", system, "--path", path,
           "--warmup-path", warmup_path, "--dim", str(ds.dim), "--metric", ds.metric,
           "--count", str(ds.size), "--queries", queries_file, "--ef", str(ef)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"rss probe for {system} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_inprocess(ds: Dataset, *, work_dir: str, ef: int, batch: int, reps: int,
                  ingest_reps: int, threads: int, max_seconds: float, log=print) -> dict:
    os.makedirs(work_dir, exist_ok=True)
    handler = _ShardLog()
    shard_log = logging.getLogger("tributary.shard")
    shard_log.addHandler(handler)
    shard_log.setLevel(logging.INFO)
    k = ds.k
    shard_path = os.path.join(work_dir, f"{ds.name}-shard")
    result: dict = {"dataset": ds.name, "metric": ds.metric, "size": ds.size, "dim": ds.dim,
                    "queries": int(ds.queries.shape[0]), "k": k, "ef_search": ef,
                    "M": limits.hnsw_m, "ef_construction": limits.hnsw_ef_construction}
    try:
        # ---- ingest: one system at a time (the shard may index in a background thread, which
        # would steal CPU from an interleaved baseline); the order alternates between reps ----
        ingest_runs = []
        baseline = replica = None
        for rep in range(ingest_reps):
            if replica is not None:
                replica.close()
            del baseline, replica
            baseline = replica = None
            gc.collect()
            log(f"  ingest {ds.size} vectors in batches of {batch} (rep {rep + 1}/{ingest_reps})")
            figures = {}
            for system in (("hnswlib", "shard") if rep % 2 == 0 else ("shard", "hnswlib")):
                if system == "hnswlib":
                    baseline, figures["hnswlib"] = _ingest_baseline(ds, batch)
                else:
                    replica, figures["shard"] = _ingest_shard(ds, batch, shard_path, log)
            ingest_runs.append(figures)

        def med(system, key):
            return float(np.median([r[system][key] for r in ingest_runs]))

        result["ingest"] = {
            "hnswlib": {"vectors_per_s": med("hnswlib", "vectors_per_s"),
                        "repetitions": len(ingest_runs),
                        "runs": [r["hnswlib"] for r in ingest_runs]},
            "shard": {"vectors_per_s": med("shard", "vectors_per_s"),
                      "ack_vectors_per_s": med("shard", "ack_vectors_per_s"),
                      "repetitions": len(ingest_runs),
                      "runs": [r["shard"] for r in ingest_runs]}}
        baseline.set_ef(ef)

        queries2d = [q.reshape(1, -1) for q in ds.queries]
        queries1d = list(ds.queries)

        def search_baseline(q):
            return baseline.knn_query(q, k=k, num_threads=1)

        def search_shard(q):
            return replica.search(q, k, ef_search=ef)

        result["pending_before_search"] = pending(replica)

        # ---- recall (also the warm-up pass) ---------------------------------------------------
        log("  recall pass")
        found_b = [search_baseline(q)[0][0].tolist() for q in queries2d]
        found_s = [[int(h.record.id) for h in search_shard(q).hits] for q in queries1d]
        result["recall"] = {"hnswlib": recall_at_k(found_b, ds.truth, k),
                            "shard": recall_at_k(found_s, ds.truth, k)}

        # ---- QPS / latency, repeated, systems interleaved ---------------------------------------
        runs = {("hnswlib", 1): [], ("shard", 1): [], ("hnswlib", threads): [],
                ("shard", threads): []}
        for rep in range(reps):
            log(f"  search rep {rep + 1}/{reps}")
            order = ("hnswlib", "shard") if rep % 2 == 0 else ("shard", "hnswlib")
            for t in (1, threads):
                for system in order:
                    call, qs = ((search_baseline, queries2d) if system == "hnswlib"
                                else (search_shard, queries1d))
                    runs[(system, t)].append(query_loop(call, qs, threads=t,
                                                        max_seconds=max_seconds))
        result["search"] = {f"{system}_{t}t": summarize(r) for (system, t), r in runs.items()}

        # ---- restart: close + reopen in this process -------------------------------------------
        log("  restart (close + reopen)")
        started = time.perf_counter()
        replica.close()
        close_s = time.perf_counter() - started
        del replica
        gc.collect()
        handler.messages.clear()
        started = time.perf_counter()
        replica = ShardReplica(shard_path, ds.dim, ds.metric)
        reopen_s = time.perf_counter() - started
        action = handler.index_action()
        repairs = getattr(replica, "index_repairs", None)
        pending_after_open = pending(replica)
        wait_indexed(replica)
        reindexed_s = time.perf_counter() - started - reopen_s
        check = min(200, len(queries1d))
        found_after = [[int(h.record.id) for h in replica.search(q, k, ef_search=ef).hits]
                       for q in queries1d[:check]]
        result["restart"] = {"close_s": close_s, "reopen_s": reopen_s, "index": action,
                             "index_repairs": repairs, "pending_after_open": pending_after_open,
                             "seconds_until_fully_indexed": reopen_s + reindexed_s,
                             "count_after": replica.count(),
                             "recall_after_reopen": recall_at_k(found_after,
                                                                ds.truth[:check], k)}
        replica.close()
        del replica
        baseline_path = os.path.join(work_dir, f"{ds.name}-hnswlib.bin")
        started = time.perf_counter()
        baseline.save_index(baseline_path)
        baseline_save_s = time.perf_counter() - started
        del baseline
        gc.collect()

        # ---- RSS per vector, one fresh subprocess per system ------------------------------------
        log("  RSS probes (fresh subprocess per system)")
        tiny = ds.data[:16]
        tiny_bin = os.path.join(work_dir, "tiny-hnswlib.bin")
        tiny_index = hnswlib.Index(space=HNSW_SPACE[ds.metric], dim=ds.dim)
        tiny_index.init_index(max_elements=16, M=limits.hnsw_m,
                              ef_construction=limits.hnsw_ef_construction)
        tiny_index.add_items(tiny, np.arange(16))
        tiny_index.save_index(tiny_bin)
        tiny_shard = os.path.join(work_dir, f"tiny-shard-{ds.name}")
        shutil.rmtree(tiny_shard, ignore_errors=True)
        small = ShardReplica(tiny_shard, ds.dim, ds.metric)
        small.write([VectorRecord(id=f"t{i}", values=tiny[i]) for i in range(16)], [])
        wait_indexed(small)
        small.close()
        del small
        queries_file = os.path.join(work_dir, f"{ds.name}-queries.npy")
        np.save(queries_file, ds.queries[:200])
        probe_b = _probe("hnswlib", baseline_path, tiny_bin, ds, queries_file, ef)
        probe_s = _probe("shard", shard_path, tiny_shard, ds, queries_file, ef)
        result["rss"] = {"hnswlib": probe_b, "shard": probe_s}
        result["fresh_process_open"] = {"hnswlib_load_s": probe_b["open_s"],
                                        "shard_open_s": probe_s["open_s"],
                                        "shard_index": probe_s["index"],
                                        "shard_fully_indexed_s":
                                            probe_s["seconds_until_fully_indexed"],
                                        "shard_pending_after_open":
                                            probe_s["pending_after_open"]}
        result["disk"] = {"hnswlib_bytes": os.path.getsize(baseline_path),
                          "shard_bytes": directory_bytes(shard_path),
                          "hnswlib_save_s": baseline_save_s}

        # ---- ratios --------------------------------------------------------------------------
        s = result["search"]
        result["ratios"] = {
            "qps_1t": s["shard_1t"]["qps"] / s["hnswlib_1t"]["qps"],
            f"qps_{threads}t": s[f"shard_{threads}t"]["qps"] / s[f"hnswlib_{threads}t"]["qps"],
            "ingest": result["ingest"]["shard"]["vectors_per_s"]
            / result["ingest"]["hnswlib"]["vectors_per_s"],
            "ingest_ack": result["ingest"]["shard"]["ack_vectors_per_s"]
            / result["ingest"]["hnswlib"]["vectors_per_s"],
            "rss_per_vector": probe_s["bytes_per_vector"] / probe_b["bytes_per_vector"],
            "rss_per_vector_incl_fixed": probe_s["bytes_per_vector_incl_fixed"]
            / probe_b["bytes_per_vector_incl_fixed"],
        }
        return result
    finally:
        shard_log.removeHandler(handler)
