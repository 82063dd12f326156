"""Nemeses: what faults a chaos run injects, when, where, and how they are undone.

A nemesis spec is ``NAME`` or ``NAME:SCOPE`` (e.g. ``partition:node``, ``latency:router-node``).

=================  ===========================================  ==============================
name               fault                                        scopes
=================  ===========================================  ==============================
latency            latency + jitter toxic, both directions      a link kind (LINK_KINDS)
bandwidth          bandwidth toxic (KB/s), both directions      a link kind
timeout            timeout toxic: data blackholed, the          a link kind
                   connection closed after `timeout` ms (0: the
                   connection just hangs until the heal)
reset-peer         reset_peer toxic: TCP RST after `timeout` ms  a link kind
partition          disable every link between a set of          a member kind (MEMBER_KINDS):
                   members and the rest (refused connections)   the set is one member of it
kill               kill -9 the process group; restart at end    a member kind
pause              SIGSTOP the process group; SIGCONT at end    a member kind
leader-isolation   partition whichever meta member leads when   -
                   the event starts (Meta Status RPC)
primary-kill       kill -9 the node that is primary of a shard  -  (target: primary:DATASET/N,
                   when the event starts; restart at end           a shard of a workload
primary-pause      SIGSTOP that primary; SIGCONT at end            dataset, drawn from the
primary-copies-    disable the inbound proxies of the shard's      seed; the node that is its
  partition        other copies (router-R->copy): the primary      primary is resolved when the
                   can no longer replicate to them, while the      event starts, from the Meta
                   meta group still hears from it                  GetState RPC)
primary-meta-      disable the primary's node->meta-* proxies:
  partition        it is cut from the meta group but still
                   reaches its copies
=================  ===========================================  ==============================

`make_schedule(seed, duration_s, specs, topology)` is a pure function: the same arguments give
the same list of `Event`s (nemesis, target, start, duration, parameters), whatever else runs in
the process, so a run replays from its seed. Only what the schedule cannot know is resolved when
an event starts (which member leads, which node is a shard's primary); the executor logs it.
Since a primary fault's node is unknown until then, it never overlaps another fault on a
process (kill, pause, partition or primary fault): it could otherwise hit the node that one
already holds, or take down the last in-sync copy of a shard by chance rather than by seed.

`NemesisRunner` applies events to a `chaos.harness.ProxiedCluster` and undoes them. Overlapping
events may touch the same proxy or process: disabled proxies are reference-counted, toxics are
named per event, and `heal_all()` (the final heal) resets every proxy and SIGCONTs/restarts every
process whatever state the events left.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from chaos.topology import LINK_KINDS, MEMBER_KINDS, Topology
from chaos.workload import BATCH_DATASET, BATCH_SHARDS, KV_DATASET, KV_SHARDS

LINK_NEMESES = ("latency", "bandwidth", "timeout", "reset-peer")
PROCESS_NEMESES = ("partition", "kill", "pause")
PRIMARY_NEMESES = ("primary-kill", "primary-pause", "primary-copies-partition",
                   "primary-meta-partition")
NEMESES = LINK_NEMESES + PROCESS_NEMESES + ("leader-isolation",) + PRIMARY_NEMESES
DEFAULT_NEMESES = NEMESES

LEADER = "meta-leader"
# The shards a primary fault may target: every shard of the workloads' datasets (chaos.workload).
PRIMARY_SHARDS: tuple[tuple[str, int], ...] = tuple(
    [(KV_DATASET, s) for s in range(KV_SHARDS)] + [(BATCH_DATASET, s) for s in range(BATCH_SHARDS)])
PRIMARY_PREFIX = "primary:"
SCHEDULE_VERSION = 1


@dataclass(frozen=True)
class NemesisSpec:
    name: str
    scope: str | None = None

    @classmethod
    def parse(cls, text: str) -> "NemesisSpec":
        name, _, scope = text.strip().partition(":")
        scope = scope or None
        if name not in NEMESES:
            raise ValueError(f"unknown nemesis {name!r} (known: {', '.join(NEMESES)})")
        if scope is not None:
            allowed = (LINK_KINDS if name in LINK_NEMESES else
                       MEMBER_KINDS if name in PROCESS_NEMESES else ())
            if scope not in allowed:
                raise ValueError(f"nemesis {name!r} takes no scope {scope!r}"
                                 + (f" (scopes: {', '.join(allowed)})" if allowed else ""))
        return cls(name, scope)

    def __str__(self) -> str:
        return self.name if self.scope is None else f"{self.name}:{self.scope}"


def parse_specs(texts: list[str] | None) -> list[NemesisSpec]:
    """Specs from the command line (repeatable, comma-separated allowed); default: all."""
    out: list[NemesisSpec] = []
    for text in texts or []:
        out.extend(NemesisSpec.parse(t) for t in text.split(",") if t.strip())
    if not out:
        out = [NemesisSpec(n) for n in DEFAULT_NEMESES]
    # Duplicates would only skew the rotation; keep the first of each.
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class Event:
    """One fault: `target` is a link (proxy) name, a member name, a comma-separated set of
    members (partition), "meta-leader", or a shard ("primary:DATASET/N") whose primary a
    primary fault hits; times are seconds from the start of the run."""

    index: int
    nemesis: str
    target: str
    start_s: float
    duration_s: float
    params: dict = field(default_factory=dict)

    @property
    def end_s(self) -> float:
        return round(self.start_s + self.duration_s, 3)

    def describe(self) -> str:
        params = " ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return (f"#{self.index} {self.start_s:7.2f}s +{self.duration_s:5.2f}s  {self.nemesis:<16} "
                f"{self.target}" + (f"  [{params}]" if params else ""))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Event":
        return cls(index=int(d["index"]), nemesis=d["nemesis"], target=d["target"],
                   start_s=float(d["start_s"]), duration_s=float(d["duration_s"]),
                   params=dict(d.get("params") or {}))


@dataclass(frozen=True)
class ScheduleConfig:
    """Knobs of the generator (part of the schedule's inputs, so recorded with it)."""

    warmup_s: float = 2.0           # no fault before this
    min_event_s: float = 2.0
    max_event_s: float = 8.0
    overlap_p: float = 0.3          # chance that the next event starts before this one ends
    gap_s: tuple[float, float] = (0.5, 2.0)


def _r(x: float) -> float:
    return round(x, 3)


def primary_target(dataset: str, shard: int) -> str:
    """The target of a primary fault: a shard, whose primary is found when the event starts."""
    return f"{PRIMARY_PREFIX}{dataset}/{shard}"


def parse_primary_target(target: str) -> tuple[str, int]:
    """(dataset, shard) of a primary fault's target; raises ValueError for another target."""
    if not target.startswith(PRIMARY_PREFIX):
        raise ValueError(f"{target!r} is not a primary target")
    dataset, _, shard = target[len(PRIMARY_PREFIX):].rpartition("/")
    if not dataset or not shard.isdigit():
        raise ValueError(f"{target!r} is not a primary target (primary:DATASET/SHARD)")
    return dataset, int(shard)


def primary_fault_links(topo: Topology, nemesis: str, primary: str,
                        copies: list[str] | tuple[str, ...]) -> list[str]:
    """The proxies a primary partition disables. Nodes reach each other at the address each
    advertises, its router->node proxy, so cutting the inbound proxies of the other copies cuts
    the primary's replication to them (and the router's reads of them, which go to other
    copies); cutting the primary's node->meta proxies cuts it from the meta group only."""
    if nemesis == "primary-copies-partition":
        others = set(copies) - {primary}
        return [link.name for link in topo.links_of_kind("router-node") if link.dst in others]
    if nemesis == "primary-meta-partition":
        return [link.name for link in topo.links_of_kind("node-meta") if link.src == primary]
    raise ValueError(f"{nemesis} cuts no links")


def _targets(spec: NemesisSpec, topo: Topology) -> list[str]:
    if spec.name in LINK_NEMESES:
        links = topo.links() if spec.scope is None else topo.links_of_kind(spec.scope)
        return [link.name for link in links]
    if spec.name in PROCESS_NEMESES:
        return topo.members if spec.scope is None else topo.members_of_kind(spec.scope)
    if spec.name in PRIMARY_NEMESES:
        return [primary_target(dataset, shard) for dataset, shard in PRIMARY_SHARDS]
    return [LEADER]


def _params(name: str, rng: random.Random) -> dict:
    if name == "latency":
        latency = rng.randrange(50, 1001, 10)
        return {"latency": latency, "jitter": rng.randrange(0, latency // 2 + 1, 10)}
    if name == "bandwidth":
        return {"rate": rng.choice((1, 2, 5, 10, 50))}
    if name == "timeout":
        return {"timeout": rng.choice((0, 500, 1000, 3000))}
    if name == "reset-peer":
        return {"timeout": rng.choice((0, 100, 500, 1000))}
    return {}


def _avoiding(pool: list[str], busy: set[str]) -> list[str]:
    """The pool without members an overlapping event already targets (unless that empties it)."""
    free = [t for t in pool if t not in busy]
    return free or pool


def _partition_target(spec: NemesisSpec, topo: Topology, rng: random.Random,
                      busy: set[str]) -> str:
    # One member of the scope; unscoped, sometimes a minority of the meta group plus a node.
    pool = _avoiding(_targets(spec, topo), busy)
    side = [rng.choice(pool)]
    if spec.scope is None and rng.random() < 0.25:
        extra = [m for m in topo.members if m != side[0] and m != "router-0"]
        side.append(rng.choice(extra))
        metas = [m for m in side if m.startswith("meta-")]
        if len(metas) > topo.meta // 2:     # keep a majority of the meta group on the other side
            side = side[:1]
    return ",".join(sorted(side))


def make_schedule(seed: int, duration_s: float, specs: list[NemesisSpec], topo: Topology,
                  config: ScheduleConfig = ScheduleConfig()) -> list[Event]:
    """The fault schedule of a run: a pure function of its arguments.

    Nemeses take turns in seeded random order (every spec appears before any repeats), each
    event lasting between min_event_s and max_event_s (capped at a third of the run) and ending
    by `duration_s`. At most two events are active at once.
    """
    if duration_s <= 0:
        raise ValueError("duration must be positive")
    if not specs:
        return []
    rng = random.Random(f"tributary-chaos:{seed}")     # str seeds are stable across versions
    max_event = max(config.min_event_s, min(config.max_event_s, duration_s / 3))
    events: list[Event] = []
    order: list[NemesisSpec] = []
    t = config.warmup_s
    while t + config.min_event_s <= duration_s:
        if not order:
            order = list(specs)
            rng.shuffle(order)
        spec = order.pop()
        if spec.name in PRIMARY_NEMESES + PROCESS_NEMESES:
            # A primary fault's node is known only when it starts: it never overlaps another
            # fault on a process (see the module docstring).
            t = _r(max([t] + [e.end_s for e in events if e.end_s > t and (
                e.nemesis in PRIMARY_NEMESES or spec.name in PRIMARY_NEMESES)
                and e.nemesis in PRIMARY_NEMESES + PROCESS_NEMESES]))
            if t + config.min_event_s > duration_s:
                break
        length = min(rng.uniform(config.min_event_s, max_event), duration_s - t)
        # Members already under an overlapping process fault are not picked again (a second
        # kill of a killed node would do nothing); links may take several toxics at once.
        busy = {m for e in events if e.end_s > t and e.nemesis in PROCESS_NEMESES
                for m in e.target.split(",")}
        if spec.name == "partition":
            target = _partition_target(spec, topo, rng, busy)
        elif spec.name in PROCESS_NEMESES:
            target = rng.choice(_avoiding(_targets(spec, topo), busy))
        else:
            target = rng.choice(_targets(spec, topo))
        events.append(Event(len(events), spec.name, target, _r(t), _r(length),
                            _params(spec.name, rng)))
        end = t + length
        if rng.random() < config.overlap_p:
            nxt = t + rng.uniform(0.3, 0.8) * length
        else:
            nxt = end + rng.uniform(*config.gap_s)
        # At most two events at once: the next one starts after the one before this one ends.
        if len(events) >= 2:
            nxt = max(nxt, events[-2].end_s)
        t = _r(nxt)
    return events


def schedule_doc(seed: int, duration_s: float, specs: list[NemesisSpec], topo: Topology,
                 events: list[Event], config: ScheduleConfig = ScheduleConfig()) -> dict:
    return {"version": SCHEDULE_VERSION, "seed": seed, "duration_s": duration_s,
            "nemeses": [str(s) for s in specs],
            "topology": {"meta": topo.meta, "nodes": topo.nodes, "routers": topo.routers},
            "config": {**asdict(config), "gap_s": list(config.gap_s)},
            "events": [e.to_dict() for e in events]}


def schedule_json(events: list[Event]) -> str:
    return json.dumps([e.to_dict() for e in events], sort_keys=True)


# ---- execution ---------------------------------------------------------------------------------

class NemesisRunner:
    """Applies scheduled events to a ProxiedCluster; `journal` records what actually happened."""

    def __init__(self, cluster, log: Callable[[str], None] = lambda line: None,
                 clock: Callable[[], float] = time.monotonic):
        self.cluster = cluster
        self.topology: Topology = cluster.topology
        self.log = log
        self.clock = clock
        self.t0: float | None = None
        self.disabled: Counter[str] = Counter()
        self.active: dict[int, dict] = {}
        self.journal: list[dict] = []
        self._lock = threading.Lock()

    def _now(self) -> float:
        return 0.0 if self.t0 is None else self.clock() - self.t0

    def _record(self, event: Event, action: str, **details: Any) -> None:
        entry = {"t": round(self._now(), 3), "event": event.index, "nemesis": event.nemesis,
                 "action": action, **details}
        self.journal.append(entry)
        extra = " ".join(f"{k}={v}" for k, v in details.items())
        self.log(f"[{entry['t']:7.2f}s] nemesis {action:<5} {event.describe().strip()}"
                 + (f"  ({extra})" if extra else ""))

    def _disable(self, proxies: list[str]) -> None:
        for name in proxies:
            if self.disabled[name] == 0:
                self.cluster.set_link(name, False)
            self.disabled[name] += 1

    def _enable(self, proxies: list[str]) -> None:
        for name in proxies:
            self.disabled[name] -= 1
            if self.disabled[name] <= 0:
                del self.disabled[name]
                self.cluster.set_link(name, True)

    def _toxics(self, event: Event) -> list[dict]:
        kind = {"reset-peer": "reset_peer"}.get(event.nemesis, event.nemesis)
        return [{"name": f"ev{event.index}-{kind}-{stream}", "type": kind, "stream": stream,
                 "toxicity": 1.0, "attributes": dict(event.params)}
                for stream in ("upstream", "downstream")]

    def start(self, event: Event) -> None:
        with self._lock:
            state: dict[str, Any] = {}
            try:
                if event.nemesis in LINK_NEMESES:
                    for toxic in self._toxics(event):
                        self.cluster.api.add_toxic(event.target, toxic)
                    self._record(event, "start")
                elif event.nemesis in ("partition", "leader-isolation"):
                    if event.nemesis == "leader-isolation":
                        leader = self.cluster.meta_leader()
                        if leader is None:
                            self._record(event, "skip", reason="no meta member leads")
                            return
                        side = [leader]
                    else:
                        side = event.target.split(",")
                    proxies = [link.name for link in self.topology.cut(side)]
                    self._disable(proxies)
                    state["proxies"] = proxies
                    self._record(event, "start", side=",".join(side), links=len(proxies))
                elif event.nemesis == "kill":
                    proc = self.cluster.procs[event.target]
                    pid = proc.pid
                    self.cluster.kill(event.target)
                    self._record(event, "start", pid=pid)
                elif event.nemesis == "pause":
                    self.cluster.pause(event.target)
                    self._record(event, "start", pid=self.cluster.procs[event.target].pid)
                elif event.nemesis in PRIMARY_NEMESES:
                    if not self._start_primary_fault(event, state):
                        return
                else:
                    raise ValueError(f"unknown nemesis {event.nemesis}")
            except Exception as exc:  # noqa: BLE001 - a failed injection is logged, not fatal
                self._record(event, "error", error=f"{type(exc).__name__}: {exc}")
                return
            self.active[event.index] = state

    def _start_primary_fault(self, event: Event, state: dict[str, Any]) -> bool:
        """Finds the shard's primary now and applies the fault to it; False (journaled as a
        skip) when there is no shard or no primary to find."""
        dataset, shard = parse_primary_target(event.target)
        placement = self.cluster.shard_placement(dataset, shard)
        if placement is None:
            self._record(event, "skip", reason=f"no placement known for {dataset}/{shard} "
                                               "(no meta leader, or no such dataset)")
            return False
        primary = placement["primary"]
        found = {"primary": primary, "term": placement["term"],
                 "copies": ",".join(placement["copies"]),
                 "in_sync": ",".join(placement["in_sync"])}
        state["member"] = primary
        if event.nemesis == "primary-kill":
            pid = self.cluster.procs[primary].pid
            self.cluster.kill(primary)
            self._record(event, "start", pid=pid, **found)
        elif event.nemesis == "primary-pause":
            self.cluster.pause(primary)
            self._record(event, "start", pid=self.cluster.procs[primary].pid, **found)
        else:
            proxies = primary_fault_links(self.topology, event.nemesis, primary,
                                          placement["copies"])
            if not proxies:
                self._record(event, "skip", reason="the shard has no other copy", **found)
                return False
            self._disable(proxies)
            state["proxies"] = proxies
            self._record(event, "start", links=",".join(proxies), **found)
        return True

    def end(self, event: Event) -> None:
        with self._lock:
            state = self.active.pop(event.index, None)
            if state is None:
                return
            try:
                if event.nemesis in LINK_NEMESES:
                    for toxic in self._toxics(event):
                        self.cluster.api.remove_toxic(event.target, toxic["name"])
                    self._record(event, "end")
                elif event.nemesis in ("partition", "leader-isolation"):
                    self._enable(state["proxies"])
                    self._record(event, "end")
                elif event.nemesis == "kill":
                    self.cluster.restart(event.target)
                    self._record(event, "end", pid=self.cluster.procs[event.target].pid)
                elif event.nemesis == "pause":
                    self.cluster.resume(event.target)
                    self._record(event, "end")
                elif event.nemesis == "primary-kill":
                    self.cluster.restart(state["member"])
                    self._record(event, "end", primary=state["member"],
                                 pid=self.cluster.procs[state["member"]].pid)
                elif event.nemesis == "primary-pause":
                    self.cluster.resume(state["member"])
                    self._record(event, "end", primary=state["member"])
                elif event.nemesis in PRIMARY_NEMESES:
                    self._enable(state["proxies"])
                    self._record(event, "end", primary=state["member"])
            except Exception as exc:  # noqa: BLE001
                self._record(event, "error", error=f"{type(exc).__name__}: {exc}")

    def heal_all(self) -> dict:
        """The final heal: every proxy enabled without toxics, every process running."""
        with self._lock:
            self.active.clear()
            self.disabled.clear()
            self.cluster.heal_network()
            restarted = self.cluster.heal_processes()
            entry = {"t": round(self._now(), 3), "event": None, "nemesis": "heal",
                     "action": "heal", "restarted": restarted}
            self.journal.append(entry)
            self.log(f"[{entry['t']:7.2f}s] nemesis heal  all proxies reset, all processes "
                     f"running" + (f" (restarted {', '.join(restarted)})" if restarted else ""))
            return entry

    def run(self, events: list[Event], t0: float, until_s: float,
            stop: threading.Event | None = None,
            tick: Callable[[float], None] | None = None) -> None:
        """Runs the schedule (in the calling thread) until `until_s` seconds after `t0`."""
        self.t0 = t0
        actions = sorted([(e.start_s, 1, e) for e in events] + [(e.end_s, 0, e) for e in events],
                         key=lambda a: (a[0], a[1], a[2].index))
        i = 0
        while True:
            now = self._now()
            while i < len(actions) and actions[i][0] <= now:
                _, is_start, event = actions[i]
                (self.start if is_start else self.end)(event)
                i += 1
            if now >= until_s or (stop is not None and stop.is_set()):
                return
            if tick is not None:
                tick(now)
            next_at = actions[i][0] if i < len(actions) else until_s
            time.sleep(max(0.0, min(0.2, next_at - self._now(), until_s - self._now())))


__all__ = ["NemesisSpec", "Event", "ScheduleConfig", "NemesisRunner", "make_schedule",
           "parse_specs", "schedule_doc", "schedule_json", "primary_target",
           "parse_primary_target", "primary_fault_links", "NEMESES", "LINK_NEMESES",
           "PROCESS_NEMESES", "PRIMARY_NEMESES", "PRIMARY_SHARDS", "LEADER"]
