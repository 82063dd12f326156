"""The cost of the internal gRPC hops alone: what a router that does nothing but fan out could
reach, as a fraction of the echo ceiling (bench/echo_router.py), on this machine.

    python -m bench.hop_floor [--seconds 3] [--reps 3]

It starts two "nodes" (grpc.aio ShardNode servers answering Search with a canned 10-hit
response) and three "routers" (grpc.aio SearchService servers, the router's server options):
one answers at once like the echo router, one awaits one node's Search first, one awaits both
nodes at once, as a 2-shard search does. The same synchronous client loop as the end-to-end
benchmark runs against each, interleaved, and the table gives QPS and p50 per fan-out with the
ratio to the zero-hop router. No routing, validation, merge or index work is done anywhere, so
these ratios bound what the real cluster can reach against the echo ceiling.

    python -m bench.hop_floor --transports [--seconds 4] [--reps 3] [--threads 16]

compares transports for the router -> node search hop instead, by CPU per search: the nodes
serve with the real node's interceptors (tracing, RPC metrics, the cluster proof) and the
routers sign every message with a cluster token, as in a cluster; each router awaits both nodes
per query over one of: grpc.aio unary calls, the same with the channel tuned
(`grpc.optimization_target` throughput, no per-call metadata), one long-lived grpc.aio bidi
stream per router -> node pair carrying ticketed batches (SearchStream), a synchronous gRPC
channel driven from a thread pool, and the same ticketed messages as signed frames on one TCP
connection per node (the router's SearchStream with its FrameLink, the node's
SearchFrameServer: what a cluster uses today). CPU is the router's and the two nodes' user +
system time (/proc/PID/stat) over the run, divided by the queries answered.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import grpc
import numpy as np

from bench.e2e import _cpu_seconds
from bench.timing import median, query_loop
from node.search_frames import SearchFrameServer
from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc
from proto import node_pb2, node_pb2_grpc
from router.search_frames import FrameLink
from router.shard_client import SearchStream, deliver, lose
from tributary import cluster_auth, limits, tracing
from tributary.procs import free_port

_SERVER_OPTIONS = [("grpc.max_receive_message_length", limits.grpc_message_bytes_max),
                   ("grpc.max_send_message_length", limits.grpc_message_bytes_max)]


class _Node(node_pb2_grpc.ShardNodeServicer):
    def __init__(self):
        self.answer = node_pb2.ShardSearchResponse(hits=[
            node_pb2.ShardHit(vector=pb.Vector(id=str(i), dimensions=128), score=1 - i / 100)
            for i in range(10)], strategy="hnsw")

    async def Search(self, request, context):
        return self.answer

    def answer_message_now(self, message, into: node_pb2.ShardSearchBatchResponse) -> bool:
        """The search-frame server's inline answer (node/server.py has the real one)."""
        into.outcomes.extend(node_pb2.ShardSearchOutcome(response=self.answer)
                             for _ in message.batch.searches)
        return True

    async def SearchBatch(self, request, context):
        return node_pb2.ShardSearchBatchResponse(outcomes=[
            node_pb2.ShardSearchOutcome(response=self.answer) for _ in request.searches])

    async def SearchStream(self, requests, context):
        async for message in requests:
            yield node_pb2.ShardSearchStreamResponse(
                ticket=message.ticket, batch=node_pb2.ShardSearchBatchResponse(outcomes=[
                    node_pb2.ShardSearchOutcome(response=self.answer)
                    for _ in message.batch.searches]))


class _Forwarder(pb_grpc.SearchServiceServicer):
    def __init__(self, node_ports: list[int]):
        self.stubs = [node_pb2_grpc.ShardNodeStub(grpc.aio.insecure_channel(f"127.0.0.1:{p}"))
                      for p in node_ports]
        self.request = node_pb2.ShardSearchRequest(
            top_k=10, query_values=np.zeros(128, np.float32).tobytes())
        self.answer = pb.SearchVectorsResponse(results=[
            pb.SearchResult(vector=pb.Vector(id=str(i)), score=1 - i / 100, rank=i + 1)
            for i in range(10)])

    async def SearchVectors(self, request, context):
        if self.stubs:
            await asyncio.gather(*(stub.Search(self.request, timeout=30)
                                   for stub in self.stubs))
        return self.answer


_SECRET = "hop-floor-bench-secret-0123456789"
_NODE_SERVICE = node_pb2.DESCRIPTOR.services_by_name["ShardNode"]


def _shard_request(node_index: int) -> node_pb2.ShardSearchRequest:
    return node_pb2.ShardSearchRequest(
        shard=node_pb2.ShardRef(dataset_uuid="00000000-0000-0000-0000-000000000001",
                                shard=node_index, epoch=3),
        top_k=10, ef_search=128, packed=True,
        query_values=np.zeros(128, np.float32).tobytes())


class _UnaryHop(pb_grpc.SearchServiceServicer):
    """grpc.aio unary Search to each node, signed, through the traced stub (today's hop)."""

    def __init__(self, node_ports: list[int], options: list | None = None):
        token = cluster_auth.ClusterToken.from_secret(_SECRET)
        self.stubs = [cluster_auth.stub(_NODE_SERVICE, grpc.aio.insecure_channel(
            f"127.0.0.1:{p}", options=_SERVER_OPTIONS + (options or [])), token)
            for p in node_ports]
        self.requests = [_shard_request(i) for i in range(len(node_ports))]
        self.answer = _Forwarder([]).answer

    async def SearchVectors(self, request, context):
        await asyncio.gather(*(stub.Search(r, timeout=30)
                               for stub, r in zip(self.stubs, self.requests)))
        return self.answer


class _StreamHop(_UnaryHop):
    """One long-lived bidi SearchStream per node; a query's search is one ticketed message."""

    def __init__(self, node_ports: list[int]):
        super().__init__(node_ports)
        self.streams = None

    def _open(self):
        loop = asyncio.get_running_loop()
        self.streams = []
        for stub in self.stubs:
            outbox: asyncio.Queue = asyncio.Queue()
            waiting: dict[int, asyncio.Future] = {}

            async def requests(outbox=outbox):
                while True:
                    yield await outbox.get()
            call = stub.SearchStream(requests())

            async def read(call=call, waiting=waiting):
                async for answer in call:
                    future = waiting.pop(answer.ticket, None)
                    if future is not None and not future.done():
                        future.set_result(answer.batch.outcomes[0].response)
            task = loop.create_task(read())
            self.streams.append((outbox, waiting, task))
        self.tickets = iter(range(1, 1 << 62))

    async def SearchVectors(self, request, context):
        if self.streams is None:
            self._open()
        loop = asyncio.get_running_loop()
        futures = []
        for (outbox, waiting, _), r in zip(self.streams, self.requests):
            ticket = next(self.tickets)
            future = waiting[ticket] = loop.create_future()
            outbox.put_nowait(node_pb2.ShardSearchStreamRequest(
                ticket=ticket, timeout_ms=30_000,
                batch=node_pb2.ShardSearchBatchRequest(searches=[r])))
            futures.append(future)
        await asyncio.wait_for(asyncio.gather(*futures), 30)
        return self.answer


class _SyncThreadHop(_UnaryHop):
    """A synchronous gRPC channel per node; each query's calls go as futures whose callbacks
    come back to the event loop."""

    def __init__(self, node_ports: list[int]):
        token = cluster_auth.ClusterToken.from_secret(_SECRET)
        self.stubs = [cluster_auth.stub(_NODE_SERVICE, grpc.insecure_channel(
            f"127.0.0.1:{p}", options=_SERVER_OPTIONS), token) for p in node_ports]
        self.requests = [_shard_request(i) for i in range(len(node_ports))]
        self.answer = _Forwarder([]).answer

    async def SearchVectors(self, request, context):
        loop = asyncio.get_running_loop()
        futures = []
        for stub, r in zip(self.stubs, self.requests):
            future = loop.create_future()
            call = stub.Search.future(r, timeout=30)
            call.add_done_callback(lambda c, f=future: loop.call_soon_threadsafe(
                _settle_from, f, c))
            futures.append(future)
        await asyncio.gather(*futures)
        return self.answer


class _FramesHop(_UnaryHop):
    """The router's SearchStream with its search-frame link (router/search_frames.py to
    node/search_frames.py): the same ticketed, signed messages as frames on one TCP
    connection per node (the frame server listens on the node's gRPC port + 1)."""

    def __init__(self, node_ports: list[int]):
        super().__init__(node_ports)
        self.node_ports = node_ports
        self.streams = None

    def _open(self) -> list:
        token = cluster_auth.ClusterToken.from_secret(_SECRET)
        streams = []
        for stub, port in zip(self.stubs, self.node_ports):
            async def address(port=port):
                return f"127.0.0.1:{port + 1}"
            streams.append(SearchStream(stub.SearchStream, FrameLink(
                f"127.0.0.1:{port}", address, token, deliver, lose)))
        return streams

    async def SearchVectors(self, request, context):
        if self.streams is None:
            self.streams = self._open()
        loop = asyncio.get_running_loop()
        futures = []
        for stream, r in zip(self.streams, self.requests):
            future = loop.create_future()
            stream.post([r], [future], _nothing, _refuse_resend)
            futures.append(future)
        await asyncio.gather(*futures)
        return self.answer


def _nothing() -> None:
    pass


def _refuse_resend(searches: list, futures: list) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(RuntimeError("the bench's link to a node was lost"))


def _settle_from(future: asyncio.Future, call) -> None:
    if future.done():
        return
    try:
        future.set_result(call.result())
    except grpc.RpcError as exc:
        future.set_exception(exc)


_TUNED = [("grpc.optimization_target", "throughput"), ("grpc.enable_retries", 0),
          ("grpc.primary_user_agent", "")]
_HOPS = {"unary": lambda ports: _UnaryHop(ports),
         "unary-tuned": lambda ports: _UnaryHop(ports, _TUNED),
         "stream": _StreamHop, "sync-thread": _SyncThreadHop, "frames": _FramesHop}


async def _serve(role: str, port: int, node_ports: list[int]) -> None:
    if role == "node":
        from node import metrics as node_metrics
        token = cluster_auth.ClusterToken.from_secret(_SECRET)
        server = grpc.aio.server(options=_SERVER_OPTIONS, interceptors=[
            tracing.AioServerInterceptor(), node_metrics.RpcMetricsInterceptor(),
            cluster_auth.AioServerInterceptor(token)])
        node = _Node()
        node_pb2_grpc.add_ShardNodeServicer_to_server(node, server)
        await SearchFrameServer(node, token).start(f"127.0.0.1:{port + 1}", None,
                                                   f"127.0.0.1:{port}")
    else:
        server = grpc.aio.server(options=_SERVER_OPTIONS)
        servicer = _HOPS[role](node_ports) if role in _HOPS else _Forwarder(node_ports)
        pb_grpc.add_SearchServiceServicer_to_server(servicer, server)
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise SystemExit(f"cannot bind 127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=0.2)


def _wait_ready(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.SearchServiceStub(channel)
        while True:
            try:
                stub.SearchVectors(pb.SearchVectorsRequest(), timeout=2)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def _stop(processes) -> None:
    for process in processes:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def _spawn(role: str, port: int, nodes: list[int]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.hop_floor", "--serve", role, str(port),
         *map(str, nodes)], stdin=subprocess.DEVNULL, start_new_session=True)


def _busy(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return False
        except OSError:
            return True


def transports(args) -> None:
    """CPU per search and QPS of each router -> node transport (see the module's doc)."""
    node_ports = [free_port(), free_port()]
    while any(_busy(p + 1) for p in node_ports):
        node_ports = [free_port(), free_port()]
    router_ports = {hop: free_port() for hop in _HOPS}
    nodes = [_spawn("node", p, []) for p in node_ports]
    routers = {hop: _spawn(hop, port, node_ports) for hop, port in router_ports.items()}
    try:
        for port in router_ports.values():
            _wait_ready(port)
        queries = [pb.SearchVectorsRequest(dataset_id="bench", query_vector=[0.0] * 128,
                                           options=pb.SearchOptions(top_k=10))] * 20_000
        channels = {h: grpc.insecure_channel(f"127.0.0.1:{p}", options=_SERVER_OPTIONS)
                    for h, p in router_ports.items()}
        runs: dict[str, list[dict]] = {h: [] for h in _HOPS}
        order = list(_HOPS)
        for rep in range(args.reps):
            for hop in order if rep % 2 == 0 else reversed(order):
                call = pb_grpc.SearchServiceStub(channels[hop]).SearchVectors
                pids = [routers[hop].pid] + [n.pid for n in nodes]
                before = [_cpu_seconds(pid) for pid in pids]
                run = query_loop(lambda q, c=call: c(q, timeout=30), queries,
                                 threads=args.threads, max_seconds=args.seconds,
                                 min_queries=200)
                spent = [_cpu_seconds(pid) - b for pid, b in zip(pids, before)]
                run["router_ms"] = spent[0] * 1000 / run["queries"]
                run["nodes_ms"] = sum(spent[1:]) * 1000 / run["queries"]
                runs[hop].append(run)
        print(f"load average {os.getloadavg()[0]:.1f}, {args.threads} client threads, "
              f"medians of {args.reps}")
        print(f"{'router -> 2 nodes over':24s} {'QPS':>7s} {'p50 ms':>7s} "
              f"{'CPU ms/query':>12s} {'router':>7s} {'nodes':>7s}")
        for hop, rs in runs.items():
            router_ms = median([r["router_ms"] for r in rs])
            nodes_ms = median([r["nodes_ms"] for r in rs])
            print(f"{hop:24s} {median([r['qps'] for r in rs]):7.0f} "
                  f"{median([r['p50_ms'] for r in rs]):7.2f} {router_ms + nodes_ms:12.3f} "
                  f"{router_ms:7.3f} {nodes_ms:7.3f}")
        for channel in channels.values():
            channel.close()
    finally:
        _stop(list(routers.values()) + nodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--transports", action="store_true",
                        help="compare router -> node transports by CPU per search")
    parser.add_argument("--threads", type=int, default=16, help="client threads (--transports)")
    args = parser.parse_args()
    if args.transports:
        transports(args)
        return

    node_ports = [free_port(), free_port()]
    router_ports = {hops: free_port() for hops in (0, 1, 2)}
    plan = [("node", p, []) for p in node_ports] + [
        ("router", port, node_ports[:hops]) for hops, port in router_ports.items()]
    processes = [subprocess.Popen(
        [sys.executable, "-m", "bench.hop_floor", "--serve", role, str(port),
         *map(str, nodes)], stdin=subprocess.DEVNULL, start_new_session=True)
        for role, port, nodes in plan]
    try:
        for port in router_ports.values():
            _wait_ready(port)
        rng = np.random.default_rng(0)
        queries = [pb.SearchVectorsRequest(dataset_id="bench", query_vector=q.tolist(),
                                           options=pb.SearchOptions(top_k=10))
                   for q in rng.standard_normal((2000, 128)).astype(np.float32)]
        channels = {h: grpc.insecure_channel(f"127.0.0.1:{p}", options=_SERVER_OPTIONS)
                    for h, p in router_ports.items()}
        stubs = {h: pb_grpc.SearchServiceStub(c) for h, c in channels.items()}
        runs: dict[int, list[dict]] = {h: [] for h in stubs}
        for rep in range(args.reps):
            for hops in (0, 1, 2) if rep % 2 == 0 else (2, 1, 0):
                call = stubs[hops].SearchVectors
                runs[hops].append(query_loop(lambda q, c=call: c(q, timeout=30), queries,
                                             max_seconds=args.seconds))
        qps = {h: median([r["qps"] for r in rs]) for h, rs in runs.items()}
        print(f"{'router':32s} {'QPS':>7s} {'p50 ms':>7s} {'/ zero hops':>11s}")
        for hops, label in ((0, "answers at once (echo)"), (1, "awaits 1 node"),
                            (2, "awaits 2 nodes at once")):
            p50 = median([r["p50_ms"] for r in runs[hops]])
            print(f"{label:32s} {qps[hops]:7.0f} {p50:7.2f} {qps[hops] / qps[0]:11.3f}")
        for channel in channels.values():
            channel.close()
    finally:
        _stop(processes)


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--serve":
        from tributary import event_loop
        event_loop.run(_serve(sys.argv[2], int(sys.argv[3]), [int(p) for p in sys.argv[4:]]))
    else:
        main()
