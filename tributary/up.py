"""`tributary up`: a whole local cluster on loopback, in the foreground.

It starts the meta members, the nodes and the routers as child processes, restarts a child that
dies, starts the nodes `tributary up add-node` asks for and stops for good the ones
`tributary up remove-node` takes out, prints the endpoints once GET /api/v1/health answers 200,
and on SIGINT/SIGTERM stops every child within limits.shutdown_grace_ms (then SIGKILL). Each
child's log goes to <data-dir>/logs/<name>.log (JSON lines unless --log-format text), its traces to
<data-dir>/traces/<name>.jsonl (tributary/tracing.py; OTEL_* variables choose another exporter),
and nodes and meta members serve Prometheus /metrics at the ports cluster.json lists. Children
die with the supervisor (PR_SET_PDEATHSIG), so kill -9 of `tributary up` leaves nothing behind.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from tributary import cluster_auth, limits, local_secrets, procs
from tributary.netaddr import is_loopback

# Each meta member's and node's Prometheus /metrics port: internal_port_base + offset + i (the
# other offsets: Raft 0, meta gRPC 10, nodes 100; tributary/procs.py cluster_port_plan).
METRICS_OFFSET_META = 20
METRICS_OFFSET_NODE = 40

@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: str
    process: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)
    # Added to the environment the child inherits (its name, trace and log settings).
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, preexec_fn=procs.die_with_parent,
                                        env={**os.environ, **self.env} if self.env else None)
        log.close()
        self.started_at = time.monotonic()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _scale_parsers(parser)
    parser.add_argument("--data-dir", default="./tributary-data")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=50051)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--meta", type=int, default=3)
    parser.add_argument("--routers", type=int, default=1)
    parser.add_argument("--host", default="127.0.0.1", help="address every process binds")
    parser.add_argument("--internal-port-base", type=int, default=7100,
                        help="meta Raft ports start here, meta gRPC at +10, nodes at +100")
    parser.add_argument("--ready-timeout", type=float, default=90.0,
                        help="seconds to wait for a healthy cluster")
    parser.add_argument("--tls-cert", default=None,
                        help="PEM certificate: routers serve https and gRPC over TLS")
    parser.add_argument("--tls-key", default=None, help="PEM private key for --tls-cert")
    parser.add_argument("--insecure-dev", action="store_true",
                        help="no Raft password and no internal authentication (local "
                             "development only; warns on every start)")
    parser.add_argument("--api-key", default=os.environ.get("TRIBUTARY_UP_API_KEY"),
                        help="turn authentication on with this admin API key (at least 16 "
                             "characters; routers get only its sha256). Without it auth is "
                             "off, which only a loopback --host allows. Env "
                             "TRIBUTARY_UP_API_KEY")
    parser.add_argument("--cluster-secret-file", default=None,
                        help="file holding the cluster secret for internal gRPC (env "
                             f"{cluster_auth.ENV_SECRET_FILE} or {cluster_auth.ENV_SECRET}); "
                             "default: <data-dir>/secrets/cluster-secret, created on first start")
    parser.add_argument("--log-format", choices=("json", "text"), default="json",
                        help="the children's log lines (<data-dir>/logs/*.log): JSON with trace "
                             "and request ids, or text")


def plan(args: argparse.Namespace) -> list[Child]:
    if not 1 <= args.meta <= 9 or args.meta % 2 == 0:
        raise SystemExit("--meta must be an odd number between 1 and 9")
    # 60: node i's /metrics port (base + 40 + i) must stay below node 0's gRPC port (base + 100).
    if not 1 <= args.nodes <= 60:
        raise SystemExit("--nodes must be between 1 and 60")
    if not 1 <= args.routers <= 16:
        raise SystemExit("--routers must be between 1 and 16")
    auth_args = _router_auth_args(args)
    data_dir = os.path.abspath(args.data_dir)
    internal_args = _internal_auth_args(args, data_dir)
    os.makedirs(os.path.join(data_dir, "logs"), exist_ok=True)
    host, base = args.host, args.internal_port_base
    raft = [f"{host}:{base + i}" for i in range(args.meta)]
    meta_grpc = [f"{host}:{base + 10 + i}" for i in range(args.meta)]
    meta_list = ",".join(meta_grpc)
    exe = [sys.executable, "-m", "tributary.cli"]
    children = []
    for i in range(args.meta):
        peers = [f"--peer={raft[j]}={meta_grpc[j]}" for j in range(args.meta) if j != i]
        children.append(Child(f"meta-{i}", exe + [
            "meta", "--raft", raft[i], "--grpc", meta_grpc[i],
            "--data-dir", os.path.join(data_dir, f"meta-{i}"),
            "--metrics", f"{host}:{base + METRICS_OFFSET_META + i}"]
            + peers + internal_args["meta"],
            os.path.join(data_dir, "logs", f"meta-{i}.log")))
    for i in range(args.nodes):
        children.append(Child(f"node-{i}", exe + [
            "node", "--listen", f"{host}:{base + 100 + i}", "--meta", meta_list,
            "--data-dir", os.path.join(data_dir, f"node-{i}"), "--node-id", f"node-{i}",
            "--metrics", f"{host}:{base + METRICS_OFFSET_NODE + i}"]
            + internal_args["node"],
            os.path.join(data_dir, "logs", f"node-{i}.log")))
    # A router reports healthy once this many nodes registered: the ones that will run.
    running_nodes = max(1, args.nodes - len(nodes_removed(data_dir)
                                            & {f"node-{i}" for i in range(args.nodes)}))
    for i in range(args.routers):
        children.append(Child(f"router-{i}", exe + [
            "router", "--http", f"{host}:{args.http_port + i}",
            "--grpc", f"{host}:{args.grpc_port + i}", "--meta", meta_list,
            "--min-nodes", str(running_nodes)] + auth_args + _tls_args(args)
            + internal_args["router"],
            os.path.join(data_dir, "logs", f"router-{i}.log")))
    # Every child's traces go to <data-dir>/traces/<name>.jsonl (tributary/tracing.py) unless
    # the OTEL_* environment says otherwise, and its logs are in the chosen format.
    # Fewer glibc malloc arenas than its default of 8 per core: freed memory is reused instead of
    # staying resident in per-thread arenas (limits.process_malloc_arenas_max; an
    # MALLOC_ARENA_MAX already in the environment wins).
    arenas = os.environ.get("MALLOC_ARENA_MAX") or str(limits.process_malloc_arenas_max)
    for child in children:
        child.env = {"TRIBUTARY_PROCESS_NAME": child.name,
                     "TRIBUTARY_TRACES_DIR": os.path.join(data_dir, "traces"),
                     "TRIBUTARY_LOG_FORMAT": getattr(args, "log_format", None) or "json",
                     "MALLOC_ARENA_MAX": arenas}
    return children


def _router_auth_args(args: argparse.Namespace) -> list[str]:
    """Router flags for --api-key: only the key's sha256 leaves this process (a fast hash is
    enough for a long random key; hence the length floor)."""
    key = getattr(args, "api_key", None)
    if key is None:
        if not _auth_configured(args) and not is_loopback(f"{args.host}:0"):
            raise SystemExit(f"refusing to start: --host {args.host} is not loopback and no "
                             "--api-key is given (authentication would be off)")
        return []
    if len(key) < 16 or key != key.strip():
        raise SystemExit("--api-key must be at least 16 characters without surrounding spaces; "
                         "use a random one, e.g. `openssl rand -hex 32`")
    return ["--auth", "on", "--admin-key-sha256", hashlib.sha256(key.encode()).hexdigest()]


def _internal_auth_args(args: argparse.Namespace, data_dir: str) -> dict[str, list[str]]:
    """The internal-auth flags per child kind. Secure by default: a cluster secret and a Raft
    password come from the flags or the environment when given, else from the data dir, where
    the first start creates them (tributary/local_secrets.py). Only --insecure-dev runs without.
    A bad secret fails here once, clearly, rather than in every child."""
    if getattr(args, "insecure_dev", False):
        if not is_loopback(f"{args.host}:0"):
            raise SystemExit(f"refusing to start: --insecure-dev with --host {args.host}, which "
                             "is not loopback")
        return {kind: ["--insecure-dev"] for kind in ("meta", "node", "router")}
    path = getattr(args, "cluster_secret_file", None)
    given = cluster_auth.load(path)
    password_given = any(os.environ.get(v) for v in ("TRIBUTARY_META_PASSWORD",
                                                     "TRIBUTARY_META_PASSWORD_FILE"))
    made = None if given and password_given else local_secrets.ensure(data_dir)
    secret_args = (["--cluster-secret-file", os.path.abspath(path)] if path
                   else [] if given else ["--cluster-secret-file", made.cluster_secret_file])
    password_args = [] if password_given else ["--password-file", made.raft_password_file]
    return {"meta": secret_args + password_args, "node": secret_args, "router": secret_args}


def _auth_configured(args: argparse.Namespace) -> bool:
    """--api-key, or a credential source the routers read from the environment they inherit."""
    return bool(getattr(args, "api_key", None)) or any(os.environ.get(v) for v in (
        "TRIBUTARY_JWT_SECRET", "TRIBUTARY_JWT_SECRET_FILE", "TRIBUTARY_JWT_PUBLIC_KEY_FILE",
        "TRIBUTARY_ADMIN_KEY", "TRIBUTARY_ADMIN_KEY_SHA256"))


def _tls_args(args: argparse.Namespace) -> list[str]:
    cert, key = getattr(args, "tls_cert", None), getattr(args, "tls_key", None)
    if bool(cert) != bool(key):
        raise SystemExit("--tls-cert and --tls-key must be given together")
    if not cert:
        return []
    return ["--tls-cert", os.path.abspath(cert), "--tls-key", os.path.abspath(key)]


def _healthy(url: str) -> bool:
    # The probe only asks our own router whether it is up, over loopback; it does not
    # authenticate the server, so a self-signed certificate is fine here.
    context = ssl._create_unverified_context() if url.startswith("https") else None
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException):
        return False


def stop_all(children: list[Child]) -> None:
    for child in children:
        if child.process and child.process.poll() is None:
            child.process.terminate()
    deadline = time.monotonic() + limits.shutdown_grace_ms / 1000
    for child in children:
        if child.process is None:
            continue
        try:
            child.process.wait(timeout=max(0.05, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


def _record_layout(args: argparse.Namespace, data_dir: str) -> None:
    """<data-dir>/cluster.json: the addresses of this cluster's processes, for tools that talk
    to it without a router (`tributary admin status --data-dir`)."""
    host, base = args.host, args.internal_port_base
    scheme = "https" if getattr(args, "tls_cert", None) else "http"
    layout = {
        "meta": [{"raft": f"{host}:{base + i}", "grpc": f"{host}:{base + 10 + i}"}
                 for i in range(args.meta)],
        "nodes": [f"{host}:{base + 100 + i}" for i in range(args.nodes)],
        "metrics": {"meta": [f"http://{host}:{base + METRICS_OFFSET_META + i}/metrics"
                             for i in range(args.meta)],
                    "nodes": [f"http://{host}:{base + METRICS_OFFSET_NODE + i}"
                              "/metrics" for i in range(args.nodes)],
                    "routers": [f"{scheme}://{host}:{args.http_port + i}/api/v1/metrics"
                                for i in range(args.routers)]},
        "rest": [f"{scheme}://{host}:{args.http_port + i}" for i in range(args.routers)],
        "grpc": [f"{host}:{args.grpc_port + i}" for i in range(args.routers)],
        # node-<i> keeps its place in "nodes" after `tributary up remove-node`; it no longer runs.
        "removed": sorted(nodes_removed(data_dir), key=_node_index)}
    path = os.path.join(data_dir, "cluster.json")
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(layout, handle, indent=2)
    os.replace(path + ".tmp", path)


def run(args: argparse.Namespace) -> None:
    # Nodes added by `tributary up add-node` run again on a later start; removed ones do not.
    args.nodes = max(args.nodes, min(nodes_wanted(os.path.abspath(args.data_dir)), NODES_MAX))
    removed = nodes_removed(os.path.abspath(args.data_dir))
    children = [child for child in plan(args) if child.name not in removed]
    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    data_dir = os.path.abspath(args.data_dir)
    insecure = getattr(args, "insecure_dev", False)
    if insecure:
        print(f"tributary: {cluster_auth.INSECURE_WARNING}", file=sys.stderr, flush=True)
    running = sum(child.name.startswith("node-") for child in children)
    left_out = f" (removed, not started: {', '.join(sorted(removed, key=_node_index))})" \
        if removed else ""
    print(f"tributary: starting {args.meta} meta, {running} node(s), {args.routers} "
          f"router(s); data in {data_dir}{left_out}", flush=True)
    _record_layout(args, data_dir)
    for child in children:
        child.start()
    scheme = "https" if getattr(args, "tls_cert", None) else "http"
    health_url = f"{scheme}://{args.host}:{args.http_port}/api/v1/health"
    deadline = time.monotonic() + args.ready_timeout
    ready = False
    try:
        while not stopping:
            for child in children:
                code = child.process.poll() if child.process else None
                if code is not None:
                    print(f"tributary: {child.name} exited with {code}; restarting "
                          f"(log: {child.log_path})", file=sys.stderr, flush=True)
                    child.restarts += 1
                    time.sleep(min(2.0, 0.2 * child.restarts))
                    child.start()
            _grow(args, data_dir, children)
            _shrink(args, data_dir, children)
            if not ready:
                if _healthy(health_url):
                    ready = True
                    print(json.dumps({
                        "status": "ready",
                        "rest": [f"{scheme}://{args.host}:{args.http_port + i}/api/v1"
                                 for i in range(args.routers)],
                        "grpc": [f"{args.host}:{args.grpc_port + i}"
                                 for i in range(args.routers)],
                        "data_dir": data_dir,
                        "auth": "on" if _auth_configured(args) else "off",
                        "internal_auth": "off" if insecure else "on",
                        "insecure_dev": insecure}),
                          flush=True)
                    print(f"tributary: ready. REST {scheme}://{args.host}:{args.http_port}/api/v1 "
                          f"gRPC {args.host}:{args.grpc_port}. Ctrl-C stops.", flush=True)
                elif time.monotonic() > deadline:
                    print(f"tributary: not healthy after {args.ready_timeout:.0f}s; see logs in "
                          f"{os.path.join(data_dir, 'logs')}", file=sys.stderr, flush=True)
                    deadline = float("inf")
            time.sleep(0.2)
    finally:
        print("tributary: stopping", flush=True)
        stop_all(children)
        print("tributary: stopped", flush=True)


# ---- adding nodes to a running cluster (`tributary up add-node`) -------------------------------
# The running supervisor checks <data-dir>/nodes-wanted on every turn of its loop and starts the
# nodes it asks for (node-<i> at internal_port_base + 100 + i, data in <data-dir>/node-<i>, as
# `--nodes` would have placed them); a later start on the same data dir runs them too.
NODES_WANTED_FILE = "nodes-wanted"
NODES_MAX = 64


def nodes_wanted(data_dir: str) -> int:
    """The node count `tributary up add-node` asked for (0 if none)."""
    try:
        with open(os.path.join(data_dir, NODES_WANTED_FILE), encoding="utf-8") as handle:
            return int(handle.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def _grow(args: argparse.Namespace, data_dir: str, children: list[Child]) -> None:
    """Starts the nodes that nodes-wanted asks for beyond the ones running."""
    wanted = min(nodes_wanted(data_dir), NODES_MAX)
    if wanted <= args.nodes:
        return
    grown = argparse.Namespace(**{**vars(args), "nodes": wanted})
    names = {f"node-{i}" for i in range(args.nodes, wanted)}
    names -= nodes_removed(data_dir)
    added = [child for child in plan(grown) if child.name in names]
    for child in added:
        child.start()
        children.append(child)
    args.nodes = wanted
    _record_layout(args, data_dir)
    print(f"tributary: added {', '.join(c.name for c in added)}", flush=True)


def _scale_parsers(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="up_command", required=False,
                                metavar="{add-node,remove-node}")
    p = sub.add_parser("add-node", help="add shard node(s) to the `tributary up` cluster that "
                                        "runs on --data-dir, and wait until they are live")
    p.add_argument("--data-dir", default="./tributary-data", dest="add_data_dir")
    p.add_argument("--count", type=int, default=1, help="nodes to add (default 1)")
    p.add_argument("--wait-timeout", type=float, default=120.0,
                   help="seconds to wait for the new nodes to be live")
    p.set_defaults(func=add_node)
    p = sub.add_parser("remove-node", help="stop a drained node of the `tributary up` cluster "
                                           "on --data-dir for good and forget it")
    p.add_argument("node_id", help="node-<i>; drain it first (tributary admin nodes drain)")
    p.add_argument("--data-dir", default="./tributary-data", dest="add_data_dir",
                   metavar="DATA_DIR")
    p.add_argument("--wait-timeout", type=float, default=60.0,
                   help="seconds to wait for the supervisor to stop the node")
    p.set_defaults(func=remove_node)


def _read_layout(data_dir: str, command: str) -> dict:
    try:
        with open(os.path.join(data_dir, "cluster.json"), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"tributary up {command}: cannot read {data_dir}/cluster.json ({exc}); "
                         "is a `tributary up` cluster running on that data dir?") from None


def _meta_client(layout: dict, data_dir: str):
    """A client of the cluster's meta group, authenticated with the data dir's secret."""
    from consensus.client import MetaClient

    found = local_secrets.existing(data_dir)
    token = cluster_auth.load(found.cluster_secret_file) if found else None
    return MetaClient([m["grpc"] for m in layout["meta"]], token)


def add_node(args: argparse.Namespace) -> None:
    """Asks the supervisor running on the data dir for `--count` more nodes, waits until the
    metadata group counts them live, and prints them as JSON. Copies move onto them with
    `tributary admin rebalance`. One-line error and a non-zero exit on failure."""
    import asyncio

    data_dir = os.path.abspath(args.add_data_dir)
    if not args.wait_timeout > 0:
        raise SystemExit("tributary up add-node: --wait-timeout must be a positive number of "
                         "seconds")
    layout = _read_layout(data_dir, "add-node")
    current = max(len(layout["nodes"]), nodes_wanted(data_dir))
    wanted = current + args.count
    if args.count < 1 or wanted > NODES_MAX:
        raise SystemExit(f"tributary up add-node: --count must be at least 1 and the cluster "
                         f"at most {NODES_MAX} nodes")
    path = os.path.join(data_dir, NODES_WANTED_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        handle.write(str(wanted))
    os.replace(path + ".tmp", path)
    new_ids = [f"node-{i}" for i in range(current, wanted)]

    async def live() -> set[str]:
        client = _meta_client(layout, data_dir)
        try:
            return set((await client.leader_status()).live_nodes)
        finally:
            await client.close()

    deadline = time.monotonic() + args.wait_timeout
    while True:
        try:
            if set(new_ids) <= asyncio.run(live()):
                break
        except Exception:  # noqa: BLE001 - the meta group may be electing; ask again
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"tributary up add-node: {', '.join(new_ids)} not live after "
                             f"{args.wait_timeout:.0f} s (is `tributary up` running on "
                             f"{data_dir}? the request stays for its next start)")
        time.sleep(0.5)
    with open(os.path.join(data_dir, "cluster.json"), encoding="utf-8") as handle:
        addresses = json.load(handle)["nodes"]
    print(json.dumps({"added": [{"node_id": n, "address": addresses[int(n[5:])]}
                                for n in new_ids], "nodes": wanted}), flush=True)


# ---- removing a node for good (`tributary up remove-node`) -------------------------------------
# <data-dir>/nodes-removed lists the nodes the supervisor must not run: it stops a running one
# on its next turn (then lists it under "removed" in cluster.json), and a later start leaves it
# out. Its data dir stays; node ids are never reused, so a later add-node gets a new one.
NODES_REMOVED_FILE = "nodes-removed"


def _node_index(node_id: str) -> int:
    """i for "node-<i>" as `tributary up` names its nodes (no sign, no leading zero), else -1."""
    index = node_id[5:]
    named = node_id[:5] == "node-" and index.isdigit() and str(int(index)) == index
    return int(index) if named else -1


def nodes_removed(data_dir: str) -> set[str]:
    """The nodes `tributary up remove-node` took out of the cluster on `data_dir`."""
    try:
        with open(os.path.join(data_dir, NODES_REMOVED_FILE), encoding="utf-8") as handle:
            return {line.strip() for line in handle if _node_index(line.strip()) >= 0}
    except OSError:
        return set()


def _shrink(args: argparse.Namespace, data_dir: str, children: list[Child]) -> None:
    """Stops, for good, the running nodes that nodes-removed lists."""
    removed = nodes_removed(data_dir)
    going = [child for child in children if child.name in removed]
    if not going:
        return
    stop_all(going)
    children[:] = [child for child in children if child not in going]
    _record_layout(args, data_dir)
    print(f"tributary: stopped {', '.join(c.name for c in going)} for good (removed)",
          flush=True)


def remove_node(args: argparse.Namespace) -> None:
    """Takes a drained node out of the `tributary up` cluster on the data dir for good: the
    supervisor stops it and never runs it again, and the meta group forgets it. Refused while
    the node is not drained (its copies would be lost). Prints the outcome as JSON; a one-line
    error and a non-zero exit on failure. Running it again after a success changes nothing."""
    import asyncio

    from consensus import commands
    from consensus.replication import copies_held

    data_dir = os.path.abspath(args.add_data_dir)
    if not args.wait_timeout > 0:
        raise SystemExit("tributary up remove-node: --wait-timeout must be a positive number of "
                         "seconds")
    layout = _read_layout(data_dir, "remove-node")
    node_id = args.node_id
    count = max(len(layout["nodes"]), nodes_wanted(data_dir))
    if not 0 <= _node_index(node_id) < count:
        raise SystemExit(f"tributary up remove-node: {node_id!r} is not a node of the cluster "
                         f"on {data_dir} (node-0 to node-{count - 1})")

    async def registered():
        client = _meta_client(layout, data_dir)
        try:
            state = await client.get_state(linearizable=True)
            return state.nodes.get(node_id), len(copies_held(state, node_id))
        finally:
            await client.close()

    async def forget() -> None:
        client = _meta_client(layout, data_dir)
        try:
            await client.propose(commands.RemoveNode(node_id, False, int(time.time() * 1000)))
        finally:
            await client.close()

    try:
        record, held = asyncio.run(registered())
    except Exception as exc:  # noqa: BLE001 - any failure to read is reported the same way
        raise SystemExit(f"tributary up remove-node: cannot read the meta group's state ({exc});"
                         f" is `tributary up` running on {data_dir}?") from None
    if record is not None and record.state != "drained":
        raise SystemExit(f"tributary up remove-node: {node_id} is {record.state} and holds "
                         f"{held} copies; drain it first: "
                         f"tributary admin nodes drain {node_id} --wait")
    path = os.path.join(data_dir, NODES_REMOVED_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        handle.writelines(f"{n}\n" for n in sorted(nodes_removed(data_dir) | {node_id},
                                                    key=_node_index))
    os.replace(path + ".tmp", path)
    deadline = time.monotonic() + args.wait_timeout
    while node_id not in _read_layout(data_dir, "remove-node").get("removed", []):
        if time.monotonic() > deadline:
            raise SystemExit(f"tributary up remove-node: {node_id} still runs after "
                             f"{args.wait_timeout:.0f} s (is `tributary up` running on "
                             f"{data_dir}? the request stays for its next start)")
        time.sleep(0.2)
    if record is not None:
        try:
            asyncio.run(forget())
        except Exception as exc:  # noqa: BLE001 - reported with what was done already
            raise SystemExit(f"tributary up remove-node: {node_id} is stopped for good, but the "
                             f"meta group did not forget it ({exc}); finish with: "
                             f"tributary admin nodes remove {node_id}") from None
    running = [f"node-{i}" for i in range(count) if f"node-{i}" not in nodes_removed(data_dir)]
    print(json.dumps({"removed": node_id, "nodes": running}), flush=True)
