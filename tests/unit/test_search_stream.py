"""The router -> node search hop (issue 18): plain searches of one router to one node ride one
long-lived gRPC call as ticketed messages (node.proto SearchStream, router/shard_client.py
SearchStream), or, once the node's search-frame link is up, the same messages as signed frames
on one TCP connection (tributary/frames.py, node/search_frames.py, router/search_frames.py).
Real gRPC and TCP on loopback, the real node handler (ShardNodeService) with the cluster-proof
interceptor, and a real ShardReplica; only the node's catalog (fencing by epoch) and, for the
frame tests, its Status (the frame address alone) are stand-ins."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
import types

import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.search_frames import SearchFrameServer
from node.server import ShardNodeService
from proto import node_pb2, node_pb2_grpc
from router.shard_client import GrpcShardClient, SearchStream
from shard.records import VectorRecord
from shard.replica import ShardReplica
from tributary import cluster_auth, errors, frames, limits
from tributary.cluster_auth import ClusterToken

DIM = 8
UUID = "00000000-0000-0000-0000-0000000000aa"
EPOCH = 4
TOKEN = ClusterToken.from_secret("search-stream-test-secret-0123456789")


class _Host:
    """The part of ShardHost the search handlers use: fencing by epoch, one open replica; a
    search of shard 7 waits for ever (a node that does not answer)."""

    def __init__(self, replica: ShardReplica):
        self.replica_ = replica
        self.record = types.SimpleNamespace(dimensions=DIM, metric_type="l2")

    def replica_now(self, ref):
        if ref.epoch != EPOCH or ref.shard == 7:
            return None
        return self.record, self.replica_

    async def replica(self, ref, role=None):
        if ref.epoch < EPOCH:
            raise errors.StaleEpoch(f"placement epoch {ref.epoch} is older than {EPOCH}")
        if ref.shard == 7:
            await asyncio.Event().wait()
        return self.record, self.replica_


class _CountingNode(ShardNodeService):
    """The real handlers, counting the calls each RPC received. Status reports only where the
    node takes search frames (none unless a test starts its frame server)."""

    def __init__(self, host, with_stream: bool = True):
        super().__init__(host, None, None)
        self.calls = {"Search": 0, "SearchBatch": 0, "SearchStream": 0}
        self.with_stream = with_stream
        self.status_calls = 0

    async def Status(self, request, context):
        self.status_calls += 1
        return node_pb2.NodeStatusResponse(search_frames_address=self.search_frames_address)

    async def Search(self, request, context):
        self.calls["Search"] += 1
        return await super().Search(request, context)

    async def SearchBatch(self, request, context):
        self.calls["SearchBatch"] += 1
        return await super().SearchBatch(request, context)

    def SearchStream(self, requests, context):
        self.calls["SearchStream"] += 1
        if not self.with_stream:    # a node of an older release
            return node_pb2_grpc.ShardNodeServicer.SearchStream(self, requests, context)
        return super().SearchStream(requests, context)


@pytest.fixture
def replica(tmp_path):
    replica = ShardReplica(str(tmp_path / "shard"), DIM, "l2")
    rng = np.random.default_rng(5)
    replica.write([VectorRecord(id=f"v{i}", values=rng.normal(size=DIM).astype(np.float32))
                   for i in range(400)], [])
    replica.wait_indexed()
    yield replica
    replica.close()


@contextlib.asynccontextmanager
async def _node_and_client(node):
    """`node` served on loopback, and a router's shard client for it: (node, address, client)."""
    server, address = await _serving(node)
    client = GrpcShardClient(TOKEN)
    try:
        yield node, address, client
    finally:
        await client.close()
        await server.stop(None)


async def _serving(servicer):
    server = grpc.aio.server(interceptors=[cluster_auth.AioServerInterceptor(TOKEN)])
    node_pb2_grpc.add_ShardNodeServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def _request(query: np.ndarray, top_k: int = 5, epoch: int = EPOCH, shard: int = 0,
             **extra) -> node_pb2.ShardSearchRequest:
    return node_pb2.ShardSearchRequest(
        shard=node_pb2.ShardRef(dataset_uuid=UUID, shard=shard, epoch=epoch), top_k=top_k,
        ef_search=40, query_values=query.astype(np.float32).tobytes(), **extra)


def _hits(response: node_pb2.ShardSearchResponse) -> list[tuple[str, float]]:
    return [(h.vector.id, round(h.score, 5)) for h in response.hits]


def _queries(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.normal(size=DIM).astype(np.float32) for _ in range(count)]


def test_concurrent_plain_searches_ride_one_stream_and_answer_as_a_unary_search(replica):
    async def main():
        async with _node_and_client(_CountingNode(_Host(replica))) as (node, address, client):
            queries = _queries(40)
            expected = [_hits(await client._stub(address).Search(_request(q, top_k=1 + i % 9),
                                                                  timeout=10))
                        for i, q in enumerate(queries)]
            node.calls["Search"] = 0
            for _ in range(3):      # three waves: the stream stays open between them
                got = await asyncio.gather(*(client.search(address, _request(q, top_k=1 + i % 9))
                                             for i, q in enumerate(queries)))
                assert [_hits(r) for r in got] == expected
            assert node.calls == {"Search": 0, "SearchBatch": 0, "SearchStream": 1}
    asyncio.run(main())


def test_a_search_on_the_stream_with_a_stale_epoch_raises_stale_epoch_alone(replica):
    async def main():
        async with _node_and_client(_CountingNode(_Host(replica))) as (node, address, client):
            q = _queries(1)[0]
            fresh, stale = await asyncio.gather(
                client.search(address, _request(q)),
                client.search(address, _request(q, epoch=EPOCH - 1)), return_exceptions=True)
            assert len(fresh.hits) == 5
            assert isinstance(stale, errors.StaleEpoch)
            assert node.calls["SearchStream"] == 1 and node.calls["Search"] == 0
    asyncio.run(main())


def test_a_node_without_the_search_stream_is_served_by_unary_searches(replica):
    async def main():
        served = _node_and_client(_CountingNode(_Host(replica), with_stream=False))
        async with served as (node, address, client):
            queries = _queries(6)
            first = [len((await client.search(address, _request(q))).hits) for q in queries]
            again = [len((await client.search(address, _request(q))).hits) for q in queries]
            assert first == again == [5] * 6
            # Asked once, answered UNIMPLEMENTED, never asked again.
            assert node.calls["SearchStream"] == 1
            assert node.calls["Search"] + node.calls["SearchBatch"] >= 6
    asyncio.run(main())


def test_a_search_the_node_never_answers_fails_at_its_deadline(replica, monkeypatch):
    monkeypatch.setattr(limits, "node_rpc_timeout_ms", 400)

    async def main():
        async with _node_and_client(_CountingNode(_Host(replica))) as (node, address, client):
            q = _queries(1)[0]
            started = asyncio.get_running_loop().time()
            with pytest.raises(errors.DeadlineExceeded):
                await client.search(address, _request(q, shard=7))
            assert asyncio.get_running_loop().time() - started < 5
            # The stream itself survives a late search: the next one answers on it.
            assert len((await client.search(address, _request(q))).hits) == 5
            assert node.calls["SearchStream"] == 1
    asyncio.run(main())


def test_searches_go_again_as_unary_calls_when_the_stream_breaks(replica):
    async def main():
        async with _node_and_client(_CountingNode(_Host(replica))) as (node, address, client):
            q = _queries(1)[0]
            assert len((await client.search(address, _request(q))).hits) == 5
            stream = client._streams[address]
            # The stream's call ends under the router (as when the node restarts).
            stream._call.cancel()
            await asyncio.sleep(0)
            answers = await asyncio.gather(*(client.search(address, _request(q))
                                             for _ in range(4)))
            assert all(len(a.hits) == 5 for a in answers)
            assert stream.opened >= 2 or node.calls["Search"] + node.calls["SearchBatch"] > 0
    asyncio.run(main())


def test_a_stream_message_without_a_valid_proof_is_refused(replica):
    async def main():
        node = _CountingNode(_Host(replica))
        server, address = await _serving(node)
        try:
            channel = grpc.aio.insecure_channel(address)
            stub = cluster_auth.stub(node_pb2.DESCRIPTOR.services_by_name["ShardNode"], channel,
                                     ClusterToken.from_secret("another-secret-0123456789abc"))

            async def one():
                yield node_pb2.ShardSearchStreamRequest(
                    ticket=1, batch=node_pb2.ShardSearchBatchRequest(
                        searches=[_request(_queries(1)[0])]))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for _ in stub.SearchStream(one()):
                    pass
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            await channel.close()
        finally:
            await server.stop(None)
    asyncio.run(main())


class _SlowWriterNode(_CountingNode):
    """The real stream handler, with its first response held back for a while before it is
    written: the answers that finish meanwhile wait for the next write."""

    def SearchStream(self, requests, context):
        answers = super().SearchStream(requests, context)

        async def held_back():
            first = True
            async for response in answers:
                if first:
                    await asyncio.sleep(1.0)
                    first = False
                yield response
        return held_back()


async def _stream_answers(address: str, queries: list, merged: bool) -> list:
    channel = grpc.aio.insecure_channel(address)
    try:
        stub = cluster_auth.stub(node_pb2.DESCRIPTOR.services_by_name["ShardNode"], channel,
                                 TOKEN)

        async def messages():
            for ticket, query in enumerate(queries, start=1):
                yield node_pb2.ShardSearchStreamRequest(
                    ticket=ticket, timeout_ms=10_000, merged_answers=merged,
                    batch=node_pb2.ShardSearchBatchRequest(
                        searches=[_request(query, top_k=1 + ticket % 9)]))
            await asyncio.Event().wait()    # keep the stream open until cancelled
        call = stub.SearchStream(messages())
        responses, answered = [], 0
        async for response in call:
            responses.append(response)
            answered += 1 + len(response.more)
            if answered == len(queries):
                break
        call.cancel()
        return responses
    finally:
        await channel.close()


def test_answers_finished_during_a_write_leave_together_to_a_router_that_reads_them(replica):
    async def main():
        async with _node_and_client(_SlowWriterNode(_Host(replica))) as (node, address, client):
            queries = _queries(20)
            expected = {ticket: _hits(await client._stub(address).Search(
                _request(q, top_k=1 + ticket % 9), timeout=10))
                for ticket, q in enumerate(queries, start=1)}
            responses = await _stream_answers(address, queries, merged=True)
            answers = [a for r in responses for a in (r, *r.more)]
            assert sorted(a.ticket for a in answers) == list(range(1, 21))
            assert {a.ticket: _hits(a.batch.outcomes[0].response) for a in answers} == expected
            assert len(responses) < len(queries)    # some answers shared a write
            assert all(len(r.more) < limits.search_stream_answers_per_write_max
                       for r in responses)
            assert not any(len(a.more) for r in responses for a in r.more)
    asyncio.run(main())


def test_searches_handed_to_an_idle_node_in_one_turn_share_one_stream_message(replica):
    async def main():
        async with _node_and_client(_CountingNode(_Host(replica))) as (node, address, client):
            queries = _queries(3)
            expected = [_hits(await client._stub(address).Search(_request(q), timeout=10))
                        for q in queries]
            # The shards of one query (here shards 0 and 1 of one node) and a query that came
            # in the same turn: one message on the stream, each search its own answer.
            got = await asyncio.gather(client.search(address, _request(queries[0])),
                                       client.search(address, _request(queries[1], shard=1)),
                                       client.search(address, _request(queries[2])))
            assert [_hits(r) for r in got] == expected
            stream = client._streams[address]
            assert stream.messages == 1
            assert node.calls["SearchStream"] == 1 and node.calls["Search"] == len(queries)
    asyncio.run(main())


def test_a_router_that_does_not_read_merged_answers_gets_one_response_per_message(replica):
    async def main():
        server, address = await _serving(_SlowWriterNode(_Host(replica)))
        try:
            responses = await _stream_answers(address, _queries(20), merged=False)
            assert sorted(r.ticket for r in responses) == list(range(1, 21))
            assert not any(len(r.more) for r in responses)
        finally:
            await server.stop(None)
    asyncio.run(main())


def test_the_router_stream_settles_every_message_of_a_merged_response(replica, monkeypatch):
    monkeypatch.setattr(limits, "node_rpc_timeout_ms", 8_000)   # a lost answer fails sooner

    async def main():
        async with _node_and_client(_SlowWriterNode(_Host(replica))) as (node, address, client):
            queries = _queries(30)
            requests = [_request(q, top_k=1 + i % 9) for i, q in enumerate(queries)]
            expected = [_hits(await client._stub(address).Search(r, timeout=10))
                        for r in requests]
            stream = SearchStream(client._stub(address).SearchStream)
            # One message per search, all in flight while the node holds its first write back.
            loop = asyncio.get_running_loop()
            futures = [loop.create_future() for _ in requests]
            for request, future in zip(requests, futures):
                stream.post([request], [future], lambda: None, lambda searches, lost: None)
            got = await asyncio.gather(*futures)
            assert [_hits(response) for response in got] == expected
            assert stream.messages == len(requests) and node.calls["SearchStream"] == 1
            stream.close()
    asyncio.run(main())


def test_a_search_handed_over_without_a_task_answers_like_search(replica):
    async def main():
        async with _node_and_client(_CountingNode(_Host(replica))) as (node, address, client):
            q = _queries(1)[0]
            expected = _hits(await client._stub(address).Search(_request(q), timeout=10))
            tasks_before = len(asyncio.all_tasks())
            soon = client.search_soon(address, _request(q))
            stale = client.search_soon(address, _request(q, epoch=EPOCH - 1))
            # Handed to the stream: no task of their own (the stream's reader is one task for
            # the stream's whole life).
            assert len(asyncio.all_tasks()) <= tasks_before + 1
            assert _hits(await soon) == expected
            with pytest.raises(errors.StaleEpoch):
                await stale
            # A search the stream does not carry (exact) still answers, as a unary call.
            exact = await client.search_soon(address, _request(q, exact=True))
            assert len(exact.hits) == 5 and node.calls["Search"] == 2
    asyncio.run(main())


def test_the_stream_outbox_joins_answers_only_for_a_merging_router_and_up_to_its_limit():
    from node.server import _StreamOutbox

    async def main():
        outbox = _StreamOutbox()
        outbox.slot(1, merging=False)
        outbox.slot(2, merging=False)       # an old router: a response per answer
        for ticket in range(3, 3 + limits.search_stream_answers_per_write_max + 1):
            outbox.slot(ticket, merging=True)
        outbox.slot(99, merging=True)
        outbox.give_back()                   # the inline path declined: no answer for 99
        outbox.close()
        responses = []
        while (response := await outbox.next()) is not None:
            responses.append(response)
        tickets = [[r.ticket, *(m.ticket for m in r.more)] for r in responses]
        full = limits.search_stream_answers_per_write_max
        # Answer 3 joins answer 2's response (still waiting) until it holds `full` answers;
        # the last two start the next one (and 99, given back, is in none).
        assert tickets == [[1], list(range(2, 2 + full)), [2 + full, 3 + full]]
    asyncio.run(main())


def test_the_stream_outbox_writer_waits_for_an_answer_and_ends_when_closed():
    from node.server import _StreamOutbox

    async def main():
        outbox = _StreamOutbox()
        waiting = asyncio.ensure_future(outbox.next())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        outbox.slot(5, merging=True)
        assert (await asyncio.wait_for(waiting, 5)).ticket == 5
        closed = asyncio.ensure_future(outbox.next())
        await asyncio.sleep(0.05)
        outbox.close()
        assert await asyncio.wait_for(closed, 5) is None
    asyncio.run(main())


def test_a_search_that_fails_inline_ends_the_stream_without_a_half_built_answer(replica,
                                                                                  monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the graph broke")
    monkeypatch.setattr(replica, "search_batch", broken)

    async def main():
        server, address = await _serving(_CountingNode(_Host(replica)))
        channel = grpc.aio.insecure_channel(address)
        try:
            stub = cluster_auth.stub(node_pb2.DESCRIPTOR.services_by_name["ShardNode"],
                                     channel, TOKEN)

            async def one():
                yield node_pb2.ShardSearchStreamRequest(
                    ticket=1, merged_answers=True, batch=node_pb2.ShardSearchBatchRequest(
                        searches=[_request(_queries(1)[0])]))
                await asyncio.Event().wait()
            received = []
            with pytest.raises(grpc.aio.AioRpcError):
                async for response in stub.SearchStream(one()):
                    received.append(response)
            assert received == []
        finally:
            await channel.close()
            await server.stop(None)
    asyncio.run(main())


# ----------------------------------------------------------------------------- search frames

@contextlib.asynccontextmanager
async def _served(node: _CountingNode, frames_on: bool = True):
    """`node` on loopback over gRPC and (frames_on) search frames, and a router's shard client:
    (frame server, gRPC address, client)."""
    server, address = await _serving(node)
    frame_server = SearchFrameServer(node, TOKEN)
    if frames_on:
        node.search_frames_address = await frame_server.start("127.0.0.1:0", None, address)
    client = GrpcShardClient(TOKEN)
    try:
        yield frame_server, address, client
    finally:
        await client.close()
        await frame_server.stop()
        await server.stop(None)


async def _until(condition, timeout_s: float = 10.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout_s} s")
        await asyncio.sleep(0.02)


def _link(client: GrpcShardClient, address: str):
    return client._streams[address].frames


async def _link_up(client: GrpcShardClient, address: str, q: np.ndarray):
    """The node's frame link, once up: the first search starts it (and goes over gRPC)."""
    assert len((await client.search(address, _request(q))).hits) == 5
    link = _link(client, address)
    await _until(lambda: link.ready(), what="the frame link")
    return link


def test_plain_searches_ride_the_frame_link_once_it_is_up_and_answer_as_unary_searches(replica):
    async def main():
        node = _CountingNode(_Host(replica))
        async with _served(node) as (_, address, client):
            queries = _queries(40)
            expected = [_hits(await client._stub(address).Search(_request(q, top_k=1 + i % 9),
                                                                  timeout=10))
                        for i, q in enumerate(queries)]
            link = await _link_up(client, address, queries[0])
            node.calls = dict.fromkeys(node.calls, 0)
            for _ in range(3):
                got = await asyncio.gather(*(client.search(address, _request(q, top_k=1 + i % 9))
                                             for i, q in enumerate(queries)))
                assert [_hits(r) for r in got] == expected
            assert node.calls == {"Search": 0, "SearchBatch": 0, "SearchStream": 0}
            assert link.opened == 1 and link.sent >= 3 and node.status_calls == 1
            assert not link.waiting
            # A vanished peer host ends the connection within the bound (frames.tune_socket).
            sock = link._connection.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == \
                limits.search_frames_unacked_ms
    asyncio.run(main())


def test_a_search_with_a_stale_epoch_fails_alone_on_the_frame_link(replica):
    async def main():
        async with _served(_CountingNode(_Host(replica))) as (_, address, client):
            q = _queries(1)[0]
            await _link_up(client, address, q)
            fresh, stale = await asyncio.gather(
                client.search(address, _request(q)),
                client.search(address, _request(q, epoch=EPOCH - 1)), return_exceptions=True)
            assert len(fresh.hits) == 5
            assert isinstance(stale, errors.StaleEpoch)
    asyncio.run(main())


def test_a_search_the_node_never_answers_fails_at_its_deadline_on_the_frame_link(
        replica, monkeypatch):
    monkeypatch.setattr(limits, "node_rpc_timeout_ms", 400)

    async def main():
        async with _served(_CountingNode(_Host(replica))) as (_, address, client):
            q = _queries(1)[0]
            link = await _link_up(client, address, q)
            started = time.monotonic()
            with pytest.raises(errors.DeadlineExceeded):
                await client.search(address, _request(q, shard=7))
            assert time.monotonic() - started < 5
            assert not link.waiting
            # The link survives a late search.
            assert len((await client.search(address, _request(q))).hits) == 5
            assert link.opened == 1
    asyncio.run(main())


def test_searches_a_lost_link_carried_go_again_and_the_link_comes_back(replica, monkeypatch):
    monkeypatch.setattr(limits, "search_frames_retry_ms", 100)

    async def main():
        node = _CountingNode(_Host(replica))
        async with _served(node) as (frame_server, address, client):
            q = _queries(1)[0]
            link = await _link_up(client, address, q)
            # Searches in flight on the link when the node drops it: answered all the same.
            pending = [asyncio.ensure_future(client.search(address, _request(q, shard=7)))
                       for _ in range(3)]
            await _until(lambda: sum(len(entry[0]) for entry in link.waiting.values()) == 3,
                         what="three searches on the link")
            for connection in list(frame_server._connections):
                connection.abort()
            await _until(lambda: not link.waiting, what="the lost link's searches resent")
            answers = await asyncio.gather(*(client.search(address, _request(q))
                                             for _ in range(4)))
            assert all(len(a.hits) == 5 for a in answers)
            for search in pending:  # shard 7 never answers: resent as unary calls, given up
                search.cancel()
            await _until(lambda: link.ready(), what="the link back")
            assert link.opened == 2 and node.status_calls == 2
    asyncio.run(main())


def test_a_node_that_takes_no_frames_is_asked_once_and_searched_over_grpc(replica):
    async def main():
        node = _CountingNode(_Host(replica))
        async with _served(node, frames_on=False) as (_, address, client):
            q = _queries(1)[0]
            for _ in range(5):
                assert len((await client.search(address, _request(q))).hits) == 5
            link = _link(client, address)
            await _until(lambda: link.unsupported, what="the link given up")
            for _ in range(3):
                assert len((await client.search(address, _request(q))).hits) == 5
            assert node.status_calls == 1 and link.opened == 0
            assert node.calls["SearchStream"] == 1
    asyncio.run(main())


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def _closed_by_node(frame_address: str, data: bytes) -> bytes:
    """Sends `data` on a new connection; what the node answered before it closed (b"" when
    it answered nothing). Fails when the node keeps the connection open for 5 s."""
    host, port = frame_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        while True:
            chunk = sock.recv(65536)    # socket.timeout after 5 s: the node did not close it
            if not chunk:
                return received
            received += chunk


def _signed_message(token: ClusterToken, q: np.ndarray) -> bytes:
    message = node_pb2.ShardSearchStreamRequest(ticket=1, timeout_ms=5_000,
                                                batch=node_pb2.ShardSearchBatchRequest(
                                                    searches=[_request(q)]))
    return token.sign(frames.FRAMES_METHOD, message.SerializeToString())


@pytest.mark.parametrize("case", ["wrong secret", "no proof", "proof for another method",
                                  "no preamble", "oversized frame", "not a message"])
def test_a_connection_that_breaks_the_format_or_the_proof_is_closed_unanswered(replica, case):
    async def main():
        node = _CountingNode(_Host(replica))
        async with _served(node) as (frame_server, _, _):
            q = _queries(1)[0]
            body = node_pb2.ShardSearchStreamRequest(
                ticket=1, batch=node_pb2.ShardSearchBatchRequest(searches=[_request(q)])
            ).SerializeToString()
            data = {
                "wrong secret": frames.MAGIC + _frame(_signed_message(
                    ClusterToken.from_secret("another-secret-0123456789abc"), q)),
                "no proof": frames.MAGIC + _frame(body),
                "proof for another method": frames.MAGIC + _frame(TOKEN.sign(
                    "/tributary.node.ShardNode/SearchStream", body)),
                "no preamble": _frame(_signed_message(TOKEN, q)),
                "oversized frame": frames.MAGIC + struct.pack(
                    ">I", limits.grpc_message_bytes_max + 1),
                "not a message": frames.MAGIC + _frame(TOKEN.sign(frames.FRAMES_METHOD,
                                                                  b"\xff" * 40)),
            }[case]
            answered = await asyncio.to_thread(_closed_by_node, node.search_frames_address,
                                               data)
            assert answered == b""
            # The same connection done right is answered.
            good = frames.MAGIC + _frame(_signed_message(TOKEN, q))
            host, port = node.search_frames_address.rsplit(":", 1)

            def ask() -> node_pb2.ShardSearchStreamResponse:
                with socket.create_connection((host, int(port)), timeout=5) as sock:
                    sock.sendall(good)
                    reader = frames.FrameReader(1 << 20)
                    while True:
                        got = reader.feed(sock.recv(65536))
                        if got:
                            return node_pb2.ShardSearchStreamResponse.FromString(got[0])
            response = await asyncio.to_thread(ask)
            assert response.ticket == 1 and len(response.batch.outcomes[0].response.hits) == 5
    asyncio.run(main())


@settings(max_examples=200, deadline=None)
@given(payloads=st.lists(st.binary(max_size=300), max_size=12),
       cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=20))
def test_frames_come_out_whole_however_the_bytes_are_cut(payloads, cuts):
    stream = frames.MAGIC + b"".join(frames.encode(p) for p in payloads)
    reader = frames.FrameReader(300, expect_magic=True)
    got, start = [], 0
    for cut in sorted(c % (len(stream) + 1) for c in cuts) + [len(stream)]:
        got += reader.feed(stream[start:cut])
        start = max(start, cut)
    assert got == payloads


def test_the_frame_reader_refuses_a_wrong_preamble_as_soon_as_it_differs():
    reader = frames.FrameReader(100, expect_magic=True)
    assert reader.feed(frames.MAGIC[:3]) == []
    with pytest.raises(frames.FrameError, match="preamble"):
        reader.feed(b"X")
    with pytest.raises(frames.FrameError, match="preamble"):
        frames.FrameReader(100, expect_magic=True).feed(b"PRI * HTTP/2.0\r\n")
    with pytest.raises(frames.FrameError, match="over the bound"):
        frames.FrameReader(100).feed(struct.pack(">I", 101))


def test_a_connection_that_never_sends_the_preamble_is_closed_at_the_connect_bound(
        replica, monkeypatch):
    monkeypatch.setattr(limits, "search_frames_connect_ms", 300)

    async def main():
        node = _CountingNode(_Host(replica))
        async with _served(node):
            started = time.monotonic()
            assert await asyncio.to_thread(_closed_by_node, node.search_frames_address,
                                           b"") == b""
            assert time.monotonic() - started < 3
    asyncio.run(main())


def test_a_closing_router_fails_what_its_link_carried_instead_of_resending_it(replica):
    async def main():
        node = _CountingNode(_Host(replica))
        async with _served(node) as (_, address, client):
            q = _queries(1)[0]
            link = await _link_up(client, address, q)
            pending = asyncio.ensure_future(client.search(address, _request(q, shard=7)))
            await _until(lambda: link.waiting, what="a search on the link")
            link.close()
            with pytest.raises(errors.Unavailable):
                await pending
            assert node.calls["Search"] == node.calls["SearchBatch"] == 0
    asyncio.run(main())


@pytest.mark.parametrize("listen, advertise", [("127.0.0.1", None), ("127.0.0.1:99999", None),
                                               ("127.0.0.1:0", "node-0"),
                                               ("127.0.0.1:0", "node-0:x")])
def test_a_bad_search_frame_address_stops_the_node_with_a_clear_error(listen, advertise):
    async def main():
        with pytest.raises(SystemExit, match="bad search-frame address"):
            await SearchFrameServer(None, TOKEN).start(listen, advertise, "127.0.0.1:7200")
    asyncio.run(main())
