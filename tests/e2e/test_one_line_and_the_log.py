"""Mistakes before a launch create nothing; errors are one line here, details in gpuctl.log.

The real `gpuctl` console script: a bad `--host`, an `--instance` that does not exist or
a provider without credentials is refused before any run is recorded, with no "run X"
line that would say something started; one provider without credentials does not hide
the others' offers; every error (and a bug's traceback) is written to gpuctl.log.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpuctl.state import Store
from tests.cli import gpuctl, json_lines

REPO = Path(__file__).resolve().parents[2]


def runs_recorded(home: Path) -> list[str]:
    db = home / "state.db"
    if not db.exists():
        return []
    with Store(db) as store:
        return [r.id for r in store.list_runs()]


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--provider", "ssh", "--host", "root@"], 2, "bad host 'root@': no machine name"),
        (["--provider", "ssh", "--host", "a@b:99999"], 2, "bad port in 'a@b:99999'"),
        (["--instance", "nosuch"], 2, "instance nosuch not found on local"),
        (["--provider", "amd"], 3, "AMD_DEVCLOUD_TOKEN"),
    ],
    ids=["host-without-name", "port-out-of-range", "no-such-instance", "no-credentials"],
)
@pytest.mark.parametrize("command", ["launch", "run"])
def test_a_launch_refused_up_front_records_and_announces_nothing(
    gpuctl_home: Path, command: str, args: list[str], code: int, needle: str
) -> None:
    proc = gpuctl(command, "validate", *args)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert proc.stdout == ""  # no run id, no "run validate-...: preset ..." line
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr
    assert "validate-" not in proc.stderr and "Traceback" not in proc.stderr
    assert runs_recorded(gpuctl_home) == []
    listed = gpuctl("ls", "--runs", "--json")
    assert listed.returncode == 0 and json_lines(listed.stdout) == []
    assert needle in (gpuctl_home / "gpuctl.log").read_text()  # and the log has it


def test_offers_show_every_provider_that_answers_and_warn_for_the_others(
    gpuctl_home: Path,
) -> None:
    (gpuctl_home / "config.toml").write_text('providers = ["local", "amd"]\n')
    proc = gpuctl("offers")
    assert proc.returncode == 0, proc.stderr
    assert any(ln.startswith("local ") for ln in proc.stdout.splitlines()), proc.stdout
    (warning,) = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert warning.startswith("warning: amd:") and "AMD_DEVCLOUD_TOKEN" in warning
    as_json = gpuctl("offers", "--json")
    assert as_json.returncode == 0, as_json.stderr
    rows = json_lines(as_json.stdout)
    assert {r.get("provider") for r in rows if "instance_type" in r} == {"local"}
    (problem,) = [r for r in rows if r.get("event") == "provider_error"]
    assert problem["provider"] == "amd" and "AMD_DEVCLOUD_TOKEN" in problem["error"]
    # Asked for by name, the one provider's error is the answer.
    only = gpuctl("offers", "--provider", "amd")
    assert only.returncode == 3 and "AMD_DEVCLOUD_TOKEN" in only.stderr


def test_user_errors_are_logged_even_before_the_engine_exists(gpuctl_home: Path) -> None:
    missing = gpuctl("status", "validate-000000-dead")
    assert missing.returncode == 2
    cfg = gpuctl_home / "config.toml"
    cfg.write_text("[budget\nmonthly = 5\n")
    broken = gpuctl("presets")  # fails reading the config, before any engine
    assert broken.returncode == 2
    for proc in (missing, broken):
        assert len([ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]) == 1
        assert "Traceback" not in proc.stderr
    log = (gpuctl_home / "gpuctl.log").read_text()
    assert "no run 'validate-000000-dead'" in log
    assert str(cfg) in log and "line" in log


BROKEN = '''
from gpuctl.driver_registry import register
from gpuctl.providers.local import LocalProvider


class BrokenProvider(LocalProvider):
    """A provider with a bug: its offers raise what no error handler expects."""

    def offers(self, *, gpu=None, region=None):
        raise RuntimeError("offers table is None")


register("broken", f"{__name__}:BrokenProvider")
'''


def test_an_internal_error_is_one_line_and_its_traceback_goes_to_the_log(
    gpuctl_home: Path, tmp_path: Path
) -> None:
    """A bug in a provider plugin: the user reads one line, the log has the traceback."""
    (tmp_path / "brokenplugin.py").write_text(BROKEN)
    (gpuctl_home / "config.toml").write_text(
        'providers = ["local", "mine"]\n[profiles.mine]\nprovider = "broken"\n'
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    code = "import brokenplugin, sys; from gpuctl.cli import main; sys.exit(main())"
    proc = subprocess.run(
        [sys.executable, "-c", code, "offers", "--provider", "mine"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[0] == "error: internal error: RuntimeError: offers table is None"
    assert lines[1] == f"hint: details in {gpuctl_home / 'gpuctl.log'}" and len(lines) == 2
    log = (gpuctl_home / "gpuctl.log").read_text()
    assert "Traceback (most recent call last)" in log
    assert "brokenplugin.py" in log and "RuntimeError: offers table is None" in log
