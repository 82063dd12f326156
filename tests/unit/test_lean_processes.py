"""Meta members and routers carry no shard engine: neither `tributary meta` nor `tributary
router` imports Deep Lake or hnswlib (only nodes do). Each case starts a fresh interpreter, runs
the real `tributary` entry point up to the sub-command's run() (replaced by a stub that reports
which heavy modules are loaded), and checks the answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_PROBE = """
import importlib, json, sys
module_name, argv = sys.argv[1], json.loads(sys.argv[2])
module = importlib.import_module(module_name)
def report(args):
    print(json.dumps({name: name in sys.modules for name in ("deeplake", "hnswlib",
                                                             "shard.replica")}))
module.run = report
from tributary import cli
cli.main(argv)
"""


def _loaded(module_name: str, argv: list[str]) -> dict[str, bool]:
    out = subprocess.run([sys.executable, "-c", _PROBE, module_name, json.dumps(argv)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module_name, argv", [
    ("consensus.member", ["meta", "--raft", "127.0.0.1:1", "--grpc", "127.0.0.1:2",
                          "--data-dir", "{tmp}", "--insecure-dev"]),
    ("router.server", ["router", "--meta", "127.0.0.1:2"]),
], ids=["meta", "router"])
def test_meta_and_router_processes_import_no_storage_engine(tmp_path, module_name, argv):
    loaded = _loaded(module_name, [a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert loaded == {"deeplake": False, "hnswlib": False, "shard.replica": False}


def test_each_sub_command_still_gets_its_own_flags():
    for command, flag in (("node", "--data-dir"), ("router", "--meta"), ("meta", "--raft"),
                          ("up", "--nodes"), ("chaos", "run")):
        out = subprocess.run([sys.executable, "-m", "tributary.cli", command, "--help"],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and flag in out.stdout, (command, out.stderr[-1000:])
