"""Tasks: what to train. A task is `module:factory`; `factory(cfg)` returns a Task.

A user's factory may return a `Task`, or any object or dict with the same names:
model, train_set, val_set and optionally loss_fn (default: cross-entropy with the
config's label smoothing) and metric_fn (default: accuracy). metric_fn(output,
target) returns the SUM over the batch (e.g. number correct), so the trainer can
average it over ranks; higher is better. For exact mid-epoch resume, datasets
should be deterministic per index (random augmentation seeded from the index).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from torch import nn

from ..config import TrainConfig
from ..errors import TrainerError
from .base import LossFn, MetricFn, Task, correct_count

__all__ = ["LossFn", "MetricFn", "Task", "correct_count", "load_task"]


def _coerce_task(obj: Any, cfg: TrainConfig, name: str) -> Task:
    if isinstance(obj, Task):
        return obj
    get = obj.get if isinstance(obj, dict) else (lambda k, d=None: getattr(obj, k, d))
    missing = [k for k in ("model", "train_set", "val_set") if get(k) is None]
    if missing:
        raise TrainerError(f"task {name} returned no {', '.join(missing)}")
    loss = get("loss_fn") or nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    return Task(
        get("model"),
        get("train_set"),
        get("val_set"),
        loss,
        get("metric_fn") or correct_count,
        get("description") or name,
    )


def load_task(cfg: TrainConfig) -> Task:
    """Build the bundled image task, or import and call the user's `module:factory`."""
    if cfg.task == "image":
        from .image import make_task

        return make_task(cfg)
    module_name, _, attr = cfg.task.partition(":")
    for path in (Path.cwd(), Path(cfg.workdir) if cfg.workdir else None):
        if path is not None and str(path) not in sys.path:
            sys.path.insert(0, str(path))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TrainerError(f"task '{cfg.task}': cannot import {module_name!r}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise TrainerError(f"task '{cfg.task}': {module_name} has no callable {attr!r}")
    return _coerce_task(factory(cfg), cfg, cfg.task)
