"""Device, AMP, backend and loader decisions: pure functions, so CUDA paths test on CPU."""

from __future__ import annotations

import pytest
import torch

from trainer.device import AmpPlan, amp_dtype, choose_amp, choose_backend, is_oom, loader_settings


@pytest.mark.parametrize(
    ("requested", "device", "bf16_ok", "mode", "scaler"),
    [
        ("auto", "cuda", True, "bf16", False),  # A100/H100/MI300X
        ("auto", "cuda", False, "fp16", True),  # T4/V100
        ("bf16", "cuda", False, "fp16", True),  # asked for bf16 on a GPU without it
        ("bf16", "cuda", True, "bf16", False),
        ("fp16", "cuda", True, "fp16", True),
        ("off", "cuda", True, "off", False),
        ("auto", "cpu", False, "off", False),
        ("fp16", "cpu", False, "off", False),
        ("bf16", "cpu", False, "bf16", False),  # explicit CPU bf16 autocast is honoured
        ("auto", "mps", False, "off", False),
    ],
)
def test_choose_amp(requested: str, device: str, bf16_ok: bool, mode: str, scaler: bool) -> None:
    plan = choose_amp(requested, device, bf16_ok)
    assert (plan.mode, plan.use_scaler) == (mode, scaler)
    assert plan.note


def test_amp_dtype() -> None:
    assert amp_dtype(AmpPlan("bf16", False, "")) is torch.bfloat16
    assert amp_dtype(AmpPlan("fp16", True, "")) is torch.float16
    assert amp_dtype(AmpPlan("off", False, "")) is None


def test_backend_by_device() -> None:
    assert choose_backend("cuda") == "nccl"  # ROCm torch maps nccl to rccl
    assert choose_backend("cpu") == "gloo"


@pytest.mark.parametrize(
    ("device", "cpus", "world", "requested", "expected"),
    [
        ("cuda", 16, 1, "auto", (8, True, True, 2)),
        ("cuda", 16, 8, "auto", (1, True, True, 2)),
        ("cuda", 4, 1, "auto", (3, True, True, 2)),
        ("cuda", 1, 1, "auto", (1, True, True, 2)),
        ("cpu", 2, 1, "auto", (0, False, False, None)),
        ("cpu", 64, 1, "auto", (0, False, False, None)),
        ("cpu", 8, 1, 3, (3, False, True, 2)),
        ("cuda", 16, 1, 0, (0, True, False, None)),
    ],
)
def test_loader_settings(device: str, cpus: int, world: int, requested, expected) -> None:
    s = loader_settings(device, cpus, world, requested)
    assert (s.num_workers, s.pin_memory, s.persistent_workers, s.prefetch_factor) == expected


def test_is_oom() -> None:
    assert is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_oom(RuntimeError("HIP out of memory"))
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(ValueError("out of memory"))
