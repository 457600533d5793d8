"""Device, precision and loader choices.

The decisions are pure functions of plain values (device type, capability flags,
CPU count) so the CUDA/ROCm paths are unit-tested on a CPU-only machine; the thin
torch-facing helpers below them only gather those values and apply the result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AmpPlan:
    """Resolved mixed precision: mode is 'bf16', 'fp16' or 'off'; note says why."""

    mode: str
    use_scaler: bool
    note: str


def choose_amp(requested: str, device_type: str, bf16_ok: bool) -> AmpPlan:
    """bf16 where the GPU supports it, else fp16 + GradScaler; off on CPU unless asked."""
    if requested == "off":
        return AmpPlan("off", False, "amp off (asked)")
    if device_type != "cuda":
        if requested == "bf16":
            return AmpPlan("bf16", False, f"bf16 autocast on {device_type} (asked)")
        if requested == "fp16":
            return AmpPlan("off", False, f"amp off: fp16 needs a GPU, running on {device_type}")
        return AmpPlan("off", False, f"amp off on {device_type}")
    if requested == "fp16":
        return AmpPlan("fp16", True, "fp16 + GradScaler (asked)")
    if bf16_ok:
        return AmpPlan("bf16", False, "bf16 (supported by this GPU)")
    if requested == "bf16":
        return AmpPlan("fp16", True, "fp16 + GradScaler: this GPU has no native bf16")
    return AmpPlan("fp16", True, "fp16 + GradScaler (no native bf16 on this GPU)")


def amp_dtype(plan: AmpPlan) -> torch.dtype | None:
    """The autocast dtype for a plan (None = no autocast)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(plan.mode)


@dataclass(frozen=True)
class LoaderSettings:
    """DataLoader knobs picked for the device."""

    num_workers: int
    pin_memory: bool
    persistent_workers: bool
    prefetch_factor: int | None


def loader_settings(
    device_type: str, cpu_count: int, world_size: int, requested: int | str
) -> LoaderSettings:
    """Workers feed a GPU in parallel; on CPU they would steal the cores the model needs."""
    if requested == "auto":
        if device_type == "cuda":
            per_rank = max(1, cpu_count // max(1, world_size))
            workers = max(1, min(8, per_rank - 1))
        else:
            workers = 0
    else:
        workers = int(requested)
    pin = device_type == "cuda"
    return LoaderSettings(workers, pin, workers > 0, 2 if workers > 0 else None)


def choose_backend(device_type: str) -> str:
    """nccl on CUDA (ROCm builds map it to rccl), gloo everywhere else."""
    return "nccl" if device_type == "cuda" else "gloo"


def pick_device(local_rank: int) -> torch.device:
    """One GPU per local rank when there is one; otherwise the CPU."""
    if torch.cuda.is_available():
        index = local_rank % max(1, torch.cuda.device_count())
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def bf16_supported(device: torch.device) -> bool:
    """Native bf16 only (emulated bf16 on V100/T4 is slower than fp16)."""
    if device.type != "cuda":
        return False
    if torch.version.hip:
        return torch.cuda.is_bf16_supported()
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch: no emulation flag
        return torch.cuda.get_device_capability(device)[0] >= 8


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """TF32 matmul/conv and cudnn autotuning on CUDA; deterministic kernels when asked."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
    else:  # torch < 2.9
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def describe(device: torch.device) -> str:
    """'cuda:0 (NVIDIA A10G, 22.1 GiB)' or 'cpu (2 threads)' for logs and events."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        kind = "ROCm" if torch.version.hip else "CUDA"
        return f"{device} ({props.name}, {props.total_memory / 2**30:.1f} GiB, {kind})"
    return f"{device} ({torch.get_num_threads()} threads)"


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window (per epoch)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak allocated GPU memory in MiB since the last reset; None on CPU."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def is_oom(exc: BaseException) -> bool:
    """CUDA and HIP out-of-memory, whichever class this torch raises."""
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(exc, oom) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc))
