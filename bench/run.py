"""Tributary benchmark harness: one run measures the baseline and Tributary side by side and
reports the ratios DESIGN.md's "Performance targets" are stated in. It is a report: there are no
assertions; every target is printed as met or MISSED.

    python -m bench.run [--sizes 100000] [--quick] [--e2e] [--out bench/results/latest.json]

See bench/README.md for what each figure means."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time

import hnswlib

from bench.datasets import GENERATORS, make_dataset
from bench.timing import machine
from tributary import limits

HERE = os.path.dirname(os.path.abspath(__file__))

TARGETS = {
    "recall": 0.95,            # recall@10 at the same M and ef
    "qps_ratio": 0.8,          # shard in-process QPS / raw hnswlib QPS
    "rss_ratio": 2.0,          # shard RSS per vector / raw hnswlib RSS per vector
    "restart_s": 30.0,         # a restart is ready within 30 s (stated at 1M vectors) ...
    "e2e_qps_ratio": 0.6,      # router QPS / Python echo-router ceiling QPS
    "e2e_p99_ms": 10.0,        # p99 through the router (stated at 1M x 128)
    "e2e_ingest": 20_000.0,    # vectors/s through the router, durable + searchable, 2 cores
}


SOURCE_DIRS = ("shard", "router", "node", "consensus", "tributary", "proto")


def source_fingerprint() -> dict[str, str]:
    """sha256 of every .py file of the system under test. The tree may be edited while a long
    run is going; comparing the fingerprints at start and end tells whether that happened."""
    import hashlib
    repo = os.path.dirname(HERE)
    out = {}
    for top in SOURCE_DIRS:
        for root, _, files in os.walk(os.path.join(repo, top)):
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(root, name)
                    try:
                        with open(path, "rb") as f:
                            out[os.path.relpath(path, repo)] = hashlib.sha256(
                                f.read()).hexdigest()[:16]
                    except OSError:
                        pass
    return out


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=None,
                   help="comma-separated sizes of the clustered 128-d dataset (default 100000; "
                        "--quick: 20000)")
    p.add_argument("--isotropic-sizes", default=None,
                   help="comma-separated sizes of the isotropic 384-d dataset (default: half of "
                        "each --sizes entry, since a 384-d graph builds ~3x slower)")
    p.add_argument("--quick", action="store_true",
                   help="20k clustered / 10k isotropic vectors, 500 queries, shorter loops: "
                        "about 1-2 minutes")
    p.add_argument("--datasets", default="clustered,isotropic",
                   help=f"comma-separated generators from {GENERATORS} (clustered is 128-d, "
                        "isotropic 384-d)")
    p.add_argument("--metric", default="cosine", choices=("cosine", "ip", "l2"))
    p.add_argument("--queries", type=int, default=None, help="queries (default 1000; quick 500)")
    p.add_argument("--ef", type=int, default=limits.ef_search_default, help="ef_search for both")
    p.add_argument("--batch", type=int, default=5000, help="vectors per write batch")
    p.add_argument("--reps", type=int, default=3, help="repetitions of each search measurement")
    p.add_argument("--ingest-reps", type=int, default=1,
                   help="repetitions of the in-process ingest (each rebuilds both indexes)")
    p.add_argument("--threads", type=int, default=2, help="client threads for concurrent QPS")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="cap per QPS measurement (default 5; quick 2)")
    p.add_argument("--e2e", action="store_true", help="also run the end-to-end cluster benchmark")
    p.add_argument("--e2e-only", action="store_true", help="run only the end-to-end benchmark")
    p.add_argument("--e2e-size", type=int, default=None,
                   help="vectors ingested through REST (default: the first of --sizes)")
    p.add_argument("--e2e-batch", type=int, default=5000, help="vectors per REST request")
    p.add_argument("--e2e-concurrency", type=int, default=1, help="REST requests in flight")
    p.add_argument("--nodes", type=int, default=2, help="shard nodes in the e2e cluster")
    p.add_argument("--shard-count", type=int, default=0,
                   help="e2e dataset shard_count (0: one per live node)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", default=None, help="scratch directory (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--out", default=os.path.join(HERE, "results", "latest.json"))
    args = p.parse_args(argv)
    if args.sizes is None:
        args.sizes = "20000" if args.quick else "100000"
    args.size_list = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.isotropic_size_list = ([int(s) for s in args.isotropic_sizes.split(",") if s.strip()]
                                if args.isotropic_sizes else [n // 2 for n in args.size_list])
    args.queries = args.queries or (500 if args.quick else 1000)
    args.max_seconds = args.max_seconds or (2.0 if args.quick else 5.0)
    args.dataset_list = [d.strip() for d in args.datasets.split(",") if d.strip()]
    for d in args.dataset_list:
        if d not in GENERATORS:
            p.error(f"unknown dataset {d!r}; choose from {GENERATORS}")
    if args.e2e_only:
        args.e2e = True
    args.e2e_size = args.e2e_size or args.size_list[0]
    return args


# ---- rendering ----------------------------------------------------------------------------------

def _fmt(value, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, str):
        return value
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "MISSED")


def _table(title: str, header: tuple, rows: list[tuple]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = "  ".join("{:<%d}" % widths[0] if i == 0 else "{:>%d}" % w
                     for i, w in enumerate(widths))
    out = [title, line.format(*header), "  ".join("-" * w for w in widths)]
    out += [line.format(*row) for row in rows]
    return "\n".join(out)


def render_inprocess(r: dict, threads: int) -> tuple[str, list[dict]]:
    s, rat, rss = r["search"], r["ratios"], r["rss"]
    checks = []

    def check(name, value, ok):
        checks.append({"dataset": r["dataset"], "size": r["size"], "target": name,
                       "value": value, "met": ok})
        return _verdict(ok)

    rows = [
        ("recall@10", _fmt(r["recall"]["hnswlib"], 3), _fmt(r["recall"]["shard"], 3), "",
         f">= {TARGETS['recall']}",
         check("recall@10 >= 0.95", r["recall"]["shard"],
               r["recall"]["shard"] >= TARGETS["recall"])),
        ("  recall parity (shard - hnswlib)", "", "",
         _fmt(r["recall"]["shard"] - r["recall"]["hnswlib"], 3), ">= -0.01",
         check("shard recall within 0.01 of hnswlib",
               r["recall"]["shard"] - r["recall"]["hnswlib"],
               r["recall"]["shard"] - r["recall"]["hnswlib"] >= -0.01)),
        ("QPS, 1 thread", _fmt(s["hnswlib_1t"]["qps"]), _fmt(s["shard_1t"]["qps"]),
         _fmt(rat["qps_1t"], 3), f">= {TARGETS['qps_ratio']}x",
         check("shard QPS 1t >= 0.8x hnswlib", rat["qps_1t"],
               rat["qps_1t"] >= TARGETS["qps_ratio"])),
        (f"QPS, {threads} threads", _fmt(s[f"hnswlib_{threads}t"]["qps"]),
         _fmt(s[f"shard_{threads}t"]["qps"]), _fmt(rat[f"qps_{threads}t"], 3),
         f">= {TARGETS['qps_ratio']}x",
         check(f"shard QPS {threads}t >= 0.8x hnswlib", rat[f"qps_{threads}t"],
               rat[f"qps_{threads}t"] >= TARGETS["qps_ratio"])),
        ("p50 latency ms, 1 thread", _fmt(s["hnswlib_1t"]["p50_ms"], 3),
         _fmt(s["shard_1t"]["p50_ms"], 3),
         _fmt(s["shard_1t"]["p50_ms"] / s["hnswlib_1t"]["p50_ms"], 1), "", ""),
        ("p99 latency ms, 1 thread", _fmt(s["hnswlib_1t"]["p99_ms"], 3),
         _fmt(s["shard_1t"]["p99_ms"], 3),
         _fmt(s["shard_1t"]["p99_ms"] / s["hnswlib_1t"]["p99_ms"], 1), "", ""),
        (f"p99 latency ms, {threads} threads", _fmt(s[f"hnswlib_{threads}t"]["p99_ms"], 3),
         _fmt(s[f"shard_{threads}t"]["p99_ms"], 3), "", "", ""),
        ("ingest vectors/s, in the graph", _fmt(r["ingest"]["hnswlib"]["vectors_per_s"]),
         _fmt(r["ingest"]["shard"]["vectors_per_s"]), _fmt(rat["ingest"], 3), "", ""),
        ("  shard to ack (durable)", "", _fmt(r["ingest"]["shard"]["ack_vectors_per_s"]),
         _fmt(rat["ingest_ack"], 3), "", ""),
        ("RSS bytes/vector", _fmt(rss["hnswlib"]["bytes_per_vector"]),
         _fmt(rss["shard"]["bytes_per_vector"]), _fmt(rat["rss_per_vector"], 2),
         f"<= {TARGETS['rss_ratio']}x",
         check("shard RSS/vector <= 2x hnswlib", rat["rss_per_vector"],
               rat["rss_per_vector"] <= TARGETS["rss_ratio"])),
        ("  incl. fixed runtime cost", _fmt(rss["hnswlib"]["bytes_per_vector_incl_fixed"]),
         _fmt(rss["shard"]["bytes_per_vector_incl_fixed"]),
         _fmt(rat["rss_per_vector_incl_fixed"], 2), "", ""),
        ("fixed runtime RSS MB", _fmt(rss["hnswlib"]["fixed_kb"] / 1024, 1),
         _fmt(rss["shard"]["fixed_kb"] / 1024, 1), "", "", ""),
    ]
    restart = r["restart"]
    fresh = r["fresh_process_open"]
    no_rebuild = restart["index"] == "loaded" and fresh["shard_index"] == "loaded"
    rows += [
        ("restart s: close + reopen", "", _fmt(restart["close_s"] + restart["reopen_s"], 3), "",
         "no rebuild", check("restart loads the HNSW index (no rebuild)",
                             f"{restart['index']} / {fresh['shard_index']}", no_rebuild)),
        ("  index on reopen: in-process / fresh", "",
         f"{restart['index']} / {fresh['shard_index']}", "", "", ""),
        ("  s until fully indexed, fresh", "", _fmt(fresh["shard_fully_indexed_s"], 3), "",
         "", ""),
        ("open s, fresh process", _fmt(fresh["hnswlib_load_s"], 3),
         _fmt(fresh["shard_open_s"], 3),
         _fmt(fresh["shard_open_s"] / fresh["hnswlib_load_s"], 1)
         if fresh["hnswlib_load_s"] else "", f"<= {TARGETS['restart_s']:.0f} s (at 1M)",
         check("restart ready <= 30 s (measured size)", fresh["shard_open_s"],
               fresh["shard_open_s"] <= TARGETS["restart_s"])),
        ("disk MB", _fmt(r["disk"]["hnswlib_bytes"] / 1e6, 1),
         _fmt(r["disk"]["shard_bytes"] / 1e6, 1),
         _fmt(r["disk"]["shard_bytes"] / r["disk"]["hnswlib_bytes"], 2), "", ""),
    ]
    title = (f"\n== in-process: {r['dataset']} {r['metric']}, n={r['size']:,}, "
             f"{r['queries']} queries, k={r['k']}, M={r['M']}, efC={r['ef_construction']}, "
             f"ef={r['ef_search']} (medians of {s['shard_1t']['repetitions']} reps)")
    table = _table(title, ("figure", "hnswlib", "shard", "shard/hnswlib", "target", "verdict"),
                   rows)
    return table, checks


def render_e2e(r: dict, threads: int) -> tuple[str, list[dict]]:
    s, rat = r["search"], r["ratios"]
    checks = []

    def check(name, value, ok):
        checks.append({"dataset": f"e2e {r['dataset']}", "size": r["size"], "target": name,
                       "value": value, "met": ok})
        return _verdict(ok)

    ing = r["ingest"]
    rows = [
        ("ingest vectors/s via REST", "", _fmt(ing["vectors_per_s"]), "",
         f">= {TARGETS['e2e_ingest']:,.0f}",
         check("e2e ingest >= 20k vectors/s", ing["vectors_per_s"],
               ing["vectors_per_s"] >= TARGETS["e2e_ingest"] and
               ing["last_vector_searchable_after_ack"])),
        ("  searchable right after ack", "", "yes" if ing["last_vector_searchable_after_ack"]
         else "NO", "", "", ""),
        ("  nodes busy after last ack, s", "", _fmt(ing["nodes_busy_after_last_ack_s"], 1), "",
         "", ""),
        ("  approx. in-graph vectors/s", "", _fmt(ing["approx_in_graph_vectors_per_s"]), "", "",
         ""),
        ("recall@10 via gRPC", "", _fmt(r["recall"], 3), "", f">= {TARGETS['recall']}",
         check("e2e recall@10 >= 0.95", r["recall"], r["recall"] >= TARGETS["recall"])),
        ("QPS, 1 thread", _fmt(s["echo_1t"]["qps"]), _fmt(s["cluster_1t"]["qps"]),
         _fmt(rat["qps_1t"], 3), f">= {TARGETS['e2e_qps_ratio']}x",
         check("e2e QPS 1t >= 0.6x echo ceiling", rat["qps_1t"],
               rat["qps_1t"] >= TARGETS["e2e_qps_ratio"])),
        (f"QPS, {threads} threads", _fmt(s[f"echo_{threads}t"]["qps"]),
         _fmt(s[f"cluster_{threads}t"]["qps"]), _fmt(rat[f"qps_{threads}t"], 3),
         f">= {TARGETS['e2e_qps_ratio']}x",
         check(f"e2e QPS {threads}t >= 0.6x echo ceiling", rat[f"qps_{threads}t"],
               rat[f"qps_{threads}t"] >= TARGETS["e2e_qps_ratio"])),
        ("p50 latency ms, 1 thread", _fmt(s["echo_1t"]["p50_ms"], 3),
         _fmt(s["cluster_1t"]["p50_ms"], 3), "", "", ""),
        ("p99 latency ms, 1 thread", _fmt(s["echo_1t"]["p99_ms"], 3),
         _fmt(s["cluster_1t"]["p99_ms"], 3), "", f"< {TARGETS['e2e_p99_ms']:.0f} (at 1M)",
         check("e2e p99 < 10 ms (measured size)", s["cluster_1t"]["p99_ms"],
               s["cluster_1t"]["p99_ms"] < TARGETS["e2e_p99_ms"])),
        (f"p99 latency ms, {threads} threads", _fmt(s[f"echo_{threads}t"]["p99_ms"], 3),
         _fmt(s[f"cluster_{threads}t"]["p99_ms"], 3), "", "", ""),
    ]
    title = (f"\n== end-to-end: {r['dataset']} {r['metric']}, n={r['size']:,}, "
             f"{r['nodes']} nodes, shard_count={r.get('shard_count')}, REST batches of "
             f"{ing['batch_size']} (~{r['ingest_request_mb']} MB JSON), gRPC top_k={r['k']} "
             f"ef={r['ef_search']} (medians of {s['cluster_1t']['repetitions']} reps)")
    table = _table(title, ("figure", "echo ceiling", "cluster", "cluster/echo", "target",
                           "verdict"), rows)
    return table, checks


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# ---- main ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop clusters and clean up.
    signal.signal(signal.SIGTERM, _interrupt)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="tributary-bench-")
    os.makedirs(work_dir, exist_ok=True)
    import deeplake
    report: dict = {
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.run"] + (argv if argv is not None
                                                        else sys.argv[1:])),
        "machine": machine(),
        "versions": {"hnswlib": getattr(hnswlib, "__version__", "0.8.0"),
                     "deeplake": deeplake.__version__},
        "config": {k: v for k, v in vars(args).items()
                   if k not in ("size_list", "dataset_list", "isotropic_size_list")},
        "targets": TARGETS, "inprocess": [], "e2e": None, "checks": []}
    tables: list[str] = []
    sources_at_start = source_fingerprint()
    report["sources"] = sources_at_start
    wall = time.perf_counter()
    try:
        if not args.e2e_only:
            from bench.inprocess import run_inprocess
            sizes = {"clustered": args.size_list, "isotropic": args.isotropic_size_list}
            plan = [(kind, n) for kind in args.dataset_list for n in sizes[kind]]
            for kind, size in plan:
                _log(f"[{time.perf_counter() - wall:6.1f}s] {kind} n={size}: generating data "
                     "and ground truth")
                ds = make_dataset(kind, size, args.queries, metric=args.metric, seed=args.seed)
                case_dir = os.path.join(work_dir, f"{kind}-{size}")
                res = run_inprocess(ds, work_dir=case_dir, ef=args.ef, batch=args.batch,
                                    reps=args.reps, ingest_reps=args.ingest_reps,
                                    threads=args.threads, max_seconds=args.max_seconds,
                                    log=lambda m: _log(f"[{time.perf_counter() - wall:6.1f}s]"
                                                       f"{m}"))
                del ds
                if not args.keep:
                    shutil.rmtree(case_dir, ignore_errors=True)
                report["inprocess"].append(res)
                table, checks = render_inprocess(res, args.threads)
                report["checks"] += checks
                tables.append(table)
                print(table, flush=True)
        if args.e2e:
            from bench.e2e import run_e2e
            _log(f"[{time.perf_counter() - wall:6.1f}s] e2e: clustered n={args.e2e_size}: "
                 "generating data and ground truth")
            ds = make_dataset("clustered", args.e2e_size, args.queries, metric=args.metric,
                              seed=args.seed)
            res = run_e2e(ds, work_dir=os.path.join(work_dir, "e2e"), ef=args.ef,
                          batch=args.e2e_batch, reps=args.reps, threads=args.threads,
                          max_seconds=args.max_seconds, nodes=args.nodes,
                          shard_count=args.shard_count,
                          ingest_concurrency=args.e2e_concurrency,
                          log=lambda m: _log(f"[{time.perf_counter() - wall:6.1f}s]{m}"))
            report["e2e"] = res
            table, checks = render_e2e(res, args.threads)
            report["checks"] += checks
            tables.append(table)
            print(table, flush=True)
    finally:
        sources_at_end = source_fingerprint()
        report["sources_changed_during_run"] = sorted(
            name for name in set(sources_at_start) | set(sources_at_end)
            if sources_at_start.get(name) != sources_at_end.get(name))
        report["wall_seconds"] = time.perf_counter() - wall
        report["machine"]["loadavg_end"] = list(os.getloadavg())
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "w") as f:
                json.dump(report, f, indent=1, default=str)
        if not args.keep and not args.work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)

    met = sum(1 for c in report["checks"] if c["met"])
    lines = [f"\n== targets: {met} of {len(report['checks'])} met "
             f"(wall {report['wall_seconds']:.0f} s, {report['machine']['cpus_usable']} CPUs, "
             f"load {report['machine']['loadavg_start'][0]:.1f} -> "
             f"{report['machine']['loadavg_end'][0]:.1f})"]
    for c in report["checks"]:
        value = c["value"]
        value = f"{value:.3g}" if isinstance(value, float) else str(value)
        lines.append(f"  {'met   ' if c['met'] else 'MISSED'}  {c['dataset']} n={c['size']:,}: "
                     f"{c['target']} (value {value})")
    if report["sources_changed_during_run"]:
        lines.append("WARNING: source files changed during the run, so parts of it measured "
                     "different code: " + ", ".join(report["sources_changed_during_run"]))
    if args.out:
        lines.append(f"JSON: {args.out}")
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
