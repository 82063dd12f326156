"""Specification of tributary/limits.py."""

from __future__ import annotations

import ast
import pathlib

import pytest

from tributary import limits


def test_the_shipped_limits_are_consistent():
    assert limits.check() is None


def test_as_dict_lists_the_limits_as_integers():
    table = limits.as_dict()
    assert table["batch_vectors_max"] == limits.batch_vectors_max == 10_000
    assert table["top_k_max"] == limits.top_k_max
    assert table["hnsw_initial_capacity_vectors"] == limits.hnsw_initial_capacity_vectors
    assert table["node_heartbeat_interval_ms"] == limits.node_heartbeat_interval_ms
    assert table["ef_search_default"] == limits.ef_search_default
    assert all(isinstance(v, int) and not isinstance(v, bool) for v in table.values())
    assert "as_dict" not in table and "check" not in table and "annotations" not in table


def test_every_module_level_integer_limit_appears_in_as_dict():
    ints = {k for k, v in vars(limits).items() if isinstance(v, int) and not k.startswith("_")}
    assert ints == set(limits.as_dict())


@pytest.mark.parametrize("name,value", [
    ("top_k_max", 0),
    ("top_k_max", limits.ef_search_max + 1),
    ("request_bytes_max", limits.grpc_message_bytes_max + 1),
    ("node_liveness_timeout_ms", limits.node_heartbeat_interval_ms * 3 - 1),
    ("shutdown_grace_ms", 10_000),
])
def test_check_refuses_contradictory_limits(monkeypatch, name, value):
    monkeypatch.setattr(limits, name, value)
    with pytest.raises(ValueError):
        limits.check()


@pytest.mark.parametrize("name,value", [
    ("meta_election_timeout_min_ms", limits.meta_election_timeout_max_ms),
    ("meta_election_timeout_min_ms", 0),
    ("meta_connect_timeout_ms", limits.meta_election_timeout_max_ms - 1),
    ("meta_leader_fallback_ms", limits.meta_election_timeout_max_ms),
    ("meta_stop_grace_ms", limits.shutdown_grace_ms),
    ("router_stop_grace_ms", limits.shutdown_grace_ms),
    ("node_stop_grace_ms", limits.shutdown_grace_ms - limits.shard_close_drain_ms),
    ("hnsw_save_check_interval_ms", limits.hnsw_save_interval_ms + 1),
    ("meta_leader_status_timeout_ms", limits.meta_rpc_timeout_ms + 1),
    ("indexer_join_timeout_ms", limits.shard_close_drain_ms),
])
def test_check_refuses_timings_that_contradict_each_other(monkeypatch, name, value):
    """Raft's election window must be a window, a leader must not step down before an election
    could replace it, and every server's stop (a node's with its shards' drain) must end
    within the supervisor's shutdown grace."""
    monkeypatch.setattr(limits, name, value)
    with pytest.raises(ValueError):
        limits.check()


_TIMING_KEYWORDS = {"grace", "max_workers", "heartbeat", "timeout", "timeout_s", "interval"}


def _literal_timings(source: str) -> list[str]:
    """Calls that pass a number literal as a timing or a pool size: sleep(5), grace=2,
    max_workers=16, heartbeat=30, timeout=0.5, and pysyncobj's raftMinTimeout=0.4-style names."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else \
            getattr(node.func, "id", "")
        numbers = [(kw.arg, kw.value) for kw in node.keywords
                   if kw.arg in _TIMING_KEYWORDS or (kw.arg or "").endswith(("Timeout", "Time",
                                                                             "Entries"))]
        if name == "sleep":
            numbers += [("sleep", arg) for arg in node.args]
        found += [f"line {node.lineno}: {label}={value.value}" for label, value in numbers
                  if isinstance(value, ast.Constant) and type(value.value) in (int, float)
                  and value.value != 0]
    return found


def test_the_servers_take_their_timings_from_limits():
    """Every tuning number of the servers lives in tributary/limits.py (checked there, listed
    on the stats endpoint); a literal in a call is one that escaped."""
    repo = pathlib.Path(__file__).resolve().parents[2]
    escaped = {}
    for package in ("router", "node", "consensus", "shard"):
        for path in sorted((repo / package).rglob("*.py")):
            if not path.name.endswith("_pb2.py") and not path.name.endswith("_pb2_grpc.py"):
                hits = _literal_timings(path.read_text(encoding="utf-8"))
                if hits:
                    escaped[str(path.relative_to(repo))] = hits
    assert escaped == {}


def test_the_literal_timing_scan_finds_the_usual_forms():
    source = ("import asyncio, time\n"
              "async def f(server, conf):\n"
              "    await asyncio.sleep(5)\n"
              "    await server.stop(grace=2)\n"
              "    conf(raftMinTimeout=0.4, logCompactionMinEntries=10)\n"
              "    time.sleep(limits.x_ms / 1000)\n")
    assert sorted(h.split(": ")[1] for h in _literal_timings(source)) == [
        "grace=2", "logCompactionMinEntries=10", "raftMinTimeout=0.4", "sleep=5"]
