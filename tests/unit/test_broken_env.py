"""Every command, in every broken environment: one line and a documented exit code.

The commands come from click's own tree, so a command added later is covered without
touching this file. The environments are what users really meet: a read-only or full
disk, a file where a directory belongs, a directory where a file belongs, missing
directories, a malformed config. Read-only and full disks are real mounts (tests run as
root here, where permission bits stop nothing); where mounting is not permitted those
cases are skipped.

Commands run in-process through click (the real entry point, minus a fork per call: the
matrix is a few hundred calls); the control center and one command are also started as
the real `gpuctl` process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from gpuctl.cli import main
from tests.cli import gpuctl

DOCUMENTED = {0, 1, 2, 3, 4}  # README "Exit codes" (130 is Ctrl-C only)


def commands(group: click.Group = main, path: tuple[str, ...] = ()) -> Iterator[list[str]]:
    """Every command line of the tree with harmless arguments: nothing reaches a cloud,
    nothing trains (a launch stops at its work-dir check, after settings, state and
    presets were read)."""
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            yield [*path, name]
            yield from commands(cmd, (*path, name))
            continue
        args = [*path, name]
        for param in cmd.params:
            if isinstance(param, click.Argument) and param.required:
                args.append("validate" if param.name == "preset" else "nosuch-run")
        if name in ("launch", "run"):
            args += ["--workdir", "/nonexistent/gpuctl-test-workdir"]
        if name == "supervise":  # in the foreground it runs until stopped
            args += ["--status"]
        yield args


# -- the environments -----------------------------------------------------------------------


class Mounts:
    """Real mounts for read-only and full disks, undone after the test."""

    def __init__(self) -> None:
        self.points: list[Path] = []

    def _mount(self, *args: str) -> None:
        done = subprocess.run(["mount", *args], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"mount not permitted here: {done.stderr.strip()}")

    def read_only(self, source: Path, target: Path) -> Path:
        target.mkdir(parents=True, exist_ok=True)
        self._mount("--bind", str(source), str(target))
        self.points.append(target)
        self._mount("-o", "remount,bind,ro", str(target))
        return target

    def tiny(self, target: Path, size: str = "512k") -> Path:
        target.mkdir(parents=True, exist_ok=True)
        self._mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target))
        self.points.append(target)
        return target

    def undo(self) -> None:
        for point in reversed(self.points):
            subprocess.run(["umount", "-l", str(point)], capture_output=True)


def fill(directory: Path) -> None:
    """Write until the disk is full."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0")
    finally:
        os.close(fd)


def populate(home: Path) -> None:
    """A home with a real state database and a config, as any user's has."""
    home.mkdir(parents=True, exist_ok=True)
    invoke(["ls"], {"GPUCTL_HOME": str(home)})
    invoke(["ls", "--runs"], {"GPUCTL_HOME": str(home)})
    assert (home / "state.db").is_file()


Env = dict[str, str | None]
Setup = Callable[[Path, Mounts], Env]


def home(path: Path) -> Env:
    return {"GPUCTL_HOME": str(path)}


def _file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a directory\n")
    return path


def _config(tmp: Path, text: str) -> Env:
    h = tmp / "home"
    h.mkdir()
    (h / "config.toml").write_text(text)
    return home(h)


def _blocked(tmp: Path, name: str, *, as_dir: bool = False) -> Env:
    h = tmp / "home"
    populate(h)
    for stale in (h / name, h / f"{name}-wal", h / f"{name}-shm"):
        stale.unlink(missing_ok=True)
    if as_dir:
        (h / name).mkdir(parents=True, exist_ok=True)
    else:
        _file(h / name)
    return home(h)


def _readonly_home(tmp: Path, mounts: Mounts, *, with_state: bool) -> Env:
    source = tmp / "source"
    if with_state:
        populate(source)
    else:
        source.mkdir()
    return home(mounts.read_only(source, tmp / "ro"))


def _full_home(tmp: Path, mounts: Mounts, *, with_state: bool) -> Env:
    h = mounts.tiny(tmp / "full")
    if with_state:
        populate(h)
    fill(h)
    return home(h)


def _not_utf8(tmp: Path) -> Env:
    env = _config(tmp, "")
    (tmp / "home" / "config.toml").write_bytes(b'default_provider = "\xff"\n')
    return env


def _results(tmp: Path, where: Path) -> Env:
    return _config(tmp, f'results_dir = "{where}"\n')


def _readonly_results(tmp: Path, mounts: Mounts) -> Env:
    source = tmp / "results-source"
    source.mkdir()
    return _results(tmp, mounts.read_only(source, tmp / "results-ro"))


def _xdg(tmp: Path, *, config: Path, data: Path) -> Env:
    return {"GPUCTL_HOME": None, "XDG_CONFIG_HOME": str(config), "XDG_DATA_HOME": str(data)}


def _presets_cycle(tmp: Path) -> Env:
    h = tmp / "home"
    (h / "presets").mkdir(parents=True)
    (h / "presets" / "alpha.toml").write_text('base = "beta"\ndescription = "a"\n')
    (h / "presets" / "beta.toml").write_text('base = "alpha"\ndescription = "b"\n')
    return home(h)


ENVIRONMENTS: dict[str, Setup] = {
    "home is a file": lambda tmp, m: home(_file(tmp / "home")),
    "home under a file": lambda tmp, m: home(_file(tmp / "home") / "sub"),
    "home missing": lambda tmp, m: home(tmp / "not" / "yet" / "there"),
    "home read-only, empty": lambda tmp, m: _readonly_home(tmp, m, with_state=False),
    "home read-only, with state": lambda tmp, m: _readonly_home(tmp, m, with_state=True),
    "disk full, empty": lambda tmp, m: _full_home(tmp, m, with_state=False),
    "disk full, with state": lambda tmp, m: _full_home(tmp, m, with_state=True),
    "state.db is a directory": lambda tmp, m: _blocked(tmp, "state.db", as_dir=True),
    "state.db is not a database": lambda tmp, m: _blocked(tmp, "state.db"),
    "presets dir is a file": lambda tmp, m: _blocked(tmp, "presets"),
    "preset bases in a cycle": lambda tmp, m: _presets_cycle(tmp),
    "cache dir is a file": lambda tmp, m: _blocked(tmp, "cache"),
    "keys dir is a file": lambda tmp, m: _blocked(tmp, "keys"),
    "local runs dir is a file": lambda tmp, m: _blocked(tmp, "local"),
    "gpuctl.log is a directory": lambda tmp, m: _blocked(tmp, "gpuctl.log", as_dir=True),
    "config.toml is a directory": lambda tmp, m: _blocked(tmp, "config.toml", as_dir=True),
    "config.toml is malformed": lambda tmp, m: _config(tmp, "[budget\nmonthly = 3\n"),
    "config.toml is not UTF-8": lambda tmp, m: _not_utf8(tmp),
    "config value is NaN": lambda tmp, m: _config(tmp, "[budget]\nmonthly = nan\n"),
    "results dir is a file": lambda tmp, m: _results(tmp, _file(tmp / "results")),
    "results dir under a file": lambda tmp, m: _results(tmp, _file(tmp / "results") / "x"),
    "results dir read-only": lambda tmp, m: _readonly_results(tmp, m),
    "config dir is a file": lambda tmp, m: _xdg(tmp, config=_file(tmp / "cfg"), data=tmp / "d"),
    "data dir is a file": lambda tmp, m: _xdg(tmp, config=tmp / "cfg", data=_file(tmp / "d")),
}


def invoke(args: list[str], env: Env) -> tuple[int, str, BaseException | None]:
    """One command through click, as the console script runs it; (exit code, output, the
    exception that escaped if any)."""
    runner = CliRunner()
    try:
        result = runner.invoke(main, args, env=env, catch_exceptions=True)
    finally:
        # The log handler is opened once per process; each call here is a new "process".
        log = logging.getLogger("gpuctl")
        for handler in list(log.handlers):
            log.removeHandler(handler)
            handler.close()
    escaped = None if isinstance(result.exception, SystemExit | None) else result.exception
    return result.exit_code, result.output, escaped


@pytest.fixture
def mounts() -> Iterator[Mounts]:
    m = Mounts()
    yield m
    m.undo()


@pytest.mark.parametrize("name", list(ENVIRONMENTS))
def test_every_command_is_one_line_in_a_broken_environment(
    name: str, tmp_path: Path, mounts: Mounts
) -> None:
    env = ENVIRONMENTS[name](tmp_path, mounts)
    problems = []
    for args in commands():
        code, output, escaped = invoke(args, env)
        line = f"gpuctl {' '.join(args)} -> {code}"
        if escaped is not None or "Traceback" in output:
            problems.append(f"{line}: traceback ({escaped!r})\n{output}")
        elif code not in DOCUMENTED:
            problems.append(f"{line}: undocumented exit code\n{output}")
        elif "internal error" in output:
            problems.append(f"{line}: a bug reported as internal error\n{output}")
        elif code != 0 and "error: " not in output and "Error: " not in output:
            problems.append(f"{line}: failed without saying why\n{output}")
    assert not problems, "\n".join(problems)


def test_the_commands_cover_the_whole_tree() -> None:
    """A new command is in the matrix without anyone adding it."""
    names = {" ".join(a[:2]) if a[0] == "cost" else a[0] for a in commands()}
    assert {"ls", "run", "launch", "presets", "status", "down", "download", "cost"} <= names
    assert "cost report" in {" ".join(a[:2]) for a in commands()}


def test_read_only_home_says_not_writable_and_keeps_history(tmp_path: Path, mounts: Mounts) -> None:
    env = _readonly_home(tmp_path, mounts, with_state=True)
    code, output, _ = invoke(["ls"], env)
    assert code == 2
    assert "is not writable" in output
    assert "move it aside" not in output  # that would throw the history away
    assert (Path(str(env["GPUCTL_HOME"])) / "state.db").is_file()


def test_full_disk_names_the_disk(tmp_path: Path, mounts: Mounts) -> None:
    code, output, _ = invoke(["ls"], _full_home(tmp_path, mounts, with_state=False))
    assert code == 2
    assert "no space left" in output


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("home is a file", "is a file, not a directory"),
        ("home under a file", "is a file, not a directory"),
        ("state.db is a directory", "is a directory, not gpuctl's state database"),
        ("config.toml is a directory", "is a directory, not a config file"),
        ("preset bases in a cycle", "in a circle: alpha -> beta -> alpha"),
    ],
)
def test_the_error_says_what_is_wrong(
    name: str, needle: str, tmp_path: Path, mounts: Mounts
) -> None:
    env = ENVIRONMENTS[name](tmp_path, mounts)
    args = ["presets"] if "preset" in name else ["ls"]
    code, output, _ = invoke(args, env)
    assert code == 2
    assert needle in output


def test_download_to_a_path_under_a_file_is_one_line(tmp_path: Path) -> None:
    """Results that cannot be written say where and why (here: a run that exists)."""
    from gpuctl.models import Run, RunStatus
    from gpuctl.state import Store

    h = tmp_path / "home"
    populate(h)
    (h / "local" / "runs" / "r-1").mkdir(parents=True)
    (h / "local" / "runs" / "r-1" / "history.json").write_text("{}")
    with Store(h / "state.db") as store:
        store.add_run(
            Run(
                id="r-1",
                preset="validate",
                provider="local",
                status=RunStatus.FINISHED,
                created_at=1.0,
                updated_at=1.0,
                instance_id="local-r-1",
                remote_dir=str(h / "local" / "runs" / "r-1"),
            )
        )
    blocker = _file(tmp_path / "blocker")
    code, output, escaped = invoke(["download", "r-1", "--to", str(blocker / "out")], home(h))
    assert escaped is None and "Traceback" not in output
    assert code == 2
    assert "error: " in output and str(blocker) in output


# -- the real process -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["home is a file", "home read-only, with state"])
def test_control_center_in_a_broken_environment_is_one_line(
    name: str, tmp_path: Path, mounts: Mounts
) -> None:
    env = {k: v for k, v in ENVIRONMENTS[name](tmp_path, mounts).items() if v is not None}
    done = gpuctl(env=env, timeout=120)
    assert "Traceback" not in done.stdout + done.stderr
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: ")
    assert len(lines) == 2


def test_console_script_in_a_broken_environment_is_one_line(tmp_path: Path) -> None:
    done = gpuctl("ls", env=home(_file(tmp_path / "home")), timeout=120)
    assert "Traceback" not in done.stderr
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "is a file, not a directory" in done.stderr
