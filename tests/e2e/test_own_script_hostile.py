"""A careless or hostile user's own script and project, through the real CLI on `local`.

Tiny scripts stand in for training code (no torch): what is asserted is what the user
sees or would lose: a true status and reason, outputs where the README says, one line
and exit 2 for a mistake, never a traceback or a machine kept by accident.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from gpuctl.state import Store
from tests.cli import GPUCTL, json_lines
from tests.e2e.test_local_cli import wait_for


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
            # A newline in a name once lost the file (the listing split it in two).
            "open('plots/deep/two\\nlines c.txt', 'w').write('c')\n"
        },
    )
    proc = gpuctl("run", "v", "--json", cwd=root)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    final = json_lines(proc.stdout)[-1]
    assert final["status"] == "finished", final
    results = Path(final["results_dir"])
    assert (results / "plots" / "a.txt").read_text() == "a"
    assert (results / "plots" / "deep" / "b.txt").read_text() == "b"
    assert (results / "plots" / "deep" / "two\nlines c.txt").read_text() == "c"
    assert not (results / "none").exists()  # a glob that matches nothing is no error


def test_a_command_typed_in_the_root_or_a_huge_directory_is_refused_before_any_run(
    tmp_path: Path, gpuctl_home: Path
) -> None:
    # In `/` it once tried to copy the whole disk and ended in an internal error.
    huge = tmp_path / "downloads"
    huge.mkdir()
    for i in range(20_001):
        (huge / f"f{i}").touch()
    for where, says in (
        (Path("/"), "(/) is too wide: gpuctl would upload all of it"),
        (huge, "20,000"),
    ):
        proc = gpuctl("run", "--command", "echo hi", "--provider", "local", cwd=where)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 2 and says in lines[0] and "--workdir" in lines[1], lines
    proc = gpuctl("run", "validate", "--workdir", "/", "--provider", "local", cwd=tmp_path)
    assert proc.returncode == 2 and "work directory / is too wide" in proc.stderr
    with Store(gpuctl_home / "state.db") as store:
        assert store.list_runs() == []


IGNORES_SIGTERM = """\
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(os.path.join(os.environ["GPUCTL_RUN_DIR"], "script.pid"), "w").write(str(os.getpid()))
print("Epoch 1/5 loss 1.0", flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def test_a_script_that_ignores_sigterm_is_killed_after_its_grace(
    tmp_path: Path, gpuctl_home: Path
) -> None:
    # It once sat in "stopping" with its script alive: the stop waited 90 s whatever the
    # grace, and nothing killed the script once the `gpuctl stop` that asked went away.
    root = project(
        tmp_path,
        '[project]\ngrace_seconds = 2\n[modes.v]\ncommand = "python ignore.py"\nepochs = 5\n',
        **{"ignore.py": IGNORES_SIGTERM},
    )
    launched = gpuctl("launch", "v", cwd=root)
    assert launched.returncode == 0, launched.stderr
    run_id = launched.stdout.strip()
    pid_file = gpuctl_home / "local" / "runs" / run_id / "script.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text(), what="the script's pid")
    pid = int(pid_file.read_text())
    # A client that gives up half-way (a closed terminal) must not leave it stopping.
    asked = subprocess.Popen([GPUCTL, "stop", run_id], cwd=root, stdin=subprocess.DEVNULL)
    wait_for(lambda: "stopping" in gpuctl("status", run_id, cwd=root).stdout, what="stopping")
    asked.kill()
    asked.wait()
    wait_for(lambda: not alive(pid), timeout=60, what="the script killed")
    wait_for(
        lambda: "stopped" in gpuctl("status", run_id, cwd=root).stdout.splitlines()[1],
        what="the run stopped",
    )
    stopped = gpuctl("stop", run_id, cwd=root, timeout=60)  # a second stop: quick, no error
    assert "Traceback" not in stopped.stderr
    status = gpuctl("status", run_id, "--json", cwd=root)
    assert json.loads(status.stdout)["status"] == "stopped"


def test_two_first_runs_of_a_mode_at_once_both_finish_and_set_up_once(
    tmp_path: Path, gpuctl_home: Path
) -> None:
    # Both once staged gpuctl's code in one shared directory (one died with an internal
    # error) and both ran the setup at once (two `pip install` in one environment).
    count = tmp_path / "setup-runs.txt"
    root = project(
        tmp_path,
        f'[setup]\ncommands = ["echo ran >> {count}; sleep 2"]\n'
        '[data.d]\nsrc = "d"\n'
        '[modes.v]\ncommand = "python -c \\"print(open(\'d/x.txt\').read())\\""\n',
    )
    (root / "d").mkdir()
    (root / "d" / "x.txt").write_text("data-here")
    procs = [
        subprocess.Popen(
            [GPUCTL, "run", "v", "--json"],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, out[-2000:] + err[-2000:]
        final = json_lines(out)[-1]
        assert final["status"] == "finished", final
        assert "data-here" in (Path(final["results_dir"]) / "train.log").read_text()
    assert count.read_text().splitlines() == ["ran"]


HALF_WRITES = """\
import json, os, signal, time
def term(*_):
    with open("ck.txt", "w") as f:
        f.write("half")
        f.flush()
        time.sleep(600)
signal.signal(signal.SIGTERM, term)
open("ck.txt", "w").write("good")
print(json.dumps({"gpuctl": "checkpoint"}), flush=True)
print(json.dumps({"gpuctl": "epoch", "epoch": 1, "epochs": 5, "loss": 1.0}), flush=True)
time.sleep(600)
"""


def test_a_checkpoint_half_written_when_the_grace_ran_out_does_not_replace_the_good_one(
    tmp_path: Path, gpuctl_home: Path
) -> None:
    root = project(
        tmp_path,
        '[project]\ngrace_seconds = 2\ncheckpoint = "ck.txt"\nresume = "--resume {checkpoint}"\n'
        '[modes.v]\ncommand = "python half.py"\nepochs = 5\n',
        **{"half.py": HALF_WRITES},
    )
    launched = gpuctl("launch", "v", cwd=root)
    assert launched.returncode == 0, launched.stderr
    run_id = launched.stdout.strip()
    last = gpuctl_home / "local" / "runs" / run_id / "last.pt"
    wait_for(lambda: last.exists() and last.read_text() == "good", what="the good checkpoint")
    stopped = gpuctl("stop", run_id, cwd=root)
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(gpuctl("status", run_id, "--json", cwd=root).stdout)["status"] == "stopped"
    assert last.read_text() == "good"  # what `gpuctl resume` puts back


def test_ten_megabytes_without_a_newline_do_not_flood_the_terminal(
    tmp_path: Path, gpuctl_home: Path
) -> None:
    root = project(
        tmp_path,
        '[modes.v]\ncommand = "python big.py"\n',
        **{"big.py": "import sys\nsys.stdout.write('x' * 10_000_000)\n"},
    )
    proc = gpuctl("run", "v", cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(proc.stdout) + len(proc.stderr) < 100_000
    assert ": mode v on local" in proc.stdout  # the user's command, not "preset v"
    assert "more characters in train.log]" in proc.stdout + proc.stderr
    run_id = Store(gpuctl_home / "state.db").list_runs()[0].id
    logs = gpuctl("logs", run_id, cwd=root)
    assert logs.stdout.count("x") == 10_000_000  # the log itself keeps every character


ESCAPES = """\
import os, time
if os.fork() == 0:
    os.setsid()  # out of the command's process group
    open(os.environ["DAEMON_PID"], "w").write(str(os.getpid()))
    time.sleep(600)
else:
    while not os.path.exists(os.environ["DAEMON_PID"]):
        time.sleep(0.05)
    print("parent exits")
"""


def test_a_daemon_the_command_left_outside_its_group_ends_with_the_run(
    tmp_path: Path, gpuctl_home: Path
) -> None:
    # It once went on for ever on the user's own machine after the run finished.
    pid_file = tmp_path / "daemon.pid"
    root = project(
        tmp_path,
        f'[env]\nDAEMON_PID = "{pid_file}"\n[modes.v]\ncommand = "python escape.py"\n',
        **{"escape.py": ESCAPES},
    )
    proc = gpuctl("run", "v", "--json", cwd=root)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert json_lines(proc.stdout)[-1]["status"] == "finished"
    pid = int(pid_file.read_text())
    assert not alive(pid)
