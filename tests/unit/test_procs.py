"""Specification of tributary/procs.py: children that die with their parent, and free ports
picked below the kernel's ephemeral range (where no outgoing connection can take them)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest

from chaos.harness import free_base
from chaos.topology import Topology, ports_needed
from tributary import procs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie nobody reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _wait(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


_PARENT = """
import subprocess, sys, time
from tributary import procs
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                         preexec_fn={preexec})
print(child.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("preexec", ["procs.die_with_parent",
                                     "procs.new_session_dying_with_parent()"])
def test_a_child_dies_when_its_parent_is_killed(preexec):
    parent = subprocess.Popen([sys.executable, "-c", _PARENT.format(preexec=preexec)],
                              stdout=subprocess.PIPE, text=True, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": REPO})
    child_pid = int(parent.stdout.readline())
    try:
        assert not _gone(child_pid)
        parent.kill()                      # SIGKILL: the parent gets no chance to clean up
        parent.wait(timeout=10)
        assert _wait(lambda: _gone(child_pid)), "the child outlived its parent"
    finally:
        if not _gone(child_pid):
            os.kill(child_pid, signal.SIGKILL)
        parent.stdout.close()


def test_a_new_session_child_leads_its_own_process_group():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             preexec_fn=procs.new_session_dying_with_parent())
    try:
        assert os.getpgid(child.pid) == child.pid != os.getpgid(0)
    finally:
        child.kill()
        child.wait(timeout=10)


def test_port_free_sees_a_listener_and_its_departure():
    port = procs.free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert not procs.port_free(port)
    assert procs.port_free(port)


def test_picked_ports_lie_below_the_ephemeral_range():
    ephemeral_low = procs.ephemeral_port_range()[0]
    rng = random.Random(7)
    for _ in range(100):
        port = procs.free_port(rng=rng)
        assert procs.PORT_LOW <= port < ephemeral_low
        http, grpc_port, base = procs.cluster_port_plan(3, 3, 2, rng=rng)
        assert procs.PORT_LOW <= base and grpc_port + 1 < ephemeral_low
        assert base % 200 == 0


def test_the_chaos_harness_port_block_lies_below_the_ephemeral_range():
    """An outgoing connection's source port comes from the ephemeral range; a proxy listening
    there loses its port to one while the chaos run keeps it disabled."""
    ephemeral_low = procs.ephemeral_port_range()[0]
    topo = Topology(meta=5, nodes=3)
    need = ports_needed(topo)
    rng = random.Random(11)
    for _ in range(100):
        base = free_base(topo, rng)
        assert 10_000 <= base and base + need <= ephemeral_low


def test_cluster_port_plan_follows_the_internal_port_layout_and_every_port_is_free():
    http, grpc_port, base = procs.cluster_port_plan(3, 4, 2)
    assert (http, grpc_port) == (base + 150, base + 170)
    layout = [base + i for i in range(3)] + [base + 10 + i for i in range(3)] + \
        [base + 100 + i for i in range(4)] + [http, http + 1, grpc_port, grpc_port + 1]
    assert all(procs.port_free(p) for p in layout)


class _Scripted(random.Random):
    """An rng whose randrange answers a script, to steer the probe onto a taken port first."""

    def __init__(self, answers):
        super().__init__(0)
        self.answers = list(answers)

    def randrange(self, *args, **kwargs):
        return self.answers.pop(0)


def test_a_block_with_one_taken_port_is_passed_over():
    base = procs.free_port_block(range(5), step=10)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", base + 3))
        listener.listen()
        other = procs.free_port_block(range(5), step=10, rng=_Scripted([base, base + 1000,
                                                                         base + 2000]))
    assert other in (base + 1000, base + 2000)


def test_a_block_too_large_for_the_range_is_refused():
    with pytest.raises(ValueError):
        procs.free_port_block(range(40_000))
    with pytest.raises(ValueError):
        procs.cluster_port_plan(meta=11, nodes=1)


def test_the_port_slot_comes_from_the_environment_and_a_bad_one_is_refused(monkeypatch):
    monkeypatch.delenv(procs.PORT_SLOT_ENV, raising=False)
    assert procs.port_slot() == (0, 1)
    monkeypatch.setenv(procs.PORT_SLOT_ENV, "1/2")
    assert procs.port_slot() == (1, 2)
    for bad in ("2/2", "-1/2", "1", "a/b", "1/0", "0/2/3"):
        monkeypatch.setenv(procs.PORT_SLOT_ENV, bad)
        with pytest.raises(ValueError, match=procs.PORT_SLOT_ENV):
            procs.port_slot()


@pytest.mark.parametrize("slot", [(0, 2), (1, 2), (2, 3)])
def test_pickers_in_different_slots_never_pick_the_same_port(monkeypatch, slot):
    """Side-by-side pickers (the suite's parallel workers) each keep to their own share of the
    range, so one never takes a block the other probed but has not bound yet."""
    index, count = slot
    monkeypatch.setenv(procs.PORT_SLOT_ENV, f"{index}/{count}")
    rng = random.Random(index)
    for _ in range(50):
        ports = [procs.free_port(rng=rng)]
        http, grpc_port, base = procs.cluster_port_plan(3, 3, 2, rng=rng)
        ports += [base, base + 105, http + 1, grpc_port + 1]
        chaos = free_base(Topology(meta=5, nodes=3), rng)
        ports += [chaos, chaos + ports_needed(Topology(meta=5, nodes=3)) - 1]
        assert {(p // procs.PORT_SLOT_WIDTH) % count for p in ports} == {index}
