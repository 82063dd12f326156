"""Kubernetes scale-down drains first (issue 12): the node StatefulSet's preStop hook runs
`tributary admin nodes drain POD --wait` (bounded) only for a pod being scaled away (its ordinal
at or above the StatefulSet's replica count), within the pod's grace period, and may read only
that replica count. The hook's shell runs here with stand-ins for `python` (the Kubernetes API
answer) and `tributary` (records its argv, which the real CLI parser must accept)."""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
NODE_YAML = ROOT / "deploy" / "k8s" / "node.yaml"


def docs() -> list[dict]:
    return [d for d in yaml.safe_load_all(NODE_YAML.read_text()) if d]


def statefulset() -> dict:
    return next(d for d in docs() if d["kind"] == "StatefulSet")


def container() -> dict:
    return statefulset()["spec"]["template"]["spec"]["containers"][0]


def run_pre_stop(tmp_path: Path, pod: str, replicas: str) -> list[str] | None:
    """Runs the hook as the kubelet would; returns the argv `tributary` got, or None."""
    command = container()["lifecycle"]["preStop"]["exec"]["command"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "argv"
    for name, body in {"python": f"#!/bin/sh\ncat >/dev/null\necho {replicas}\n",
                       "tributary": f"#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done > {record}\n"
                       }.items():
        path = bin_dir / name
        path.write_text(body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    if record.exists():
        record.unlink()
    result = subprocess.run(command, env={"PATH": f"{bin_dir}:/usr/bin:/bin", "POD_NAME": pod,
                                          "POD_NAMESPACE": "tributary"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return record.read_text().splitlines() if record.exists() else None


def admin_parser() -> argparse.ArgumentParser:
    from tributary import admin_cli, cluster_cli

    parser = argparse.ArgumentParser(prog="tributary", exit_on_error=False)
    sub = parser.add_subparsers(dest="command", required=True)
    admin_sub = sub.add_parser("admin").add_subparsers(dest="admin_command", required=True)
    cluster_cli.add_parsers(admin_sub)
    admin_cli.add_parsers(admin_sub)
    return parser


def test_a_pod_scaled_away_drains_itself_with_a_bounded_wait(tmp_path):
    argv = run_pre_stop(tmp_path, "tributary-node-3", "3")
    assert argv is not None and argv[:4] == ["admin", "nodes", "drain", "tributary-node-3"]
    args = admin_parser().parse_args(argv)
    assert args.wait and args.func.__name__ == "drain"
    assert args.wait_timeout < statefulset()["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"]


@pytest.mark.parametrize("pod", ["tributary-node-0", "tributary-node-2"])
def test_a_pod_that_restarts_or_moves_keeps_its_copies(tmp_path, pod):
    assert run_pre_stop(tmp_path, pod, "3") is None


def test_no_drain_when_the_replica_count_cannot_be_read(tmp_path):
    assert run_pre_stop(tmp_path, "tributary-node-5", "") is None


def test_the_hook_reaches_a_router_with_the_admin_key_and_reads_only_its_statefulset():
    env = {e["name"]: e for e in container()["env"]}
    assert env["TRIBUTARY_URL"]["value"].startswith("http://tributary-router.")
    assert env["TRIBUTARY_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "tributary-router-auth", "key": "admin-key"}
    by_kind = {d["kind"]: d for d in docs()}
    assert statefulset()["spec"]["template"]["spec"]["serviceAccountName"] == \
        by_kind["ServiceAccount"]["metadata"]["name"]
    assert by_kind["Role"]["rules"] == [{"apiGroups": ["apps"], "resources": ["statefulsets"],
                                         "resourceNames": ["tributary-node"], "verbs": ["get"]}]
    assert by_kind["RoleBinding"]["roleRef"]["name"] == by_kind["Role"]["metadata"]["name"]
