"""Prometheus metrics of a meta member, served on its own port (`tributary meta --metrics
HOST:PORT`; `tributary up` uses internal_port_base + up.METRICS_OFFSET_META + i).

    tributary_meta_raft_term                 current Raft term
    tributary_meta_raft_commit_index         commit index
    tributary_meta_raft_applied_index        last entry applied to the catalog
    tributary_meta_is_leader                 1 on the leader
    tributary_meta_has_leader                1 while this member knows a leader
    tributary_meta_catalog_version           the catalog's version
    tributary_meta_leader_changes_total      leader changes this member has seen
    tributary_meta_applied_commands_total    catalog commands applied, by type
    tributary_meta_proposal_seconds          time from proposing a command to its result
    tributary_meta_proposal_errors_total     proposals that did not commit
"""

from __future__ import annotations

import threading

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from tributary import limits

APPLIED_COMMANDS = Counter("tributary_meta_applied_commands_total",
                           "Catalog commands this member applied, by type", ["type"])
PROPOSAL_SECONDS = Histogram("tributary_meta_proposal_seconds",
                             "Time from proposing a command to the Raft group to its result",
                             ["type"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                0.25, 0.5, 1, 2.5, 5, 10))
PROPOSAL_ERRORS = Counter("tributary_meta_proposal_errors_total",
                          "Proposals that did not commit (no leader, timeout)", ["type"])
LEADER_CHANGES = Counter("tributary_meta_leader_changes_total",
                         "Changes of the leader this member has seen (none counted at start)")


def command_type(command_json: str) -> str:
    """The command's type name from its encoded form (consensus/commands.encode writes
    `"type"` last, keys sorted), without parsing the whole document. For a Requested command,
    the type it holds: its own tag is last, and the held command's comes just before it (only
    the request id, a plain string, lies between)."""
    parts = command_json.rsplit('"type":"', 2)
    if len(parts) < 2:
        return "unknown"
    kind = parts[-1].split('"', 1)[0]
    if kind == "Requested" and len(parts) == 3:
        return parts[1].split('"', 1)[0]
    return kind


class MetaCollector:
    """Raft and catalog gauges read from the member when scraped."""

    def __init__(self, machine):
        self.machine = machine      # consensus.member.MetaStateMachine

    def collect(self):
        status = self.machine.getStatus()
        leader = self.machine._getLeader()
        values = {
            "tributary_meta_raft_term": ("Current Raft term", status.get("raft_term", 0)),
            "tributary_meta_raft_commit_index": ("Raft commit index",
                                                 status.get("commit_idx", 0)),
            "tributary_meta_raft_applied_index": ("Last Raft entry applied to the catalog",
                                                  status.get("last_applied", 0)),
            "tributary_meta_is_leader": ("1 when this member leads the Raft group",
                                         1 if self.machine._isLeader() else 0),
            "tributary_meta_has_leader": ("1 while this member knows a leader",
                                          0 if leader is None else 1),
            "tributary_meta_catalog_version": ("Version of the catalog",
                                               self.machine.meta.version),
        }
        for name, (text, value) in values.items():
            family = GaugeMetricFamily(name, text)
            family.add_metric([], float(value or 0))
            yield family


class LeaderWatch:
    """Counts leader changes: polls this member's view of the leader every
    limits.meta_leader_watch_interval_ms in a daemon thread."""

    def __init__(self, machine):
        self.machine = machine
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meta-leader-watch", daemon=True)

    def start(self) -> "LeaderWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        last = None
        while not self._stop.wait(limits.meta_leader_watch_interval_ms / 1000):
            leader = self.machine._getLeader()
            current = None if leader is None else getattr(leader, "address", str(leader))
            if current is not None and last is not None and current != last:
                LEADER_CHANGES.inc()
            if current is not None:
                last = current


def install(machine, listen: str | None) -> LeaderWatch:
    """Registers the collector, starts the leader watch, and serves /metrics on `listen`."""
    from prometheus_client import REGISTRY, start_http_server

    REGISTRY.register(MetaCollector(machine))
    if listen:
        address, _, port = listen.rpartition(":")
        try:
            start_http_server(int(port), addr=address or "0.0.0.0")
        except OSError as exc:
            raise SystemExit(f"cannot serve metrics on {listen}: {exc.strerror}") from None
    return LeaderWatch(machine).start()
