"""A shard move survives kill -9 of each process it depends on (issue 12): the source node as it
is about to hand the primary role over, the target node mid catch-up, and the meta leader, which
drives moves (consensus/failover.py steps them along from the Raft record; the router only
proposes StartMove). Each crash is a deterministic crash point (tributary/faults.py) that
SIGKILLs the process, under a steady read/write load through the router. Each test checks that
the move resumes or rolls back from the state in Raft, that the shard never has fewer in-sync
copies than when the move started, and that no acknowledged write is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import httpx
import pytest

from cluster import Cluster, missing_through_router, wait_for
from test_scale_out import DIMS, Load, admin, nodes
from tributary import faults

pytestmark = pytest.mark.integration

SEEDS = 400


def catalog(c: Cluster):
    """The catalog as the meta leader holds it (consensus.state.MetaState), or None when no
    member answers as leader right now."""
    from consensus import state as meta_state
    from proto import meta_pb2

    for i in range(c.meta):
        with grpc.insecure_channel(c.meta_grpc(i)) as channel:
            try:
                answer = c.meta_stub(channel).GetState(meta_pb2.GetStateRequest(), timeout=2)
            except grpc.RpcError:
                continue
            return meta_state.from_doc(json.loads(answer.state_json))
    return None


class InSyncWatch:
    """Samples the catalog every 50 ms and keeps, for one shard, each distinct (copies, in-sync,
    primary) seen, so a test can check the fewest in-sync copies the shard ever had."""

    def __init__(self, c: Cluster, dataset: str, shard: int):
        self.c, self.dataset, self.shard = c, dataset, shard
        self.seen: list[tuple[tuple[str, ...], tuple[str, ...], str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            try:
                state = catalog(self.c)
            except Exception:  # noqa: BLE001 - a leader change mid-call; sample again
                state = None
            record = state and next((r for r in state.datasets.values()
                                     if r.name == self.dataset), None)
            if record is not None:
                sample = (record.copies_of(self.shard), record.in_sync_of(self.shard),
                          record.primary_of(self.shard))
                if not self.seen or self.seen[-1] != sample:
                    self.seen.append(sample)
            self.stop.wait(0.05)

    def fewest_in_sync(self) -> int:
        return min(len(in_sync) for _, in_sync, _ in self.seen)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)


def start_cluster(tmp_path, meta: int, node_count: int, **env: str) -> tuple[Cluster, str]:
    fault_dir = str(tmp_path / "faults")
    os.makedirs(fault_dir)
    c = Cluster(tmp_path / "cluster", meta=meta, nodes=node_count,
                env={"TRIBUTARY_FAULT_DIR": fault_dir, **env}).start()
    import random
    rng = random.Random(0)
    with httpx.Client(base_url=c.rest, timeout=60) as client:
        assert client.post("/datasets", json={"name": "elastic", "dimensions": DIMS,
                                              "shard_count": 2}).status_code == 201
        assert client.post("/datasets/elastic/vectors", json={"vectors": [
            {"id": f"seed{i}", "values": [rng.random() for _ in range(DIMS)]}
            for i in range(SEEDS)]}).status_code == 201
    return c, fault_dir


def shard_zero(c: Cluster):
    return next(r for r in catalog(c).datasets.values() if r.name == "elastic")


def moves_done(c: Cluster) -> bool:
    return json.loads(admin(c, "moves", "list", "--json").stdout) == []


def assert_no_acked_write_lost(c: Cluster, load: Load) -> None:
    with httpx.Client(base_url=c.rest, timeout=30) as client:
        missing = missing_through_router(client, "elastic",
                                         load.acked + [f"seed{i}" for i in range(SEEDS)])
    assert missing == [], missing[:10]


def test_a_move_whose_source_dies_before_handing_over_finishes_on_the_surviving_copies(
        tmp_path):
    c, fault_dir = start_cluster(tmp_path, meta=1, node_count=3)
    try:
        record = shard_zero(c)
        source = record.primary_of(0)
        other = next(n for n in record.copies_of(0) if n != source)
        target = next(n for n in ("node-0", "node-1", "node-2") if n not in record.copies_of(0))
        start_in_sync = len(record.in_sync_of(0))
        faults.arm(fault_dir, faults.MOVE_SOURCE_BEFORE_HAND_OVER)
        with Load(c) as load, InSyncWatch(c, "elastic", 0) as watch:
            admin(c, "shards", "move", "elastic", "0", "--from", source, "--to", target)
            wait_for(lambda: faults.fired(fault_dir, faults.MOVE_SOURCE_BEFORE_HAND_OVER), 60,
                     0.2, "the source killed as it hands over")
            wait_for(lambda: moves_done(c), 120, 0.5, "the move finished")
            acked_at_finish = len(load.acked)
            wait_for(lambda: len(load.acked) > acked_at_finish + 20, 60, 0.2,
                     "writes go on after the move")
        after = shard_zero(c)
        assert set(after.copies_of(0)) == {other, target}
        assert set(after.in_sync_of(0)) == {other, target}
        assert after.primary_of(0) in (other, target)
        assert watch.fewest_in_sync() >= start_in_sync, watch.seen
        assert_no_acked_write_lost(c, load)
        print(f"source crash: {len(load.acked)} acked writes, {len(load.failures)} failed "
              f"requests while the primary was down")
    finally:
        c.stop()


def test_a_move_whose_target_dies_rolls_back_and_then_runs_again_once_it_returns(tmp_path):
    # The target runs outside `tributary up` (as a node on a new host would), so nothing
    # restarts it: the leader cancels the move once the target has been away for
    # move_target_away_cancel_ms.
    c, fault_dir = start_cluster(tmp_path, meta=1, node_count=2,
                                 TRIBUTARY_MOVE_TARGET_AWAY_CANCEL_MS="4000")
    port = c.internal_base + 102
    argv = [sys.executable, "-m", "tributary.cli", "node", "--listen", f"127.0.0.1:{port}",
            "--meta", c.meta_grpc(0), "--data-dir", str(tmp_path / "node-2"),
            "--node-id", "node-2", "--cluster-secret-file",
            os.path.join(c.data_dir, "secrets", "cluster-secret")]
    env = {**os.environ, "TRIBUTARY_FAULT_DIR": fault_dir}

    def start_target():
        return subprocess.Popen(argv, stdout=open(tmp_path / "node-2.log", "ab"),
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)
    extra = start_target()
    try:
        wait_for(lambda: nodes(c).get("node-2", {}).get("state") == "live", 60, 0.5,
                 "the new node live")
        before = shard_zero(c)
        source = before.primary_of(0)
        start_in_sync = len(before.in_sync_of(0))
        faults.arm(fault_dir, faults.MOVE_TARGET_MID_CATCH_UP)
        with Load(c) as load, InSyncWatch(c, "elastic", 0) as watch:
            # The operator waits for the move: the command must say it was rolled back.
            waiting = subprocess.Popen(
                [sys.executable, "-m", "tributary.cli", "admin", "shards", "move", "elastic",
                 "0", "--from", source, "--to", "node-2", "--wait", "--wait-timeout", "120"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env={**os.environ, "TRIBUTARY_URL": c.rest.removesuffix("/api/v1")})
            wait_for(lambda: extra.poll() is not None, 60, 0.2, "the target killed mid catch-up")
            assert extra.returncode == -signal.SIGKILL
            assert faults.fired(fault_dir, faults.MOVE_TARGET_MID_CATCH_UP) == 1
            wait_for(lambda: moves_done(c), 60, 0.5, "the move rolled back")
            _, err = waiting.communicate(timeout=60)
            assert waiting.returncode == 1, err
            assert f"{source} still holds elastic/0 and node-2 does not" in err, err
            assert "was rolled back" in err.strip().splitlines()[-1], err
            rolled_back = shard_zero(c)
            assert (rolled_back.copies_of(0), rolled_back.in_sync_of(0),
                    rolled_back.primary_of(0)) == (before.copies_of(0), before.in_sync_of(0),
                                                   before.primary_of(0))
            # The target returns: it drops the copy it no longer holds, and the same move
            # runs to the end.
            extra = start_target()
            wait_for(lambda: nodes(c).get("node-2", {}).get("state") == "live", 60, 0.5,
                     "the target live again")
            finished = admin(c, "shards", "move", "elastic", "0", "--from", source, "--to",
                             "node-2", "--wait", "--wait-timeout", "120", "--json")
            assert json.loads(finished.stdout)["outcome"] == "finished"
            assert moves_done(c)
        assert load.failures == [], load.failures[:10]
        after = shard_zero(c)
        assert "node-2" in after.in_sync_of(0) and source not in after.copies_of(0)
        assert len(after.in_sync_of(0)) == start_in_sync
        assert watch.fewest_in_sync() >= start_in_sync, watch.seen
        assert_no_acked_write_lost(c, load)
    finally:
        if extra.poll() is None:
            os.killpg(extra.pid, signal.SIGKILL)
        extra.wait(10)
        c.stop()


def test_a_move_resumes_under_a_new_meta_leader_when_the_leader_dies_before_finishing(
        tmp_path):
    c, fault_dir = start_cluster(tmp_path, meta=3, node_count=3)
    try:
        record = shard_zero(c)
        source = record.primary_of(0)
        target = next(n for n in ("node-0", "node-1", "node-2") if n not in record.copies_of(0))
        start_in_sync = len(record.in_sync_of(0))
        faults.arm(fault_dir, faults.META_LEADER_BEFORE_FINISH_MOVE)
        with Load(c) as load, InSyncWatch(c, "elastic", 0) as watch:
            admin(c, "shards", "move", "elastic", "0", "--from", source, "--to", target)
            wait_for(lambda: faults.fired(fault_dir, faults.META_LEADER_BEFORE_FINISH_MOVE),
                     60, 0.2, "the meta leader killed before FinishMove")
            started = time.monotonic()
            wait_for(lambda: moves_done(c), 120, 0.5, "the move finished by the new leader")
            print(f"driver crash: move finished {time.monotonic() - started:.1f} s after the "
                  "leader died")
        after = shard_zero(c)
        assert target in after.in_sync_of(0) and source not in after.copies_of(0)
        assert len(after.in_sync_of(0)) == start_in_sync
        assert watch.fewest_in_sync() >= start_in_sync, watch.seen
        assert_no_acked_write_lost(c, load)
        print(f"driver crash: {len(load.acked)} acked, {len(load.failures)} failed requests")
    finally:
        c.stop()
