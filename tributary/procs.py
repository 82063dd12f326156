"""Child processes and loopback ports for the local supervisors, the chaos harness, the
benchmarks and the integration tests: the one copy of each.

- `die_with_parent(sig)`: a `preexec_fn` body; the child gets `sig` when its parent dies
  (Linux PR_SET_PDEATHSIG, through libc's prctl, as the standard library has no wrapper).
- `new_session_dying_with_parent(sig)`: a `preexec_fn` that also puts the child in its own
  session, so its whole process group can be signalled; `group_alive(pgid)` tells whether
  anything of that group still runs.
- `port_free`, `free_port`, `free_port_block`, `cluster_port_plan`: ports that are free right
  now. They are picked BELOW the kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range,
  32768-60999 by default): a port in that range can be taken at any moment by the source port of
  an outgoing connection, for example while a chaos test keeps a proxy's listener disabled.

A free port is free only when it is probed; callers bind soon after and retry on a clash.
Several pickers that run side by side (the test suite's parallel workers) would clash more
often, since each probes before the other's processes bind: TRIBUTARY_PORT_SLOT=I/N gives
picker I of N ports from its own share of the range only (`port_slot`).
"""

from __future__ import annotations

import ctypes
import os
import random
import signal
import socket
import subprocess
from typing import Callable, Iterable

_PR_SET_PDEATHSIG = 1

# Where picked ports come from: above the well-known and most registered server ports, below
# the ephemeral range (kept below the kernel's actual lower bound where that is lower).
PORT_LOW = 10_000
PORT_HIGH = 32_000
_PROBES_MAX = 400
# TRIBUTARY_PORT_SLOT=I/N: port p belongs to slot (p // PORT_SLOT_WIDTH) % N, and a picker in
# slot I takes only ports of slot I. The width holds the largest block picked at once (a chaos
# run's, tributary/procs.py cluster_port_plan's 200).
PORT_SLOT_ENV = "TRIBUTARY_PORT_SLOT"
PORT_SLOT_WIDTH = 1000


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Asks the kernel to send `sig` to this process when the thread that forked it exits. For
    use in a `preexec_fn` (it runs in the child). A platform without prctl is left as it is."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig))
    except (OSError, AttributeError):
        pass


def new_session_dying_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A `preexec_fn`: the child leads its own session and process group (so `os.killpg` of its
    pid reaches it and its children, and nothing else) and gets `sig` when its parent dies."""
    def preexec() -> None:
        os.setsid()
        die_with_parent(sig)
    return preexec


def group_alive(pgid: int) -> bool:
    """True while process group `pgid` holds a process that is not a zombie (a zombie still
    counts for killpg, though it will never run again)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    out = subprocess.run(["ps", "-o", "stat=", "-g", str(pgid)], capture_output=True,
                         text=True).stdout.split()
    return any(not s.startswith("Z") for s in out)


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's range of source ports for outgoing connections (Linux's default when it
    cannot be read)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32_768, 60_999


def port_slot() -> tuple[int, int]:
    """(I, N) from TRIBUTARY_PORT_SLOT=I/N; (0, 1), the whole range, when it is unset. A value
    that is not two whole numbers with 0 <= I < N raises ValueError."""
    raw = os.environ.get(PORT_SLOT_ENV, "").strip()
    if not raw:
        return 0, 1
    index, sep, count = raw.partition("/")
    try:
        slot = int(index), int(count)
    except ValueError:
        slot = (-1, 0)
    if not sep or not 0 <= slot[0] < slot[1]:
        raise ValueError(f"{PORT_SLOT_ENV}={raw!r}: expected I/N with 0 <= I < N, e.g. 0/2")
    return slot


def _in_slot(ports: Iterable[int], slot: tuple[int, int]) -> bool:
    index, count = slot
    return all((p // PORT_SLOT_WIDTH) % count == index for p in ports)


def _port_ceiling() -> int:
    """The first port above the range ports are picked from."""
    return min(PORT_HIGH, ephemeral_port_range()[0])


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if a listener could bind `host:port` right now."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def free_port_block(offsets: Iterable[int], host: str = "127.0.0.1", step: int = 1,
                    rng: random.Random | None = None) -> int:
    """A base port B, a multiple of `step`, such that B + o is free for every o in `offsets`
    and every such port lies in [PORT_LOW, the ephemeral range) and in this process's port slot
    (`port_slot`). Raises RuntimeError when no free block is found in a few hundred tries."""
    offsets = sorted(set(offsets))
    if not offsets or offsets[0] < 0:
        raise ValueError("offsets must be a non-empty set of non-negative numbers")
    rng = rng or random.Random()
    low = -(-PORT_LOW // step) * step
    high = _port_ceiling() - offsets[-1]
    if high <= low:
        raise ValueError(f"a block spanning {offsets[-1] + 1} ports does not fit below "
                         f"{_port_ceiling()}")
    slot = port_slot()
    if offsets[-1] >= PORT_SLOT_WIDTH and slot[1] > 1:
        raise ValueError(f"a block spanning {offsets[-1] + 1} ports does not fit in a port slot "
                         f"({PORT_SLOT_WIDTH} ports)")
    for _ in range(_PROBES_MAX * slot[1]):
        base = rng.randrange(low, high, step)
        ports = [base + o for o in offsets]
        if _in_slot(ports, slot) and all(port_free(p, host) for p in ports):
            return base
    raise RuntimeError(f"no free block of {len(offsets)} ports found on {host}")


def free_port(host: str = "127.0.0.1", rng: random.Random | None = None) -> int:
    """One port that is free on `host` right now, below the ephemeral range."""
    return free_port_block([0], host, rng=rng)


def cluster_port_plan(meta: int, nodes: int, routers: int = 1, host: str = "127.0.0.1",
                      rng: random.Random | None = None) -> tuple[int, int, int]:
    """(http_port, grpc_port, internal_base) for `tributary up --internal-port-base`, every port
    of which is free: meta Raft at base+i, meta gRPC at base+10+i, nodes at base+100+i, router
    i's REST at base+150+i and gRPC at base+170+i."""
    if meta > 10 or nodes > 50 or routers > 20:
        raise ValueError("the port layout holds at most 10 meta members, 50 nodes, 20 routers")
    offsets = ([i for i in range(meta)] + [10 + i for i in range(meta)]
               + [20 + i for i in range(meta)] + [40 + i for i in range(nodes)]  # /metrics
               + [100 + i for i in range(nodes)] + [150 + i for i in range(routers)]
               + [170 + i for i in range(routers)])
    base = free_port_block(offsets, host, step=200, rng=rng)
    return base + 150, base + 170, base


__all__ = ["PORT_LOW", "PORT_HIGH", "PORT_SLOT_ENV", "PORT_SLOT_WIDTH", "port_slot",
           "die_with_parent", "new_session_dying_with_parent", "group_alive",
           "ephemeral_port_range", "port_free", "free_port", "free_port_block",
           "cluster_port_plan"]
