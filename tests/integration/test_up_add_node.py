"""`tributary up add-node` (issue 12): a node joins the running local cluster at the port the
port contract gives it (internal_port_base + 100 + i), copies move onto it with `tributary
admin rebalance`, and a later `tributary up` on the same data dir runs it again.
`tributary up remove-node`: a drained node stops for good, the meta group forgets it, and a
later `tributary up` leaves it out."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from cluster import Cluster, wait_for
from tributary import procs
from test_scale_out import admin, nodes

pytestmark = pytest.mark.integration


def up_command(c: Cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tributary.cli", "up", *args, "--data-dir",
                           c.data_dir], capture_output=True, text=True, timeout=120)


def load_sixty(c: Cluster, dataset: str) -> None:
    """A 3-shard dataset holding v0..v59."""
    with httpx.Client(base_url=c.rest, timeout=60) as client:
        assert client.post("/datasets", json={"name": dataset, "dimensions": 4,
                                              "shard_count": 3}).status_code == 201
        assert client.post(f"/datasets/{dataset}/vectors", json={"vectors": [
            {"id": f"v{i}", "values": [1.0, i, 2.0, 3.0]} for i in range(60)]}
        ).status_code == 201


def missing_of(c: Cluster, dataset: str) -> list[int]:
    with httpx.Client(base_url=c.rest, timeout=30) as client:
        return [i for i in range(60)
                if client.get(f"/datasets/{dataset}/vectors/v{i}").status_code != 200]


def test_add_node_joins_a_running_up_cluster_and_stays_after_a_restart(tmp_path):
    c = Cluster(tmp_path / "cluster", meta=1, nodes=2).start()
    try:
        load_sixty(c, "grow")
        added = up_command(c, "add-node", "--wait-timeout", "90")
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
        assert missing_of(c, "grow") == []
    finally:
        c.stop()


def test_add_node_without_a_cluster_is_a_one_line_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tributary.cli", "up", "add-node",
                             "--data-dir", str(tmp_path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cluster.json" in result.stderr


def test_remove_node_stops_a_drained_node_for_good_and_a_restart_leaves_it_out(tmp_path):
    c = Cluster(tmp_path / "cluster", meta=1, nodes=3).start()
    node_2_port = c.internal_base + 102
    try:
        load_sixty(c, "shrink")
        assert nodes(c)["node-2"]["copies"] > 0
        refused = up_command(c, "remove-node", "node-2")
        assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1
        assert "drain it first: tributary admin nodes drain node-2 --wait" in refused.stderr
        assert not procs.port_free(node_2_port), "a refused removal stopped the node"

        admin(c, "nodes", "drain", "node-2", "--wait", "--wait-timeout", "180")
        removed = up_command(c, "remove-node", "node-2")
        assert removed.returncode == 0, removed.stderr
        assert json.loads(removed.stdout) == {"removed": "node-2", "nodes": ["node-0", "node-1"]}
        assert procs.port_free(node_2_port) and set(nodes(c)) == {"node-0", "node-1"}
        with open(f"{c.data_dir}/cluster.json") as handle:
            assert json.load(handle)["removed"] == ["node-2"]
        again = up_command(c, "remove-node", "node-2")
        assert again.returncode == 0 and json.loads(again.stdout)["removed"] == "node-2"

        c.stop()
        c.start()
        with httpx.Client(base_url=c.rest, timeout=30) as client:
            wait_for(lambda: client.get("/health").json().get("status") == "healthy", 60, 0.5,
                     "health ok after the restart without node-2")
        assert missing_of(c, "shrink") == []
        assert set(nodes(c)) == {"node-0", "node-1"} and procs.port_free(node_2_port)
    finally:
        c.stop()


@pytest.mark.parametrize("node_id", ["node-7", "node-01", "n1"])
def test_remove_node_of_an_unknown_node_is_a_one_line_error(tmp_path, node_id):
    (tmp_path / "cluster.json").write_text(json.dumps({"nodes": ["127.0.0.1:1", "127.0.0.1:2"],
                                                       "meta": []}))
    result = subprocess.run([sys.executable, "-m", "tributary.cli", "up", "remove-node",
                             node_id, "--data-dir", str(tmp_path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1
    assert f"{node_id!r} is not a node of the cluster" in result.stderr
    assert "node-0 to node-1" in result.stderr
    assert not (tmp_path / "nodes-removed").exists()


@pytest.mark.parametrize("command", [["add-node"], ["remove-node", "node-0"]])
def test_a_wait_timeout_that_is_not_positive_is_refused(tmp_path, command):
    result = subprocess.run([sys.executable, "-m", "tributary.cli", "up", *command,
                             "--wait-timeout", "0", "--data-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1
    assert "--wait-timeout must be a positive number of seconds" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
