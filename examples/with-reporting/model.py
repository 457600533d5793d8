"""The tiny CNN and its synthetic "digits" (the same as in ../plain-pytorch/train.py)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

CLASSES, SIDE, SHIFT = 10, 28, 2  # 10 classes of 28x28 images, shifted up to 2 pixels


def synthetic_digits(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` faint, shifted, noisy copies of 10 fixed patterns (the same 10 for every
    seed): a CNN learns them in a few epochs; the same seed gives the same images."""
    patterns = torch.randn(CLASSES, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    patterns = F.avg_pool2d(patterns[:, None], 5, 1, 2)[:, 0]
    patterns = patterns / patterns.std()
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (count,), generator=gen)
    dy, dx = torch.randint(-SHIFT, SHIFT + 1, (2, count, 1), generator=gen)
    rows = (torch.arange(SIDE) - dy) % SIDE  # shift each image by (dy, dx), wrapping round
    cols = (torch.arange(SIDE) - dx) % SIDE
    shifted = patterns[labels[:, None, None], rows[:, :, None], cols[:, None, :]]
    contrast = torch.rand(count, 1, 1, generator=gen) * 0.2 + 0.2
    noise = torch.randn(count, SIDE, SIDE, generator=gen)
    return ((shifted * contrast + noise) / 3).clamp(-1, 1)[:, None], labels


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, CLASSES),
    )  # fmt: skip


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> tuple[float, float]:
    """Mean loss and accuracy on (x, y)."""
    model.eval()
    loss = correct = 0.0
    for xb, yb in zip(x.split(batch), y.split(batch), strict=True):
        logits = model(xb)
        loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return loss / len(y), correct / len(y)
