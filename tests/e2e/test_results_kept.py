"""Results are never thrown away, and every hint names a command that works in that state.

The real CLI against the local provider: the real trainer (validate preset, CPU), the
agent and the state store. A local "machine" is the run directory under GPUCTL_HOME/local;
terminating it deletes that directory, exactly as terminating a cloud machine deletes its
disk, so "the results are gone" is a directory that no longer exists.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from gpuctl.state import Store
from tests.cli import GPUCTL, gpuctl, json_lines
from tests.e2e.test_local_cli import SLOW, assert_clean_failure, nothing_created, wait_for
from tests.unit.test_state import make_run

pytestmark = pytest.mark.slow

RESULTS = ("best.pt", "last.pt", "history.json", "train.log")


def launch(*args: str) -> str:
    proc = gpuctl("launch", "validate", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def machine(home: Path, run_id: str) -> Path:
    return home / "local" / "runs" / run_id


def wait_finished(home: Path, run_id: str) -> None:
    status = machine(home, run_id) / "status.json"

    def done() -> bool:
        try:
            return json.loads(status.read_text()).get("phase") == "finished"
        except (OSError, ValueError):
            return False

    wait_for(done, 180, "the trainer to finish")
    agent = machine(home, run_id) / "agent_status.json"
    wait_for(lambda: '"exited"' in agent.read_text(), 60, "the agent to exit")


def set_results_dir(home: Path, path: Path) -> None:
    (home / "config.toml").write_text(f'results_dir = "{path}"\n')


def hint_of(proc: subprocess.CompletedProcess[str]) -> str:
    return "\n".join(ln for ln in proc.stderr.splitlines() if ln.startswith("hint:"))


def test_down_downloads_first_then_download_logs_stop_resume_lead_somewhere(
    gpuctl_home: Path, tmp_path: Path
) -> None:
    """`RUN=$(gpuctl launch validate); ...; gpuctl down $RUN; gpuctl download $RUN`."""
    run_id = launch()
    wait_finished(gpuctl_home, run_id)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    bad = gpuctl("download", run_id, "--to", str(blocker / "sub"))
    assert_clean_failure(bad, "is under")
    assert machine(gpuctl_home, run_id).is_dir()

    down = gpuctl("down", run_id)  # no terminal: download first, then terminate
    assert down.returncode == 0, down.stderr
    assert "terminated" in down.stdout and "downloaded" in down.stdout
    assert not machine(gpuctl_home, run_id).exists()
    saved = gpuctl_home / "results" / run_id
    for name in RESULTS:
        assert (saved / name).is_file(), name
    assert [h["epoch"] for h in json.loads((saved / "history.json").read_text())] == [1, 2]

    again = gpuctl("download", run_id)
    assert again.returncode == 0, again.stderr
    assert str(saved) in again.stdout
    elsewhere = tmp_path / "copy"
    copy = gpuctl("download", run_id, "--to", str(elsewhere))
    assert copy.returncode == 0, copy.stderr
    for name in RESULTS:
        assert (elsewhere / name).read_bytes() == (saved / name).read_bytes(), name
    under_file = gpuctl("download", run_id, "--to", str(blocker / "sub"))
    assert_clean_failure(under_file, "is under")

    logs = gpuctl("logs", run_id)
    assert logs.returncode == 0, logs.stderr
    assert "finished 2 epochs" in logs.stdout
    follow = gpuctl("logs", run_id, "-f")
    assert follow.returncode == 0, follow.stderr
    assert "finished 2 epochs" in follow.stdout

    stop = gpuctl("stop", run_id)
    assert stop.returncode == 0, stop.stderr
    assert "already finished" in stop.stdout

    resume = gpuctl("resume", run_id)
    assert_clean_failure(resume, "already finished")
    assert str(saved) in resume.stderr
    assert "gpuctl run validate" in hint_of(resume)


def test_down_yes_mid_training_brings_the_checkpoint_home(gpuctl_home: Path) -> None:
    run_id = launch(*SLOW)
    history = machine(gpuctl_home, run_id) / "history.json"
    wait_for(
        lambda: history.exists() and len(json.loads(history.read_text() or "[]")) >= 1,
        120,
        "one epoch",
    )
    down = gpuctl("down", run_id, "--yes")
    assert down.returncode == 0, down.stderr
    assert not machine(gpuctl_home, run_id).exists()
    saved = gpuctl_home / "results" / run_id
    assert (saved / "last.pt").is_file() and (saved / "train.log").is_file()
    assert len(json.loads((saved / "history.json").read_text())) >= 1


def test_down_keeps_the_machine_when_its_results_cannot_be_saved(
    gpuctl_home: Path, tmp_path: Path
) -> None:
    run_id = launch()
    wait_finished(gpuctl_home, run_id)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    set_results_dir(gpuctl_home, blocker / "results")
    down = gpuctl("down", run_id, "--yes")
    assert_clean_failure(down, "not terminated")
    assert "--discard-results" in hint_of(down)
    assert (machine(gpuctl_home, run_id) / "last.pt").is_file()  # still there, with results
    kept = gpuctl("status", run_id).stdout
    assert "finished: after it ended: local-" in kept and "kept" in kept, kept

    discard = gpuctl("down", run_id, "--yes", "--discard-results")
    assert discard.returncode == 0, discard.stderr
    assert "terminated" in discard.stdout
    assert not machine(gpuctl_home, run_id).exists()
    gone = gpuctl("status", run_id).stdout
    assert "instance removed without its results (discarded)" in gone, gone


def test_a_down_that_kept_the_machine_never_says_it_was_removed(
    gpuctl_home: Path, tmp_path: Path
) -> None:
    """Truth in every view: the run's reason says where the machine is, after each step."""
    run_id = launch(*SLOW)
    history = machine(gpuctl_home, run_id) / "history.json"
    wait_for(lambda: history.exists(), 120, "one epoch")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    set_results_dir(gpuctl_home, blocker / "results")
    down = gpuctl("down", run_id, "--yes")
    assert_clean_failure(down, "not terminated")
    assert (machine(gpuctl_home, run_id) / "last.pt").is_file()
    with Store(gpuctl_home / "state.db") as store:
        run = store.get_run(run_id)
    assert run.status.value == "stopped" and "removed" not in run.reason, run.reason
    assert f"local-{run_id} kept" in run.reason
    status = gpuctl("status", run_id)
    assert "removed" not in status.stdout and "kept" in status.stdout, status.stdout

    assert gpuctl("down", run_id, "--yes", "--discard-results").returncode == 0
    with Store(gpuctl_home / "state.db") as store:
        assert store.get_run(run_id).reason == "stopped by user: instance removed"


def test_down_orphans_saves_a_finished_runs_results_or_leaves_it(
    gpuctl_home: Path, tmp_path: Path
) -> None:
    run_id = launch()
    wait_finished(gpuctl_home, run_id)
    good = gpuctl_home / "results"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    set_results_dir(gpuctl_home, blocker / "results")
    left = gpuctl("down", "--orphans", "--yes")
    assert left.returncode == 2, (left.stdout, left.stderr)
    assert "Traceback" not in left.stderr
    assert f"left local-{run_id}" in left.stderr and "could not be downloaded" in left.stderr
    assert (machine(gpuctl_home, run_id) / "last.pt").is_file()

    set_results_dir(gpuctl_home, good)
    down = gpuctl("down", "--orphans", "--yes")
    assert down.returncode == 0, down.stderr
    assert "results not downloaded yet" in down.stdout
    assert not machine(gpuctl_home, run_id).exists()
    for name in RESULTS:
        assert (good / run_id / name).is_file(), name


@pytest.mark.parametrize("command", ["run", "launch"])
def test_an_unusable_results_dir_is_refused_before_anything_is_created(
    gpuctl_home: Path, tmp_path: Path, command: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    set_results_dir(gpuctl_home, blocker / "results")
    proc = gpuctl(command, "validate")
    assert_clean_failure(proc, "results_dir")
    assert "is under" in proc.stderr and "config.toml" in hint_of(proc)
    assert nothing_created(gpuctl_home)


def test_a_results_dir_whose_bits_say_writable_but_is_not_is_refused_too(
    gpuctl_home: Path,
) -> None:
    """/proc looks writable to root (permission bits are not the whole truth); the download
    would fail after the whole run. It is refused up front, and nothing is left there."""
    set_results_dir(gpuctl_home, Path("/proc/gpuctl-results"))
    proc = gpuctl("launch", "validate")
    assert_clean_failure(proc, "not writable")
    assert nothing_created(gpuctl_home)


def test_run_whose_download_fails_keeps_the_machine_and_says_how_to_get_them(
    gpuctl_home: Path,
) -> None:
    """The results dir passes the launch check, then its run's folder is a file by the end."""
    proc = subprocess.Popen(
        [GPUCTL, "run", "validate", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())
    assert first["event"] == "resolved"
    run_id = first["run_id"]
    in_the_way = gpuctl_home / "results" / run_id
    in_the_way.parent.mkdir(parents=True, exist_ok=True)
    in_the_way.write_text("a file where the run's results should go")
    rest, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, (rest[-2000:], err)
    assert "Traceback" not in err
    (failed,) = [e for e in json_lines(rest) if e["event"] == "failed"]
    assert "could not be saved" in failed["error"] and "kept" in failed["error"]
    assert f"gpuctl download {run_id} --to" in failed["hint"]
    assert f"gpuctl down {run_id}" in failed["hint"]
    assert (machine(gpuctl_home, run_id) / "best.pt").is_file()  # not torn down
    assert Store(gpuctl_home / "state.db").get_run(run_id).status.value == "finished"

    in_the_way.unlink()
    down = gpuctl("down", run_id)
    assert down.returncode == 0, down.stderr
    assert (in_the_way / "best.pt").is_file()
    assert not machine(gpuctl_home, run_id).exists()


def test_a_run_with_nothing_left_says_what_exists_and_exits_2(gpuctl_home: Path) -> None:
    """Its machine is gone and nothing reached this machine: every hint is a way forward."""
    run_id = "validate-261123-0dea"
    with Store(gpuctl_home / "state.db") as store:
        store.add_run(
            make_run(
                run_id,
                status="interrupted",
                reason="instance gone: local-" + run_id,
                instance_id="local-" + run_id,
                remote_dir=str(machine(gpuctl_home, run_id)),
            )
        )
    resume = gpuctl("resume", run_id)
    assert_clean_failure(resume, "no checkpoint to resume from")
    assert "no results were saved" in resume.stderr
    assert "gpuctl run validate" in hint_of(resume)

    for args in (["download", run_id], ["download", run_id, "--to", "out"], ["logs", run_id]):
        proc = gpuctl(*args)
        assert_clean_failure(proc, "no live machine")
        assert f"gpuctl status {run_id}" in hint_of(proc), args
        assert f"gpuctl {args[0]} {run_id}" not in hint_of(proc), args

    stop = gpuctl("stop", run_id)
    assert stop.returncode == 0, stop.stderr
    assert "already interrupted" in stop.stdout
    assert Store(gpuctl_home / "state.db").get_run(run_id).status.value == "interrupted"


def test_a_prompt_that_gets_no_answer_changes_nothing(gpuctl_home: Path) -> None:
    """In a terminal, `down` asks what to do with results never downloaded; the end of input
    (Ctrl-D, a closed pipe) is a "no": one line, exit 2, the machine and its results kept."""
    import shutil

    script = shutil.which("script")  # util-linux: runs the command on a pseudo-terminal
    assert script, "util-linux `script` is needed to give gpuctl a terminal"
    run_id = launch()
    wait_finished(gpuctl_home, run_id)
    proc = subprocess.run(
        [script, "-qec", f"{GPUCTL} down {run_id}", "/dev/null"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "not confirmed (no answer); nothing was changed" in proc.stdout
    assert "Aborted!" not in proc.stdout and "Traceback" not in proc.stdout
    assert (machine(gpuctl_home, run_id) / "last.pt").is_file()
