"""Scenario files: the shipped ones parse; mistakes get an error naming the line and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearth.testnet.scenario import ScenarioError, load_scenario, parse_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "testnet" / "scenarios"


@pytest.mark.parametrize("name", ["cheaters", "churn", "sybil"])
def test_shipped_scenarios_parse(name: str) -> None:
    scenario = load_scenario(SCENARIOS / f"{name}.toml")
    assert scenario.name == name
    assert sum(pct for _, pct in scenario.host_shares_pct) == 100


def test_cheaters_has_a_quarter_cheating() -> None:
    scenario = load_scenario(SCENARIOS / "cheaters.toml")
    cheating = sum(scenario.adversary_pct(k) for k in ("wrong_result", "colluder", "lazy_copier"))
    assert cheating >= 25
    assert scenario.partition_at_s < scenario.partition_heal_s


def test_unknown_key_names_its_line_and_the_keys_to_use() -> None:
    text = "[run]\nseed = 1\nnodez = 5\n"
    with pytest.raises(
        ScenarioError, match=r"x.toml:3: unknown key 'nodez' in \[run\]; use .*nodes"
    ):
        parse_scenario(text, source="x.toml")


def test_unknown_section_names_its_line() -> None:
    with pytest.raises(ScenarioError, match=r"x.toml:2: unknown section \[hostz\]"):
        parse_scenario("\n[hostz]\na = 1\n", source="x.toml")


def test_wrong_type_says_what_is_expected() -> None:
    with pytest.raises(ScenarioError, match=r"x.toml:2: run.jobs must be a whole number"):
        parse_scenario('[run]\njobs = "many"\n', source="x.toml")


def test_booleans_are_not_numbers() -> None:
    with pytest.raises(ScenarioError, match="must be a whole number"):
        parse_scenario("[churn]\ndowntime_s = true\n")


@pytest.mark.parametrize(
    ("text", "line", "fix"),
    [
        ("[hosts]\ngaming_pc = 50\npanel_box = 20\n", 2, "sum to 100"),
        ("[adversaries]\nwrong_result = 80\ncolluder = 30\n", 2, "total <= 100"),
        ("[run]\nreplicas = 3\nreplicas_max = 2\n", 2, "replicas <= replicas_max"),
        ("[network]\nloss_pct = 120\n", 2, "0-100"),
        ("[network]\npartition_at_s = 30\npartition_heal_s = 10\n", 3, "after partition_at_s"),
        ("[network]\npartition_at_s = 30\n", 2, "set both or neither"),
        ("[run]\nnodes = 0\n", 2, "at least 1"),
    ],
)
def test_impossible_numbers_name_the_line(text: str, line: int, fix: str) -> None:
    with pytest.raises(ScenarioError, match=rf"s.toml:{line}: .*{fix}"):
        parse_scenario(text, source="s.toml")


def test_bad_toml_and_missing_files_are_scenario_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="not valid TOML"):
        parse_scenario("[run\n")
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.toml")
