"""The router's replication gauges (router/metrics.py ReplicationCollector), from a catalog."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from consensus import commands as c
from consensus.state import MetaState, apply
from router.metrics import ReplicationCollector


def test_gauges_count_shards_under_replicated_shards_and_each_nodes_copies():
    state = MetaState()
    for n in ("n1", "n2", "n3"):
        state, _ = apply(state, c.RegisterNode(n, f"{n}:1", 1))
    state, _ = apply(state, c.CreateDataset("u1", "t", "d", "", 4, "cosine", "hnsw", {},
                                            ("n1", "n2"), 1, 2, (("n1", "n2"), ("n2", "n3"))))
    state, _ = apply(state, c.SetInSync("u1", 1, "n3", False, 1, 2))
    registry = CollectorRegistry()
    registry.register(ReplicationCollector(lambda: state))
    text = generate_latest(registry).decode()
    assert "tributary_shards 2.0" in text
    assert "tributary_shards_under_replicated 1.0" in text
    assert 'tributary_node_copies{node="n2"} 2.0' in text
    assert 'tributary_node_primaries{node="n1"} 1.0' in text
    assert 'tributary_node_primaries{node="n3"} 0.0' in text
