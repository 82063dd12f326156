"""`tributary chaos list` and `tributary chaos run --scenario NAME`: contracts that tools outside
the repository script against, so they are checked through the real console script.

* `chaos list` prints every scenario of the registry (chaos/scenarios.py), `NAME  description`
  per line; `--json` prints an array of {"name", "description"} objects.
* `chaos run --scenario NAME` runs the registry's nemeses for NAME; `--seed` and `--duration`
  still apply. An unknown name exits non-zero with one line naming every valid scenario, and
  starts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

import pytest

from chaos import run as chaos_run
from chaos import scenarios
from chaos.nemesis import NEMESES, parse_specs
from chaos.scenarios import SCENARIOS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRIBUTARY = os.path.join(REPO, ".venv", "bin", "tributary")


def tributary(*argv: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([TRIBUTARY, *argv], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout_s)


def _cli_args(argv: list[str]) -> argparse.Namespace:
    from chaos import cli
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


# ---- chaos list ----------------------------------------------------------------------------------

def test_chaos_list_json_prints_every_registry_scenario_in_order():
    proc = tributary("chaos", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    assert listed == [{"name": s.name, "description": s.description} for s in SCENARIOS]


def test_chaos_list_prints_one_name_and_description_line_per_scenario():
    proc = tributary("chaos", "list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(SCENARIOS)
    for line, scenario in zip(lines, SCENARIOS):
        name, description = re.split(r"\s{2,}", line, maxsplit=1)
        assert (name, description) == (scenario.name, scenario.description)


# ---- the registry --------------------------------------------------------------------------------

def test_every_scenario_has_a_kebab_case_name_a_description_and_valid_nemeses():
    names = [s.name for s in SCENARIOS]
    assert len(names) == len(set(names))
    for s in SCENARIOS:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", s.name), s.name
        assert s.description and "\n" not in s.description
        assert s.specs(), s.name          # parses, or raises for an unknown nemesis
        assert s.matrix_seeds, f"{s.name} is not in the chaos matrix"
        assert s.duration_s > 0


def test_every_nemesis_is_played_alone_by_some_scenario():
    alone = {s.nemeses[0] for s in SCENARIOS if len(s.nemeses) == 1}
    assert alone == set(NEMESES)


def test_only_scenarios_touching_the_meta_group_claim_meta_faults():
    assert scenarios.get("meta-faults").meta_faults
    assert scenarios.get("all-at-once").meta_faults
    assert scenarios.get("leader-isolation").meta_faults
    assert not scenarios.get("node-faults").meta_faults


# ---- chaos run --scenario ------------------------------------------------------------------------

def test_run_by_scenario_uses_its_nemeses_and_default_duration():
    config = chaos_run.config_from_args(_cli_args(["run", "--scenario", "meta-faults"]))
    scenario = scenarios.get("meta-faults")
    assert config.nemeses == scenario.specs()
    assert config.duration_s == scenario.duration_s
    assert config.scenario == "meta-faults"
    assert config.seed > 0                      # random when not given


def test_seed_and_duration_still_apply_to_a_scenario_run():
    config = chaos_run.config_from_args(_cli_args(
        ["run", "--scenario", "kill", "--seed", "42", "--duration", "8", "--workload", "kv"]))
    assert (config.seed, config.duration_s, config.workloads) == (42, 8.0, ["kv"])
    assert config.nemeses == parse_specs(["kill"])
    assert chaos_run.replay_command(config) == \
        "tributary chaos run --scenario kill --seed 42 --duration 8 --workload kv"


def test_all_at_once_plays_every_nemesis():
    config = chaos_run.config_from_args(_cli_args(["run", "--scenario", "all-at-once"]))
    assert {s.name for s in config.nemeses} == set(NEMESES)


def test_scenario_and_nemesis_flags_cannot_be_combined():
    with pytest.raises(SystemExit) as exit_info:
        _cli_args(["run", "--scenario", "kill", "--nemesis", "pause"])
    assert exit_info.value.code == 2


def test_unknown_scenario_exits_non_zero_with_one_line_naming_every_scenario(tmp_path):
    data_dir = tmp_path / "chaos-data"
    proc = tributary("chaos", "run", "--scenario", "meteor-strike", "--seed", "1",
                     "--data-dir", str(data_dir))
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "unknown scenario 'meteor-strike'" in lines[0]
    for scenario in SCENARIOS:
        assert scenario.name in lines[0]
    # Nothing was started: a run creates its directory before its first process.
    assert not data_dir.exists()


def test_unknown_scenario_starts_no_cluster(monkeypatch):
    started = []
    monkeypatch.setattr(chaos_run, "run_chaos", lambda config, out: started.append(config))
    monkeypatch.setattr(chaos_run, "ProxiedCluster",
                        lambda *a, **k: started.append("cluster"))
    args = _cli_args(["run", "--scenario", "meteor-strike"])
    with pytest.raises(SystemExit) as exit_info:
        args.chaos_func(args)
    assert "unknown scenario 'meteor-strike'" in str(exit_info.value.code)
    assert started == []


def test_python_module_entry_point_lists_the_same_scenarios():
    proc = subprocess.run([sys.executable, "-m", "chaos", "list", "--json"], capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [s["name"] for s in json.loads(proc.stdout)] == [s.name for s in SCENARIOS]
