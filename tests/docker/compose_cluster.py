"""Helpers of the container suite: the compose project, the `docker` engine, and the
cluster it runs (tests/docker/conftest.py makes the fixture)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.cluster.yml"
PROJECT = "tributary-dockertest"
REST = "http://127.0.0.1:8000/api/v1"
READY_TIMEOUT_S = 600          # the first run builds the image

def engine_or_reason():
    """(docker client, None) when an engine answers a ping, else (None, why not)."""
    try:
        import docker
    except ImportError as exc:       # pragma: no cover - docker is pinned in requirements.lock
        return None, f"the docker package is not installed ({exc})"
    try:
        client = docker.from_env(timeout=5)
        client.ping()
        return client, None
    except Exception as exc:  # noqa: BLE001 - any failure means no usable engine
        return None, f"no Docker engine reachable ({type(exc).__name__}: {exc})"


def compose(env: dict[str, str], *args: str, timeout_s: float = READY_TIMEOUT_S):
    return subprocess.run(["docker", "compose", "-f", str(COMPOSE_FILE), "-p", PROJECT, *args],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
                          check=True)


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling; report the last one
            last = exc
        time.sleep(1.0)
    raise TimeoutError(f"{what} not reached within {timeout_s:.0f} s (last error: {last!r})")


class ComposeCluster:
    def __init__(self, client, env: dict[str, str]):
        self.client, self.env = client, env
        self.admin_key = env["TRIBUTARY_ADMIN_KEY"]

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=REST, timeout=60,
                            headers={"Authorization": f"Bearer {self.admin_key}"})

    def container(self, service: str):
        found = self.client.containers.list(all=True, filters={
            "label": [f"com.docker.compose.project={PROJECT}",
                      f"com.docker.compose.service={service}"]})
        assert found, f"no container for service {service}"
        return found[0]

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{REST}/health", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def admin(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """`tributary admin ...` from this checkout against the compose router."""
        result = subprocess.run([sys.executable, "-m", "tributary.cli", "admin", *args,
                                 "--url", "http://127.0.0.1:8000", "--api-key", self.admin_key],
                                capture_output=True, text=True, timeout=900)
        if check:
            assert result.returncode == 0, result.stderr
        return result
