"""`tributary admin status | nodes list | datasets show`: the operator's view of the cluster.

    tributary admin status [--json] [--data-dir DIR]
    tributary admin nodes list [--json]
    tributary admin datasets show NAME [--tenant T] [--json]

Each asks a router (--url, env TRIBUTARY_URL, default http://127.0.0.1:8000) with the admin
credential (--api-key, env TRIBUTARY_API_KEY), through the admin REST API
(router/cluster_admin.py). `status --data-dir DIR` asks the meta members of the local cluster
that `tributary up --data-dir DIR` runs directly instead, at the ports and with the secret it
recorded there (cluster.json, secrets/), so it works while no router does. Every failure is one
line on stderr and a non-zero exit; `--json` prints exactly the JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.parse

from tributary import admin_cli

CLUSTER_FILE = "cluster.json"


def _emit(args: argparse.Namespace, doc, render) -> None:
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return
    from rich.console import Console
    Console().print(render(doc))


def _table(title: str, columns: list[str], rows: list[list]):
    from rich.table import Table
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    return table


def _fail(message: str) -> None:
    raise SystemExit(f"tributary admin: {message}")


def _local_meta_status(data_dir: str) -> dict:
    from consensus.client import MetaClient
    from tributary import cluster_auth, local_secrets

    path = os.path.join(os.path.abspath(data_dir), CLUSTER_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            layout = json.load(handle)
    except FileNotFoundError:
        _fail(f"{path} not found: is {data_dir} the data dir of `tributary up`?")
    except (OSError, ValueError) as exc:
        _fail(f"cannot read {path}: {exc}")
    found = local_secrets.existing(data_dir)
    token = cluster_auth.load(found.cluster_secret_file) if found else None

    async def ask():
        client = MetaClient([m["grpc"] for m in layout["meta"]], token)
        try:
            return await client.member_statuses()
        finally:
            await client.close()
    members = asyncio.run(ask())
    if all("error" in m for m in members):
        _fail("no metadata member answers at " + ", ".join(m["grpc_address"] for m in members))
    return {"meta": members}


def status(args: argparse.Namespace) -> None:
    doc = (_local_meta_status(args.data_dir) if args.data_dir
           else admin_cli._request(args, "GET", "/admin/status"))
    _emit(args, doc, lambda d: _table("meta group", [
        "grpc address", "raft address", "role", "term", "commit index", "error"], [
        [m.get("grpc_address"), m.get("raft_address"), m.get("role"), m.get("term"),
         m.get("commit_index"), m.get("error")] for m in d["meta"]]))


def nodes(args: argparse.Namespace) -> None:
    doc = admin_cli._request(args, "GET", "/admin/nodes")["nodes"]
    _emit(args, doc, lambda d: _table("nodes", [
        "node", "address", "state", "copies", "primaries"], [
        [n["node_id"], n["address"], n["state"], n["copies"], n.get("primaries")] for n in d]))


def dataset(args: argparse.Namespace) -> None:
    query = f"?tenant_id={urllib.parse.quote(args.tenant)}" if args.tenant else ""
    doc = admin_cli._request(
        args, "GET", f"/admin/datasets/{urllib.parse.quote(args.name, safe='')}{query}")

    def render(d):
        rows = []
        for shard in d["shards"]:
            for c in shard["copies"]:
                role = "primary" if c["node_id"] == shard["primary"] else "copy"
                rows.append([shard["shard"], shard["term"], c["node_id"], role,
                             "yes" if c["in_sync"] else "no", c.get("last_seq"), c.get("lag"),
                             c.get("vector_count"), c.get("error")])
        return _table(f"{d['dataset']} (tenant {d['tenant_id']}, {d['replication_factor']} "
                      f"copies per shard)", ["shard", "term", "node", "role", "in sync",
                                             "seq", "lag", "vectors", "error"], rows)
    _emit(args, doc, render)


def add_parsers(admin_sub) -> None:
    p = admin_sub.add_parser("status", help="the meta members: role, term, commit index")
    p.add_argument("--json", action="store_true", help="print the JSON document")
    p.add_argument("--data-dir", default=None,
                   help="ask the meta members of this `tributary up` data dir directly")
    admin_cli._common(p)
    p.set_defaults(func=status)

    p = admin_sub.add_parser("nodes", help="nodes and the shard copies they hold")
    sub = p.add_subparsers(dest="nodes_command", required=True)
    q = sub.add_parser("list", help="every registered node: state, copies, primaries")
    q.add_argument("--json", action="store_true", help="print the JSON array")
    admin_cli._common(q)
    q.set_defaults(func=nodes)

    p = admin_sub.add_parser("datasets", help="a dataset's shards and copies")
    sub = p.add_subparsers(dest="datasets_command", required=True)
    q = sub.add_parser("show", help="per shard: primary, term, in-sync copies, seq and lag")
    q.add_argument("name")
    q.add_argument("--tenant", default=None, help="the dataset's tenant (default: default)")
    q.add_argument("--json", action="store_true", help="print the JSON document")
    admin_cli._common(q)
    q.set_defaults(func=dataset)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `tributary admin status|nodes|datasets ...`")
