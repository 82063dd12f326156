"""Elastic scale-out benchmark (issue 12, "Must show"), through a real local cluster.

    python -m bench.rebalance [--quick] [--move-vectors N] [--parts rebalance,move,drain]

One `tributary up --nodes 2 --meta 1` cluster (the box has 2 cores), a third `tributary node`
started beside it the way a new host joins, and in it, one part after the other:

- rebalance: a dataset of `--shards` shards x 2 copies seeded with `--seed-vectors`; a steady
  load (one writer posting small batches, one reader doing GETs and searches, through the
  router) runs while the third node joins and `tributary admin rebalance --wait` evens copies
  out 2 -> 3 nodes. Reports client requests failed (target 0), acknowledged writes lost (every
  acked id is read back afterwards; target 0) and the rebalance's wall time.
- move: a 1-shard, 1-copy dataset of `--move-vectors` x 128 (ingested first, not timed), then
  `tributary admin shards move` to the other node; seconds from the command to the move gone from
  `moves list` (the copy caught up by copying files, joined, took the primary role over, the
  source dropped). Reports vectors/s, and the time that rate gives for 1M (target < 120 s).
- drain: under the same load, `tributary admin nodes drain node-0 --wait` for a node that holds
  `--shards` * 2 / 3 copies after the rebalance (4 with the default 6 shards). Reports the time
  and the failed requests (target 0).

Progress goes to stderr, the table to stdout, every measurement to the JSON (`--out`). There are
no assertions: a missed target is a figure to report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import numpy as np

from bench.e2e import LocalCluster
from bench.replication import list_ids
from bench.timing import machine, percentile

HERE = os.path.dirname(os.path.abspath(__file__))
DIMS = 128
TARGETS = {"requests_failed": 0, "acked_writes_lost": 0, "move_1m_extrapolated_s": 120.0}


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def admin(cluster: LocalCluster, *args: str, timeout_s: float = 3600) -> subprocess.CompletedProcess:
    """`tributary admin ...` through the real CLI, against this cluster's router."""
    result = subprocess.run([sys.executable, "-m", "tributary.cli", "admin", *args,
                             "--url", cluster.rest.removesuffix("/api/v1")],
                            capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        raise RuntimeError(f"tributary admin {' '.join(args)}: {result.stderr.strip()}")
    return result


def node_states(cluster: LocalCluster) -> dict[str, dict]:
    return {n["node_id"]: n for n in json.loads(admin(cluster, "nodes", "list", "--json").stdout)}


def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - keep polling until the deadline
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")


def ingest(client: httpx.Client, name: str, count: int, prefix: str, batch: int = 1_000,
           seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    started = time.monotonic()
    for offset in range(0, count, batch):
        n = min(batch, count - offset)
        values = rng.standard_normal((n, DIMS), dtype=np.float32)
        body = json.dumps({"vectors": [{"id": f"{prefix}{offset + i}", "values": v}
                                       for i, v in enumerate(values.tolist())]})
        r = client.post(f"/datasets/{name}/vectors", content=body, timeout=300,
                        headers={"Content-Type": "application/json"})
        if r.status_code != 201:
            raise RuntimeError(f"ingest into {name}: {r.status_code} {r.text[:300]}")
        if (offset // batch) % 50 == 0:
            _log(f"  {name}: {offset + n}/{count} ({(offset + n) / (time.monotonic() - started):.0f}/s)")


class Load:
    """A steady load through the router: one writer (batches of 10, ids <prefix><i>) and one reader (a
    GET of a seeded id, then a search). Every non-2xx answer or transport error is a failure;
    every 201 makes its ids acknowledged."""

    def __init__(self, rest: str, name: str, seeded: int, prefix: str):
        self.rest, self.name, self.seeded, self.prefix = rest, name, seeded, prefix
        self.stop = threading.Event()
        self.acked: list[str] = []
        self.failures: list[str] = []
        self.requests = 0
        self.latencies_ms: list[float] = []
        self.next_id = 0
        self.threads = [threading.Thread(target=self._write, daemon=True),
                        threading.Thread(target=self._read, daemon=True)]

    def _call(self, fn, what: str):
        started = time.monotonic()
        self.requests += 1
        try:
            r = fn()
        except httpx.HTTPError as exc:
            self.failures.append(f"{what}: {exc!r}")
            return None
        self.latencies_ms.append((time.monotonic() - started) * 1000)
        if r.status_code >= 300:
            self.failures.append(f"{what}: {r.status_code} {r.text[:200]}")
            return None
        return r

    def _write(self):
        rng = np.random.default_rng(1)
        with httpx.Client(base_url=self.rest, timeout=60) as client:
            while not self.stop.is_set():
                ids = [f"{self.prefix}{self.next_id + i}" for i in range(10)]
                self.next_id += 10
                values = rng.standard_normal((10, DIMS), dtype=np.float32).tolist()
                r = self._call(lambda: client.post(f"/datasets/{self.name}/vectors", json={
                    "vectors": [{"id": i, "values": v} for i, v in zip(ids, values)]}),
                    f"write {ids[0]}")
                if r is not None:
                    self.acked.extend(ids)

    def _read(self):
        rng = random.Random(2)
        nprng = np.random.default_rng(3)
        with httpx.Client(base_url=self.rest, timeout=60) as client:
            while not self.stop.is_set():
                vid = f"s{rng.randrange(self.seeded)}"
                self._call(lambda: client.get(f"/datasets/{self.name}/vectors/{vid}"),
                           f"read {vid}")
                query = nprng.standard_normal(DIMS).tolist()
                self._call(lambda: client.post(f"/datasets/{self.name}/search", json={
                    "query_vector": query, "options": {"top_k": 10}}), "search")

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(120)

    def lost(self) -> list[str]:
        """Acknowledged ids the dataset does not hold now (a full listing, page by page)."""
        with httpx.Client(base_url=self.rest, timeout=120) as client:
            held = list_ids(client, self.name)
        return [i for i in self.acked if i not in held]

    def summary(self) -> dict:
        return {"requests": self.requests, "requests_failed": len(self.failures),
                "failures_sample": self.failures[:5], "acked_writes": len(self.acked),
                "latency_p50_ms": round(percentile(self.latencies_ms, 50), 1)
                if self.latencies_ms else None,
                "latency_p99_ms": round(percentile(self.latencies_ms, 99), 1)
                if self.latencies_ms else None}


def start_extra_node(cluster: LocalCluster, index: int, log_dir: str) -> subprocess.Popen:
    """`tributary node` beside the cluster, as on a new host, at the port `tributary up` would
    give node-<index>."""
    port = cluster.internal_base + 100 + index
    meta = f"127.0.0.1:{cluster.internal_base + 10}"
    log = open(os.path.join(log_dir, f"node-{index}.log"), "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "tributary.cli", "node", "--listen", f"127.0.0.1:{port}",
         "--meta", meta, "--data-dir", os.path.join(cluster.data_dir, f"node-{index}"),
         "--node-id", f"node-{index}", "--cluster-secret-file",
         os.path.join(cluster.data_dir, "secrets", "cluster-secret")],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)


def create(client: httpx.Client, name: str, shards: int, factor: int) -> None:
    r = client.post("/datasets", json={"name": name, "dimensions": DIMS, "shard_count": shards,
                                       "replication_factor": factor}, timeout=60)
    if r.status_code != 201:
        raise RuntimeError(f"create {name}: {r.status_code} {r.text[:300]}")


def part_rebalance(cluster: LocalCluster, args, extra: list) -> dict:
    with httpx.Client(base_url=cluster.rest, timeout=120) as client:
        create(client, "load", args.shards, 2)
        ingest(client, "load", args.seed_vectors, "s")
    with Load(cluster.rest, "load", args.seed_vectors, "wr") as load:
        time.sleep(args.settle_s)     # a steady load before the node joins
        extra.append(start_extra_node(cluster, 2, os.path.join(cluster.data_dir, "logs")))
        wait_until(lambda: node_states(cluster).get("node-2", {}).get("state") == "live", 120,
                   "node-2 live")
        plan = json.loads(admin(cluster, "rebalance", "--dry-run", "--json",
                                "--max-concurrent-moves", "1000").stdout)
        _log(f"rebalance: {len(plan)} moves planned onto node-2")
        started = time.monotonic()
        admin(cluster, "rebalance", "--wait", "--max-concurrent-moves", "2", "--json")
        seconds = time.monotonic() - started
        time.sleep(args.settle_s)
    copies = {n: d["copies"] for n, d in node_states(cluster).items()}
    lost = load.lost()
    result = {"moves": len(plan), "seconds": round(seconds, 1), "copies_after": copies,
              "acked_writes_lost": len(lost), **load.summary()}
    _log(f"rebalance: {result}")
    return result


def part_move(cluster: LocalCluster, args) -> dict:
    with httpx.Client(base_url=cluster.rest, timeout=300) as client:
        create(client, "big", 1, 1)
        started = time.monotonic()
        ingest(client, "big", args.move_vectors, "b", seed=7)
        ingest_s = time.monotonic() - started
    state = json.loads(admin(cluster, "datasets", "show", "big", "--json").stdout)
    source = state["shards"][0]["primary"]
    target = next(n for n, d in node_states(cluster).items()
                  if n != source and d["state"] == "live")
    _log(f"move: big/0 ({args.move_vectors} vectors) {source} -> {target}")
    started = time.monotonic()
    admin(cluster, "shards", "move", "big", "0", "--from", source, "--to", target, "--wait",
          "--json")
    seconds = time.monotonic() - started
    after = json.loads(admin(cluster, "datasets", "show", "big", "--json").stdout)
    count = after["shards"][0]["copies"][0].get("vector_count")
    rate = args.move_vectors / seconds
    result = {"vectors": args.move_vectors, "ingest_s": round(ingest_s, 1),
              "seconds": round(seconds, 1), "vectors_per_s": round(rate),
              "move_1m_extrapolated_s": round(1_000_000 / rate, 1),
              "primary_after": after["shards"][0]["primary"], "vector_count_after": count}
    _log(f"move: {result}")
    with httpx.Client(base_url=cluster.rest, timeout=300) as client:
        client.delete("/datasets/big")
    return result


def part_drain(cluster: LocalCluster, args) -> dict:
    held = node_states(cluster)["node-0"]["copies"]
    with Load(cluster.rest, "load", args.seed_vectors, "wd") as load:
        time.sleep(args.settle_s)
        started = time.monotonic()
        admin(cluster, "nodes", "drain", "node-0", "--wait", "--json")
        seconds = time.monotonic() - started
        time.sleep(args.settle_s)
    lost = load.lost()
    result = {"node": "node-0", "copies_held": held, "seconds": round(seconds, 1),
              "acked_writes_lost": len(lost), "state_after": node_states(cluster)["node-0"],
              **load.summary()}
    _log(f"drain: {result}")
    return result


def render(report: dict) -> str:
    rows = []
    parts = report["parts"]
    if "rebalance" in parts:
        r = parts["rebalance"]
        rows += [("rebalance 2 -> 3: requests failed", r["requests_failed"], 0),
                 ("rebalance 2 -> 3: acked writes lost", r["acked_writes_lost"], 0),
                 ("rebalance 2 -> 3: moves / seconds", f"{r['moves']} / {r['seconds']}", "")]
    if "move" in parts:
        m = parts["move"]
        rows += [(f"move one shard of {m['vectors']} x 128: seconds", m["seconds"], ""),
                 ("move: vectors/s", m["vectors_per_s"], ""),
                 ("move: 1M extrapolated, seconds", m["move_1m_extrapolated_s"], "< 120")]
    if "drain" in parts:
        d = parts["drain"]
        rows += [(f"drain a node holding {d['copies_held']} copies: seconds", d["seconds"], ""),
                 ("drain: requests failed", d["requests_failed"], 0),
                 ("drain: acked writes lost", d["acked_writes_lost"], 0)]
    width = max(len(r[0]) for r in rows) if rows else 10
    lines = [f"{'measure'.ljust(width)}  {'value':>12}  target"]
    lines += [f"{name.ljust(width)}  {str(value):>12}  {target}" for name, value, target in rows]
    return "\n".join(lines)


def _parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.rebalance", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="small sizes: 2k seed vectors, a 20k-vector move, short settles")
    p.add_argument("--parts", default="rebalance,move,drain")
    p.add_argument("--shards", type=int, default=6, help="shards of the load dataset (x 2 copies)")
    p.add_argument("--seed-vectors", type=int, default=20_000)
    p.add_argument("--move-vectors", type=int, default=200_000)
    p.add_argument("--settle-s", type=float, default=5.0,
                   help="seconds of load before and after each operation")
    p.add_argument("--out", default=None, help="JSON results (default bench/results/...)")
    args = p.parse_args(argv)
    if args.quick:
        args.seed_vectors, args.move_vectors, args.settle_s = 2_000, 20_000, 2.0
    return args


def main(argv=None) -> int:
    args = _parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    data_dir = tempfile.mkdtemp(prefix="bench-rebalance-")
    cluster = LocalCluster(data_dir, nodes=2, meta=1)
    extra: list[subprocess.Popen] = []
    report = {"started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "args": vars(args), "targets": TARGETS, "parts": {}}
    try:
        _log(f"starting a 1-meta, 2-node cluster in {data_dir}")
        cluster.start()
        if "rebalance" in parts or "drain" in parts:
            report["parts"]["rebalance"] = part_rebalance(cluster, args, extra)
        if "move" in parts:
            report["parts"]["move"] = part_move(cluster, args)
        if "drain" in parts:
            report["parts"]["drain"] = part_drain(cluster, args)
    finally:
        for process in extra:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        cluster.stop()
    print(render(report))
    write_report(report, args.out, "rebalance")
    return 0


def write_report(report: dict, out: str | None, name: str) -> None:
    """Writes `report` as JSON to `out`, or to bench/results/<name>-<time>.json."""
    out = out or os.path.join(HERE, "results", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    _log(f"results in {out}")


if __name__ == "__main__":
    sys.exit(main())
