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
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time

import grpc
import numpy as np

from bench.timing import median, query_loop
from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc
from proto import node_pb2, node_pb2_grpc
from tributary import limits
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


async def _serve(role: str, port: int, node_ports: list[int]) -> None:
    server = grpc.aio.server(options=_SERVER_OPTIONS)
    if role == "node":
        node_pb2_grpc.add_ShardNodeServicer_to_server(_Node(), server)
    else:
        pb_grpc.add_SearchServiceServicer_to_server(_Forwarder(node_ports), server)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

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


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--serve":
        asyncio.run(_serve(sys.argv[2], int(sys.argv[3]), [int(p) for p in sys.argv[4:]]))
    else:
        main()
