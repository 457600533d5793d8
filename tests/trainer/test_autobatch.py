"""batch_size='auto' search, with fake memory functions instead of a GPU."""

from __future__ import annotations

import pytest
import torch

from trainer.autobatch import make_measure, probe_batch_size, round_batch, scale_lr
from trainer.model import SmallCNN

GIB = 2**30


def linear_memory(fixed: float, per_sample: float, capacity: float, calls: list[int]):
    """Peak bytes grow linearly with the batch; past the card's capacity it OOMs (None)."""

    def measure(n: int) -> float | None:
        calls.append(n)
        peak = fixed + per_sample * n
        return None if peak > capacity else peak

    return measure


def test_finds_largest_batch_under_budget() -> None:
    calls: list[int] = []
    # MI300X-like: 192 GiB, 2 GiB fixed, 50 MiB per sample, aim for 85%
    measure = linear_memory(2 * GIB, 50 * 2**20, 192 * GIB, calls)
    budget = 0.85 * 192 * GIB
    n = probe_batch_size(measure, budget, start=32, limit=65536)
    exact = int((budget - 2 * GIB) // (50 * 2**20))
    assert n is not None and n % 8 == 0
    assert 0.93 * exact <= n <= exact  # within the search resolution, never over budget
    assert len(calls) < 30


def test_respects_limit_and_small_budgets() -> None:
    calls: list[int] = []
    measure = linear_memory(0, 1, 1e9, calls)
    assert probe_batch_size(measure, 1e9, start=32, limit=100) == 96  # limit, rounded down to 8
    assert probe_batch_size(measure, 1e9, start=32, limit=5) == 5


def test_halves_when_the_start_does_not_fit() -> None:
    calls: list[int] = []
    measure = linear_memory(0, 1.0, 10.0, calls)  # OOM above 10
    assert probe_batch_size(measure, 6.0, start=32, limit=1000) == 6
    assert calls[:3] == [32, 16, 8]


def test_none_when_nothing_fits() -> None:
    assert probe_batch_size(lambda n: None, 1.0, start=32, limit=1000) is None


def test_budget_is_honoured_even_without_oom() -> None:
    # plenty of memory on the card, but the target fraction caps it
    n = probe_batch_size(lambda n: 100.0 * n, budget=1000.0, start=4, limit=4096)
    assert n == 8  # 10 fits, rounded down to a multiple of 8


def test_round_batch() -> None:
    assert [round_batch(n) for n in (1, 7, 8, 15, 16, 250)] == [1, 7, 8, 8, 16, 248]


def test_scale_lr_is_square_root() -> None:
    assert scale_lr(0.002, 512, 128) == pytest.approx(0.004)
    assert scale_lr(0.003, 32, 32) == pytest.approx(0.003)


def test_cpu_measure_runs_a_step_and_leaves_the_model_as_it_was() -> None:
    torch.manual_seed(0)
    model = SmallCNN(10, width=4, depth=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sample = (torch.randn(3, 8, 8), 3)
    measure = make_measure(model, sample, torch.nn.CrossEntropyLoss(), torch.device("cpu"), None, 0)
    assert measure(4) == 0.0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN stats restored
    assert all(p.grad is None for p in model.parameters())


def test_measure_reports_oom_as_none() -> None:
    class Greedy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[0] > 8:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
            return self.lin(x)

    loss = torch.nn.CrossEntropyLoss()
    measure = make_measure(Greedy(), (torch.zeros(4), 1), loss, torch.device("cpu"), None, 0)
    assert measure(8) == 0.0
    assert measure(9) is None
    assert probe_batch_size(measure, float("inf"), start=16, limit=31) == 8
