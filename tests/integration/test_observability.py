"""Observability through a real cluster (issue 15): one trace per request across router, node
and meta, read back from the OTLP JSON-lines files `tributary up` writes with no collector;
`traceparent` in and out over REST; request ids followed through every process's JSON logs;
every process's /metrics scrapeable (and clean under `promtool check metrics` when promtool is
installed); every metric the dashboards and alert rules name is exported; deep health."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import uuid

import httpx
import numpy as np
import pytest

from cluster import Cluster, child_pid, wait_for
from router.routing import shard_of
from tributary import limits

pytestmark = pytest.mark.integration

SHARDS = 4
DIMS = 8
# Where a span must be in its process's file within (the contract says 10 s).
EXPORT_WITHIN_S = 10.0


@pytest.fixture(scope="module")
def obs_cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("obs") / "data", meta=3, nodes=2).start()
    yield c
    c.stop()


def new_traceparent() -> tuple[str, str]:
    trace_id = uuid.uuid4().hex
    return trace_id, f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"


def spans_of(data_dir: str, trace_id: str) -> list[dict]:
    """Every span of `trace_id` in <data-dir>/traces/*.jsonl, each with the service.name of the
    process that wrote it as `_service`."""
    found = []
    for path in glob.glob(os.path.join(data_dir, "traces", "*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if trace_id not in line:
                    continue
                request = json.loads(line)
                for resource_spans in request["resourceSpans"]:
                    attributes = {a["key"]: a["value"].get("stringValue")
                                  for a in resource_spans["resource"]["attributes"]}
                    for scope_spans in resource_spans["scopeSpans"]:
                        for span in scope_spans["spans"]:
                            if span["traceId"] == trace_id:
                                found.append({**span, "_service": attributes["service.name"]})
    return found


def services(spans: list[dict]) -> set[str]:
    return {kind for s in spans for kind in ("router", "node", "meta") if kind in s["_service"]}


def assert_one_connected_trace(spans: list[dict], client_span_id: str) -> None:
    """Every span's parent is another span of the trace, except the root, whose parent is the
    client's span from the traceparent we sent."""
    ids = {s["spanId"] for s in spans}
    assert len(ids) == len(spans), "span ids are unique"
    roots = [s for s in spans if s.get("parentSpanId", "") not in ids]
    assert len(roots) == 1, [(s["name"], s["_service"]) for s in roots]
    assert roots[0]["parentSpanId"] == client_span_id
    assert "router" in roots[0]["_service"]


def ids_on_every_shard(prefix: str) -> list[str]:
    ids, seen, i = [], set(), 0
    while len(seen) < SHARDS:
        candidate = f"{prefix}-{i}"
        shard = shard_of(candidate, SHARDS)
        if shard not in seen:
            seen.add(shard)
            ids.append(candidate)
        i += 1
    return ids


@pytest.fixture(scope="module")
def dataset(obs_cluster):
    name = f"obs{uuid.uuid4().hex[:6]}"
    r = httpx.post(f"{obs_cluster.rest}/datasets", json={
        "name": name, "dimensions": DIMS, "metric_type": "l2", "shard_count": SHARDS},
        timeout=30)
    assert r.status_code in (200, 201), r.text
    return name


def test_multi_shard_insert_is_one_trace_with_router_node_and_meta_spans(obs_cluster, dataset):
    trace_id, traceparent = new_traceparent()
    rng = np.random.default_rng(1)
    vectors = [{"id": i, "values": rng.standard_normal(DIMS).tolist()}
               for i in ids_on_every_shard("ins")]
    r = httpx.post(f"{obs_cluster.rest}/datasets/{dataset}/vectors/batch",
                   json={"vectors": vectors}, headers={"traceparent": traceparent}, timeout=30)
    assert r.status_code in (200, 201), r.text
    assert r.headers["traceparent"].split("-")[1] == trace_id

    def complete():
        spans = spans_of(obs_cluster.data_dir, trace_id)
        names = [s["name"] for s in spans]
        server = [s["name"] for s in spans if s["kind"] == 2]
        client = [s["name"] for s in spans if s["kind"] == 3]
        done = (services(spans) == {"router", "node", "meta"}
                and {"2pc.prepare", "2pc.decide", "2pc.commit", "raft.propose",
                     "deeplake.commit"} <= set(names)
                and any(n.startswith("POST ") for n in names)
                and server.count("ShardNode/Prepare") == SHARDS
                and server.count("ShardNode/Commit") == SHARDS
                and server.count("ShardNode/Replicate") >= SHARDS
                and client.count("ShardNode/Replicate") >= SHARDS)
        return spans if done else None
    spans = wait_for(complete, EXPORT_WITHIN_S, 0.25, "insert trace in the files")
    assert_one_connected_trace(spans, traceparent.split("-")[2])
    by_id = {s["spanId"]: s for s in spans}
    txn_ids = {a["value"]["stringValue"] for s in spans if s["name"].startswith("2pc.")
               for a in s.get("attributes", []) if a["key"] == "tributary.txn_id"}
    assert len(txn_ids) == 1
    # The Raft proposal of the decision runs on the meta leader, under its gRPC server span,
    # whose parent is the router's client span inside 2pc.decide.
    propose = next(s for s in spans if s["name"] == "raft.propose")
    assert "meta" in propose["_service"]
    chain = []
    current = propose
    while current.get("parentSpanId") in by_id:
        current = by_id[current["parentSpanId"]]
        chain.append(current["name"])
    assert "2pc.decide" in chain, chain
    # Every shard was prepared and committed on a node.
    node_calls = [s["name"] for s in spans if "node" in s["_service"] and s["kind"] == 2]
    assert node_calls.count("ShardNode/Prepare") == SHARDS
    assert node_calls.count("ShardNode/Commit") == SHARDS
    # Each shard has two copies (replication factor 2 on two nodes): the primaries replicate
    # the prepare and the decision to the other copy, one span per copy on either side.
    replicated = [s for s in spans if s["name"] == "ShardNode/Replicate"]
    assert len([s for s in replicated if s["kind"] == 2]) >= SHARDS
    assert len([s for s in replicated if s["kind"] == 3]) >= SHARDS


def test_search_is_one_trace_with_router_and_node_spans(obs_cluster, dataset):
    trace_id, traceparent = new_traceparent()
    r = httpx.post(f"{obs_cluster.rest}/datasets/{dataset}/search",
                   json={"query_vector": [0.1] * DIMS, "options": {"top_k": 3}},
                   headers={"traceparent": traceparent}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["traceparent"].split("-")[1] == trace_id

    def complete():
        spans = spans_of(obs_cluster.data_dir, trace_id)
        return spans if [s for s in spans if s["name"] == "hnsw.search"] and \
            len([s for s in spans if s["name"] == "ShardNode/Search"
                 and "node" in s["_service"]]) == SHARDS and \
            [s for s in spans if s["name"].startswith("POST ")] else None
    spans = wait_for(complete, EXPORT_WITHIN_S, 0.25, "search trace in the files")
    assert_one_connected_trace(spans, traceparent.split("-")[2])
    assert {"router", "node"} <= services(spans)
    assert len([s for s in spans if s["name"] == "shard.call"]) == SHARDS
    hnsw = next(s for s in spans if s["name"] == "hnsw.search")
    keys = {a["key"] for a in hnsw["attributes"]}
    assert {"hnsw.ef", "hnsw.candidates"} <= keys


def test_health_reports_each_dependency_and_ready_answers(obs_cluster, dataset):
    r = httpx.get(f"{obs_cluster.rest}/health", timeout=10)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["status"] == "healthy"
    checks = doc["checks"]
    assert checks["meta"]["status"] == "ok" and checks["meta"]["leader"]
    assert set(checks["nodes"]) == {"node-0", "node-1"}
    for node in checks["nodes"].values():
        assert node["status"] == "ok" and node["copies"] > 0 and "latency_ms" in node
    assert checks["index_backlog"]["status"] == "ok"
    assert checks["index_backlog"]["pending_vectors"] >= 0
    assert checks["shards"]["status"] == "ok"
    ready = httpx.get(f"{obs_cluster.rest}/ready", timeout=10)
    assert ready.status_code == 200 and ready.json()["ready"] is True


def _admin(cluster: Cluster, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([os.sys.executable, "-m", "tributary.cli", "admin", *argv,
                           "--url", f"http://127.0.0.1:{cluster.http_port}", "--timeout", "20"],
                          capture_output=True, text=True, timeout=120)


def test_admin_status_shows_the_deep_health_as_a_table_and_keeps_its_json(obs_cluster, dataset):
    table = _admin(obs_cluster, "status")
    assert table.returncode == 0, table.stderr
    for word in ("meta group", "health", "index backlog", "node-0", "node-1", "leader"):
        assert word in table.stdout, table.stdout
    as_json = _admin(obs_cluster, "status", "--json")
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert list(doc) == ["meta"]
    assert {"raft_address", "role", "term", "commit_index"} <= set(doc["meta"][0])


def test_health_is_503_while_a_shard_has_no_copy_this_router_can_reach(tmp_path):
    """A frozen node (SIGSTOP) still counts as live for a moment in the meta group, but this
    router cannot reach it: the deep health names it at once. While every shard keeps another
    in-sync copy it is "degraded" (200: the router still serves everything); once a shard lives
    only on the frozen node it is 503. It recovers when the node does. With the meta group
    stopped as well, `tributary admin status` fails in one line."""
    c = Cluster(tmp_path / "data", meta=1, nodes=2).start()
    try:
        def frozen_health(pid, expected_status):
            os.kill(pid, signal.SIGSTOP)
            try:
                def answered():
                    r = httpx.get(f"{c.rest}/health", timeout=15)
                    doc = r.json()
                    reach = doc.get("dependencies", {}).get("reachability", "")
                    return doc if r.status_code == expected_status and "node-1" in reach \
                        else None
                return wait_for(answered, 20, 0.2, f"{expected_status} while node-1 is frozen")
            finally:
                os.kill(pid, signal.SIGCONT)

        r = httpx.post(f"{c.rest}/datasets", json={"name": "both", "dimensions": DIMS,
                                                   "shard_count": 2}, timeout=30)
        assert r.status_code in (200, 201), r.text
        wait_for(lambda: httpx.get(f"{c.rest}/health", timeout=10).status_code == 200, 30, 0.5,
                 "healthy with a dataset")
        pid = child_pid(c, c.node_address(1))
        doc = frozen_health(pid, 200)           # every shard has a copy on node-0 too
        assert doc["status"] == "degraded"
        assert doc["checks"]["nodes"]["node-1"]["status"] == "unhealthy"
        assert doc["checks"]["shards"]["unserved"] == []
        wait_for(lambda: httpx.get(f"{c.rest}/health", timeout=10).json()["status"] ==
                 "healthy", 60, 0.5, "healthy again")
        r = httpx.post(f"{c.rest}/datasets", json={"name": "held", "dimensions": DIMS,
                                                   "shard_count": 2, "replication_factor": 1},
                       timeout=30)
        assert r.status_code in (200, 201), r.text
        doc = frozen_health(pid, 503)           # one of held's shards lives on node-1 alone
        assert doc["checks"]["nodes"]["node-1"]["status"] == "unhealthy"
        assert [s for s in doc["checks"]["shards"]["unserved"] if s.startswith("held/")]
        wait_for(lambda: httpx.get(f"{c.rest}/health", timeout=10).status_code == 200, 60, 0.5,
                 "healthy again")
        meta_pid = child_pid(c, c.meta_grpc(0))
        os.kill(meta_pid, signal.SIGSTOP)
        try:
            down = _admin(c, "status")
            assert down.returncode != 0
            assert len(down.stderr.strip().splitlines()) == 1, down.stderr
            assert down.stderr.startswith("tributary admin:"), down.stderr
        finally:
            os.kill(meta_pid, signal.SIGCONT)
    finally:
        c.stop()


# ---- metrics ----------------------------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPECTED = {
    "routers": {"tributary_router_requests_total", "tributary_router_shard_call_seconds_bucket",
                "tributary_router_shard_call_errors_total", "tributary_shards_under_replicated",
                "tributary_txns_total"},
    "nodes": {"tributary_node_vectors", "tributary_node_soft_deleted_vectors",
              "tributary_node_index_pending_vectors", "tributary_node_indexed_vectors_total",
              "tributary_node_search_seconds_bucket", "tributary_node_write_seconds_bucket",
              "tributary_deeplake_commit_seconds_bucket", "tributary_node_shard_disk_bytes",
              "tributary_node_copy_primary", "tributary_node_copy_in_sync",
              "tributary_node_copy_last_seq", "tributary_node_copy_lag_ops",
              "tributary_tenant_vectors"},
    "meta": {"tributary_meta_raft_term", "tributary_meta_raft_commit_index",
             "tributary_meta_leader_changes_total", "tributary_meta_applied_commands_total",
             "tributary_meta_proposal_seconds_bucket", "tributary_meta_is_leader"},
}


def scrape_all(cluster: Cluster) -> dict[str, list[str]]:
    """{kind: [exposition text of each process]} from the URLs `tributary up` recorded."""
    with open(os.path.join(cluster.data_dir, "cluster.json"), encoding="utf-8") as handle:
        urls = json.load(handle)["metrics"]
    texts = {}
    for kind, addresses in urls.items():
        texts[kind] = []
        for url in addresses:
            r = httpx.get(url, timeout=10)
            assert r.status_code == 200, (url, r.status_code)
            texts[kind].append(r.text)
    return texts


def exported_names(text: str) -> set[str]:
    """Sample names, plus the names of metric families declared without samples yet (a labelled
    counter before its first increment)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "counter":
                names.add(name if name.endswith("_total") else name + "_total")
            if kind == "histogram":
                names.update({name + "_bucket", name + "_sum", name + "_count"})
        elif line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


def _exercise(cluster: Cluster, name: str) -> None:
    rng = np.random.default_rng(5)
    vectors = [{"id": i, "values": rng.standard_normal(DIMS).tolist()}
               for i in ids_on_every_shard(f"m{uuid.uuid4().hex[:4]}")]
    r = httpx.post(f"{cluster.rest}/datasets/{name}/vectors/batch", json={"vectors": vectors},
                   timeout=30)
    assert r.status_code in (200, 201), r.text
    r = httpx.post(f"{cluster.rest}/datasets/{name}/search",
                   json={"query_vector": [0.0] * DIMS, "options": {"top_k": 2}}, timeout=30)
    assert r.status_code == 200, r.text


def test_every_process_serves_its_metrics(obs_cluster, dataset):
    _exercise(obs_cluster, dataset)
    texts = scrape_all(obs_cluster)
    assert len(texts["meta"]) == 3 and len(texts["nodes"]) == 2 and len(texts["routers"]) == 1
    for kind, expected in EXPECTED.items():
        for text in texts[kind]:
            missing = expected - exported_names(text)
            assert not missing, (kind, missing)
    # The applied-command counter counts the catalog's commands on every member.
    assert 'tributary_meta_applied_commands_total{type="CreateDataset"}' in texts["meta"][0]
    node_text = "\n".join(texts["nodes"])
    assert f'dataset="{dataset}"' in node_text


def test_metrics_follow_prometheus_conventions(obs_cluster, dataset):
    """Names are snake case with the tributary_ prefix, counters end in _total, and units are
    base units (seconds, bytes) named last; `promtool check metrics` agrees when installed."""
    from prometheus_client.parser import text_string_to_metric_families

    texts = scrape_all(obs_cluster)
    for kind, outputs in texts.items():
        for text in outputs:
            for family in text_string_to_metric_families(text):
                if not family.name.startswith("tributary_"):
                    continue
                assert family.name == family.name.lower(), family.name
                assert not family.name.endswith(("_ms", "_milliseconds", "_kb", "_mb")), \
                    family.name
                if family.type == "counter":
                    assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed: `promtool check metrics` NOT run "
                    "(apt-get install prometheus provides it)")
    for kind, outputs in texts.items():
        for text in outputs:
            result = subprocess.run([promtool, "check", "metrics"], input=text,
                                    capture_output=True, text=True, timeout=60)
            assert result.returncode == 0 and not result.stdout.strip() and \
                not result.stderr.strip(), (kind, result.stdout, result.stderr)


def _named_metrics(expression: str) -> set[str]:
    import re
    return set(re.findall(r"\btributary_[a-z0-9_]+", expression))


def test_every_metric_of_the_dashboards_and_alert_rules_is_exported(obs_cluster, dataset):
    import yaml

    _exercise(obs_cluster, dataset)
    texts = scrape_all(obs_cluster)
    exported = set().union(*(exported_names(t) for outputs in texts.values() for t in outputs))
    named: dict[str, set[str]] = {}
    for path in glob.glob(os.path.join(ROOT, "deploy", "grafana", "*.json")):
        with open(path, encoding="utf-8") as handle:
            dashboard = json.load(handle)
        titles = {p["title"] for p in dashboard["panels"] if p["type"] == "row"}
        assert {"Cluster overview", "Per node", "Per dataset"} <= titles
        assert any("2PC" in t or "Two-phase" in t for t in titles)
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                for metric in _named_metrics(target["expr"]):
                    named.setdefault(metric, set()).add(f"{path}: {panel['title']}")
        for variable in dashboard["templating"]["list"]:
            for metric in _named_metrics(str(variable.get("query", ""))):
                named.setdefault(metric, set()).add(f"{path}: ${variable['name']}")
    with open(os.path.join(ROOT, "deploy", "prometheus", "rules.yml"), encoding="utf-8") as handle:
        rules = yaml.safe_load(handle)
    alerts = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            alerts.add(rule["alert"])
            for metric in _named_metrics(rule["expr"]):
                named.setdefault(metric, set()).add(f"rules.yml: {rule['alert']}")
    assert {"TributaryShardsUnderReplicated", "TributaryIndexBacklog",
            "TributaryMetaLeaderFlapping", "TributaryRouter5xxRate"} <= alerts
    assert len(named) >= 30
    missing = {metric: where for metric, where in named.items() if metric not in exported}
    assert not missing, missing


# ---- logs -------------------------------------------------------------------------------------

def log_lines(cluster: Cluster, request_id: str) -> dict[str, list[dict]]:
    """{process name: [JSON log records carrying request_id]} from <data-dir>/logs."""
    found: dict[str, list[dict]] = {}
    for path in glob.glob(os.path.join(cluster.data_dir, "logs", "*.log")):
        process = os.path.basename(path)[:-len(".log")]
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if request_id in line and line.startswith("{"):
                    found.setdefault(process, []).append(json.loads(line))
    return found


def test_one_request_id_is_followed_through_router_node_and_meta_logs(obs_cluster, dataset):
    request_id = f"req-{uuid.uuid4().hex}"
    trace_id, traceparent = new_traceparent()
    rng = np.random.default_rng(9)
    vectors = [{"id": i, "values": rng.standard_normal(DIMS).tolist()}
               for i in ids_on_every_shard(f"log{uuid.uuid4().hex[:4]}")]
    r = httpx.post(f"{obs_cluster.rest}/datasets/{dataset}/vectors/batch",
                   json={"vectors": vectors}, timeout=30,
                   headers={"traceparent": traceparent, "X-Request-Id": request_id})
    assert r.status_code in (200, 201), r.text
    assert r.headers["X-Request-Id"] == request_id

    def everywhere():
        found = log_lines(obs_cluster, request_id)
        kinds = {p.split("-")[0] for p in found}
        return found if kinds == {"router", "node", "meta"} else None
    found = wait_for(everywhere, 10, 0.25, "the request id in router, node and meta logs")
    for process, records in found.items():
        for record in records:
            assert record["request_id"] == request_id
            assert record["trace_id"] == trace_id
            assert record["process"] == process
            assert {"ts", "level", "logger", "message"} <= set(record)
    # A request without an id of its own gets one, returned to the caller.
    r = httpx.get(f"{obs_cluster.rest}/datasets/{dataset}", timeout=30)
    assert len(r.headers["X-Request-Id"]) >= 16
