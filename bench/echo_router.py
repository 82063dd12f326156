"""The "Python echo-router ceiling": a minimal grpc.aio deeplake.v1 SearchService that answers
every SearchVectors with one canned response (captured from the real cluster in the same run, so
the bytes on the wire match). It parses requests and serializes responses exactly like the router's
gRPC server (same grpc.aio server, same message-size options) and does nothing else, so it bounds
what any Python router could reach on this machine with the same client loop.

    python -m bench.echo_router --port P --response canned.bin
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc

from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc
from tributary import limits


class EchoSearch(pb_grpc.SearchServiceServicer):
    def __init__(self, canned: pb.SearchVectorsResponse):
        self.canned = canned

    async def SearchVectors(self, request, context):
        return self.canned


async def serve(port: int, response_path: str) -> None:
    with open(response_path, "rb") as f:
        canned = pb.SearchVectorsResponse.FromString(f.read())
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", limits.grpc_message_bytes_max),
        ("grpc.max_send_message_length", limits.grpc_message_bytes_max)])
    pb_grpc.add_SearchServiceServicer_to_server(EchoSearch(canned), server)
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise SystemExit(f"cannot bind 127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("echo-router ready", flush=True)
    await stop.wait()
    await server.stop(grace=0.5)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--response", required=True)
    args = p.parse_args()
    asyncio.run(serve(args.port, args.response))


if __name__ == "__main__":
    main()
