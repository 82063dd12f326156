"""A seeded simulation of two-phase commit (after TigerBeetle's VOPR).

Many coordinators (router/txn_steps.py `step`) and participants (consensus/txn_model.py `step`)
exchange messages over a simulated network that drops, reorders and duplicates them; the meta
group is the real state machine (consensus/state.py `apply` of DecideTxn and AckTxns), atomic
like the Raft group it stands for, but reached over the same lossy network. Coordinators crash
at any step (a router is stateless: its txns are gone), participants crash and come back
(prepared and finished txns are durable), timeouts fire at random. After the faulty phase the
network heals and every timer fires until nothing moves.

Checked at every step: no participant commits a txn the group did not record as committed, none
finishes a txn otherwise than the group recorded, no client hears "committed" for a txn the
group aborted, and at most one txn commits per idempotency key. Checked at the end: no
participant holds a prepared txn (no stuck locks) and every txn is all or nothing.

One seed replays one schedule exactly:

    python -m router.txn_sim --seed 7 --steps 100000      # one run
    python -m router.txn_sim --seeds 200 --steps 20000    # many seeds (make sim-2pc)
"""

from __future__ import annotations

import argparse
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


@dataclass
class Driver:
    """What router/txn.py's driver keeps while an action is in flight."""

    state: cs.CoordinatorState
    waiting: set = field(default_factory=set)   # participants whose answer is awaited
    refusal: Any = None
    action: Any = None
    keys: frozenset = frozenset()


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
        self.participants = {p: pm.ParticipantState(p) for p in self.PARTICIPANTS}
        self.up = {p: True for p in self.PARTICIPANTS}
        self.coordinators: dict[str, Driver] = {}
        self.txn_participants: dict[str, tuple[str, ...]] = {}
        self.network: list[Message] = []
        self.next_txn = 0
        self.tombstone_ttl_ms = tombstone_ttl_ms

    # ---- the world --------------------------------------------------------------------------

    def violation(self, message: str) -> None:
        self.report.violations.append(f"step {self.report.steps}: {message}")

    def send(self, to: str, body: Any, reply_to: str = "") -> None:
        self.network.append(Message(to, body, reply_to))

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
                self.send(f"p:{p}", pm.Prepare(txn_id, driver.keys), reply_to=f"c:{txn_id}")
        elif isinstance(action, cs.RecordDecision):
            driver.waiting = {"meta"}
            self.send("meta", c.DecideTxn(txn_id, action.decision,
                                          self.txn_participants[txn_id],
                                          action.idempotency_key, "{}", self.now_ms),
                      reply_to=f"c:{txn_id}")
        elif isinstance(action, cs.SendDecision):
            driver.waiting = set(action.participants)
            for p in action.participants:
                self.send(f"p:{p}", pm.Decision(txn_id, action.decision),
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
            if isinstance(answer, pm.Vote) and not answer.yes and driver.refusal is None:
                driver.refusal = f"{who} voted no"
            if not driver.waiting:
                self.coordinator_step(txn_id, cs.Voted(driver.refusal))
        elif isinstance(action, cs.RecordDecision):
            self.coordinator_step(txn_id, cs.Recorded(answer["decision"],
                                                      answer.get("duplicate_of", ""),
                                                      answer.get("outcome_json", "")))
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

    # ---- participants -----------------------------------------------------------------------

    def participant_step(self, name: str, event: Any, reply_to: str = "") -> None:
        before = self.participants[name]
        try:
            state, actions = pm.step(before, event)
        except ValueError as exc:
            self.violation(str(exc))
            return
        self.participants[name] = state
        txn_id = event.txn_id
        finished = state.txns.get(txn_id)
        if finished in (pm.COMMITTED, pm.ABORTED) and before.txns.get(txn_id) != finished:
            decision = cs.COMMIT if finished == pm.COMMITTED else cs.ABORT
            recorded = self.recorded.get(txn_id)
            if decision == cs.COMMIT and recorded != cs.COMMIT:
                self.violation(f"{name} committed {txn_id}; the group recorded {recorded}")
            if recorded is not None and recorded != decision:
                self.violation(f"{name} finished {txn_id} {decision}; the group recorded "
                               f"{recorded}")
        for action in actions:
            if isinstance(action, pm.Vote):
                if reply_to:
                    self.send(reply_to, (name, action))
            elif isinstance(action, pm.Ack):
                if reply_to.startswith("c:"):
                    self.send(reply_to, (name, action))
                self.send("meta", c.AckTxns(((txn_id, name),), self.now_ms))
            elif isinstance(action, pm.AskMeta):
                self.send("meta", ("ask", txn_id), reply_to=f"p:{name}")
            elif isinstance(action, pm.ProposeAbort):
                self.send("meta", c.DecideTxn(txn_id, cs.ABORT, self.txn_participants[txn_id],
                                              "", "", self.now_ms), reply_to=f"p:{name}")
            elif isinstance(action, pm.Violation):
                self.violation(action.message)

    # ---- delivery ---------------------------------------------------------------------------

    def deliver(self, message: Message) -> None:
        if message.to == "meta":
            self.deliver_to_meta(message)
        elif message.to.startswith("p:"):
            name = message.to[2:]
            if self.up[name]:
                self.participant_step(name, message.body, message.reply_to)
        elif message.to.startswith("c:"):
            who, answer = message.body
            self.coordinator_hears(message.to[2:], who, answer)

    def deliver_to_meta(self, message: Message) -> None:
        body = message.body
        if isinstance(body, tuple) and body[0] == "ask":
            self.send(message.reply_to, pm.Decision(body[1], self.meta_decision(body[1])))
            return
        result = self.meta_apply(body)
        if isinstance(body, c.DecideTxn):
            if message.reply_to.startswith("c:"):
                self.send(message.reply_to, ("meta", result))
            elif message.reply_to.startswith("p:"):
                self.send(message.reply_to, pm.Decision(body.txn_id, result["decision"]))

    # ---- the schedule -----------------------------------------------------------------------

    def fault_step(self) -> None:
        rng = self.rng
        self.now_ms += rng.randint(0, 3)
        for name in self.PARTICIPANTS:
            # A crashed participant restarts after ~20 steps (its durable state intact).
            self.up[name] = self.up[name] or rng.random() < 0.05
        roll = rng.random()
        if roll < 0.05 or not self.network and roll < 0.5:
            self.start_txn()
        elif roll < 0.09 and self.network:
            self.network.pop(rng.randrange(len(self.network)))              # a drop
        elif roll < 0.13 and self.network:
            self.network.append(self.network[rng.randrange(len(self.network))])  # a duplicate
        elif roll < 0.14 and self.coordinators:
            del self.coordinators[rng.choice(sorted(self.coordinators))]    # a router crash
        elif roll < 0.15:
            self.up[rng.choice(self.PARTICIPANTS)] = False                   # a node crash
        elif roll < 0.16 and self.coordinators:
            # An RPC deadline: rare next to deliveries, as a deadline is long next to a hop.
            self.coordinator_deadline(rng.choice(sorted(self.coordinators)))
        elif roll < 0.20:
            self.fire_a_timeout()
        elif self.network:
            # Delivery in any order: a reorder is the rule, not a fault.
            self.deliver(self.network.pop(rng.randrange(len(self.network))))

    def fire_a_timeout(self, name: str | None = None) -> bool:
        names = [name] if name else [p for p in self.PARTICIPANTS if self.up[p]]
        prepared = [(p, t) for p in names for t in self.participants[p].prepared()]
        if not prepared:
            return False
        p, txn_id = self.rng.choice(prepared)
        self.participant_step(p, pm.Timeout(txn_id))
        return True

    def settle(self, rounds_max: int = 100_000) -> None:
        """Heals everything and runs every timer until no message and no prepared txn is left
        (or rounds_max, which then reports stuck locks)."""
        self.up = {p: True for p in self.PARTICIPANTS}
        for _ in range(rounds_max):
            self.now_ms += 1
            if self.network:
                self.deliver(self.network.pop(0))
            elif self.coordinators:
                self.coordinator_deadline(sorted(self.coordinators)[0])
                if self.coordinators and not self.coordinators[
                        sorted(self.coordinators)[0]].waiting:
                    del self.coordinators[sorted(self.coordinators)[0]]
            elif not self.fire_a_timeout():
                return

    def check_final(self) -> None:
        for name, state in self.participants.items():
            for txn_id in state.prepared():
                self.violation(f"stuck lock: {name} still holds {txn_id} prepared")
        for txn_id, chosen in self.txn_participants.items():
            outcomes = {self.participants[p].txns.get(txn_id) for p in chosen} - {None}
            if pm.COMMITTED in outcomes and outcomes != {pm.COMMITTED}:
                self.violation(f"{txn_id} is not all-or-nothing: {sorted(outcomes)}")
            if pm.COMMITTED in outcomes and any(
                    self.participants[p].txns.get(txn_id) is None for p in chosen):
                self.violation(f"{txn_id} committed where some participant never saw it")

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
