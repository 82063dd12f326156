"""Control-plane benchmark (issue 14): the meta group at catalog scale, through real clusters.

    python -m bench.control_plane [--quick] [--out bench/results/control_plane.json]

Two `tributary up` clusters (3 meta members, 2 nodes, 1 router), one after the other:

- small: 10 datasets. Meta leader CPU and bytes sent (its TCP sockets' tcp_info bytes_sent,
  Raft and gRPC) per multi-shard batch (2PC) over `--batches` batches, less what the leader
  spends when idle (measured over 10 s just before, and reported too); then `--sigstop-runs` times:
  SIGSTOP of the meta leader, seconds until a dataset create through the router answers 201,
  SIGCONT, wait until healthy. Target: median <= 3 s.
- large: 10,000 datasets over 1,000 tenants (proposed straight to the meta group). The same
  per-batch figures (target: no growth with the catalog); then 20 watching clients (catalog
  caches in this process, spread over the members) and `--changes` catalog changes: the time
  from proposing a change to each client holding it (target: p99 <= 200 ms); then 1,000
  lookups of missing dataset names through the router: Raft entries appended (target: 0).

Progress goes to stderr, the table to stdout, every figure to the JSON (`--out`). There are no
assertions: a missed target is a figure to report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid

import grpc
import httpx

from bench.e2e import LocalCluster, _cpu_seconds
from bench.timing import percentile
from consensus import commands
from proto import meta_pb2
from tributary import cluster_auth, errors, local_secrets

HERE = os.path.dirname(os.path.abspath(__file__))


def _log(message: str) -> None:
    print(f"[control_plane] {message}", file=sys.stderr, flush=True)


def _token(cluster: LocalCluster):
    secret = os.path.join(cluster.data_dir, local_secrets.SECRETS_DIR,
                          local_secrets.CLUSTER_SECRET)
    return cluster_auth.load(secret) if os.path.exists(secret) else None


def _meta_addresses(cluster: LocalCluster) -> list[str]:
    return [f"127.0.0.1:{cluster.internal_base + 10 + i}" for i in range(cluster.meta)]


def _statuses(cluster: LocalCluster, token) -> list[meta_pb2.MetaStatusResponse | None]:
    service = meta_pb2.DESCRIPTOR.services_by_name["Meta"]
    out = []
    for address in _meta_addresses(cluster):
        with grpc.insecure_channel(address) as channel:
            try:
                out.append(cluster_auth.stub(service, channel, token).Status(
                    meta_pb2.MetaStatusRequest(), timeout=1))
            except grpc.RpcError:
                out.append(None)
    return out


def _leader(cluster: LocalCluster, token, timeout_s: float = 30) -> tuple[int, meta_pb2.MetaStatusResponse]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for i, status in enumerate(_statuses(cluster, token)):
            if status is not None and status.is_leader:
                return i, status
        time.sleep(0.1)
    raise TimeoutError("no meta leader")


def _meta_pid(cluster: LocalCluster, index: int) -> int:
    import subprocess
    needle = f"--raft 127.0.0.1:{cluster.internal_base + index} "
    out = subprocess.run(["ps", "-o", "pid=,args=", "-g", str(cluster.process.pid)],
                         capture_output=True, text=True, timeout=10).stdout
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        if needle in args + " " and "tributary.cli meta" in args:
            return int(pid)
    raise LookupError(f"no meta member {index}")


def _socket_bytes(pid: int) -> dict[tuple[str, str], int]:
    """Bytes each open TCP socket of the process has sent (`ss -tinp`: tcp_info bytes_sent),
    Raft and gRPC alike, by (local, peer) address."""
    import subprocess
    out = subprocess.run(["ss", "-tinpH"], capture_output=True, text=True, timeout=30).stdout
    sockets: dict[tuple[str, str], int] = {}
    key = None
    for line in out.splitlines():
        if not line.startswith((" ", "\t")):
            fields = line.split()
            key = (fields[3], fields[4]) if f"pid={pid}," in line and len(fields) > 4 else None
            continue
        if key is not None:
            for field in line.split():
                if field.startswith("bytes_sent:"):
                    sockets[key] = int(field.split(":", 1)[1])
    return sockets


def _bytes_sent_since(pid: int, before: dict[tuple[str, str], int]) -> int:
    """Bytes sent since `before` (a _socket_bytes answer) over the sockets open now."""
    return sum(max(0, sent - before.get(key, 0)) for key, sent in _socket_bytes(pid).items())


def _healthy(cluster: LocalCluster, token) -> bool:
    statuses = _statuses(cluster, token)
    if any(s is None for s in statuses) or not any(s.is_leader for s in statuses):
        return False
    try:
        return httpx.get(cluster.rest + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not reached within {timeout_s}s")


# ---- parts -----------------------------------------------------------------------------------

def fill_catalog(cluster: LocalCluster, token, datasets: int, tenants: int) -> float:
    """Proposes `datasets` CreateDataset commands (over `tenants` tenants) to the meta group,
    32 at a time; returns the seconds it took."""
    from consensus.client import MetaClient

    async def fill() -> float:
        meta = MetaClient(_meta_addresses(cluster), token)
        status = await meta.leader_status()
        node = sorted(status.registered_nodes)[0]
        limit = asyncio.Semaphore(8)
        started = time.monotonic()
        done = 0

        async def one(i: int) -> None:
            nonlocal done
            command = commands.CreateDataset(
                uuid=str(uuid.uuid4()), tenant_id=f"tenant-{i % tenants}",
                name=f"filler-{i}", description="", dimensions=4, metric_type="cosine",
                index_type="hnsw", metadata={}, placement=(node,),
                at_ms=int(time.time() * 1000))
            async with limit:
                for attempt in range(5):
                    try:
                        # A retry of the same uuid answers as the first commit did.
                        await meta.propose(command)
                        break
                    except errors.Unavailable:
                        if attempt == 4:
                            raise
            done += 1
            if done % 1000 == 0:
                _log(f"  {done} datasets proposed in {time.monotonic() - started:.0f} s")
        await asyncio.gather(*(one(i) for i in range(datasets)))
        await meta.close()
        return time.monotonic() - started
    return asyncio.run(fill())


def part_batches(cluster: LocalCluster, token, batches: int) -> dict:
    """Leader CPU ms and bytes written per multi-shard batch."""
    with httpx.Client(base_url=cluster.rest, timeout=60) as client:
        name = f"batched-{uuid.uuid4().hex[:6]}"
        deadline = time.monotonic() + 120
        while True:
            # A busy box may still be settling after the catalog fill (e.g. nodes' heartbeats).
            response = client.post("/datasets", json={"name": name, "dimensions": 4,
                                                      "shard_count": 2})
            if response.status_code in (201, 409):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot create the batched dataset: {response.status_code} "
                                   f"{response.text[:300]}")
            _log(f"create of the batched dataset answered {response.status_code}; again")
            time.sleep(1)
        body = {"vectors": [{"id": f"w{i}", "values": [1.0, 0.5, 0.25, float(i)]}
                            for i in range(8)]}
        # Warm up (first writes open the shards).
        for _ in range(5):
            client.post(f"/datasets/{name}/vectors", json=body)
        index, _ = _leader(cluster, token)
        pid = _meta_pid(cluster, index)
        # The leader's background work (heartbeats, watches' progress, the repair loop) over
        # an idle spell, subtracted from the batches' figures below.
        cpu0, bytes0, t0 = _cpu_seconds(pid), _socket_bytes(pid), time.monotonic()
        time.sleep(10)
        idle_s = time.monotonic() - t0
        idle_cpu, idle_bytes = _cpu_seconds(pid) - cpu0, _bytes_sent_since(pid, bytes0)
        cpu0, bytes0, t0 = _cpu_seconds(pid), _socket_bytes(pid), time.monotonic()
        failed = 0
        for b in range(batches):
            body = {"vectors": [{"id": f"b{b}-{i}", "values": [1.0, 0.5, 0.25, float(i)]}
                                for i in range(8)]}
            if client.post(f"/datasets/{name}/vectors", json=body).status_code not in (200, 201):
                failed += 1
        seconds = time.monotonic() - t0
        cpu, sent = _cpu_seconds(pid) - cpu0, _bytes_sent_since(pid, bytes0)
    background_cpu = idle_cpu / idle_s * seconds
    background_bytes = idle_bytes / idle_s * seconds
    return {"batches": batches, "failed": failed, "seconds": round(seconds, 2),
            "leader_idle_cpu_ms_per_s": round(idle_cpu * 1000 / idle_s, 2),
            "leader_idle_bytes_per_s": round(idle_bytes / idle_s),
            "leader_cpu_ms_per_batch_raw": round(cpu * 1000 / batches, 3),
            "leader_bytes_sent_per_batch_raw": round(sent / batches),
            "leader_cpu_ms_per_batch": round(max(0.0, cpu - background_cpu) * 1000 / batches, 3),
            "leader_bytes_sent_per_batch": round(max(0.0, sent - background_bytes) / batches)}


def part_sigstop(cluster: LocalCluster, token, runs: int) -> dict:
    seconds = []
    with httpx.Client(base_url=cluster.rest, timeout=30) as client:
        for run in range(runs):
            _wait(lambda: _healthy(cluster, token), 60, "healthy before a SIGSTOP")
            index, _ = _leader(cluster, token)
            pid = _meta_pid(cluster, index)
            os.kill(pid, signal.SIGSTOP)
            stopped = time.monotonic()
            try:
                attempt = 0
                while time.monotonic() - stopped < 60:
                    attempt += 1
                    try:
                        code = client.post("/datasets", json={
                            "name": f"stop{run}-{attempt}", "dimensions": 4}).status_code
                    except httpx.HTTPError:
                        code = 0
                    if code == 201:
                        seconds.append(time.monotonic() - stopped)
                        break
                    time.sleep(0.05)
            finally:
                os.kill(pid, signal.SIGCONT)
            _log(f"sigstop run {run}: catalog writes back after "
                 f"{seconds[-1] if len(seconds) > run else float('nan'):.2f} s")
    return {"runs": runs, "seconds": [round(s, 2) for s in seconds],
            "median_s": round(statistics.median(seconds), 2) if seconds else None}


def part_watch(cluster: LocalCluster, token, clients: int, changes: int) -> dict:
    """Seconds from proposing a catalog change to each watching client holding it."""
    from consensus.client import CatalogCache, MetaClient

    async def run() -> dict:
        addresses = _meta_addresses(cluster)
        caches = []
        for i in range(clients):
            rotated = addresses[i % len(addresses):] + addresses[:i % len(addresses)]
            cache = CatalogCache(MetaClient(rotated, token))
            cache.start()
            caches.append(cache)
        proposer = MetaClient(addresses, token)
        deadline = time.monotonic() + 120
        while any(c.snapshots_received == 0 for c in caches):
            if time.monotonic() > deadline:
                raise TimeoutError("watch snapshots")
            await asyncio.sleep(0.05)
        datasets = len(caches[0].state.datasets)
        latencies = []
        for n in range(changes):
            started = time.monotonic()
            result = await proposer.propose(commands.ProvisionTenant(
                f"watched-{n}-{uuid.uuid4().hex[:4]}", "", {}, "active",
                int(time.time() * 1000)))
            revision = result["version"]

            async def reached(cache) -> float:
                while cache.state.version < revision:
                    event = cache._changed
                    try:
                        await asyncio.wait_for(event.wait(), 5)
                    except asyncio.TimeoutError:
                        return float("inf")
                return time.monotonic() - started
            latencies.extend(await asyncio.gather(*(reached(c) for c in caches)))
            await asyncio.sleep(0.02)
        for cache in caches:
            await cache.stop()
            await cache.client.close()
        await proposer.close()
        return {"clients": clients, "changes": changes, "datasets": datasets,
                "p50_ms": round(percentile(latencies, 50) * 1000, 1),
                "p99_ms": round(percentile(latencies, 99) * 1000, 1),
                "max_ms": round(max(latencies) * 1000, 1)}
    return asyncio.run(run())


def part_missing_lookups(cluster: LocalCluster, token, lookups: int) -> dict:
    _, before = _leader(cluster, token)

    async def run() -> list[int]:
        limit = asyncio.Semaphore(50)
        async with httpx.AsyncClient(base_url=cluster.rest, timeout=60) as client:
            async def one(i: int) -> int:
                async with limit:
                    return (await client.get(f"/datasets/missing-{i}")).status_code
            return await asyncio.gather(*(one(i) for i in range(lookups)))
    started = time.monotonic()
    codes = asyncio.run(run())
    seconds = time.monotonic() - started
    _, after = _leader(cluster, token)
    return {"lookups": lookups, "not_found": sum(1 for c in codes if c == 404),
            "seconds": round(seconds, 2),
            "raft_entries_appended": after.commit_index - before.commit_index}


# ---- report ----------------------------------------------------------------------------------

def render(report: dict) -> str:
    small, large = report["small"], report["large"]
    rows = [
        ("Leader CPU per multi-shard batch",
         f"{small['batches']['leader_cpu_ms_per_batch']} ms @ {small['datasets']} datasets",
         f"{large['batches']['leader_cpu_ms_per_batch']} ms @ {large['datasets']} datasets / "
         f"{large['tenants']} tenants", "no growth"),
        ("Meta leader idle CPU (background)",
         f"{small['batches']['leader_idle_cpu_ms_per_s']} ms/s",
         f"{large['batches']['leader_idle_cpu_ms_per_s']} ms/s", "(reported)"),
        ("Leader bytes sent per multi-shard batch",
         f"{small['batches']['leader_bytes_sent_per_batch']} B",
         f"{large['batches']['leader_bytes_sent_per_batch']} B", "no growth"),
        (f"Catalog change to {large['watch']['clients']} watching clients",
         f"p50 {large['watch']['p50_ms']} ms",
         f"p99 {large['watch']['p99_ms']} ms @ {large['watch']['datasets']} datasets",
         "p99 <= 200 ms"),
        (f"{large['lookups']['lookups']} lookups of missing names",
         f"{large['lookups']['not_found']} x 404 in {large['lookups']['seconds']} s",
         f"{large['lookups']['raft_entries_appended']} Raft entries", "0"),
        ("Catalog writes after SIGSTOP of the meta leader",
         f"runs {small['sigstop']['seconds']} s",
         f"median {small['sigstop']['median_s']} s", "<= 3 s"),
    ]
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [" | ".join(cell.ljust(width[i]) for i, cell in enumerate(row)) for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.control_plane", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="1,000 datasets / 100 tenants, fewer batches, changes and runs")
    parser.add_argument("--datasets", type=int, default=None)
    parser.add_argument("--tenants", type=int, default=None)
    parser.add_argument("--batches", type=int, default=None)
    parser.add_argument("--changes", type=int, default=None)
    parser.add_argument("--sigstop-runs", type=int, default=None)
    parser.add_argument("--parts", default="small,large",
                        help="which clusters to run: small, large or both (default)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "control_plane.json"))
    args = parser.parse_args(argv)
    datasets = args.datasets or (1_000 if args.quick else 10_000)
    tenants = args.tenants or (100 if args.quick else 1_000)
    batches = args.batches or (50 if args.quick else 200)
    changes = args.changes or (20 if args.quick else 50)
    runs = args.sigstop_runs or (3 if args.quick else 5)
    report: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    parts = set(args.parts.split(","))
    try:
        with tempfile.TemporaryDirectory(prefix="tributary-cp-") as tmp:
            if "small" in parts:
                run_small(tmp, report, batches, runs)
            if "large" in parts:
                run_large(tmp, report, datasets, tenants, batches, changes)
    finally:
        # What was measured is kept, even when a later part fails.
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    if "small" in report and "large" in report:
        print(render(report))
    else:
        print(json.dumps(report, indent=2))
    print(f"(figures in {args.out})")
    return 0


def run_small(tmp: str, report: dict, batches: int, runs: int) -> None:
    if True:
        cluster = LocalCluster(os.path.join(tmp, "small"), nodes=2, meta=3)
        _log("starting the small cluster")
        cluster.start()
        try:
            token = _token(cluster)
            fill_catalog(cluster, token, 9, 1)
            small = report["small"] = {"datasets": 10, "tenants": 1}
            _log("small: batches")
            small["batches"] = part_batches(cluster, token, batches)
            _log(f"small: {runs} SIGSTOP runs")
            small["sigstop"] = part_sigstop(cluster, token, runs)
            report["small"] = small
        finally:
            cluster.stop()


def run_large(tmp: str, report: dict, datasets: int, tenants: int, batches: int,
              changes: int) -> None:
    if True:
        cluster = LocalCluster(os.path.join(tmp, "large"), nodes=2, meta=3)
        _log("starting the large cluster")
        cluster.start()
        try:
            token = _token(cluster)
            _log(f"large: proposing {datasets - 1} datasets over {tenants} tenants")
            fill_seconds = fill_catalog(cluster, token, datasets - 1, tenants)
            _wait(lambda: _healthy(cluster, token), 120, "healthy after the fill")
            large = report["large"] = {"datasets": datasets, "tenants": tenants,
                                       "fill_seconds": round(fill_seconds, 1)}
            _log("large: batches")
            large["batches"] = part_batches(cluster, token, batches)
            _log("large: 20 watching clients")
            large["watch"] = part_watch(cluster, token, 20, changes)
            _log("large: missing-name lookups")
            large["lookups"] = part_missing_lookups(cluster, token, 1_000)
            report["large"] = large
        finally:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
