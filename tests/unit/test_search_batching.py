"""Searches batched across the router -> node hop (issue 18): the router's SearchBatcher
(router/shard_client.py), the replica's knn_query batch (ShardReplica.search_batch) and the
packed shard answers (node.proto PackedHits) merged in numpy by the router core."""

from __future__ import annotations

import asyncio
import types

import numpy as np
import pytest

from node.server import _search_response
from proto import deeplake_service_pb2 as pb
from proto import node_pb2
from router.core import RouterCore
from router.shard_client import SearchBatcher
from shard.records import Hit, SearchOutcome, VectorRecord
from shard.replica import ShardReplica
from tributary import errors, limits
from tributary.validation import as_vector

DIM = 8


def run(coro):
    return asyncio.run(coro)


# ---- ShardReplica.search_batch -------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_a_batch_answers_every_query_exactly_as_its_own_search(tmp_path, metric):
    replica = ShardReplica(str(tmp_path / "s"), DIM, metric)
    try:
        rng = np.random.default_rng(3)
        records = [VectorRecord(id=f"v{i}", values=as_vector(rng.normal(size=DIM).tolist(),
                                                              DIM, metric),
                                document_id=f"d{i % 7}")
                   for i in range(600)]
        replica.write(records[:500], [])
        replica.wait_indexed()
        # The last rows wait in the pending buffer (scanned exactly) until the indexer takes
        # them, which it may do between the batch and the single searches: a row's distance
        # then comes from hnswlib instead of numpy, equal to float32 rounding.
        replica.write(records[500:], [])
        replica.write([], ["v3", "v10", "v550"])
        queries = np.stack([as_vector(rng.normal(size=DIM).tolist(), DIM, metric)
                            for _ in range(9)])
        top_ks = [1, 5, 10, 10, 3, 50, 10, 7, 2]
        with_metadata = [i == 4 for i in range(9)]

        def compare(exact: bool) -> None:
            batch = replica.search_batch(queries, top_ks, 40, [False] * 9, with_metadata)
            for i, outcome in enumerate(batch):
                alone = replica.search(queries[i], top_ks[i], 40, False, with_metadata[i])
                assert [h.record.id for h in outcome.hits] == [h.record.id for h in alone.hits]
                assert [h.record.document_id for h in outcome.hits] == \
                    [h.record.document_id for h in alone.hits]
                got = [x for h in outcome.hits for x in (h.score, h.distance)]
                expected = [x for h in alone.hits for x in (h.score, h.distance)]
                assert got == (expected if exact else pytest.approx(expected, abs=1e-5))
                assert len(outcome.hits) == top_ks[i]
                assert not {"v3", "v10", "v550"} & {h.record.id for h in outcome.hits}

        compare(exact=False)
        replica.wait_indexed()
        compare(exact=True)
    finally:
        replica.close()


def test_a_batch_that_must_not_block_declines_rather_than_wait(tmp_path):
    replica = ShardReplica(str(tmp_path / "n"), DIM, "l2")
    try:
        rng = np.random.default_rng(9)
        replica.write([VectorRecord(id=f"v{i}", values=rng.normal(size=DIM).astype(np.float32))
                       for i in range(300)], [])
        replica.wait_indexed()
        queries = rng.normal(size=(3, DIM)).astype(np.float32)
        free = replica.search_batch(queries, [5, 5, 5], blocking=False)
        waited = replica.search_batch(queries, [5, 5, 5])
        assert [[h.record.id for h in o.hits] for o in free] == \
            [[h.record.id for h in o.hits] for o in waited]
        with replica._index_lock.write():     # the indexer adding a chunk to the graph
            assert replica.search_batch(queries, [5, 5, 5], blocking=False) is None
        assert replica.search_batch(queries, [5, 5, 5], ef_search=100_000,
                                    blocking=False) is None
    finally:
        replica.close()


def test_a_batch_of_a_flat_replica_scans_exactly(tmp_path):
    replica = ShardReplica(str(tmp_path / "f"), DIM, "l2", index_type="flat")
    try:
        rng = np.random.default_rng(5)
        values = rng.normal(size=(100, DIM)).astype(np.float32)
        replica.write([VectorRecord(id=f"v{i}", values=values[i]) for i in range(100)], [])
        queries = rng.normal(size=(3, DIM)).astype(np.float32)
        batch = replica.search_batch(queries, [4, 4, 4])
        for query, outcome in zip(queries, batch):
            expected = np.argsort(((values - query) ** 2).sum(axis=1))[:4]
            assert [h.record.id for h in outcome.hits] == [f"v{i}" for i in expected]
    finally:
        replica.close()


# ---- SearchBatcher ---------------------------------------------------------------------------


class FakeNode:
    """Answers Search and SearchBatch after `release` is set; records what it was sent."""

    def __init__(self, fail_ids: frozenset[str] = frozenset()):
        self.release = asyncio.Event()
        self.singles: list[str] = []
        self.batches: list[list[str]] = []
        self.fail_ids = fail_ids

    @staticmethod
    def _answer(request: node_pb2.ShardSearchRequest) -> node_pb2.ShardSearchResponse:
        return node_pb2.ShardSearchResponse(strategy=request.filter_expression)

    async def one(self, request):
        self.singles.append(request.filter_expression)
        await self.release.wait()
        return self._answer(request)

    async def many(self, request):
        self.batches.append([r.filter_expression for r in request.searches])
        await self.release.wait()
        outcomes = []
        for r in request.searches:
            if r.filter_expression in self.fail_ids:
                failure = errors.StaleEpoch(f"{r.filter_expression} is stale")
                outcomes.append(node_pb2.ShardSearchOutcome(
                    error=failure.to_wire(), error_code=failure.grpc_code.value[0]))
            else:
                outcomes.append(node_pb2.ShardSearchOutcome(response=self._answer(r)))
        return node_pb2.ShardSearchBatchResponse(outcomes=outcomes)


def _request(tag: str) -> node_pb2.ShardSearchRequest:
    # The tag rides in filter_expression only so the fake node can tell searches apart.
    return node_pb2.ShardSearchRequest(filter_expression=tag, top_k=10)


async def _until(condition, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.001)


async def _busy(batcher: SearchBatcher, node: FakeNode) -> asyncio.Future:
    """One search in flight (the node holds it until `release`): the batcher is under load."""
    busy = asyncio.ensure_future(batcher.search(_request("busy")))
    await _until(lambda: node.singles == ["busy"])
    return busy


def test_a_lone_search_goes_at_once_and_alone():
    async def scenario():
        node = FakeNode()
        node.release.set()
        batcher = SearchBatcher(node.one, node.many)
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer = await batcher.search(_request("a"))
        assert answer.strategy == "a"
        assert loop.time() - started < limits.search_batch_wait_max_ms / 1000
        assert node.singles == ["a"] and node.batches == []
    run(scenario())


def test_the_shards_of_one_query_on_an_idle_node_go_at_once_side_by_side(monkeypatch):
    # A wait bound far beyond the test's patience: an idle node must not wait for it.
    monkeypatch.setattr(limits, "search_batch_wait_max_ms", 60_000)

    async def scenario():
        node = FakeNode()
        node.release.set()
        batcher = SearchBatcher(node.one, node.many)
        answers = await asyncio.wait_for(asyncio.gather(
            batcher.search(_request("shard0")), batcher.search(_request("shard1"))), 5)
        assert [a.strategy for a in answers] == ["shard0", "shard1"]
        assert node.singles == ["shard0", "shard1"] and node.batches == []
    run(scenario())


def test_the_queue_goes_at_once_when_the_node_has_nothing_in_flight(monkeypatch):
    monkeypatch.setattr(limits, "search_batch_wait_max_ms", 60_000)

    async def scenario():
        node = FakeNode()
        batcher = SearchBatcher(node.one, node.many)
        busy = await _busy(batcher, node)
        queued = [asyncio.ensure_future(batcher.search(_request(f"q{i}"))) for i in range(3)]
        await asyncio.sleep(0.01)
        assert node.batches == []
        node.release.set()
        answers = await asyncio.wait_for(asyncio.gather(busy, *queued), 5)
        assert [a.strategy for a in answers] == ["busy", "q0", "q1", "q2"]
        assert node.batches == [["q0", "q1", "q2"]]
    run(scenario())


def test_searches_under_load_share_one_batch_within_the_wait_bound():
    async def scenario():
        node = FakeNode()
        batcher = SearchBatcher(node.one, node.many)
        busy = await _busy(batcher, node)
        loop = asyncio.get_running_loop()
        started = loop.time()
        queued = []
        for i in range(5):
            queued.append(asyncio.ensure_future(batcher.search(_request(f"q{i}"))))
            await asyncio.sleep(0)
        # The queue goes as one batch once the wait bound passes, with an RPC still in flight.
        await _until(lambda: node.batches)
        assert loop.time() - started >= limits.search_batch_wait_max_ms / 1000 * 0.9
        assert node.batches == [[f"q{i}" for i in range(5)]]
        node.release.set()
        answers = await asyncio.gather(busy, *queued)
        assert [a.strategy for a in answers] == ["busy"] + [f"q{i}" for i in range(5)]
        assert (batcher.rpcs, batcher.searches) == (2, 6)
    run(scenario())


def test_a_full_queue_goes_without_waiting_for_the_bound(monkeypatch):
    monkeypatch.setattr(limits, "search_batch_wait_max_ms", 60_000)
    monkeypatch.setattr(limits, "search_batch_queries_max", 4)

    async def scenario():
        node = FakeNode()
        batcher = SearchBatcher(node.one, node.many)
        busy = await _busy(batcher, node)
        queued = [asyncio.ensure_future(batcher.search(_request(f"q{i}"))) for i in range(4)]
        await asyncio.wait_for(_until(lambda: node.batches), 5)
        assert node.batches == [["q0", "q1", "q2", "q3"]]
        node.release.set()
        answers = await asyncio.wait_for(asyncio.gather(busy, *queued), 5)
        assert [a.strategy for a in answers[1:]] == [f"q{i}" for i in range(4)]
    run(scenario())


def test_a_failed_search_in_a_batch_fails_alone():
    async def scenario():
        node = FakeNode(fail_ids=frozenset({"q1"}))
        batcher = SearchBatcher(node.one, node.many)
        busy = await _busy(batcher, node)
        queued = [asyncio.ensure_future(batcher.search(_request(f"q{i}"))) for i in range(3)]
        await _until(lambda: node.batches)
        node.release.set()
        results = await asyncio.gather(busy, *queued, return_exceptions=True)
        tail = results[1:]
        assert tail[0].strategy == "q0" and tail[2].strategy == "q2"
        assert isinstance(tail[1], errors.StaleEpoch) and "q1 is stale" in str(tail[1])
    run(scenario())


def test_a_batch_rpc_that_fails_fails_each_of_its_searches():
    async def scenario():
        node = FakeNode()

        async def many(request):
            raise errors.Unavailable("node down")

        batcher = SearchBatcher(node.one, many)
        busy = await _busy(batcher, node)
        queued = [asyncio.ensure_future(batcher.search(_request(f"q{i}"))) for i in range(3)]
        results = await asyncio.gather(*queued, return_exceptions=True)
        assert all(isinstance(r, errors.Unavailable) for r in results)
        node.release.set()
        assert (await busy).strategy == "busy"
    run(scenario())


def test_a_node_without_search_batch_gets_each_search_alone():
    async def scenario():
        node = FakeNode()
        calls = []

        async def many(request):
            calls.append(len(request.searches))
            raise errors.Unimplemented("Method not found!")

        batcher = SearchBatcher(node.one, many)
        busy = await _busy(batcher, node)
        queued = [asyncio.ensure_future(batcher.search(_request(f"q{i}"))) for i in range(3)]
        await _until(lambda: len(node.singles) == 4)
        node.release.set()
        answers = await asyncio.gather(busy, *queued)
        assert [a.strategy for a in answers] == ["busy", "q0", "q1", "q2"]
        # Later queues skip the refused call: under load again, each goes alone.
        node.release.clear()
        busy = asyncio.ensure_future(batcher.search(_request("busy2")))
        await _until(lambda: node.singles[-1] == "busy2")
        more = [asyncio.ensure_future(batcher.search(_request(f"r{i}"))) for i in range(2)]
        await _until(lambda: node.singles[-2:] == ["r0", "r1"])
        node.release.set()
        await asyncio.gather(busy, *more)
        assert calls == [3]
    run(scenario())


def test_a_search_whose_caller_gave_up_leaves_the_queue():
    async def scenario():
        node = FakeNode()
        batcher = SearchBatcher(node.one, node.many)
        busy = await _busy(batcher, node)
        kept = asyncio.ensure_future(batcher.search(_request("kept")))
        dropped = asyncio.ensure_future(batcher.search(_request("dropped")))
        other = asyncio.ensure_future(batcher.search(_request("other")))
        await asyncio.sleep(0)
        dropped.cancel()    # e.g. the hedge to another copy answered first
        await _until(lambda: node.batches)
        node.release.set()
        answers = await asyncio.gather(kept, other, busy)
        assert [a.strategy for a in answers[:2]] == ["kept", "other"]
        assert node.batches == [["kept", "other"]]
    run(scenario())


# ---- SearchBatcher on a node's search stream ---------------------------------------------------


class FakeStream:
    """A SearchStream the node supports: records each message; the test answers them."""

    unsupported = False

    def __init__(self):
        self.messages: list[tuple[list, list, object, object]] = []

    def post(self, searches, futures, done, resend):
        self.messages.append((searches, futures, done, resend))

    def tags(self) -> list[list[str]]:
        return [[r.filter_expression for r in searches] for searches, *_ in self.messages]

    def answer(self, index: int) -> None:
        searches, futures, done, _ = self.messages[index]
        for request, future in zip(searches, futures):
            if not future.done():
                future.set_result(FakeNode._answer(request))
        done()


def test_on_a_stream_the_searches_of_one_turn_to_an_idle_node_go_as_one_message(monkeypatch):
    monkeypatch.setattr(limits, "search_batch_wait_max_ms", 60_000)

    async def scenario():
        node, stream = FakeNode(), FakeStream()
        batcher = SearchBatcher(node.one, node.many, stream)
        futures = [batcher.submit(_request(f"shard{i}")) for i in range(3)]
        await asyncio.sleep(0)      # the turn ends
        assert stream.tags() == [["shard0", "shard1", "shard2"]]
        stream.answer(0)
        answers = await asyncio.wait_for(asyncio.gather(*futures), 5)
        assert [a.strategy for a in answers] == ["shard0", "shard1", "shard2"]
        assert node.singles == [] and node.batches == []
    run(scenario())


def test_on_a_stream_a_queue_under_load_goes_at_its_wait_bound_not_with_an_answer():
    async def scenario():
        node, stream = FakeNode(), FakeStream()
        batcher = SearchBatcher(node.one, node.many, stream)
        busy = batcher.submit(_request("busy"))
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        queued = [batcher.submit(_request(f"q{i}")) for i in range(3)]
        stream.answer(0)            # the node answers the message in flight at once
        await asyncio.sleep(0)
        assert stream.tags() == [["busy"]]
        await _until(lambda: len(stream.messages) == 2)
        assert loop.time() - started >= limits.search_batch_wait_max_ms / 1000 * 0.9
        assert stream.tags()[1] == ["q0", "q1", "q2"]
        stream.answer(1)
        answers = await asyncio.gather(busy, *queued)
        assert [a.strategy for a in answers] == ["busy", "q0", "q1", "q2"]
    run(scenario())


def test_searches_a_broken_stream_lost_go_again_as_unary_calls():
    async def scenario():
        node, stream = FakeNode(), FakeStream()
        node.release.set()
        batcher = SearchBatcher(node.one, node.many, stream)
        futures = [batcher.submit(_request(f"q{i}")) for i in range(2)]
        await asyncio.sleep(0)
        searches, posted, done, resend = stream.messages[0]
        done()
        resend(searches, posted)    # the stream ended before the node answered
        answers = await asyncio.wait_for(asyncio.gather(*futures), 5)
        assert [a.strategy for a in answers] == ["q0", "q1"]
        assert node.batches == [["q0", "q1"]]
    run(scenario())


# ---- packed shard answers, merged by the router core -------------------------------------------


def _outcome(rng: np.random.Generator, shard: int, count: int, fields: bool) -> SearchOutcome:
    hits = []
    for i in range(count):
        # Few distinct scores, so ties (broken by id) are common.
        score = float(np.float32(rng.integers(0, 6) / 8))
        hits.append(Hit(VectorRecord(
            id=f"s{shard}-{rng.integers(0, 10_000)}", values=None,
            document_id=f"doc{rng.integers(0, 4)}" if fields else "",
            content_hash=f"h{rng.integers(0, 4)}" if fields else "",
            chunk_index=int(rng.integers(0, 3)) if fields else 0,
            created_at_ms=int(rng.integers(0, 2**41)),
            updated_at_ms=int(rng.integers(0, 2**41))),
            score, float(np.float32(1 - score))))
    hits.sort(key=lambda h: (-h.score, h.record.id))
    return SearchOutcome(hits, vectors_scanned=1000 + shard, index_hits=count,
                         database_time_ms=1.5, filtered_out=shard, strategy="hnsw")


OPTION_CASES = [
    pb.SearchOptions(top_k=10),
    pb.SearchOptions(top_k=3),
    pb.SearchOptions(top_k=10, deduplicate=True),
    pb.SearchOptions(top_k=10, group_by_document=True),
    pb.SearchOptions(top_k=10, min_score=0.3),
    pb.SearchOptions(top_k=10, threshold=0.0, max_distance=0.6),
]


@pytest.mark.parametrize("fields", [False, True])
@pytest.mark.parametrize("case", range(len(OPTION_CASES)))
@pytest.mark.parametrize("seed", range(4))
def test_packed_answers_merge_into_the_same_response_as_per_hit_answers(fields, case, seed):
    options = OPTION_CASES[case]
    rng = np.random.default_rng(seed)
    outcomes = [_outcome(rng, shard, int(rng.integers(0, 14)), fields) for shard in range(3)]
    record = types.SimpleNamespace(name="ds", tenant_id="acme", dimensions=DIM)
    core = object.__new__(RouterCore)
    shard_k = 4 * options.top_k if options.deduplicate or options.group_by_document \
        else options.top_k

    def merged(packed: bool) -> pb.SearchVectorsResponse:
        responses = [_search_response(outcome, DIM, packed) for outcome in outcomes]
        assert all(bool(r.hits) != packed or not outcome.hits
                   for r, outcome in zip(responses, outcomes))
        response = core._merge_search(record, options, options.top_k, shard_k, responses,
                                      0.0, 2.0)
        response.query_time_ms = 0.0
        response.stats.post_processing_time_ms = 0.0
        return response

    per_hit, packed = merged(False), merged(True)
    assert packed == per_hit
    assert len(packed.results) <= options.top_k
