"""Each server process carries only what it uses (issue 18, "Lean processes").

- A meta member imports neither the shard engine (Deep Lake, hnswlib) nor numpy nor the REST
  stack (aiohttp); a router imports no shard engine; a node imports Deep Lake only when it opens
  its first shard (an empty node does without its ~45 MB).
- Meta members and routers load third-party packages only from a short list, so a heavy
  dependency that creeps into their start-up fails here instead of showing up as memory later.

Each case starts a fresh interpreter, runs the real `tributary` entry point up to the
sub-command's run() (replaced by a stub that reports what is loaded), and checks the answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_PROBE = """
import importlib, json, sys, sysconfig
module_name, argv = sys.argv[1], json.loads(sys.argv[2])
module = importlib.import_module(module_name)
def report(args):
    site = sysconfig.get_paths()["purelib"]
    third_party = sorted({name.split(".")[0] for name, m in list(sys.modules.items())
                          if (getattr(m, "__file__", None) or "").startswith(site)})
    print(json.dumps({"modules": sorted(sys.modules), "third_party": third_party}))
module.run = report
from tributary import cli
cli.main(argv)
"""

_ARGV = {
    "meta": ("consensus.member", ["meta", "--raft", "127.0.0.1:1", "--grpc", "127.0.0.1:2",
                                  "--data-dir", "{tmp}", "--insecure-dev"]),
    "router": ("router.server", ["router", "--meta", "127.0.0.1:2"]),
    "node": ("node.server", ["node", "--meta", "127.0.0.1:2", "--data-dir", "{tmp}",
                             "--listen", "127.0.0.1:3"]),
}

# Modules a process of each kind must not have loaded when its server starts.
_FORBIDDEN = {
    "meta": ("deeplake", "hnswlib", "numpy", "shard.replica", "aiohttp", "uhashring"),
    "router": ("deeplake", "hnswlib", "shard.replica"),
    "node": ("deeplake",),
}

# Third-party packages (top-level names under site-packages) each kind may load at start-up.
# Adding one here is a decision about that process's memory: measure with bench.cluster_rss.
_ALLOWED_THIRD_PARTY = {
    "meta": {"grpc", "grpc_health", "grpc_reflection", "grpc_tools", "google", "pysyncobj",
             "cryptography", "_cffi_backend", "prometheus_client", "opentelemetry",
             "typing_extensions"},
    "router": {"grpc", "grpc_health", "grpc_reflection", "grpc_tools", "google",
               "prometheus_client", "opentelemetry", "typing_extensions", "aiohttp",
               "aiohappyeyeballs", "aiosignal", "attr", "frozenlist", "multidict", "propcache",
               "yarl", "idna", "numpy", "orjson", "uhashring"},
}
# Packaging shims that any interpreter of this venv may load (setuptools, the editable install).
_PACKAGING = {"_distutils_hack"}


def _loaded(kind: str, tmp_path) -> dict:
    module_name, argv = _ARGV[kind]
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    out = subprocess.run([sys.executable, "-c", _PROBE, module_name, json.dumps(argv)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["meta", "router", "node"])
def test_server_process_starts_without_the_modules_it_does_not_need(tmp_path, kind):
    loaded = set(_loaded(kind, tmp_path)["modules"])
    assert loaded & set(_FORBIDDEN[kind]) == set()


@pytest.mark.parametrize("kind", ["meta", "router"])
def test_meta_and_router_load_only_their_listed_third_party_packages(tmp_path, kind):
    third_party = {name for name in _loaded(kind, tmp_path)["third_party"]
                   if name not in _PACKAGING and not name.startswith("__editable__")}
    assert third_party - _ALLOWED_THIRD_PARTY[kind] == set()


def test_node_loads_deep_lake_when_it_opens_its_first_shard(tmp_path):
    script = """
import sys
import numpy as np
from shard.records import VectorRecord
from shard.replica import ShardReplica
before = "deeplake" in sys.modules
replica = ShardReplica(sys.argv[1], 4, "cosine")
replica.write([VectorRecord(id="a", values=np.ones(4, dtype=np.float32))], [])
replica.close()
reopened = ShardReplica(sys.argv[1], 4, "cosine")
print(before, "deeplake" in sys.modules, reopened.count())
reopened.close()
"""
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "shard")], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "True", "1"]


def test_lazy_module_imports_once_for_threads_racing_on_first_use():
    from tributary import lazy_import
    sys.modules.pop("json.tool", None)   # a stdlib module nothing here needs loaded
    stand_in = lazy_import.module("json.tool")
    assert not stand_in.loaded
    seen = []
    barrier = threading.Barrier(8)

    def read():
        barrier.wait()
        seen.append(stand_in.main)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert stand_in.loaded and len(seen) == 8
    assert all(f is sys.modules["json.tool"].main for f in seen)


def test_each_sub_command_still_gets_its_own_flags():
    for command, flag in (("node", "--data-dir"), ("router", "--meta"), ("meta", "--raft"),
                          ("up", "--nodes"), ("chaos", "run")):
        out = subprocess.run([sys.executable, "-m", "tributary.cli", command, "--help"],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and flag in out.stdout, (command, out.stderr[-1000:])


def _up_plan(tmp_path, monkeypatch, arena_env: str | None):
    import argparse

    from tributary import up
    if arena_env is None:
        monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    else:
        monkeypatch.setenv("MALLOC_ARENA_MAX", arena_env)
    parser = argparse.ArgumentParser()
    up.add_arguments(parser)
    return up.plan(parser.parse_args(["--data-dir", str(tmp_path), "--insecure-dev",
                                      "--nodes", "2"]))


def test_up_gives_every_child_few_malloc_arenas(tmp_path, monkeypatch):
    from tributary import limits
    children = _up_plan(tmp_path, monkeypatch, None)
    assert len(children) == 6
    assert {c.env.get("MALLOC_ARENA_MAX") for c in children} == \
        {str(limits.process_malloc_arenas_max)}


def test_up_keeps_a_malloc_arena_setting_from_the_environment(tmp_path, monkeypatch):
    children = _up_plan(tmp_path, monkeypatch, "4")
    assert {c.env.get("MALLOC_ARENA_MAX") for c in children} == {"4"}
