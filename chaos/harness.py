"""A Tributary cluster whose every link runs through its own fault proxy.

`ProxiedCluster` starts one Toxiproxy-API server (`chaos.launcher.ProxyServer`: a real
toxiproxy-server when one is installed, else `chaos/proxy.py`), creates one proxy per link of a
`chaos.topology.Topology`, then starts the processes directly (not through `tributary up`):

* meta member I: ``tributary meta --raft <identity> --raft-bind <real> --grpc <real>`` with one
  ``--peer RAFT=GRPC`` per other member, RAFT being the address it knows that peer by (a per-pair
  link proxy for lower members, see chaos/topology.py);
* node K: ``tributary node --listen <real> --advertise <router->node-K proxy>
  --meta <node-K->meta-* proxies>``;
* the router: ``tributary router --http <real> --meta <router->meta-* proxies>``; clients reach
  it through the ``client->router-0`` proxy (`rest_url`).

Each process runs in its own session (its own process group), so kill -9, SIGSTOP and SIGCONT
reach it and only it, and `stop()` kills every group it started. Processes also die with the
thread that started them (PR_SET_PDEATHSIG), so call `start`/`restart` from the main thread.

The harness talks to proxies through the Toxiproxy HTTP API only. It talks to meta members and
nodes directly (bypassing proxies, like an operator on the host) for three things: finding the
meta leader (Meta Status RPC), finding a shard's primary, copies and in-sync set (Meta GetState),
and, after the final heal, each copy's status and content digest (ShardNode CopyStatus) for the
copies-agree checker.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from chaos.launcher import ProxyServer
from chaos.topology import (HOST, PortPlan, Topology, identity_proxy, meta_peer_raft,
                            plan_ports, ports_needed, search_proxy)
from tributary import local_secrets, procs

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_base(topo: Topology, rng: random.Random | None = None) -> int:
    """A base port whose whole consecutive block is free right now, below the ephemeral range
    (tributary.procs), so no outgoing connection takes the port of a disabled proxy."""
    return procs.free_port_block(range(ports_needed(topo)), HOST, step=50, rng=rng)


class ToxiproxyApi:
    """The few Toxiproxy v2 HTTP calls the harness needs (stdlib only). Enabling, disabling
    and toxics of a proxy also apply to its `companions` (the other proxies of the same link:
    a router -> node link's search-frame proxy, chaos/topology.py)."""

    def __init__(self, url: str, timeout_s: float = 10.0,
                 companions: dict[str, list[str]] | None = None):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.companions = companions or {}

    def _with_companions(self, name: str) -> list[str]:
        return [name, *self.companions.get(name, ())]

    def call(self, method: str, path: str, body: Any = None, ok_missing: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with _NO_PROXY.open(req, timeout=self.timeout_s) as r:
                raw = r.read()
        except urllib.error.HTTPError as exc:
            if ok_missing and exc.code == 404:
                return None
            raise RuntimeError(f"toxiproxy {method} {path}: {exc.code} "
                               f"{exc.read().decode(errors='replace')}") from None
        return json.loads(raw) if raw.strip() else None

    def populate(self, proxies: list[dict]) -> Any:
        return self.call("POST", "/populate", proxies)

    def set_enabled(self, name: str, enabled: bool) -> None:
        for each in self._with_companions(name):
            self.call("POST", f"/proxies/{each}", {"enabled": enabled})

    def add_toxic(self, proxy: str, toxic: dict) -> None:
        for each in self._with_companions(proxy):
            self.call("POST", f"/proxies/{each}/toxics", toxic)

    def remove_toxic(self, proxy: str, name: str) -> None:
        for each in self._with_companions(proxy):
            self.call("DELETE", f"/proxies/{each}/toxics/{name}", ok_missing=True)

    def reset(self) -> None:
        """Re-enables every proxy and removes every toxic."""
        self.call("POST", "/reset")

    def proxies(self) -> dict:
        return self.call("GET", "/proxies")


@dataclass
class Proc:
    name: str
    argv: list[str]
    log_path: str
    env: dict[str, str]
    popen: subprocess.Popen | None = None
    starts: int = 0
    paused: bool = False

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== chaos harness: start #{self.starts + 1} at "
                      f"{time.strftime('%H:%M:%S')}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=self.env,
                                          cwd=_REPO_ROOT, start_new_session=True,
                                          preexec_fn=procs.die_with_parent)
        self.starts += 1
        self.paused = False

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def signal(self, sig: int) -> bool:
        """Sends `sig` to the process's group; False when it is already gone."""
        if self.popen is None:
            return False
        try:
            os.killpg(self.popen.pid, sig)   # start_new_session: pgid == pid
            return True
        except ProcessLookupError:
            return False

    def kill9(self) -> None:
        if self.signal(signal.SIGKILL):
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.paused = False


@dataclass
class ProxiedCluster:
    data_dir: str
    topology: Topology = field(default_factory=Topology)
    seed: int | None = None
    env: dict[str, str] | None = None
    log: Callable[[str], None] = lambda line: None
    prefer_external_proxy: bool = True
    # Members not started with the others: each starts at `join` (the `join` scenario's node).
    # Until then no fault starts or restarts it.
    late: tuple[str, ...] = ()

    def __post_init__(self):
        self.data_dir = os.path.abspath(self.data_dir)
        self.plan: PortPlan | None = None
        self.proxy_server: ProxyServer | None = None
        self.api: ToxiproxyApi | None = None
        self.procs: dict[str, Proc] = {}
        self.secrets: local_secrets.LocalSecrets | None = None
        self._lock = threading.Lock()
        self._waiting: set[str] = set()
        self._spawner: ThreadPoolExecutor | None = None

    # ---- addresses ------------------------------------------------------------------------------

    @property
    def rest_url(self) -> str:
        """The router's REST API through the client->router-0 proxy."""
        return f"http://{self.plan.proxies['client->router-0']}/api/v1"

    @property
    def direct_rest_url(self) -> str:
        return f"http://{self.plan.router_http['router-0']}/api/v1"

    @property
    def logs_dir(self) -> str:
        return os.path.join(self.data_dir, "logs")

    # ---- lifecycle ------------------------------------------------------------------------------

    def _argv(self, member: str) -> list[str]:
        topo, plan = self.topology, self.plan
        exe = [sys.executable, "-m", "tributary.cli"]
        kind = topo.kind_of(member)
        auth = self.secrets.child_args(kind)
        if kind == "meta":
            peers = [f"--peer={meta_peer_raft(topo, plan, member, p)}={plan.meta_grpc[p]}"
                     for p in topo.meta_members if p != member]
            return exe + ["meta", "--raft", plan.meta_raft_self[member],
                          "--raft-bind", plan.meta_raft_bind[member],
                          "--grpc", plan.meta_grpc[member],
                          "--data-dir", os.path.join(self.data_dir, member)] + peers + auth
        meta = ",".join(plan.proxies[f"{member}->{m}"] for m in topo.meta_members)
        if kind == "node":
            link = f"router-0->{member}"
            return exe + ["node", "--listen", plan.node_listen[member],
                          "--advertise", plan.proxies[link],
                          "--search-listen", plan.node_search_listen[member],
                          "--search-advertise", plan.proxies[search_proxy(link)],
                          "--meta", meta, "--data-dir", os.path.join(self.data_dir, member),
                          "--node-id", member] + auth
        return exe + ["router", "--http", plan.router_http[member],
                      "--grpc", plan.router_grpc[member], "--meta", meta,
                      "--min-nodes", str(topo.nodes - len(self.late))] + auth

    def start(self, timeout_s: float = 120.0) -> "ProxiedCluster":
        os.makedirs(self.logs_dir, exist_ok=True)
        # Secure like `tributary up`: the processes get the data dir's secrets.
        self.secrets = local_secrets.ensure(self.data_dir)
        self.plan = plan_ports(self.topology, free_base(self.topology))
        self.proxy_server = ProxyServer(seed=self.seed, prefer_external=self.prefer_external_proxy,
                                        log_path=os.path.join(self.logs_dir, "proxy.log"))
        self.proxy_server.start()
        self.api = ToxiproxyApi(self.proxy_server.api_url, companions=self.plan.companions)
        self.api.populate([{"name": name, "listen": listen,
                            "upstream": self.plan.upstreams[name], "enabled": True}
                           for name, listen in self.plan.proxies.items()])
        self.log(f"proxy server: {self.proxy_server.kind} at {self.proxy_server.api_url} "
                 f"({len(self.plan.proxies)} proxies)")
        env = {**os.environ, **(self.env or {})}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_REPO_ROOT, env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        for member in self.topology.members:
            self.procs[member] = Proc(member, self._argv(member),
                                      os.path.join(self.logs_dir, f"{member}.log"), env)
        self._waiting = set(self.late)
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="chaos-spawner") \
            if self.late else None
        for member in self.topology.members:
            if member not in self._waiting:
                self.procs[member].start()
        self.wait_healthy(timeout_s)
        return self

    def join(self, member: str) -> None:
        """Starts a `late` member for the first time, from a thread that lives as long as the
        cluster: the kernel kills a child (PR_SET_PDEATHSIG) when the thread that forked it
        ends, and the caller's (a probe's) ends before the run does."""
        self._spawner.submit(self._start_late, member).result()

    def _start_late(self, member: str) -> None:
        with self._lock:
            if member in self._waiting:
                self.procs[member].start()
                # After the start: a heal that runs meanwhile then finds it waiting or alive.
                self._waiting.discard(member)

    def wait_healthy(self, timeout_s: float) -> float:
        started = time.monotonic()
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            dead = [p.name for p in self.procs.values()
                    if not p.alive and p.name not in self._waiting]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited while starting; logs in "
                                   f"{self.logs_dir}")
            if self.healthy():
                return time.monotonic() - started
            time.sleep(0.25)
        raise TimeoutError(f"cluster not healthy within {timeout_s:.0f}s; logs in {self.logs_dir}")

    def healthy(self, timeout_s: float = 2.0) -> bool:
        try:
            with _NO_PROXY.open(f"{self.rest_url}/health", timeout=timeout_s) as r:
                return r.status == 200
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        """Kills every process group the harness started, then the proxy server."""
        for proc in self.procs.values():
            if proc.popen is None:
                continue
            proc.signal(signal.SIGCONT)
            proc.signal(signal.SIGKILL)
        for proc in self.procs.values():
            if proc.popen is not None:
                try:
                    proc.popen.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        if self.proxy_server is not None:
            self.proxy_server.stop()
            self.proxy_server = None
        if self._spawner is not None:
            self._spawner.shutdown(wait=False)

    def __enter__(self) -> "ProxiedCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- faults ---------------------------------------------------------------------------------

    def kill(self, member: str) -> None:
        self.procs[member].kill9()

    def restart(self, member: str) -> None:
        proc = self.procs[member]
        if proc.alive or member in self._waiting:
            return
        proc.start()

    def pause(self, member: str) -> None:
        proc = self.procs[member]
        if proc.signal(signal.SIGSTOP):
            proc.paused = True

    def resume(self, member: str) -> None:
        proc = self.procs[member]
        proc.signal(signal.SIGCONT)
        proc.paused = False

    def set_link(self, proxy: str, enabled: bool) -> None:
        self.api.set_enabled(proxy, enabled)

    def heal_network(self) -> None:
        self.api.reset()

    def heal_processes(self) -> list[str]:
        """SIGCONT every process and restart the dead ones; returns the restarted names."""
        restarted = []
        for member, proc in self.procs.items():
            if member in self._waiting:
                continue
            if proc.alive:
                proc.signal(signal.SIGCONT)
                proc.paused = False
            else:
                proc.start()
                restarted.append(member)
        return restarted

    def _internal_call(self, address: str, service: str, method: str, request,
                       timeout_s: float):
        """One internal RPC, signed with the cluster secret, straight to `address`; raises
        grpc.RpcError."""
        import grpc

        from proto import meta_pb2, node_pb2
        from tributary import cluster_auth

        descriptor = {"Meta": meta_pb2, "ShardNode": node_pb2}[service].DESCRIPTOR
        with grpc.insecure_channel(address) as channel:
            client = cluster_auth.stub(descriptor.services_by_name[service], channel,
                                       cluster_auth.load(self.secrets.cluster_secret_file))
            return getattr(client, method)(request, timeout=timeout_s)

    def meta_leader(self, timeout_s: float = 1.0) -> str | None:
        """The member that reports itself leader with the highest term (asked directly)."""
        import grpc

        from proto import meta_pb2

        best: tuple[int, str] | None = None
        for member in self.topology.meta_members:
            if not self.procs[member].alive or self.procs[member].paused:
                continue
            try:
                status = self._internal_call(self.plan.meta_grpc[member], "Meta", "Status",
                                             meta_pb2.MetaStatusRequest(), timeout_s)
            except grpc.RpcError:
                continue
            if status.is_leader and (best is None or status.raft_term > best[0]):
                best = (status.raft_term, member)
        return best[1] if best else None

    def meta_state(self, timeout_s: float = 2.0) -> dict | None:
        """The catalog as the meta leader holds it (GetState, after a barrier so it reflects
        every committed change), or None when no leader answers."""
        import grpc

        from proto import meta_pb2

        leader = self.meta_leader()
        if leader is None:
            return None
        try:
            answer = self._internal_call(self.plan.meta_grpc[leader], "Meta", "GetState",
                                         meta_pb2.GetStateRequest(linearizable=True), timeout_s)
        except grpc.RpcError:
            return None
        return json.loads(answer.state_json)

    def shard_placement(self, dataset: str, shard: int, state: dict | None = None
                        ) -> dict | None:
        """Where the shard `shard` of the workload dataset named `dataset` lives now:
        {"uuid", "epoch", "primary", "copies", "in_sync", "term"}; None when the state or the
        dataset cannot be found. Workload datasets are the only ones of their name outside the
        catalog workload's tenant."""
        from chaos.workload import CATALOG_TENANT

        state = state if state is not None else self.meta_state()
        if state is None:
            return None
        for uuid, record in sorted(state["datasets"].items()):
            if record["name"] == dataset and record["tenant_id"] != CATALOG_TENANT and \
                    0 <= shard < len(record["placement"]):
                return placement_of(uuid, record, shard)
        return None

    def copy_snapshot(self, timeout_s: float = 10.0) -> dict:
        """Every shard of every dataset: its placement, and each copy's CopyStatus with its
        content digest (asked of the node directly). The copies-agree checker
        (chaos.checkers.copy_disagreements) judges it; it needs a quiet cluster."""
        import grpc

        from proto import node_pb2

        state = self.meta_state()
        if state is None:
            return {"error": "no meta leader answered GetState"}
        datasets: dict[str, dict] = {}
        for uuid, record in sorted(state["datasets"].items()):
            shards = []
            for shard in range(len(record["placement"])):
                placement = placement_of(uuid, record, shard)
                statuses: dict[str, dict] = {}
                for node in placement["copies"]:
                    address = self.plan.node_listen.get(node)
                    if address is None:
                        statuses[node] = {"error": "not a node of this cluster"}
                        continue
                    request = node_pb2.CopyStatusRequest(
                        shard=node_pb2.ShardRef(dataset_uuid=uuid, shard=shard,
                                                epoch=placement["epoch"]),
                        with_content_digest=True)
                    try:
                        status = self._internal_call(address, "ShardNode", "CopyStatus",
                                                     request, timeout_s)
                    except grpc.RpcError as exc:
                        statuses[node] = {"error": f"{exc.code().name}: {exc.details()}"}
                        continue
                    statuses[node] = {"last_seq": status.last_seq,
                                      "last_term": status.last_term,
                                      "vector_count": status.vector_count,
                                      "digest": status.content_digest}
                shards.append({**placement, "shard": shard, "status": statuses})
            datasets[f"{record['tenant_id']}/{record['name']}"] = {"uuid": uuid,
                                                                    "shards": shards}
        return {"datasets": datasets}

    def describe(self) -> dict:
        return {"proxy_server": self.proxy_server.kind if self.proxy_server else None,
                "proxies": dict(self.plan.proxies) if self.plan else {},
                "processes": {m: " ".join(p.argv[2:]) for m, p in self.procs.items()}}


def placement_of(uuid: str, record: dict, shard: int) -> dict:
    """One shard's placement from a dataset of the GetState JSON. Datasets from before
    replication have no copies, in-sync set or terms: one copy, the primary, in term 1."""
    primary = record["placement"][shard]
    copies = record.get("copies") or []
    in_sync = record.get("in_sync") or []
    terms = record.get("terms") or []
    return {"uuid": uuid, "epoch": int(record["epoch"]), "primary": primary,
            "copies": list(copies[shard]) if copies else [primary],
            "in_sync": list(in_sync[shard]) if in_sync else [primary],
            "term": int(terms[shard]) if terms else 1}


__all__ = ["ProxiedCluster", "placement_of", "ToxiproxyApi", "Proc", "free_base", "identity_proxy"]
