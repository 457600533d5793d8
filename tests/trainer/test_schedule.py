"""Cosine schedule with linear warmup."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from trainer.schedule import build_scheduler, lr_factor


def test_warmup_rises_linearly_to_the_peak() -> None:
    values = [lr_factor(s, 10, 100, 0.05) for s in range(11)]
    assert values[0] == pytest.approx(1 / 11)
    assert all(b > a for a, b in itertools.pairwise(values))
    assert values[10] == pytest.approx(1.0)


def test_cosine_decays_to_the_floor() -> None:
    values = [lr_factor(s, 10, 100, 0.05) for s in range(10, 101)]
    assert all(b <= a for a, b in itertools.pairwise(values))
    assert values[-1] == pytest.approx(0.05)
    assert lr_factor(55, 10, 100, 0.05) == pytest.approx(0.05 + 0.95 * 0.5)
    assert lr_factor(500, 10, 100, 0.05) == pytest.approx(0.05)  # past the end: stays at floor


def test_no_warmup_starts_at_peak() -> None:
    assert lr_factor(0, 0, 50, 0.0) == 1.0
    assert lr_factor(50, 0, 50, 0.0) == pytest.approx(0.0)


def test_scheduler_follows_the_factor_and_round_trips() -> None:
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    sched = build_scheduler(opt, steps_per_epoch=10, epochs=3, warmup_epochs=0.5, min_ratio=0.1)
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1 / 6)
    assert max(lrs) == pytest.approx(0.1)
    assert lrs[-1] == pytest.approx(0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 24 / 25))))
    state = sched.state_dict()
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    sched2 = build_scheduler(opt2, 10, 3, 0.5, 0.1)
    sched2.load_state_dict(state)
    assert sched2.get_last_lr() == sched.get_last_lr()
