"""The bundled default task: SmallCNN on synthetic data, or on an ImageFolder `data_dir`."""

from __future__ import annotations

from torch import nn

from ..config import TrainConfig
from ..data import SyntheticImages, open_image_folder
from ..model import SmallCNN
from .base import Task, correct_count


def make_task(cfg: TrainConfig) -> Task:
    """Synthetic data when data_dir is None (runs anywhere), else the folder's classes."""
    if cfg.data_dir is None:
        size = cfg.image_size
        train = SyntheticImages(cfg.train_samples, cfg.num_classes, size, cfg.seed, split=0)
        val = SyntheticImages(cfg.val_samples, cfg.num_classes, size, cfg.seed, split=1)
        classes = cfg.num_classes
        what = f"synthetic {cfg.num_classes} classes"
    else:
        train, val, names = open_image_folder(
            cfg.data_dir, cfg.image_size, cfg.train_samples, cfg.val_samples, cfg.seed
        )
        classes = len(names)
        what = f"ImageFolder {cfg.data_dir} ({classes} classes)"
    model = SmallCNN(classes, width=cfg.width, depth=cfg.depth)
    loss = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    desc = f"image: SmallCNN(width={cfg.width}, depth={cfg.depth}) on {what}, "
    desc += f"{len(train)} train / {len(val)} val at {cfg.image_size}px"
    return Task(model, train, val, loss, correct_count, desc)
