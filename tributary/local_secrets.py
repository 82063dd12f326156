"""The secrets of a local cluster, kept in its data dir: the cluster secret (internal gRPC proofs)
and the meta group's Raft password.

`tributary up` (and the chaos harness, which starts the same processes itself) creates both on
first start, at random, in `<data-dir>/secrets/` (directory 0700, files 0600), and hands the
children their paths, never the values, so they do not show in the process list. A later start
on the same data dir reuses them, so the cluster's members keep agreeing.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass

SECRETS_DIR = "secrets"
CLUSTER_SECRET = "cluster-secret"
RAFT_PASSWORD = "raft-password"
_SECRET_BYTES = 32


@dataclass(frozen=True)
class LocalSecrets:
    cluster_secret_file: str
    raft_password_file: str

    def child_args(self, kind: str) -> list[str]:
        """The flags a child of `kind` (meta, node, router) needs."""
        args = ["--cluster-secret-file", self.cluster_secret_file]
        if kind == "meta":
            args += ["--password-file", self.raft_password_file]
        return args


def _ensure_file(path: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            raise SystemExit(f"{path} is readable by others (mode {mode:o}); "
                             f"fix it with `chmod 600 {path}`") from None
        with open(path, encoding="utf-8") as handle:
            if len(handle.read().strip()) < 16:
                raise SystemExit(f"{path} holds a secret shorter than 16 characters; delete it "
                                 "to have a new one made (every member must then restart)")
        return
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_hex(_SECRET_BYTES) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def ensure(data_dir: str) -> LocalSecrets:
    """The data dir's secrets, created on first use. Raises SystemExit with a clear message
    when they exist with loose permissions."""
    directory = os.path.join(os.path.abspath(data_dir), SECRETS_DIR)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    found = LocalSecrets(os.path.join(directory, CLUSTER_SECRET),
                         os.path.join(directory, RAFT_PASSWORD))
    _ensure_file(found.cluster_secret_file)
    _ensure_file(found.raft_password_file)
    return found


def existing(data_dir: str) -> LocalSecrets | None:
    """The data dir's secrets when they exist (for tools that talk to a running local cluster)."""
    directory = os.path.join(os.path.abspath(data_dir), SECRETS_DIR)
    found = LocalSecrets(os.path.join(directory, CLUSTER_SECRET),
                         os.path.join(directory, RAFT_PASSWORD))
    return found if os.path.exists(found.cluster_secret_file) else None
