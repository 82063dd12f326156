"""Query loops, percentiles, medians, RSS readings and machine facts shared by the benchmarks."""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(round(p / 100.0 * len(ordered) + 0.5))))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if v is not None and v == v]
    return statistics.median(clean) if clean else float("nan")


def run_threads(target: Callable[[int], object], count: int) -> float:
    """Runs target(0) .. target(count - 1) each in its own thread and waits for all of them;
    returns the wall-clock seconds from the first start to the last join."""
    workers = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started


def query_loop(call: Callable[[object], object], queries: Sequence[object], threads: int = 1,
               max_seconds: float = 10.0, min_queries: int = 100) -> dict:
    """Runs call(q) over the queries with `threads` client threads (ThreadPoolExecutor), each
    working its own interleaved slice. Stops early once max_seconds have passed and at least
    min_queries are done. Returns QPS over the wall-clock time and per-call latency percentiles."""
    threads = max(1, threads)
    latencies: list[list[float]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def worker(w: int) -> None:
        mine = latencies[w]
        barrier.wait()
        clock = time.perf_counter
        done_floor = max(1, min_queries // threads)
        for i in range(w, len(queries), threads):
            started = clock()
            call(queries[i])
            ended = clock()
            mine.append(ended - started)
            if ended > stop_at[0] and len(mine) >= done_floor:
                break

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(worker, w) for w in range(threads)]
        started = time.perf_counter()
        stop_at[0] = started + max_seconds
        barrier.wait()
        for f in futures:
            f.result()
        elapsed = time.perf_counter() - started
    flat = [x for lane in latencies for x in lane]
    return {
        "threads": threads,
        "queries": len(flat),
        "seconds": elapsed,
        "qps": len(flat) / elapsed if elapsed > 0 else float("nan"),
        "p50_ms": percentile(flat, 50) * 1000,
        "p99_ms": percentile(flat, 99) * 1000,
        "mean_ms": (sum(flat) / len(flat) * 1000) if flat else float("nan"),
    }


def summarize(runs: list[dict]) -> dict:
    """Median of each figure over repeated runs, keeping the individual runs."""
    keys = ("qps", "p50_ms", "p99_ms", "mean_ms")
    out = {key: median([r[key] for r in runs]) for key in keys}
    out["threads"] = runs[0]["threads"] if runs else None
    out["repetitions"] = len(runs)
    out["runs"] = runs
    return out


def rss_kb() -> int:
    """VmRSS of this process from /proc/self/status, in kB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("VmRSS not found in /proc/self/status")


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kb = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kb = int(line.split()[1])
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpus": os.cpu_count(), "cpus_usable": usable, "cpu_model": model,
            "mem_gb": round(mem_kb / 1024 / 1024, 1), "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_start": list(os.getloadavg())}
