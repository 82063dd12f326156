"""Replication end to end (DESIGN.md promise 7, node/replication.py): every shard has copies on
distinct nodes; a write is acknowledged only once every in-sync copy holds it; a frozen primary
is replaced by an in-sync copy while reads go on from the other copies; the old primary catches
up by itself and rejoins; afterwards every copy of a shard holds the same content."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time

import grpc
import httpx
import pytest

from cluster import Cluster, child_pid, wait_for
from consensus import commands
from consensus.client import MetaClient
from proto import node_pb2

pytestmark = pytest.mark.integration

DIMS = 8


@pytest.fixture(scope="module")
def replicated(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("replicated"), meta=1, nodes=3).start()
    yield c
    c.stop()


def catalog(c: Cluster):
    async def read():
        client = MetaClient([c.meta_grpc(0)], c.token())
        try:
            return await client.get_state(linearizable=True)
        finally:
            await client.close()
    return asyncio.run(read())


def record_of(c: Cluster, name: str):
    return next(r for r in catalog(c).datasets.values() if r.name == name)


def node_index(node_id: str) -> int:
    return int(node_id.rsplit("-", 1)[1])


def copy_status(c: Cluster, node_id: str, record, shard: int,
                digest: bool = False) -> node_pb2.CopyStatusResponse:
    with grpc.insecure_channel(c.node_address(node_index(node_id))) as channel:
        return c.node_stub(channel).CopyStatus(node_pb2.CopyStatusRequest(
            shard=node_pb2.ShardRef(dataset_uuid=record.uuid, shard=shard,
                                    epoch=record.epoch), with_content_digest=digest),
            timeout=30)


def vector(rng: random.Random) -> list[float]:
    return [rng.uniform(-1, 1) for _ in range(DIMS)]


def health(c: Cluster) -> dict:
    return httpx.get(f"{c.rest}/health", timeout=5).json()


def test_a_new_dataset_has_two_copies_of_each_shard_on_distinct_nodes(replicated):
    with httpx.Client(base_url=replicated.rest, timeout=30) as client:
        r = client.post("/datasets", json={"name": "two", "dimensions": DIMS,
                                           "shard_count": 3})
        assert r.status_code == 201, r.text
        assert r.json()["dataset"]["replication_factor"] == 2
        assert client.get("/datasets/two").json()["dataset"]["replication_factor"] == 2
    record = record_of(replicated, "two")
    for shard in range(3):
        copies = record.copies_of(shard)
        assert len(set(copies)) == 2 and record.primary_of(shard) in copies
        assert record.in_sync_of(shard) == copies and record.term_of(shard) == 1


@pytest.mark.parametrize("factor", [0, -1, 4])
def test_a_replication_factor_outside_one_to_the_live_nodes_is_refused(replicated, factor):
    with httpx.Client(base_url=replicated.rest, timeout=30) as client:
        r = client.post("/datasets", json={"name": f"bad{factor + 1}", "dimensions": DIMS,
                                           "replication_factor": factor})
        assert r.status_code == 400, r.text
        assert "between 1 and the 3 live node(s)" in r.json()["error"]["message"]
        assert client.get(f"/datasets/bad{factor + 1}").status_code == 404


def test_an_acknowledged_write_is_on_every_in_sync_copy(replicated):
    rng = random.Random(1)
    with httpx.Client(base_url=replicated.rest, timeout=30) as client:
        assert client.post("/datasets", json={"name": "acked", "dimensions": DIMS,
                                              "shard_count": 2, "replication_factor": 3}
                           ).status_code == 201
        r = client.post("/datasets/acked/vectors", json={"vectors": [
            {"id": f"a{i}", "values": vector(rng)} for i in range(200)]})
        assert r.status_code == 201, r.text
    record = record_of(replicated, "acked")
    for shard in range(2):
        statuses = [copy_status(replicated, n, record, shard) for n in record.copies_of(shard)]
        assert len({s.last_seq for s in statuses}) == 1 and statuses[0].last_seq >= 1
        assert len({s.vector_count for s in statuses}) == 1
    assert sum(copy_status(replicated, record.primary_of(s), record, s).vector_count
               for s in range(2)) == 200


def test_compaction_purges_soft_deleted_rows_on_every_copy(replicated):
    """Compaction removes soft-deleted rows for good; it is replicated like a write, so the
    copies keep holding the same rows (and a later failover cannot bring purged rows back)."""
    rng = random.Random(3)
    with httpx.Client(base_url=replicated.rest, timeout=60) as client:
        assert client.post("/datasets", json={"name": "compacted", "dimensions": DIMS,
                                              "shard_count": 2}).status_code == 201
        assert client.post("/datasets/compacted/vectors", json={"vectors": [
            {"id": f"c{i}", "values": vector(rng)} for i in range(60)]}).status_code == 201
        for i in range(0, 60, 3):
            r = client.post(f"/datasets/compacted/vectors/c{i}/soft-delete")
            assert r.status_code == 200, r.text
        r = client.post("/datasets/compacted/compact")
        assert r.status_code == 200, r.text
        assert r.json()["purged_count"] == 20
    record = record_of(replicated, "compacted")
    for shard in range(2):
        statuses = [copy_status(replicated, n, record, shard, digest=True)
                    for n in record.copies_of(shard)]
        assert len({s.content_digest for s in statuses}) == 1, statuses
        assert len({s.vector_count for s in statuses}) == 1
        assert len({s.last_seq for s in statuses}) == 1
    assert sum(copy_status(replicated, record.primary_of(s), record, s).vector_count
               for s in range(2)) == 40


def test_a_retried_write_answers_what_its_first_attempt_did_even_on_a_new_primary(replicated):
    """A router retries a one-phase write with the same write id (for instance on the new
    primary after a failover, which may have taken the first attempt over from its deposed
    predecessor's log). The retry answers the first attempt's outcome: a delete that happened
    says "deleted", not "not found" (a chaos run saw exactly that), on the same primary and on a
    copy promoted since."""
    rng = random.Random(5)
    with httpx.Client(base_url=replicated.rest, timeout=30) as client:
        assert client.post("/datasets", json={"name": "retried", "dimensions": DIMS,
                                              "shard_count": 1}).status_code == 201
        assert client.post("/datasets/retried/vectors", json={"vectors": [
            {"id": f"r{i}", "values": vector(rng)} for i in range(10)]}).status_code == 201
    record = record_of(replicated, "retried")

    def write(node_id: str, write_id: str, record) -> node_pb2.WriteResponse:
        with grpc.insecure_channel(replicated.node_address(node_index(node_id))) as channel:
            return replicated.node_stub(channel).Write(node_pb2.WriteRequest(
                shard=node_pb2.ShardRef(dataset_uuid=record.uuid, shard=0,
                                        epoch=record.epoch),
                delete_ids=["r1"], existing=node_pb2.EXISTING_OVERWRITE,
                write_id=write_id), timeout=30)

    primary = record.primary_of(0)
    first = write(primary, "delete-r1", record)
    assert (first.deleted, first.not_found) == (1, 0)
    again = write(primary, "delete-r1", record)
    assert (again.deleted, again.not_found) == (1, 0)
    other = write(primary, "another-delete-r1", record)      # a new write sees r1 gone
    assert (other.deleted, other.not_found) == (0, 1)

    copy = next(n for n in record.in_sync_of(0) if n != primary)

    async def promote():
        client = MetaClient([replicated.meta_grpc(0)], replicated.token())
        try:
            await client.propose(commands.PromotePrimary(record.uuid, 0, copy,
                                                         record.term_of(0),
                                                         int(time.time() * 1000)))
        finally:
            await client.close()
    asyncio.run(promote())
    wait_for(lambda: record_of(replicated, "retried").primary_of(0) == copy, 30, 0.2,
             "the copy promoted")

    def retried_on_new_primary():
        # The current placement each time, as a router does: the old primary rejoining the
        # in-sync set moves the epoch on, and a write planned on an older one is refused.
        current = record_of(replicated, "retried")
        assert current.primary_of(0) == copy
        try:
            return write(copy, "delete-r1", current)
        except grpc.RpcError:
            return None     # the new primary has not seen its promotion (or that epoch) yet
    retried = wait_for(retried_on_new_primary, 30, 0.2, "the new primary answers")
    assert (retried.deleted, retried.not_found) == (1, 0)
    with httpx.Client(base_url=replicated.rest, timeout=30) as client:
        assert client.get("/datasets/retried/vectors/r1").status_code == 404
        assert client.get("/datasets/retried/vectors/r2").status_code == 200


def test_a_frozen_primary_is_replaced_while_reads_go_on_and_it_rejoins_after(replicated):
    """SIGSTOP of the primary of shard 0: reads keep answering within 5 s, writes to its shard
    are acknowledged again after failover, the old primary rejoins the in-sync set by itself
    after SIGCONT, and every copy ends with the same content."""
    rng = random.Random(7)
    with httpx.Client(base_url=replicated.rest, timeout=30) as client:
        assert client.post("/datasets", json={"name": "frozen", "dimensions": DIMS,
                                              "shard_count": 3}).status_code == 201
        first = [{"id": f"f{i}", "values": vector(rng)} for i in range(300)]
        assert client.post("/datasets/frozen/vectors", json={"vectors": first}
                           ).status_code == 201
    before = record_of(replicated, "frozen")
    victim = before.primary_of(0)
    pid = child_pid(replicated, f"--listen 127.0.0.1:{replicated.internal_base + 100 + node_index(victim)}")
    acked: list[str] = []
    read_worst = [0.0]
    read_failures: list[str] = []
    stop = threading.Event()

    def reader():
        with httpx.Client(base_url=replicated.rest, timeout=10) as client:
            while not stop.is_set():
                vid = f"f{rng.randrange(300)}"
                started = time.monotonic()
                try:
                    r = client.get(f"/datasets/frozen/vectors/{vid}")
                    if r.status_code != 200:
                        read_failures.append(f"{vid}: {r.status_code} {r.text[:100]}")
                except httpx.HTTPError as exc:
                    read_failures.append(f"{vid}: {exc!r}")
                read_worst[0] = max(read_worst[0], time.monotonic() - started)

    thread = threading.Thread(target=reader)
    os.kill(pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        thread.start()
        with httpx.Client(base_url=replicated.rest, timeout=15) as client:
            def write_acked():
                vid = f"w{len(acked)}-{rng.randrange(10**9)}"
                try:
                    r = client.post("/datasets/frozen/vectors", json={"vectors": [
                        {"id": vid, "values": vector(rng)}]})
                except httpx.HTTPError:
                    return False
                if r.status_code == 201:
                    acked.append(vid)
                return r.status_code == 201 and record_of(replicated, "frozen").primary_of(0) \
                    != victim
            wait_for(write_acked, 60, 0.2, "a write acknowledged by a new primary")
            failover_s = time.monotonic() - frozen_at
            for i in range(30):
                r = client.post("/datasets/frozen/vectors", json={"vectors": [
                    {"id": f"after{i}", "values": vector(rng)}]})
                assert r.status_code == 201, r.text
                acked.append(f"after{i}")
    finally:
        os.kill(pid, signal.SIGCONT)
        stop.set()
        thread.join(30)
    after = record_of(replicated, "frozen")
    assert after.primary_of(0) != victim and after.term_of(0) == before.term_of(0) + 1
    assert failover_s < 30
    assert read_failures == [] and read_worst[0] < 5.0, (read_failures[:5], read_worst[0])

    # The old primary catches up by itself and every shard is fully in sync again.
    def all_in_sync():
        record = record_of(replicated, "frozen")
        return all(set(record.in_sync_of(s)) == set(record.copies_of(s))
                   for s in range(record.shard_count)) and record
    record = wait_for(all_in_sync, 90, 0.5, "every copy back in the in-sync set")
    wait_for(lambda: health(replicated)["status"] == "healthy", 60, 0.5, "healthy")
    for shard in range(record.shard_count):
        statuses = [copy_status(replicated, n, record, shard) for n in record.copies_of(shard)]
        assert len({(s.last_seq, s.vector_count) for s in statuses}) == 1, statuses
    with httpx.Client(base_url=replicated.rest, timeout=30) as client:
        for vid in acked:
            assert client.get(f"/datasets/frozen/vectors/{vid}").status_code == 200, vid


def _admin(c: Cluster, *args: str) -> dict | list:
    import json
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "tributary.cli", "admin", *args, "--json"],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "TRIBUTARY_URL": c.rest.removesuffix("/api/v1")})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_operators_see_nodes_copies_and_each_shards_replication_state(replicated):
    with httpx.Client(base_url=replicated.rest, timeout=30) as client:
        assert client.post("/datasets", json={"name": "shown", "dimensions": DIMS,
                                              "shard_count": 2}).status_code == 201
        assert client.post("/datasets/shown/vectors", json={"vectors": [
            {"id": f"s{i}", "values": vector(random.Random(i))} for i in range(40)]}
                           ).status_code == 201
    state = catalog(replicated)
    nodes = _admin(replicated, "nodes", "list")
    assert sorted(n["node_id"] for n in nodes) == ["node-0", "node-1", "node-2"]
    assert all(n["state"] == "live" and n["address"] for n in nodes)
    held = {n["node_id"]: 0 for n in nodes}
    for record in state.datasets.values():
        for shard in range(record.shard_count):
            for node in record.copies_of(shard):
                held[node] += 1
    assert {n["node_id"]: n["copies"] for n in nodes} == held

    shown = _admin(replicated, "datasets", "show", "shown")
    assert shown["replication_factor"] == 2 and len(shown["shards"]) == 2
    assert sum(c["vector_count"] for s in shown["shards"] for c in s["copies"]
               if c["node_id"] == s["primary"]) == 40
    for shard in shown["shards"]:
        assert {c["node_id"] for c in shard["copies"]} == set(shard["in_sync"])
        assert all(c["in_sync"] and c["lag"] == 0 for c in shard["copies"])

    for via in ((), ("--data-dir", replicated.data_dir)):
        members = _admin(replicated, "status", *via)["meta"]
        assert [m["role"] for m in members] == ["leader"]
        assert {"raft_address", "term", "commit_index"} <= set(members[0])


def test_a_copy_whose_ops_were_trimmed_catches_up_by_copying_the_primarys_files(tmp_path):
    """With a log that keeps only a few ops, a copy frozen while writes go on can no longer
    replay them: it installs a snapshot of the primary's files, rejoins the in-sync set, and
    ends with the same content."""
    # The log keeps every op its store has not committed yet (group commit): a store that
    # commits at once lets the primary trim as soon as the log is past 8 ops.
    c = Cluster(tmp_path, meta=1, nodes=2, env={"TRIBUTARY_REPLICATION_SEGMENT_OPS_MAX": "4",
                                                "TRIBUTARY_REPLICATION_LOG_OPS_MAX": "8",
                                                "TRIBUTARY_GROUP_COMMIT_INTERVAL_MS": "1"}).start()
    try:
        rng = random.Random(3)
        with httpx.Client(base_url=c.rest, timeout=30) as client:
            assert client.post("/datasets", json={"name": "trim", "dimensions": DIMS,
                                                  "shard_count": 1}).status_code == 201
            assert client.post("/datasets/trim/vectors", json={"vectors": [
                {"id": f"t{i}", "values": vector(rng)} for i in range(50)]}).status_code == 201
            record = record_of(c, "trim")
            copy = next(n for n in record.copies_of(0) if n != record.primary_of(0))
            pid = child_pid(c, f"--listen 127.0.0.1:{c.internal_base + 100 + node_index(copy)}")
            os.kill(pid, signal.SIGSTOP)
            try:
                for i in range(40):
                    r = client.post("/datasets/trim/vectors", json={"vectors": [
                        {"id": f"late{i}", "values": vector(rng)}]})
                    assert r.status_code == 201, r.text
                assert copy not in record_of(c, "trim").in_sync_of(0)
            finally:
                os.kill(pid, signal.SIGCONT)
        wait_for(lambda: copy in record_of(c, "trim").in_sync_of(0), 90, 0.5,
                 "the frozen copy back in the in-sync set")
        record = record_of(c, "trim")
        statuses = [copy_status(c, node, record, 0, digest=True)
                    for node in record.copies_of(0)]
        assert {s.vector_count for s in statuses} == {90}
        assert len({s.content_digest for s in statuses}) == 1
        assert len({s.last_seq for s in statuses}) == 1
        log_text = open(os.path.join(c.data_dir, "logs", f"{copy}.log")).read()
        assert "installed a" in log_text and "snapshot" in log_text
    finally:
        c.stop()


def test_a_primary_killed_between_logging_and_applying_a_write_leaves_copies_equal(tmp_path):
    """The write-ahead order: kill -9 of the primary after it logged a write and before it
    applied it. Whichever way the shard recovers (the restarted primary applies its last logged
    op again, or a copy is promoted and the old primary recovers), the copies end with the same
    content, and every acknowledged write is there."""
    from tributary import faults

    fault_dir = tmp_path / "faults"
    fault_dir.mkdir()
    c = Cluster(tmp_path / "c", meta=1, nodes=2,
                env={"TRIBUTARY_FAULT_DIR": str(fault_dir)}).start()
    try:
        rng = random.Random(5)
        with httpx.Client(base_url=c.rest, timeout=30) as client:
            assert client.post("/datasets", json={"name": "wal", "dimensions": DIMS,
                                                  "shard_count": 1}).status_code == 201
            assert client.post("/datasets/wal/vectors", json={"vectors": [
                {"id": f"w{i}", "values": vector(rng)} for i in range(20)]}).status_code == 201
            faults.arm(str(fault_dir), faults.PRIMARY_AFTER_LOG)
            try:
                client.post("/datasets/wal/vectors", json={"vectors": [
                    {"id": "torn", "values": vector(rng)}]})
            except httpx.HTTPError:
                pass    # the primary died mid-request: the outcome is unknown to the client
            assert faults.fired(str(fault_dir), faults.PRIMARY_AFTER_LOG) == 1
            acked = []

            def write_once():
                vid = f"after{len(acked)}"
                try:
                    r = client.post("/datasets/wal/vectors", json={"vectors": [
                        {"id": vid, "values": vector(rng)}]})
                except httpx.HTTPError:
                    return False
                if r.status_code == 201:
                    acked.append(vid)
                return len(acked) >= 3
            wait_for(write_once, 60, 0.3, "writes acknowledged again")

        def copies_agree():
            record = record_of(c, "wal")
            if set(record.in_sync_of(0)) != set(record.copies_of(0)):
                return False
            return len({copy_status(c, node, record, 0, digest=True).content_digest
                        for node in record.copies_of(0)}) == 1
        wait_for(copies_agree, 90, 1.0, "both copies in sync with the same content")
        with httpx.Client(base_url=c.rest, timeout=30) as client:
            for vid in [f"w{i}" for i in range(20)] + acked:
                assert client.get(f"/datasets/wal/vectors/{vid}").status_code == 200, vid
    finally:
        c.stop()


def test_a_copy_killed_between_logging_and_applying_a_txn_decision_applies_it_on_restart(
        tmp_path):
    """kill -9 of a copy after it logged its primary's commit of a multi-shard batch and
    before it applied it. On restart it reloads its staged txns before it applies its last
    logged op again, so the commit lands: no txn stays prepared on it, and once back in sync
    its copies hold exactly the primary's content (before, the decision found no staged txn,
    the txn stayed prepared for ever and the copy rejoined with the batch's rows missing)."""
    from tributary import faults

    fault_dir = tmp_path / "faults"
    fault_dir.mkdir()
    c = Cluster(tmp_path / "c", meta=1, nodes=2,
                env={"TRIBUTARY_FAULT_DIR": str(fault_dir)}).start()
    try:
        rng = random.Random(9)
        with httpx.Client(base_url=c.rest, timeout=30) as client:
            assert client.post("/datasets", json={"name": "decided", "dimensions": DIMS,
                                                  "shard_count": 2}).status_code == 201
            assert client.post("/datasets/decided/vectors", json={"vectors": [
                {"id": f"d{i}", "values": vector(rng)} for i in range(20)]}).status_code == 201
            faults.arm(str(fault_dir), faults.COPY_AFTER_LOGGING_DECISION)
            r = client.post("/datasets/decided/vectors", json={"vectors": [
                {"id": f"batch{i}", "values": vector(rng)} for i in range(20)]})
            assert r.status_code == 201, r.text     # every batch spans both shards
        wait_for(lambda: faults.fired(str(fault_dir), faults.COPY_AFTER_LOGGING_DECISION) == 1,
                 30, 0.2, "a copy killed after logging the decision")

        def settled():
            record = record_of(c, "decided")
            if any(set(record.in_sync_of(s)) != set(record.copies_of(s)) for s in range(2)):
                return False
            for i in range(c.nodes):
                with grpc.insecure_channel(c.node_address(i)) as channel:
                    status = c.node_stub(channel).Status(node_pb2.NodeStatusRequest(),
                                                         timeout=5)
                if status.prepared_txns or status.locked_ids:
                    return False
            return all(len({copy_status(c, node, record, s, digest=True).content_digest
                            for node in record.copies_of(s)}) == 1 for s in range(2))
        wait_for(settled, 90, 1.0, "copies in sync, equal, with no txn left prepared")
        record = record_of(c, "decided")
        for shard in range(2):
            counts = {copy_status(c, node, record, shard).vector_count
                      for node in record.copies_of(shard)}
            assert len(counts) == 1, counts
        assert sum(copy_status(c, record.primary_of(s), record, s).vector_count
                   for s in range(2)) == 40
    finally:
        c.stop()
