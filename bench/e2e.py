"""End-to-end benchmark through a real local cluster (`python -m tributary.cli up`).

- Ingest: REST POST /api/v1/datasets/{name}/vectors in batches; vectors/s counts from the first
  request sent to the last acknowledgement (an acknowledged batch is committed in Deep Lake, i.e.
  durable, and searchable: checked by searching for the last vector right after its ack).
  Request bodies are JSON-encoded before the clock starts. If the nodes keep indexing behind the
  acknowledgements, the harness then waits for the node processes to go idle, reports how long
  that took, and an approximate "in the graph" rate; searches are measured after that.
- Search: gRPC deeplake.v1 SearchService/SearchVectors with a plain synchronous client loop
  (1 and N threads). The same loop runs against the "Python echo-router ceiling"
  (bench/echo_router.py, a separate process answering a canned response captured from the
  cluster), interleaved with the cluster runs, in the same run.

Only one cluster runs at a time, and it is always stopped (SIGTERM, then SIGKILL of its process
group). Nothing here imports from tests/."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import numpy as np

from bench.datasets import Dataset, recall_at_k
from bench.timing import query_loop, summarize
from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc
from tributary import limits, procs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_GRPC_OPTIONS = [("grpc.max_receive_message_length", limits.grpc_message_bytes_max),
                 ("grpc.max_send_message_length", limits.grpc_message_bytes_max)]


class LocalCluster:
    """`python -m tributary.cli up` as a child process group on loopback."""

    def __init__(self, data_dir: str, nodes: int = 2, meta: int = 3):
        self.data_dir = data_dir
        self.nodes, self.meta = nodes, meta
        # Ports below the ephemeral range, in the layout of `tributary up`.
        self.http_port, self.grpc_port, self.internal_base = procs.cluster_port_plan(meta, nodes)
        self.process: subprocess.Popen | None = None
        self.output_path = os.path.join(data_dir, "up.out")

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api/v1"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def output(self) -> str:
        try:
            with open(self.output_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def start(self, timeout_s: float = 120.0) -> float:
        os.makedirs(self.data_dir, exist_ok=True)
        started = time.monotonic()
        with open(self.output_path, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tributary.cli", "up", "--data-dir", self.data_dir,
                 "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
                 "--internal-port-base", str(self.internal_base), "--nodes", str(self.nodes),
                 "--meta", str(self.meta)],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=procs.new_session_dying_with_parent(signal.SIGTERM))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tributary up exited early:\n{self.output()[-4000:]}")
            if '"status": "ready"' in self.output():
                return time.monotonic() - started
            time.sleep(0.2)
        raise TimeoutError(f"cluster not ready in {timeout_s}s:\n{self.output()[-4000:]}")

    def node_pids(self) -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=,args=", "-g", str(self.process.pid)],
                             capture_output=True, text=True).stdout
        return [int(line.split(None, 1)[0]) for line in out.splitlines()
                if "tributary.cli node" in line]

    def stop(self, timeout_s: float = 20.0) -> float:
        """SIGTERM the supervisor (it stops its children), then SIGKILL whatever is left of
        the process group. Returns the seconds it took."""
        if self.process is None:
            return 0.0
        pgid = self.process.pid
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + timeout_s
        while procs.group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if procs.group_alive(pgid):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        return time.monotonic() - started


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def wait_nodes_idle(cluster: "LocalCluster", idle_cpu: float = 0.15, interval_s: float = 0.5,
                    timeout_s: float = 900.0) -> float:
    """Waits until the shard node processes use less than `idle_cpu` CPU-seconds per second,
    i.e. any background indexing behind the acknowledgements is done. Returns seconds waited
    (resolution `interval_s`)."""
    pids = cluster.node_pids()
    started = time.monotonic()
    before = sum(_cpu_seconds(p) for p in pids)
    while time.monotonic() - started < timeout_s:
        time.sleep(interval_s)
        now = sum(_cpu_seconds(p) for p in pids)
        if (now - before) / interval_s < idle_cpu:
            return max(0.0, time.monotonic() - started - interval_s)
        before = now
    return time.monotonic() - started


class EchoRouter:
    def __init__(self, response_path: str):
        self.port = procs.free_port()
        self.response_path = response_path
        self.process: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, probe: pb.SearchVectorsRequest, timeout_s: float = 30.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.echo_router", "--port", str(self.port),
             "--response", self.response_path],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            preexec_fn=procs.new_session_dying_with_parent(signal.SIGKILL))
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(self.target, options=_GRPC_OPTIONS) as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"echo router exited: {self.process.stderr.read()!r}")
                try:
                    stub.SearchVectors(probe, timeout=2)
                    return
                except grpc.RpcError:
                    time.sleep(0.2)
        raise TimeoutError("echo router did not answer")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def _encode_batches(ds: Dataset, batch: int) -> list[tuple[int, int, bytes]]:
    """JSON bodies as a typical Python client sends them (numpy -> tolist -> json)."""
    bodies = []
    for start in range(0, ds.size, batch):
        stop = min(ds.size, start + batch)
        vectors = [{"id": str(i), "values": row}
                   for i, row in zip(range(start, stop), ds.data[start:stop].tolist())]
        bodies.append((start, stop, json.dumps({"vectors": vectors}).encode()))
    return bodies


def run_e2e(ds: Dataset, *, work_dir: str, ef: int, batch: int, reps: int, threads: int,
            max_seconds: float, nodes: int = 2, shard_count: int = 0,
            ingest_concurrency: int = 1, log=print) -> dict:
    k = ds.k
    result: dict = {"dataset": ds.name, "metric": ds.metric, "size": ds.size, "dim": ds.dim,
                    "queries": int(ds.queries.shape[0]), "k": k, "ef_search": ef,
                    "nodes": nodes}
    log(f"  encoding {ds.size} vectors as JSON (before the clock starts)")
    bodies = _encode_batches(ds, batch)
    result["ingest_request_mb"] = round(sum(len(b) for _, _, b in bodies) / len(bodies) / 1e6, 2)

    cluster = LocalCluster(os.path.join(work_dir, "cluster"), nodes=nodes)
    echo: EchoRouter | None = None
    try:
        log(f"  starting cluster (3 meta, {nodes} nodes, 1 router) in {cluster.data_dir}")
        result["cluster_start_s"] = cluster.start()
        name = f"bench-{ds.name}-{os.getpid()}"
        with httpx.Client(base_url=cluster.rest, timeout=600) as client:
            r = client.post("/datasets", json={"name": name, "dimensions": ds.dim,
                                               "metric_type": ds.metric,
                                               "shard_count": shard_count})
            if r.status_code != 201:
                raise RuntimeError(f"create dataset failed: {r.status_code} {r.text}")
            result["shard_count"] = r.json()["dataset"].get("shard_count")

            # ---- ingest through REST --------------------------------------------------------
            log(f"  ingest through REST: {len(bodies)} batches of {batch}, "
                f"concurrency {ingest_concurrency}")
            spent: list[tuple[int, float]] = []

            def post(item):
                start, stop, body = item
                t = time.perf_counter()
                resp = client.post(f"/datasets/{name}/vectors", content=body,
                                   headers={"Content-Type": "application/json"})
                took = time.perf_counter() - t
                if resp.status_code != 201:
                    raise RuntimeError(f"insert failed: {resp.status_code} {resp.text[:500]}")
                inserted = resp.json().get("inserted_count", 0)
                if inserted != stop - start:
                    raise RuntimeError(f"inserted {inserted} of {stop - start}")
                spent.append((stop - start, took))
                return stop - start

            started = time.perf_counter()
            if ingest_concurrency <= 1:
                total = sum(post(item) for item in bodies)
            else:
                with ThreadPoolExecutor(max_workers=ingest_concurrency) as pool:
                    total = sum(pool.map(post, bodies))
            ingest_s = time.perf_counter() - started
            last = ds.size - 1
            hit = client.post(f"/datasets/{name}/search", json={
                "query_vector": ds.data[last].tolist(), "options": {"top_k": 1}}).json()
            searchable = bool(hit.get("results")) and hit["results"][0]["vector"]["id"] == \
                str(last)
            rates = [n / t for n, t in spent]
            log("  waiting for the nodes to go idle (background indexing)")
            settle_s = wait_nodes_idle(cluster)
            result["ingest"] = {"vectors_per_s": total / ingest_s, "seconds": ingest_s,
                                "nodes_busy_after_last_ack_s": settle_s,
                                "approx_in_graph_vectors_per_s": total / (ingest_s + settle_s),
                                "vectors": total, "batches": len(bodies), "batch_size": batch,
                                "concurrency": ingest_concurrency,
                                "batch_median_vectors_per_s": float(np.median(rates)),
                                "last_vector_searchable_after_ack": searchable}
            del bodies

        # ---- search through gRPC, against the echo-router ceiling ---------------------------
        requests = [pb.SearchVectorsRequest(
            dataset_id=name, query_vector=q.tolist(),
            options=pb.SearchOptions(top_k=k, ef_search=ef)) for q in ds.queries]
        cluster_channel = grpc.insecure_channel(cluster.grpc_target, options=_GRPC_OPTIONS)
        cluster_stub = pb_grpc.SearchServiceStub(cluster_channel)
        canned = cluster_stub.SearchVectors(requests[0], timeout=30)
        canned_path = os.path.join(work_dir, "canned-response.bin")
        with open(canned_path, "wb") as f:
            f.write(canned.SerializeToString())
        result["canned_response_bytes"] = canned.ByteSize()
        log("  starting echo router")
        echo = EchoRouter(canned_path)
        echo.start(requests[0])
        echo_channel = grpc.insecure_channel(echo.target, options=_GRPC_OPTIONS)
        echo_stub = pb_grpc.SearchServiceStub(echo_channel)

        log("  recall pass through gRPC")
        found = []
        for req in requests:
            resp = cluster_stub.SearchVectors(req, timeout=30)
            found.append([int(r.vector.id) for r in resp.results])
        result["recall"] = recall_at_k(found, ds.truth, k)
        for req in requests[:50]:
            echo_stub.SearchVectors(req, timeout=30)

        calls = {"cluster": lambda req: cluster_stub.SearchVectors(req, timeout=30),
                 "echo": lambda req: echo_stub.SearchVectors(req, timeout=30)}
        runs = {(t, n): [] for t in ("cluster", "echo") for n in (1, threads)}
        for rep in range(reps):
            log(f"  search rep {rep + 1}/{reps}")
            order = ("echo", "cluster") if rep % 2 == 0 else ("cluster", "echo")
            for n in (1, threads):
                for target in order:
                    runs[(target, n)].append(query_loop(calls[target], requests, threads=n,
                                                        max_seconds=max_seconds))
        result["search"] = {f"{t}_{n}t": summarize(r) for (t, n), r in runs.items()}
        s = result["search"]
        result["ratios"] = {f"qps_{n}t": s[f"cluster_{n}t"]["qps"] / s[f"echo_{n}t"]["qps"]
                            for n in (1, threads)}
        cluster_channel.close()
        echo_channel.close()
        return result
    finally:
        if echo is not None:
            echo.stop()
        log("  stopping cluster")
        result["cluster_stop_s"] = cluster.stop()
