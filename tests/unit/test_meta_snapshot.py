"""The meta group's snapshots are JSON through to_doc/from_doc (consensus/member.py), never
pickles: a real one-member pysyncobj group writes one at compaction and a restart reads the same
state back; a pickled snapshot from before is read once from disk, then rewritten as JSON, and
one that arrives later (as from a peer) is refused."""

from __future__ import annotations

import gzip
import json
import pickle
import time

import pytest

from consensus import commands, state as meta_state
from consensus.member import MetaStateMachine
from tributary import procs


def _free_address() -> str:
    return f"127.0.0.1:{procs.free_port()}"


def _wait(predicate, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError("condition not reached")


def _machine(data_dir) -> MetaStateMachine:
    machine = MetaStateMachine(_free_address(), [], str(data_dir), "a-raft-password-0123456789")
    _wait(machine._isReady)
    return machine


def _register(machine: MetaStateMachine, node_id: str) -> None:
    machine.propose(commands.encode(commands.RegisterNode(node_id, f"{node_id}:1", 1)), 10)


def test_a_compaction_writes_json_and_a_restart_reads_the_same_state(tmp_path):
    machine = _machine(tmp_path)
    try:
        for i in range(3):
            _register(machine, f"node-{i}")
        expected = meta_state.to_doc(machine.meta)
        machine.forceLogCompaction()
        dump = tmp_path / "raft.dump"
        doc = _wait(lambda: dump.exists() and json.loads(dump.read_text()))
    finally:
        machine.destroy()
    assert doc["format"] == "tributary-meta-snapshot" and doc["version"] == 1
    assert doc["meta"] == expected
    (tmp_path / "raft.journal").unlink()   # only the snapshot can bring the state back
    again = _machine(tmp_path)
    try:
        _wait(lambda: sorted(again.meta.nodes) == ["node-0", "node-1", "node-2"])
        assert meta_state.to_doc(again.meta)["nodes"] == expected["nodes"]
    finally:
        again.destroy()


def test_a_pickled_snapshot_on_disk_is_read_once_and_rewritten_as_json(tmp_path):
    legacy_state, _ = meta_state.apply(meta_state.MetaState(),
                                       commands.RegisterNode("old-node", "old:1", 1))
    # The layout pysyncobj's default serializer wrote: (own attributes, last applied entry,
    # the entry before it, the cluster's nodes), gzip-compressed pickle.
    no_op = b"\x00"
    with gzip.open(tmp_path / "raft.dump", "wb") as handle:
        pickle.dump(({"meta": legacy_state}, (no_op, 2, 1), (no_op, 1, 1), set()), handle)
    machine = _machine(tmp_path)
    try:
        _wait(lambda: "old-node" in machine.meta.nodes)
        _register(machine, "new-node")
        dump = tmp_path / "raft.dump"
        doc = _wait(lambda: dump.read_bytes()[:1] == b"{" and json.loads(dump.read_text()))
        assert "old-node" in doc["meta"]["nodes"]
    finally:
        machine.destroy()


def test_a_pickled_snapshot_after_start_up_is_refused(tmp_path):
    machine = _machine(tmp_path)
    try:
        path = tmp_path / "from-peer.dump"
        with gzip.open(path, "wb") as handle:
            pickle.dump(({"meta": meta_state.MetaState()}, (b"\x00", 2, 1), (b"\x00", 1, 1),
                         set()), handle)
        with pytest.raises(ValueError, match="refusing a pickled snapshot"):
            machine._load_snapshot(str(path))
    finally:
        machine.destroy()
