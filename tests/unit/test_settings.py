"""config.toml: defaults without a file, and one clear line for every mistake in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuctl import settings
from gpuctl.errors import ConfigError


def write(home: Path, text: str) -> Path:
    path = home / "config.toml"
    path.write_text(text)
    return path


def test_defaults_live_under_gpuctl_home(gpuctl_home: Path) -> None:
    s = settings.load()
    assert s.home == gpuctl_home
    assert s.state_path == gpuctl_home / "state.db"
    assert s.default_provider == "local"
    assert {"local", "ssh", "aws", "digitalocean", "amd"} <= set(s.profiles)
    assert s.profile("amd").provider == "digitalocean"
    assert s.profile("amd").get("token_env") == "AMD_DEVCLOUD_TOKEN"


def test_profiles_override_builtins_and_add_new(gpuctl_home: Path) -> None:
    write(
        gpuctl_home,
        """
default_provider = "aws-east"
providers = ["local", "aws-east"]
[profiles.aws-east]
provider = "aws"
regions = ["us-east-1", "us-east-2"]
[profiles.local]
price_per_hour = 0.5
[budget]
monthly = 300
per_provider = { aws-east = 100 }
""",
    )
    s = settings.load()
    assert s.default_provider == "aws-east"
    assert s.profile("aws-east").get("regions") == ["us-east-1", "us-east-2"]
    assert s.profile("local").get("price_per_hour") == 0.5
    assert s.budget.monthly == 300.0 and s.budget.per_provider["aws-east"] == 100.0


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("default_provider = \n", "not valid TOML"),
        ("[budget]\nmonthly = -5\n", "budget.monthly must be positive"),
        ('[budget]\ncurrency = "EUR"\n', "unknown currency 'EUR'"),
        ('colour = "red"\n', "unknown setting 'colour'"),
        ('[tui]\nrefresh_seconds = "often"\n', "'tui.refresh_seconds' must be a number"),
        ('default_provider = "awz"\n', "default_provider 'awz'"),
        ("[profiles.mine]\nregions = []\n", "profile 'mine' needs provider"),
    ],
)
def test_malformed_config_names_file_and_problem(gpuctl_home: Path, text: str, needle: str) -> None:
    path = write(gpuctl_home, text)
    with pytest.raises(ConfigError) as info:
        settings.load()
    assert needle in str(info.value)
    assert str(path) in str(info.value)


def test_toml_syntax_error_reports_the_line(gpuctl_home: Path) -> None:
    write(gpuctl_home, 'default_provider = "local"\n\n[budget\nmonthly = 3\n')
    with pytest.raises(ConfigError) as info:
        settings.load()
    assert "line 3" in str(info.value)


def test_unknown_provider_profile_suggests(gpuctl_home: Path) -> None:
    with pytest.raises(ConfigError) as info:
        settings.load().profile("digitalocen")
    assert "did you mean 'digitalocean'" in info.value.hint
