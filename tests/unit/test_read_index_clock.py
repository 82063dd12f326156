"""A linearizable meta read (MetaStateMachine.read_index) counts a follower's answer only if it
came after the read started, both on pysyncobj's clock. pysyncobj stamps answers with
CLOCK_MONOTONIC_RAW, which drifts away from time.monotonic's CLOCK_MONOTONIC (0.3 s after a few
hours on the dev box). Here a real three-member group in one process runs on a pysyncobj clock
offset by 2 s either way, as on a box whose clocks have drifted that far:
- behind: a read on a healthy group still confirms (measured on time.monotonic, no answer ever
  came "after" the start, so every read ran into its deadline);
- ahead: with both followers gone, a read must not confirm (measured on time.monotonic, the
  answers from just before the call counted as confirmation: a read a deposed leader could
  serve stale)."""

from __future__ import annotations

import time

import pysyncobj.syncobj
import pytest

from consensus.member import MetaStateMachine
from tributary import procs
from tributary.errors import NotLeader, Unavailable

PASSWORD = "a-raft-password-0123456789"


@pytest.fixture
def group_with_clock_offset(tmp_path, monkeypatch):
    """Makes a started three-member group whose pysyncobj clock is time.monotonic + offset."""
    machines: list[MetaStateMachine] = []

    def make(offset_s: float) -> tuple[MetaStateMachine, list[MetaStateMachine]]:
        monkeypatch.setattr(pysyncobj.syncobj, "monotonicTime",
                            lambda: time.monotonic() + offset_s)
        addresses = [f"127.0.0.1:{procs.free_port()}" for _ in range(3)]
        for i, address in enumerate(addresses):
            machines.append(MetaStateMachine(address, [a for a in addresses if a != address],
                                             str(tmp_path / f"m{i}"), PASSWORD))
        deadline = time.monotonic() + 20
        while not any(m._isLeader() for m in machines):
            assert time.monotonic() < deadline, "the group elected no leader in 20 s"
            time.sleep(0.02)
        leader = next(m for m in machines if m._isLeader())
        # Its term's no-op applied, and every follower heard from.
        leader.read_index(10)
        return leader, [m for m in machines if m is not leader]

    yield make
    for machine in machines:
        machine.destroy()


def test_a_read_confirms_on_a_healthy_group_when_the_raft_clock_lags(group_with_clock_offset):
    leader, _ = group_with_clock_offset(-2.0)
    for _ in range(5):
        leader.read_index(1.0)      # each raises Unavailable if it does not confirm in 1 s


def test_a_read_does_not_confirm_without_a_quorum_when_the_raft_clock_leads(
        group_with_clock_offset):
    leader, followers = group_with_clock_offset(2.0)
    for follower in followers:
        follower.destroy_synchronous()      # gone: it answers nothing after this
    with pytest.raises((Unavailable, NotLeader)):
        leader.read_index(1.0)
