"""Starts a Toxiproxy-compatible server as a child process for tests and the chaos harness.

A real `toxiproxy-server` is preferred when one is named by $TOXIPROXY_SERVER or found on PATH;
otherwise (or with prefer_external=False) this repository's `python -m chaos proxy` is used.
Both speak the same HTTP API, so callers only see `host`, `port` and `api_url`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from tributary import procs

_READY = re.compile(r"chaos proxy API listening on (\S+):(\d+)")
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_toxiproxy_server() -> str | None:
    """$TOXIPROXY_SERVER if set, else `toxiproxy-server` on PATH, else None."""
    return os.environ.get("TOXIPROXY_SERVER") or shutil.which("toxiproxy-server")


class ProxyServer:
    """A running Toxiproxy-API server process; use as a context manager or start()/stop().

    Output goes to `log_path` (a temporary file by default, removed after a clean exit).
    `extra_args` are appended to the command line of whichever server is started.
    """

    def __init__(self, *, seed: int | None = None, prefer_external: bool = True,
                 host: str = "127.0.0.1", log_path: str | None = None,
                 extra_args: list[str] | None = None):
        self.seed = seed
        self.extra_args = list(extra_args or [])
        self.host = host
        self.port: int | None = None
        self.external = find_toxiproxy_server() if prefer_external else None
        self.kind = "toxiproxy-server" if self.external else "chaos"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self._log = None
        self._owns_log = log_path is None

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _command(self) -> list[str]:
        seed = [] if self.seed is None else [str(self.seed)]
        if self.external:
            self.port = procs.free_port(self.host)
            return ([self.external, "-host", self.host, "-port", str(self.port)]
                    + (["-seed", *seed] if seed else []) + self.extra_args)
        return ([sys.executable, "-m", "chaos", "proxy", "--listen", f"{self.host}:0"]
                + (["--seed", *seed] if seed else []) + self.extra_args)

    def start(self, timeout_s: float = 20.0) -> "ProxyServer":
        if self.log_path is None:
            fd, self.log_path = tempfile.mkstemp(prefix="chaos-proxy-", suffix=".log")
            os.close(fd)
        self._log = open(self.log_path, "wb")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_REPO_ROOT, env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self.process = subprocess.Popen(self._command(), stdout=self._log,
                                        stderr=subprocess.STDOUT, env=env, cwd=_REPO_ROOT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.process.returncode}:\n"
                                   f"{self.output()}")
            if self.port is None:
                match = _READY.search(self.output())
                if match:
                    self.port = int(match.group(2))
            if self.port is not None and self._answers():
                return self
            time.sleep(0.05)
        output = self.output()
        self.stop()
        raise TimeoutError(f"{self.kind} did not answer within {timeout_s}s:\n{output}")

    def _answers(self) -> bool:
        try:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no $http_proxy
            with opener.open(f"{self.api_url}/version", timeout=1.0) as r:
                return r.status == 200
        except OSError:
            return False

    def output(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None
        # A temporary log is kept only when the server failed, for whoever debugs it.
        if self._owns_log and self.process is not None and self.process.returncode == 0:
            try:
                os.unlink(self.log_path)
            except OSError:
                pass

    def __enter__(self) -> "ProxyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
