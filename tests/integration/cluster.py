"""Real local clusters for integration tests: `tributary up` as a child process on loopback."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from typing import Callable

import httpx

from tributary import procs


def wait_for(predicate: Callable[[], object], timeout_s: float = 30.0, interval_s: float = 0.1,
             what: str = "condition"):
    """Polls predicate until it returns a truthy value or the deadline passes (then fails)."""
    deadline = time.monotonic() + timeout_s
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling; report the last one
            last_exc = exc
        time.sleep(interval_s)
    raise TimeoutError(f"{what} not reached within {timeout_s}s (last error: {last_exc!r})")


def missing_through_router(client: httpx.Client, dataset: str, ids, point_reads: int = 200,
                           seed: int = 0) -> list[str]:
    """The ids of `ids` the router cannot find in `dataset`. Every page of the dataset's listing
    through the router, then a point GET of each id the listing lacks and of a seeded sample
    of `point_reads` listed ones (point reads route by id, so a wrong route shows there). One
    GET per id took ~20 s of a reshard test for 3,000 ids."""
    listed: set[str] = set()
    token = ""
    while True:
        page = client.get(f"/datasets/{dataset}/vectors",
                          params={"page_size": 1000, "page_token": token})
        assert page.status_code == 200, page.text
        doc = page.json()
        listed.update(v["id"] for v in doc.get("vectors", []))
        token = doc.get("next_page_token", "")
        if not token:
            break
    wanted = list(dict.fromkeys(ids))
    found = [i for i in wanted if i in listed]
    probe = [i for i in wanted if i not in listed] + random.Random(seed).sample(
        found, min(point_reads, len(found)))
    return [i for i in probe
            if client.get(f"/datasets/{dataset}/vectors/{i}").status_code != 200]


def free_port_plan(meta: int, nodes: int, routers: int) -> tuple[int, int, int]:
    """Finds (http_port, grpc_port, internal_base) whose every derived port is free."""
    return procs.cluster_port_plan(meta, nodes, routers)


class Cluster:
    def __init__(self, data_dir: str, meta: int = 3, nodes: int = 2, routers: int = 1,
                 env: dict[str, str] | None = None, extra_args: list[str] | None = None):
        self.data_dir = str(data_dir)
        # Extra `tributary up` flags, e.g. ["--api-key", KEY]; kept for restarts.
        self.extra_args = list(extra_args or [])
        self.env = {**os.environ, **(env or {})}
        self.meta, self.nodes, self.routers = meta, nodes, routers
        self.http_port, self.grpc_port, self.internal_base = free_port_plan(meta, nodes, routers)
        self.process: subprocess.Popen | None = None
        self._output_offset = 0
        self.output_path = os.path.join(self.data_dir, "up.out")

    def again(self) -> "Cluster":
        """A new, unstarted cluster on this one's data dir, ports and settings: the same
        cluster brought back after kill9_everything or stop."""
        other = Cluster(self.data_dir, self.meta, self.nodes, self.routers,
                        extra_args=self.extra_args)
        other.env = self.env
        other.http_port, other.grpc_port, other.internal_base = (
            self.http_port, self.grpc_port, self.internal_base)
        return other

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api/v1"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def meta_grpc(self, i: int) -> str:
        return f"127.0.0.1:{self.internal_base + 10 + i}"

    def node_address(self, i: int) -> str:
        return f"127.0.0.1:{self.internal_base + 100 + i}"

    def token(self):
        """The cluster secret's token, from the data dir where `tributary up` made it (None for
        an --insecure-dev cluster)."""
        from tributary import cluster_auth, local_secrets

        found = local_secrets.existing(self.data_dir)
        return cluster_auth.load(found.cluster_secret_file) if found else None

    def meta_stub(self, channel):
        """A Meta client on `channel` that signs its messages with this cluster's secret."""
        from proto import meta_pb2
        from tributary import cluster_auth

        return cluster_auth.stub(meta_pb2.DESCRIPTOR.services_by_name["Meta"], channel,
                                 self.token())

    def node_stub(self, channel):
        """A ShardNode client on `channel` that signs its messages with this cluster's secret."""
        from proto import node_pb2
        from tributary import cluster_auth

        return cluster_auth.stub(node_pb2.DESCRIPTOR.services_by_name["ShardNode"], channel,
                                 self.token())

    def start(self, timeout_s: float = 90.0) -> "Cluster":
        os.makedirs(self.data_dir, exist_ok=True)
        # Only this run's output counts: a restart appends to the same file.
        self._output_offset = os.path.getsize(self.output_path) \
            if os.path.exists(self.output_path) else 0
        out = open(self.output_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tributary.cli", "up", "--data-dir", self.data_dir,
             "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
             "--internal-port-base", str(self.internal_base), "--meta", str(self.meta),
             "--nodes", str(self.nodes), "--routers", str(self.routers)] + self.extra_args,
            stdout=out, stderr=subprocess.STDOUT, env=self.env,
            # Its own process group, and SIGTERM (a clean stop) if the test run dies.
            preexec_fn=procs.new_session_dying_with_parent(signal.SIGTERM))
        out.close()
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        def ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"tributary up exited: {self.output()}")
            return '"status": "ready"' in self.output()[self._output_offset:]
        wait_for(ready, timeout_s, 0.2, "cluster ready line")

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.rest}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def output(self) -> str:
        with open(self.output_path, errors="replace") as f:
            return f.read()

    def pids(self) -> list[int]:
        """Every live process of the cluster: the supervisor and its children."""
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.process.pid)],
                             capture_output=True, text=True).stdout.split()
        return [self.process.pid] + [int(p) for p in out]

    def kill9_everything(self) -> None:
        pgid = os.getpgid(self.process.pid)
        os.killpg(pgid, signal.SIGKILL)
        self.process.wait(timeout=10)
        wait_for(lambda: not procs.group_alive(pgid), 10, 0.1, "process group gone")

    def stop(self, timeout_s: float = 15.0) -> float:
        """SIGTERM the supervisor; returns how long the whole group took to exit."""
        if self.process is None or self.process.poll() is not None:
            return 0.0
        pgid = os.getpgid(self.process.pid)
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
            wait_for(lambda: not procs.group_alive(pgid), timeout_s, 0.1, "children gone")
        finally:
            if procs.group_alive(pgid):
                os.killpg(pgid, signal.SIGKILL)
        return time.monotonic() - started




def child_pid(cluster: Cluster, needle: str) -> int:
    """The pid of the cluster child whose command line contains needle (e.g. a port)."""
    for pid in cluster.pids()[1:]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if needle in cmdline:
            return pid
    raise LookupError(f"no child with '{needle}' in its command line")
