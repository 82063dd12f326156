"""The runnable examples in docs/examples/ against the shared cluster, with the endpoints passed
through TRIBUTARY_REST / TRIBUTARY_GRPC as a user would."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
import warnings

import pytest

pytestmark = pytest.mark.integration

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLES = os.path.join(ROOT, "docs", "examples")
NODE_DIR = os.path.join(EXAMPLES, "node")


def run(cmd: list[str], cluster, cwd: str = ROOT, **env) -> subprocess.CompletedProcess:
    result = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, "TRIBUTARY_REST": cluster.rest,
             "TRIBUTARY_GRPC": cluster.grpc_target, **env})
    assert result.returncode == 0, (f"{' '.join(cmd)} exited {result.returncode}\n"
                                    f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def test_python_client_example(cluster):
    out = run([sys.executable, os.path.join(EXAMPLES, "python_client.py")], cluster).stdout
    for transport in ("rest", "grpc"):
        assert f"[{transport}] inserted: 3" in out
        assert f"[{transport}]   #1 a1 score=1.0000" in out
        assert f"[{transport}] filtered: ['a1']" in out
        assert f"[{transport}] a3 is gone: NotFound" in out
    assert out.rstrip().endswith("ok")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_example(cluster):
    name = f"curl-{uuid.uuid4().hex[:8]}"
    result = run(["bash", os.path.join(EXAMPLES, "curl.sh")], cluster, TRIBUTARY_DATASET=name)
    # Answers are JSON with or without spaces after the separators (search and insert answers
    # are written compactly by orjson), so the checks ignore that whitespace.
    out = re.sub(r'":\s+', '":', result.stdout)
    assert '"inserted_count":2' in out
    assert '"vector":{"id":"a1"' in out  # the GET of one vector
    assert '"deleted_count":1' in out
    assert result.stderr.rstrip().endswith("ok")


def test_curl_example_stops_on_an_error(cluster):
    """set -euo pipefail plus --fail-with-body: a failing call ends the script non-zero."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    bad = subprocess.run(["bash", os.path.join(EXAMPLES, "curl.sh")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "TRIBUTARY_REST": cluster.rest,
                              "TRIBUTARY_DATASET": "bad/name"})
    assert bad.returncode != 0
    assert "InvalidArgument" in bad.stdout


def test_node_client_example(cluster, summary_lines):
    """The Node.js client runs against the cluster. `make test` installs its packages (`npm ci`,
    the `node-example` target); only a machine without node skips it, and says so out loud."""
    if shutil.which("node") is None:
        message = ("the Node.js example was NOT tested: node is not installed (with node and npm "
                   "installed, `make test` runs `npm ci` in docs/examples/node and tests it)")
        summary_lines.append(f"WARNING: {message}")
        warnings.warn(message, stacklevel=1)
        pytest.skip(message)
    assert os.path.isdir(os.path.join(NODE_DIR, "node_modules")), (
        "docs/examples/node/node_modules is missing although node is installed: run "
        "`make node-example` (npm ci there; `make test` does it when npm is installed)")
    out = run(["node", "client.js"], cluster, cwd=NODE_DIR).stdout
    assert "inserted: 2" in out and "#1 a1 score=1.0000" in out
    assert "NOT_FOUND" in out and out.rstrip().endswith("ok")
