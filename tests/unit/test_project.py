"""The project file: modes, defaults and every mistake as one line with file and line.

A mistake in gpuctl.toml must cost nothing: the CLI says where it is, exits 2 and records
no run, before any machine is asked for.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpuctl.cli import main
from gpuctl.errors import ConfigError
from gpuctl.lifecycle import Engine
from gpuctl.project import discover, find, load

GOOD = """\
[project]
name = "tiny"
checkpoint = "ck/last.pt"
resume = "--resume {checkpoint}"
outputs = ["ck/best.pt", "metrics/*.json"]
secrets = ["TINY_TOKEN"]
grace_seconds = 20

[setup]
commands = ["pip install -r requirements.txt"]
depends = ["requirements.txt"]

[env]
SEED = 3

[data.digits]
src = "data/digits"

[modes.validate]
description = "smoke"
command = "python train.py --epochs 1"
epochs = 1
max_hours = 0.5
spot = true

[modes.bench]
preset = "validate"
[modes.bench.train]
epochs = 1
"""


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    log = logging.getLogger("gpuctl")
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def project_dir(tmp_path: Path, text: str = GOOD) -> Path:
    root = tmp_path / "proj"
    (root / "data" / "digits").mkdir(parents=True)
    (root / "requirements.txt").write_text("torch\n")
    (root / "gpuctl.toml").write_text(text)
    return root


def test_a_project_reads_as_declared(tmp_path: Path) -> None:
    root = project_dir(tmp_path)
    project = load(root / "gpuctl.toml")
    assert project.name == "tiny"
    assert list(project.modes) == ["validate", "bench"]
    validate = project.modes["validate"]
    assert validate.command == "python train.py --epochs 1"
    assert validate.epochs == 1 and dict(validate.launch) == {"max_hours": 0.5, "spot": True}
    assert validate.line == GOOD.splitlines().index("[modes.validate]") + 1
    assert project.modes["bench"].preset == "validate"
    assert project.env == {"SEED": "3"}
    assert project.data[0].src == str((root / "data" / "digits").resolve())
    assert project.data[0].target == "data/digits"
    # The dataset goes to the machine's cache once, not with every code upload.
    assert "data/digits" in project.upload_excludes()
    assert "ck/last.pt" in project.upload_excludes()  # a local checkpoint is not a fresh run's


def test_setup_runs_again_only_when_what_it_depends_on_changes(tmp_path: Path) -> None:
    root = project_dir(tmp_path)
    first = load(root / "gpuctl.toml").setup_key()
    assert load(root / "gpuctl.toml").setup_key() == first
    (root / "train.py").write_text("print('changed code')\n")
    assert load(root / "gpuctl.toml").setup_key() == first  # code is not a dependency
    (root / "requirements.txt").write_text("torch\nnumpy\n")
    assert load(root / "gpuctl.toml").setup_key() != first


def test_setup_that_depends_on_a_directory_runs_again_when_a_file_in_it_changes(
    tmp_path: Path,
) -> None:
    root = project_dir(
        tmp_path, GOOD.replace('depends = ["requirements.txt"]', 'depends = ["pkg"]')
    )
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "sub" / "setup.cfg").write_text("[metadata]\nname = a\n")
    first = load(root / "gpuctl.toml").setup_key()
    assert load(root / "gpuctl.toml").setup_key() == first
    (root / "pkg" / "sub" / "setup.cfg").write_text("[metadata]\nname = b\n")
    assert load(root / "gpuctl.toml").setup_key() != first


def test_the_project_is_found_from_a_subdirectory_but_not_past_a_repository(
    tmp_path: Path,
) -> None:
    root = project_dir(tmp_path)
    (root / "src" / "deep").mkdir(parents=True)
    assert find(root / "src" / "deep") == root / "gpuctl.toml"
    other = tmp_path / "proj" / "vendored"
    (other / ".git").mkdir(parents=True)
    assert find(other) is None  # a repository inside the project is its own project
    assert discover(tmp_path) is None


MISTAKES = [
    ('[modes.v]\ncomand = "python t.py"\n', 2, "unknown key 'comand'", "did you mean 'command'"),
    ('[modes.v]\ncommand = "a"\nepochs = "3"\n', 3, "must be a whole number", ""),
    ('[modes.v]\ncommand = "a"\nmax_hours = -1\n', 3, "finite number >= 0", ""),
    ('[modes.v\ncommand = "a"\n', 1, "not valid TOML", ""),
    ('[modes.v]\ndescription = "x"\n', 1, "exactly one of command", ""),
    ('[modes.v]\ncommand = "a"\npreset = "fast"\n', 1, "exactly one of command", ""),
    ('[modes.v]\npreset = "fastest"\n', 2, "unknown preset 'fastest'", ""),
    ('[modes.v]\npreset = "fast"\n[modes.v.train]\nepochz = 3\n', 3, "epochz", ""),
    ('[modes."Big.Mode"]\ncommand = "a"\n', 1, "mode name 'Big.Mode'", "big-mode"),
    ('[project]\nresume = "--resume {checkpoint}"\n[modes.v]\ncommand = "a"\n', 2, "resume", ""),
    ('[project]\ncheckpoint = "../x.pt"\n[modes.v]\ncommand = "a"\n', 2, "inside the project", ""),
    ('[project]\noutputs = ["a;rm -rf x"]\n[modes.v]\ncommand = "a"\n', 2, "outputs", ""),
    ('[project]\nresume = "--r {ckpt}"\ncheckpoint = "c"\n[modes.v]\ncommand = "a"\n', 2, "", ""),
    ('[env]\nGPUCTL_RUN_ID = "x"\n[modes.v]\ncommand = "a"\n', 2, "gpuctl's own", ""),
    ('[project]\nsecrets = ["K"]\n[env]\nK = "v"\n[modes.v]\ncommand = "a"\n', 4, "secrets", ""),
    ('[data.d]\nsrc = "gpuctl.toml"\n[modes.v]\ncommand = "a"\n', 2, "is not a directory", ""),
    ('[data.d]\nsrc = "s3://"\n[modes.v]\ncommand = "a"\n', 2, "names no bucket", ""),
    ("[modes]\n", 1, "declares no modes", ""),
    ('[trainer]\nx = 1\n[modes.v]\ncommand = "a"\n', 1, "unknown section 'trainer'", ""),
    ('[project]\ncheckpoint = "./"\n[modes.v]\ncommand = "a"\n', 2, "inside the project", ""),
    ('[project]\noutputs = ["."]\n[modes.v]\ncommand = "a"\n', 2, "inside the project", ""),
    # Huge or zero limits: once failed mid-launch with a recorded run (1e308 h is inf s).
    ('[modes.v]\ncommand = "a"\nmax_hours = 1e308\n', 3, "at most 8,760 h", ""),
    ('[modes.v]\ncommand = "a"\nmax_hours = 0\n', 3, "more than 0", ""),
    ('[modes.v]\ncommand = "a"\nbudget = 0\n', 3, "more than 0", ""),
    ('[modes.v]\ncommand = "a"\ndisk_gb = 100000000000\n', 3, "at most", ""),
    ('[project]\ngrace_seconds = 1e300\n[modes.v]\ncommand = "a"\n', 2, "at most", ""),
    ('[modes.v]\ncommand = "   "\n', 2, "is blank", ""),
    # [env] is literal: these once reached the command unexpanded ("sh" not found).
    ('[env]\nPATH = "/opt/bin"\n[modes.v]\ncommand = "a"\n', 2, "never expanded", "$PATH"),
    ('[env]\nX = "${HOME}/x"\n[modes.v]\ncommand = "a"\n', 2, "never expanded", ""),
    # A NUL once killed the agent on the machine (the run was lost, not failed).
    ('[env]\nE = "a\\u0000b"\n[modes.v]\ncommand = "a"\n', 2, "NUL", ""),
    ('[modes.v]\ncommand = "python t.py \\u0000"\n', 2, "NUL", ""),
    ('[setup]\ncommands = ["a\\u0000"]\n[modes.v]\ncommand = "a"\n', 2, "NUL", ""),
]


@pytest.mark.parametrize(("text", "line", "says", "hint"), MISTAKES)
def test_every_mistake_names_the_file_and_line_and_nothing_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, line: int, says: str, hint: str
) -> None:
    root = project_dir(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load(root / "gpuctl.toml")
    assert raised.value.message.startswith(f"{root.resolve() / 'gpuctl.toml'}:{line}: ")
    assert says in raised.value.message
    assert hint in (raised.value.hint or "") + raised.value.message
    monkeypatch.chdir(root)
    code, output = invoke("launch", "v", "--provider", "local")
    assert code == 2
    assert len(output.strip().splitlines()) <= 2  # the error and its hint
    assert "Traceback" not in output
    assert Engine().store.list_runs() == []


def test_a_mode_naming_an_unknown_provider_says_where_and_records_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project_dir(tmp_path, '[modes.v]\ncommand = "a"\nprovider = "nope"\n')
    monkeypatch.chdir(root)
    code, output = invoke("launch", "v")
    assert code == 2
    assert output.startswith(f"error: {root.resolve() / 'gpuctl.toml'}:1: mode 'v': ")
    assert "unknown provider 'nope'" in output
    assert Engine().store.list_runs() == []


@pytest.mark.parametrize("kind", ["directory", "link-loop", "dangling-link"])
def test_a_project_file_that_is_not_a_file_is_refused_not_passed_by(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    # Passed by, `gpuctl run validate` ran the bundled validate preset instead of the script.
    root = tmp_path / "proj"
    root.mkdir()
    path = root / "gpuctl.toml"
    if kind == "directory":
        path.mkdir()
    elif kind == "link-loop":
        (root / "a").symlink_to(root / "b")
        (root / "b").symlink_to(root / "a")
        path.symlink_to(root / "a")
    else:
        path.symlink_to(root / "gone.toml")
    monkeypatch.chdir(root)
    code, output = invoke("launch", "validate", "--provider", "local")
    assert code == 2
    assert output.startswith(f"error: {path} is not a readable file")
    assert "Traceback" not in output
    assert Engine().store.list_runs() == []


def test_a_name_that_is_neither_mode_nor_preset_lists_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project_dir(tmp_path))
    code, output = invoke("launch", "validat", "--provider", "local")
    assert code == 2
    assert "unknown mode or preset 'validat'" in output
    assert "did you mean 'validate'" in output
    assert "validate, bench" in output
    assert Engine().store.list_runs() == []


def test_a_secret_that_is_not_set_here_stops_the_launch_before_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project_dir(tmp_path))
    monkeypatch.delenv("TINY_TOKEN", raising=False)
    code, output = invoke("launch", "validate", "--provider", "local")
    assert code == 2
    assert "secret TINY_TOKEN" in output and "not set in your environment" in output
    assert Engine().store.list_runs() == []
    monkeypatch.setenv("TINY_TOKEN", "")  # set, but to nothing: said so, not "not set"
    code, output = invoke("launch", "validate", "--provider", "local")
    assert code == 2 and "secret TINY_TOKEN" in output and "is empty in your environment" in output
    assert Engine().store.list_runs() == []


def test_set_is_refused_for_a_command_mode_and_with_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project_dir(tmp_path))
    monkeypatch.setenv("TINY_TOKEN", "t")
    code, output = invoke("launch", "validate", "--provider", "local", "--set", "epochs=3")
    assert code == 2 and "runs your command" in output
    code, output = invoke("launch", "--command", "python x.py", "--set", "epochs=3")
    assert code == 2 and "not a --command" in output
    code, output = invoke("launch", "validate", "--command", "python x.py")
    assert code == 2 and "not both" in output
    code, output = invoke("launch", "--command", "  ")
    assert code == 2 and "--command is empty" in output
    code, output = invoke("launch")
    assert code == 2 and "name a preset or a mode" in output
    assert Engine().store.list_runs() == []


def test_presets_lists_the_modes_of_the_project_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project_dir(tmp_path))
    code, output = invoke("presets")
    assert code == 0
    lines = output.splitlines()
    assert lines[0].startswith("modes of tiny")
    mode_row = next(line for line in lines if line.startswith("validate "))
    assert "python train.py --epochs 1" in mode_row
    assert "here validate run the project's mode" in output
    assert any(line.startswith("fast ") for line in lines)  # the bundled ones follow
    assert os.environ.get("GPUCTL_HOME")  # the test ran in its own data directory


def test_a_missing_dataset_is_refused_at_launch_with_its_line_but_presets_still_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project_dir(tmp_path, '[data.d]\nsrc = "not-made-yet"\n[modes.v]\ncommand = "a"\n')
    monkeypatch.chdir(root)
    code, output = invoke("presets")
    assert code == 0 and "modes of proj" in output
    code, output = invoke("launch", "v", "--provider", "local")
    assert code == 2
    assert f"{root.resolve() / 'gpuctl.toml'}:2: dataset d:" in output
    assert "does not exist" in output
    assert Engine().store.list_runs() == []
