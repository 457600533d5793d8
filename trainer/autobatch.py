"""batch_size='auto': find the largest batch whose training step fits a memory budget.

`probe_batch_size` is pure (it only calls `measure`), so its search is unit-tested
with a fake memory function; `make_measure` is the real GPU measurement.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

CPU_FALLBACK_BATCH = 32
MAX_AUTO_BATCH = 65536


def round_batch(n: int) -> int:
    """Round down to a multiple of 8 (tensor-core friendly) once above 8."""
    return n if n < 8 else n - n % 8


def probe_batch_size(
    measure: Callable[[int], float | None], budget: float, start: int, limit: int
) -> int | None:
    """Largest batch <= limit with measure(batch) <= budget (None from measure = OOM).

    Doubles from `start` until the budget is passed, then bisects; halves below
    `start` if even that does not fit. Returns None when batch 1 does not fit.
    """

    def fits(n: int) -> bool:
        peak = measure(n)
        return peak is not None and peak <= budget

    limit = max(1, limit)
    n = max(1, min(start, limit))
    while not fits(n):
        if n == 1:
            return None
        n //= 2
    good, bad = n, None
    while bad is None and good < limit:
        nxt = min(limit, good * 2)
        if fits(nxt):
            good = nxt
        else:
            bad = nxt
    if bad is not None:
        step = max(1, good // 16)  # ~6% resolution is plenty; saves probes
        while bad - good > step:
            mid = (good + bad) // 2
            if fits(mid):
                good = mid
            else:
                bad = mid
    return max(1, round_batch(good))


def scale_lr(lr: float, global_batch: int, ref_batch: int) -> float:
    """Square-root scaling (AdamW): lr * sqrt(global / ref)."""
    return lr * math.sqrt(global_batch / ref_batch)


def make_measure(
    model: torch.nn.Module,
    sample: tuple[torch.Tensor, torch.Tensor],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    device: torch.device,
    amp: torch.dtype | None,
    extra_bytes: float,
) -> Callable[[int], float | None]:
    """measure(n): peak memory in bytes of one forward/backward at batch n, None on OOM.

    `extra_bytes` adds what the probe does not allocate (optimizer moments, DDP buckets).
    On CPU it only reports whether the step ran (0 bytes), which still finds OOM limits.
    """
    from .device import is_oom

    x0, y0 = sample

    def measure(n: int) -> float | None:
        x = x0.unsqueeze(0).expand(n, *x0.shape).contiguous().to(device)
        y = torch.as_tensor(y0).unsqueeze(0).expand(n, *torch.as_tensor(y0).shape).to(device)
        saved = [b.detach().clone() for b in model.buffers()]  # BN stats must not move
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        try:
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss = loss_fn(model(x), y)
            loss.backward()
            peak = 0.0
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                peak = float(torch.cuda.max_memory_reserved(device)) + extra_bytes
            return peak
        except Exception as exc:
            if not is_oom(exc):
                raise
            return None
        finally:
            model.zero_grad(set_to_none=True)
            with torch.no_grad():
                for buf, old in zip(model.buffers(), saved, strict=True):
                    buf.copy_(old)
            del x, y, saved
            if device.type == "cuda":
                torch.cuda.empty_cache()

    return measure
