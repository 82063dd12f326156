"""`tributary router`: REST and gRPC front ends over one RouterCore."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
from dataclasses import dataclass

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from consensus.client import CatalogCache, MetaClient
from proto import deeplake_service_pb2 as pb
from router.core import RouterCore
from router import admin, auth, metrics, quotas
from router.admission import GuardedCore
from router.grpc_api import ProtocolErrorInterceptor, add_services
from router.rest import make_app
from router.shard_client import GrpcShardClient
from tributary import cluster_auth, errors, limits, tracing
from tributary.periodic import Periodic

log = logging.getLogger("tributary.router")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--http", default="127.0.0.1:8000", help="REST listen address")
    parser.add_argument("--grpc", default="127.0.0.1:50051", help="public gRPC listen address")
    parser.add_argument("--meta", required=True, help="comma-separated meta gRPC addresses")
    parser.add_argument("--min-nodes", type=int, default=1,
                        help="health stays 503 until this many nodes are registered")
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

    # Authentication first, so a caller without credentials hears UNAUTHENTICATED even when its
    # request does not decode; then undecodable requests are INVALID_ARGUMENT.
    grpc_server = grpc.aio.server(interceptors=[tracing.AioServerInterceptor(),
                                                auth.AuthInterceptor(authenticator),
                                                ProtocolErrorInterceptor()], options=[
        ("grpc.max_receive_message_length", limits.grpc_message_bytes_max),
        ("grpc.max_send_message_length", limits.grpc_message_bytes_max)])
    add_services(grpc_server, guarded)
    admin_service = admin.add_grpc_service(grpc_server, guarded)  # tributary.admin.v1
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    service_names = [pb.DESCRIPTOR.services_by_name[s].full_name for s in
                     ("DatasetService", "VectorService", "SearchService", "HealthService")]
    reflection.enable_server_reflection(service_names + [admin_service, reflection.SERVICE_NAME,
                                                         health.SERVICE_NAME], grpc_server)
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
    asyncio.run(serve(args))
