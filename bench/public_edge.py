"""The CPU the router's public gRPC edge costs per call, without nodes: one grpc.aio server
process serving SearchVectors from an in-memory core (10 hits, no shard hop) behind the edge,
built as server interceptors (`interceptors`: today's, which keep one wrapped handler per
method; `before`: a checkout's given by `--base`, which built new handlers on every call) or
wrapped around each method once at registration (`registrar`: `router/server.py`
`EdgeRegistrar`, as the router serves now; `registrar-default-gc`: the same without
gc.freeze and the raised young-generation threshold), searched by
`--threads` client threads. CPU per call is the server process's user + system time over the
run (/proc/PID/stat) divided by the calls answered; the two set-ups alternate, medians of
`--reps`. The end-to-end `bench.search_cpu` cannot resolve a difference this size on a shared box.

    python -m bench.public_edge [--threads 16] [--seconds 5] [--reps 3] [--base CHECKOUT]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

import grpc

from bench.timing import run_threads
from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Catalog:
    state = None

    async def refresh(self, linearizable: bool = False):
        return None


class _Core:
    """Answers every search with the same 10 hits, so only the edge and the servicer run."""

    def __init__(self):
        from consensus.state import MetaState
        self.catalog = _Catalog()
        self.catalog.state = MetaState()
        self.answer = pb.SearchVectorsResponse(results=[
            pb.SearchResult(vector=pb.Vector(id=str(i)), score=1.0 - i / 100) for i in range(10)])

    async def search_vectors(self, request):
        return self.answer


async def _serve(mode: str, port_file: str) -> None:
    from router import admission, auth, quotas
    from router import server as router_server
    from router.grpc_api import ProtocolErrorInterceptor, add_services
    from tributary import tracing

    core = _Core()
    authenticator = auth.Authenticator(auth.AuthConfig(enabled=False), core.catalog)
    guarded = admission.GuardedCore(core, authenticator, quotas.QuotaEnforcer(core))
    if mode == "interceptors":
        server = grpc.aio.server(interceptors=[tracing.AioServerInterceptor(),
                                               auth.AuthInterceptor(authenticator),
                                               ProtocolErrorInterceptor()])
        add_services(server, guarded)
    else:
        server = grpc.aio.server()
        add_services(router_server.EdgeRegistrar(server, router_server.public_edge(
            authenticator)), guarded)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    if mode == "registrar":     # `registrar-default-gc` keeps CPython's collector settings
        router_server.settle_garbage_collector()
    with open(port_file, "w") as f:
        f.write(str(port))
    await server.wait_for_termination()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _one(mode: str, threads: int, seconds: float, repo: str) -> dict:
    """One run of `mode`'s server, started from the checkout `repo` (its router and proto
    modules; this file is run by path)."""
    port_file = f"/tmp/public-edge-{os.getpid()}-{mode}.port"
    if os.path.exists(port_file):
        os.unlink(port_file)
    launcher = ("import runpy, sys; sys.argv = sys.argv[1:]; "
                f"runpy.run_path({os.path.abspath(__file__)!r}, run_name='__main__')")
    child = subprocess.Popen([sys.executable, "-c", launcher, "public_edge", "--serve",
                              "interceptors" if mode == "before" else mode,
                              "--port-file", port_file], cwd=repo)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(port_file) or not open(port_file).read():
            if time.monotonic() > deadline or child.poll() is not None:
                raise RuntimeError("the edge server did not start")
            time.sleep(0.05)
        target = f"127.0.0.1:{open(port_file).read()}"
        request = pb.SearchVectorsRequest(dataset_id="docs", query_vector=[0.5] * 128,
                                          options=pb.SearchOptions(top_k=10))
        channel = grpc.insecure_channel(target)
        stub = pb_grpc.SearchServiceStub(channel)
        for _ in range(200):
            stub.SearchVectors(request, timeout=5)
        counts = [0] * threads
        stop = time.monotonic() + seconds

        def loop(i):
            while time.monotonic() < stop:
                stub.SearchVectors(request, timeout=5)
                counts[i] += 1
        before = _cpu_seconds(child.pid)
        elapsed = run_threads(loop, threads)
        spent = _cpu_seconds(child.pid) - before
        channel.close()
        calls = sum(counts)
        return {"cpu_us_per_call": spent * 1e6 / calls, "calls_per_s": calls / elapsed}
    finally:
        child.terminate()
        child.wait(10)
        if os.path.exists(port_file):
            os.unlink(port_file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--serve", choices=("interceptors", "registrar", "registrar-default-gc"))
    parser.add_argument("--port-file")
    parser.add_argument("--base", help="a checkout from before the change (git archive): its "
                        "interceptors run as a third set-up, `before`")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve, args.port_file))
        return
    modes = (["before"] if args.base else []) + ["interceptors", "registrar-default-gc",
                                                  "registrar"]
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    loads = []
    for rep in range(args.reps):
        order = modes if rep % 2 == 0 else list(reversed(modes))
        for mode in order:
            loads.append(round(os.getloadavg()[0], 1))
            repo = os.path.abspath(args.base) if mode == "before" else REPO
            runs[mode].append(_one(mode, args.threads, args.seconds, repo))
            print(f"rep {rep + 1} {mode}: {runs[mode][-1]}", file=sys.stderr, flush=True)
    print(f"load averages: {loads}")
    for mode, results in runs.items():
        print(f"{mode}: CPU {statistics.median(r['cpu_us_per_call'] for r in results):.0f} us "
              f"per call, {statistics.median(r['calls_per_s'] for r in results):.0f} calls/s "
              f"(runs: {[round(r['cpu_us_per_call']) for r in results]})")


if __name__ == "__main__":
    main()
