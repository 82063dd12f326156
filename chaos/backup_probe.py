"""Backups under chaos (the `backup` scenario): take a backup of the run's cluster while the
workloads and the faults run, restore it into a fresh cluster once the run is over, and read
back every key the workloads may have written, for `checkers.backup_prefix_violations`.

Everything goes through the operator's tools, as processes: `tributary admin backup create`
against the run's router (through its client proxy, so faults may hit it), `tributary up` for
the fresh cluster (one meta member, two nodes, on free loopback ports) and `tributary admin
backup restore`. A backup that fails (a fault broke it) is retried into a new directory until
one succeeds or `attempts_s` pass.

The cut's instant, in the history's clock: the cut was taken after the backup command started
and before it ended, and no earlier than the router's clock says (`cut.at_ms` in the manifest,
converted from the wall clock to the monotonic one on this same machine). A write that
completed before the earliest of those is before every dataset's cut; one invoked after the
command ended is after it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Callable

from chaos.history import HistoryRecorder
from chaos.workload import final_reads

_READY = '"status": "ready"'


def _cli(*args: str, timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tributary.cli", *args], capture_output=True,
                          text=True, timeout=timeout_s)


def _port_block(offsets: list[int], rng: random.Random) -> int:
    """A base port whose base+offset ports are all free on loopback."""
    for _ in range(200):
        base = rng.randrange(20_000, 30_000, 200)
        sockets = []
        try:
            for offset in offsets:
                s = socket.socket()
                s.bind(("127.0.0.1", base + offset))
                sockets.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free block of loopback ports for the restore cluster")


class BackupProbe:
    """One backup during the run (a thread), then a restore and reads after it."""

    def __init__(self, rest_url: str, directory: str, at_s: float, attempts_s: float,
                 log: Callable[[str], None], clock: Callable[[], int] = time.monotonic_ns):
        self.rest_url = rest_url.removesuffix("/api/v1")
        self.directory = directory
        self.at_s = at_s
        self.attempts_s = attempts_s
        self.log = log
        self.clock = clock
        self.result: dict = {"error": "no backup was attempted"}
        self._thread: threading.Thread | None = None

    def start(self, t0: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(t0,), daemon=True,
                                        name="backup-probe")
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self, t0: float) -> None:
        delay = t0 + self.at_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        deadline = time.monotonic() + self.attempts_s
        attempt = 0
        errors = []
        while time.monotonic() < deadline:
            attempt += 1
            target = os.path.join(self.directory, f"attempt-{attempt}")
            started_ns = self.clock()
            offset_ns = time.time_ns() - time.monotonic_ns()
            try:
                proc = _cli("admin", "backup", "create", "--to", target, "--wait", "--json",
                            "--url", self.rest_url, "--timeout", "40",
                            timeout_s=max(300.0, deadline - time.monotonic() + 30))
            except subprocess.TimeoutExpired:
                errors.append(f"attempt {attempt}: timed out")
                continue
            ended_ns = self.clock()
            if proc.returncode != 0:
                errors.append(f"attempt {attempt}: {proc.stderr.strip()[-300:]}")
                self.log(f"backup attempt {attempt} failed: {proc.stderr.strip()[-200:]}")
                time.sleep(1.0)
                continue
            with open(os.path.join(target, "manifest.json"), encoding="utf-8") as handle:
                manifest = json.load(handle)
            cuts = [d["cut"] for d in manifest["datasets"]]
            cut_from = max(started_ns, min(c["at_ms"] * 1_000_000 - offset_ns for c in cuts))
            self.result = {"error": None, "directory": target, "attempts": attempt,
                           "failed_attempts": errors, "cut_from_ns": cut_from,
                           "cut_until_ns": ended_ns,
                           "fence_ms": [c["fence_ms"] for c in cuts],
                           "seconds": round((ended_ns - started_ns) / 1e9, 2),
                           "bytes": manifest["total_bytes"],
                           "vectors": sum(c["vector_count"] for c in cuts)}
            self.log(f"backup taken (attempt {attempt}) in {self.result['seconds']} s: "
                     f"{self.result['vectors']} vectors, {self.result['bytes']} bytes, cut "
                     f"fences {self.result['fence_ms']} ms")
            return
        self.result = {"error": "no backup succeeded: " + "; ".join(errors[-3:])}

    def restore_and_read(self, work_dir: str, keys: list[tuple[str, str]],
                         timeout_s: float = 300.0) -> dict:
        """Restores the backup into a fresh cluster and reads `keys` there; returns the result
        with `restored` (key -> value or None) and `unread` added, or with `error`."""
        if self.result.get("error"):
            return self.result
        rng = random.Random(os.getpid())
        base = _port_block([0, 10, 20, 40, 41, 100, 101, 150, 170], rng)
        data_dir = os.path.join(work_dir, "restore-cluster")
        os.makedirs(data_dir, exist_ok=True)
        output = os.path.join(data_dir, "up.out")
        with open(output, "ab") as out:
            up = subprocess.Popen(
                [sys.executable, "-m", "tributary.cli", "up", "--data-dir", data_dir,
                 "--http-port", str(base + 150), "--grpc-port", str(base + 170),
                 "--internal-port-base", str(base), "--meta", "1", "--nodes", "2",
                 "--routers", "1"], stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        url = f"http://127.0.0.1:{base + 150}"
        try:
            deadline = time.monotonic() + timeout_s
            while _READY not in open(output, errors="replace").read():
                if up.poll() is not None or time.monotonic() > deadline:
                    return {**self.result, "error": "the restore cluster did not start"}
                time.sleep(0.2)
            started = time.monotonic()
            proc = _cli("admin", "backup", "restore", "--from", self.result["directory"],
                        "--wait", "--json", "--url", url, timeout_s=timeout_s)
            if proc.returncode != 0:
                return {**self.result, "error": f"restore failed: {proc.stderr.strip()}"}
            restored_s = round(time.monotonic() - started, 2)
            restored, unread = final_reads(url + "/api/v1", HistoryRecorder(), keys)
            self.log(f"backup restored into a fresh cluster in {restored_s} s; read "
                     f"{len(restored)} key(s), {len(unread)} unread")
            return {**self.result, "restored": restored, "unread": unread,
                    "restore_s": restored_s}
        finally:
            try:
                os.killpg(up.pid, signal.SIGTERM)
                up.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(up.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
