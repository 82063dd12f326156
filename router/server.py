"""`tributary router`: REST and gRPC front ends over one RouterCore."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import ssl
from dataclasses import dataclass

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from consensus.client import CatalogCache, MetaClient
from proto import deeplake_service_pb2 as pb
from router.core import RouterCore
from router import admin, auth, metrics, quotas
from router.admission import GuardedCore
from router.grpc_api import ProtocolErrorInterceptor, add_services
from router.rest import make_app
from router.shard_client import GrpcShardClient
from tributary import cluster_auth, errors, event_loop, limits, tracing
from tributary.periodic import Periodic

log = logging.getLogger("tributary.router")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--http", default="127.0.0.1:8000", help="REST listen address")
    parser.add_argument("--grpc", default="127.0.0.1:50051", help="public gRPC listen address")
    parser.add_argument("--meta", required=True, help="comma-separated meta gRPC addresses")
    parser.add_argument("--min-nodes", type=int, default=1,
                        help="health stays 503 until this many nodes have registered (once; "
                             "draining or removing nodes later does not close it again)")
    auth.add_arguments(parser)  # credentials, JWT keys, exempt routes (router/auth.py)
    cluster_auth.add_argument(parser)  # the token this router sends to nodes and meta
    parser.add_argument("--tls-cert", default=None,
                        help="PEM certificate chain: serve REST (https) and gRPC over TLS")
    parser.add_argument("--tls-key", default=None, help="PEM private key for --tls-cert")


@dataclass(frozen=True)
class TlsMaterial:
    cert_pem: bytes
    key_pem: bytes
    ssl_context: ssl.SSLContext


def load_tls(cert_path: str | None, key_path: str | None) -> TlsMaterial | None:
    """Reads the certificate and key once, for both servers; exits with a clear message when
    only one is given or they do not load."""
    if not cert_path and not key_path:
        return None
    if not cert_path or not key_path:
        raise SystemExit("--tls-cert and --tls-key must be given together")
    try:
        with open(cert_path, "rb") as f:
            cert_pem = f.read()
        with open(key_path, "rb") as f:
            key_pem = f.read()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert_path, key_path)
    except (OSError, ssl.SSLError) as exc:
        raise SystemExit(f"cannot load TLS certificate/key: {exc}") from None
    return TlsMaterial(cert_pem, key_pem, context)


def public_edge(authenticator: auth.Authenticator) -> list:
    """The wrappers of the public gRPC edge, outermost first: the caller's trace context, then
    authentication (so a caller without credentials hears UNAUTHENTICATED even when its
    request does not decode), then INVALID_ARGUMENT for a request that does not decode."""
    return [tracing.AioServerInterceptor.wrap, auth.AuthInterceptor(authenticator).wrap,
            ProtocolErrorInterceptor().wrap]


class _WrappedGenericHandler(grpc.GenericRpcHandler):
    """A generic handler whose method handlers come back wrapped, each built once."""

    def __init__(self, inner: grpc.GenericRpcHandler, wrap):
        self._inner, self._wrap = inner, wrap
        self._wrapped: dict[str, tuple[object, object]] = {}

    def service(self, handler_call_details):
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, self._wrap(method, handler))
        return cached[1]


class EdgeRegistrar:
    """Stands in for the grpc.aio server while services register: each method handler is
    wrapped in `wrappers` (functions `(method, handler) -> handler`, outermost first) once, at
    registration. This does what server interceptors would, without their cost on every call
    (grpc.aio runs each interceptor's coroutine and builds new handlers per call; the profile
    of the router at 16 search threads put that at a tenth of its CPU)."""

    def __init__(self, server: grpc.aio.Server, wrappers: list):
        self._server, self._wrappers = server, list(wrappers)

    def wrap(self, method: str, handler):
        for wrapper in reversed(self._wrappers):
            handler = wrapper(method, handler)
        return handler

    def add_generic_rpc_handlers(self, handlers) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_WrappedGenericHandler(h, self.wrap) for h in handlers))

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict) -> None:
        self._server.add_registered_method_handlers(service_name, {
            name: self.wrap(f"/{service_name}/{name}", handler)
            for name, handler in method_handlers.items()})

    def __getattr__(self, name: str):
        return getattr(self._server, name)


def settle_garbage_collector() -> None:
    """After start-up: what exists now (modules, descriptors, the catalog) lives as long as the
    process, so it is moved out of the collector's sight (gc.freeze), and young collections run
    every limits.router_gc_gen0_allocations_max allocations instead of every 700."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(limits.router_gc_gen0_allocations_max, older, oldest)


async def serve(args: argparse.Namespace) -> None:
    # First, so a router exposed without credentials exits before doing anything.
    auth_config = auth.config_from_args(args, [args.http, args.grpc])
    token = cluster_auth.require(args, "router")
    meta = MetaClient([a for a in args.meta.split(",") if a], token)
    catalog = CatalogCache(meta)
    while True:
        try:
            await catalog.refresh()
            break
        except errors.TributaryError as exc:
            log.warning("waiting for meta group: %s", exc.message)
            await asyncio.sleep(limits.meta_wait_retry_ms / 1000)
    catalog.start()
    shards = GrpcShardClient(token)
    core = RouterCore(meta, catalog, shards, min_nodes=args.min_nodes)
    metrics.watch_catalog(lambda: catalog.state)
    # Both adapters serve the core behind authentication, authorization and tenant quotas.
    authenticator = auth.Authenticator(auth_config, catalog)
    router_count = quotas.RouterCount(meta)
    router_count.start()
    enforcer = quotas.QuotaEnforcer(core, router_count)
    metrics.watch_tenants(enforcer)  # per-tenant usage and quota gauges
    guarded = GuardedCore(core, authenticator, enforcer)
    log.info("authentication %s", "on" if authenticator.enabled else
             "off (loopback only, no credentials configured)")

    grpc_server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", limits.grpc_message_bytes_max),
        ("grpc.max_send_message_length", limits.grpc_message_bytes_max)])
    # Every service is registered through the public edge (tracing, authentication, then the
    # refusal of undecodable requests), wrapped around each method once.
    edge = EdgeRegistrar(grpc_server, public_edge(authenticator))
    add_services(edge, guarded)
    admin_service = admin.add_grpc_service(edge, guarded)  # tributary.admin.v1
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, edge)
    service_names = [pb.DESCRIPTOR.services_by_name[s].full_name for s in
                     ("DatasetService", "VectorService", "SearchService", "HealthService")]
    # enable_server_reflection picks the asyncio servicer only for a grpc.aio.Server itself,
    # so the registrar registers that servicer by hand.
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflection.aio.ReflectionServicer(
        service_names + [admin_service, reflection.SERVICE_NAME, health.SERVICE_NAME]), edge)
    tls = load_tls(args.tls_cert, args.tls_key)
    bound = (grpc_server.add_secure_port(args.grpc, grpc.ssl_server_credentials(
        [(tls.key_pem, tls.cert_pem)])) if tls else grpc_server.add_insecure_port(args.grpc))
    if bound == 0:
        raise SystemExit(f"cannot bind gRPC address {args.grpc}")
    await grpc_server.start()

    runner = web.AppRunner(make_app(guarded), access_log=None)
    await runner.setup()
    host, port = args.http.rsplit(":", 1)
    site = web.TCPSite(runner, host, int(port), ssl_context=tls.ssl_context if tls else None)
    await site.start()
    log.info("router serving REST on %s and gRPC on %s", args.http, args.grpc)
    settle_garbage_collector()

    async def track_health():
        healthy, _ = await core.health()
        status = (health_pb2.HealthCheckResponse.SERVING if healthy
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in [""] + service_names:
            await health_servicer.set(name, status)

    tracker = Periodic(limits.router_health_interval_ms / 1000, track_health,
                       "health tracking").start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await tracker.stop()
    await router_count.stop()
    await catalog.stop()
    await runner.cleanup()
    await grpc_server.stop(grace=limits.router_stop_grace_ms / 1000)
    await shards.close()
    await meta.close()


def run(args: argparse.Namespace) -> None:
    event_loop.run(serve(args))
