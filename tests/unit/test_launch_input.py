"""Launch input that cannot mean what the user asked: refused before anything starts.

NaN and infinities in any number, a work dir that is a file or empty, flags the chosen
provider would ignore. Each is one line, exit 2, and no run is recorded.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpuctl.cli import main
from gpuctl.lifecycle import Engine


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    log = logging.getLogger("gpuctl")
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def no_runs() -> bool:
    return Engine().store.list_runs() == []


@pytest.mark.parametrize("flag", ["--budget", "--max-hours", "--idle-minutes", "--max-price"])
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "infinity"])
def test_nan_and_infinities_are_refused_in_number_flags(flag: str, value: str) -> None:
    code, output = invoke("launch", "validate", flag, value)
    assert code == 2
    assert "must be a finite number" in output
    assert no_runs()


def test_nan_never_reaches_the_engine_from_the_tui_or_a_script() -> None:
    """The engine's own check, behind the CLI's: the TUI and scripts call resolve()."""
    from gpuctl.errors import ConfigError

    eng = Engine()
    for kwargs in (
        {"max_hours": float("nan")},
        {"budget": float("inf")},
        {"idle_minutes": float("nan")},
        {"max_price": float("nan")},
    ):
        with pytest.raises(ConfigError, match="finite"):
            eng.resolve("validate", **kwargs)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "lr=nan"], "lr"),
        (["--set", "warmup_epochs=inf"], "warmup_epochs"),
        (["--max-hours", "0"], "must be a positive number"),
        (["--idle-minutes", "-1"], "at least 0"),
        (["--set", "epochs=99999999999999999999"], "'epochs' must be below"),
    ],
)
def test_other_bad_numbers_are_refused(args: list[str], needle: str) -> None:
    code, output = invoke("launch", "validate", *args)
    assert code == 2 and needle in output
    assert no_runs()


def test_workdir_that_is_a_file_says_so(tmp_path: Path) -> None:
    f = tmp_path / "train.py"
    f.write_text("print(1)\n")
    code, output = invoke("launch", "validate", "--workdir", str(f))
    assert code == 2
    assert "is a file, not a directory" in output
    assert "does not exist" not in output
    assert no_runs()


def test_empty_workdir_is_an_error_not_ignored() -> None:
    code, output = invoke("launch", "validate", "--workdir", "")
    assert code == 2
    assert "--workdir is empty" in output
    assert no_runs()


@pytest.mark.parametrize(
    "args",
    [
        ["--spot"],
        ["--type", "p4d.24xlarge"],
        ["--region", "us-east-1"],
        ["--regions", "us-east-1,us-west-2"],
        ["--max-price", "2"],
        ["--image", "ami-123"],
        ["--disk", "200"],
        ["--fallback", "on-demand"],
        ["--host", "root@10.0.0.1"],
        ["--key-name", "mine"],
    ],
)
def test_flags_the_local_provider_ignores_are_refused(args: list[str]) -> None:
    code, output = invoke("launch", "validate", "--provider", "local", *args)
    assert code == 2
    assert f"{args[0]} does nothing on the local provider" in output
    assert "A100" not in output and "estimate" not in output  # nothing was priced
    assert no_runs()


@pytest.mark.parametrize("args", [["--spot"], ["--type", "g5.xlarge"], ["--disk", "200"]])
def test_flags_the_ssh_provider_ignores_are_refused(args: list[str]) -> None:
    code, output = invoke("launch", "validate", "--provider", "ssh", "--host", "u@h", *args)
    assert code == 2
    assert f"{args[0]} does nothing on the ssh provider" in output
    assert no_runs()


def test_disk_is_refused_on_digitalocean_where_sizes_fix_the_disk() -> None:
    code, output = invoke("launch", "validate", "--provider", "amd", "--disk", "500")
    assert code == 2
    assert "--disk does nothing on the digitalocean provider" in output
    assert "aws" in output  # the hint names a provider that honours it


def test_the_refusal_hint_names_the_providers_that_honour_the_flag() -> None:
    code, output = invoke("launch", "validate", "--spot")
    assert code == 2
    assert "aws" in output and "digitalocean" in output


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_an_identity_that_is_not_a_key_file_is_refused_before_any_run(
    what: str, tmp_path: Path
) -> None:
    key = tmp_path / "id_ed25519"
    if what == "directory":
        key.mkdir()
    code, output = invoke(
        "launch", "validate", "--provider", "ssh", "--host", "me@127.0.0.1", "--identity", str(key)
    )
    assert code == 2, output
    assert str(key) in output and ("does not exist" in output or "is a directory" in output)
    assert "Traceback" not in output and len(output.strip().splitlines()) <= 2
    assert no_runs()


@pytest.mark.parametrize("key", ["run_id", "out_dir", "preset", "workdir"])
def test_a_set_of_a_key_gpuctl_fills_in_is_refused_not_ignored(key: str) -> None:
    code, output = invoke("launch", "validate", "--set", f"{key}=../../etc")
    assert code == 2, output
    assert f"--set {key}: gpuctl sets this itself" in output
    assert no_runs()


@pytest.mark.parametrize("command", ["status", "stop", "logs", "resume", "download"])
def test_an_empty_run_id_never_means_the_only_run(command: str) -> None:
    """`gpuctl stop "$RUN"` with RUN empty (a failed launch in a script) must not stop
    the one run there is: "" is a prefix of every id."""
    from gpuctl.models import Run, RunStatus

    eng = Engine()
    eng.store.add_run(Run("validate-261203-abcd", "validate", "local", RunStatus.RUNNING, 1, 1))
    code, output = invoke(command, "")
    assert code == 2, output
    assert "no run id given" in output
    assert eng.store.get_run("validate-261203-abcd").status == RunStatus.RUNNING
