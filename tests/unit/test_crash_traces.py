"""A server process that dies of a fatal signal leaves its Python stacks on stderr
(tributary/cli.py enables faulthandler for meta, node and router): the first thing an operator
needs after a node exits with -11, and what `tributary up` and a pod's log keep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _wait_for_line(path: str, needle: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with open(path, errors="replace") as f:
            if needle in f.read():
                return True
        time.sleep(0.05)
    return False


def test_a_node_killed_by_sigsegv_leaves_its_python_stacks_on_stderr(tmp_path):
    out = tmp_path / "node.out"
    with open(out, "wb") as sink:
        # The meta address is a closed port: the node keeps retrying its registration, alive.
        node = subprocess.Popen(
            [sys.executable, "-m", "tributary.cli", "node", "--meta", "127.0.0.1:9",
             "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0",
             "--insecure-dev"], cwd=REPO, stdout=sink, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": REPO})
    try:
        # The insecure-dev warning comes after argument parsing, so faulthandler is on by then.
        assert _wait_for_line(str(out), "insecure-dev", 60), out.read_text()
        assert node.poll() is None
        node.send_signal(signal.SIGSEGV)
        assert node.wait(timeout=30) == -signal.SIGSEGV
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(timeout=10)
    text = out.read_text(errors="replace")
    assert "Fatal Python error: Segmentation fault" in text
    assert 'File "' in text and "most recent call first" in text
