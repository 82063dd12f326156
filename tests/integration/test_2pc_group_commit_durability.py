"""Promise 2 for 2PC batches under group commit: a COMMIT decision's rows reach Deep Lake with
the replica's background commit (group_commit_interval_ms, 10 minutes here, so never before the
kill), while the op log holds the decision and the staged plan stays on disk. Every batch spans
both shards (a 2PC txn); kill -9 of every process; the restart must replay the logged decisions
from the kept plans on every copy, so every acknowledged row comes back."""

from __future__ import annotations

import glob
import os

import httpx
import numpy as np
import pytest

from cluster import Cluster
from router.routing import shard_of

pytestmark = pytest.mark.integration

SHARDS = 2
DIMS = 16


def staged_plans(data_dir: str) -> list[str]:
    return glob.glob(os.path.join(data_dir, "node-*", "**", "txns", "*.bin"), recursive=True)


def test_acked_2pc_commits_the_store_had_not_committed_survive_kill_9_of_every_process(
        tmp_path):
    rng = np.random.default_rng(182)
    data = rng.standard_normal((600, DIMS)).astype(np.float32)
    env = {"TRIBUTARY_GROUP_COMMIT_INTERVAL_MS": "600000"}
    cluster = Cluster(tmp_path / "data", meta=1, nodes=2, env=env).start()
    try:
        with httpx.Client(base_url=cluster.rest, timeout=60) as client:
            assert client.post("/datasets", json={
                "name": "lagging2pc", "dimensions": DIMS, "metric_type": "l2",
                "shard_count": SHARDS, "replication_factor": 2}).status_code == 201
            for start in range(0, 600, 100):
                batch = range(start, start + 100)
                assert {shard_of(f"v{i}", SHARDS) for i in batch} == {0, 1}
                r = client.post("/datasets/lagging2pc/vectors", json={"vectors": [
                    {"id": f"v{i}", "values": data[i].tolist()} for i in batch]})
                assert r.status_code == 201 and r.json()["inserted_count"] == 100, r.text
            # A delete across both shards and an overwrite are decisions too: their replay
            # keeps the order.
            gone = [f"v{i}" for i in range(10)]
            assert {shard_of(i, SHARDS) for i in gone} == {0, 1}
            deleted = client.request("DELETE", "/datasets/lagging2pc/vectors/batch",
                                     json={"vector_ids": gone})
            assert deleted.json()["deleted_count"] == 10
            pair = ["v20", "v21"] if shard_of("v20", SHARDS) != shard_of("v21", SHARDS) \
                else ["v20", "v22"]
            assert {shard_of(i, SHARDS) for i in pair} == {0, 1}
            r = client.post("/datasets/lagging2pc/vectors", json={"vectors": [
                {"id": i, "values": data[0].tolist()} for i in pair], "overwrite": True})
            assert r.json()["inserted_count"] == 2
        # Acknowledged, yet in no Deep Lake commit: the plans of those commits are still on
        # disk (both copies of both shards hold theirs).
        assert len(staged_plans(cluster.data_dir)) >= 4
        cluster.kill9_everything()

        restarted = cluster.again()
        cluster = restarted
        restarted.start()
        with httpx.Client(base_url=restarted.rest, timeout=60) as client:
            assert client.get("/datasets/lagging2pc").json()["dataset"]["vector_count"] == 590
            for i in range(600):
                r = client.get(f"/datasets/lagging2pc/vectors/v{i}")
                if i < 10:
                    assert r.status_code == 404, i
                    continue
                assert r.status_code == 200, (i, r.text)
                expected = data[0] if f"v{i}" in pair else data[i]
                assert r.json()["vector"]["values"] == pytest.approx(expected.tolist(),
                                                                     rel=1e-5)
    finally:
        cluster.stop()
