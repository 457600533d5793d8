"""What a task is (the Task the loop trains) and the default metric.

Apart from the loader in __init__.py, which imports the bundled tasks: they build a Task
from here without importing the package that imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MetricFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def correct_count(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Default metric: number of top-1 hits in the batch (summed, so ranks can add up)."""
    return (output.argmax(dim=1) == target).sum()


@dataclass
class Task:
    """Everything the loop needs from a task."""

    model: nn.Module
    train_set: Dataset
    val_set: Dataset
    loss_fn: LossFn
    metric_fn: MetricFn = correct_count
    description: str = ""
