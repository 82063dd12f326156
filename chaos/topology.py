"""The shape of a chaos cluster: its members, the network links between them, and their ports.

Pure data, no I/O: the nemesis schedule (`chaos.nemesis.make_schedule`) is computed from a
`Topology` and a seed alone, and the harness (`chaos.harness`) turns the same topology into
processes and proxies.

Every link is its own proxy, so a fault can hit exactly one link:

* ``client->router-R``       the workload's REST connections to router R
* ``router-R->node-K``       node K advertises this proxy's address (one router only: a node
                             advertises one address to every router); its companion
                             ``router-R->node-K-search`` carries the router's search frames
                             (tributary/frames.py) to node K's `--search-listen`, which node K
                             advertises as `--search-advertise`. A fault on the link hits both
                             (`PortPlan.companions`)
* ``router-R->meta-I``,      the Meta API (gRPC) each router and node uses, one proxy per
  ``node-K->meta-I``         (client, member) pair: a router or node gets `--meta` = its own
                             proxies of the members
* ``meta-J->meta-I`` (I<J)   the Raft connection between members I and J

Raft links need care. pysyncobj keeps ONE TCP connection per pair of members, opened by the
member whose own address sorts higher, to the address it knows the lower one by; the lower
member recognises the caller by the self address the caller sends. So member J may know member
I (I < J) by an address that is private to the pair: the link proxy ``meta-J->meta-I``. Nobody
dials member J's own `--raft` address, which only has to sort above the link proxies J dials and
above the `--raft` of every lower member. `plan_ports` allocates ports in that order (link proxies
first, then the members' own addresses, all of one width so text order is numeric order), and
`check_raft_order` verifies it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

HOST = "127.0.0.1"

LINK_KINDS = ("client-router", "router-node", "router-meta", "node-meta", "meta-meta")
MEMBER_KINDS = ("meta", "node", "router")


@dataclass(frozen=True)
class Link:
    """One proxied connection path. `src` dials `dst`; `name` is the proxy's name."""

    name: str
    src: str
    dst: str
    kind: str

    def crosses(self, side: frozenset[str]) -> bool:
        """True when exactly one end of the link is in `side` (a partition cuts it)."""
        return (self.src in side) != (self.dst in side)


@dataclass(frozen=True)
class Topology:
    meta: int = 3
    nodes: int = 2
    routers: int = 1

    def __post_init__(self):
        if self.meta < 1 or self.meta % 2 == 0 or self.meta > 9:
            raise ValueError("meta must be an odd number between 1 and 9")
        if not 1 <= self.nodes <= 16:
            raise ValueError("nodes must be between 1 and 16")
        if self.routers != 1:
            # A node advertises ONE address to every router, so per-(router, node) proxies would
            # need a per-router advertised address; until then the harness runs one router.
            raise ValueError("the chaos harness runs exactly one router")

    @property
    def meta_members(self) -> list[str]:
        return [f"meta-{i}" for i in range(self.meta)]

    @property
    def node_members(self) -> list[str]:
        return [f"node-{k}" for k in range(self.nodes)]

    @property
    def router_members(self) -> list[str]:
        return [f"router-{r}" for r in range(self.routers)]

    @property
    def members(self) -> list[str]:
        return self.meta_members + self.node_members + self.router_members

    def members_of_kind(self, kind: str) -> list[str]:
        if kind not in MEMBER_KINDS:
            raise ValueError(f"unknown member kind {kind!r} (known: {', '.join(MEMBER_KINDS)})")
        return {"meta": self.meta_members, "node": self.node_members,
                "router": self.router_members}[kind]

    @staticmethod
    def kind_of(member: str) -> str:
        kind = member.rsplit("-", 1)[0]
        if kind not in MEMBER_KINDS:
            raise ValueError(f"{member!r} is not a member name")
        return kind

    def links(self) -> list[Link]:
        """Every link, in a fixed order (the schedule draws from this list)."""
        out: list[Link] = []
        for r in self.router_members:
            out.append(Link(f"client->{r}", "client", r, "client-router"))
        for r in self.router_members:
            for k in self.node_members:
                out.append(Link(f"{r}->{k}", r, k, "router-node"))
        for r in self.router_members:
            for m in self.meta_members:
                out.append(Link(f"{r}->{m}", r, m, "router-meta"))
        for k in self.node_members:
            for m in self.meta_members:
                out.append(Link(f"{k}->{m}", k, m, "node-meta"))
        out.extend(self.raft_links())
        return out

    def raft_links(self) -> list[Link]:
        return [Link(f"meta-{j}->meta-{i}", f"meta-{j}", f"meta-{i}", "meta-meta")
                for i, j in itertools.combinations(range(self.meta), 2)]

    def links_of_kind(self, kind: str) -> list[Link]:
        if kind not in LINK_KINDS:
            raise ValueError(f"unknown link kind {kind!r} (known: {', '.join(LINK_KINDS)})")
        return [link for link in self.links() if link.kind == kind]

    def cut(self, side: frozenset[str] | set[str] | list[str]) -> list[Link]:
        """The links a partition of `side` from everything else (clients included) cuts."""
        side = frozenset(side)
        unknown = side - set(self.members)
        if unknown:
            raise ValueError(f"not members: {sorted(unknown)}")
        return [link for link in self.links() if link.crosses(side)]


@dataclass(frozen=True)
class PortPlan:
    """Addresses of every proxy listener and every real (bound) server address."""

    proxies: dict[str, str]        # proxy name -> listen address
    upstreams: dict[str, str]      # proxy name -> real address it forwards to
    meta_raft_self: dict[str, str]   # member -> its Raft identity (--raft)
    meta_raft_bind: dict[str, str]   # member -> the address it binds (--raft-bind)
    meta_grpc: dict[str, str]        # member -> real gRPC address
    node_listen: dict[str, str]
    router_http: dict[str, str]
    router_grpc: dict[str, str]
    node_search_listen: dict[str, str]  # node -> the address it takes search frames on
    # link proxy -> the other proxies of the same link, which every fault on it also hits
    companions: dict[str, list[str]]

    def all_ports(self) -> list[int]:
        addrs = (list(self.proxies.values()) + list(self.meta_raft_bind.values())
                 + list(self.meta_grpc.values()) + list(self.node_listen.values())
                 + list(self.router_http.values()) + list(self.router_grpc.values())
                 + list(self.node_search_listen.values()))
        return [int(a.rsplit(":", 1)[1]) for a in addrs]


def identity_proxy(member: str) -> str:
    return f"{member}-raft"


def search_proxy(link_name: str) -> str:
    """The companion proxy of a router -> node link that carries its search frames."""
    return f"{link_name}-search"


def ports_needed(topo: Topology) -> int:
    return (len(topo.links()) + topo.meta  # link proxies + identity proxies
            + 2 * topo.meta + topo.nodes + 2 * topo.routers
            + topo.nodes + topo.routers * topo.nodes)   # search frames: listeners + proxies


def plan_ports(topo: Topology, base: int, host: str = HOST) -> PortPlan:
    """Consecutive ports from `base`: Raft link proxies, then the members' Raft identities
    (so every identity sorts above every link proxy), then everything else."""
    if not (10_000 <= base and base + ports_needed(topo) <= 65_535):
        raise ValueError("base must leave every port at 5 digits")
    counter = itertools.count(base)

    def nxt() -> str:
        return f"{host}:{next(counter)}"

    proxies: dict[str, str] = {}
    upstreams: dict[str, str] = {}
    for link in topo.raft_links():
        proxies[link.name] = nxt()
    raft_self = {m: nxt() for m in topo.meta_members}
    for m in topo.meta_members:
        proxies[identity_proxy(m)] = raft_self[m]
    raft_bind = {m: nxt() for m in topo.meta_members}
    meta_grpc = {m: nxt() for m in topo.meta_members}
    node_listen = {k: nxt() for k in topo.node_members}
    router_http = {r: nxt() for r in topo.router_members}
    router_grpc = {r: nxt() for r in topo.router_members}
    for link in topo.links():
        if link.kind != "meta-meta":
            proxies[link.name] = nxt()
        if link.kind == "meta-meta":
            upstreams[link.name] = raft_bind[link.dst]
        elif link.kind in ("router-meta", "node-meta"):
            upstreams[link.name] = meta_grpc[link.dst]
        elif link.kind == "router-node":
            upstreams[link.name] = node_listen[link.dst]
        elif link.kind == "client-router":
            upstreams[link.name] = router_http[link.dst]
    for m in topo.meta_members:
        upstreams[identity_proxy(m)] = raft_bind[m]
    node_search_listen = {k: nxt() for k in topo.node_members}
    companions: dict[str, list[str]] = {}
    for link in topo.links_of_kind("router-node"):
        search = search_proxy(link.name)
        proxies[search] = nxt()
        upstreams[search] = node_search_listen[link.dst]
        companions[link.name] = [search]
    plan = PortPlan(proxies, upstreams, raft_self, raft_bind, meta_grpc, node_listen,
                    router_http, router_grpc, node_search_listen, companions)
    check_raft_order(topo, plan)
    return plan


def meta_peer_raft(topo: Topology, plan: PortPlan, member: str, peer: str) -> str:
    """The Raft address `member` knows `peer` by (see the module docstring)."""
    i, j = int(member.rsplit("-", 1)[1]), int(peer.rsplit("-", 1)[1])
    if j < i:      # member dials peer: through the pair's own link proxy
        return plan.proxies[f"{member}->{peer}"]
    return plan.meta_raft_self[peer]   # peer dials member and names itself by this address


def check_raft_order(topo: Topology, plan: PortPlan) -> None:
    """Raise ValueError unless pysyncobj will open exactly the intended connection per pair."""
    for member in topo.meta_members:
        me = plan.meta_raft_self[member]
        for peer in topo.meta_members:
            if peer == member:
                continue
            known = meta_peer_raft(topo, plan, member, peer)
            if len(known) != len(me):
                raise ValueError("raft addresses must have one width so they sort numerically")
            i, j = int(member.rsplit("-", 1)[1]), int(peer.rsplit("-", 1)[1])
            dials = me > known
            if dials != (j < i):
                raise ValueError(f"{member} ({me}) would {'dial' if dials else 'not dial'} "
                                 f"{peer} at {known}")


__all__ = ["Link", "Topology", "PortPlan", "plan_ports", "meta_peer_raft", "check_raft_order",
           "identity_proxy", "search_proxy", "ports_needed", "LINK_KINDS", "MEMBER_KINDS", "HOST"]
