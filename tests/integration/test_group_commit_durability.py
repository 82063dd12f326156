"""Promise 2 under group commit: a shard's store commits in the background
(group_commit_interval_ms), so acknowledged writes may be in the op log only when every process
dies. Here the background commit never comes before the kill (the interval is 10 minutes), and
the restart must replay the op log past the store's last commit on every copy. One shard, so
every batch is a one-phase write (test_2pc_group_commit_durability.py does the same for 2PC
batches)."""

from __future__ import annotations

import glob
import os
import re

import httpx
import numpy as np
import pytest

from cluster import Cluster

pytestmark = pytest.mark.integration


def test_acked_writes_the_store_had_not_committed_survive_kill_9_of_every_process(tmp_path):
    rng = np.random.default_rng(18)
    data = rng.standard_normal((600, 16)).astype(np.float32)
    env = {"TRIBUTARY_GROUP_COMMIT_INTERVAL_MS": "600000"}
    cluster = Cluster(tmp_path / "data", meta=1, nodes=2, env=env).start()
    try:
        with httpx.Client(base_url=cluster.rest, timeout=60) as client:
            assert client.post("/datasets", json={
                "name": "lagging", "dimensions": 16, "metric_type": "l2", "shard_count": 1,
                "replication_factor": 2}).status_code == 201
            for start in range(0, 600, 100):
                r = client.post("/datasets/lagging/vectors", json={"vectors": [
                    {"id": f"v{i}", "values": data[i].tolist()}
                    for i in range(start, start + 100)]})
                assert r.status_code == 201 and r.json()["inserted_count"] == 100
            # Deletes and overwrites are ops too: their replay keeps the order.
            deleted = client.request("DELETE", "/datasets/lagging/vectors/batch",
                                     json={"vector_ids": [f"v{i}" for i in range(10)]})
            assert deleted.json()["deleted_count"] == 10
            r = client.post("/datasets/lagging/vectors", json={"vectors": [
                {"id": "v20", "values": data[0].tolist()}], "overwrite": True})
            assert r.json()["inserted_count"] == 1
        cluster.kill9_everything()

        restarted = cluster.again()
        cluster = restarted
        restarted.start()
        with httpx.Client(base_url=restarted.rest, timeout=60) as client:
            assert client.get("/datasets/lagging").json()["dataset"]["vector_count"] == 590
            for i in range(600):
                r = client.get(f"/datasets/lagging/vectors/v{i}")
                if i < 10:
                    assert r.status_code == 404, i
                    continue
                assert r.status_code == 200, (i, r.text)
                expected = data[0] if i == 20 else data[i]
                assert r.json()["vector"]["values"] == pytest.approx(expected.tolist(),
                                                                     rel=1e-5)
        # Both copies replayed their logs from the position their store's commit recorded
        # (the store's first positioned write is committed at once, so there is one).
        logs = "".join(open(path, errors="replace").read() for path in
                       glob.glob(os.path.join(restarted.data_dir, "logs", "node-*.log")))
        replays = re.findall(r"applied (\d+) logged op\(s\) past the store's last commit "
                             r"\(op (\d+)\)", logs)
        assert len(replays) == 2 and all(int(n) >= 6 for n, _ in replays), logs[-3000:]
    finally:
        cluster.stop()
