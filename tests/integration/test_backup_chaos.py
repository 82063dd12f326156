"""One short run of the `backup` chaos scenario (issue 16, item 4): a backup taken while the kv
and batch workloads write and a node is killed, restored into a fresh cluster, must be a
consistent prefix of the run, and every other checker must pass too. The restored state,
doctored (half of an acknowledged batch removed, a write acknowledged before the cut dropped),
must then fail the same verdict code. The full matrix (ten seeds) runs in `make chaos`."""

from __future__ import annotations

import copy

import pytest

from chaos.history import OK
from chaos.run import RunConfig, run_chaos
from chaos.scenarios import get as get_scenario
from chaos.verdict import FAILED, PASS, evaluate

pytestmark = pytest.mark.integration

SCENARIO = get_scenario("backup")
SEED = 117
DURATION_S = 16.0


@pytest.fixture(scope="module")
def backup_run(tmp_path_factory):
    config = RunConfig(seed=SEED, duration_s=DURATION_S, nemeses=SCENARIO.specs(),
                       data_dir=str(tmp_path_factory.mktemp("chaos-backup")),
                       recovery_bound_s=30.0, scenario=SCENARIO.name)
    return run_chaos(config, out=lambda line: print(line, flush=True))


def _rejudge(result, backup):
    return evaluate(result.history, result.final_state, unread_keys=result.unread,
                    recovery_samples=result.samples,
                    recovery_bound_s=result.config.recovery_bound_s,
                    workloads=result.config.workloads, copies=result.copies, backup=backup)


def test_backup_under_faults_restores_to_a_consistent_prefix(backup_run):
    assert backup_run.error is None, backup_run.error
    verdicts = {c.name: c.verdict for c in backup_run.report.checkers}
    assert verdicts["backup-consistent-prefix"] == PASS, "\n".join(backup_run.report.lines())
    assert backup_run.report.ok, "\n".join(backup_run.report.lines())
    assert all(ms <= 1000 for ms in backup_run.backup["fence_ms"])


def test_a_doctored_restore_fails_the_backup_checker(backup_run):
    backup = backup_run.backup
    cut_from = backup["cut_from_ns"]
    batches = [op for op in backup_run.history if op.kind == "batch_put" and op.status == OK
               and op.end_ns < cut_from and len(op.value) > 1
               and all(backup["restored"].get(k) == v for k, v in op.value.items())]
    assert batches, "no acknowledged batch wholly before the cut to doctor"
    key = next(iter(batches[0].value))
    doctored = copy.deepcopy(backup)
    doctored["restored"][key] = None
    checker = {c.name: c for c in _rejudge(backup_run, doctored).checkers}[
        "backup-consistent-prefix"]
    assert checker.verdict == FAILED
    assert any("batch" in line or "acknowledged" in line for line in checker.details)
