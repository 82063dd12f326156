"""The `tributary` console script: meta, node, router, up and admin sub-commands."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tributary", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-format", default=None, choices=("text", "json"),
                        help="log lines as text or JSON (env TRIBUTARY_LOG_FORMAT; default text)")
    sub = parser.add_subparsers(dest="command", required=True)

    from consensus import member
    from node import server as node_server
    from router import server as router_server
    from tributary import up

    p = sub.add_parser("meta", help="run one member of the metadata Raft group")
    member.add_arguments(p)
    p.set_defaults(func=member.run)
    p = sub.add_parser("node", help="run a shard node")
    node_server.add_arguments(p)
    p.set_defaults(func=node_server.run)
    p = sub.add_parser("router", help="run a router (REST + gRPC)")
    router_server.add_arguments(p)
    p.set_defaults(func=router_server.run)
    p = sub.add_parser("up", help="run a whole local cluster in the foreground")
    up.add_arguments(p)
    p.set_defaults(func=up.run)
    import chaos.cli
    p = sub.add_parser("chaos", help="fault injection (Toxiproxy-compatible proxy)")
    chaos.cli.add_arguments(p)
    p.set_defaults(func=chaos.cli.run)
    p = sub.add_parser("admin", help="operator commands")
    admin_sub = p.add_subparsers(dest="admin_command", required=True)
    from tributary import cluster_cli
    cluster_cli.add_parsers(admin_sub)  # admin status, nodes list, datasets show
    from tributary import admin_cli
    admin_cli.add_parsers(admin_sub)  # admin keys ..., admin tenants ... (over REST)

    args = parser.parse_args(argv)
    from tributary import logs, tracing
    logs.setup(args.log_level, args.log_format)  # tributary/logs.py: text or JSON lines
    if args.command in ("meta", "node", "router"):
        tracing.setup(args.command, getattr(args, "data_dir", None))
    args.func(args)


if __name__ == "__main__":
    main()
