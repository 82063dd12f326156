"""The named chaos scenarios: the one list behind `tributary chaos list`, `tributary chaos run
--scenario NAME` and the pytest chaos matrix (`make chaos`).

A scenario is data: which nemeses it plays (specs as `chaos.nemesis` parses them), how long it
runs by default, and the seeds the matrix runs it with. Adding a scenario here adds it to the
command line and to the matrix at once; nothing else lists scenarios.

Pure: no I/O, nothing started. `tributary chaos run --scenario NAME --seed S --duration D`
replays exactly what the matrix ran for (NAME, S) at duration D.
"""

from __future__ import annotations

from dataclasses import dataclass

from chaos.nemesis import PRIMARY_NEMESES, NemesisSpec, parse_specs
from chaos.topology import Topology

# A run's length unless its scenario or --duration says otherwise (TRIBUTARY_CHAOS_DURATION
# overrides it for every scenario of `make chaos`).
DEFAULT_DURATION_S = 60.0


@dataclass(frozen=True)
class Scenario:
    """One named fault mix.

    `nemeses` are nemesis specs (`NAME` or `NAME:SCOPE`); empty means every nemesis.
    `matrix_seeds` are the seeds `make chaos` runs it with, one run per seed.
    """

    name: str
    description: str
    nemeses: tuple[str, ...]
    matrix_seeds: tuple[int, ...]
    duration_s: float = DEFAULT_DURATION_S
    # Seconds into the run at which a backup is taken (chaos/backup_probe.py); it is restored
    # into a fresh cluster after the run and judged (backup-consistent-prefix). None: no backup.
    backup_at_s: float | None = None
    # Seconds into the run at which each workload dataset's shard count is doubled through the
    # admin API (chaos/reshard_probe.py); the split must switch within the run's reshard bound
    # after the final heal, and the checkers then judge the datasets at the new count
    # (reshard-finished, rows-placed). None: no split.
    reshard_at_s: float | None = None
    # Seconds into the run from which shard copies are moved, one at a time, until the final
    # heal (chaos/move_probe.py); every move must end within the run's moves bound after the
    # heal (moves-ended). None: no moves.
    moves_at_s: float | None = None
    # Seconds into the run at which one node (picked by the seed) is drained, then removed once
    # drained (chaos/move_probe.py DrainProbe); both must be done within the run's moves bound
    # after the heal (drain-finished). None: no drain.
    drain_at_s: float | None = None
    # Seconds into the run at which the last node, not started with the others (so the
    # workload datasets have no copy on it), starts; rebalancing rounds then move copies onto
    # it, and must leave copies even within the run's moves bound after the heal
    # (chaos/join_probe.py; join-balanced). None: every node starts with the cluster.
    join_at_s: float | None = None
    # The nodes of the run's cluster: a move needs a node that holds no copy of the shard, and
    # a drained node's copies need two others, so the `moves` and `drain` scenarios run three
    # (two copies of every shard). The schedule's targets depend on it, so a replay by name
    # uses the same.
    nodes: int = 2

    def specs(self) -> list[NemesisSpec]:
        """The parsed nemesis specs; raises ValueError for a spec the nemeses do not know."""
        return parse_specs(list(self.nemeses) or None)

    def topology(self) -> Topology:
        """The cluster the scenario runs on (its schedule's targets come from it)."""
        return Topology(nodes=self.nodes)

    @property
    def meta_faults(self) -> bool:
        """True when some fault of the mix can hit the metadata Raft group: a meta member, or a
        link to or between meta members (an unscoped nemesis can pick any of them). Primary
        faults hit nodes only (like partition:node, a primary cut from the meta group loses
        only its own links to it)."""
        return any(spec.name not in PRIMARY_NEMESES and (spec.scope is None or "meta" in spec.scope)
                   for spec in self.specs())


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("node-faults",
             "a node partitioned, router->node latency spikes, kill -9 of a node or of a "
             "shard's primary",
             ("partition:node", "latency:router-node", "kill:node", "primary-kill"),
             matrix_seeds=(110,)),
    Scenario("latency", "latency and jitter toxics on any link, both directions",
             ("latency",), matrix_seeds=(101,)),
    Scenario("bandwidth", "bandwidth limits (1-50 KB/s) on any link",
             ("bandwidth",), matrix_seeds=(102,)),
    Scenario("timeout", "data blackholed on any link, the connection closed late or never",
             ("timeout",), matrix_seeds=(103,)),
    Scenario("reset-peer", "TCP resets on any link",
             ("reset-peer",), matrix_seeds=(104,)),
    Scenario("partition", "one member (sometimes with a meta minority) cut off from the rest",
             ("partition",), matrix_seeds=(105,)),
    Scenario("kill", "kill -9 of any member, restarted when the event ends",
             ("kill",), matrix_seeds=(106,)),
    Scenario("pause", "SIGSTOP of any member, SIGCONT when the event ends",
             ("pause",), matrix_seeds=(107,)),
    Scenario("leader-isolation", "whichever meta member leads is partitioned from the rest",
             ("leader-isolation",), matrix_seeds=(108,)),
    Scenario("meta-faults",
             "only the meta group: partitions, kills, pauses, leader isolation, Raft latency "
             "and router->meta timeouts",
             ("partition:meta", "kill:meta", "pause:meta", "leader-isolation",
              "latency:meta-meta", "timeout:router-meta"),
             matrix_seeds=(109,)),
    Scenario("primary-kill", "kill -9 of the node that is a shard's primary, restarted at the "
             "event's end", ("primary-kill",), matrix_seeds=(111,)),
    Scenario("primary-pause", "SIGSTOP of the node that is a shard's primary, SIGCONT at the "
             "event's end", ("primary-pause",), matrix_seeds=(112,)),
    Scenario("primary-copies-partition",
             "a shard's primary cut from its other copies (their inbound proxies), not from "
             "the meta group", ("primary-copies-partition",), matrix_seeds=(113,)),
    Scenario("primary-meta-partition",
             "a shard's primary cut from the meta group (its node->meta links), not from its "
             "copies", ("primary-meta-partition",), matrix_seeds=(114,)),
    Scenario("replication",
             "every primary fault in turns: kill -9, SIGSTOP, cut from its copies, cut from "
             "the meta group", ("primary-kill", "primary-pause", "primary-copies-partition",
                                "primary-meta-partition"),
             matrix_seeds=(115, 116)),
    Scenario("all-at-once", "every nemesis on any target, in turns, sometimes two at once",
             (), matrix_seeds=(1, 2, 3)),
    Scenario("backup", "a cluster backup taken while writes, 2PC batches and kill -9 of a "
             "node or a shard's primary run; restored into a fresh cluster, it must hold a "
             "consistent prefix", ("kill:node", "primary-kill"),
             matrix_seeds=tuple(range(117, 127)), duration_s=30.0, backup_at_s=10.0),
    # The split starts 6 s in, after the first faults (warm-up 2 s), so children are built,
    # mirrored and switched while nodes die, freeze and answer late. At that moment seed 127 has
    # a node killed, 128 a node killed and the other paused soon after (the killed one's shards
    # fail over mid-split), 129 a node paused 0.2 s in, and 138 a node killed 0.5 s in.
    Scenario("reshard", "each workload dataset's shard count doubled while writes, 2PC "
             "batches, kill -9 of a node or a shard's primary, SIGSTOP of a node and "
             "router->node latency run; every row must end on its shard",
             ("kill:node", "primary-kill", "pause:node", "latency:router-node"),
             matrix_seeds=(127, 128, 129, 138), duration_s=30.0, reshard_at_s=6.0),
    # Moves start 4 s in and follow one another until the heal: a small shard's move takes a
    # few seconds, so a run makes several, every other one of a primary's copy (its role is
    # handed over first), while the nodes involved die, freeze, are cut off and answer late,
    # and the meta leader that steps the moves along dies or is isolated.
    Scenario("moves", "shard copies moved between three nodes one after another, the "
             "primary's among them, while writes, 2PC batches, kill -9, SIGSTOP and partitions "
             "of a node or of a shard's primary, kill -9 of a meta member, the meta leader's "
             "isolation and router->node latency run; every move must end and every shard "
             "keep its copies",
             ("kill:node", "primary-kill", "pause:node", "primary-pause", "partition:node",
              "primary-copies-partition", "latency:router-node", "kill:meta",
              "leader-isolation"),
             matrix_seeds=(140, 141, 142), duration_s=40.0, moves_at_s=4.0, nodes=3),
    # The drain starts 5 s in: its moves run while nodes (the drained one too) die, freeze and
    # answer late, and the removal follows once the node holds nothing.
    Scenario("drain", "one of three nodes drained, then removed, while writes, 2PC batches, "
             "kill -9 and SIGSTOP of a node or of a shard's primary, and router->node latency "
             "run; every copy must leave it and every shard keep its copies",
             ("kill:node", "primary-kill", "pause:node", "primary-pause", "latency:router-node"),
             matrix_seeds=(153, 154, 155), duration_s=40.0, drain_at_s=5.0, nodes=3),
    # The third node starts 5 s in; rebalancing rounds then fill it while nodes (the new one
    # too, once it runs) die, freeze, are cut off and answer late. A partition of the new node
    # that begins before it starts has it start cut off: it registers once healed.
    Scenario("join", "a third node joins two that hold every copy and rebalancing moves "
             "copies onto it, while writes, 2PC batches, kill -9, SIGSTOP and partitions of a "
             "node or of a shard's primary, and router->node latency run; copies must end even "
             "and every shard keep its copies",
             ("kill:node", "primary-kill", "pause:node", "primary-pause", "partition:node",
              "primary-copies-partition", "latency:router-node"),
             matrix_seeds=(160, 161, 162, 173), duration_s=40.0, join_at_s=5.0,
             nodes=3),
)

BY_NAME: dict[str, Scenario] = {s.name: s for s in SCENARIOS}


class UnknownScenario(ValueError):
    """A scenario name that is not in SCENARIOS; the message lists the valid names."""


def get(name: str) -> Scenario:
    """The scenario called `name`; raises UnknownScenario (naming every valid one) otherwise."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise UnknownScenario(f"unknown scenario {name!r} (scenarios: "
                              f"{', '.join(s.name for s in SCENARIOS)})") from None


__all__ = ["DEFAULT_DURATION_S", "Scenario", "SCENARIOS", "BY_NAME", "UnknownScenario",
           "get"]
