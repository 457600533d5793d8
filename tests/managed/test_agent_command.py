"""The agent runs a user's own training command (agent.json `job`) and writes the files
the bundled trainer writes, so everything gpuctl reads on the laptop works unchanged.

Real agent, real `sh`, real stdlib scripts written here; no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gpuctl.trainer import protocol
from tests.managed.conftest import REPO, Machine, wait_for

PY = shlex.quote(sys.executable)

JSON_SCRIPT = """
import sys
from gpuctl_report import report, start, step
start(epochs=3)
for epoch in range(1, 4):
    for s in range(1, 5):
        step(s, 4, epoch=epoch)
    report(epoch, loss=1.0 / epoch, val_loss=1.5 / epoch, metric=0.5 + epoch / 10, lr=0.01,
           flag=True, bad=float("nan"))
print("done training")
"""


def project(machine: Machine, script: str, name: str = "train.py") -> Path:
    cwd = machine.root / "project"
    cwd.mkdir(exist_ok=True)
    (cwd / name).write_text(script)
    return cwd


def job(cwd: Path, command: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "command",
        "command": command,
        "cwd": str(cwd),
        "checkpoint": "",
        "resume_args": "",
        "setup": [],
        "setup_key": "",
        "setup_dir": str(cwd.parent / "setup"),
        "epochs": None,
        "env": {},
        "secret_env": [],
        "data": [],
        **extra,
    }


def run_to_end(machine: Machine, env: dict[str, str] | None = None) -> dict[str, Any]:
    machine.agent("start", env=env)
    return wait_for(
        lambda: machine.status() if machine.status().get("state") == "exited" else None,
        what="the agent to record the end",
    )


def events(machine: Machine) -> list[dict[str, Any]]:
    text = (machine.run_dir / protocol.EVENTS_FILE).read_text()
    return [json.loads(line) for line in text.splitlines()]


def epoch_ends(machine: Machine) -> list[dict[str, Any]]:
    return [e for e in events(machine) if e["event"] == protocol.TrainerEvent.EPOCH_END]


def history(machine: Machine) -> list[dict[str, Any]]:
    return json.loads((machine.run_dir / protocol.HISTORY_FILE).read_text())


def train_log(machine: Machine) -> str:
    return (machine.run_dir / protocol.TRAIN_LOG_FILE).read_text()


def test_a_json_reporting_script_gives_the_trainers_files(machine: Machine) -> None:
    cwd = project(machine, JSON_SCRIPT)
    machine.configure(job=job(cwd, f"{PY} train.py"))
    status = run_to_end(machine)
    assert status["exit_code"] == 0
    ends = epoch_ends(machine)
    assert [e["epoch"] for e in ends] == [1, 2, 3]
    assert [e["warmup"] for e in ends] == [True, False, False]
    assert all(e["epochs"] == 3 and e["epoch_seconds"] >= 0 for e in ends)
    rows = history(machine)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[1]["train_loss"] == 0.5 and rows[1]["val_loss"] == 0.75
    assert rows[2]["val_metric"] == pytest.approx(0.8) and rows[2]["lr"] == 0.01
    assert "flag" not in rows[0] and "bad" not in rows[0]  # a bool, a NaN: not numbers
    trainer = machine.trainer_status()
    assert trainer["phase"] == protocol.Phase.FINISHED
    assert trainer["epochs_done"] == 3 and trainer["epochs"] == 3
    assert trainer["best_metric"] == pytest.approx(0.8)
    kinds = [e["event"] for e in events(machine)]
    assert kinds[0] == protocol.TrainerEvent.START
    assert kinds[-1] == protocol.TrainerEvent.FINISHED
    assert "done training" in train_log(machine)  # the command's output is the log


def test_reports_on_stdout_and_broken_ones_never_stop_the_run(machine: Machine) -> None:
    script = """
import json, os, sys
os.environ.pop("GPUCTL_EVENTS")
from gpuctl_report import report
print("{not json")
print(json.dumps({"gpuctl": "epoch", "epoch": "two", "loss": 1}))
print(json.dumps({"gpuctl": "epoch", "epoch": 1, "loss": "x", "val_loss": 0.5}))
print(json.dumps({"some": "other json"}))
report(2, epochs=2, loss=0.25)
"""
    cwd = project(machine, script)
    machine.configure(job=job(cwd, f"{PY} train.py"))
    status = run_to_end(machine)
    rows = history(machine)
    assert [(r["epoch"], r["train_loss"], r["val_loss"]) for r in rows] == [
        (1, None, 0.5),
        (2, 0.25, None),
    ]
    assert status["reports_ignored"] >= 2
    assert machine.trainer_status()["phase"] == protocol.Phase.FINISHED


def test_a_plain_printing_script_has_its_epochs_recognised(machine: Machine) -> None:
    script = """
import time
print("loading data")
for epoch in range(1, 4):
    time.sleep(0.05)
    fields = f"train loss: {1 / epoch:.3f} val_loss={2 / epoch:.3f} acc {epoch / 10}"
    print(f"Epoch {epoch}/3 - {fields}")
"""
    cwd = project(machine, script)
    machine.configure(job=job(cwd, f"{PY} train.py"))
    run_to_end(machine)
    ends = epoch_ends(machine)
    assert [e["epoch"] for e in ends] == [1, 2, 3]
    assert [e["train_loss"] for e in ends] == [1.0, 0.5, 0.333]
    assert [e["val_loss"] for e in ends] == [2.0, 1.0, 0.667]
    assert ends[2]["val_metric"] == pytest.approx(0.3)
    assert machine.trainer_status()["epochs_done"] == 3


def test_a_keras_like_script_has_its_epochs_and_validation_recognised(machine: Machine) -> None:
    script = """
for epoch in range(1, 3):
    print(f"Epoch {epoch}/2")
    print(f"20/50 [====>.....] - ETA: 1s - loss: 0.9{epoch}")
    print(f"50/50 [==========] - 2s 40ms/step - loss: 0.{epoch}1 - accuracy: 0.7 - "
          f"val_loss: 0.{epoch}5 - val_accuracy: 0.8{epoch}")
"""
    cwd = project(machine, script)
    machine.configure(job=job(cwd, f"{PY} train.py"))
    run_to_end(machine)
    ends = epoch_ends(machine)
    assert [(e["epoch"], e["train_loss"], e["val_loss"]) for e in ends] == [
        (1, 0.11, 0.15),
        (2, 0.21, 0.25),
    ]
    assert [e["val_metric"] for e in ends] == [0.81, 0.82]  # validation, not training
    assert machine.trainer_status()["steps_per_epoch"] == 50


def test_epoch_headers_alone_count_each_epoch_once_the_next_begins(machine: Machine) -> None:
    """`Epoch N/M` at each epoch's start: N-1 is done when N begins, the last at a clean exit."""
    script = """
import time
for epoch in range(1, 4):
    print(f"== Epoch {epoch}/3 ==", flush=True)
    time.sleep(0.3)
"""
    cwd = project(machine, script)
    machine.configure(job=job(cwd, f"{PY} train.py"))
    run_to_end(machine)
    assert [e["epoch"] for e in epoch_ends(machine)] == [1, 2, 3]


def test_a_tqdm_like_script_has_its_epochs_and_steps_recognised(machine: Machine) -> None:
    script = """
import sys, time
for epoch in range(1, 3):
    for n in range(0, 11, 5):
        bar = "#" * n + " " * (10 - n)
        rate = f"[00:01<00:01, 4.9it/s, loss={1 / epoch:.2f}]"
        sys.stderr.write(f"\\rEpoch {epoch}/2: {n * 10:3d}%|{bar}| {n}/10 {rate}")
        sys.stderr.flush()
        time.sleep(0.02)
    sys.stderr.write("\\n")
    print(f"epoch {epoch}/2 val_loss {0.9 / epoch:.2f}", flush=True)
"""
    cwd = project(machine, script)
    machine.configure(job=job(cwd, f"{PY} train.py"))
    run_to_end(machine)
    ends = epoch_ends(machine)
    assert [e["epoch"] for e in ends] == [1, 2]
    assert [e["train_loss"] for e in ends] == [1.0, 0.5]
    assert [e["val_loss"] for e in ends] == [0.9, 0.45]  # the line after the full bar
    trainer = machine.trainer_status()
    assert trainer["steps_per_epoch"] == 10 and trainer["epochs"] == 2
    assert trainer["phase"] == protocol.Phase.FINISHED


def test_a_failing_script_fails_the_run_with_its_last_line(machine: Machine) -> None:
    script = """
import sys
print("Epoch 1/5 loss 0.3")
print("RuntimeError: CUDA out of memory", file=sys.stderr)
print("")
sys.exit(3)
"""
    cwd = project(machine, script)
    machine.configure(job=job(cwd, f"{PY} train.py"))
    status = run_to_end(machine)
    assert status["exit_code"] == 3
    trainer = machine.trainer_status()
    assert trainer["phase"] == protocol.Phase.FAILED
    assert trainer["reason"] == "exit code 3: RuntimeError: CUDA out of memory"
    assert events(machine)[-1]["event"] == protocol.TrainerEvent.FAILED
    assert [e["epoch"] for e in epoch_ends(machine)] == [1]


def test_a_project_missing_on_the_machine_fails_the_run_with_a_reason(machine: Machine) -> None:
    machine.configure(job=job(machine.root / "nowhere", f"{PY} train.py"))
    status = run_to_end(machine)
    trainer = machine.trainer_status()
    assert trainer["phase"] == protocol.Phase.FAILED
    assert "nowhere is not on the machine" in trainer["reason"]
    assert status["exit_code"] == 1


CHECKPOINTING_SCRIPT = """
import json, os, signal, sys, time
from pathlib import Path
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(time.time()))
shell = os.getppid()
Path("started").write_text("")
while not stop:
    time.sleep(0.05)
time.sleep(1)  # sh is gone by now; the agent must still wait
Path("checkpoints").mkdir(exist_ok=True)
state = {"saved_at": time.time(), "shell_died_first": os.getppid() != shell}
Path("checkpoints/last.pt").write_text(json.dumps(state))
"""


def test_a_stop_waits_for_the_script_after_its_shell_died(machine: Machine) -> None:
    cwd = project(machine, CHECKPOINTING_SCRIPT)
    # `; true`: sh forks the script instead of exec'ing it, and dies at the SIGTERM
    command = f"{PY} train.py; true"
    machine.configure(job=job(cwd, command, checkpoint="checkpoints/last.pt"), grace_seconds=30)
    machine.agent("start")
    wait_for(lambda: (cwd / "started").exists(), what="the script to start")
    answer = machine.agent("stop")
    status = machine.status()
    assert status["state"] == "exited"
    state = json.loads((cwd / "checkpoints" / "last.pt").read_text())
    assert state["shell_died_first"]  # sh died at the SIGTERM, the script went on
    saved = state["saved_at"]
    assert status["ended_at"] >= saved  # it waited for the script, not for sh
    assert answer["killed"] is False
    last = machine.run_dir / protocol.LAST_CHECKPOINT_FILE
    assert json.loads(last.read_text())["saved_at"] == saved  # mirrored to last.pt
    assert status["checkpoint"]["kind"] == "file"
    trainer = machine.trainer_status()
    assert trainer["phase"] == protocol.Phase.INTERRUPTED
    assert trainer["reason"] == protocol.StopReason.USER


def test_what_a_finished_command_left_in_the_background_does_not_hold_the_run(
    machine: Machine,
) -> None:
    script = "print('Epoch 1/1 loss 0.5')"
    cwd = project(machine, script)
    command = f"sleep 300 & echo $! > leftover.pid; {PY} train.py"
    machine.configure(job=job(cwd, command))
    status = run_to_end(machine)
    assert status["exit_code"] == 0 and status["leftovers_stopped"] is True
    assert not pid_running(int((cwd / "leftover.pid").read_text()))
    assert machine.trainer_status()["phase"] == protocol.Phase.FINISHED


def test_a_limit_kills_a_command_that_ignores_sigterm_group_and_all(machine: Machine) -> None:
    script = """
import signal, subprocess, sys, time
from pathlib import Path
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import signal, time; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
Path("pids").write_text(f"{child.pid}")
time.sleep(120)
"""
    cwd = project(machine, script)
    machine.configure(job=job(cwd, f"{PY} train.py; true"), max_seconds=1, grace_seconds=1)
    status = run_to_end(machine)
    assert status["reason"].startswith(protocol.StopReason.MAX_HOURS)
    child = int((cwd / "pids").read_text())
    assert not pid_running(child)  # the whole group went, not only sh
    trainer = machine.trainer_status()
    assert trainer["phase"] == protocol.Phase.INTERRUPTED
    assert trainer["reason"].startswith(protocol.StopReason.MAX_HOURS)


def pid_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_resume_on_a_fresh_machine_restores_the_checkpoint_and_continues(
    machine: Machine,
) -> None:
    script = """
import json, os, sys
from pathlib import Path
from gpuctl_report import report
args = sys.argv[1:]
print("args", json.dumps(args), "resume", os.environ.get("GPUCTL_RESUME"))
print("ckpt", Path(args[1]).read_text(), os.environ["GPUCTL_CHECKPOINT"] == args[1])
report(2, epochs=2, loss=0.2)
"""
    cwd = project(machine, script)
    # carried from the machine that was taken away: last.pt, history, events
    (machine.run_dir / protocol.LAST_CHECKPOINT_FILE).write_text("weights of epoch 1")
    row = {"epoch": 1, "train_loss": 0.4, "val_loss": None, "val_metric": None}
    (machine.run_dir / protocol.HISTORY_FILE).write_text(json.dumps([row]))
    old = {"event": protocol.TrainerEvent.EPOCH_END, "epoch": 1, "epochs": 2, "warmup": True}
    (machine.run_dir / protocol.EVENTS_FILE).write_text(json.dumps(old) + "\n")
    spec = job(
        cwd,
        f"{PY} train.py",
        checkpoint="ckpt/model.pt",
        resume_args="--resume {checkpoint} --note {other}",  # braces of its own: kept
    )
    machine.configure(job=spec, resume=True)
    status = run_to_end(machine)
    restored = cwd / "ckpt" / "model.pt"
    assert restored.read_text() == "weights of epoch 1"
    log = train_log(machine)
    args = ["--resume", str(restored), "--note", "{other}"]
    assert f"args {json.dumps(args)} resume 1" in log
    assert "ckpt weights of epoch 1 True" in log
    assert status["checkpoint"]["kind"] == "file"
    assert [r["epoch"] for r in history(machine)] == [1, 2]
    assert [e["epoch"] for e in epoch_ends(machine)] == [1, 2]  # appended to the carried
    assert machine.trainer_status()["phase"] == protocol.Phase.FINISHED


def test_a_directory_checkpoint_round_trips_through_last_pt(machine: Machine) -> None:
    script = """
import sys
from pathlib import Path
from gpuctl_report import checkpoint, report
if "--resume" in sys.argv:
    d = Path(sys.argv[-1])
    weights, opt = (d / "model.bin").read_bytes().hex(), (d / "sub" / "opt.txt").read_text()
    print("resumed from", d.name, weights, opt)
else:
    Path("ckpt/sub").mkdir(parents=True)
    Path("ckpt/model.bin").write_bytes(bytes(range(256)))
    Path("ckpt/sub/opt.txt").write_text("adam state")
    Path("ckpt/empty").mkdir()
    checkpoint()
    report(1, epochs=1, loss=0.1)
"""
    cwd = project(machine, script)
    spec = job(cwd, f"{PY} train.py", checkpoint="ckpt", resume_args="--resume {checkpoint}")
    machine.configure(job=spec)
    status = run_to_end(machine)
    last = machine.run_dir / protocol.LAST_CHECKPOINT_FILE
    assert status["checkpoint"]["kind"] == "dir"
    assert tarfile.is_tarfile(last)
    checkpoints = [e for e in events(machine) if e["event"] == protocol.TrainerEvent.CHECKPOINT]
    assert checkpoints and checkpoints[0]["path"] == str(last)
    # a fresh machine: the project without its checkpoint
    for path in sorted((cwd / "ckpt").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (cwd / "ckpt").rmdir()
    machine.configure(job=spec, resume=True)
    run_to_end(machine)
    assert (cwd / "ckpt" / "model.bin").read_bytes() == bytes(range(256))
    assert (cwd / "ckpt" / "empty").is_dir()
    assert f"resumed from ckpt {bytes(range(256)).hex()} adam state" in train_log(machine)


def test_a_checkpoint_archive_with_a_path_out_of_the_project_is_refused(
    machine: Machine,
) -> None:
    cwd = project(machine, "print('ran')")
    last = machine.run_dir / protocol.LAST_CHECKPOINT_FILE
    evil = machine.root / "evil.txt"
    evil.write_text("x")
    with tarfile.open(last, "w") as tar:
        tar.addfile(tarfile.TarInfo(".gpuctl-checkpoint-dir"))
        tar.add(evil, arcname="../evil.txt")
    spec = job(cwd, f"{PY} train.py", checkpoint="ckpt", resume_args="--resume {checkpoint}")
    machine.configure(job=spec, resume=True)
    run_to_end(machine)
    trainer = machine.trainer_status()
    assert trainer["phase"] == protocol.Phase.FAILED
    assert "refused member '../evil.txt'" in trainer["reason"]
    assert "ran" not in train_log(machine)
    assert not (cwd / "evil.txt").exists() and not (cwd / "ckpt").exists()


def test_setup_runs_once_per_key_on_a_machine(machine: Machine) -> None:
    cwd = project(machine, "print('training')")
    setup = ["echo installed >> installs.txt"]
    spec = job(cwd, f"{PY} train.py", setup=setup, setup_key="k1")
    machine.configure(job=spec)
    run_to_end(machine)
    assert "[gpuctl] setup: echo installed >> installs.txt" in train_log(machine)
    assert (cwd.parent / "setup" / "k1.done").exists()
    machine.configure(job=spec)
    run_to_end(machine)
    assert (cwd / "installs.txt").read_text() == "installed\n"
    assert "done before on this machine (key k1), skipped" in train_log(machine)
    machine.configure(job={**spec, "setup_key": "k2"})
    run_to_end(machine)
    assert (cwd / "installs.txt").read_text() == "installed\ninstalled\n"
    assert machine.trainer_status()["phase"] == protocol.Phase.FINISHED


def test_a_failing_setup_fails_the_run_and_the_command_never_runs(machine: Machine) -> None:
    cwd = project(machine, "open('ran', 'w').close()")
    setup = ["echo one", "echo no such package >&2; exit 4", "echo three"]
    machine.configure(job=job(cwd, f"{PY} train.py", setup=setup, setup_key="k1"))
    status = run_to_end(machine)
    trainer = machine.trainer_status()
    assert trainer["phase"] == protocol.Phase.FAILED
    assert trainer["reason"] == "setup failed (exit 4): echo no such package >&2; exit 4"
    assert status["exit_code"] == 1
    assert not (cwd / "ran").exists()
    assert not (cwd.parent / "setup" / "k1.done").exists()
    log = train_log(machine)
    assert "no such package" in log and "three" not in log


def test_a_stop_during_setup_stops_it(machine: Machine) -> None:
    cwd = project(machine, "open('ran', 'w').close()")
    setup = ["touch setting-up; sleep 60"]
    machine.configure(job=job(cwd, f"{PY} train.py", setup=setup, setup_key="k1"))
    machine.agent("start")
    wait_for(lambda: (cwd / "setting-up").exists(), what="the setup to start")
    machine.agent("stop")
    assert machine.status()["state"] == "exited"
    assert machine.trainer_status()["phase"] == protocol.Phase.INTERRUPTED
    assert not (cwd / "ran").exists()
    assert not (cwd.parent / "setup" / "k1.done").exists()


def test_a_secret_reaches_the_command_only_and_no_file(machine: Machine) -> None:
    secret = "wandb-secret-value-0123456789"
    script = """
import hashlib, os
print("hash", hashlib.sha256(os.environ["WANDB_API_KEY"].encode()).hexdigest())
print("urls given", "GPUCTL_DATA_URLS_IMAGES" in os.environ)
"""
    cwd = project(machine, script)
    spec = job(
        cwd,
        f"{PY} train.py",
        secret_env=["WANDB_API_KEY"],
        env={"DATA_DIR": "data"},
        setup=["echo setup"],
        setup_key="k1",
    )
    machine.configure(job=spec)
    env = {**os.environ, "WANDB_API_KEY": secret}
    run_to_end(machine, env=env)
    log = train_log(machine)
    assert f"hash {hashlib.sha256(secret.encode()).hexdigest()}" in log
    assert "urls given False" in log
    for root in (machine.run_dir, cwd.parent / "setup"):
        for path in root.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


class Bucket:
    """A local http.server standing in for S3's presigned GETs; counts what it served."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.served: list[str] = []
        bucket = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                bucket.served.append(self.path)
                super().do_GET()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=root))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def urls(self, *keys: str) -> str:
        port = self.server.server_address[1]
        objects = []
        for key in keys:
            path = self.root / key
            size = path.stat().st_size if path.exists() else 0
            etag = hashlib.md5(path.read_bytes()).hexdigest() if path.exists() else ""
            url = f"http://127.0.0.1:{port}/{key}?X-Amz-Signature=s3cr3t"
            objects.append({"key": key, "url": url, "size": size, "etag": etag})
        return json.dumps(objects)


@pytest.fixture
def bucket(tmp_path: Path) -> Iterator[Bucket]:
    root = tmp_path / "bucket"
    (root / "train").mkdir(parents=True)
    (root / "train" / "a.bin").write_bytes(os.urandom(3000))
    (root / "labels.csv").write_text("a,1\n")
    served = Bucket(root)
    yield served
    served.server.shutdown()


def test_s3_data_is_downloaded_once_through_presigned_urls(
    machine: Machine, bucket: Bucket
) -> None:
    script = "import os; print('data', sorted(os.listdir(os.environ['DATA_DIR'])))"
    cwd = project(machine, script)
    data_dir = machine.root / "data" / "images"
    spec = job(
        cwd,
        f"{PY} train.py",
        env={"DATA_DIR": str(data_dir)},
        data=[{"name": "images", "dir": str(data_dir), "urls_env": "GPUCTL_DATA_URLS_IMAGES"}],
    )
    machine.configure(job=spec)
    urls = bucket.urls("train/a.bin", "labels.csv")
    env = {**os.environ, "GPUCTL_DATA_URLS_IMAGES": urls}
    status = run_to_end(machine, env=env)
    assert (data_dir / "train" / "a.bin").read_bytes() == (bucket.root / "train/a.bin").read_bytes()
    assert (data_dir / "labels.csv").read_text() == "a,1\n"
    assert status["data"]["images"] == {"fetched": 2, "bytes": 3004, "fresh": 0}
    log = train_log(machine)
    assert "[gpuctl] data images: train/a.bin (3000 bytes)" in log
    assert "data ['.gpuctl-manifest.json', 'labels.csv', 'train']" in log
    assert len(bucket.served) == 2
    machine.configure(job=spec)
    status = run_to_end(machine, env=env)
    assert len(bucket.served) == 2  # the manifest: nothing downloaded again
    assert status["data"]["images"] == {"fetched": 0, "bytes": 0, "fresh": 2}
    for path in machine.run_dir.rglob("*"):  # the URLs are credentials
        if path.is_file():
            assert b"s3cr3t" not in path.read_bytes() and b"127.0.0.1:" not in path.read_bytes()


def test_a_data_key_out_of_its_directory_is_refused(machine: Machine, bucket: Bucket) -> None:
    cwd = project(machine, "open('ran', 'w').close()")
    data_dir = machine.root / "data" / "images"
    spec = job(
        cwd,
        f"{PY} train.py",
        data=[{"name": "images", "dir": str(data_dir), "urls_env": "GPUCTL_DATA_URLS_IMAGES"}],
    )
    machine.configure(job=spec)
    env = {**os.environ, "GPUCTL_DATA_URLS_IMAGES": bucket.urls("../labels.csv")}
    status = run_to_end(machine, env=env)
    trainer = machine.trainer_status()
    assert trainer["phase"] == protocol.Phase.FAILED
    assert trainer["reason"].startswith("data images: ../labels.csv: refused")
    assert status["exit_code"] == 1
    assert bucket.served == [] and not (cwd / "ran").exists()


def test_a_failed_download_names_the_key_not_the_url(machine: Machine, bucket: Bucket) -> None:
    cwd = project(machine, "open('ran', 'w').close()")
    data_dir = machine.root / "data" / "images"
    spec = job(
        cwd,
        f"{PY} train.py",
        data=[{"name": "images", "dir": str(data_dir), "urls_env": "GPUCTL_DATA_URLS_IMAGES"}],
    )
    machine.configure(job=spec)
    env = {**os.environ, "GPUCTL_DATA_URLS_IMAGES": bucket.urls("missing.bin")}
    run_to_end(machine, env=env)
    trainer = machine.trainer_status()
    assert trainer["reason"] == "data images: missing.bin: HTTP 404"
    assert not (cwd / "ran").exists()


HELPER_CHECK = """
import json, os, sys
from gpuctl_report import checkpoint, report, step
report(1, epochs=2, loss=0.5, metric=float("inf"), note="text", count=7)
step(3, 10)
checkpoint("ckpt/model.pt")
os.environ["RANK"] = "1"
report(2, loss=0.1)  # not rank 0: silent
os.environ["RANK"] = "0"
os.environ["GPUCTL_EVENTS"] = "/nonexistent/dir/reports.jsonl"
report(2, loss=0.1)  # cannot write: never raises
sys.stdout.close()
os.environ.pop("GPUCTL_EVENTS")
report(2, loss=0.1)  # a closed stdout: never raises
sys.stderr.write("survived\\n")
"""


def test_the_helper_writes_numbers_only_from_rank_0_and_never_raises(tmp_path: Path) -> None:
    (tmp_path / "check.py").write_text(HELPER_CHECK)
    reports = tmp_path / "reports.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "gpuctl" / "agent" / "helper"),
        "GPUCTL_EVENTS": str(reports),
    }
    env.pop("RANK", None)
    proc = subprocess.run(
        [sys.executable, "check.py"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "survived" in proc.stderr
    lines = [json.loads(line) for line in reports.read_text().splitlines()]
    assert [line["gpuctl"] for line in lines] == ["epoch", "step", "checkpoint"]
    first = {k: v for k, v in lines[0].items() if k != "time"}
    assert first == {"gpuctl": "epoch", "epoch": 1, "epochs": 2, "loss": 0.5, "count": 7}
    assert lines[2]["path"] == "ckpt/model.pt"


def test_python_in_the_command_and_its_setup_is_the_interpreter_gpuctl_chose(
    machine: Machine,
) -> None:
    """An image with no `python` on PATH (only python3, or a python3 without torch):
    `python train.py` still runs with the interpreter gpuctl matched to the machine."""
    cwd = project(machine, "import sys\nprint('command runs', sys.executable)")
    spec = job(
        cwd,
        "python train.py",
        setup=["python -c 'import sys; print(\"setup runs\", sys.executable)'"],
        setup_key="py",
    )
    machine.configure(job=spec)
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # the venv's bin is not on it
    status = run_to_end(machine, env=env)
    assert status["exit_code"] == 0, train_log(machine)
    log = train_log(machine)
    assert f"setup runs {sys.executable}" in log
    assert f"command runs {sys.executable}" in log
