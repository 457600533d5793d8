"""A careless or hostile user's own script and project, through the real CLI on `local`.

Tiny scripts stand in for training code (no torch): what is asserted is what the user
sees or would lose: a true status and reason, outputs where the README says, one line
and exit 2 for a mistake, never a traceback or a machine kept by accident.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from gpuctl.state import Store
from tests.cli import GPUCTL, json_lines


def gpuctl(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GPUCTL, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )


def project(tmp_path: Path, toml: str, **files: str) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "gpuctl.toml").write_text(toml)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_an_output_that_is_a_directory_comes_home_with_its_files(
    tmp_path: Path, gpuctl_home: Path
) -> None:
    # It once failed the download ("Is a directory") and kept the machine billing.
    root = project(
        tmp_path,
        '[project]\noutputs = ["plots", "none/*.xyz"]\n[modes.v]\ncommand = "python write.py"\n',
        **{
            "write.py": "import os\nos.makedirs('plots/deep', exist_ok=True)\n"
            "open('plots/a.txt', 'w').write('a')\nopen('plots/deep/b.txt', 'w').write('b')\n"
        },
    )
    proc = gpuctl("run", "v", "--json", cwd=root)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    final = json_lines(proc.stdout)[-1]
    assert final["status"] == "finished", final
    results = Path(final["results_dir"])
    assert (results / "plots" / "a.txt").read_text() == "a"
    assert (results / "plots" / "deep" / "b.txt").read_text() == "b"
    assert not (results / "none").exists()  # a glob that matches nothing is no error


def test_a_command_typed_in_the_root_or_a_huge_directory_is_refused_before_any_run(
    tmp_path: Path, gpuctl_home: Path
) -> None:
    # In `/` it once tried to copy the whole disk and ended in an internal error.
    huge = tmp_path / "downloads"
    huge.mkdir()
    for i in range(20_001):
        (huge / f"f{i}").touch()
    for where, says in ((Path("/"), "is /: gpuctl would upload all of it"), (huge, "20,000")):
        proc = gpuctl("run", "--command", "echo hi", "--provider", "local", cwd=where)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 2 and says in lines[0] and "--workdir" in lines[1], lines
    with Store(gpuctl_home / "state.db") as store:
        assert store.list_runs() == []
