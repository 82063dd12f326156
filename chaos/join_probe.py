"""The `join` scenario's probe: a node that was not running when the workload datasets were
created starts `at_s` into the run, and, once the node list shows it live, rebalancing rounds
(`POST /admin/rebalance`, as `tributary admin rebalance --wait` sends them) move copies onto it
while the faults run. A round that plans nothing while nothing is in flight means copies are
even; the probe keeps sending rounds until the run's final heal, and the first such round after
it is the convergence the verdict judges (chaos.verdict.join_balanced)."""

from __future__ import annotations

import time
from typing import Callable

from chaos.probe import AdminProbe
from chaos.workload import classify

POLL_S = 0.5
ROUND_EVERY_S = 1.0


class JoinProbe(AdminProbe):
    thread_name = "join-probe"

    def __init__(self, rest_url: str, node_id: str, datasets: list[str], at_s: float,
                 start_node: Callable[[], None], log: Callable[[str], None],
                 request_timeout_s: float = 5.0):
        super().__init__(rest_url, at_s, log, request_timeout_s)
        self.node = node_id
        self.datasets = list(datasets)
        self._start_node = start_node
        self.started_at: float | None = None      # the node's process started
        self.live_at: float | None = None         # first node list showing it live
        self.rounds = 0
        self.round_errors: list[str] = []
        self.moves_planned = 0                    # over every round
        self.copies: int | None = None            # the node's copies in the last node list
        self.converged_at: float | None = None    # first empty round after the heal

    def _run(self) -> None:
        self._wait_to_start()
        self._start_node()
        self.started_at = time.monotonic()
        self.log(f"[{self._now():7.2f}s] join: started {self.node}")
        next_round = 0.0
        while time.monotonic() < self.deadline and self.converged_at is None:
            state, me = self._read_node(self.node)
            if me is not None:
                self.copies = me.get("copies")
            now = time.monotonic()
            if state == "live" and self.live_at is None:
                self.live_at = now
                self.log(f"[{self._now():7.2f}s] join: {self.node} live "
                         f"{now - self.started_at:.2f}s after its start")
            if self.live_at is not None and now >= next_round:
                next_round = now + ROUND_EVERY_S
                self._round()
            time.sleep(POLL_S)

    def _round(self) -> None:
        settled = self._settled.is_set()
        self.rounds += 1
        reply = self.http.request("POST", "/admin/rebalance", {}, headers=self.headers,
                                  root=True)
        if reply.status != 200 or not isinstance(reply.doc, dict):
            self.round_errors.append(f"round {self.rounds} at {self._now():.2f}s: "
                                     f"{reply.message} ({classify(reply)})")
            return
        planned = len(reply.doc.get("moves") or [])
        self.moves_planned += planned
        if planned:
            self.log(f"[{self._now():7.2f}s] join: round {self.rounds} started {planned} "
                     f"move(s)/hand-over(s)")
        elif not reply.doc.get("in_flight") and settled:
            self.converged_at = time.monotonic()
            self.log(f"[{self._now():7.2f}s] join: copies even ({self.copies} on {self.node})")

    def result(self) -> dict:
        """What the verdict judges (chaos.verdict.join_balanced)."""
        rel = self._rel
        return {"node": self.node, "datasets": self.datasets, "at_s": self.at_s,
                "bound_s": self.bound_s, "healed_at_s": rel(self.healed_at),
                "started_at_s": rel(self.started_at), "live_at_s": rel(self.live_at),
                "converged_at_s": rel(self.converged_at), "rounds": self.rounds,
                "round_errors": self.round_errors[-5:], "moves_planned": self.moves_planned,
                "copies": self.copies}


__all__ = ["JoinProbe"]
