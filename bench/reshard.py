"""Shard split benchmark (issue 12, "Must show": a shard split under load), through a real
local cluster.

    python -m bench.reshard [--quick] [--seed-vectors N] [--queries Q]

One `tributary up --nodes 2 --meta 1` cluster (the box has 2 cores). A dataset of 2 shards x 2
copies, `--seed-vectors` x 128 (cosine), is seeded; recall@10 of searches through the router is
measured against exact neighbours (brute force over every vector it holds). Then a steady load
runs (one writer posting batches of 10, values kept; one reader doing GETs and searches) while
`tributary admin datasets reshard NAME --shards 4 --wait` splits it; the load goes on for
`--settle-s` after the switch. Reported: client requests failed (target 0), acknowledged writes
lost (a full listing afterwards; target 0), the time to the switch, the time until every moved
row is purged, and recall@10 before and after against the exact neighbours of what the dataset
then holds: with `exact: true` (a scan of every row: target unchanged, +-0.01, which fails if
a row is lost or answered twice), and for HNSW at ef_search 256 and at the default (reported:
four smaller graphs each return their top 10, so it rises rather than stays).

Progress goes to stderr, the table to stdout, every measurement to the JSON (`--out`). There are
no assertions: a missed target is a figure to report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time

import httpx
import numpy as np

from bench.e2e import LocalCluster
from bench.rebalance import DIMS, Load, _log, admin, create, ingest, wait_until, write_report
from bench.replication import list_ids
from bench.timing import machine

NAME = "split"
# A search wide enough that recall measures the data (every row present once), not how far
# the graph walk goes; the default ef is reported beside it.
WIDE_EF = 256
TARGETS = {"requests_failed": 0, "acked_writes_lost": 0, "recall_change_max": 0.01}


class ValuesLoad(Load):
    """bench.rebalance.Load whose writer keeps the values of what it writes (for the exact
    neighbours afterwards): the same generator, so ids and values line up."""

    def __init__(self, *args):
        super().__init__(*args)
        self.values: dict[str, list[float]] = {}

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
                    self.values.update(zip(ids, values))


def seeded_values(count: int) -> dict[str, list[float]]:
    """What bench.rebalance.ingest wrote with seed 0 and prefix "s" (batches of 1,000)."""
    rng = np.random.default_rng(0)
    values: dict[str, list[float]] = {}
    for offset in range(0, count, 1_000):
        n = min(1_000, count - offset)
        batch = rng.standard_normal((n, DIMS), dtype=np.float32)
        values.update((f"s{offset + i}", v) for i, v in enumerate(batch.tolist()))
    return values


def recall_at_10(rest: str, vectors: dict[str, list[float]], queries: int,
                 ef_search: int = 0, exact: bool = False) -> float:
    ids = list(vectors)
    matrix = np.asarray([vectors[i] for i in ids], dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    rng = np.random.default_rng(11)
    hits = 0
    with httpx.Client(base_url=rest, timeout=60) as client:
        for _ in range(queries):
            query = rng.standard_normal(DIMS).astype(np.float32)
            truth = {ids[j] for j in np.argsort(-(matrix @ (query / np.linalg.norm(query))))[:10]}
            found = client.post(f"/datasets/{NAME}/search", json={
                "query_vector": query.tolist(), "exact": exact,
                "options": {"top_k": 10, "ef_search": ef_search}}).json()["results"]
            hits += len(truth & {h["vector"]["id"] for h in found})
    return hits / (queries * 10)


def purged(rest: str, expected: int) -> bool:
    """Every moved row is gone from its old shard: the dataset's count (summed over shards)
    is the number of distinct rows again."""
    with httpx.Client(base_url=rest, timeout=60) as client:
        stats = client.get(f"/datasets/{NAME}/stats").json()
    return int(stats.get("vector_count", stats.get("total_vectors", -1))) == expected


def run(cluster: LocalCluster, args) -> dict:
    with httpx.Client(base_url=cluster.rest, timeout=120) as client:
        create(client, NAME, 2, 2)      # the default metric, cosine (recall_at_10 uses it)
        _log(f"seeding {args.seed_vectors} x {DIMS}")
        ingest(client, NAME, args.seed_vectors, "s")
    seeds = seeded_values(args.seed_vectors)
    before = recall_at_10(cluster.rest, seeds, args.queries)
    before_wide = recall_at_10(cluster.rest, seeds, args.queries, WIDE_EF)
    before_exact = recall_at_10(cluster.rest, seeds, args.queries, exact=True)
    _log(f"recall@10 before the split: {before:.4f} (ef_search {WIDE_EF}: {before_wide:.4f}, "
         f"exact: {before_exact:.4f})")
    with ValuesLoad(cluster.rest, NAME, args.seed_vectors, "w") as load:
        time.sleep(args.settle_s)
        started = time.monotonic()
        admin(cluster, "datasets", "reshard", NAME, "--shards", "4", "--wait")
        switch_s = time.monotonic() - started
        _log(f"switched to 4 shards in {switch_s:.1f} s")
        time.sleep(args.settle_s)
    total = args.seed_vectors + len(load.acked)
    purge_started = time.monotonic()
    try:
        wait_until(lambda: purged(cluster.rest, total), 120, "moved rows purged")
        purge_s = round(time.monotonic() - started, 1)
    except TimeoutError:
        purge_s = None
    _log(f"moved rows purged {purge_s} s after the command "
         f"({time.monotonic() - purge_started:.1f} s after the load stopped)")
    with httpx.Client(base_url=cluster.rest, timeout=300) as client:
        held = list_ids(client, NAME)
    lost = [i for i in load.acked if i not in held]
    everything = {**seeds, **load.values}
    after = recall_at_10(cluster.rest, everything, args.queries)
    after_wide = recall_at_10(cluster.rest, everything, args.queries, WIDE_EF)
    after_exact = recall_at_10(cluster.rest, everything, args.queries, exact=True)
    _log(f"recall@10 after the split: {after:.4f} (ef_search {WIDE_EF}: {after_wide:.4f}, "
         f"exact: {after_exact:.4f})")
    return {**load.summary(), "acked_writes_lost": len(lost), "lost_sample": lost[:5],
            "seed_vectors": args.seed_vectors, "rows_after": len(held),
            "switch_s": round(switch_s, 1), "purged_after_s": purge_s,
            "recall_before": round(before, 4), "recall_after": round(after, 4),
            "recall_change": round(after - before, 4),
            "recall_before_wide_ef": round(before_wide, 4),
            "recall_after_wide_ef": round(after_wide, 4),
            "recall_change_wide_ef": round(after_wide - before_wide, 4),
            "recall_before_exact": round(before_exact, 4),
            "recall_after_exact": round(after_exact, 4),
            "recall_change_exact": round(after_exact - before_exact, 4)}


def render(report: dict) -> str:
    r = report["reshard"]
    rows = [("Failed client requests during a 2 -> 4 split under load",
             f"{r['requests_failed']} of {r['requests']}", "0"),
            ("Acknowledged writes lost", str(r["acked_writes_lost"]), "0"),
            ("Recall@10 before -> after, `exact: true` search (every row once)",
             f"{r['recall_before_exact']:.4f} -> {r['recall_after_exact']:.4f} "
             f"({r['recall_change_exact']:+.4f})", "+-0.01"),
            (f"Recall@10 before -> after, ef_search {WIDE_EF}",
             f"{r['recall_before_wide_ef']:.4f} -> {r['recall_after_wide_ef']:.4f} "
             f"({r['recall_change_wide_ef']:+.4f})", "reported (not lower)"),
            ("Recall@10 before -> after, default ef_search",
             f"{r['recall_before']:.4f} -> {r['recall_after']:.4f} ({r['recall_change']:+.4f})",
             "reported (more shards: more candidates)"),
            ("Command to switch (--wait)", f"{r['switch_s']} s", "reported"),
            ("Command to every moved row purged", f"{r['purged_after_s']} s", "reported")]
    width = max(len(a) for a, _, _ in rows)
    return "\n".join(f"{a:<{width}}  {b:<28}  target {c}" for a, b, c in rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reshard",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--seed-vectors", type=int, default=20_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--settle-s", type=float, default=5.0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.seed_vectors, args.queries, args.settle_s = 3_000, 100, 2.0
    data_dir = tempfile.mkdtemp(prefix="bench-reshard-")
    cluster = LocalCluster(data_dir, nodes=2, meta=1)
    report = {"started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "args": vars(args), "targets": TARGETS}
    try:
        _log(f"starting a 1-meta, 2-node cluster in {data_dir}")
        cluster.start()
        report["reshard"] = run(cluster, args)
    finally:
        cluster.stop()
    print(render(report))
    write_report(report, args.out, "reshard")
    return 0


if __name__ == "__main__":
    sys.exit(main())
