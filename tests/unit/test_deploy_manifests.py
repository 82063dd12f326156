"""Structural checks of the deployment files: deploy/k8s/*.yaml, docker-compose.cluster.yml and
deploy/Dockerfile.

No Docker engine or Kubernetes API is needed: the manifests are parsed with PyYAML, every
`tributary` invocation in them is parsed with the real argparse definitions of the sub-commands,
and the meta members' shell wrapper is executed with a stand-in `tributary` that prints its argv.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from consensus import member
from node import server as node_server
from router import server as router_server

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "docker-compose.cluster.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"

SUBCOMMANDS = {"meta", "node", "router"}
ADD_ARGUMENTS = {"meta": member.add_arguments, "node": node_server.add_arguments,
                 "router": router_server.add_arguments}
NAMESPACE = "tributary"
SHELLS = {"sh", "/bin/sh", "bash", "/bin/bash"}
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
K8S_REF = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# ---- helpers -------------------------------------------------------------------------------------

def role_parser(role: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"tributary {role}", exit_on_error=False)
    ADD_ARGUMENTS[role](parser)
    return parser


def flags_in(tokens) -> list[str]:
    return [m.group(1) for token in tokens for m in FLAG.finditer(token)]


def parse_role(role: str, argv: list[str]) -> argparse.Namespace:
    parser = role_parser(role)
    unknown = [f for f in flags_in(argv) if f not in parser._option_string_actions]
    assert not unknown, f"flags unknown to `tributary {role}`: {unknown}"
    return parser.parse_args(argv)


def k8s_yaml_files() -> list[Path]:
    return sorted(p for p in K8S.iterdir() if p.suffix in (".yaml", ".yml"))


def load_all(path: Path) -> list[dict]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def k8s_docs() -> list[tuple[Path, dict]]:
    return [(path, doc) for path in k8s_yaml_files() for doc in load_all(path)]


def deployed_docs() -> list[dict]:
    """What `kubectl apply -k deploy/k8s` applies: the kustomization's resources."""
    kustomization = load_all(K8S / "kustomization.yaml")[0]
    return [doc for name in kustomization["resources"] for doc in load_all(K8S / name)]


def of_kind(kind: str, docs=None) -> list[dict]:
    return [d for d in (deployed_docs() if docs is None else docs) if d["kind"] == kind]


def one(kind: str, name: str) -> dict:
    found = [d for d in of_kind(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}"
    return found[0]


def workloads() -> list[dict]:
    return of_kind("StatefulSet") + of_kind("Deployment")


def labels_match(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def container(workload: dict) -> dict:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1, workload["metadata"]["name"]
    return containers[0]


def k8s_expand(text: str, env: dict[str, str]) -> tuple[str, list[str]]:
    """Kubernetes' $(VAR) expansion in command/args; returns the text and unresolved names."""
    out, unresolved, i = [], [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            if text[i + 1] == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2:end]
                    if name in env:
                        out.append(env[name])
                    else:
                        out.append(text[i:end + 1])
                        if K8S_REF.match(name):
                            unresolved.append(name)
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out), unresolved


def sample_env(c: dict, pod_name: str, secret: str = "s3cret") -> dict[str, str]:
    env = {}
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            env[item["name"]] = {"metadata.name": pod_name,
                                 "metadata.namespace": NAMESPACE}[source["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in source:
            env[item["name"]] = secret
        else:
            raise AssertionError(f"unexpected env source {source}")
    return env


def dockerfile_entrypoint() -> list[str]:
    lines = [line for line in DOCKERFILE.read_text().splitlines()
             if line.startswith("ENTRYPOINT")]
    assert lines, "deploy/Dockerfile has no ENTRYPOINT"
    return yaml.safe_load(lines[-1].split(None, 1)[1])


def is_shell(argv: list[str]) -> bool:
    return len(argv) >= 3 and argv[0] in SHELLS and argv[1] == "-c"


def invocation(argv: list[str]) -> tuple[str, list[str]]:
    """(sub-command, its arguments) of a direct `tributary SUB ...` argv."""
    assert argv and os.path.basename(argv[0]) == "tributary", f"not a tributary command: {argv}"
    assert len(argv) >= 2 and argv[1] in SUBCOMMANDS, f"unknown sub-command in {argv}"
    return argv[1], argv[2:]


def shell_invocations(script: str) -> list[tuple[str, list[str], str]]:
    """(sub-command, flags anywhere in the script, line) for each `tributary SUB` line."""
    found = []
    for line in script.splitlines():
        tokens = shlex.split(line, comments=True)
        if "tributary" in tokens:
            at = tokens.index("tributary")
            assert at + 1 < len(tokens) and tokens[at + 1] in SUBCOMMANDS, line
            found.append((tokens[at + 1], flags_in(shlex.split(script, comments=True)), line))
    return found


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def meta_dns_addresses(port_name: str) -> list[str]:
    meta = one("StatefulSet", "tributary-meta")
    service = one("Service", meta["spec"]["serviceName"])
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == port_name)
    name, svc = meta["metadata"]["name"], meta["spec"]["serviceName"]
    return [f"{name}-{i}.{svc}.{NAMESPACE}.svc:{port}" for i in range(meta["spec"]["replicas"])]


def run_meta_wrapper(tmp_path: Path, ordinal: int, monkeypatch) -> argparse.Namespace:
    meta = one("StatefulSet", "tributary-meta")
    c = container(meta)
    pod = f"{meta['metadata']['name']}-{ordinal}"
    env = sample_env(c, pod)
    argv = []
    for part in c.get("command", []) + c.get("args", []):
        expanded, unresolved = k8s_expand(part, env)
        assert not unresolved, f"unresolved $(...) references: {unresolved}"
        argv.append(expanded)
    assert is_shell(argv)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "tributary"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    run_env = {"PATH": f"{bin_dir}:/usr/bin:/bin", **env}
    out = subprocess.run(["/bin/sh", "-c", argv[2]], env=run_env, capture_output=True,
                         text=True, timeout=30, check=True).stdout.splitlines()
    assert out[0] == "meta"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return parse_role("meta", out[1:])


# ---- the real CLI --------------------------------------------------------------------------------

@pytest.mark.parametrize("sub", sorted(SUBCOMMANDS))
def test_subcommands_exist_in_the_cli(sub, capsys):
    from tributary import cli
    with pytest.raises(SystemExit) as exit_info:
        cli.main([sub, "--help"])
    assert exit_info.value.code == 0
    assert f"tributary {sub}" in capsys.readouterr().out


# ---- Kubernetes: generic structure ---------------------------------------------------------------

def test_every_k8s_doc_has_api_version_kind_and_name():
    docs = k8s_docs()
    assert docs
    for path, doc in docs:
        assert isinstance(doc, dict), path
        assert doc.get("apiVersion"), f"{path.name}: no apiVersion"
        assert doc.get("kind"), f"{path.name}: no kind"
        assert (doc.get("metadata") or {}).get("name"), f"{path.name}: no metadata.name"


def test_kustomization_lists_every_manifest_but_the_example_secret():
    kustomization = load_all(K8S / "kustomization.yaml")[0]
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["namespace"] == NAMESPACE
    resources = kustomization["resources"]
    for name in resources:
        assert (K8S / name).is_file(), f"kustomization lists missing {name}"
    expected = {p.name for p in k8s_yaml_files()} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(resources) == expected
    assert "secret.example.yaml" not in resources


def test_example_secret_is_only_an_example():
    docs = load_all(K8S / "secret.example.yaml")
    assert [d["kind"] for d in docs] == ["Secret", "Secret", "Secret"]
    expected = {"tributary-meta": "password", "tributary-router-auth": "admin-key",
                "tributary-internal": "cluster-secret"}
    assert [d["metadata"]["name"] for d in docs] == list(expected)
    for secret in docs:
        values = {**secret.get("stringData", {}), **secret.get("data", {})}
        key = expected[secret["metadata"]["name"]]
        assert set(values) == {key}
        assert "REPLACE" in values[key].upper()
    assert "EXAMPLE" in (K8S / "secret.example.yaml").read_text().upper()
    assert not of_kind("Secret"), "a Secret must not be deployed by the kustomization"


def test_namespaced_resources_live_in_the_tributary_namespace():
    docs = deployed_docs()
    assert [d["metadata"]["name"] for d in of_kind("Namespace", docs)] == [NAMESPACE]
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]


def test_workload_selectors_match_their_template_labels_and_do_not_overlap():
    loads = workloads()
    assert {w["metadata"]["name"] for w in loads} == {
        "tributary-meta", "tributary-node", "tributary-router"}
    for w in loads:
        selector = w["spec"]["selector"]["matchLabels"]
        assert labels_match(selector, w["spec"]["template"]["metadata"]["labels"])
        others = [o for o in loads if o is not w
                  and labels_match(selector, o["spec"]["template"]["metadata"]["labels"])]
        assert not others, f"{w['metadata']['name']} selector also matches {others}"


def test_statefulsets_use_an_existing_headless_service():
    for sts in of_kind("StatefulSet"):
        service = one("Service", sts["spec"]["serviceName"])
        assert service["spec"].get("clusterIP") == "None"
        # Members must resolve each other before any of them is Ready.
        assert service["spec"].get("publishNotReadyAddresses") is True
        assert labels_match(service["spec"]["selector"],
                            sts["spec"]["template"]["metadata"]["labels"])
        assert sts["spec"].get("podManagementPolicy") == "Parallel"
        claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
        mounts = {m["name"]: m["mountPath"] for m in container(sts)["volumeMounts"]}
        assert claims and claims <= set(mounts), sts["metadata"]["name"]


def test_services_select_a_workload_and_target_named_container_ports():
    for service in of_kind("Service"):
        targets = [w for w in workloads() if labels_match(
            service["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])]
        assert len(targets) == 1, service["metadata"]["name"]
        ports = {p["name"]: p["containerPort"] for p in container(targets[0])["ports"]}
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if isinstance(target, str):
                assert target in ports, f"{service['metadata']['name']}: {target}"
                assert ports[target] == port["port"]
            else:
                assert target in ports.values()


def test_pods_run_as_non_root_and_probe_declared_ports():
    for w in workloads():
        spec = pod_spec(w)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        c = container(w)
        assert c["image"].startswith("tributary")
        names = {p["name"] for p in c["ports"]}
        numbers = {p["containerPort"] for p in c["ports"]}
        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = c.get(probe_name)
            if probe is None:
                continue
            check = probe.get("tcpSocket") or probe.get("httpGet")
            assert check, f"{w['metadata']['name']} {probe_name}"
            assert check["port"] in names | numbers


# ---- Kubernetes: the tributary invocations -------------------------------------------------------

def test_every_k8s_container_invokes_a_tributary_subcommand_with_known_flags():
    seen = set()
    for w in workloads():
        c = container(w)
        argv = (c.get("command") or dockerfile_entrypoint()) + c.get("args", [])
        if is_shell(argv):
            calls = shell_invocations(argv[2])
            assert len(calls) == 1, f"{w['metadata']['name']}: {calls}"
            sub, flags, line = calls[0]
            assert line.strip().startswith("exec "), "the wrapper must exec tributary (signals)"
            parser = role_parser(sub)
            for flag in flags:
                assert flag in parser._option_string_actions, f"{sub}: {flag}"
        else:
            env = sample_env(c, f"{w['metadata']['name']}-0")
            expanded = []
            for part in argv:
                text, unresolved = k8s_expand(part, env)
                assert not unresolved, f"{w['metadata']['name']}: undefined $({unresolved})"
                expanded.append(text)
            sub, rest = invocation(expanded)
            parse_role(sub, rest)
        assert w["metadata"]["name"] == f"tributary-{sub}"
        seen.add(sub)
    assert seen == SUBCOMMANDS


def test_meta_password_comes_from_the_secret():
    c = container(one("StatefulSet", "tributary-meta"))
    env = {e["name"]: e for e in c["env"]}
    ref = env["TRIBUTARY_META_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "tributary-meta", "key": "password"}
    assert "value" not in env["TRIBUTARY_META_PASSWORD"]


@pytest.mark.parametrize("kind,name", [("StatefulSet", "tributary-meta"),
                                       ("StatefulSet", "tributary-node"),
                                       ("Deployment", "tributary-router")])
def test_every_role_reads_the_cluster_secret_from_the_secret(kind, name):
    env = {e["name"]: e for e in container(one(kind, name))["env"]}
    ref = env["TRIBUTARY_CLUSTER_SECRET"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "tributary-internal", "key": "cluster-secret"}
    assert "value" not in env["TRIBUTARY_CLUSTER_SECRET"]


@pytest.mark.parametrize("ordinal", [0, 1, 2])
def test_meta_wrapper_builds_raft_identity_and_peers(tmp_path, monkeypatch, ordinal):
    meta = one("StatefulSet", "tributary-meta")
    assert meta["spec"]["replicas"] in (3, 5)
    env = {e["name"]: e.get("value") for e in container(meta)["env"]}
    assert int(env["META_REPLICAS"]) == meta["spec"]["replicas"]
    args = run_meta_wrapper(tmp_path, ordinal, monkeypatch)

    rafts, grpcs = meta_dns_addresses("raft"), meta_dns_addresses("grpc")
    assert args.raft == rafts[ordinal]
    peers = dict(member._parse_peer(p) for p in args.peer)
    expected = {r: g for i, (r, g) in enumerate(zip(rafts, grpcs)) if i != ordinal}
    assert peers == expected
    assert args.raft not in peers
    host, port = address(args.grpc)
    assert host == "0.0.0.0" and port == address(grpcs[ordinal])[1]
    mounts = {m["mountPath"] for m in container(meta)["volumeMounts"]}
    assert args.data_dir in mounts
    # Off loopback the member refuses to start without a password: the Secret must reach it.
    assert not all(member.is_loopback(a) for a in [args.raft, *peers])
    assert args.password == "s3cret"


def test_nodes_advertise_their_stable_dns_name():
    sts = one("StatefulSet", "tributary-node")
    c = container(sts)
    pod = "tributary-node-1"
    env = sample_env(c, pod)
    argv = [k8s_expand(part, env)[0] for part in c["command"] + c["args"]]
    sub, rest = invocation(argv)
    args = parse_role(sub, rest)
    listen_host, listen_port = address(args.listen)
    assert not member.is_loopback(args.listen) and listen_port == 7200
    assert args.advertise == f"{pod}.{sts['spec']['serviceName']}.{NAMESPACE}.svc:{listen_port}"
    assert args.node_id == pod
    assert args.meta.split(",") == meta_dns_addresses("grpc")
    assert args.data_dir in {m["mountPath"] for m in c["volumeMounts"]}
    service = one("Service", sts["spec"]["serviceName"])
    assert listen_port in {p["port"] for p in service["spec"]["ports"]}


def test_router_serves_8000_and_50051_with_health_probes():
    deployment = one("Deployment", "tributary-router")
    assert deployment["spec"]["replicas"] == 2
    c = container(deployment)
    env = sample_env(c, "tributary-router-abc")
    sub, rest = invocation([k8s_expand(part, env)[0] for part in c["command"] + c["args"]])
    args = parse_role(sub, rest)
    assert address(args.http) == ("0.0.0.0", 8000)
    assert address(args.grpc) == ("0.0.0.0", 50051)
    assert args.meta.split(",") == meta_dns_addresses("grpc")
    assert args.min_nodes >= 1
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8000, "grpc": 50051}
    readiness = c["readinessProbe"]["httpGet"]
    assert readiness["path"] == "/api/v1/health"
    assert ports.get(readiness["port"], readiness["port"]) == 8000
    assert "tcpSocket" in c["livenessProbe"]
    service = one("Service", "tributary-router")
    assert sorted(p["port"] for p in service["spec"]["ports"]) == [8000, 50051]


def test_meta_pdb_keeps_a_majority():
    meta = one("StatefulSet", "tributary-meta")
    pdb = one("PodDisruptionBudget", "tributary-meta")
    assert pdb["spec"]["minAvailable"] == 2
    assert pdb["spec"]["minAvailable"] > meta["spec"]["replicas"] // 2
    assert labels_match(pdb["spec"]["selector"]["matchLabels"],
                        meta["spec"]["template"]["metadata"]["labels"])


# ---- docker-compose.cluster.yml ------------------------------------------------------------------

def compose() -> dict:
    docs = load_all(COMPOSE)
    assert len(docs) == 1
    return docs[0]


def compose_args(service: dict) -> tuple[str, list[str]]:
    command = service["command"]
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    entrypoint = service.get("entrypoint") or dockerfile_entrypoint()
    return invocation(list(entrypoint) + argv)


def test_compose_services_build_the_image_and_use_defined_volumes():
    spec = compose()
    services = spec["services"]
    assert set(services) == {"meta-0", "meta-1", "meta-2", "node-0", "node-1", "router"}
    defined = set(spec.get("volumes") or {})
    used = set()
    for name, service in services.items():
        build = service["build"]
        assert build["context"] == "."
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            if not source.startswith((".", "/", "~")):
                assert source in defined, f"{name} uses undefined volume {source}"
                used.add(source)
        for dependency in service.get("depends_on", []):
            assert dependency in services
    assert used == defined
    data_volumes = [v for s in services.values() for v in s.get("volumes", [])]
    assert len(data_volumes) == len(set(data_volumes)), "two services share a data volume"


def test_compose_commands_are_valid_tributary_invocations():
    services = compose()["services"]
    meta_names = sorted(n for n in services if n.startswith("meta-"))
    meta_args = {}
    for name, service in services.items():
        sub, rest = compose_args(service)
        assert name.split("-")[0] == sub
        args = parse_role(sub, rest)
        if sub == "meta":
            meta_args[name] = args
        elif sub == "node":
            assert args.advertise == f"{name}:{address(args.listen)[1]}"
            assert args.node_id == name
        if sub in ("node", "router"):
            assert args.meta.split(",") == [f"{m}:7110" for m in meta_names]
    for name, args in meta_args.items():
        assert address(args.raft)[0] == name
        assert address(args.grpc)[1] == 7110
        peers = dict(member._parse_peer(p) for p in args.peer)
        assert peers == {meta_args[o].raft: f"{o}:{address(meta_args[o].grpc)[1]}"
                         for o in meta_names if o != name}


def test_compose_meta_password_is_required_from_the_environment():
    services = compose()["services"]
    for name, service in services.items():
        if name.startswith("meta-"):
            env = service["environment"]
            if isinstance(env, list):
                env = dict(item.split("=", 1) for item in env)
            assert env["TRIBUTARY_META_PASSWORD"] == "${TRIBUTARY_META_PASSWORD:?set it}"


def test_compose_every_process_gets_the_cluster_secret():
    for name, service in compose()["services"].items():
        env = service["environment"]
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        assert env["TRIBUTARY_CLUSTER_SECRET"] == "${TRIBUTARY_CLUSTER_SECRET:?set it}", name


def test_compose_router_ports_and_healthcheck():
    router = compose()["services"]["router"]
    assert sorted(router["ports"]) == ["50051:50051", "8000:8000"]
    _, rest = compose_args(router)
    args = parse_role("router", rest)
    assert address(args.http)[1] == 8000 and address(args.grpc)[1] == 50051
    test = router["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python" and test[2] == "-c"
    code = test[3]
    compile(code, "<healthcheck>", "exec")
    assert "urllib" in code and "/api/v1/health" in code and ":8000" in code


# ---- Dockerfile ----------------------------------------------------------------------------------

def test_dockerfile_installs_the_lock_and_runs_tributary_as_non_root():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert "build-essential" in text
    lock = text.index("pip install -r requirements.lock")
    assert text.index("pip install --no-deps .") > lock
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert dockerfile_entrypoint() == ["tributary"]
    ignore = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignore and ".git" in ignore


def test_router_credentials_come_from_a_secret_since_routers_listen_off_loopback(monkeypatch):
    from router import auth
    c = container(one("Deployment", "tributary-router"))
    env = {item["name"]: item for item in c.get("env", [])}
    ref = env["TRIBUTARY_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "tributary-router-auth", "key": "admin-key"}
    router = compose()["services"]["router"]
    assert router["environment"]["TRIBUTARY_ADMIN_KEY"] == "${TRIBUTARY_ADMIN_KEY:?set it}"
    # With the Secret's value in the environment, the router's start-up check passes.
    _, rest = compose_args(router)
    args = parse_role("router", rest)
    monkeypatch.setenv("TRIBUTARY_ADMIN_KEY", "s3cret-from-the-secret")
    assert auth.config_from_args(args, [args.http, args.grpc]).enabled
