"""Acknowledged ingest rate as a shard grows: vectors/s per block of rows, so a per-write cost
that grows with the shard shows as falling blocks. Not part of `make bench` (1M x 128 takes
minutes); run it directly:

    python -m bench.ingest_growth [--size 1000000] [--block 250000] [--batch 500]
                                  [--mode shard|grpc] [--concurrency 4] [--shards 2]
                                  [--packed]

`--mode shard` (default) writes into one ShardReplica in this process, as a node's primary
does: each batch is appended to an op log (node/oplog.py, fsynced) and then applied with its
log position, so the store group commits (checks, maps, the pending buffer, background Deep
Lake commits; the HNSW graph is built behind by the replica's indexer thread). A tree whose
ShardReplica.write takes no position commits each batch instead. `--mode grpc` starts a local cluster (`tributary up`,
2 nodes) and sends deeplake.v1 InsertVectors batches from `--concurrency` threads; a batch
counts when its acknowledgement arrives, i.e. when it is durable; `--packed` sends each
batch's values in `packed_values` (one float32 block) instead of per vector. With 2 shards (the
default) every batch spans both, so every batch is a 2PC txn. Both print each block's
vectors/s, the overall rate and last/first, and write JSON (`--out`).

The targets (DESIGN.md): >= 20k vectors/s overall from 0 to 1M x 128, and the last 250k block
at >= 0.8x the first.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import sys
import tempfile
import threading
import time

import numpy as np

from bench.timing import run_threads


def _vectors(rng: np.random.Generator, count: int, dims: int) -> np.ndarray:
    data = rng.standard_normal((count, dims)).astype(np.float32)
    return data / np.linalg.norm(data, axis=1, keepdims=True)


def _report_block(blocks: list[dict], rows: int, block_started: float, block_rows: int,
                  extra: str = "") -> float:
    now = time.perf_counter()
    rate = block_rows / (now - block_started)
    blocks.append({"rows": rows, "vectors_per_s": round(rate)})
    print(f"  up to {rows:>9,}: {rate:>8,.0f} acked vectors/s{extra}", file=sys.stderr,
          flush=True)
    return now


def run_shard(size: int, block: int, batch: int, dims: int, work: str,
              wait_graph: bool) -> dict:
    import inspect

    from node.oplog import LoggedOp, OpLog
    from proto import deeplake_service_pb2 as pb
    from proto import node_pb2
    from shard.records import ExistingPolicy, VectorRecord
    from shard.replica import ShardReplica
    from tributary import limits
    from tributary.validation import pack_values
    replica = ShardReplica(os.path.join(work, "shard"), dims, "cosine")
    oplog = OpLog(os.path.join(work, "shard", "oplog"), limits.replication_segment_ops_max,
                  limits.replication_log_ops_max)
    positioned = "position" in inspect.signature(ShardReplica.write).parameters
    rng = np.random.default_rng(0)
    blocks: list[dict] = []
    commit_s: list[float] = []
    # Deep Lake commits as the replica reports them (one per write, or fewer with group commit).
    deeplake_commits: list[float] = []
    ShardReplica.commit_observer = deeplake_commits.append
    started = block_started = time.perf_counter()
    try:
        for start in range(0, size, batch):
            end = min(size, start + batch)
            data = _vectors(rng, end - start, dims)
            records = [VectorRecord(id=f"v{i}", values=row) for i, row in
                       zip(range(start, end), data)]
            t = time.perf_counter()
            seq = start // batch + 1
            op = node_pb2.ReplicatedOp(seq=seq, term=1, write=node_pb2.WriteRequest(
                upserts=[pb.Vector(id=r.id) for r in records], upsert_values=pack_values(data),
                existing=node_pb2.EXISTING_OVERWRITE))
            oplog.append([LoggedOp(seq, 1, op.SerializeToString())])
            if positioned:
                replica.write(records, [], ExistingPolicy.OVERWRITE, position=(seq, 1))
            else:
                replica.write(records, [], ExistingPolicy.OVERWRITE)
            commit_s.append(time.perf_counter() - t)
            if end % block == 0 or end == size:
                median = float(np.median(commit_s)) * 1000
                commits = len(deeplake_commits)
                commit_ms = float(np.median(deeplake_commits)) * 1000 if commits else 0.0
                block_started = _report_block(
                    blocks, end, block_started, block if end % block == 0 else end % block,
                    f"   median write {median:.1f} ms, {commits} Deep Lake commits (median "
                    f"{commit_ms:.1f} ms), {replica.pending_count():,} not yet in the graph")
                blocks[-1].update(median_write_ms=round(median, 2), deeplake_commits=commits,
                                  median_commit_ms=round(commit_ms, 2),
                                  not_in_graph=replica.pending_count())
                commit_s = []
                deeplake_commits.clear()
        elapsed = time.perf_counter() - started
        behind = replica.pending_count()
        graph_s = None
        if wait_graph:
            graph_wait = time.perf_counter()
            replica.wait_indexed(timeout_s=3600)
            graph_s = time.perf_counter() - graph_wait
    finally:
        replica.close()
    return {"blocks": blocks, "elapsed_s": elapsed, "not_in_graph_at_end": behind,
            "graph_catch_up_s": graph_s}


def _index_backlog(rest: str) -> int | None:
    """Vectors acknowledged but not yet in any node's HNSW graph (the router's deep health)."""
    import httpx
    try:
        checks = httpx.get(f"{rest}/health", timeout=30).json()["checks"]
        return int(checks["index_backlog"]["pending_vectors"])
    except (httpx.HTTPError, KeyError, ValueError, TypeError):
        return None


def run_grpc(size: int, block: int, batch: int, dims: int, work: str, concurrency: int,
             shards: int, nodes: int, packed: bool = False) -> dict:
    import grpc
    from bench.e2e import _GRPC_OPTIONS, LocalCluster
    from proto import deeplake_service_pb2 as pb
    from proto import deeplake_service_pb2_grpc as pb_grpc

    cluster = LocalCluster(os.path.join(work, "cluster"), nodes=nodes)
    cluster.start()
    try:
        channel = grpc.insecure_channel(cluster.grpc_target, options=_GRPC_OPTIONS)
        metadata = ()     # a loopback cluster started without --api-key has auth off
        datasets = pb_grpc.DatasetServiceStub(channel)
        datasets.CreateDataset(pb.CreateDatasetRequest(
            name="growth", dimensions=dims, metric_type="cosine", index_type="hnsw",
            shard_count=shards, replication_factor=1), metadata=metadata, timeout=60)
        vectors = pb_grpc.VectorServiceStub(channel)
        rng = np.random.default_rng(0)
        # Requests are built before the clock starts (one batch ahead per thread is enough
        # to keep encoding out of the measurement only roughly: build them all up front).
        requests: queue.Queue = queue.Queue()
        for start in range(0, size, batch):
            end = min(size, start + batch)
            data = _vectors(rng, end - start, dims)
            if packed:
                request = pb.InsertVectorsRequest(
                    dataset_id="growth", vectors=[pb.Vector(id=f"v{i}") for i in
                                                  range(start, end)],
                    packed_values=data.astype("<f4").tobytes())
            else:
                request = pb.InsertVectorsRequest(
                    dataset_id="growth",
                    vectors=[pb.Vector(id=f"v{i}", values=row.tolist()) for i, row in
                             zip(range(start, end), data)])
            requests.put((end - start, request))
        acked = [0]
        lock = threading.Lock()
        blocks: list[dict] = []
        marks = {"block_started": time.perf_counter(), "next": block}
        errors: list[BaseException] = []

        def worker(_: int) -> None:
            while True:
                try:
                    count, request = requests.get_nowait()
                except queue.Empty:
                    return
                try:
                    vectors.InsertVectors(request, metadata=metadata, timeout=120)
                except BaseException as exc:  # noqa: BLE001 - reported after the run
                    errors.append(exc)
                    return
                with lock:
                    acked[0] += count
                    if acked[0] >= marks["next"]:
                        marks["block_started"] = _report_block(
                            blocks, marks["next"], marks["block_started"], block)
                        marks["next"] += block

        marks["block_started"] = time.perf_counter()
        elapsed = run_threads(worker, concurrency)
        if errors:
            raise RuntimeError(f"{len(errors)} batches failed; first: {errors[0]!r}")
        return {"blocks": blocks, "elapsed_s": elapsed,
                "not_in_graph_at_end": _index_backlog(cluster.rest)}
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--block", type=int, default=250_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--dims", type=int, default=128)
    parser.add_argument("--mode", choices=("shard", "grpc"), default="shard")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--packed", action="store_true",
                        help="grpc mode: send values in InsertVectorsRequest.packed_values")
    parser.add_argument("--wait-graph", action="store_true",
                        help="shard mode: also time the indexer's catch-up after the last ack")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--out", default="bench/results/ingest_growth.json")
    args = parser.parse_args()
    work = args.work_dir or tempfile.mkdtemp(prefix="tributary-growth-")
    print(f"{args.mode}: {args.size:,} x {args.dims} in batches of {args.batch}, blocks of "
          f"{args.block:,} (work dir {work})", file=sys.stderr, flush=True)
    try:
        if args.mode == "shard":
            result = run_shard(args.size, args.block, args.batch, args.dims, work,
                               args.wait_graph)
        else:
            result = run_grpc(args.size, args.block, args.batch, args.dims, work,
                              args.concurrency, args.shards, args.nodes, args.packed)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    rates = [b["vectors_per_s"] for b in result["blocks"]]
    report = {"date": time.strftime("%Y-%m-%d"), "mode": args.mode, "size": args.size,
              "shards": args.shards, "packed": args.packed,
              "load_average": [round(x, 1) for x in os.getloadavg()],
              "dims": args.dims, "batch": args.batch, "block": args.block,
              "overall_vectors_per_s": round(args.size / result["elapsed_s"]),
              "last_over_first": round(rates[-1] / rates[0], 2) if rates else None, **result}
    print(json.dumps({k: v for k, v in report.items()}, indent=2))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
