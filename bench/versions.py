"""Latency of a search at an old version (shard/versions.py: exact scan of the version's rows).
Not part of `make bench`; run it directly:

    python -m bench.versions [--sizes 10000,100000] [--dims 128] [--queries 200] [--e2e]

Per size, one shard replica gets `size` rows, a version tag, then 10% more rows (so the present
differs from the version). It prints the first search at the version (opening the tagged commit
and loading its vectors into one matrix), then p50 / p99 of top-10 searches at the version, and,
for scale, of an exact search of the present and of an HNSW search of the present.
With --e2e it also runs a local cluster (2 nodes, 2 shards) and times POST .../search with
`as_of_version` over REST against the same search without it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np


def _percentiles(samples: list[float]) -> dict:
    ms = np.asarray(samples) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def shard_level(size: int, dims: int, queries: int) -> dict:
    from shard.records import VectorRecord
    from shard.replica import ShardReplica
    from shard.versions import VersionView

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as root:
        replica = ShardReplica(f"{root}/shard", dims, "l2", "hnsw")
        for start in range(0, size, 10_000):
            data = rng.standard_normal((min(10_000, size - start), dims)).astype(np.float32)
            replica.write([VectorRecord(id=f"v{start + i}", values=row)
                           for i, row in enumerate(data)], [])
        replica.mark_version("bench")
        extra = rng.standard_normal((size // 10, dims)).astype(np.float32)
        replica.write([VectorRecord(id=f"x{i}", values=row) for i, row in enumerate(extra)], [])
        replica.wait_indexed()
        probes = rng.standard_normal((queries, dims)).astype(np.float32)

        started = time.perf_counter()
        view = VersionView(replica.store_url, "bench", dims, "l2")
        view.search(probes[0], 10)
        first_s = time.perf_counter() - started

        def timed(search) -> list[float]:
            out = []
            for probe in probes:
                t0 = time.perf_counter()
                search(probe)
                out.append(time.perf_counter() - t0)
            return out

        as_of = timed(lambda q: view.search(q, 10))
        exact_now = timed(lambda q: replica.search(q, 10, exact=True))
        hnsw_now = timed(lambda q: replica.search(q, 10))
        replica.close()
    return {"vectors": size, "dims": dims, "first_as_of_search_ms": round(first_s * 1000, 1),
            "as_of": _percentiles(as_of), "exact_now": _percentiles(exact_now),
            "hnsw_now": _percentiles(hnsw_now)}


def end_to_end(size: int, dims: int, queries: int) -> dict:
    import sys
    import httpx
    sys.path.insert(0, "tests/integration")
    from cluster import Cluster

    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as root:
        cluster = Cluster(root, meta=3, nodes=2).start()
        try:
            with httpx.Client(base_url=cluster.rest, timeout=120) as http:
                assert http.post("/datasets", json={"name": "b", "dimensions": dims,
                                                    "metric_type": "l2", "shard_count": 2,
                                                    "replication_factor": 1}).status_code == 201
                for start in range(0, size, 2_000):
                    data = rng.standard_normal((min(2_000, size - start), dims)).round(4)
                    r = http.post("/datasets/b/vectors", json={"vectors": [
                        {"id": f"v{start + i}", "values": row.tolist()}
                        for i, row in enumerate(data)]})
                    assert r.status_code == 201, r.text
                made = http.post("/datasets/b/versions", json={"tag": "bench"}).json()
                probes = rng.standard_normal((queries, dims)).round(4).tolist()
                started = time.perf_counter()
                http.post("/datasets/b/search", json={"query_vector": probes[0],
                                                      "as_of_version": "bench"})
                first_s = time.perf_counter() - started

                def timed(extra: dict) -> list[float]:
                    out = []
                    for probe in probes:
                        t0 = time.perf_counter()
                        r = http.post("/datasets/b/search", json={
                            "query_vector": probe, "options": {"top_k": 10}, **extra})
                        out.append(time.perf_counter() - t0)
                        assert r.status_code == 200, r.text
                    return out
                as_of = timed({"as_of_version": "bench"})
                exact_now = timed({"exact": True})
                now = timed({})
        finally:
            cluster.stop()
    return {"vectors": size, "dims": dims, "shards": 2,
            "version_commit_pause_ms": made["commit_pause_ms"],
            "first_as_of_search_ms": round(first_s * 1000, 1), "rest_as_of": _percentiles(as_of),
            "rest_exact_now": _percentiles(exact_now), "rest_hnsw_now": _percentiles(now)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--dims", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--e2e", action="store_true")
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        print(json.dumps({"shard": shard_level(size, args.dims, args.queries)}), flush=True)
        if args.e2e:
            print(json.dumps({"e2e": end_to_end(size, args.dims, args.queries)}), flush=True)


if __name__ == "__main__":
    main()
