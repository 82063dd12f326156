"""Secure by default (DESIGN.md promise 8): the default `tributary up` creates a Raft password and
a cluster secret, nothing runs code from the Raft port, and every internal call without a valid
per-message proof is refused with UNAUTHENTICATED before any handler runs.

The pickle probe is the attack itself: a zlib-compressed pickle whose __reduce__ creates a file,
framed as pysyncobj frames its messages, sent to a meta member's Raft port. Against an
--insecure-dev member it does run (the test that shows the probe is real); against the default
cluster, and encrypted with a wrong password, it creates nothing and the member keeps serving."""

from __future__ import annotations

import json
import os
import pickle
import socket
import stat
import struct
import subprocess
import sys
import time
import zlib

import grpc
import httpx
import pytest

from cluster import Cluster, free_port_plan, wait_for
from consensus import commands
from proto import meta_pb2, node_pb2
from tributary import cluster_auth, local_secrets
from tributary.cluster_auth import ClusterToken

pytestmark = pytest.mark.integration

SERVICES = {"meta": meta_pb2.DESCRIPTOR.services_by_name["Meta"],
            "node": node_pb2.DESCRIPTOR.services_by_name["ShardNode"]}


class _Touch:
    """Unpickling this creates `path`: what an attacker's payload would do, harmlessly."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def pickle_probe(address: str, marker: str, password: str | None = None) -> None:
    """Sends the payload to a Raft port as pysyncobj frames messages (4-byte length, then the
    zlib-compressed pickle, Fernet-encrypted when `password` is given), twice, so that it is
    both the first message of a connection and one after it."""
    payload = zlib.compress(pickle.dumps(_Touch(marker)), 3)
    if password is not None:
        from pysyncobj.encryptor import getEncryptor
        payload = getEncryptor(password).encrypt_at_time(payload, int(time.monotonic()))
    frame = struct.pack("i", len(payload)) + payload
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(frame + frame)
        sock.settimeout(2)
        try:
            sock.recv(1024)   # the member closes the connection, or sends nothing
        except OSError:
            pass


def raft_address(c: Cluster, i: int) -> str:
    return f"127.0.0.1:{c.internal_base + i}"


def code_of(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def raw_call(channel, service, method_name: str, data: bytes) -> grpc.StatusCode:
    """Sends `data` as the request bytes of a unary method, bypassing any serializer."""
    call = channel.unary_unary(f"/{service.full_name}/{method_name}",
                               request_serializer=None, response_deserializer=None)
    return code_of(lambda: call(data, timeout=10))


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("secure-default"), meta=3, nodes=1,
                env={cluster_auth.ENV_SECRET: "", "TRIBUTARY_META_PASSWORD": ""}).start()
    yield c
    c.stop()


def test_default_up_turns_internal_auth_on_with_secrets_only_its_user_can_read(default):
    ready = next(json.loads(line) for line in default.output().splitlines()
                 if line.startswith('{"status": "ready"'))
    assert ready["internal_auth"] == "on" and ready["insecure_dev"] is False
    found = local_secrets.existing(default.data_dir)
    for path in (found.cluster_secret_file, found.raft_password_file):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert len(open(path).read().strip()) >= 32
    assert stat.S_IMODE(os.stat(os.path.dirname(found.cluster_secret_file)).st_mode) == 0o700
    # The children get paths, not values: no secret in any command line.
    secret = open(found.cluster_secret_file).read().strip()
    password = open(found.raft_password_file).read().strip()
    for pid in default.pids():
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().decode(errors="replace")
        assert secret not in cmdline and password not in cmdline


def test_the_cluster_works_through_the_router_with_internal_auth_on(default):
    with httpx.Client(base_url=default.rest, timeout=30) as client:
        assert client.post("/datasets", json={"name": "docs", "dimensions": 3}).status_code == 201
        r = client.post("/datasets/docs/vectors", json={"vectors": [
            {"id": "a", "values": [1, 0, 0]}, {"id": "b", "values": [0, 1, 0]}]})
        assert r.status_code == 201, r.text
        r = client.post("/datasets/docs/search", json={"query_vector": [1, 0, 0],
                                                       "options": {"top_k": 1}})
        assert r.status_code == 200, r.text
        assert [hit["vector"]["id"] for hit in r.json()["results"]] == ["a"]


@pytest.mark.parametrize("password", [None, "a-wrong-password-" + "9" * 20],
                         ids=["plain", "wrong-password"])
def test_the_pickle_probe_runs_nothing_and_every_member_keeps_serving(default, tmp_path,
                                                                      password):
    markers = [str(tmp_path / f"pwned-{i}") for i in range(default.meta)]
    for i, marker in enumerate(markers):
        pickle_probe(raft_address(default, i), marker, password)
    # The member would unpickle at once; give it the time a catalog write takes, twice over.
    with httpx.Client(base_url=default.rest, timeout=30) as client:
        name = f"after-probe-{'plain' if password is None else 'wrong'}"
        assert client.post("/datasets", json={"name": name, "dimensions": 3}
                           ).status_code == 201
        wait_for(lambda: client.get("/health").status_code == 200, 30, what="healthy")
    def knows_its_leader(i: int) -> bool:
        with grpc.insecure_channel(default.meta_grpc(i)) as channel:
            status = default.meta_stub(channel).Status(meta_pb2.MetaStatusRequest(), timeout=5)
        return status.has_leader

    for i in range(default.meta):
        # A follower whose peer link the probe's dropped connection reset reconnects within a
        # heartbeat or two; one that unpickled the probe would be dead or leaderless for good.
        wait_for(lambda: knows_its_leader(i), 10, 0.2, f"meta-{i} serving with a leader")
    assert not any(os.path.exists(m) for m in markers)


def test_every_internal_method_refuses_a_message_without_a_valid_proof(default):
    """From the service descriptors, so a new internal RPC is covered without a change here."""
    wrong = ClusterToken.from_secret("another-secret-" + "8" * 32)
    addresses = {"meta": default.meta_grpc(0), "node": default.node_address(0)}
    refused, total = 0, 0
    for kind, service in SERVICES.items():
        with grpc.insecure_channel(addresses[kind]) as channel:
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                for data in (b"", b"\x0a\x03abc", wrong.sign(path, b""),
                             default.token().sign(path.replace(method.name, "Other"), b"")):
                    total += 1
                    code = raw_call(channel, service, method.name, data)
                    assert code == grpc.StatusCode.UNAUTHENTICATED, (path, data, code)
                    refused += 1
    assert refused == total == 4 * sum(len(s.methods) for s in SERVICES.values())


def test_a_replayed_internal_message_is_refused(default):
    service = SERVICES["node"]
    signed = default.token().sign(f"/{service.full_name}/Status",
                                  node_pb2.NodeStatusRequest().SerializeToString())
    with grpc.insecure_channel(default.node_address(0)) as channel:
        assert raw_call(channel, service, "Status", signed) == grpc.StatusCode.OK
        assert raw_call(channel, service, "Status", signed) == grpc.StatusCode.UNAUTHENTICATED


def test_a_forged_proposal_changes_nothing(default):
    forged = commands.encode(commands.RegisterNode("intruder", "10.0.0.66:7000", 1))
    request = meta_pb2.ProposeRequest(command_json=forged).SerializeToString()
    for i in range(default.meta):
        with grpc.insecure_channel(default.meta_grpc(i)) as channel:
            assert raw_call(channel, SERVICES["meta"], "Propose", request) == \
                grpc.StatusCode.UNAUTHENTICATED

    def leader_state():
        # Only the leader answers GetState; ask every member with the cluster's proof.
        for i in range(default.meta):
            with grpc.insecure_channel(default.meta_grpc(i)) as channel:
                try:
                    return json.loads(default.meta_stub(channel).GetState(
                        meta_pb2.GetStateRequest(linearizable=True), timeout=10).state_json)
                except grpc.RpcError:
                    continue
        return None
    state = wait_for(leader_state, 30, 0.5, "the leader's state")
    assert "intruder" not in state["nodes"] and "node-0" in state["nodes"]


def test_a_restart_reuses_the_data_dirs_secrets(tmp_path):
    c = Cluster(tmp_path, meta=1, nodes=1).start()
    try:
        first = open(local_secrets.existing(c.data_dir).cluster_secret_file).read()
        c.stop()
        c.start()
        assert open(local_secrets.existing(c.data_dir).cluster_secret_file).read() == first
        assert c.healthy() or wait_for(c.healthy, 30, what="healthy after restart")
    finally:
        c.stop()


def _run_cli(args: list[str], env_drop=(cluster_auth.ENV_SECRET, cluster_auth.ENV_SECRET_FILE,
                                       "TRIBUTARY_META_PASSWORD", "TRIBUTARY_META_PASSWORD_FILE")):
    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    return subprocess.run([sys.executable, "-m", "tributary.cli"] + args, capture_output=True,
                          text=True, timeout=60, env=env)


@pytest.mark.parametrize("kind", ["meta", "node", "router"])
def test_a_process_without_its_secrets_refuses_to_start(tmp_path, kind):
    args = {"meta": ["meta", "--raft", "127.0.0.1:39911", "--grpc", "127.0.0.1:39912",
                     "--data-dir", str(tmp_path)],
            "node": ["node", "--listen", "127.0.0.1:39913", "--meta", "127.0.0.1:39912",
                     "--data-dir", str(tmp_path)],
            "router": ["router", "--http", "127.0.0.1:39914", "--grpc", "127.0.0.1:39915",
                       "--meta", "127.0.0.1:39912"]}[kind]
    result = _run_cli(args)
    assert result.returncode != 0
    assert "refusing to start" in result.stderr and "--insecure-dev" in result.stderr
    if kind == "meta":   # the password is checked first, then the cluster secret
        assert "Raft password" in result.stderr
        password = tmp_path / "pw"
        password.write_text("p" * 32)
        result = _run_cli(args + ["--password-file", str(password)])
        assert result.returncode != 0 and "no cluster secret" in result.stderr


def test_insecure_dev_warns_and_the_probe_then_runs_code(tmp_path):
    """The probe is real: with --insecure-dev (no Raft password) it runs code in the member.
    This is why nothing else runs without a password."""
    http, grpc_port, base = free_port_plan(1, 1, 1)
    marker = tmp_path / "pwned"
    c = Cluster(tmp_path / "data", meta=1, nodes=1, extra_args=["--insecure-dev"])
    c.http_port, c.grpc_port, c.internal_base = http, grpc_port, base
    c.start()
    try:
        out = c.output()
        assert "WARNING: --insecure-dev" in out
        assert '"internal_auth": "off"' in out and '"insecure_dev": true' in out
        assert local_secrets.existing(c.data_dir) is None
        pickle_probe(raft_address(c, 0), str(marker))
        wait_for(marker.exists, 10, what="the probe's file")
    finally:
        c.stop()
