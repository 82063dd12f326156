"""Promise 1: metadata lives in a real pysyncobj Raft group that survives losing its leader and
restores a restarted member from its journal."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import httpx
import pytest

from cluster import Cluster, child_pid, wait_for
from consensus import commands
from proto import meta_pb2, node_pb2
from tributary import limits

pytestmark = pytest.mark.integration


def meta_status(cluster: Cluster, i: int) -> meta_pb2.MetaStatusResponse | None:
    try:
        with grpc.insecure_channel(cluster.meta_grpc(i)) as channel:
            return cluster.meta_stub(channel).Status(meta_pb2.MetaStatusRequest(), timeout=1)
    except grpc.RpcError:
        return None


def leader_index(cluster: Cluster) -> int | None:
    for i in range(cluster.meta):
        status = meta_status(cluster, i)
        if status is not None and status.is_leader:
            return i
    return None


@pytest.fixture
def own_cluster(tmp_path):
    c = Cluster(tmp_path / "data").start()
    yield c
    c.stop()


def test_catalog_survives_kill_9_of_the_meta_leader(own_cluster):
    c = own_cluster
    with httpx.Client(base_url=c.rest, timeout=60) as client:
        assert client.post("/datasets", json={"name": "before", "dimensions": 4}
                           ).status_code == 201
        wait_for(lambda: leader_index(c) is not None, 20, what="a leader")
        old_leader = leader_index(c)
        old_term = meta_status(c, old_leader).raft_term
        os.kill(child_pid(c, f"--raft 127.0.0.1:{c.internal_base + old_leader} "), signal.SIGKILL)
        # A new leader among the survivors accepts catalog writes.
        # A leader elected in a later term. The supervisor restarts the killed member within
        # a fraction of a second, so it may itself win that election.
        def new_term_leader():
            index = leader_index(c)
            status = meta_status(c, index) if index is not None else None
            return status is not None and status.is_leader and status.raft_term > old_term
        wait_for(new_term_leader, 30, 0.2, "a leader in a later term")

        def create_after():
            return client.post("/datasets", json={"name": "after", "dimensions": 4}
                               ).status_code in (201, 409)
        wait_for(create_after, 30, 0.5, "catalog write after failover")
        names = {d["name"] for d in client.get("/datasets").json()["datasets"]}
        assert {"before", "after"} <= names
        # The supervisor restarts the killed member; it rejoins and catches up.
        wait_for(lambda: (s := meta_status(c, old_leader)) is not None and
                 s.version >= meta_status(c, leader_index(c)).version, 60, 0.5,
                 "restarted member caught up")
        wait_for(c.healthy, 30, what="healthy")


def test_meta_member_restarted_on_its_data_dir_keeps_the_catalog(tmp_path):
    c = Cluster(tmp_path / "data").start()
    try:
        with httpx.Client(base_url=c.rest, timeout=60) as client:
            for i in range(5):
                assert client.post("/datasets", json={"name": f"d{i}", "dimensions": 4}
                                   ).status_code == 201
        c.stop()
        # Every member restarts on its own data dir: the catalog comes back from the journals.
        c.start()
        with httpx.Client(base_url=c.rest, timeout=60) as client:
            names = {d["name"] for d in client.get("/datasets").json()["datasets"]}
        assert names == {f"d{i}" for i in range(5)}
    finally:
        c.stop()


def test_meta_member_refuses_non_loopback_bind_without_password(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tributary.cli", "meta", "--raft", "0.0.0.0:39901",
         "--grpc", "127.0.0.1:39902", "--data-dir", str(tmp_path / "m"),
         "--peer", "10.1.2.3:39901=10.1.2.3:39902"],
        capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "TRIBUTARY_META_PASSWORD"})
    assert result.returncode != 0
    assert "password" in result.stderr


def test_node_refuses_a_stale_placement_epoch(cluster):
    """Promise 5: a request planned with an older epoch than the node knows is refused."""
    with httpx.Client(base_url=cluster.rest, timeout=60) as client:
        assert client.post("/datasets", json={"name": "fenced", "dimensions": 4,
                                              "shard_count": 1}).status_code == 201
        client.post("/datasets/fenced/vectors", json={"vectors": [
            {"id": "a", "values": [1, 2, 3, 4]}]})
    from consensus import commands
    from consensus.client import MetaClient
    import time

    async def move_shard():
        meta = MetaClient([cluster.meta_grpc(i) for i in range(cluster.meta)], cluster.token())
        try:
            state = await meta.get_state(linearizable=True)
            record = state.dataset_by_name("default", "fenced")
            other = next(n for n in sorted(state.nodes) if n != record.placement[0])
            # Re-placing on the same node still bumps the epoch: enough to fence old requests.
            result = await meta.propose(commands.PlaceShard(record.uuid, 0, record.placement[0],
                                                            int(time.time() * 1000)))
            return record, state.nodes[record.placement[0]].address, result["epoch"], other
        finally:
            await meta.close()

    record, address, new_epoch, _ = asyncio.run(move_shard())
    assert new_epoch == record.epoch + 1
    with grpc.insecure_channel(address) as channel:
        stub = cluster.node_stub(channel)
        stale = node_pb2.ShardRef(dataset_uuid=record.uuid, shard=0, epoch=record.epoch)

        def stale_refused():
            # The node learns the new epoch from its catalog watch; from then on the old
            # epoch must be refused.
            try:
                stub.Get(node_pb2.GetRequest(shard=stale, ids=["a"]))
                return None
            except grpc.RpcError as exc:
                return exc
        refused = wait_for(stale_refused, 10, 0.1, "stale epoch refused")
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "StaleEpoch" in refused.details()
        current = node_pb2.ShardRef(dataset_uuid=record.uuid, shard=0, epoch=new_epoch)
        assert [v.id for v in stub.Get(node_pb2.GetRequest(shard=current, ids=["a"])).vectors] \
            == ["a"]
    # The router's cached epoch is now stale: it must refresh and retry transparently.
    r = httpx.get(f"{cluster.rest}/datasets/fenced/vectors/a", timeout=30)
    assert r.status_code == 200


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_meta_leader_stops_promptly_while_reads_wait_on_a_lost_quorum(own_cluster):
    """SIGTERM of a meta leader whose linearizable reads and proposals wait for a quorum that
    cannot answer (both followers frozen): they give up with UNAVAILABLE at once and the member
    exits within its stop grace, instead of holding its exit until their deadline
    (meta_rpc_timeout_ms) or its step-down. Every `tributary up` stop used to wait ~4 s on
    this for the last meta member, whose peers had already gone."""
    c = own_cluster
    wait_for(lambda: leader_index(c) is not None, 20, what="a leader")
    leader = leader_index(c)
    followers = [child_pid(c, f"--raft 127.0.0.1:{c.internal_base + i} ")
                 for i in range(c.meta) if i != leader]
    leader_pid = child_pid(c, f"--raft 127.0.0.1:{c.internal_base + leader} ")
    for pid in followers:
        os.kill(pid, signal.SIGSTOP)
    try:
        outcomes: list = []

        def wait_on_quorum(propose: bool) -> None:
            timeout = limits.meta_rpc_timeout_ms / 1000 * 2
            try:
                with grpc.insecure_channel(c.meta_grpc(leader)) as channel:
                    stub = c.meta_stub(channel)
                    if propose:
                        stub.Propose(meta_pb2.ProposeRequest(command_json=commands.encode(
                            commands.Barrier(at_ms=1))), timeout=timeout)
                    else:
                        stub.GetState(meta_pb2.GetStateRequest(linearizable=True),
                                      timeout=timeout)
                outcomes.append("answered")
            except grpc.RpcError as exc:
                outcomes.append(exc.code())

        # Linearizable reads (ReadIndex) and proposals (a commit): both wait on the quorum.
        readers = [threading.Thread(target=wait_on_quorum, args=(i % 2 == 0,))
                   for i in range(4)]
        for reader in readers:
            reader.start()
        time.sleep(0.5)     # the calls reach the leader and wait for the frozen quorum
        assert not outcomes, f"a read returned before the leader stopped: {outcomes}"
        stopped_at = time.monotonic()
        os.kill(leader_pid, signal.SIGTERM)
        wait_for(lambda: not _running(leader_pid), 10, 0.02, "the meta leader's exit")
        took = time.monotonic() - stopped_at
        print(f"the meta leader exited {took:.2f} s after SIGTERM")
        for reader in readers:
            reader.join(timeout=15)
        assert took <= limits.meta_stop_grace_ms / 1000 + 0.8, (
            f"the leader took {took:.2f} s to exit with reads waiting on its quorum")
        assert outcomes and "answered" not in outcomes, outcomes
    finally:
        for pid in followers:
            os.kill(pid, signal.SIGCONT)
