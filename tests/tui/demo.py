"""A fixed, realistic state for snapshots, README screenshots and the benchmark.

Writes config.toml and state.db under a GPUCTL_HOME: instances across the fake cloud,
runs in every interesting state, ledger segments and provider health, all relative to
a fixed NOW so every frame is identical on every machine.
"""

from __future__ import annotations

from pathlib import Path

from gpuctl.events import (
    CostTick,
    EpochDone,
    Event,
    GpuSampled,
    LogLines,
    TrainerStarted,
)
from gpuctl.models import GpuSample, Instance, InstanceState, PriceSegment, Run, RunStatus
from gpuctl.state import Store
from tests.tui.fake_provider import BASE_TIME, make_instance

NOW = BASE_TIME + 2 * 3600.0
TRAINING = "standard-260101-a1b2"
PROVISIONING = "fast-260101-c3d4"
FINISHED = "validate-260101-e5f6"
FAILED = "full-251231-0a0b"


def config(count: int = 12, *, monthly: float | None = 200.0, extra: str = "") -> str:
    budget = f"\n[budget]\nmonthly = {monthly}\n" if monthly else ""
    return (
        'providers = ["local", "fake", "aws"]\n'
        'default_provider = "local"\n'
        f"{budget}"
        "\n[profiles.fake]\n"
        'provider = "fake"\n'
        f"count = {count}\n"
        f"{extra}"
    )


def seed(home: Path, *, count: int = 12, monthly: float | None = 200.0) -> Store:
    """Write the demo state under home (GPUCTL_HOME) and return its store."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(config(count, monthly=monthly))
    store = Store(home / "state.db")
    instances = [make_instance("fake", i) for i in range(count)]
    train_box = make_instance("fake", 1).evolve(
        run_id=TRAINING,
        managed=True,
        state=InstanceState.RUNNING,
        launched_at=NOW - 4380.0,
        instance_type="g5.xlarge",
        gpu_name="A10G",
        price_per_hour=1.006,
    )
    instances[1] = train_box
    store.put_instances("fake", instances)
    spec = {
        "run_id": TRAINING,
        "preset": "standard",
        "provider": "fake",
        "instance_type": "g5.xlarge",
        "max_hours": 6.0,
        "idle_minutes": 30.0,
        "budget": 20.0,
        "teardown": "terminate",
        "train": {"epochs": 30, "train_samples": 20000},
    }
    runs = [
        Run(
            TRAINING,
            "standard",
            "fake",
            RunStatus.RUNNING,
            NOW - 4400.0,
            NOW - 60.0,
            instance_id=train_box.id,
            spec=spec,
            remote_dir="/home/ubuntu/gpuctl/runs/" + TRAINING,
            epoch=7,
            epochs=30,
            metric=0.712,
            eta_seconds=4320.0,
            budget=20.0,
        ),
        Run(
            PROVISIONING,
            "fast",
            "fake",
            RunStatus.PROVISIONING,
            NOW - 40.0,
            NOW - 40.0,
            spec={**spec, "run_id": PROVISIONING, "preset": "fast", "budget": None},
            epochs=10,
        ),
        Run(
            FINISHED,
            "validate",
            "local",
            RunStatus.FINISHED,
            NOW - 7000.0,
            NOW - 6980.0,
            instance_id="local-" + FINISHED,
            spec={**spec, "run_id": FINISHED, "preset": "validate", "provider": "local"},
            epoch=2,
            epochs=2,
            metric=0.5625,
            results_dir=str(home / "results" / FINISHED),
        ),
        Run(
            FAILED,
            "full",
            "fake",
            RunStatus.FAILED,
            NOW - 20000.0,
            NOW - 19000.0,
            spec={**spec, "run_id": FAILED, "preset": "full"},
            epoch=3,
            epochs=100,
            reason="CUDA out of memory",
        ),
    ]
    for run in runs:
        store.add_run(run)
    store.open_segment(
        PriceSegment(
            "fake",
            train_box.id,
            TRAINING,
            "g5.xlarge",
            "us-west-2",
            "on-demand",
            1.006,
            NOW - 4380.0,
        )
    )
    store.open_segment(
        PriceSegment(
            "fake",
            "i-09999",
            FAILED,
            "p3.8xlarge",
            "us-east-1",
            "on-demand",
            12.24,
            NOW - 20000.0,
            NOW - 19000.0,
        )
    )
    store.set_provider_status("local", True, "")
    store.set_provider_status("fake", True, "")
    store.set_provider_status(
        "aws", False, "AWS: no credentials found (aws configure, or aws sso login --profile ...)"
    )
    return store


def training_events(run_id: str = TRAINING) -> list[Event]:
    """What a follow of the training run would have produced: log, GPUs, epochs, cost."""
    lines = [
        "2026-01-01 13:00:02 amp bf16 on cuda; batch_size 128 x 1 process(es); lr 0.003",
        "2026-01-01 13:00:09 first step done in 6.8s since start (warm-up)",
    ]
    events: list[Event] = [TrainerStarted(run_id, "ubuntu@10.0.0.1", 4242, "/runs/x")]
    loss = 2.31
    for epoch in range(1, 8):
        for step in (50, 100, 150):
            loss *= 0.97
            lines.append(
                f"2026-01-01 13:{epoch * 5:02d}:{step // 5:02d} epoch {epoch}/30 "
                f"step {step}/156 loss {loss:.4f} lr 0.003"
            )
        lines.append(
            f"2026-01-01 13:{epoch * 5 + 4:02d}:00 epoch {epoch}/30 done: train_loss {loss:.4f} "
            f"val_loss {loss * 1.08:.4f} val_metric {0.3 + epoch * 0.059:.4f} in 288.0s"
        )
        events.append(
            EpochDone(
                run_id,
                epoch,
                30,
                round(loss, 4),
                round(loss * 1.08, 4),
                round(0.3 + epoch * 0.059, 4),
                900.0 if epoch == 1 else 288.0,
                (30 - epoch) * 288.0 if epoch > 1 else None,
                epoch == 1,
            )
        )
    events.insert(1, LogLines(run_id, tuple(lines)))
    for t in range(24):
        events.append(
            GpuSampled(
                run_id,
                (
                    GpuSample(
                        0,
                        "NVIDIA A10G",
                        util_pct=55 + (t * 7) % 45,
                        mem_used_mb=14_000 + (t * 300) % 4000,
                        mem_total_mb=23_028,
                        temp_c=61,
                        power_w=182,
                        time=NOW - (24 - t) * 5,
                    ),
                ),
            )
        )
    events.append(CostTick(run_id, 1.22, 1.006, None, 20.0))
    return events


def cpu_sample(run_id: str) -> GpuSampled:
    """A CPU-only machine: memory is unknown to the sampler, shown as N/A."""
    return GpuSampled(run_id, (GpuSample(0, "CPU (2 cores)", util_pct=100.0, kind="cpu"),))


__all__ = ["NOW", "Instance", "config", "seed", "training_events"]
