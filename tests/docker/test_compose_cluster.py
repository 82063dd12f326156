"""docker-compose.cluster.yml in real containers: the seed's flows through the router, a drain
a chaos scenario (a node paused, then killed and restarted by compose's restart policy) that
loses no acknowledged write, and, last since it takes a node out, a drain under the admin CLI. Skipped, with the reason in the
summary, where no Docker engine is reachable (tests/docker/conftest.py)."""

from __future__ import annotations

import json
import random
import threading

import pytest

from compose_cluster import wait_for

pytestmark = pytest.mark.integration

DIMS = 8


def vectors(prefix: str, count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": f"{prefix}{i}", "values": [rng.random() for _ in range(DIMS)],
             "metadata": {"n": str(i)}} for i in range(count)]


def test_seed_flows_create_write_search_get_delete(compose_cluster):
    with compose_cluster.http() as client:
        r = client.post("/datasets", json={"name": "seed", "dimensions": DIMS,
                                           "shard_count": 2})
        assert r.status_code == 201, r.text
        batch = vectors("v", 200, 1)
        assert client.post("/datasets/seed/vectors", json={"vectors": batch}).status_code == 201
        hits = client.post("/datasets/seed/search", json={
            "query_vector": batch[7]["values"], "options": {"top_k": 5}}).json()
        assert hits["results"][0]["vector"]["id"] == "v7"
        assert client.get("/datasets/seed/vectors/v9").json()["vector"]["metadata"] == {"n": "9"}
        assert client.delete("/datasets/seed/vectors/v9").status_code in (200, 204)
        assert client.get("/datasets/seed/vectors/v9").status_code == 404
        assert client.delete("/datasets/seed").status_code in (200, 204)


def test_a_paused_then_killed_node_loses_no_acknowledged_write(compose_cluster):
    with compose_cluster.http() as client:
        assert client.post("/datasets", json={"name": "chaos", "dimensions": DIMS,
                                              "shard_count": 2}).status_code == 201
    acked: list[str] = []
    stop = threading.Event()

    def write():
        rng = random.Random(3)
        with compose_cluster.http() as client:
            i = 0
            while not stop.is_set():
                vid = f"c{i}"
                i += 1
                try:
                    r = client.post("/datasets/chaos/vectors", json={"vectors": [
                        {"id": vid, "values": [rng.random() for _ in range(DIMS)]}]})
                except Exception:  # noqa: BLE001 - a refused write is allowed, not acked
                    continue
                if r.status_code == 201:
                    acked.append(vid)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        node = compose_cluster.container("node-0")
        wait_for(lambda: len(acked) > 20, 60, "writes acknowledged")
        node.pause()
        paused_at = len(acked)
        wait_for(lambda: len(acked) > paused_at + 20, 120, "writes go on while node-0 is paused")
        node.unpause()
        node.kill()                           # compose's restart policy brings it back
        killed_at = len(acked)
        wait_for(lambda: len(acked) > killed_at + 20, 120, "writes go on after the kill")
        wait_for(lambda: compose_cluster.container("node-0").status == "running", 120,
                 "node-0 restarted")
        wait_for(compose_cluster.healthy, 180, "healthy again")
    finally:
        stop.set()
        writer.join(60)
    with compose_cluster.http() as client:
        missing = [v for v in acked if client.get(f"/datasets/chaos/vectors/{v}").status_code
                   != 200]
        assert missing == [], missing[:10]
        client.delete("/datasets/chaos")


def test_a_drained_node_holds_no_copy_and_every_vector_stays_readable(compose_cluster):
    with compose_cluster.http() as client:
        assert client.post("/datasets", json={"name": "drain", "dimensions": DIMS,
                                              "shard_count": 4, "replication_factor": 1}
                           ).status_code == 201
        assert client.post("/datasets/drain/vectors", json={"vectors": vectors("d", 300, 2)}
                           ).status_code == 201
    compose_cluster.admin("nodes", "drain", "node-1", "--wait", "--wait-timeout", "600")
    listed = {n["node_id"]: n for n in json.loads(
        compose_cluster.admin("nodes", "list", "--json").stdout)}
    assert listed["node-1"]["state"] == "drained" and listed["node-1"]["copies"] == 0
    with compose_cluster.http() as client:
        missing = [i for i in range(300)
                   if client.get(f"/datasets/drain/vectors/d{i}").status_code != 200]
        assert missing == []
        client.delete("/datasets/drain")
