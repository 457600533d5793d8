"""The trainer as gpuctl runs it: a real `python -u -m trainer` process on CPU."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from .conftest import TORCHRUN, clean_env, wait_for_status, write_config

EVENT_KEYS = {
    "start": {
        "run_id",
        "config",
        "device",
        "world_size",
        "amp",
        "batch_size",
        "steps_per_epoch",
        "epochs",
        "start_epoch",
    },
    "epoch_end": {
        "epoch",
        "epochs",
        "train_loss",
        "val_loss",
        "val_metric",
        "lr",
        "epoch_seconds",
        "samples_per_second",
        "peak_mem_mb",
        "warmup",
    },
    "checkpoint": {"path", "epoch", "best"},
    "finished": {"epochs", "best_metric", "seconds"},
    "failed": {"reason"},
    "interrupted": {"epoch", "step", "reason"},
}
HISTORY_KEYS = {
    "epoch",
    "train_loss",
    "val_loss",
    "val_metric",
    "lr",
    "epoch_seconds",
    "samples_per_second",
}


def check_event_shapes(events: list[dict]) -> None:
    for e in events:
        assert isinstance(e["time"], float)
        assert set(e) - {"event", "time"} == EVENT_KEYS[e["event"]], e


def load_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.timeout(120)
def test_run_writes_every_output_in_the_contract_shape(tmp_path: Path, run_inprocess) -> None:
    """In-process for speed; test_presets runs the validate preset as a real process."""
    cfg = write_config(tmp_path, epochs=3, train_samples=512)
    run = run_inprocess(cfg)
    assert run.rc == 0, run.stderr
    for name in ("train.log", "events.jsonl", "history.json", "status.json", "last.pt", "best.pt"):
        assert (tmp_path / name).is_file(), name
    events = run.events()
    check_event_shapes(events)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "finished"
    assert kinds.count("epoch_end") == 3
    start = events[0]
    assert start["world_size"] == 1 and start["amp"] == "off" and start["start_epoch"] == 1
    assert start["batch_size"] == 32 and start["steps_per_epoch"] == 16
    assert start["config"]["train_samples"] == 512 and start["device"].startswith("cpu")
    ends = [e for e in events if e["event"] == "epoch_end"]
    assert [e["warmup"] for e in ends] == [True, False, False]
    assert all(e["peak_mem_mb"] is None and e["samples_per_second"] > 0 for e in ends)
    assert ends[-1]["val_metric"] > 0.4  # chance is 0.1: the synthetic classes are learnable
    assert ends[-1]["train_loss"] < ends[0]["train_loss"]
    history = run.history()
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert all(set(h) == HISTORY_KEYS for h in history)
    status = run.status()
    assert status["phase"] == "finished" and status["epoch"] == 3 and status["step"] == 16
    assert status["best_metric"] == max(h["val_metric"] for h in history)
    ckpt = load_ckpt(tmp_path / "last.pt")
    assert (ckpt["epoch"], ckpt["step"]) == (3, 0)
    assert ckpt["config"]["train_samples"] == 512
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "history"} <= set(ckpt)
    best = load_ckpt(tmp_path / "best.pt")
    assert best["history"][-1]["val_metric"] == status["best_metric"]
    log = run.log()
    assert "epoch 3/3 done" in log and "finished 3 epochs" in log and '"train_samples": 512' in log
    assert "epoch 3/3 done" in run.stdout  # echoed for the agent's own capture


@pytest.mark.timeout(120)
def test_sigterm_mid_epoch_checkpoints_and_exits_zero(tmp_path: Path, start_trainer) -> None:
    cfg = write_config(
        tmp_path, epochs=1, train_samples=80000, batch_size=8, image_size=8, width=4, depth=1
    )
    proc = start_trainer(cfg)
    status = wait_for_status(tmp_path / "status.json", lambda s: s["step"] >= 1, proc, 90)
    steps = status["steps_per_epoch"]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["phase"] == "interrupted" and status["reason"] == "SIGTERM"
    events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    check_event_shapes(events)
    stop = events[-1]
    assert stop["event"] == "interrupted" and stop["epoch"] == 1
    assert 1 <= stop["step"] < steps
    ckpt = load_ckpt(tmp_path / "last.pt")
    assert (ckpt["epoch"], ckpt["step"]) == (0, stop["step"])
    assert "interrupted (SIGTERM)" in (tmp_path / "train.log").read_text()


KILLER = '''
"""A user task that wraps the bundled one and SIGTERMs itself on the Nth sample read."""
import os
import signal

from trainer.tasks.image import make_task


class Counting:
    def __init__(self, inner, kill_at):
        self.inner, self.kill_at, self.reads = inner, kill_at, 0

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads == self.kill_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.inner[i]


def make(cfg):
    task = make_task(cfg)
    task.train_set = Counting(task.train_set, int(os.environ.get("KILL_AT", "0")))
    return task
'''


@pytest.mark.timeout(120)
def test_resume_after_sigterm_matches_an_uninterrupted_run(tmp_path: Path, run_trainer) -> None:
    common = {"epochs": 3, "deterministic": True, "train_samples": 256, "seed": 5}
    straight = run_trainer(write_config(tmp_path / "a", **common))
    assert straight.rc == 0, straight.stderr

    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "killer.py").write_text(KILLER)
    cfg = write_config(tmp_path / "b", task="killer:make", workdir="../user", **common)
    # 1 read to size the model probe, 256 for epoch 1, then inside step 4 of epoch 2
    first = run_trainer(cfg, env=clean_env(KILL_AT=str(1 + 256 + 3 * 32 + 5)))
    assert first.rc == 0, first.stderr
    assert first.status()["phase"] == "interrupted"
    stop = first.events()[-1]
    assert (stop["event"], stop["epoch"], stop["step"]) == ("interrupted", 2, 4)
    assert [h["epoch"] for h in first.history()] == [1]

    second = run_trainer(cfg, "--resume")
    assert second.rc == 0, second.stderr
    assert "resumed from epoch 2 step 4/8" in second.log()
    assert "interrupted (SIGTERM)" in second.log()  # the log is appended, not replaced
    events = second.events()
    check_event_shapes(events)
    starts = [e for e in events if e["event"] == "start"]
    assert [s["start_epoch"] for s in starts] == [1, 2]
    assert [e["epoch"] for e in events if e["event"] == "epoch_end"] == [1, 2, 3]
    a, b = straight.history(), second.history()
    assert [h["epoch"] for h in b] == [1, 2, 3]
    for ha, hb in zip(a, b, strict=True):
        for key in ("train_loss", "val_loss", "val_metric", "lr"):
            assert ha[key] == hb[key], (ha["epoch"], key)
    wa = load_ckpt(tmp_path / "a" / "last.pt")["model"]
    wb = load_ckpt(tmp_path / "b" / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert second.status()["phase"] == "finished"


@pytest.mark.timeout(120)
def test_stop_file_then_resume(tmp_path: Path, run_inprocess) -> None:
    cfg = write_config(tmp_path)
    (tmp_path / "STOP").touch()
    first = run_inprocess(cfg)
    assert first.rc == 0, first.stderr
    assert not (tmp_path / "STOP").exists()
    status = first.status()
    assert (status["phase"], status["reason"], status["step"]) == ("interrupted", "STOP file", 1)
    assert first.events()[-1]["event"] == "interrupted"
    assert load_ckpt(tmp_path / "last.pt")["step"] == 1
    second = run_inprocess(cfg, "--resume")
    assert second.rc == 0, second.stderr
    assert "resumed from epoch 1 step 1/8" in second.log()
    assert [h["epoch"] for h in second.history()] == [1, 2]
    assert second.status()["phase"] == "finished"


@pytest.mark.timeout(120)
def test_a_resumed_run_reports_the_time_of_every_attempt(tmp_path: Path, run_inprocess) -> None:
    """`finished N epochs in Xs` counts the whole run, not the last attempt alone."""
    cfg = write_config(tmp_path)
    (tmp_path / "STOP").touch()
    assert run_inprocess(cfg).rc == 0
    ckpt = load_ckpt(tmp_path / "last.pt")
    assert ckpt["attempts"] == 1 and ckpt["elapsed_seconds"] > 0
    ckpt["elapsed_seconds"] = 3600.0  # as if the first attempt had trained for an hour
    torch.save(ckpt, tmp_path / "last.pt")
    second = run_inprocess(cfg, "--resume")
    assert second.rc == 0, second.stderr
    finished = second.events()[-1]
    assert finished["event"] == "finished" and finished["seconds"] > 3600.0
    line = next(ln for ln in second.log().splitlines() if "finished 2 epochs in" in ln)
    assert "in 36" in line and "over 2 attempts" in line
    status = second.status()
    assert (status["epoch"], status["epochs_done"]) == (2, 2)


@pytest.mark.timeout(120)
def test_resume_needs_a_checkpoint_unless_auto(tmp_path: Path, run_inprocess) -> None:
    cfg = write_config(tmp_path, epochs=1)
    run = run_inprocess(cfg, "--resume")
    assert run.rc == 1
    assert "no last.pt" in run.stderr
    assert run.status()["phase"] == "failed" and "no last.pt" in run.status()["reason"]
    auto = run_inprocess(cfg, "--auto-resume")
    assert auto.rc == 0, auto.stderr
    assert auto.status()["phase"] == "finished"
    again = run_inprocess(cfg, "--auto-resume")  # now there is a finished last.pt: nothing left
    assert again.rc == 0 and "resumed from epoch 1" in again.log()
    assert [h["epoch"] for h in again.history()] == [1]


@pytest.mark.timeout(120)
def test_checkpoints_every_n_minutes_mid_epoch(tmp_path: Path, run_inprocess) -> None:
    run = run_inprocess(write_config(tmp_path, epochs=1, checkpoint_every_minutes=1e-6))
    assert run.rc == 0, run.stderr
    kinds = [(e["event"], e.get("best")) for e in run.events()]
    first_end = kinds.index(("epoch_end", None))
    assert ("checkpoint", False) in kinds[:first_end]
    assert "checkpoint: last.pt at epoch 1 step" in run.log()


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"epoch": 3}, "unknown key 'epoch' (did you mean 'epochs'?)"),
        ({"epochs": "abc"}, "'epochs' must be a positive integer, got 'abc'"),
        ({"version": 2}, "config from a newer gpuctl (version 2); update the trainer"),
    ],
)
def test_bad_config_exits_2_with_one_clear_line(tmp_path: Path, run_trainer, raw, needle) -> None:
    tmp_path.mkdir(exist_ok=True)
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps(raw))
    run = run_trainer(cfg)
    assert run.rc == 2
    assert needle in run.stderr and len(run.stderr.strip().splitlines()) == 1
    status = run.status()
    assert status["phase"] == "failed" and needle in status["reason"]
    assert run.events()[-1] == {
        "event": "failed",
        "time": run.events()[-1]["time"],
        "reason": status["reason"],
    }


def test_set_overrides_and_check(tmp_path: Path, run_trainer) -> None:
    cfg = write_config(tmp_path)
    run = run_trainer(cfg, "--check", "--set", "epochs=7", "--set", "amp=off")
    assert run.rc == 0, run.stderr
    resolved = json.loads(run.stdout)
    assert resolved["epochs"] == 7 and resolved["amp"] == "off"
    assert resolved["out_dir"] == str(tmp_path.resolve())
    bad = run_trainer(cfg, "--check", "--set", "epochs=zero")
    assert bad.rc == 2 and "'epochs' must be a positive integer, got 'zero'" in bad.stderr


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"data_dir": "no/such/dir"}, "does not exist"),
        ({"task": "no_such_module:make"}, "cannot import 'no_such_module'"),
        ({"task": "json:no_such_factory"}, "json has no callable 'no_such_factory'"),
    ],
)
def test_runtime_failures_are_one_line_and_status_failed(
    tmp_path: Path, run_trainer, run_inprocess, overrides, needle
) -> None:
    in_process = "data_dir" not in overrides  # one real process proves the exit code
    run = (run_inprocess if in_process else run_trainer)(write_config(tmp_path, **overrides))
    assert run.rc == 1
    assert needle in run.stderr
    assert "Traceback" not in run.stderr
    status = run.status()
    assert status["phase"] == "failed" and needle in status["reason"]
    assert run.events()[-1]["event"] == "failed"


OOM_TASK = '''
"""The bundled task with a model that 'runs out of memory' above 8 samples a batch."""
import torch

from trainer.tasks.image import make_task


class Greedy(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if x.shape[0] > 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return self.inner(x)


def make(cfg):
    task = make_task(cfg)
    task.model = Greedy(task.model)
    return task
'''


@pytest.mark.timeout(120)
def test_oom_suggests_a_batch_and_auto_retries_once(tmp_path: Path, run_inprocess) -> None:
    (tmp_path / "oomtask.py").write_text(OOM_TASK)
    fixed = run_inprocess(write_config(tmp_path / "fixed", task="oomtask:make", workdir=".."))
    assert fixed.rc == 1
    assert "out of memory at batch_size=32: batch_size=8 fits" in fixed.status()["reason"]
    auto_cfg = write_config(tmp_path / "auto", task="oomtask:make", workdir="..", batch_size="auto")
    auto = run_inprocess(auto_cfg)
    assert auto.rc == 0, auto.stderr
    assert "batch_size=auto: no GPU to probe, using a fixed batch_size=32" in auto.log()
    assert "retrying once with batch_size=8" in auto.log()
    starts = [e for e in auto.events() if e["event"] == "start"]
    assert [s["batch_size"] for s in starts] == [32, 8]
    assert auto.status()["phase"] == "finished"
    assert [h["epoch"] for h in auto.history()] == [1, 2]


def write_ppm(path: Path, colour: tuple[int, int, int], size: int = 10) -> None:
    path.write_bytes(f"P6 {size} {size} 255\n".encode() + bytes(colour) * size * size)


@pytest.mark.timeout(120)
def test_image_folder_data_dir(tmp_path: Path, run_inprocess) -> None:
    for split, n in (("train", 24), ("val", 8)):
        for name, colour in (("red", (250, 10, 10)), ("green", (10, 250, 10))):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for i in range(n):
                write_ppm(tmp_path / "data" / split / name / f"{i}.ppm", colour)
    run = run_inprocess(
        write_config(tmp_path, data_dir="data", image_size=8, batch_size=8, workers=1)
    )
    assert run.rc == 0, run.stderr
    assert "ImageFolder" in run.log() and "2 classes" in run.log()
    assert "loader workers 1" in run.log()
    assert run.history()[-1]["val_metric"] > 0.5


@pytest.mark.timeout(120)
def test_torchrun_two_processes_one_set_of_outputs(tmp_path: Path, trainer_home: Path) -> None:
    cfg = write_config(tmp_path, epochs=2, sync_bn=True)
    proc = torchrun(cfg, trainer_home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    check_event_shapes(events)
    kinds = [e["event"] for e in events]
    assert kinds.count("start") == 1 and kinds.count("finished") == 1
    assert [e["epoch"] for e in events if e["event"] == "epoch_end"] == [1, 2]
    start = events[0]
    assert start["world_size"] == 2 and start["steps_per_epoch"] == 4  # 128 samples a rank
    log = (tmp_path / "train.log").read_text()
    assert log.count("finished 2 epochs") == 1 and "world size 2" in log
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert json.loads((tmp_path / "status.json").read_text())["phase"] == "finished"
    assert load_ckpt(tmp_path / "last.pt")["world_size"] == 2
    assert not list(tmp_path.glob(".*tmp*"))


def torchrun(cfg: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            TORCHRUN,
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "trainer",
            "--config",
            str(cfg),
            *args,
        ],
        cwd=home,
        env=clean_env(OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=240,  # a hang guard: four torch imports on two busy cores take a while
    )


@pytest.mark.timeout(600)
def test_torchrun_stop_and_resume_agree_across_ranks(tmp_path: Path, trainer_home: Path) -> None:
    """A STOP seen by rank 0 stops both ranks at the same step; --resume restores each rank."""
    cfg = write_config(tmp_path, epochs=2)
    (tmp_path / "STOP").touch()
    first = torchrun(cfg, trainer_home)
    assert first.returncode == 0, first.stderr[-3000:]
    status = json.loads((tmp_path / "status.json").read_text())
    assert (status["phase"], status["step"]) == ("interrupted", 1)
    ckpt = load_ckpt(tmp_path / "last.pt")
    assert (ckpt["epoch"], ckpt["step"], len(ckpt["rng"])) == (0, 1, 2)
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])  # per-rank RNG
    second = torchrun(cfg, trainer_home, "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["start_epoch"] for e in events if e["event"] == "start"] == [1, 1]
    assert [e["epoch"] for e in events if e["event"] == "epoch_end"] == [1, 2]
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert "resumed from epoch 1 step 1/4" in (tmp_path / "train.log").read_text()


@pytest.mark.timeout(120)
def test_grad_accum_and_checkpoint_cadence(tmp_path: Path, run_inprocess) -> None:
    run = run_inprocess(write_config(tmp_path, epochs=3, grad_accum=2, checkpoint_every_epochs=2))
    assert run.rc == 0, run.stderr
    events = run.events()
    assert events[0]["steps_per_epoch"] == 4  # 256 samples / (32 x 2 micro-batches)
    last = [e["epoch"] for e in events if e["event"] == "checkpoint" and not e["best"]]
    assert last == [2, 3]  # every 2 epochs, and always at the end
    best = [e["epoch"] for e in events if e["event"] == "checkpoint" and e["best"]]
    history = run.history()
    improving = [
        h["epoch"]
        for i, h in enumerate(history)
        if h["val_metric"] > max([-1.0] + [p["val_metric"] for p in history[:i]])
    ]
    assert best == improving and best[0] == 1
    assert load_ckpt(tmp_path / "best.pt")["epoch"] == best[-1]
    assert "grad_accum 2" in run.log()
