"""A seeded simulation of two-phase commit (after TigerBeetle's VOPR).

Many coordinators (router/txn_steps.py `step`) and participants exchange messages over a
simulated network that drops, reorders and duplicates them. Each participant is a shard with two
copies, a primary and a copy, each running the participant step function the shard node runs
(consensus/txn_model.py `step`, driven by node/txn.py in the node): a copy stages plans, votes,
logs decisions in the shard's op log, applies them to its store, and learns its primary's ops
from the log. The meta group is the real state machine (consensus/state.py `apply` of DecideTxn
and AckTxns), atomic like the Raft group it stands for, but reached over the same lossy network.
Coordinators crash at any step (a router is stateless: its txns are gone); copies crash between
any two of their actions and come back with what is durable (staged plans, op log, store), the
rest forgotten (a committed decision's rows reach the store with a later group commit, and its
plan stays staged until then; a restart replays the decisions logged past the store's last
commit); the primary role fails over to a caught-up copy; timeouts fire at random. After
the faulty phase the network heals and every timer fires until nothing moves.

Checked at every step: no copy commits a txn the group did not record as committed, none
finishes a txn otherwise than the group recorded, no copy's store holds a commit its op log does
not know, no client hears "committed" for a txn the group aborted, and at most one txn commits
per idempotency key; a copy confirms (acks) a commit only if its store holds it. Copies batch
their acks in memory, so a crash between applying a decision and sending its ack loses the ack;
each shard's primary is given again the decisions the group lists as unacknowledged by its shard
(as node/txn.py's resend does). Checked at the end: no copy holds a txn (no stuck locks), both
copies of a shard hold the same commits, every txn is all or nothing across its shards' stores,
and the group lists no decision as unacknowledged.

One seed replays one schedule exactly:

    python -m router.txn_sim --seed 7 --steps 100000      # one run
    python -m router.txn_sim --seeds 200 --steps 20000    # many seeds (make sim-2pc)
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from consensus import commands as c
from consensus import state as meta_state
from consensus import txn_model as pm
from router import txn_steps as cs
from tributary import limits


@dataclass
class Message:
    to: str            # "meta", "p:<name>" or "c:<txn_id>"
    body: Any
    reply_to: str = ""  # for meta calls: who gets the answer
    sent_ms: int = 0


@dataclass
class Driver:
    """What router/txn.py's driver keeps while an action is in flight."""

    state: cs.CoordinatorState
    waiting: set = field(default_factory=set)   # participants whose answer is awaited
    refusal: Any = None
    action: Any = None
    keys: frozenset = frozenset()


@dataclass
class Shard:
    copies: tuple[str, str]
    primary: str
    # The shard's op log: ("prepare", txn) and ("finish", txn, decision). Replication is
    # synchronous and a copy is promoted only once it holds all of it, so one log stands for
    # every copy's: each copy holds its first log_len ops.
    log: list = field(default_factory=list)


@dataclass
class Copy:
    shard: str
    state: pm.ParticipantState
    up: bool = True
    log_len: int = 0
    staged: dict = field(default_factory=dict)      # durable: txn -> keys of its plan file
    store: set = field(default_factory=set)         # durable: txns whose rows it holds
    # The log position (ops held) the store's last commit records; replayed past at restart.
    store_pos: int = 0
    # Group commit: txns whose rows are applied (visible) but in no store commit yet, with
    # their decision's log position. Lost with the copy's memory; their plans stay staged.
    applied: dict = field(default_factory=dict)
    # Acks not yet sent to the group (node/txn.py batches them): lost with the copy's memory.
    pending_acks: list = field(default_factory=list)


@dataclass
class Report:
    seed: int
    steps: int
    txns: int = 0
    committed: int = 0
    aborted: int = 0
    in_doubt: int = 0
    violations: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"seed {self.seed}: {self.steps} steps, {self.txns} txns ({self.committed} "
                f"committed, {self.aborted} aborted, {self.in_doubt} in doubt), "
                f"{len(self.violations)} violation(s)")


class Simulation:
    PARTICIPANTS = ("s0", "s1", "s2", "s3")

    def __init__(self, seed: int, tombstone_ttl_ms: int = 200):
        # A short tombstone TTL (200 simulated ms) so that expiry happens during every run.
        self.rng = random.Random(seed)
        self.report = Report(seed, 0)
        self.now_ms = 1_000
        self.meta = meta_state.MetaState()
        self.recorded: dict[str, str] = {}       # txn -> first decision the group recorded
        self.committed_keys: dict[str, str] = {}  # idempotency key -> the txn that committed
        self.shards = {s: Shard((f"{s}.a", f"{s}.b"), f"{s}.a") for s in self.PARTICIPANTS}
        self.copies = {n: Copy(s, pm.ParticipantState(n))
                       for s, shard in self.shards.items() for n in shard.copies}
        self.txn_keys: dict[str, frozenset] = {}
        self.faulty = True
        self.local: list[Message] = []      # results of copies' own I/O, in flight
        self.coordinators: dict[str, Driver] = {}
        self.txn_participants: dict[str, tuple[str, ...]] = {}
        self.network: list[Message] = []
        self.next_txn = 0
        self.tombstone_ttl_ms = tombstone_ttl_ms

    # ---- the world --------------------------------------------------------------------------

    def violation(self, message: str) -> None:
        self.report.violations.append(f"step {self.report.steps}: {message}")

    def send(self, to: str, body: Any, reply_to: str = "") -> None:
        self.network.append(Message(to, body, reply_to, self.now_ms))

    def meta_apply(self, command: Any) -> dict:
        saved = limits.txn_tombstone_ttl_ms
        limits.txn_tombstone_ttl_ms = self.tombstone_ttl_ms
        try:
            self.meta, result = meta_state.apply(self.meta, command)
        finally:
            limits.txn_tombstone_ttl_ms = saved
        if isinstance(command, c.DecideTxn) and result.get("first"):
            earlier = self.recorded.setdefault(command.txn_id, result["decision"])
            if earlier != result["decision"]:
                self.violation(f"the group decided {command.txn_id} twice: {earlier}, then "
                               f"{result['decision']}")
            if result["decision"] == cs.COMMIT and command.idempotency_key:
                earlier = self.committed_keys.setdefault(command.idempotency_key,
                                                         command.txn_id)
                if earlier != command.txn_id:
                    self.violation(f"key {command.idempotency_key} committed by {earlier} "
                                   f"and {command.txn_id}")
        return result

    def meta_decision(self, txn_id: str) -> str | None:
        record = self.meta.txns.get(txn_id)
        if record is not None:
            return record.decision
        tombstone = self.meta.txn_tombstones.get(txn_id)
        return tombstone[0] if tombstone else None

    # ---- coordinators -----------------------------------------------------------------------

    def start_txn(self) -> None:
        txn_id = f"t{self.next_txn}"
        self.next_txn += 1
        self.report.txns += 1
        chosen = tuple(sorted(self.rng.sample(self.PARTICIPANTS, self.rng.randint(2, 3))))
        key = f"k{self.rng.randint(0, 9)}" if self.rng.random() < 0.5 else ""
        self.txn_participants[txn_id] = chosen
        keys = frozenset(f"id{self.rng.randint(0, 199)}" for _ in range(self.rng.randint(1, 3)))
        self.txn_keys[txn_id] = keys
        driver = Driver(cs.CoordinatorState(txn_id, chosen, key), keys=keys)
        self.coordinators[txn_id] = driver
        self.coordinator_step(txn_id, cs.Begin())

    def coordinator_step(self, txn_id: str, event: Any) -> None:
        driver = self.coordinators.get(txn_id)
        if driver is None:
            return
        try:
            driver.state, actions = cs.step(driver.state, event)
        except ValueError as exc:
            self.violation(str(exc))
            return
        (action,) = actions
        driver.action, driver.refusal = action, None
        if isinstance(action, cs.SendPrepare):
            driver.waiting = set(action.participants)
            for p in action.participants:
                self.send(f"p:{self.primary_of(p)}", pm.Prepare(txn_id, driver.keys),
                          reply_to=f"c:{txn_id}")
        elif isinstance(action, cs.RecordDecision):
            driver.waiting = {"meta"}
            self.send("meta", c.DecideTxn(txn_id, action.decision,
                                          self.txn_participants[txn_id],
                                          action.idempotency_key, "{}", self.now_ms),
                      reply_to=f"c:{txn_id}")
        elif isinstance(action, cs.SendDecision):
            driver.waiting = set(action.participants)
            for p in action.participants:
                self.send(f"p:{self.primary_of(p)}", pm.Decision(txn_id, action.decision),
                          reply_to=f"c:{txn_id}")
        elif isinstance(action, cs.Reply):
            self.client_hears(txn_id, action)
            del self.coordinators[txn_id]

    def client_hears(self, txn_id: str, reply: cs.Reply) -> None:
        recorded = self.recorded.get(txn_id)
        if reply.kind == "committed":
            self.report.committed += 1
            if recorded != cs.COMMIT:
                self.violation(f"client told {txn_id} committed; the group recorded {recorded}")
        elif reply.kind == "in_doubt":
            self.report.in_doubt += 1
        else:
            self.report.aborted += 1
            if recorded == cs.COMMIT:
                self.violation(f"client told {txn_id} {reply.kind}; the group committed it")

    def coordinator_hears(self, txn_id: str, who: str, answer: Any) -> None:
        driver = self.coordinators.get(txn_id)
        if driver is None or who not in driver.waiting:
            return      # a crashed coordinator, or a duplicate / late answer
        driver.waiting.discard(who)
        action = driver.action
        if isinstance(action, cs.SendPrepare):
            if not isinstance(answer, pm.Vote):
                driver.waiting.add(who)     # a late answer to another phase
                return
            if not answer.yes and driver.refusal is None:
                driver.refusal = f"{who} voted no"
            if not driver.waiting:
                self.coordinator_step(txn_id, cs.Voted(driver.refusal))
        elif isinstance(action, cs.RecordDecision):
            self.coordinator_step(txn_id, cs.Recorded(answer["decision"],
                                                      answer.get("duplicate_of", ""),
                                                      answer.get("outcome_json", "")))
        elif isinstance(action, cs.SendDecision) and isinstance(answer, pm.Vote):
            driver.waiting.add(who)         # a late vote, not the phase-two answer
        elif isinstance(action, cs.SendDecision) and not driver.waiting:
            self.coordinator_step(txn_id, cs.Delivered())

    def coordinator_deadline(self, txn_id: str) -> None:
        """The driver's RPC deadline: missing votes count as no, a missing meta answer is a
        failed record, missing phase-two answers are left to participant recovery."""
        driver = self.coordinators.get(txn_id)
        if driver is None or not driver.waiting:
            return
        driver.waiting = set()
        action = driver.action
        if isinstance(action, cs.SendPrepare):
            self.coordinator_step(txn_id, cs.Voted(driver.refusal or "prepare timed out"))
        elif isinstance(action, cs.RecordDecision):
            if action.decision == cs.ABORT:
                self.coordinator_step(txn_id, cs.Recorded(cs.ABORT))
            else:
                self.coordinator_step(txn_id, cs.RecordFailed("meta timed out"))
        elif isinstance(action, cs.SendDecision):
            self.coordinator_step(txn_id, cs.Delivered())

    # ---- participants: shards of two copies -------------------------------------------------

    def primary_of(self, shard: str) -> str:
        return self.shards[shard].primary

    def role(self, copy: str) -> str:
        return pm.PRIMARY if self.primary_of(self.copies[copy].shard) == copy else pm.COPY

    def participant_step(self, name: str, event: Any, reply_to: str = "") -> None:
        """Feeds `event` to copy `name` and performs its actions in order, as node/txn.py's
        driver does; during the faulty phase the copy may crash between any two actions."""
        copy = self.copies[name]
        if not copy.up:
            return
        queue = list(self.copy_step(name, event))
        while queue:
            action = queue.pop(0)
            follow = self.perform(name, action, reply_to)
            if follow is not None:
                queue.extend(self.copy_step(name, follow))
            if self.faulty and not isinstance(action, (pm.Vote, pm.Answer, pm.Violation)) \
                    and self.rng.random() < 0.02:
                self.crash(name)
                return
            if not copy.up:
                return

    def copy_step(self, name: str, event: Any) -> list:
        copy = self.copies[name]
        before = copy.state
        try:
            copy.state, actions = pm.step(before, event)
        except ValueError as exc:
            self.violation(str(exc))
            return []
        txn_id = event.txn_id
        finished = copy.state.txns.get(txn_id)
        if finished in pm.FINISHED and before.txns.get(txn_id) != finished:
            decision = cs.COMMIT if finished == pm.COMMITTED else cs.ABORT
            recorded = self.recorded.get(txn_id)
            if decision == cs.COMMIT and recorded != cs.COMMIT:
                self.violation(f"{name} committed {txn_id}; the group recorded {recorded}")
            if recorded is not None and recorded != decision:
                self.violation(f"{name} finished {txn_id} {decision}; the group recorded "
                               f"{recorded}")
        return actions

    def perform(self, name: str, action: Any, reply_to: str) -> Any:
        """One action of copy `name`; returns the event its result is, when it is immediate."""
        copy = self.copies[name]
        shard = self.shards[copy.shard]
        txn_id = getattr(action, "txn_id", "")
        if isinstance(action, (pm.StagePlan, pm.ReplicatePlan)):
            # Staging and replication take time: their results come back as later messages,
            # so a failover or a crash can land in between.
            # They are local work, not messages: never dropped or duplicated, lost only with
            # the copy's process.
            kind = "staged" if isinstance(action, pm.StagePlan) else "replicated"
            self.local.append(Message(f"p:{name}", ("result", kind, txn_id), reply_to))
        elif isinstance(action, pm.Vote):
            if reply_to:
                self.send(reply_to, (copy.shard, action))
        elif isinstance(action, (pm.Answer, pm.Refuse)):
            if reply_to.startswith("c:"):
                self.send(reply_to, (copy.shard, action))
        elif isinstance(action, pm.StoreCopy):
            copy.staged[txn_id] = self.txn_keys[txn_id]
        elif isinstance(action, pm.DropStaged):
            copy.staged.pop(txn_id, None)
        elif isinstance(action, pm.LogDecision):
            if self.role(name) != pm.PRIMARY or copy.log_len != len(shard.log):
                self.violation(f"{name} logged {txn_id}'s decision as a copy")
            shard.log.append(("finish", txn_id, action.decision))
            copy.log_len = len(shard.log)
        elif isinstance(action, pm.ApplyDecision):
            if action.decision == cs.COMMIT:
                held = shard.log[:copy.log_len]
                if ("finish", txn_id, cs.COMMIT) not in held:
                    self.violation(f"{name} applied {txn_id}'s commit, which its op log does "
                                   "not hold")
                    copy.store.add(txn_id)
                    copy.staged.pop(txn_id, None)
                    return pm.Finished(txn_id)
                # Group commit (node/txn.py _apply_decision): the rows are applied now and
                # reach the store with the next group commit; the plan stays until then.
                position = len(held) - held[::-1].index(("finish", txn_id, cs.COMMIT))
                copy.applied[txn_id] = max(position, copy.applied.get(txn_id, 0))
            else:
                copy.staged.pop(txn_id, None)
            return pm.Finished(txn_id)
        elif isinstance(action, pm.SendToCopies):
            self.catch_up(self.other(name))
        elif isinstance(action, pm.Ack):
            if reply_to.startswith("c:"):
                self.send(reply_to, (copy.shard, action))
            recorded = self.recorded.get(txn_id)
            holds = txn_id in copy.store or txn_id in copy.applied
            if recorded is not None and (recorded == cs.COMMIT) != holds:
                self.violation(f"{name} confirmed {txn_id}'s {recorded}, which its store "
                               f"does {'not ' if recorded == cs.COMMIT else ''}hold")
            copy.pending_acks.append((txn_id, copy.shard))
        elif isinstance(action, pm.AskMeta):
            self.send("meta", ("ask", txn_id), reply_to=f"p:{name}")
        elif isinstance(action, pm.ProposeAbort):
            self.send("meta", c.DecideTxn(txn_id, cs.ABORT, self.txn_participants[txn_id],
                                          "", "", self.now_ms), reply_to=f"p:{name}")
        elif isinstance(action, pm.Violation):
            self.violation(action.message)
        return None     # TakeLocks, Release, AwaitFinish: nothing outside the state here

    def stage_result(self, name: str, txn_id: str) -> Any:
        """What node/txn.py's StagePlan finds: the fence (only the primary stages), then the
        ids' locks (a txn holding one: the lock wait times out), then the plan goes to disk."""
        copy = self.copies[name]
        if self.role(name) != pm.PRIMARY:
            return pm.StageFailed(txn_id, "stale epoch")
        keys = self.txn_keys[txn_id]
        for other in copy.state.holding():
            if other != txn_id and self.txn_keys[other] & keys:
                return pm.StageFailed(txn_id, f"ids locked by {other}")
        copy.staged[txn_id] = keys
        return pm.Staged(txn_id)

    def replicate_result(self, name: str, txn_id: str) -> Any:
        """node/txn.py's ReplicatePlan: under the write lock, still the primary? Then the plan
        goes into the op log and to the copy."""
        copy = self.copies[name]
        if self.role(name) != pm.PRIMARY:
            return pm.NotPrimary(txn_id)
        shard = self.shards[copy.shard]
        shard.log.append(("prepare", txn_id))
        copy.log_len = len(shard.log)
        self.catch_up(self.other(name))
        return pm.Replicated(txn_id)

    def other(self, name: str) -> str:
        return next(n for n in self.shards[self.copies[name].shard].copies if n != name)

    def catch_up(self, name: str) -> None:
        """A copy that is up takes the ops of its shard's log it lacks, in order."""
        copy = self.copies[name]
        shard = self.shards[copy.shard]
        while copy.up and copy.log_len < len(shard.log):
            op = shard.log[copy.log_len]
            copy.log_len += 1
            self.participant_step(name, self.op_event(op))

    @staticmethod
    def op_event(op: tuple) -> Any:
        if op[0] == "prepare":
            return pm.Adopt(op[1])
        return pm.Decision(op[1], op[2], pm.LOG, pm.ALONE)

    def crash(self, name: str) -> None:
        copy = self.copies[name]
        copy.up = False
        copy.state = pm.ParticipantState(name)      # memory is gone; disk stays
        copy.pending_acks = []                      # a crash between apply and ack
        copy.applied = {}                           # rows in no store commit yet
        self.local = [m for m in self.local if m.to != f"p:{name}"]

    def group_commit(self, name: str) -> bool:
        """shard/replica.py's background commit: every applied txn reaches the store, which
        records the position of the last decision it holds; their plans go (when_durable)."""
        copy = self.copies[name]
        if not copy.up or not copy.applied:
            return False
        copy.store |= set(copy.applied)
        copy.store_pos = max(copy.store_pos, max(copy.applied.values()))
        for txn_id in copy.applied:
            copy.staged.pop(txn_id, None)
        copy.applied = {}
        return True

    def restart(self, name: str) -> None:
        """node/server.py's start order: staged plans first, then every decision logged past
        the store's last commit, in order, and the last logged op whatever its kind
        (node/replication.py reapply_tails)."""
        copy = self.copies[name]
        copy.up = True
        for txn_id in sorted(copy.staged):
            self.participant_step(name, pm.Reload(txn_id))
        log = self.shards[copy.shard].log
        for index in range(min(copy.store_pos, copy.log_len), copy.log_len):
            if not copy.up:
                return
            if log[index][0] == "finish" or index == copy.log_len - 1:
                self.participant_step(name, self.op_event(log[index]))
        if copy.up and copy.log_len and copy.store_pos >= copy.log_len:
            self.participant_step(name, self.op_event(log[copy.log_len - 1]))

    def fail_over(self, shard_name: str) -> None:
        """The meta leader promotes the copy, if it is up and holds the whole log (in sync)."""
        shard = self.shards[shard_name]
        candidate = next(n for n in shard.copies if n != shard.primary)
        if self.copies[candidate].up and self.copies[candidate].log_len == len(shard.log):
            shard.primary = candidate

    def flush_acks(self, name: str) -> bool:
        """node/txn.py's background loop: the copy's batched acks go to the group at once."""
        copy = self.copies[name]
        if not copy.up or not copy.pending_acks:
            return False
        self.send("meta", c.AckTxns(tuple(copy.pending_acks), self.now_ms))
        copy.pending_acks = []
        return True

    def resend_unacked(self) -> bool:
        """node/txn.py's resend_unacked: each shard's primary is given again every decision
        the group lists as not acknowledged by that shard. True if one was given."""
        given = False
        for txn_id, record in sorted(self.meta.txns.items()):
            for shard_name in record.participants:
                primary = self.primary_of(shard_name)
                if shard_name in record.acked or not self.copies[primary].up:
                    continue
                self.participant_step(primary, pm.Decision(txn_id, record.decision, pm.META,
                                                           pm.PRIMARY, False))
                given = True
        return given

    # ---- delivery ---------------------------------------------------------------------------

    def deliver(self, message: Message) -> None:
        if message.to == "meta":
            self.deliver_to_meta(message)
        elif message.to.startswith("p:"):
            # Coordinators address the copy that was primary when they sent (the router's map).
            name = message.to[2:]
            if not self.copies[name].up:
                return
            body = message.body
            if isinstance(body, tuple) and body[0] == "result":
                _, kind, txn_id = body
                event = (self.stage_result(name, txn_id) if kind == "staged"
                         else self.replicate_result(name, txn_id))
                self.participant_step(name, event, message.reply_to)
            elif isinstance(body, pm.Decision):
                # The driver reads the copy's role from the catalog when the decision arrives.
                self.participant_step(name, dataclasses.replace(body, role=self.role(name)),
                                      message.reply_to)
            else:
                self.participant_step(name, body, message.reply_to)
        elif message.to.startswith("c:"):
            who, answer = message.body
            self.coordinator_hears(message.to[2:], who, answer)

    def deliver_to_meta(self, message: Message) -> None:
        body = message.body
        if isinstance(body, c.DecideTxn) and \
                self.now_ms - message.sent_ms > self.tombstone_ttl_ms // 2:
            # The proposer's deadline passed long ago, and no Raft entry waits that long to
            # commit. (The real tombstone TTL, an hour, is far beyond any Propose; the short one
            # here makes expiry happen in every run, so old proposals must not outlive it.)
            return
        if isinstance(body, tuple) and body[0] == "ask":
            self.send(message.reply_to, pm.Decision(body[1], self.meta_decision(body[1]),
                                                    pm.META))
            return
        result = self.meta_apply(body)
        if isinstance(body, c.DecideTxn):
            if message.reply_to.startswith("c:"):
                self.send(message.reply_to, ("meta", result))
            elif message.reply_to.startswith("p:"):
                self.send(message.reply_to, pm.Decision(body.txn_id, result["decision"],
                                                        pm.META))

    # ---- the schedule -----------------------------------------------------------------------

    def fault_step(self) -> None:
        rng = self.rng
        self.now_ms += rng.randint(0, 3)
        for name, copy in self.copies.items():
            # A crashed copy restarts after ~20 steps (its durable state intact).
            if not copy.up and rng.random() < 0.05:
                self.restart(name)
        roll = rng.random()
        if roll < 0.05 or not self.network and not self.local and roll < 0.5:
            self.start_txn()
        elif roll < 0.09 and self.network:
            self.network.pop(rng.randrange(len(self.network)))              # a drop
        elif roll < 0.13 and self.network:
            self.network.append(self.network[rng.randrange(len(self.network))])  # a duplicate
        elif roll < 0.14 and self.coordinators:
            del self.coordinators[rng.choice(sorted(self.coordinators))]    # a router crash
        elif roll < 0.15:
            name = rng.choice(sorted(self.copies))                           # a node crash
            if self.copies[name].up:
                self.crash(name)
        elif roll < 0.16:
            self.fail_over(rng.choice(self.PARTICIPANTS))
        elif roll < 0.17 and self.coordinators:
            # An RPC deadline: rare next to deliveries, as a deadline is long next to a hop.
            self.coordinator_deadline(rng.choice(sorted(self.coordinators)))
        elif roll < 0.19:
            self.catch_up(rng.choice(sorted(self.copies)))                   # catch-up loop
        elif roll < 0.22:
            self.fire_a_timeout()
        elif roll < 0.24:
            self.flush_acks(rng.choice(sorted(self.copies)))
        elif roll < 0.245:
            self.resend_unacked()
        elif roll < 0.27:
            self.group_commit(rng.choice(sorted(self.copies)))
        elif roll < 0.40 and self.local:
            self.deliver(self.local.pop(rng.randrange(len(self.local))))
        elif self.network:
            # Delivery in any order: a reorder is the rule, not a fault.
            self.deliver(self.network.pop(rng.randrange(len(self.network))))

    def fire_a_timeout(self, name: str | None = None) -> bool:
        names = [name] if name else [n for n in sorted(self.copies) if self.copies[n].up]
        prepared = [(n, t) for n in names for t in self.copies[n].state.prepared()]
        if not prepared:
            return False
        n, txn_id = self.rng.choice(prepared)
        self.participant_step(n, pm.Timeout(txn_id))
        return True

    def settle(self, rounds_max: int = 100_000) -> None:
        """Heals everything and runs every timer until no message and no prepared txn is left
        (or rounds_max, which then reports stuck locks)."""
        self.faulty = False
        for name in sorted(self.copies):
            if not self.copies[name].up:
                self.restart(name)
        resent_at = None    # the group's txns when decisions were last given again
        for _ in range(rounds_max):
            self.now_ms += 1
            for name in sorted(self.copies):
                self.catch_up(name)
                self.group_commit(name)
            if self.local:
                self.deliver(self.local.pop(0))
            elif self.network:
                self.deliver(self.network.pop(0))
            elif self.coordinators:
                self.coordinator_deadline(sorted(self.coordinators)[0])
                if self.coordinators and not self.coordinators[
                        sorted(self.coordinators)[0]].waiting:
                    del self.coordinators[sorted(self.coordinators)[0]]
            elif not self.fire_a_timeout() and \
                    not any([self.flush_acks(n) for n in sorted(self.copies)]):
                if resent_at is self.meta.txns:
                    return      # giving them again moved nothing: check_final reports them
                resent_at = self.meta.txns
                if not self.resend_unacked():
                    return

    def check_final(self) -> None:
        for txn_id, record in sorted(self.meta.txns.items()):
            unacked = sorted(set(record.participants) - set(record.acked))
            if unacked:
                self.violation(f"the group lists {txn_id} ({record.decision}) as not applied "
                               f"by {unacked} for ever")
        for name in sorted(self.copies):
            for txn_id in self.copies[name].state.holding():
                self.violation(f"stuck lock: {name} still holds {txn_id} "
                               f"{self.copies[name].state.txns[txn_id]}")
        for shard_name, shard in self.shards.items():
            a, b = (self.copies[n].store for n in shard.copies)
            if a != b:
                self.violation(f"the copies of {shard_name} differ: {sorted(a ^ b)[:5]}")
        for txn_id, chosen in self.txn_participants.items():
            holding = {s for s in chosen if txn_id in self.copies[self.primary_of(s)].store}
            if holding and holding != set(chosen):
                self.violation(f"{txn_id} is not all-or-nothing: committed on "
                               f"{sorted(holding)} of {list(chosen)}")
            if holding and self.recorded.get(txn_id) != cs.COMMIT:
                self.violation(f"{txn_id} committed while the group recorded "
                               f"{self.recorded.get(txn_id)}")

    def run(self, steps: int) -> Report:
        for _ in range(steps):
            self.report.steps += 1
            self.fault_step()
        self.settle()
        self.check_final()
        return self.report


def run(seed: int, steps: int) -> Report:
    return Simulation(seed).run(steps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router.txn_sim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=None, help="run this one seed")
    parser.add_argument("--seeds", type=int, default=100, help="seeds 0..N-1 (default 100)")
    parser.add_argument("--steps", type=int, default=20_000, help="steps per seed")
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else list(range(args.seeds))
    started, total_steps, failed = time.monotonic(), 0, 0
    for seed in seeds:
        report = run(seed, args.steps)
        total_steps += report.steps
        if report.violations:
            failed += 1
            print(report.line())
            for violation in report.violations[:10]:
                print("   ", violation)
            print(f"    replay: python -m router.txn_sim --seed {seed} --steps {args.steps}")
    print(f"{len(seeds)} seed(s), {total_steps} steps in {time.monotonic() - started:.1f} s: "
          f"{failed} seed(s) with violations")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
