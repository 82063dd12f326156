"""`tributary up add-node` (issue 12): a node joins the running local cluster at the port the
port contract gives it (internal_port_base + 100 + i), copies move onto it with `tributary
admin rebalance`, and a later `tributary up` on the same data dir runs it again."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from cluster import Cluster, wait_for
from test_scale_out import admin, nodes

pytestmark = pytest.mark.integration


def test_add_node_joins_a_running_up_cluster_and_stays_after_a_restart(tmp_path):
    c = Cluster(tmp_path / "cluster", meta=1, nodes=2).start()
    try:
        with httpx.Client(base_url=c.rest, timeout=60) as client:
            assert client.post("/datasets", json={"name": "grow", "dimensions": 4,
                                                  "shard_count": 3}).status_code == 201
            assert client.post("/datasets/grow/vectors", json={"vectors": [
                {"id": f"v{i}", "values": [1.0, i, 2.0, 3.0]} for i in range(60)]}
            ).status_code == 201
        added = subprocess.run([sys.executable, "-m", "tributary.cli", "up", "add-node",
                                "--data-dir", c.data_dir, "--wait-timeout", "90"],
                               capture_output=True, text=True, timeout=120)
        assert added.returncode == 0, added.stderr
        doc = json.loads(added.stdout)
        assert doc == {"added": [{"node_id": "node-2",
                                  "address": f"127.0.0.1:{c.internal_base + 102}"}],
                       "nodes": 3}
        listed = nodes(c)
        assert listed["node-2"]["state"] == "live" and listed["node-2"]["copies"] == 0
        with open(f"{c.data_dir}/cluster.json") as handle:
            assert len(json.load(handle)["nodes"]) == 3

        admin(c, "rebalance", "--wait", "--wait-timeout", "180")
        assert nodes(c)["node-2"]["copies"] >= 2

        c.stop()
        c.start()
        wait_for(lambda: nodes(c).get("node-2", {}).get("state") == "live", 60, 0.5,
                 "node-2 live after the restart")
        with httpx.Client(base_url=c.rest, timeout=30) as client:
            missing = [i for i in range(60)
                       if client.get(f"/datasets/grow/vectors/v{i}").status_code != 200]
        assert missing == []
    finally:
        c.stop()


def test_add_node_without_a_cluster_is_a_one_line_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tributary.cli", "up", "add-node",
                             "--data-dir", str(tmp_path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cluster.json" in result.stderr
