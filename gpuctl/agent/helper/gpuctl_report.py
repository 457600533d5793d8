"""Progress reports from your own training script to gpuctl (standard library only).

    from gpuctl_report import report, step, checkpoint

    report(epoch, epochs=None, loss=None, val_loss=None, metric=None, **more)
        after each epoch: {"gpuctl": "epoch", "epoch": 3, "epochs": 100, "loss": 0.41, ...}
    step(step, steps=None, epoch=None)     progress inside an epoch
    checkpoint(path=None)                  a checkpoint was written: gpuctl copies it now
    start(epochs=None)                     the script knows how many epochs it will run

Each call appends one JSON line to the file named by $GPUCTL_EVENTS (gpuctl's agent sets
it), or prints it to stdout when the variable is unset; only on rank 0 ($RANK unset or
"0"). Numbers only (bools, NaN and infinities are left out); a report never raises, so
a full disk or a closed stdout cannot kill a training run. `metric` is "higher is
better" (accuracy); `loss` is the training loss.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

# The words of trainer/protocol.py (REPORT_KEY, ReportKind, REPORTS_ENV): this file runs
# inside the user's script, where gpuctl's modules are not importable.
REPORT_KEY = "gpuctl"
REPORTS_ENV = "GPUCTL_EVENTS"
START, STEP, EPOCH, CHECKPOINT = "start", "step", "epoch", "checkpoint"

__all__ = ["checkpoint", "report", "start", "step"]


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:  # numpy and torch scalars
            value = value.item()
        except Exception:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
    return value if math.isfinite(value) else None


def _emit(kind: str, fields: dict[str, Any]) -> None:
    if os.environ.get("RANK", "0") != "0":
        return
    record: dict[str, Any] = {REPORT_KEY: kind, "time": time.time()}
    for key, value in fields.items():
        if key == "path" and isinstance(value, str | os.PathLike):
            record[key] = os.fspath(value)
        elif (number := _number(value)) is not None:
            record[key] = number
    line = json.dumps(record) + "\n"
    try:
        target = os.environ.get(REPORTS_ENV)
        if target:
            with open(target, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
        else:
            sys.stdout.write(line)
            sys.stdout.flush()
    except Exception:  # a report must not kill a training run
        pass


def report(
    epoch: int,
    epochs: int | None = None,
    loss: float | None = None,
    val_loss: float | None = None,
    metric: float | None = None,
    **more: Any,
) -> None:
    """Epoch `epoch` (1-based) is done; other numeric keyword fields go to its history row."""
    fields = {"epoch": epoch, "epochs": epochs, "loss": loss, "val_loss": val_loss}
    _emit(EPOCH, {**fields, "metric": metric, **more})


def step(step: int, steps: int | None = None, epoch: int | None = None) -> None:
    """Step `step` of `steps` in the current epoch (call it every few seconds at most)."""
    _emit(STEP, {"step": step, "steps": steps, "epoch": epoch})


def checkpoint(path: str | os.PathLike[str] | None = None) -> None:
    """The checkpoint (the project's, or `path`) is written and complete: mirror it now."""
    _emit(CHECKPOINT, {"path": path})


def start(epochs: int | None = None) -> None:
    """The run's length, before the first epoch ends."""
    _emit(START, {"epochs": epochs})
