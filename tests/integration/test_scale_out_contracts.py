"""The three CLI contracts of issue 12, exactly, through the real `tributary admin` against a
real cluster, with the router given by --url (a TRIBUTARY_URL pointing nowhere proves the flag
wins):
- `nodes list --json`: a JSON array, one object per node with node_id, address, state (live,
  down, draining, drained) and copies;
- `nodes drain NODE_ID --wait`: exit 0 once the node holds no copies; non-zero with a one-line
  reason when it cannot drain;
- `rebalance --dry-run --json`: the planned moves as a JSON array, and nothing changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from cluster import Cluster

pytestmark = pytest.mark.integration


def cli(c: Cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tributary.cli", "admin", *args, "--url",
                           c.rest.removesuffix("/api/v1")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TRIBUTARY_URL": "http://127.0.0.1:9"})


def listed(c: Cluster) -> list[dict]:
    result = cli(c, "nodes", "list", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_nodes_drain_and_dry_run_contracts_hold_through_the_cli(tmp_path):
    c = Cluster(tmp_path / "cluster", meta=1, nodes=3).start()
    try:
        with httpx.Client(base_url=c.rest, timeout=60) as client:
            assert client.post("/datasets", json={"name": "contract", "dimensions": 4,
                                                  "shard_count": 6}).status_code == 201
        doc = listed(c)
        assert isinstance(doc, list) and len(doc) == 3
        for i, node in enumerate(sorted(doc, key=lambda n: n["node_id"])):
            assert {"node_id", "address", "state", "copies"} <= set(node)
            assert node["node_id"] == f"node-{i}" and node["address"] == c.node_address(i)
            assert node["state"] == "live" and isinstance(node["copies"], int)
        assert sum(n["copies"] for n in doc) == 12

        before = listed(c)
        dry = cli(c, "rebalance", "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        assert isinstance(json.loads(dry.stdout), list)
        assert listed(c) == before

        drained = cli(c, "nodes", "drain", "node-2", "--wait", "--wait-timeout", "240")
        assert drained.returncode == 0, drained.stderr
        after = {n["node_id"]: n for n in listed(c)}
        assert after["node-2"]["copies"] == 0 and after["node-2"]["state"] == "drained"
        assert after["node-0"]["copies"] + after["node-1"]["copies"] == 12

        refused = cli(c, "nodes", "drain", "node-1", "--wait", "--wait-timeout", "60")
        assert refused.returncode != 0
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot drain node-1" in lines[0], refused.stderr
        assert {n["node_id"]: n["state"] for n in listed(c)}["node-1"] == "live"
    finally:
        c.stop()
