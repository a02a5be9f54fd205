"""`hearth init --profile NAME`: a commented config per seed system, cores capped to the machine."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from hearth.node import config
from hearth.node.profiles import PROFILES, UNKNOWN_NOTE, profile_cores, profile_text, render


@pytest.fixture(autouse=True)
def _a_big_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Profiles rendered for more cores than this machine has must still parse here."""
    monkeypatch.setattr(config, "machine_cores", lambda: 256)


def init(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hearth", "init", *args],
        env={**os.environ, "HEARTH_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("name", PROFILES)
def test_each_profile_is_a_valid_commented_config_capped_at_the_machines_cores(name: str) -> None:
    text = render(name, cpu_count=2)
    parsed = config.parse(text)
    assert parsed.cores == min(profile_cores(name), 2)
    assert text.startswith(f"# Profile {name}: ")
    # The default template's explanations are all still there, above the profile's values.
    template_comments = [line for line in config.TEMPLATE.splitlines() if line.startswith("#")]
    assert all(line in text.splitlines() for line in template_comments)
    assert parsed != config.parse(config.TEMPLATE)


@pytest.mark.parametrize("name", PROFILES)
def test_each_profile_key_is_set_or_commented_out_when_this_version_lacks_it(name: str) -> None:
    text = render(name, cpu_count=256)
    rendered = tomllib.loads(text)
    template = tomllib.loads(config.TEMPLATE)
    for section, values in tomllib.loads(profile_text(name)).items():
        for key, value in values.items():
            if key in template.get(section, {}):
                assert rendered[section][key] == value, (section, key)
            else:
                assert f"\n# {key} = " in text and UNKNOWN_NOTE in text, (section, key)


def test_profiles_differ_where_the_seed_systems_do() -> None:
    parsed = {name: config.parse(render(name, cpu_count=128)) for name in PROFILES}
    assert parsed["regional-site"].cores == 64 and parsed["streetlight"].cores == 1
    assert parsed["streetlight"].energy_source == "solar"
    assert parsed["panel-box"].energy_source == "battery"
    assert parsed["streetlight"].pricing.power_w < parsed["gaming-pc"].pricing.power_w
    gaming_hours = parsed["gaming-pc"].availability_hours_mask
    assert gaming_hours != parsed["home-server"].availability_hours_mask
    capped = render("regional-site", cpu_count=3)
    assert "cores = 3  # the profile offers 64; this machine has 3" in capped


def test_init_with_a_profile_writes_it_and_never_overwrites_a_config(tmp_path: Path) -> None:
    home = tmp_path / "home"
    made = init(home, "--profile", "streetlight")
    assert made.returncode == 0, made.stderr
    written = (home / "config.toml").read_text()
    assert written == render("streetlight")
    again = init(home, "--profile", "laptop")
    assert again.returncode != 0
    assert again.stderr.count("\n") == 1 and "exists" in again.stderr
    assert (home / "config.toml").read_text() == written


def test_an_unknown_profile_is_one_line_naming_the_profiles_and_creates_nothing(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    result = init(home, "--profile", "toaster")
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1, result.stderr
    assert "'toaster'" in result.stderr and all(name in result.stderr for name in PROFILES)
    assert not home.exists()


def test_the_wheel_ships_every_profile() -> None:
    """pyproject's package data names the profile files (the wheel test builds the wheel)."""
    root = Path(__file__).resolve().parents[2]
    package_data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = package_data["package-data"]["hearth.node"]
    shipped = {p.stem for pattern in patterns for p in (root / "node").glob(pattern)}
    assert set(PROFILES) <= shipped
    assert {p.stem for p in (root / "node" / "profiles").glob("*.toml")} == set(PROFILES)
