"""The `tributary` console script: meta, node, router, up and admin sub-commands."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys


def _admin(args: argparse.Namespace) -> None:
    from consensus.client import MetaClient
    from consensus.state import to_doc
    from tributary import cluster_auth, local_secrets

    async def status():
        found = local_secrets.existing(args.data_dir) if args.data_dir else None
        token = cluster_auth.load(args.cluster_secret_file
                                  or (found.cluster_secret_file if found else None))
        client = MetaClient([a for a in args.meta.split(",") if a], token)
        try:
            leader = await client.leader_status()
            state = await client.get_state(linearizable=True)
            return {"leader": leader.leader_raft_address, "term": leader.raft_term,
                    "live_nodes": list(leader.live_nodes),
                    "registered_nodes": list(leader.registered_nodes),
                    "catalog": to_doc(state)}
        finally:
            await client.close()

    print(json.dumps(asyncio.run(status()), indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tributary", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    from consensus import member
    from node import server as node_server
    from router import server as router_server
    from tributary import cluster_auth, up

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
    s = admin_sub.add_parser("status", help="leader, nodes and catalog")
    s.add_argument("--meta", default="127.0.0.1:7110,127.0.0.1:7111,127.0.0.1:7112")
    s.add_argument("--data-dir", default=None,
                   help="a local cluster's data dir (from `tributary up`): its cluster secret")
    s.add_argument("--cluster-secret-file", default=None,
                   help="file holding the cluster secret (env "
                        f"{cluster_auth.ENV_SECRET_FILE} or {cluster_auth.ENV_SECRET})")
    s.set_defaults(func=_admin)
    from tributary import admin_cli
    admin_cli.add_parsers(admin_sub)  # admin keys ..., admin tenants ... (over REST)

    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("deeplake").setLevel(logging.WARNING)
    args.func(args)


if __name__ == "__main__":
    main()
