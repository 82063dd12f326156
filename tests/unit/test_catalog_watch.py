"""consensus/watch.py: a client that replays each revision's changes holds the same catalog as
the member, 2PC bookkeeping leaves the revision alone, and the history says when a client must
take a snapshot again (etcd's compacted watch)."""

from __future__ import annotations

import json
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import commands as c
from consensus import watch
from consensus.state import MetaState, apply


def _create(uuid: str, tenant: str, name: str, node: str = "n1") -> c.CreateDataset:
    return c.CreateDataset(uuid=uuid, tenant_id=tenant, name=name, description="",
                           dimensions=4, metric_type="cosine", index_type="hnsw", metadata={},
                           placement=(node,), at_ms=1)


_COMMANDS = st.lists(st.one_of(
    st.builds(lambda i, t, n: _create(f"u{i}", t, n), st.integers(0, 4),
              st.sampled_from(["t1", "t2"]), st.sampled_from(["a", "b"])),
    st.builds(lambda t, n: c.DeleteDataset(t, n, 2), st.sampled_from(["t1", "t2"]),
              st.sampled_from(["a", "b"])),
    st.builds(lambda i, n: c.PlaceShard(f"u{i}", 0, n, 3), st.integers(0, 4),
              st.sampled_from(["n1", "n2"])),
    st.builds(lambda n: c.RegisterNode(n, f"{n}:1", 4), st.sampled_from(["n1", "n2", "n3"])),
    st.builds(lambda t: c.ProvisionTenant(t, t, {}, "active", 5), st.sampled_from(["t3", "t4"])),
    st.builds(lambda t: c.DeleteTenant(t, 6), st.sampled_from(["t3", "t4"])),
    st.builds(lambda i: c.DecideTxn(f"x{i}", "commit", ("p/0", "p/1"), f"k{i}", "{}", 7),
              st.integers(0, 3)),
    st.builds(lambda i: c.AckTxns(((f"x{i}", "p/0"), (f"x{i}", "p/1")), 8), st.integers(0, 3)),
), max_size=30)


@settings(max_examples=150, deadline=None)
@given(_COMMANDS)
def test_replaying_each_revisions_changes_rebuilds_the_members_catalog(cmds):
    member, _ = apply(MetaState(), c.RegisterNode("n1", "n1:1", 0))
    client = watch.catalog_from_doc(json.loads(json.dumps(watch.catalog_doc(member))))
    for command in cmds:
        before = member
        member, _ = apply(member, command)
        if member.version != before.version:
            changes = json.loads(json.dumps(watch.catalog_changes(before, member)))
            client = watch.apply_changes(client, member.version, [tuple(x) for x in changes])
        assert client.version == member.version
        assert watch.catalog_doc(client) == watch.catalog_doc(member)


def test_2pc_decisions_and_acks_leave_the_catalog_revision_alone():
    state, _ = apply(MetaState(), c.RegisterNode("n1", "n1:1", 0))
    revision = state.version
    state, result = apply(state, c.DecideTxn("x1", "commit", ("p/0", "p/1"), "key", "{}", 1))
    assert result["first"] and state.txns["x1"].decision == "commit"
    state, _ = apply(state, c.AckTxns((("x1", "p/0"), ("x1", "p/1")), 2))
    assert "x1" not in state.txns and state.txn_tombstones["x1"][0] == "commit"
    assert state.version == revision


def test_a_snapshot_carries_no_2pc_bookkeeping():
    state, _ = apply(MetaState(), c.DecideTxn("x1", "commit", ("p/0",), "key", "{}", 1))
    doc = watch.catalog_doc(state)
    assert not {"txns", "idempotency", "txn_tombstones"} & set(doc)


def test_history_streams_the_changes_after_a_revision_and_reports_compaction():
    history = watch.WatchHistory(revisions_max=3, base_revision=10)
    for revision in range(11, 16):
        history.record(revision, [("nodes", f"n{revision}", None)])
    # Revisions 13..15 are held; a client at 12 or later resumes, one at 11 must resnapshot.
    assert [r for r, _ in history.after(12, 0)] == [13, 14, 15]
    assert [r for r, _ in history.after(14, 0)] == [15]
    with pytest.raises(watch.Compacted) as raised:
        history.after(11, 0)
    assert raised.value.oldest == 12


def test_history_wakes_a_waiting_stream_when_a_revision_is_recorded():
    history = watch.WatchHistory(revisions_max=10, base_revision=0)
    got = []
    waiter = threading.Thread(target=lambda: got.extend(history.after(0, 10)))
    waiter.start()
    history.record(1, [("nodes", "n1", None)])
    waiter.join(5)
    assert [r for r, _ in got] == [1]


def test_a_snapshot_installed_from_the_leader_compacts_the_history():
    history = watch.WatchHistory(revisions_max=10, base_revision=0)
    history.record(1, [])
    history.reset(40)
    with pytest.raises(watch.Compacted):
        history.after(1, 0)
    assert history.after(40, 0) == []
