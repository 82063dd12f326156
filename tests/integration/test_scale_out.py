"""Elastic scale-out end to end (issue 12): a node joins a running cluster and `tributary admin
rebalance --wait` evens copies out onto it; `tributary admin nodes drain --wait` empties a node;
all under a steady read/write load that sees no failed request and loses no acknowledged
write. Bad requests are one-line CLI errors that change nothing."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading

import httpx
import pytest

from cluster import Cluster, missing_through_router, wait_for

pytestmark = pytest.mark.integration

DIMS = 8


def admin(c: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "tributary.cli", "admin", *args],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TRIBUTARY_URL": c.rest.removesuffix("/api/v1")})
    if check:
        assert result.returncode == 0, result.stderr
    return result


def nodes(c: Cluster) -> dict[str, dict]:
    return {n["node_id"]: n for n in json.loads(admin(c, "nodes", "list", "--json").stdout)}


class Load:
    """Writers and readers through the router; every non-2xx answer or transport error is a
    failure, every 201 an acknowledged id."""

    def __init__(self, c: Cluster):
        self.c, self.stop = c, threading.Event()
        self.acked: list[str] = []
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._write), threading.Thread(target=self._read)]

    def _write(self):
        rng = random.Random(1)
        with httpx.Client(base_url=self.c.rest, timeout=30) as client:
            i = 0
            while not self.stop.is_set():
                vid = f"load{i}"
                i += 1
                try:
                    r = client.post("/datasets/elastic/vectors", json={"vectors": [
                        {"id": vid, "values": [rng.random() for _ in range(DIMS)]}]})
                except httpx.HTTPError as exc:
                    self.failures.append(f"write {vid}: {exc!r}")
                    continue
                if r.status_code == 201:
                    self.acked.append(vid)
                else:
                    self.failures.append(f"write {vid}: {r.status_code} {r.text[:200]}")

    def _read(self):
        rng = random.Random(2)
        with httpx.Client(base_url=self.c.rest, timeout=30) as client:
            while not self.stop.is_set():
                vid = f"seed{rng.randrange(400)}"
                try:
                    r = client.get(f"/datasets/elastic/vectors/{vid}")
                    ok = r.status_code == 200
                    detail = f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, detail = False, repr(exc)
                if not ok:
                    self.failures.append(f"read {vid}: {detail}")
                try:
                    r = client.post("/datasets/elastic/search", json={
                        "query_vector": [rng.random() for _ in range(DIMS)],
                        "options": {"top_k": 5}})
                    if r.status_code != 200:
                        self.failures.append(f"search: {r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"search: {exc!r}")

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)


def test_a_joining_node_gets_copies_and_a_drained_node_gives_them_up_under_load(tmp_path):
    c = Cluster(tmp_path / "cluster", meta=1, nodes=2).start()
    extra = None
    try:
        rng = random.Random(0)
        with httpx.Client(base_url=c.rest, timeout=60) as client:
            assert client.post("/datasets", json={"name": "elastic", "dimensions": DIMS,
                                                  "shard_count": 4}).status_code == 201
            assert client.post("/datasets/elastic/vectors", json={"vectors": [
                {"id": f"seed{i}", "values": [rng.random() for _ in range(DIMS)]}
                for i in range(400)]}).status_code == 201
        # A third node joins the running cluster, as `tributary node` on a new host would.
        port = c.internal_base + 102
        extra = subprocess.Popen(
            [sys.executable, "-m", "tributary.cli", "node", "--listen", f"127.0.0.1:{port}",
             "--meta", c.meta_grpc(0), "--data-dir", str(tmp_path / "node-2"),
             "--node-id", "node-2", "--cluster-secret-file",
             os.path.join(c.data_dir, "secrets", "cluster-secret")],
            stdout=open(tmp_path / "node-2.log", "ab"), stderr=subprocess.STDOUT,
            start_new_session=True)
        wait_for(lambda: nodes(c).get("node-2", {}).get("state") == "live", 60, 0.5,
                 "the new node live")
        assert nodes(c)["node-2"]["copies"] == 0

        with Load(c) as load:
            plan = json.loads(admin(c, "rebalance", "--dry-run", "--json").stdout)
            assert isinstance(plan, list) and plan and {m["target"] for m in plan} == {"node-2"}
            assert nodes(c)["node-2"]["copies"] == 0          # a dry run changes nothing
            admin(c, "rebalance", "--wait", "--wait-timeout", "300")
            held = {n: d["copies"] for n, d in nodes(c).items()}
            assert max(held.values()) - min(held.values()) <= 1 and held["node-2"] >= 2
            # Primaries too: hand-overs to in-sync copies even them out once copies are even.
            primaries = {n: d["primaries"] for n, d in nodes(c).items()}
            assert max(primaries.values()) - min(primaries.values()) <= 1, primaries
            assert json.loads(admin(c, "rebalance", "--dry-run", "--json").stdout) == []

            admin(c, "nodes", "drain", "node-0", "--wait", "--wait-timeout", "300")
            after = nodes(c)
            assert after["node-0"]["copies"] == 0 and after["node-0"]["state"] == "drained"
        assert load.failures == [], load.failures[:10]
        assert len(load.acked) > 10
        wait_for(lambda: httpx.get(f"{c.rest}/health", timeout=5).json()["status"] ==
                 "healthy", 60, 0.5, "healthy without the drained node")
        with httpx.Client(base_url=c.rest, timeout=30) as client:
            missing = missing_through_router(client, "elastic",
                                             load.acked + [f"seed{i}" for i in range(400)])
        assert missing == []
        # A dataset created after the drain places no copy on the drained node.
        with httpx.Client(base_url=c.rest, timeout=60) as client:
            assert client.post("/datasets", json={"name": "after", "dimensions": DIMS,
                                                  "shard_count": 4}).status_code == 201
        assert nodes(c)["node-0"]["copies"] == 0

        # Bad requests: one line, non-zero, nothing changed.
        refused = admin(c, "nodes", "drain", "node-1", check=False)
        assert refused.returncode != 0 and "cannot drain node-1" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        unknown = admin(c, "shards", "move", "elastic", "0", "--from", "node-1", "--to",
                        "node-9", check=False)
        assert unknown.returncode != 0 and "node 'node-9' not found" in unknown.stderr
        drained = admin(c, "shards", "move", "elastic", "0", "--from", "node-1", "--to",
                        "node-0", check=False)
        assert drained.returncode != 0 and "is drained" in drained.stderr
        assert json.loads(admin(c, "moves", "list", "--json").stdout) == []
        removed = admin(c, "nodes", "remove", "node-1", check=False)
        assert removed.returncode != 0 and "would lose" in removed.stderr
    finally:
        if extra is not None:
            os.killpg(extra.pid, signal.SIGKILL)
            extra.wait(10)
        c.stop()


def _router_pid(c: Cluster) -> int:
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(c.process.pid)],
                         capture_output=True, text=True).stdout
    return next(int(line.split()[0]) for line in out.splitlines()
                if " router " in f" {line} ")


def _health(c: Cluster) -> tuple[int, str]:
    try:
        answer = httpx.get(f"{c.rest}/health", timeout=5)
    except httpx.HTTPError as exc:
        return 0, repr(exc)
    return answer.status_code, answer.json().get("dependencies", {}).get("nodes", "")


def test_scaling_in_below_the_routers_node_floor_keeps_them_healthy(tmp_path):
    """`tributary up --nodes 3` starts its routers with --min-nodes 3, a start-up gate. Draining
    and removing a node (the README's scale-in) left every router 503 "waiting for 3 node(s)"
    for good, and a router restarted after it too: a load balancer would have taken every one
    out of service."""
    c = Cluster(tmp_path / "cluster", meta=1, nodes=3).start()
    try:
        with httpx.Client(base_url=c.rest, timeout=60) as client:
            assert client.post("/datasets", json={"name": "elastic", "dimensions": DIMS,
                                                  "shard_count": 2}).status_code == 201
            assert client.post("/datasets/elastic/vectors", json={"vectors": [
                {"id": f"v{i}", "values": [float(i + 1), *[1.0] * (DIMS - 1)]}
                for i in range(50)]}
                               ).status_code == 201
        admin(c, "nodes", "drain", "node-2", "--wait", "--wait-timeout", "120")
        wait_for(lambda: _health(c) == (200, "2/2 live"), 30, 0.5,
                 "healthy with the drained node left out")
        admin(c, "nodes", "remove", "node-2")
        assert _health(c) == (200, "2/2 live")
        # A router that starts after the scale-in (`tributary up` restarts it) loads a catalog
        # that once had 3 nodes.
        router = _router_pid(c)
        os.kill(router, signal.SIGKILL)
        wait_for(lambda: _router_pid(c) != router, 30, 0.2, "the router restarted")
        wait_for(lambda: _health(c)[0] == 200, 60, 0.5, "the restarted router healthy")
        assert _health(c) == (200, "2/2 live")
        with httpx.Client(base_url=c.rest, timeout=30) as client:
            assert missing_through_router(client, "elastic", [f"v{i}" for i in range(50)]) == []
    finally:
        c.stop()
