"""One shard move, measured end to end (issue 12, "Must show": move a shard of 1M x 128 vectors
between two local nodes in under 2 minutes). Not part of `make bench`; run it directly:

    python -m bench.move [--vectors 1000000] [--repeat 1] [--out bench/results/move-1m.json]

It starts `tributary up --nodes 2 --meta 1` the way bench/rebalance.py does, creates a dataset
of ONE shard with ONE copy (l2, 128 dims), and loads N vectors into it with the gRPC loader of
bench/backup.py (batches of batch_vectors_max, each one acknowledged one-phase write). Once the
source copy is settled (in sync, lag 0, vector_count == N, and its graph built: the dataset's
pending_index_vectors 0, waited for at most `--index-wait-s`), it runs

    tributary admin shards move bench 0 --from SOURCE --to TARGET

and times from the command's start to the move's completion: the move gone from
`GET /admin/moves`, the shard's only copy the target's, and the source's shard directory gone
from its disk. The figures: seconds, vectors/s, the bytes the target received (from its
"installed a N-byte snapshot" log line) and its shard directory's size, the box's load average
before, during (sampled) and after, and the checks after the move: the new copy's
vector_count, a sample of vectors read back and compared bit for bit with the loaded values,
and recall@10 of searches against exact neighbours, before the move, right after it and
`--recheck-s` later. With
`--repeat 2` the shard moves back and forth, one figure per move. Progress goes to stderr,
the JSON to stdout and `--out`. There are no assertions: a missed target is a figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import numpy as np

from bench.backup import _ingest_grpc
from bench.e2e import LocalCluster
from bench.timing import machine
from shard.replica import directory_bytes
from tributary import limits

DIMS = 128
DATASET = "bench"           # the name bench/backup.py's loader writes to
TARGET_S = 120.0


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _loadavg() -> list[float]:
    return [round(x, 1) for x in os.getloadavg()]


def loaded_vectors(count: int) -> np.ndarray:
    """The values bench.backup._ingest_grpc wrote for a 1-shard dataset: ids v0..v<count-1> in
    order, batch by batch from default_rng(0)."""
    rng = np.random.default_rng(0)
    batch = limits.batch_vectors_max
    return np.concatenate([rng.random((min(batch, count - start), DIMS), dtype=np.float32)
                           for start in range(0, count, batch)])


def exact_neighbours(data: np.ndarray, queries: np.ndarray, k: int) -> list[list[int]]:
    """Exact l2 top-k row numbers, in blocks of rows so the distance matrix stays small."""
    best_d = np.full((len(queries), 0), np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    q_sq = (queries ** 2).sum(1)[:, None]
    for start in range(0, len(data), 200_000):
        block = data[start:start + 200_000]
        d = q_sq - 2 * queries @ block.T + (block ** 2).sum(1)[None, :]
        top = np.argpartition(d, k, axis=1)[:, :k]
        best_d = np.concatenate([best_d, np.take_along_axis(d, top, 1)], 1)
        best_i = np.concatenate([best_i, top + start], 1)
    order = np.argsort(best_d, axis=1)[:, :k]
    return np.take_along_axis(best_i, order, 1).tolist()


def recall_at_10(client: httpx.Client, queries: np.ndarray, truth: list[list[int]]) -> float:
    hits = 0
    for query, exact in zip(queries, truth):
        r = client.post(f"/datasets/{DATASET}/search", timeout=120, json={
            "query_vector": query.tolist(), "options": {"top_k": 10}})
        r.raise_for_status()
        found = {int(hit["vector"]["id"][1:]) for hit in r.json()["results"]}
        hits += len(found & set(exact))
    return round(hits / (10 * len(queries)), 4)


def sample_matches(client: httpx.Client, data: np.ndarray, sample: int, seed: int) -> dict:
    """Reads `sample` random ids back and compares their values with the loaded ones."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(data), size=min(sample, len(data)), replace=False)
    missing, different = [], []
    for row in rows.tolist():
        r = client.get(f"/datasets/{DATASET}/vectors/v{row}", timeout=60)
        if r.status_code == 404:
            missing.append(row)
            continue
        r.raise_for_status()
        doc = r.json()
        values = np.asarray((doc.get("vector") or doc)["values"], dtype=np.float32)
        if not np.array_equal(values, data[row]):
            different.append(row)
    return {"read": len(rows), "missing": len(missing), "different": len(different),
            "missing_sample": missing[:5], "different_sample": different[:5]}


def shard_state(admin: httpx.Client) -> dict:
    r = admin.get(f"/admin/datasets/{DATASET}", timeout=60)
    r.raise_for_status()
    return r.json()["shards"][0]


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 0.25):
    deadline = time.monotonic() + timeout_s
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (httpx.HTTPError, KeyError, ValueError) as exc:   # keep polling to the deadline
            last_error = exc
        time.sleep(interval_s)
    raise TimeoutError(f"{what}: not within {timeout_s:.0f} s (last error {last_error!r})")


def settled(admin: httpx.Client, count: int) -> dict | None:
    """The shard when its one copy is in sync, has no lag and holds every loaded vector."""
    shard = shard_state(admin)
    copies = shard["copies"]
    if len(copies) == 1 and copies[0].get("in_sync") and copies[0].get("lag") == 0 and \
            copies[0].get("vector_count") == count:
        return shard
    return None


def index_backlog(client: httpx.Client) -> int:
    """Vectors of the dataset written but not yet in an HNSW graph (searched exactly meanwhile)."""
    r = client.get(f"/datasets/{DATASET}/stats", timeout=60)
    r.raise_for_status()
    return int(r.json()["stats"]["pending_index_vectors"])


def shard_dir(data_dir: str, node: str) -> str | None:
    found = glob.glob(os.path.join(data_dir, node, "shards", "*", "0"))
    return found[0] if found else None


def snapshot_bytes(data_dir: str, node: str, since: int) -> int | None:
    """The size in the target's last "installed a N-byte snapshot" log line (bytes received)
    written after offset `since` of its log."""
    path = os.path.join(data_dir, "logs", f"{node}.log")
    try:
        with open(path, errors="replace") as f:
            f.seek(since)
            found = re.findall(r"installed a (\d+)-byte snapshot", f.read())
    except OSError:
        return None
    return int(found[-1]) if found else None


def log_size(data_dir: str, node: str) -> int:
    try:
        return os.path.getsize(os.path.join(data_dir, "logs", f"{node}.log"))
    except OSError:
        return 0


class LoadSampler:
    """The 1-minute load average every second while a move runs."""

    def __init__(self):
        self.samples: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self.stop.wait(1.0)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)

    def summary(self) -> dict:
        s = self.samples or [float("nan")]
        return {"min": round(min(s), 1), "mean": round(sum(s) / len(s), 1),
                "max": round(max(s), 1)}


def move_once(cluster: LocalCluster, admin: httpx.Client, count: int, source: str,
              target: str, timeout_s: float) -> dict:
    """One move, from the CLI command to its completion; `admin` is a client of the router's
    root (the admin routes are not under /api/v1)."""
    source_dir = shard_dir(cluster.data_dir, source)
    source_bytes = directory_bytes(source_dir) if source_dir else None
    log_offset = log_size(cluster.data_dir, target)
    _log(f"move: {DATASET}/0 ({count:,} vectors, {source_bytes} bytes on disk) "
         f"{source} -> {target}, load {_loadavg()}")
    load_before = _loadavg()
    with LoadSampler() as sampler:
        started = time.monotonic()
        cli = subprocess.run(
            [sys.executable, "-m", "tributary.cli", "admin", "shards", "move", DATASET, "0",
             "--from", source, "--to", target, "--json", "--url",
             cluster.rest.removesuffix("/api/v1")], capture_output=True, text=True, timeout=300)
        cli_s = time.monotonic() - started
        if cli.returncode != 0:
            raise RuntimeError(f"tributary admin shards move: {cli.stderr.strip()}")
        marks: dict[str, float] = {}

        def done() -> bool:
            now = time.monotonic() - started
            if "moves_empty" not in marks and not admin.get(
                    "/admin/moves", timeout=60).json()["moves"]:
                marks["moves_empty"] = now
            if "placement" not in marks:
                copies = shard_state(admin)["copies"]
                if [c["node_id"] for c in copies] == [target] and copies[0].get("in_sync"):
                    marks["placement"] = now
            if "source_dropped" not in marks and (source_dir is None
                                                  or not os.path.exists(source_dir)):
                marks["source_dropped"] = now
            return len(marks) == 3

        wait_until(done, timeout_s, "the move's completion", interval_s=0.1)
        seconds = time.monotonic() - started
    load_after = _loadavg()
    shard = shard_state(admin)
    target_dir = shard_dir(cluster.data_dir, target)
    result = {
        "source": source, "target": target, "seconds": round(seconds, 1),
        "vectors_per_s": round(count / seconds),
        "cli_s": round(cli_s, 1),
        "moves_list_empty_s": round(marks["moves_empty"], 1),
        "placement_target_only_s": round(marks["placement"], 1),
        "source_dir_dropped_s": round(marks["source_dropped"], 1),
        "bytes_received": snapshot_bytes(cluster.data_dir, target, log_offset),
        "source_dir_bytes_before": source_bytes,
        "target_dir_bytes_after": directory_bytes(target_dir) if target_dir else None,
        "primary_after": shard["primary"],
        "vector_count_after": shard["copies"][0].get("vector_count"),
        "loadavg_before": load_before, "loadavg_during_1m": sampler.summary(),
        "loadavg_after": load_after}
    _log(f"move: {result}")
    return result


def run(args) -> dict:
    data_dir = tempfile.mkdtemp(prefix="bench-move-", dir=args.dir)
    cluster = LocalCluster(data_dir, nodes=2, meta=1)
    report = {"started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "vectors": args.vectors, "dims": DIMS, "target_s": TARGET_S}
    try:
        _log(f"starting a 1-meta, 2-node cluster in {data_dir}")
        cluster.start()
        with httpx.Client(base_url=cluster.rest, timeout=120) as client, \
                httpx.Client(base_url=cluster.rest.removesuffix("/api/v1"), timeout=120) as admin:
            r = client.post("/datasets", json={"name": DATASET, "dimensions": DIMS,
                                               "metric_type": "l2", "shard_count": 1,
                                               "replication_factor": 1})
            if r.status_code != 201:
                raise RuntimeError(f"create: {r.status_code} {r.text[:300]}")
            _log(f"loading {args.vectors:,} x {DIMS} over gRPC, load {_loadavg()}")
            report["loadavg_before_ingest"] = _loadavg()
            report["ingest_s"] = round(_ingest_grpc(cluster.grpc_target, args.vectors, DIMS, 1),
                                       1)
            started = time.monotonic()
            shard = wait_until(lambda: settled(admin, args.vectors), 1800, "source settled")
            report["settle_s"] = round(time.monotonic() - started, 1)
            # The graph is built in the background after the acks; a move of a copy whose graph
            # is not built yet moves less (the graph file) and leaves the build to the target.
            try:
                wait_until(lambda: index_backlog(client) == 0, args.index_wait_s,
                           "index backlog drained", interval_s=2.0)
            except TimeoutError:
                _log(f"index backlog not drained in {args.index_wait_s:.0f} s; moving anyway")
            report["index_wait_s"] = round(time.monotonic() - started, 1)
            report["loadavg_after_ingest"] = _loadavg()
            _log(f"loaded in {report['ingest_s']} s, settled {report['settle_s']} s later")
            data = loaded_vectors(args.vectors)
            queries = np.random.default_rng(99).random((args.queries, DIMS), dtype=np.float32)
            truth = exact_neighbours(data, queries, 10)
            report["recall_at_10_before"] = recall_at_10(client, queries, truth)
            nodes = [n["node_id"] for n in admin.get("/admin/nodes").json()["nodes"]]
            source = shard["primary"]
            target = next(n for n in nodes if n != source)
            report["moves"] = []
            for i in range(args.repeat):
                backlog = index_backlog(client)
                move = move_once(cluster, admin, args.vectors, source, target, args.timeout_s)
                move["index_backlog_before"] = backlog
                move["index_backlog_after"] = index_backlog(client)
                move["recall_at_10_after"] = recall_at_10(client, queries, truth)
                time.sleep(args.recheck_s)     # a drop that is only transient shows here
                move[f"recall_at_10_{args.recheck_s:g}s_later"] = recall_at_10(client, queries,
                                                                             truth)
                move["sample_read_back"] = sample_matches(client, data, args.sample, seed=i)
                move["every_vector_present"] = (move["vector_count_after"] == args.vectors and
                                                move["sample_read_back"]["missing"] == 0)
                report["moves"].append(move)
                source, target = target, source
    finally:
        cluster.stop()
        report["loadavg_end"] = _loadavg()
        if not args.keep:
            shutil.rmtree(data_dir, True)
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.move", description=__doc__.split("\n")[0])
    p.add_argument("--vectors", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=1, help="moves, back and forth")
    p.add_argument("--queries", type=int, default=200, help="recall@10 queries")
    p.add_argument("--recheck-s", type=float, default=15.0,
                   help="seconds after a move to measure recall again")
    p.add_argument("--sample", type=int, default=1_000, help="vectors read back after a move")
    p.add_argument("--index-wait-s", type=float, default=1800.0,
                   help="at most this long for the source's graph to be built before the move")
    p.add_argument("--timeout-s", type=float, default=1200.0, help="one move at most")
    p.add_argument("--dir", default=None, help="parent of the cluster's data dir")
    p.add_argument("--keep", action="store_true", help="keep the cluster's data dir")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    report = run(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
