"""Shard moves and node drains under chaos: what the `moves` and `drain` scenarios do to the
cluster besides the faults, through the router's public admin REST API, through the
client->router proxy, as an operator's `tributary admin shards move` and `tributary admin nodes
drain | remove` would (router/moves_admin.py, router/cluster_admin.py):

    GET  /admin/nodes                  which nodes are live (a target must be), their states
    GET  /admin/datasets/{name}        each shard's primary and copies
    POST /admin/moves                  {dataset, shard, from, to}: 201 with the move (its move_id)
    GET  /admin/moves                  the moves in flight
    POST /admin/nodes/{node}/drain     202: the meta leader moves every copy off the node
    POST /admin/nodes/{node}/remove    {force: false}: forget a drained node

The admin credential is `Authorization: Bearer $TRIBUTARY_API_KEY` when that is set. Every
request has a timeout, and the polling a deadline.

*Moves* (`MoveProbe`): from `moves_at_s` into the run until the final heal, move one copy of a
workload dataset's shard to a node that holds none of it, follow the move until it has ended,
and start the next; alternate between the primary's copy (the primary role is handed over
first) and another copy. After the heal the move in flight gets the bound to end.

A move ends when GET /admin/moves no longer lists it. Its outcome is read from the placement
then (`outcome_of`): `finished` when the target holds a copy and the source none, `rolled-back`
when the source still holds its copy and the target none (CancelMove: a target away too long),
anything else `other`, which the moves-ended checker fails. A start whose answer was lost may or
may not have been proposed (move ids are fixed by dataset, shard, source and target): it is
followed like a started move, and one never seen in flight whose placement is unchanged counts
as `not-started`. A definite refusal (4xx: a target that went down, a move already in flight
for the shard) is recorded and the next move picked.

*A drain* (`DrainProbe`): at `drain_at_s`, drain one node (picked by the seed) and, once it is
`drained`, remove it. A drain is refused while some copy has nowhere to go (another node down):
the probe asks again every second, as `drain --wait` does, until one is accepted or a node list
shows the node draining. A removal whose answer was lost is settled by the next node list. A
removed node that a nemesis restarts registers again, as a new member with no copies (the way a
StatefulSet scaled back up rejoins): the probe records when it saw that.
"""

from __future__ import annotations

import random
import threading
import time
import urllib.parse
from typing import Any, Callable

from chaos.probe import AdminProbe, node_state
from chaos.workload import BATCH_DATASET, KV_DATASET, Reply, classify

POLL_S = 0.5
# After a refusal or an unreadable placement, the next pick waits this long.
RETRY_S = 1.0

FINISHED = "finished"
ROLLED_BACK = "rolled-back"
NOT_STARTED = "not-started"
REFUSED = "refused"
OTHER = "other"


def datasets_for(workloads: list[str]) -> list[str]:
    """The workload datasets whose shards the probe moves."""
    return [name for workload, name in (("kv", KV_DATASET), ("batch", BATCH_DATASET))
            if workload in workloads]


def copies_of(shard_doc: dict) -> list[str]:
    return [c["node_id"] for c in shard_doc.get("copies") or [] if isinstance(c, dict)
            and isinstance(c.get("node_id"), str)]


def pick_move(placement: Any, live: list[str], rng: random.Random, primary: bool
              ) -> tuple[int, str, str] | None:
    """(shard, source, target) of the next move, from a dataset's placement (GET
    /admin/datasets/NAME) and the live nodes: a shard in a seeded order, its primary's copy
    when `primary` (else another copy, the primary's when it has no other), and a live node
    that holds no copy of it. None when no shard has such a node. Pure but for `rng`."""
    if not isinstance(placement, dict) or not isinstance(placement.get("shards"), list):
        return None
    shards = [s for s in placement["shards"] if isinstance(s, dict)
              and isinstance(s.get("shard"), int) and isinstance(s.get("primary"), str)]
    rng.shuffle(shards)
    for doc in shards:
        copies = copies_of(doc)
        targets = sorted(set(live) - set(copies))
        if not targets or doc["primary"] not in copies:
            continue
        others = sorted(set(copies) - {doc["primary"]})
        source = doc["primary"] if primary or not others else rng.choice(others)
        return doc["shard"], source, rng.choice(targets)
    return None


def outcome_of(placement: Any, shard: int, source: str, target: str, seen_in_flight: bool
               ) -> str | None:
    """How a move that GET /admin/moves no longer lists ended, by the placement read after
    that: FINISHED, ROLLED_BACK, NOT_STARTED (its start answer was lost, it was never seen in
    flight and nothing changed; a rolled-back move looks the same, and is just as harmless), or
    OTHER. None when the placement does not say (no such shard in the document). Pure."""
    if not isinstance(placement, dict):
        return None
    doc = next((s for s in placement.get("shards") or [] if isinstance(s, dict)
                and s.get("shard") == shard), None)
    if doc is None:
        return None
    copies = set(copies_of(doc))
    if target in copies and source not in copies:
        return FINISHED
    if source in copies and target not in copies:
        return ROLLED_BACK if seen_in_flight else NOT_STARTED
    return OTHER


def start_refused(reply: Reply) -> bool:
    """A start answer that says the move was not made: a 4xx (a target that is down, a move in
    flight for the shard, no such node). A 5xx or a lost answer may have been proposed."""
    return reply.status is not None and 400 <= reply.status < 500


class Move:
    """One move, as the probe follows it. Times are monotonic seconds."""

    def __init__(self, dataset: str, shard: int, source: str, target: str, primary: bool):
        self.dataset, self.shard, self.source, self.target = dataset, shard, source, target
        self.primary = primary
        self.move_id: str | None = None
        self.requested_at: float | None = None
        self.acknowledged = False           # the start answered 201
        self.seen_in_flight = False         # GET /admin/moves listed it
        self.ended_at: float | None = None
        self.outcome: str | None = None
        self.detail: str | None = None      # the refusal, or the placement of an OTHER
        self.last_phase: str | None = None

    @property
    def started(self) -> bool:
        return self.acknowledged or self.seen_in_flight

    def to_dict(self, t0: float) -> dict:
        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - t0, 3)
        return {"dataset": self.dataset, "shard": self.shard, "from": self.source,
                "to": self.target, "primary": self.primary, "move_id": self.move_id,
                "requested_at_s": rel(self.requested_at), "acknowledged": self.acknowledged,
                "seen_in_flight": self.seen_in_flight, "ended_at_s": rel(self.ended_at),
                "seconds": (None if self.ended_at is None or self.requested_at is None
                            else round(self.ended_at - self.requested_at, 2)),
                "outcome": self.outcome, "detail": self.detail, "last_phase": self.last_phase}


class MoveProbe(AdminProbe):
    """The moves of one run: a thread from `start` that moves one copy at a time until the
    heal (`settle`), then follows the move in flight until it ends or the bound passes."""

    thread_name = "move-probe"

    def __init__(self, rest_url: str, datasets: list[str], at_s: float, seed: int,
                 log: Callable[[str], None], request_timeout_s: float = 5.0):
        super().__init__(rest_url, at_s, log, request_timeout_s)
        self.datasets = list(datasets)
        self.rng = random.Random(f"moves-{seed}")
        self.moves: list[Move] = []
        self.current: Move | None = None
        self.errors = 0                     # admin reads that gave no answer
        self._no_new = threading.Event()

    # ---- the thread -------------------------------------------------------------------------

    def _get(self, path: str) -> Reply:
        reply = self.http.request("GET", path, headers=self.headers, root=True,
                                  timeout_s=max(self.http.timeout_s, 10.0))
        if reply.status != 200:
            self.errors += 1
        return reply

    def _placement(self, dataset: str) -> Any:
        reply = self._get(f"/admin/datasets/{urllib.parse.quote(dataset, safe='')}")
        return reply.doc if reply.status == 200 else None

    def _run(self) -> None:
        self._wait_to_start(woken_by=self._no_new)
        self.log(f"[{self._now():7.2f}s] moves: moving copies of {', '.join(self.datasets)}")
        while time.monotonic() < self.deadline:
            if self.current is None:
                if self._no_new.is_set():
                    break
                self._begin_next()
            else:
                self._follow(self.current)
            time.sleep(POLL_S)

    def _begin_next(self) -> None:
        nodes = self._get("/admin/nodes")
        live = ([n["node_id"] for n in nodes.doc.get("nodes", []) if n.get("state") == "live"]
                if nodes.status == 200 and isinstance(nodes.doc, dict) else [])
        dataset = self.rng.choice(self.datasets)
        primary = len(self.moves) % 2 == 0
        chosen = pick_move(self._placement(dataset), live, self.rng, primary) if live else None
        if chosen is None:
            time.sleep(RETRY_S)
            return
        shard, source, target = chosen
        move = Move(dataset, shard, source, target, primary)
        move.requested_at = time.monotonic()
        self.moves.append(move)
        reply = self.http.request("POST", "/admin/moves", {
            "dataset": dataset, "shard": shard, "from": source, "to": target},
            headers=self.headers, root=True)
        label = f"{dataset}/{shard} {source} -> {target}" + (" (primary)" if primary else "")
        if reply.status == 201 and isinstance(reply.doc, dict):
            move.acknowledged = True
            move.move_id = (reply.doc.get("move") or {}).get("move_id")
            self.log(f"[{self._now():7.2f}s] moves: {label} started ({move.move_id})")
            self.current = move
        elif start_refused(reply):
            move.outcome, move.ended_at = REFUSED, time.monotonic()
            move.detail = reply.message
            self.log(f"[{self._now():7.2f}s] moves: {label} refused: {reply.message}")
            time.sleep(RETRY_S)
        else:
            self.log(f"[{self._now():7.2f}s] moves: {label} start not acknowledged "
                     f"({classify(reply)}: {reply.message}); following it")
            self.current = move

    def _follow(self, move: Move) -> None:
        reply = self._get("/admin/moves")
        if reply.status != 200 or not isinstance(reply.doc, dict):
            return
        listed = next((m for m in reply.doc.get("moves") or [] if isinstance(m, dict) and (
            m.get("move_id") == move.move_id if move.move_id else
            (m.get("dataset"), m.get("shard"), m.get("from"), m.get("to"))
            == (move.dataset, move.shard, move.source, move.target))), None)
        if listed is not None:
            move.seen_in_flight = True
            move.move_id = move.move_id or listed.get("move_id")
            if listed.get("phase") != move.last_phase:
                move.last_phase = listed.get("phase")
                self.log(f"[{self._now():7.2f}s] moves: {move.move_id} {move.last_phase} "
                         f"(target at op {listed.get('target_seq')}, primary at "
                         f"{listed.get('primary_seq')})")
            return
        placement = self._placement(move.dataset)
        outcome = outcome_of(placement, move.shard, move.source, move.target,
                             move.started)
        if outcome is None:
            return
        move.outcome, move.ended_at = outcome, time.monotonic()
        if outcome == OTHER:
            move.detail = f"placement after the move: {placement!r:.600}"
        self.log(f"[{self._now():7.2f}s] moves: {move.dataset}/{move.shard} {move.source} -> "
                 f"{move.target} {outcome}"
                 + ("" if move.requested_at is None else
                    f" {move.ended_at - move.requested_at:.2f}s after its start"))
        self.current = None

    # ---- after the heal -----------------------------------------------------------------------

    def stop_new(self) -> None:
        """No move starts after this (the final heal); the one in flight is still followed."""
        self._no_new.set()

    def abandon(self) -> None:
        self.stop_new()
        super().abandon()

    def settle(self, healed_at: float, bound_s: float) -> dict:
        """Starts no new move, then gives the move in flight until `bound_s` after the heal to
        end (AdminProbe.settle)."""
        self.stop_new()
        return super().settle(healed_at, bound_s)

    @property
    def ended_at(self) -> float | None:
        """When the last move ended (monotonic), None when none did."""
        times = [m.ended_at for m in self.moves if m.ended_at is not None]
        return max(times) if times else None

    def result(self) -> dict:
        """What the verdict judges (chaos.verdict.moves_ended)."""
        t0 = self.t0 if self.t0 is not None else 0.0
        return {"at_s": self.at_s, "bound_s": self.bound_s, "datasets": self.datasets,
                "healed_at_s": None if self.healed_at is None else round(self.healed_at - t0, 3),
                "admin_read_errors": self.errors,
                "moves": [m.to_dict(t0) for m in self.moves]}


class DrainProbe(AdminProbe):
    """One node drained, then removed, while the faults run: a thread from `start` until the
    node is removed or the deadline passes; `settle` sets the deadline after the heal."""

    thread_name = "drain-probe"

    def __init__(self, rest_url: str, node_id: str, datasets: list[str], at_s: float,
                 log: Callable[[str], None], request_timeout_s: float = 5.0):
        super().__init__(rest_url, at_s, log, request_timeout_s)
        self.node = node_id
        self.datasets = list(datasets)      # the workload datasets, older than the drain
        self.requested_at: float | None = None      # the first drain request
        self.draining_seen_at: float | None = None   # first node list showing it draining
        self.drained_at: float | None = None         # first node list showing it drained
        self.removed_at: float | None = None         # the removal answered, or the node gone
        self.drain_attempts = 0
        self.drain_errors: list[str] = []
        self.remove_attempts = 0
        self.remove_errors: list[str] = []
        self.copies_left: int | None = None          # the last node list's count
        self.planned_moves: int | None = None        # the accepted drain's plan
        # A removed node that starts again registers again (as a pod of a StatefulSet scaled
        # back up does): a nemesis restart after the removal makes it a member with no copies,
        # on which datasets created from then on may be placed.
        self.rejoined_at: float | None = None

    @property
    def over(self) -> bool:
        return self.removed_at is not None

    def _path(self, action: str) -> str:
        return f"/admin/nodes/{urllib.parse.quote(self.node, safe='')}/{action}"

    def _run(self) -> None:
        self._wait_to_start()
        self.log(f"[{self._now():7.2f}s] drain: draining {self.node}")
        next_drain = 0.0
        # After the removal, the node list is still read until settle(), for a rejoin.
        while time.monotonic() < self.deadline and not (self.over and self._settled.is_set()):
            state, me = self._read_node(self.node)
            now = time.monotonic()
            if self.over:
                if state not in (None, "gone") and self.rejoined_at is None:
                    self.rejoined_at = now
                    self.log(f"[{self._now():7.2f}s] drain: {self.node} registered again "
                             f"after its removal ({state})")
                time.sleep(POLL_S)
                continue
            if me is not None:
                self.copies_left = me.get("copies")
            if state in ("draining", "drained") and self.draining_seen_at is None:
                self.draining_seen_at = now
                self.log(f"[{self._now():7.2f}s] drain: {self.node} draining "
                         f"({self.copies_left} copies to move)")
            if state == "drained" and self.drained_at is None:
                self.drained_at = now
                self.log(f"[{self._now():7.2f}s] drain: {self.node} drained"
                         + ("" if self.requested_at is None else
                            f" {now - self.requested_at:.2f}s after the first request"))
            if state in ("live", "down") and self.draining_seen_at is None and \
                    now >= next_drain:
                next_drain = now + RETRY_S
                self._drain()
            elif state == "drained":
                self._remove()
            elif state == "gone" and self.drained_at is not None:
                self.removed_at = now
                self.log(f"[{self._now():7.2f}s] drain: {self.node} no longer listed")
            time.sleep(POLL_S)

    def _drain(self) -> None:
        if self.requested_at is None:
            self.requested_at = time.monotonic()
        self.drain_attempts += 1
        reply = self.http.request("POST", self._path("drain"), {}, headers=self.headers,
                                  root=True)
        if reply.status == 202 and isinstance(reply.doc, dict):
            self.planned_moves = len(reply.doc.get("moves") or [])
            self.log(f"[{self._now():7.2f}s] drain: {self.node} accepted (attempt "
                     f"{self.drain_attempts}, {self.planned_moves} move(s) planned)")
            return
        self.drain_errors.append(f"attempt {self.drain_attempts} at {self._now():.2f}s: "
                                 f"{reply.message} ({classify(reply)})")

    def _remove(self) -> None:
        self.remove_attempts += 1
        reply = self.http.request("POST", self._path("remove"), {"force": False},
                                  headers=self.headers, root=True)
        if reply.status == 200:
            self.removed_at = time.monotonic()
            self.log(f"[{self._now():7.2f}s] drain: {self.node} removed")
            return
        self.remove_errors.append(f"attempt {self.remove_attempts} at {self._now():.2f}s: "
                                  f"{reply.message} ({classify(reply)})")

    def result(self) -> dict:
        """What the verdict judges (chaos.verdict.drain_finished)."""
        rel = self._rel
        return {"node": self.node, "datasets": self.datasets, "at_s": self.at_s,
                "bound_s": self.bound_s,
                "healed_at_s": rel(self.healed_at), "requested_at_s": rel(self.requested_at),
                "draining_seen_at_s": rel(self.draining_seen_at),
                "drained_at_s": rel(self.drained_at), "removed_at_s": rel(self.removed_at),
                "drain_attempts": self.drain_attempts, "drain_errors": self.drain_errors[-5:],
                "remove_attempts": self.remove_attempts,
                "remove_errors": self.remove_errors[-5:], "copies_left": self.copies_left,
                "planned_moves": self.planned_moves, "rejoined_at_s": rel(self.rejoined_at)}


__all__ = ["MoveProbe", "Move", "DrainProbe", "pick_move", "outcome_of", "start_refused",
           "datasets_for", "node_state", "FINISHED", "ROLLED_BACK", "NOT_STARTED", "REFUSED",
           "OTHER"]
