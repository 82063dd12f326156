"""The chaos harness without a cluster: schedules, topology, outcome classification, verdicts.

* The fault schedule is a pure function of the seed (and the run's options): same seed, same
  events, in this process or another, whatever else used `random` meanwhile.
* The Raft port plan makes pysyncobj open exactly one connection per pair of meta members,
  through that pair's own proxy, so a partition can cut a single Raft link.
* The verdict code fails on doctored histories (negative controls), so a passing run means
  something.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys

import pytest

from chaos import run as chaos_run
from chaos.history import FAIL, OK, UNKNOWN, Op
from chaos.nemesis import (LEADER, LINK_NEMESES, NEMESES, PRIMARY_NEMESES, PRIMARY_SHARDS,
                           PROCESS_NEMESES, Event, NemesisRunner, NemesisSpec, ScheduleConfig,
                           make_schedule, parse_primary_target, parse_specs, primary_fault_links,
                           primary_target, schedule_doc, schedule_json)
from chaos.topology import (LINK_KINDS, Topology, check_raft_order, meta_peer_raft, plan_ports)
from chaos.verdict import FAILED, INCONCLUSIVE, PASS, SKIPPED, evaluate
from chaos.workload import Reply, batch_ids, classify, shard_of

TOPO = Topology()
ALL = parse_specs(None)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---- schedule ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 7, 123456789])
def test_same_seed_same_schedule(seed):
    first = make_schedule(seed, 120, ALL, TOPO)
    random.seed(999)            # the global generator must play no part
    random.random()
    second = make_schedule(seed, 120, ALL, TOPO)
    assert first == second
    assert schedule_json(first) == schedule_json(second)


def test_schedule_is_the_same_in_another_process():
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from chaos.nemesis import make_schedule, parse_specs, schedule_json\n"
            "from chaos.topology import Topology\n"
            "print(schedule_json(make_schedule(42, 90, parse_specs(None), Topology())))") % REPO
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"}, check=True).stdout
    assert out.strip() == schedule_json(make_schedule(42, 90, ALL, TOPO))


def test_different_seeds_give_different_schedules():
    schedules = {schedule_json(make_schedule(seed, 60, ALL, TOPO)) for seed in range(20)}
    assert len(schedules) == 20


@pytest.mark.parametrize("seed", range(30))
def test_events_are_numbered_bounded_by_the_run_at_most_two_at_once_and_hit_real_targets(seed):
    duration = 90
    config = ScheduleConfig()
    events = make_schedule(seed, duration, ALL, TOPO, config)
    assert events, "a 90 s run has faults"
    assert [e.index for e in events] == list(range(len(events)))
    links = {link.name for link in TOPO.links()}
    for e in events:
        assert e.nemesis in NEMESES
        assert config.warmup_s <= e.start_s and e.end_s <= duration + 1e-6
        assert config.min_event_s - 1e-6 <= e.duration_s <= config.max_event_s + 1e-6 \
            or e.end_s == pytest.approx(duration)
        if e.nemesis in LINK_NEMESES:
            assert e.target in links and e.params
        elif e.nemesis == "partition":
            side = e.target.split(",")
            assert set(side) <= set(TOPO.members)
            assert sum(m.startswith("meta-") for m in side) <= TOPO.meta // 2
        elif e.nemesis in PROCESS_NEMESES:
            assert e.target in TOPO.members
        elif e.nemesis in PRIMARY_NEMESES:
            assert parse_primary_target(e.target) in PRIMARY_SHARDS
        else:
            assert e.target == LEADER
    # At most two faults at once.
    for e in events:
        active = [o for o in events if o.start_s <= e.start_s < o.end_s]
        assert len(active) <= 2, [o.describe() for o in active]
    # Starts are ordered.
    assert [e.start_s for e in events] == sorted(e.start_s for e in events)


def test_every_requested_nemesis_appears_and_scopes_are_kept():
    specs = parse_specs(["partition:node", "latency:router-node", "kill:node"])
    for seed in range(20):
        events = make_schedule(seed, 25, specs, TOPO)
        assert {e.nemesis for e in events} == {"partition", "latency", "kill"}
        for e in events:
            if e.nemesis in ("partition", "kill"):
                assert e.target in TOPO.node_members
            else:
                assert e.target in {"router-0->node-0", "router-0->node-1"}
    events = make_schedule(3, 200, ALL, TOPO)
    assert {e.nemesis for e in events} == set(NEMESES)


def test_overlapping_process_faults_pick_other_members():
    for seed in range(30):
        events = make_schedule(seed, 120, parse_specs(["kill:node", "pause:node"]), TOPO)
        for a in events:
            for b in events:
                if a.index < b.index and b.start_s < a.end_s:
                    assert a.target != b.target, (a.describe(), b.describe())


def test_schedule_round_trips_through_json():
    events = make_schedule(11, 60, ALL, TOPO)
    doc = json.loads(json.dumps(schedule_doc(11, 60, ALL, TOPO, events)))
    assert doc["seed"] == 11 and doc["nemeses"] == [str(s) for s in ALL]
    assert [Event.from_dict(d) for d in doc["events"]] == events


def test_runs_too_short_or_without_nemeses_have_no_faults_and_zero_duration_is_refused():
    assert make_schedule(1, 3, ALL, TOPO) == []      # shorter than warmup + one event
    assert make_schedule(1, 60, [], TOPO) == []
    with pytest.raises(ValueError):
        make_schedule(1, 0, ALL, TOPO)


def test_nemesis_specs_default_to_all_drop_duplicates_and_refuse_unknown_names_and_scopes():
    assert parse_specs(None) == [NemesisSpec(n) for n in NEMESES]
    assert parse_specs(["kill:meta,latency", "kill:meta"]) == [
        NemesisSpec("kill", "meta"), NemesisSpec("latency")]
    assert str(NemesisSpec.parse("reset-peer:meta-meta")) == "reset-peer:meta-meta"
    for bad in ("explode", "kill:link", "latency:node", "leader-isolation:meta"):
        with pytest.raises(ValueError):
            NemesisSpec.parse(bad)


# ---- topology ---------------------------------------------------------------------------------

def test_every_link_has_a_proxy_and_an_upstream():
    plan = plan_ports(TOPO, 30_000)
    names = {link.name for link in TOPO.links()}
    assert names <= set(plan.proxies) and names <= set(plan.upstreams)
    assert {link.kind for link in TOPO.links()} == set(LINK_KINDS)
    ports = plan.all_ports()
    assert len(ports) == len(set(ports))
    # client->router, router->node, router->meta, node->meta, meta<->meta
    assert len(TOPO.links_of_kind("meta-meta")) == 3
    assert len(TOPO.links_of_kind("node-meta")) == 6


def test_raft_identities_make_each_pair_dial_through_its_own_proxy():
    plan = plan_ports(TOPO, 41_000)
    check_raft_order(TOPO, plan)
    for i in range(3):
        for j in range(3):
            if i == j:
                continue
            me, peer = f"meta-{i}", f"meta-{j}"
            known = meta_peer_raft(TOPO, plan, me, peer)
            if j < i:       # the higher member dials the lower one through the pair's proxy
                assert known == plan.proxies[f"{me}->{peer}"]
                assert plan.meta_raft_self[me] > known
                assert plan.upstreams[f"{me}->{peer}"] == plan.meta_raft_bind[peer]
            else:           # and the lower one knows it by its identity, and never dials it
                assert known == plan.meta_raft_self[peer]
                assert plan.meta_raft_self[me] < known


def test_a_plan_that_would_dial_the_wrong_way_is_refused():
    plan = plan_ports(TOPO, 30_000)
    swapped = dict(plan.meta_raft_self)
    swapped["meta-0"], swapped["meta-2"] = swapped["meta-2"], swapped["meta-0"]
    bad = type(plan)(**{**plan.__dict__, "meta_raft_self": swapped})
    with pytest.raises(ValueError):
        check_raft_order(TOPO, bad)


def test_partition_cuts_exactly_the_links_of_the_side():
    cut = {link.name for link in TOPO.cut({"node-0"})}
    assert cut == {"router-0->node-0", "node-0->meta-0", "node-0->meta-1", "node-0->meta-2"}
    cut = {link.name for link in TOPO.cut({"meta-1"})}
    assert cut == {"router-0->meta-1", "node-0->meta-1", "node-1->meta-1", "meta-1->meta-0",
                   "meta-2->meta-1"}
    cut = {link.name for link in TOPO.cut({"router-0"})}
    assert "client->router-0" in cut and len(cut) == 1 + 2 + 3
    with pytest.raises(ValueError):
        TOPO.cut({"node-9"})


def test_topology_refuses_an_even_meta_group_and_several_routers():
    with pytest.raises(ValueError):
        Topology(meta=2)
    with pytest.raises(ValueError):
        Topology(routers=2)


# ---- workload helpers -------------------------------------------------------------------------

def test_shard_of_is_the_routers_rule():
    from router.routing import shard_of as router_shard_of
    for i in range(200):
        assert shard_of(f"id-{i}", 4) == router_shard_of(f"id-{i}", 4)


def test_batch_ids_span_every_shard_and_never_repeat():
    seen = set()
    for n in range(50):
        ids = batch_ids(n)
        assert sorted(shard_of(i, 4) for i in ids) == [0, 1, 2, 3]
        assert not seen & set(ids)
        seen |= set(ids)


def _err(status, type_, retriable=False):
    return Reply(status, {"error": {"type": type_, "message": "m", "retriable": retriable}})


@pytest.mark.parametrize("reply, expected", [
    (Reply(200, {}), OK), (Reply(201, {}), OK),
    (_err(400, "InvalidArgument"), FAIL), (_err(404, "NotFound"), FAIL),
    (_err(409, "AlreadyExists"), FAIL),
    (_err(409, "Aborted", retriable=True), UNKNOWN),
    (_err(500, "Internal"), UNKNOWN), (_err(503, "Unavailable", True), UNKNOWN),
    (_err(504, "DeadlineExceeded", True), UNKNOWN),
    (Reply(None, error="TimeoutError: timed out"), UNKNOWN),
    (Reply(None, error="ConnectionRefusedError"), UNKNOWN),
])
def test_replies_are_ok_fail_or_unknown_by_status_and_retriability(reply, expected):
    assert classify(reply) == expected


# ---- verdict: a clean history passes, doctored ones fail ---------------------------------------

def mk(i, kind, key=None, value=None, output=None, t0=0, t1=None, status=OK, process=0):
    return Op(process=process, kind=kind, key=key, value=value, output=output, invoke_ns=t0,
              complete_ns=None if status == UNKNOWN else t1, status=status, id=i)


def clean_history() -> tuple[list[Op], dict]:
    batch = {"b0-0": "b0", "b0-1": "b0", "b0-2": "b0", "b0-3": "b0"}
    ops = [
        mk(0, "put", "k1", "p0-1", t0=0, t1=10),
        mk(1, "get", "k1", output="p0-1", t0=20, t1=30, process=1),
        mk(2, "put", "k2", "p0-2", t0=40, t1=50),
        mk(3, "delete", "k2", output="deleted", t0=60, t1=70, process=1),
        mk(4, "put", "k1", "p0-3", t0=80, status=UNKNOWN),
        mk(5, "batch_put", None, batch, t0=100, t1=120, process=2),
        mk(6, "batch_get", None, list(batch), output=dict(batch), t0=130, t1=150, process=3),
        mk(7, "batch_put", None, {"b1-0": "b1", "b1-1": "b1"}, t0=160, t1=170, status=FAIL,
           process=2),
        mk(8, "create", "c0", output="ok", t0=0, t1=10, process=4),
        mk(9, "list", output=["c0"], t0=20, t1=30, process=4),
        mk(10, "drop", "c1", output="not_found", t0=40, t1=50, process=4),
        mk(11, "create", "c1", t0=60, status=UNKNOWN, process=4),
        mk(12, "get", "k1", output="p0-3", t0=200, t1=210, process="final"),
        mk(13, "get", "k2", output=None, t0=200, t1=210, process="final"),
        mk(14, "tenant_create", "chaos-t0", output="ok", t0=0, t1=10, process=5),
        mk(15, "tenant_list", output=["chaos-t0"], t0=20, t1=30, process=5),
        mk(16, "tenant_drop", "chaos-t0", output="ok", t0=40, t1=50, process=5),
        mk(17, "tenant_drop", "chaos-t1", output="not_found", t0=60, t1=70, process=5),
        mk(18, "key_create", "chaos-keys", output={"key_id": "key1"}, t0=80, t1=90, process=5),
        mk(19, "key_revoke", "key1", output="ok", t0=100, t1=110, process=5),
        mk(30, "key_create", "chaos-keys", t0=120, status=UNKNOWN, process=5),
    ]
    final = {"k1": "p0-3", "k2": None, **batch, "b1-0": None, "b1-1": None}
    return ops, final


SAMPLES = [{"t": 0.5, "ok": False}, {"t": 1.0, "ok": True}, {"t": 4.5, "ok": True}]


def verdicts(report) -> dict[str, str]:
    return {c.name: c.verdict for c in report.checkers}


def copies_snapshot(**shard_overrides) -> dict:
    """Two shards with two agreeing, in-sync copies each; overrides apply to shard 1."""
    def shard(n, **over):
        status = {node: {"last_seq": 7, "last_term": 2, "vector_count": 3, "digest": "ab" * 32}
                  for node in ("node-0", "node-1")}
        return {"uuid": "u1", "epoch": 3, "shard": n, "primary": "node-0", "term": 2,
                "copies": ["node-0", "node-1"], "in_sync": ["node-0", "node-1"],
                "status": status, **over}
    return {"datasets": {"default/chaos-kv": {"uuid": "u1", "shards": [
        shard(0), shard(1, **shard_overrides)]}}, "waited_s": 1.5, "bound_s": 60.0}


def test_a_clean_history_passes():
    ops, final = clean_history()
    report = evaluate(ops, final, recovery_samples=SAMPLES, recovery_bound_s=5,
                      copies=copies_snapshot())
    assert report.ok, report.lines()
    assert set(verdicts(report).values()) == {PASS}
    assert report.recovery_s == pytest.approx(1.0)
    assert report.op_counts["put"] == {OK: 2, UNKNOWN: 1}


def test_injected_lost_write_fails():
    ops, final = clean_history()
    ops.append(mk(20, "put", "k2", "p9-9", t0=180, t1=190, process=9))
    report = evaluate(ops, final)
    assert not report.ok
    assert verdicts(report)["no-lost-writes"] == FAILED
    assert verdicts(report)["kv-linearizable"] == FAILED   # the final read of k2 saw nothing


def test_injected_partial_batch_fails():
    ops, final = clean_history()
    final["b0-2"] = None
    report = evaluate(ops, final)
    assert verdicts(report)["no-partial-batches"] == FAILED
    # A failed batch that shows up is a violation too.
    ops, final = clean_history()
    final["b1-0"] = "b1"
    assert verdicts(evaluate(ops, final))["no-partial-batches"] == FAILED


def test_injected_partial_read_of_an_acknowledged_batch_fails():
    ops, final = clean_history()
    seen = {"b0-0": "b0", "b0-1": None, "b0-2": "b0", "b0-3": "b0"}
    ops.append(mk(21, "batch_get", None, list(seen), output=seen, t0=160, t1=170, process=3))
    report = evaluate(ops, final)
    assert verdicts(report)["batch-reads-atomic"] == FAILED
    assert "b0-1" in report.checker("batch-reads-atomic").details[0]


def test_a_read_that_began_before_the_batch_was_acknowledged_is_not_judged():
    ops, final = clean_history()
    seen = {"b0-0": "b0", "b0-1": None, "b0-2": None, "b0-3": None}
    ops.append(mk(21, "batch_get", None, list(seen), output=seen, t0=110, t1=140, process=3))
    assert verdicts(evaluate(ops, final))["batch-reads-atomic"] == PASS


def test_injected_catalog_anomaly_fails():
    ops, final = clean_history()
    ops.append(mk(22, "list", output=[], t0=35, t1=38, process=5))   # c0 exists since t=10
    assert verdicts(evaluate(ops, final))["catalog-linearizable"] == FAILED


def test_a_tenant_delete_that_answers_not_found_for_a_tenant_it_made_fails():
    # What a repeat of a committed DeleteTenant answered before the meta group kept the first
    # answer of an operator's request (consensus/state.py _requested).
    ops, final = clean_history()
    ops.append(mk(23, "tenant_create", "chaos-t2", output="ok", t0=300, t1=310, process=5))
    ops.append(mk(24, "tenant_drop", "chaos-t2", output="not_found", t0=320, t1=330, process=5))
    assert verdicts(evaluate(ops, final))["tenants-linearizable"] == FAILED


def test_a_key_create_answering_conflict_or_a_revoke_answering_not_found_fails():
    ops, final = clean_history()
    ops.append(mk(25, "key_create", "chaos-keys", output={"conflict": "API key 'x' already "
                                                                      "exists"},
                  t0=300, t1=310, process=5))
    report = evaluate(ops, final)
    assert verdicts(report)["admin-keys"] == FAILED
    assert "AlreadyExists" in report.checker("admin-keys").details[0]
    ops, final = clean_history()
    ops.append(mk(26, "key_create", "chaos-keys", output={"key_id": "key2"}, t0=300, t1=310,
                  process=5))
    ops.append(mk(27, "key_revoke", "key2", output="not_found", t0=320, t1=330, process=5))
    assert verdicts(evaluate(ops, final))["admin-keys"] == FAILED
    # The revoke of a key whose create was never acknowledged may find nothing.
    ops, final = clean_history()
    ops.append(mk(28, "key_revoke", "key9", output="not_found", t0=320, t1=330, process=5))
    assert verdicts(evaluate(ops, final))["admin-keys"] == PASS


def test_slow_or_missing_recovery_fails():
    ops, final = clean_history()
    assert verdicts(evaluate(ops, final, recovery_samples=SAMPLES,
                             recovery_bound_s=0.5))["recovery"] == FAILED
    assert verdicts(evaluate(ops, final, recovery_samples=[{"t": 1, "ok": False}],
                             recovery_bound_s=30))["recovery"] == FAILED


def test_unread_keys_make_the_verdict_inconclusive_not_a_pass():
    ops, final = clean_history()
    del final["k1"]
    report = evaluate(ops, final, unread_keys=["k1"])
    assert verdicts(report)["no-lost-writes"] == "inconclusive" and not report.ok


def test_a_run_where_nothing_was_acknowledged_does_not_pass():
    ops, final = clean_history()
    assert verdicts(evaluate(ops, final, workloads=["kv", "batch", "catalog"]))[
        "workloads-made-progress"] == PASS
    timid = [op for op in ops if op.kind != "list"]
    report = evaluate(timid, final, workloads=["kv", "catalog"])
    assert verdicts(report)["workloads-made-progress"] == FAILED
    assert "catalog: no acknowledged read" in report.checker("workloads-made-progress").summary
    report = evaluate([], {}, workloads=["kv"])
    assert not report.ok


def test_shortcuts_never_turn_a_legal_history_into_a_failure():
    # Only an unknown delete explains the read of nothing (tier 2 needed) ...
    ops = [mk(0, "put", "k", "v1", t0=0, t1=10), mk(1, "delete", "k", t0=20, status=UNKNOWN),
           mk(2, "get", "k", output=None, t0=30, t1=40)]
    assert verdicts(evaluate(ops, {}))["kv-linearizable"] == PASS
    # ... and only an unknown put that nobody read explains "deleted" (the full tier needed).
    ops = [mk(0, "put", "k", "v1", t0=0, status=UNKNOWN),
           mk(1, "delete", "k", output="deleted", t0=20, t1=30),
           mk(2, "get", "k", output=None, t0=40, t1=50)]
    assert verdicts(evaluate(ops, {}))["kv-linearizable"] == PASS
    # The catalog: an unknown create explains a later "already_exists".
    ops = [mk(0, "create", "c", t0=0, status=UNKNOWN),
           mk(1, "create", "c", output="already_exists", t0=20, t1=30)]
    assert verdicts(evaluate(ops, {}))["catalog-linearizable"] == PASS


def test_shortcuts_never_hide_a_violation():
    # Stale read after an acknowledged overwrite, with unknown writes all around.
    ops = [mk(0, "put", "k", "v1", t0=0, t1=10), mk(1, "put", "k", "v2", t0=20, t1=30),
           mk(2, "get", "k", output="v1", t0=40, t1=50)]
    ops += [mk(10 + i, "put", "k", f"u{i}", t0=5 + i, status=UNKNOWN) for i in range(6)]
    ops += [mk(30 + i, "delete", "k", t0=5 + i, status=UNKNOWN) for i in range(2)]
    report = evaluate(ops, {})
    assert verdicts(report)["kv-linearizable"] == FAILED
    assert "'k'" in report.checker("kv-linearizable").summary
    # A catalog list missing an acknowledged create (the unknown ops touch another name).
    ops = [mk(0, "drop", "d", t0=0, status=UNKNOWN), mk(3, "create", "d", t0=1, status=UNKNOWN),
           mk(1, "create", "c", output="ok", t0=10, t1=20),
           mk(2, "list", output=["d"], t0=30, t1=40)]
    assert verdicts(evaluate(ops, {}))["catalog-linearizable"] == FAILED


def test_a_refused_connection_is_a_definite_failure():
    import socket

    from chaos.workload import Http
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # closed again: nothing listens there
    reply = Http(f"http://127.0.0.1:{port}/api/v1", 2).request("GET", "/health")
    assert reply.status is None and not reply.sent and classify(reply) == FAIL
    assert classify(Reply(None, error="RemoteDisconnected")) == UNKNOWN   # may have been sent


def test_checkers_without_ops_are_skipped():
    report = evaluate([], {})
    assert set(verdicts(report).values()) == {SKIPPED} and report.ok


# ---- copies agree ---------------------------------------------------------------------------------

def test_copies_whose_digests_differ_fail_copies_agree_naming_shard_and_copies():
    snapshot = copies_snapshot()
    snapshot["datasets"]["default/chaos-kv"]["shards"][1]["status"]["node-1"]["digest"] = "cd" * 32
    report = evaluate([], {}, copies=snapshot)
    assert verdicts(report)["copies-agree"] == FAILED and not report.ok
    details = "\n".join(report.checker("copies-agree").details)
    assert "default/chaos-kv shard 1" in details and "different content" in details
    assert "node-0 digest abababababab" in details and "node-1 digest cdcdcdcdcdcd" in details


def test_a_copy_that_never_rejoined_the_in_sync_set_fails_copies_agree():
    report = evaluate([], {}, copies=copies_snapshot(in_sync=["node-0"]))
    assert verdicts(report)["copies-agree"] == FAILED
    assert "node-1 not in the in-sync set node-0" in report.checker("copies-agree").details[0]


def test_a_copy_that_gave_no_digest_fails_copies_agree():
    snapshot = copies_snapshot()
    snapshot["datasets"]["default/chaos-kv"]["shards"][0]["status"]["node-1"] = {
        "error": "UNAVAILABLE: connection refused"}
    report = evaluate([], {}, copies=snapshot)
    assert verdicts(report)["copies-agree"] == FAILED
    assert "connection refused" in report.checker("copies-agree").details[0]


def test_copies_agree_passes_only_with_a_snapshot_of_some_shard():
    assert verdicts(evaluate([], {}, copies=copies_snapshot()))["copies-agree"] == PASS
    assert verdicts(evaluate([], {}))["copies-agree"] == SKIPPED
    assert verdicts(evaluate([], {}, copies={"datasets": {}}))["copies-agree"] == INCONCLUSIVE
    failed = evaluate([], {}, copies={"error": "no meta leader answered GetState"})
    assert verdicts(failed)["copies-agree"] == FAILED and not failed.ok


# ---- primary faults -----------------------------------------------------------------------------

PRIMARIES = parse_specs(["primary-kill", "primary-pause", "primary-copies-partition",
                         "primary-meta-partition"])


@pytest.mark.parametrize("seed", range(20))
def test_primary_faults_target_a_seeded_workload_shard_and_never_overlap_process_faults(seed):
    specs = PRIMARIES + parse_specs(["kill:node", "partition:node", "latency:router-node"])
    events = make_schedule(seed, 90, specs, TOPO)
    assert events == make_schedule(seed, 90, specs, TOPO)
    on_processes = [e for e in events if e.nemesis in PRIMARY_NEMESES + PROCESS_NEMESES]
    for e in events:
        if e.nemesis in PRIMARY_NEMESES:
            assert parse_primary_target(e.target) in PRIMARY_SHARDS
            for other in on_processes:
                if other is not e:
                    assert other.end_s <= e.start_s or e.end_s <= other.start_s, \
                        (e.describe(), other.describe())


def test_every_primary_fault_appears_and_the_shard_choice_depends_on_the_seed():
    events = [e for seed in range(10) for e in make_schedule(seed, 60, PRIMARIES, TOPO)]
    assert {e.nemesis for e in events} == set(PRIMARY_NEMESES)
    assert len({e.target for e in events}) >= 4


def test_primary_targets_round_trip_and_bad_ones_are_refused():
    assert parse_primary_target(primary_target("chaos-batch", 3)) == ("chaos-batch", 3)
    for bad in ("node-0", "primary:chaos-kv", "primary:/1", "primary:chaos-kv/x"):
        with pytest.raises(ValueError):
            parse_primary_target(bad)
    for bad in ("primary-kill:node", "primary-meta-partition:meta"):
        with pytest.raises(ValueError):
            NemesisSpec.parse(bad)


def test_primary_partitions_cut_the_copies_inbound_links_or_the_primarys_meta_links():
    topo = Topology(nodes=3)
    assert primary_fault_links(topo, "primary-copies-partition", "node-1",
                               ["node-0", "node-1", "node-2"]) == ["router-0->node-0",
                                                                   "router-0->node-2"]
    assert primary_fault_links(topo, "primary-meta-partition", "node-1", ["node-0", "node-1"]) \
        == ["node-1->meta-0", "node-1->meta-1", "node-1->meta-2"]
    assert primary_fault_links(topo, "primary-copies-partition", "node-1", ["node-1"]) == []


def test_a_shards_placement_is_read_from_the_catalog_json_old_datasets_included():
    from chaos.harness import placement_of
    record = {"placement": ["node-0", "node-1"], "epoch": 4, "copies": [["node-0", "node-1"],
              ["node-0", "node-1"]], "in_sync": [["node-0"], ["node-0", "node-1"]],
              "terms": [1, 3]}
    assert placement_of("u", record, 1) == {"uuid": "u", "epoch": 4, "primary": "node-1",
                                            "copies": ["node-0", "node-1"],
                                            "in_sync": ["node-0", "node-1"], "term": 3}
    assert placement_of("u", record, 0)["in_sync"] == ["node-0"]
    before_replication = {"placement": ["node-1"], "epoch": 1}
    assert placement_of("u", before_replication, 0) == {
        "uuid": "u", "epoch": 1, "primary": "node-1", "copies": ["node-1"],
        "in_sync": ["node-1"], "term": 1}


# ---- nemesis runner bookkeeping (fake cluster) -------------------------------------------------

class FakeApi:
    def __init__(self, calls):
        self.calls = calls

    def add_toxic(self, proxy, toxic):
        self.calls.append(("add_toxic", proxy, toxic["name"], toxic["type"], toxic["stream"]))

    def remove_toxic(self, proxy, name):
        self.calls.append(("remove_toxic", proxy, name))


class FakeCluster:
    def __init__(self, leader="meta-1"):
        self.topology = TOPO
        self.calls: list = []
        self.api = FakeApi(self.calls)
        self.leader = leader
        self.procs = {m: argparse.Namespace(pid=100 + i) for i, m in enumerate(TOPO.members)}
        self.placements = {("chaos-kv", 1): {"primary": "node-1", "copies": ["node-0", "node-1"],
                                             "in_sync": ["node-0", "node-1"], "term": 3}}

    def set_link(self, name, enabled):
        self.calls.append(("link", name, enabled))

    def kill(self, m):
        self.calls.append(("kill", m))

    def restart(self, m):
        self.calls.append(("restart", m))

    def pause(self, m):
        self.calls.append(("pause", m))

    def resume(self, m):
        self.calls.append(("resume", m))

    def meta_leader(self):
        return self.leader

    def shard_placement(self, dataset, shard):
        self.calls.append(("placement", dataset, shard))
        return self.placements.get((dataset, shard))

    def heal_network(self):
        self.calls.append(("heal_network",))

    def heal_processes(self):
        self.calls.append(("heal_processes",))
        return []


def test_overlapping_partitions_reenable_a_shared_link_only_when_both_end():
    cluster = FakeCluster()
    runner = NemesisRunner(cluster)
    a = Event(0, "partition", "node-0", 0, 5)
    b = Event(1, "partition", "meta-1", 1, 5)     # shares node-0->meta-1 with a
    runner.start(a)
    runner.start(b)
    assert cluster.calls.count(("link", "node-0->meta-1", False)) == 1
    runner.end(a)
    assert ("link", "node-0->meta-1", True) not in cluster.calls
    assert ("link", "router-0->node-0", True) in cluster.calls
    runner.end(b)
    assert ("link", "node-0->meta-1", True) in cluster.calls
    assert not runner.disabled


def test_toxics_are_named_per_event_on_both_streams_and_removed():
    cluster = FakeCluster()
    runner = NemesisRunner(cluster)
    e = Event(4, "reset-peer", "router-0->node-1", 0, 2, {"timeout": 100})
    runner.start(e)
    runner.end(e)
    assert cluster.calls == [
        ("add_toxic", "router-0->node-1", "ev4-reset_peer-upstream", "reset_peer", "upstream"),
        ("add_toxic", "router-0->node-1", "ev4-reset_peer-downstream", "reset_peer",
         "downstream"),
        ("remove_toxic", "router-0->node-1", "ev4-reset_peer-upstream"),
        ("remove_toxic", "router-0->node-1", "ev4-reset_peer-downstream")]


def test_leader_isolation_cuts_the_leader_found_when_it_starts():
    cluster = FakeCluster(leader="meta-2")
    runner = NemesisRunner(cluster)
    e = Event(0, "leader-isolation", LEADER, 0, 3)
    runner.start(e)
    cut = {c[1] for c in cluster.calls if c[0] == "link"}
    assert cut == {link.name for link in TOPO.cut({"meta-2"})}
    assert runner.journal[-1]["side"] == "meta-2"
    runner.end(e)
    assert not runner.disabled
    cluster = FakeCluster(leader=None)
    runner = NemesisRunner(cluster)
    runner.start(e)
    runner.end(e)
    assert cluster.calls == [] and runner.journal[-1]["action"] == "skip"


def test_kill_and_pause_are_undone_and_heal_resets_everything():
    cluster = FakeCluster()
    runner = NemesisRunner(cluster)
    kill, pause = Event(0, "kill", "node-1", 0, 2), Event(1, "pause", "meta-0", 0, 2)
    runner.start(kill)
    runner.start(pause)
    runner.end(kill)
    runner.end(pause)
    assert cluster.calls == [("kill", "node-1"), ("pause", "meta-0"), ("restart", "node-1"),
                             ("resume", "meta-0")]
    runner.start(Event(2, "partition", "node-0", 0, 2))
    runner.heal_all()
    assert cluster.calls[-2:] == [("heal_network",), ("heal_processes",)]
    assert not runner.active and not runner.disabled


@pytest.mark.parametrize("nemesis, applied, undone", [
    ("primary-kill", [("kill", "node-1")], [("restart", "node-1")]),
    ("primary-pause", [("pause", "node-1")], [("resume", "node-1")]),
    ("primary-copies-partition", [("link", "router-0->node-0", False)],
     [("link", "router-0->node-0", True)]),
    ("primary-meta-partition", [("link", f"node-1->meta-{i}", False) for i in range(3)],
     [("link", f"node-1->meta-{i}", True) for i in range(3)]),
])
def test_primary_faults_hit_the_primary_found_when_they_start_and_are_undone(nemesis, applied,
                                                                             undone):
    cluster = FakeCluster()
    runner = NemesisRunner(cluster)
    event = Event(0, nemesis, primary_target("chaos-kv", 1), 0, 3)
    runner.start(event)
    assert cluster.calls == [("placement", "chaos-kv", 1)] + applied
    started = runner.journal[-1]
    assert started["action"] == "start" and started["primary"] == "node-1"
    assert started["term"] == 3 and started["copies"] == "node-0,node-1"
    # A failover meanwhile does not change what the end undoes.
    cluster.placements[("chaos-kv", 1)] = {**cluster.placements[("chaos-kv", 1)],
                                           "primary": "node-0", "term": 4}
    runner.end(event)
    assert cluster.calls[len(applied) + 1:] == undone
    assert runner.journal[-1]["action"] == "end" and not runner.active and not runner.disabled


def test_a_primary_fault_without_a_known_placement_is_skipped_and_touches_nothing():
    cluster = FakeCluster()
    runner = NemesisRunner(cluster)
    event = Event(0, "primary-kill", primary_target("chaos-batch", 2), 0, 3)
    runner.start(event)
    runner.end(event)
    assert cluster.calls == [("placement", "chaos-batch", 2)]
    assert runner.journal[-1]["action"] == "skip"


def test_runner_follows_the_schedule_clock():
    cluster = FakeCluster()
    now = [0.0]
    runner = NemesisRunner(cluster, clock=lambda: now[0])
    events = [Event(0, "kill", "node-0", 1.0, 2.0), Event(1, "pause", "node-1", 2.0, 0.5)]
    import chaos.nemesis as nemesis_mod

    def fake_sleep(s):
        now[0] += max(s, 0.01)
    real_sleep = nemesis_mod.time.sleep
    nemesis_mod.time.sleep = fake_sleep
    try:
        runner.run(events, t0=0.0, until_s=4.0)
    finally:
        nemesis_mod.time.sleep = real_sleep
    assert [c[0] for c in cluster.calls] == ["kill", "pause", "resume", "restart"]
    starts = {j["event"]: j["t"] for j in runner.journal if j["action"] == "start"}
    assert starts[0] == pytest.approx(1.0, abs=0.05) and starts[1] == pytest.approx(2.0, abs=0.05)


# ---- the command line ----------------------------------------------------------------------------

def _cli_args(argv):
    from chaos import cli
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("passed, code", [(True, 0), (False, 1)])
def test_cli_prints_the_seed_and_exits_with_the_verdict(monkeypatch, capsys, passed, code):
    seen = {}

    def fake_run(config, out):
        seen["config"] = config
        out(f"chaos run: seed {config.seed}")
        return argparse.Namespace(exit_code=0 if passed else 1)

    monkeypatch.setattr(chaos_run, "run_chaos", fake_run)
    args = _cli_args(["run", "--seed", "17", "--duration", "30", "--nemesis", "kill:node",
                      "--nemesis", "latency", "--workload", "kv", "--data-dir", "/tmp/x"])
    with pytest.raises(SystemExit) as exit_info:
        args.chaos_func(args)
    assert exit_info.value.code == code
    config = seen["config"]
    assert config.seed == 17 and config.duration_s == 30 and config.workloads == ["kv"]
    assert [str(s) for s in config.nemeses] == ["kill:node", "latency"]
    assert "seed 17" in capsys.readouterr().out


def test_cli_refuses_unknown_nemeses():
    args = _cli_args(["run", "--nemesis", "meteor"])
    with pytest.raises(SystemExit) as exit_info:
        args.chaos_func(args)
    assert "unknown nemesis" in str(exit_info.value.code)
