"""Provider profiles in config.toml: each kind's keys are declared once (type, default,
help), checked with file and line when the file is read, and listed in the README."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from gpuctl import profile_options, settings
from gpuctl.errors import ConfigError
from gpuctl.providers.digitalocean import DigitalOceanProvider
from tests.cli import gpuctl
from tests.conftest import REPO

README_HEADING = "### Profile keys"


def schema_rows() -> list[tuple[str, str, str, str, str]]:
    """(key, providers, type, default, meaning) per option, as the README table spells it;
    an option that several kinds declare alike is one row."""
    rows: dict[tuple[str, str, str, str], list[str]] = {}
    for o in profile_options.COMMON.values():
        rows[(o.name, o.type, o.default_text(), _meaning(o))] = ["all"]
    for kind, own in profile_options.BY_KIND.items():
        for o in own.values():
            rows.setdefault((o.name, o.type, o.default_text(), _meaning(o)), []).append(kind)
    return [
        (f"`{name}`", ", ".join(kinds), kind, f"`{default}`" if default else "", meaning)
        for (name, kind, default, meaning), kinds in rows.items()
    ]


def _meaning(o: profile_options.Option) -> str:
    was = "".join(f" (was `{old}`, still read)" for old in o.old_names)
    return o.help + was


def readme_rows() -> list[tuple[str, ...]]:
    text = (REPO / "README.md").read_text()
    section = text.split(README_HEADING, 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [tuple(cell.strip() for cell in row.strip("|").split(" | ")) for row in rows]


def test_the_readme_lists_every_profile_key_and_no_other() -> None:
    documented, declared = set(readme_rows()), set(schema_rows())
    assert sorted(declared - documented) == [], "add these rows to the README's table"
    assert sorted(documented - declared) == [], "the README lists keys the schemas lack"


def write(home: Path, text: str) -> Path:
    path = home / "config.toml"
    path.write_text(text)
    return path


def test_a_misspelt_profile_key_is_one_line_with_file_and_line(gpuctl_home: Path) -> None:
    config = write(gpuctl_home, 'providers = ["local"]\n\n[profiles.aws]\npol_seconds = 1\n')
    proc = gpuctl("launch", "validate", "--provider", "local")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: {config} (line 4): unknown setting 'profiles.aws.pol_seconds' for provider aws",
        "hint: did you mean 'poll_seconds'?",
    ]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (gpuctl_home / "local").exists()  # nothing was launched
    if (gpuctl_home / "state.db").exists():
        with sqlite3.connect(gpuctl_home / "state.db") as db:
            assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 0


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ('[profiles.aws]\nregions = ["us-east-1"]\nmax_attempts = "5"\n', 3, "whole number"),
        ("[profiles.digitalocean]\npoll_seconds = 0\n", 2, "must be a positive number"),
        ('[profiles.amd]\nfirewall = "no"\n', 2, "must be true or false"),
        ('[profiles.box]\nprovider = "ssh"\nconnect_timeout = nan\n', 3, "finite"),
        ('[profiles.gpu]\nprovider = "aws"\nssh_port = 70000\n', 3, "from 1 to 65535"),
        # An empty shutdown command would leave every limit on the machine doing nothing.
        ("[profiles.aws]\nshutdown_command = []\n", 2, "is empty"),
        ("[profiles.digitalocean]\nshutdown_command = []\n", 2, "is empty"),
        # A bad value under an old name is reported under the name the user wrote.
        ("[profiles.digitalocean]\npoll_interval = -5\n", 2, "poll_interval must be a positive"),
    ],
)
def test_a_wrong_type_or_value_names_file_and_line(
    gpuctl_home: Path, text: str, line: int, needle: str
) -> None:
    path = write(gpuctl_home, text)
    with pytest.raises(ConfigError) as info:
        settings.load()
    assert f"{path} (line {line}):" in info.value.message
    assert needle in info.value.message


def test_a_key_of_another_kind_says_whose_it_is(gpuctl_home: Path) -> None:
    write(gpuctl_home, '[profiles.local]\nregions = ["us-east-1"]\n')
    with pytest.raises(ConfigError) as info:
        settings.load()
    assert "unknown setting 'profiles.local.regions' for provider local" in info.value.message
    assert info.value.hint == "regions is an option of aws and digitalocean profiles"


def test_an_old_key_name_still_works_with_one_warning(gpuctl_home: Path) -> None:
    config = write(
        gpuctl_home,
        'providers = ["local"]\n\n[profiles.amd]\npoll_interval = 0.25\nboot_timeout = 42\n',
    )
    proc = gpuctl("ls")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {config} (line 4): [profiles.amd] poll_interval is now called poll_seconds;"
        " the old name still works",
        f"warning: {config} (line 5): [profiles.amd] boot_timeout is now called launch_timeout;"
        " the old name still works",
    ]
    profile = settings.load().profile("amd")
    assert (profile.value("poll_seconds"), profile.value("launch_timeout")) == (0.25, 42.0)
    driver = DigitalOceanProvider(profile, settings.load())
    assert (driver.poll_interval, driver.boot_timeout) == (0.25, 42.0)


def test_old_and_new_name_together_is_a_mistake(gpuctl_home: Path) -> None:
    write(gpuctl_home, "[profiles.amd]\npoll_seconds = 1\npoll_interval = 2\n")
    with pytest.raises(ConfigError) as info:
        settings.load()
    assert "(line 3): [profiles.amd] sets both poll_interval and poll_seconds" in (
        info.value.message
    )


def test_defaults_come_from_the_schema(gpuctl_home: Path) -> None:
    loaded = settings.load()
    assert loaded.profile("aws").value("launch_timeout") == 600.0
    assert loaded.profile("digitalocean").value("launch_timeout") == 900.0
    assert loaded.profile("ssh").value("connect_timeout") == 10.0
    assert loaded.profile("local").value("boot_wait") == 300.0  # a COMMON option
    with pytest.raises(KeyError):
        loaded.profile("local").value("regions")  # not a local profile's option


DRIVER_KINDS = {
    "providers/local.py": "local",
    "providers/ssh.py": "ssh",
    "providers/aws.py": "aws",
    "providers/digitalocean.py": "digitalocean",
    "providers/do_firewall.py": "digitalocean",
}
PROFILE_READ = re.compile(r"profile(?:\([^)]*\))?\.(?:get|value)\(\s*\"(\w+)\"")


def test_every_key_the_code_reads_is_declared() -> None:
    """A driver reading a key its kind does not declare would read a value no config can
    set (the loader refuses it): the schema and the code cannot drift apart."""
    undeclared = []
    for path, kind in DRIVER_KINDS.items():
        declared = profile_options.schema(kind) or {}
        for key in PROFILE_READ.findall((REPO / path).read_text()):
            if key not in declared:
                undeclared.append(f"{path}: {key}")
    anywhere = {k for kind in profile_options.BY_KIND for k in profile_options.schema(kind) or {}}
    for path in sorted((REPO / "gpuctl").rglob("*.py")):
        for key in PROFILE_READ.findall(path.read_text()):
            if key not in anywhere:
                undeclared.append(f"{path.relative_to(REPO)}: {key}")
    assert undeclared == []


def test_aws_only_flags_can_be_set_once_in_the_aws_profile(gpuctl_home: Path) -> None:
    """--key-name and --checkpoint-bucket are options of the AWS profile; the flag wins."""
    from gpuctl.lifecycle import Engine

    write(gpuctl_home, '[profiles.aws]\ncheckpoint_bucket = "ckpt"\nkey_name = "mine"\n')
    engine = Engine()
    spec = engine.resolve("validate", provider="aws")
    assert dict(spec.options) == {"checkpoint_bucket": "ckpt", "key_name": "mine"}
    spec = engine.resolve("validate", provider="aws", options={"checkpoint_bucket": "other"})
    assert spec.options["checkpoint_bucket"] == "other"
    assert dict(engine.resolve("validate", provider="local").options) == {}
    write(gpuctl_home, '[profiles.local]\ncheckpoint_bucket = "ckpt"\n')
    with pytest.raises(ConfigError) as info:
        settings.load()
    assert info.value.hint == "checkpoint_bucket is an option of aws profiles"
