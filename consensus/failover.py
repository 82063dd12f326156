"""The meta leader's repair loop: promotes an in-sync copy when a primary stops heartbeating,
replaces a copy whose node stays away, and steps shard moves and drains along
(consensus/replication.py plan_repairs and consensus/rebalance.py plan_move_steps decide; this
thread only measures liveness and proposes).

Liveness is the leader's soft state (MetaService.last_seen). A leader that has just taken over
has heard from nobody yet, so it plans nothing until it has led for failover_after_ms, and it
counts a node's absence from the start of its leadership at the earliest.
"""

from __future__ import annotations

import logging
import threading
import time

from consensus import commands, rebalance, replication, reshard
from tributary import faults, limits
from tributary.errors import TributaryError

log = logging.getLogger("tributary.meta.failover")


class FailoverController:
    def __init__(self, machine, service):
        self.machine = machine      # consensus.member.MetaStateMachine
        self.service = service      # consensus.member.MetaService (last_seen, lock)
        self._stop = threading.Event()
        self._leading_since: float | None = None
        # (catalog revision, nodes) of the last round that found every node live and planned
        # nothing; see round().
        self._quiet_key: tuple | None = None
        self._thread = threading.Thread(target=self._run, name="failover", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=limits.failover_check_interval_ms / 1000 * 4)

    def _run(self) -> None:
        while not self._stop.wait(limits.failover_check_interval_ms / 1000):
            try:
                self.round()
            except Exception:  # noqa: BLE001 - one failed round must not end the loop
                log.exception("failover round failed")

    def down_for_ms(self, now: float) -> dict[str, int]:
        """How long each registered node has gone without a heartbeat to this leader, counted
        from the start of this leadership at the earliest; 0 for a node heard from recently."""
        with self.service.lock:
            seen = dict(self.service.last_seen)
        quiet_s = limits.node_heartbeat_interval_ms * 3 / 1000
        down = {}
        for node in self.machine.meta.nodes:
            last = max(seen.get(node, self._leading_since), self._leading_since)
            down[node] = int((now - last) * 1000) if now - last > quiet_s else 0
        return down

    def round(self) -> None:
        if not self.machine._isLeader():
            self._leading_since = None
            self._quiet_key = None
            return
        now = time.monotonic()
        if self._leading_since is None:
            self._leading_since = now
        if (now - self._leading_since) * 1000 < limits.failover_after_ms:
            return
        down = self.down_for_ms(now)
        at_ms = int(time.time() * 1000)
        state = self.machine.meta
        # Planning reads every dataset (~25 ms at 10,000); with every node live and the
        # catalog unchanged since a round that planned nothing, it would plan nothing again.
        quiet_key = (state.version, frozenset(state.nodes))
        if not any(down.values()) and quiet_key == self._quiet_key:
            return
        self._quiet_key = None
        planned = replication.plan_repairs(state, down, at_ms, limits.failover_after_ms,
                                           limits.copy_replace_after_ms)
        live = {n for n, ms in down.items() if ms == 0}
        gone = {n for n, ms in down.items() if ms >= limits.move_target_away_cancel_ms}
        planned += rebalance.plan_move_steps(state, live, at_ms, limits.moves_concurrent_max,
                                             gone)
        planned += reshard.plan_reshard_steps(state, at_ms)
        # A reshard waits on 2PC acks, which change no catalog revision: keep planning.
        if not planned and not any(down.values()) and not state.reshards:
            self._quiet_key = quiet_key
        for command in planned:
            if isinstance(command, commands.FinishMove):
                # Test-only crash point: the leader, which drives moves, dies before finishing.
                faults.crash_point(faults.META_LEADER_BEFORE_FINISH_MOVE)
            if isinstance(command, commands.FinishReshard):
                # Test-only crash point: the leader, which drives splits, dies before the switch.
                faults.crash_point(faults.META_LEADER_BEFORE_FINISH_RESHARD)
            try:
                result = self.machine.propose(commands.encode(command),
                                              limits.meta_rpc_timeout_ms / 1000)
                log.warning("repair: %s -> %s", command, result)
            except TributaryError as exc:
                log.warning("repair %s not committed: %s", command, exc.message)
