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
        ('[tui]\nrefresh_seconds = "often"\n', "tui.refresh_seconds must be a number"),
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


def test_a_per_provider_budget_for_an_unknown_profile_is_refused(gpuctl_home: Path) -> None:
    """A misspelt profile there would leave that provider without its budget."""
    (gpuctl_home / "config.toml").write_text("[budget]\nper_provider = { Local = 1 }\n")
    with pytest.raises(ConfigError) as info:
        settings.load()
    assert "(line 2)" in info.value.message and "unknown profile 'Local'" in info.value.message
    assert "did you mean 'local'" in info.value.hint


# Every value is checked when the file is read: type, range, finite; the error names the
# file and the line of the key, in its own table (the same key may sit in several).
@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("[budget]\nmonthly = 5\n[defaults]\nmax_hours = 0\n", 4, "defaults.max_hours"),
        ("[defaults]\nteardown = 'keep'\nmax_hours = -3\n", 3, "must be a positive number"),
        ("[defaults]\n\nidle_minutes = -1\n", 3, "defaults.idle_minutes must be at least 0"),
        ("[defaults]\nidle_minutes = nan\n", 2, "must be a finite number"),
        ("[defaults]\nmax_hours = inf\n", 2, "must be a finite number"),
        ("[defaults]\nteardown = 'destroy'\n", 2, "defaults.teardown must be"),
        ("[tui]\nrefresh_seconds = 0\n", 2, "tui.refresh_seconds must be at least 1"),
        ("# budget\n[budget]\nmonthly = nan\n", 3, "budget.monthly must be a finite number"),
        ("[budget]\nmonthly = inf\n", 2, "budget.monthly must be a finite number"),
        ("[budget]\nwarn_fraction = 1.5\n", 2, "budget.warn_fraction must be less than 1"),
        ("[budget]\nper_provider = { aws = nan }\n", 2, "budget.per_provider.aws"),
        ('[profiles.local]\nprice_per_hour = "free"\n', 2, "price_per_hour must be a number"),
        ("[profiles.local]\nprice_per_hour = nan\n", 2, "must be a finite number"),
        ("[profiles.local]\nprice_per_hour = -1\n", 2, "must be zero or more"),
        ('[profiles.aws]\nregions = "us-east-1"\n', 2, "profiles.aws.regions must be a list"),
        ('[profiles.mine]\nprovider = "awz"\n', 2, "unknown provider 'awz'"),
        ("[profiles.aws]\nssh_port = 0\n", 2, "profiles.aws.ssh_port"),
        ('\nproviders = "local"\n', 2, "providers must be a list"),
        ("results_dir = 3\n", 1, "results_dir must be a non-empty string"),
        ("[defaults]\nmax_hours = 2\n[tui]\nmax_hours = 2\n", 4, "unknown setting 'tui.max_hours'"),
        ('[notify]\nurls = "json://h/x"\n', 2, "notify.urls must be a list of URLs"),
        ('[notify]\nurls = ["json://h/x", "nohook"]\n', 2, "notify.urls[1] is not a notif"),
        ('[notify]\nevents = ["finish"]\n', 2, "notify.events: unknown event 'finish'"),
        ('[notify]\nurl = ["json://h/x"]\n', 2, "unknown setting 'notify.url'"),
    ],
)
def test_every_value_is_checked_with_file_and_line(
    gpuctl_home: Path, text: str, line: int, needle: str
) -> None:
    path = write(gpuctl_home, text)
    with pytest.raises(ConfigError) as info:
        settings.load()
    message = str(info.value)
    assert needle in message
    assert message.startswith(f"{path} (line {line}): ")


def test_valid_values_are_kept(gpuctl_home: Path) -> None:
    write(
        gpuctl_home,
        "[defaults]\nmax_hours = 2\nidle_minutes = 0\n[tui]\nrefresh_seconds = 5\n"
        '[budget]\ncurrency = "usd"\nmonthly = 10\n',
    )
    s = settings.load()
    assert (s.max_hours, s.idle_minutes, s.refresh_seconds) == (2.0, 0.0, 5.0)
    assert s.budget.monthly == 10.0


def test_notify_defaults_to_every_event_and_keeps_what_is_set(gpuctl_home: Path) -> None:
    assert settings.load().notify.urls == ()
    write(gpuctl_home, '[notify]\nurls = ["ntfy://topic", "json://h:9/x"]\nevents = ["failed"]\n')
    s = settings.load()
    assert s.notify.urls == ("ntfy://topic", "json://h:9/x")
    assert s.notify.wants("failed") and not s.notify.wants("finished")
    write(gpuctl_home, '[notify]\nurls = ["ntfy://topic"]\n')
    assert settings.load().notify.wants("budget_80")


def test_a_bad_notify_url_is_named_by_its_place_never_by_its_text(gpuctl_home: Path) -> None:
    write(gpuctl_home, '[notify]\nurls = ["tgram-bot-token-12345"]\n')
    with pytest.raises(ConfigError) as info:
        settings.load()
    assert "notify.urls[0]" in str(info.value) and "12345" not in str(info.value)


def test_config_path_that_is_a_directory_is_one_line(gpuctl_home: Path) -> None:
    (gpuctl_home / "config.toml").mkdir()
    with pytest.raises(ConfigError) as info:
        settings.load()
    assert "is a directory, not a config file" in str(info.value)
