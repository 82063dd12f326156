"""The node's per-copy gauges (node/metrics.py NodeCollector): registering the collector must not
walk the copies' directories (it ran at every start, 1.3 s at 1M rows); a scrape does."""

from __future__ import annotations

import types

from prometheus_client import CollectorRegistry, generate_latest

from consensus import commands as c
from consensus.state import MetaState, apply
from node import metrics as node_metrics


class _Replica:
    path = "/nonexistent"
    indexed_vectors_total = 4

    def count(self):
        return 7

    def soft_deleted_count(self):
        return 0

    def pending_count(self):
        return 0


def test_registering_reads_no_directory_and_a_scrape_reports_each_copy(monkeypatch):
    state = MetaState()
    state, _ = apply(state, c.RegisterNode("n1", "n1:1", 1))
    state, _ = apply(state, c.CreateDataset("u1", "t", "d", "", 4, "cosine", "hnsw", {},
                                            ("n1",), 1, 1, (("n1",),)))
    host = types.SimpleNamespace(node_id="n1", catalog=types.SimpleNamespace(state=state),
                                 replicas={("u1", 0): _Replica()})
    replication = types.SimpleNamespace(
        oplog=lambda uuid, shard: types.SimpleNamespace(last_seq=3), progress={})
    walked = []
    monkeypatch.setattr(node_metrics, "directory_bytes", lambda path: walked.append(path) or 99)
    # As the process-wide REGISTRY the node registers with: it asks new collectors their names.
    registry = CollectorRegistry(auto_describe=True)
    registry.register(node_metrics.NodeCollector(host, replication))
    assert walked == []
    text = generate_latest(registry).decode()
    assert walked == ["/nonexistent"]
    assert 'tributary_node_vectors{dataset="d",shard="0",tenant="t"} 7.0' in text
    assert 'tributary_node_shard_disk_bytes{dataset="d",shard="0",tenant="t"} 99.0' in text
    assert 'tributary_node_copy_last_seq{dataset="d",shard="0",tenant="t"} 3.0' in text
