"""`tributary admin status | nodes list | datasets show`: the operator's view of the cluster.

    tributary admin status [--json] [--data-dir DIR]
    tributary admin nodes list [--json] | drain NODE [--wait] | remove NODE [--force]
    tributary admin datasets show NAME [--tenant T] [--json]
    tributary admin datasets reshard NAME --shards 2N [--wait] [--json] [--cancel]
    tributary admin shards move DATASET SHARD --from NODE --to NODE [--wait]
    tributary admin moves list | cancel ID
    tributary admin rebalance [--dry-run] [--json] [--max-concurrent-moves N] [--wait]
                              [--watch [--watch-interval S]]

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


def _one_line(call):
    """call(), with a timeout or a dropped connection turned into the one-line failure."""
    import http.client
    try:
        return call()
    except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        _fail(f"no answer from the cluster: {exc or type(exc).__name__}")


def _health(args: argparse.Namespace) -> dict | None:
    """The router's deep health document (GET /api/v1/health, which answers 503 with the same
    body when unhealthy); None when the router does not answer."""
    import urllib.error
    import urllib.request
    url = args.url.rstrip("/").removesuffix("/api/v1") + "/api/v1/health"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return json.loads(exc.read())
        except ValueError:
            return None
    except (OSError, ValueError):
        return None


def _health_tables(health: dict) -> list:
    checks = health.get("checks", {})
    rows = [["cluster", health.get("status"), ""]]
    meta = checks.get("meta", {})
    rows.append(["meta", meta.get("status"), meta.get("error") or
                 f"leader {meta.get('leader')}, term {meta.get('term')}"])
    shards = checks.get("shards")
    if shards:
        rows.append(["shards", shards.get("status"),
                     f"{len(shards.get('unserved', []))} without a serving copy, "
                     f"{len(shards.get('under_replicated', []))} under-replicated"])
    backlog = checks.get("index_backlog", {})
    rows.append(["index backlog", backlog.get("status"),
                 f"{backlog.get('pending_vectors')} vector(s) pending"])
    tables = [_table("health", ["dependency", "status", "detail"], rows)]
    nodes = checks.get("nodes", {})
    if nodes:
        tables.append(_table("nodes (from the router)", [
            "node", "address", "status", "copies", "vectors", "index backlog", "latency ms",
            "error"], [[n, d.get("address"), d.get("status"), d.get("copies"), d.get("vectors"),
                        d.get("pending_index"), d.get("latency_ms"), d.get("error")]
                       for n, d in sorted(nodes.items())]))
    return tables


def status(args: argparse.Namespace) -> None:
    """The meta members (the --json document: exactly {"meta": [...]}) and, in the table view,
    the router's deep health: each dependency's status and every node as the router sees it."""
    doc = (_local_meta_status(args.data_dir) if args.data_dir
           else _one_line(lambda: admin_cli._request(args, "GET", "/admin/status")))
    health = None if args.json or args.data_dir else _health(args)

    def render(d):
        from rich.console import Group
        meta = _table("meta group", [
            "grpc address", "raft address", "role", "term", "commit index", "error"], [
            [m.get("grpc_address"), m.get("raft_address"), m.get("role"), m.get("term"),
             m.get("commit_index"), m.get("error")] for m in d["meta"]])
        return Group(meta, *(_health_tables(health) if health else []))
    _emit(args, doc, render)


def nodes(args: argparse.Namespace) -> None:
    doc = admin_cli._request(args, "GET", "/admin/nodes")["nodes"]
    _emit(args, doc, lambda d: _table("nodes", [
        "node", "address", "zone", "state", "copies", "primaries"], [
        [n["node_id"], n["address"], n.get("zone"), n["state"], n["copies"], n.get("primaries")]
        for n in d]))


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


def _move_rows(moves: list[dict]) -> list[list]:
    return [[m.get("move_id"), m.get("dataset"), m.get("shard"), m.get("source", m.get("from")),
             m.get("target", m.get("to")), "yes" if m.get("primary") else "",
             m.get("phase", ""), m.get("target_seq"), m.get("primary_seq")] for m in moves]


_MOVE_COLUMNS = ["move", "dataset", "shard", "from", "to", "primary", "phase", "target seq",
                 "primary seq"]


def _wait_until(args, what: str, done, timeout_s: float) -> None:
    """Polls done() -> (finished, remaining, total) with a rich progress bar (stderr), until
    finished; a one-line failure past timeout_s."""
    import time

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    deadline = time.monotonic() + timeout_s
    with Progress(TextColumn(what), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), console=Console(stderr=True),
                  disable=args.json) as progress:
        task = None
        while True:
            finished, remaining, total = done()
            if task is None:
                task = progress.add_task(what, total=max(total, 1))
            progress.update(task, total=max(total, 1), completed=max(0, total - remaining))
            if finished:
                return
            if time.monotonic() > deadline:
                _fail(f"{what}: not done after {timeout_s:.0f} s ({remaining} left)")
            time.sleep(1.0)


def drain(args: argparse.Namespace) -> None:
    node = urllib.parse.quote(args.node_id, safe="")
    doc = admin_cli._request(args, "POST", f"/admin/nodes/{node}/drain", {})
    total = len(doc["moves"])

    def left():
        nodes = admin_cli._request(args, "GET", "/admin/nodes")["nodes"]
        me = next((n for n in nodes if n["node_id"] == args.node_id), None)
        if me is None:
            _fail(f"node {args.node_id} is gone")
        if me["state"] != "drained":
            # Asked again each round: a drain that became impossible meanwhile (the nodes that
            # could take a copy went away) fails now, with the router's one-line reason,
            # rather than at --wait-timeout.
            admin_cli._request(args, "POST", f"/admin/nodes/{node}/drain", {})
        return me["state"] == "drained", me["copies"], max(total, me["copies"])
    if args.wait:
        _wait_until(args, f"draining {args.node_id}", left, args.wait_timeout)
        doc["state"] = "drained"
    _emit(args, doc, lambda d: _table(f"drain {d['node_id']}: {d['state']}", _MOVE_COLUMNS,
                                      _move_rows(d["moves"])))


def remove(args: argparse.Namespace) -> None:
    node = urllib.parse.quote(args.node_id, safe="")
    doc = admin_cli._request(args, "POST", f"/admin/nodes/{node}/remove", {"force": args.force})
    _emit(args, doc, lambda d: f"removed {d['removed']}" + (
        f"; dropped copies: {', '.join(d['dropped_copies'])}" if d["dropped_copies"] else ""))


def _wait_moves(args) -> None:
    def left():
        moves = admin_cli._request(args, "GET", "/admin/moves")["moves"]
        return not moves, len(moves), len(moves)
    _wait_until(args, "moving", left, args.wait_timeout)


def move_outcome(placement: dict, shard: int, source: str, target: str) -> str:
    """How a move that is no longer in flight ended, by its dataset's placement (GET
    /admin/datasets/NAME): "finished" (the target holds a copy, the source none), "rolled back"
    (the other way round: the target was away too long, or the move was cancelled), or
    "unclear" (both or neither: another change to the shard's copies came since)."""
    doc = next((s for s in placement.get("shards", []) if s.get("shard") == shard), {})
    copies = {c.get("node_id") for c in doc.get("copies", [])}
    if target in copies and source not in copies:
        return "finished"
    if source in copies and target not in copies:
        return "rolled back"
    return "unclear"


def _wait_move(args: argparse.Namespace, move: dict) -> str:
    """Polls this move (not the others in flight) with the target's op position against the
    primary's as the progress bar, until it leaves the moves list; then its outcome."""
    def left():
        moves = admin_cli._request(args, "GET", "/admin/moves")["moves"]
        mine = next((m for m in moves if m.get("move_id") == move["move_id"]), None)
        if mine is None:
            return True, 0, 1
        head, at = mine.get("primary_seq") or 0, mine.get("target_seq") or 0
        return False, max(0, head - at), max(head, 1)
    _wait_until(args, f"moving {move['dataset']}/{move['shard']} to {move['target']} (ops)",
                left, args.wait_timeout)
    path = f"/admin/datasets/{urllib.parse.quote(move['dataset'], safe='')}"
    if move.get("tenant_id"):
        path += f"?tenant_id={urllib.parse.quote(move['tenant_id'], safe='')}"
    return move_outcome(admin_cli._request(args, "GET", path), move["shard"], move["source"],
                        move["target"])


def move(args: argparse.Namespace) -> None:
    body = {"dataset": args.dataset, "shard": args.shard, "from": args.source, "to": args.target}
    if args.tenant:
        body["tenant_id"] = args.tenant
    doc = admin_cli._request(args, "POST", "/admin/moves", body)
    if args.wait:
        planned = doc["move"]
        outcome = _wait_move(args, planned)
        if outcome != "finished":
            where = f"{planned['dataset']}/{planned['shard']}"
            _fail(f"move {planned['move_id']} was rolled back: {planned['source']} still holds "
                  f"{where} and {planned['target']} does not (the target was away too long, "
                  "or the move was cancelled)" if outcome == "rolled back" else
                  f"move {planned['move_id']} ended, but the copies of {where} changed since: "
                  "see `tributary admin datasets show`")
        doc["outcome"] = outcome
    _emit(args, doc, lambda d: _table("move" + (f": {d['outcome']}" if "outcome" in d else ""),
                                      _MOVE_COLUMNS, _move_rows([d["move"]])))


def moves(args: argparse.Namespace) -> None:
    if args.moves_command == "cancel":
        doc = admin_cli._request(args, "DELETE",
                                 f"/admin/moves/{urllib.parse.quote(args.move_id, safe='')}")
        _emit(args, doc, lambda d: f"cancelled {d['cancelled']}")
        return
    doc = admin_cli._request(args, "GET", "/admin/moves")["moves"]
    _emit(args, doc, lambda d: _table("moves in flight", _MOVE_COLUMNS, _move_rows(d)))


def _watch_rebalance(args: argparse.Namespace, body: dict) -> None:
    """The optional balancer: every --watch-interval seconds, start the moves that even copies
    out (onto nodes that joined, say), so a StatefulSet scale-up needs no person. A round that
    fails (router away) is one line on stderr, and the next round tries again."""
    import time

    while True:
        try:
            doc = admin_cli._request(args, "POST", "/admin/rebalance", body)
            if doc["moves"]:
                line = json.dumps({"started": doc["moves"], "in_flight": doc["in_flight"]},
                                  sort_keys=True) if args.json else \
                    f"started {len(doc['moves'])} move(s): " + ", ".join(
                        f"{m['dataset']}/{m['shard']} {m['source']}->{m['target']}"
                        for m in doc["moves"])
                print(line, flush=True)
        except SystemExit as exc:
            print(f"{exc} (trying again in {args.watch_interval:.0f} s)", file=sys.stderr,
                  flush=True)
        time.sleep(args.watch_interval)


def rebalance(args: argparse.Namespace) -> None:
    import time

    body = {"dry_run": args.dry_run, "max_concurrent_moves": args.max_concurrent_moves}
    if args.watch:
        if args.dry_run:
            _fail("--watch starts moves; it cannot be a --dry-run")
        _watch_rebalance(args, body)
        return
    doc = admin_cli._request(args, "POST", "/admin/rebalance", body)
    planned = list(doc["moves"])
    if args.wait and not args.dry_run:
        while doc["moves"] or doc["in_flight"]:
            _wait_moves(args)
            if not doc["moves"]:
                # Only primary hand-overs in flight: they take a catch-up round or two.
                time.sleep(0.5)
            doc = admin_cli._request(args, "POST", "/admin/rebalance", body)
            planned += doc["moves"]
    if args.json:
        # The contract: the planned moves as a JSON array.
        print(json.dumps(planned, indent=2, sort_keys=True))
        return
    title = "planned moves (dry run: nothing changed)" if args.dry_run else "moves"
    _emit(args, planned, lambda d: _table(title, _MOVE_COLUMNS, _move_rows(d)))


def _command(parent, name: str, help_: str, func, json_help: str = "the JSON document",
             wait: str | None = None):
    """One sub-command with the flags every one of them takes: --json, the router's --url,
    --api-key and --timeout, and (when `wait` says what it waits for) --wait/--wait-timeout."""
    parser = parent.add_parser(name, help=help_)
    parser.set_defaults(func=func)
    if wait:
        parser.add_argument("--wait", action="store_true", help=f"return once {wait}")
        parser.add_argument("--wait-timeout", type=float, default=3600.0,
                            help="seconds (--wait)")
    parser.add_argument("--json", action="store_true", help=f"print {json_help}")
    admin_cli._common(parser)
    return parser


def add_parsers(admin_sub) -> None:
    p = _command(admin_sub, "status", "the meta members: role, term, commit index", status)
    p.add_argument("--data-dir", default=None,
                   help="ask the meta members of this `tributary up` data dir directly")

    sub = admin_sub.add_parser("nodes", help="nodes and the shard copies they hold"
                               ).add_subparsers(dest="nodes_command", required=True)
    _command(sub, "list", "every registered node: state, copies, primaries", nodes,
             json_help="the JSON array")
    _command(sub, "drain", "move every copy off a node, then mark it drained", drain,
             wait="the node holds no copy").add_argument("node_id")
    q = _command(sub, "remove", "forget a node (refused while it holds copies)", remove)
    q.add_argument("node_id")
    q.add_argument("--force", action="store_true",
                   help="drop its copies (never a shard's last in-sync copy)")

    sub = admin_sub.add_parser("shards", help="shard copies").add_subparsers(
        dest="shards_command", required=True)
    q = _command(sub, "move", "move one shard copy from a node to another", move,
                 wait="the move has ended; exit 1 when it was rolled back")
    q.add_argument("dataset")
    q.add_argument("shard", type=int)
    q.add_argument("--from", dest="source", required=True, help="the node that holds it")
    q.add_argument("--to", dest="target", required=True, help="the node to hold it")
    q.add_argument("--tenant", default=None)

    sub = admin_sub.add_parser("moves", help="shard moves in flight").add_subparsers(
        dest="moves_command", required=True)
    _command(sub, "list", "moves in flight and their progress", moves,
             json_help="the JSON array")
    _command(sub, "cancel", "cancel a move; the shard is left as it was",
             moves).add_argument("move_id")

    p = _command(admin_sub, "rebalance", "even copies out over the live nodes", rebalance,
                 json_help="the planned moves as a JSON array", wait="balanced")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--max-concurrent-moves", type=int, default=2,
                   help="moves in flight at once (default 2)")
    p.add_argument("--watch", action="store_true",
                   help="keep running as a balancer: start the moves that even copies out "
                        "every --watch-interval seconds (nodes that join get copies)")
    p.add_argument("--watch-interval", type=float, default=30.0, help="seconds (--watch)")

    from tributary import backup_cli
    backup_cli.add_parsers(admin_sub, _command)

    sub = admin_sub.add_parser("datasets", help="a dataset's shards and copies"
                               ).add_subparsers(dest="datasets_command", required=True)
    q = _command(sub, "show", "per shard: primary, term, in-sync copies, seq and lag", dataset)
    q.add_argument("name")
    q.add_argument("--tenant", default=None, help="the dataset's tenant (default: default)")
    from tributary import reshard_cli
    reshard_cli.add_parser(sub, _command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `tributary admin status|nodes|datasets ...`")
