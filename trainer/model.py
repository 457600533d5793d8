"""The bundled model: a small VGG-style CNN, sized by `width` and `depth`."""

from __future__ import annotations

import torch
from torch import nn


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class SmallCNN(nn.Module):
    """`depth` stages of two 3x3 conv-BN-ReLU and a 2x2 max-pool; channels double per stage."""

    def __init__(self, num_classes: int, width: int = 16, depth: int = 2, channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = channels
        for stage in range(depth):
            c_out = width * 2**stage
            layers += [*_conv(c_in, c_out), *_conv(c_out, c_out), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
