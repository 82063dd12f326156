"""Promise 2: an acknowledged write survives kill -9 of every process. Also `tributary up`'s
lifecycle: a second run on the same data dir serves the same data, and SIGTERM stops every
child within 10 s."""

from __future__ import annotations

import numpy as np
import httpx
import pytest

from cluster import Cluster, wait_for

pytestmark = pytest.mark.integration


def test_acknowledged_writes_survive_kill_9_of_every_process(tmp_path):
    rng = np.random.default_rng(1000)
    data = rng.standard_normal((1_000, 32)).astype(np.float32)
    cluster = Cluster(tmp_path / "data").start()
    try:
        with httpx.Client(base_url=cluster.rest, timeout=60) as client:
            assert client.post("/datasets", json={"name": "durable", "dimensions": 32,
                                                  "metric_type": "l2"}).status_code == 201
            for start in range(0, 1_000, 100):
                r = client.post("/datasets/durable/vectors", json={"vectors": [
                    {"id": f"v{i}", "values": data[i].tolist(), "content": f"c{i}"}
                    for i in range(start, start + 100)]})
                assert r.status_code == 201 and r.json()["inserted_count"] == 100
        cluster.kill9_everything()

        restarted = cluster.again()
        # Whatever happens below, the restarted cluster must not outlive the test.
        cluster = restarted
        restarted.start()
        with httpx.Client(base_url=restarted.rest, timeout=60) as client:
            assert client.get("/datasets/durable").json()["dataset"]["vector_count"] == 1_000
            for i in range(1_000):
                r = client.get(f"/datasets/durable/vectors/v{i}")
                assert r.status_code == 200, (i, r.text)
                assert r.json()["vector"]["values"] == pytest.approx(data[i].tolist(), rel=1e-5)
                hits = client.post("/datasets/durable/search", json={
                    "query_vector": data[i].tolist(), "options": {"top_k": 1}}).json()["results"]
                assert hits[0]["vector"]["id"] == f"v{i}", i
    finally:
        cluster.stop()


def test_sigterm_stops_every_child_within_10_s_and_data_is_served_again(tmp_path):
    cluster = Cluster(tmp_path / "data", nodes=1).start()
    with httpx.Client(base_url=cluster.rest, timeout=60) as client:
        assert client.post("/datasets", json={"name": "again", "dimensions": 4}).status_code \
            == 201
        assert client.post("/datasets/again/vectors", json={"vectors": [
            {"id": "a", "values": [1, 2, 3, 4]}]}).status_code == 201
    children = cluster.pids()
    assert len(children) == 1 + 3 + 1 + 1
    elapsed = cluster.stop()
    assert elapsed < 10.0
    cluster.start()
    try:
        got = httpx.get(f"{cluster.rest}/datasets/again/vectors/a", timeout=30)
        assert got.status_code == 200, got.text
        wait_for(cluster.healthy, 30, what="healthy after restart")
    finally:
        cluster.stop()
