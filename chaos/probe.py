"""What the scenario probes share (chaos/reshard_probe.py, chaos/move_probe.py): each drives the
cluster through the router's admin API from `at_s` into the run, in a thread of its own, with
the operator's credential (`Authorization: Bearer $TRIBUTARY_API_KEY` when that is set) and
every request under a timeout; the run gives it a deadline at the start and moves it to the
scenario's bound after the final heal (`settle`)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

from chaos.workload import Http


class AdminProbe:
    """A probe's thread, clock and deadline. Subclasses implement `_run`."""

    thread_name = "probe"

    def __init__(self, rest_url: str, at_s: float, log: Callable[[str], None],
                 request_timeout_s: float = 5.0):
        self.http = Http(rest_url, request_timeout_s)
        self.at_s = at_s
        self.log = log
        self.request_timeout_s = request_timeout_s
        key = os.environ.get("TRIBUTARY_API_KEY")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.t0: float | None = None
        self.deadline = float("inf")
        self.healed_at: float | None = None
        self.bound_s: float | None = None
        self._thread: threading.Thread | None = None
        # Set by `settle`, once the run's final heal is done.
        self._settled = threading.Event()

    def start(self, t0: float, give_up_at: float) -> None:
        """Starts the thread; it acts from t0 + at_s and stops at `give_up_at` (monotonic) at
        the latest, or earlier once the deadline is moved after the heal."""
        self.t0 = t0
        self.deadline = give_up_at
        self._thread = threading.Thread(target=self._run, daemon=True, name=self.thread_name)
        self._thread.start()

    def _run(self) -> None:
        raise NotImplementedError

    def result(self) -> dict:
        """What the verdict judges."""
        raise NotImplementedError

    def settle(self, healed_at: float, bound_s: float) -> dict:
        """Gives the probe until `bound_s` after the heal (`healed_at`, monotonic), waits for
        its thread, and returns `result()`."""
        self._settled.set()
        self._bound_after_heal(healed_at, bound_s)
        return self.result()

    def _rel(self, t: float | None) -> float | None:
        """A monotonic time as seconds into the run (None stays None)."""
        return None if t is None else round(t - (self.t0 if self.t0 is not None else 0.0), 3)

    def _now(self) -> float:
        return time.monotonic() - self.t0

    def _wait_to_start(self, woken_by: threading.Event | None = None) -> None:
        """Sleeps until t0 + at_s (or until `woken_by` is set, when given)."""
        delay = self.t0 + self.at_s - time.monotonic()
        if delay > 0:
            (woken_by.wait if woken_by is not None else time.sleep)(delay)

    def _bound_after_heal(self, healed_at: float, bound_s: float) -> None:
        """Moves the deadline to `bound_s` after the heal and waits for the thread (allowing
        for the requests in flight then)."""
        self.healed_at, self.bound_s = healed_at, bound_s
        self.deadline = min(self.deadline, healed_at + bound_s)
        if self._thread is not None:
            self._thread.join(max(0.0, self.deadline - time.monotonic())
                              + 3 * max(self.request_timeout_s, 10.0) + 5)

    def _read_node(self, node_id: str) -> tuple[str | None, dict | None]:
        """(`node_state`, the node's entry or None) from one GET /admin/nodes; (None, None)
        when the read fails."""
        nodes = self.http.request("GET", "/admin/nodes", headers=self.headers, root=True,
                                  timeout_s=max(self.http.timeout_s, 10.0))
        if nodes.status != 200:
            return None, None
        return node_state(nodes.doc, node_id), node_entry(nodes.doc, node_id)

    def abandon(self) -> None:
        """Ends the thread at its next poll (a run that ended in a harness error)."""
        self.deadline = min(self.deadline, time.monotonic())


def node_entry(nodes_doc: Any, node_id: str) -> dict | None:
    """A node's entry in GET /admin/nodes, None when the document is not a node list or does
    not hold it. Pure."""
    if not isinstance(nodes_doc, dict) or not isinstance(nodes_doc.get("nodes"), list):
        return None
    return next((n for n in nodes_doc["nodes"] if isinstance(n, dict)
                 and n.get("node_id") == node_id), None)


def node_state(nodes_doc: Any, node_id: str) -> str | None:
    """A node's state in GET /admin/nodes (live, down, draining, drained), "gone" when the list
    does not hold it, None when the document is not a node list. Pure."""
    if not isinstance(nodes_doc, dict) or not isinstance(nodes_doc.get("nodes"), list):
        return None
    node = node_entry(nodes_doc, node_id)
    return "gone" if node is None else node.get("state")


__all__ = ["AdminProbe", "node_entry", "node_state"]
