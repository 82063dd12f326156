"""Specification of tributary/limits.py."""

from __future__ import annotations

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
