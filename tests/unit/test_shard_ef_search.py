"""ef_search is a per-query setting: concurrent searches asking different ef values each get
the answer of their own ef (hnswlib's ef is one setting of the whole index; see
shard/ef_gate.py), and the gate's phases neither leak ef nor starve either class."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from shard.ef_gate import EfGate
from shard.records import ExistingPolicy, VectorRecord
from shard.replica import ShardReplica
from tributary import limits

DIM = 64
K = 10


def clustered(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(100, DIM)) * 3
    return (centres[rng.integers(0, 100, count)] + rng.normal(size=(count, DIM))).astype(
        np.float32)


@pytest.fixture(scope="module")
def sparse_replica(tmp_path_factory):
    """20k clustered vectors in a deliberately sparse graph (M 4), where ef 10 has clearly
    lower recall than ef 400."""
    patch = pytest.MonkeyPatch()
    patch.setattr(limits, "hnsw_m", 4)
    patch.setattr(limits, "hnsw_ef_construction", 20)
    replica = ShardReplica(str(tmp_path_factory.mktemp("ef") / "shard"), DIM, "l2")
    data = clustered(20_000, seed=1)
    for first in range(0, len(data), 5_000):
        replica.write([VectorRecord(id=str(i), values=data[i])
                       for i in range(first, first + 5_000)], [], ExistingPolicy.ERROR)
    assert replica.wait_indexed(300)
    patch.undo()
    yield replica, data
    replica.close()


def test_concurrent_searches_each_run_at_their_own_ef(sparse_replica):
    replica, data = sparse_replica
    queries = clustered(100, seed=2)
    truth = [set(np.argsort(((data - q) ** 2).sum(axis=1))[:K].tolist()) for q in queries]

    def ids(q, ef):
        return [int(h.record.id) for h in replica.search(q, K, ef).hits]

    alone = {ef: [ids(q, ef) for q in queries] for ef in (10, 400)}
    recall_alone = {ef: np.mean([len(set(found) & t) / K for found, t in zip(alone[ef], truth)])
                    for ef in alone}
    assert recall_alone[10] < recall_alone[400] - 0.1, recall_alone

    mismatches = {10: 0, 400: 0}
    found_together: dict[int, list[float]] = {10: [], 400: []}
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker(ef: int, seed: int):
        order = np.random.default_rng(seed).permutation(len(queries))
        start.wait()
        for i in order.tolist():
            found = ids(queries[i], ef)
            with lock:
                mismatches[ef] += found != alone[ef][i]
                found_together[ef].append(len(set(found) & truth[i]) / K)

    threads = [threading.Thread(target=worker, args=(10 if n % 2 else 400, n))
               for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    # Each search gave exactly the answer its own ef gives alone, so each class kept its recall.
    assert mismatches == {10: 0, 400: 0}
    for ef in (10, 400):
        assert np.mean(found_together[ef]) == pytest.approx(recall_alone[ef])


class _RecordingIndex:
    """Stands in for hnswlib: records set_ef and which ef each running query saw."""

    def __init__(self):
        self.ef = 0
        self.running: list[int] = []

    def set_ef(self, ef):
        assert not self.running, "set_ef while a query runs"
        self.ef = ef


def test_gate_runs_same_ef_searches_together_and_lets_another_ef_in(tmp_path):
    index = _RecordingIndex()
    gate = EfGate(index, 128)
    assert gate.acquire(128) and gate.acquire(128)        # same ef: together
    assert not gate.acquire(400, blocking=False)         # another ef: waits for the phase
    entered = threading.Event()

    def other_ef():
        gate.acquire(400)
        entered.set()
        gate.release()

    waiter = threading.Thread(target=other_ef)
    waiter.start()
    deadline = time.monotonic() + 5
    while not gate._waiting and time.monotonic() < deadline:
        time.sleep(0.001)
    # Once a search waits for another ef, a newcomer at the running ef does not jump ahead.
    assert not gate.acquire(128, blocking=False)
    gate.release()
    assert not entered.is_set()
    gate.release()
    assert entered.wait(5)
    waiter.join(5)
    assert index.ef == 400
