"""The training loop. `train` reads top to bottom: setup, resume, epochs, finish.

`run` wraps it with what a rented GPU needs around a loop: process group, signal
handling, the run-dir outputs, one retry after an out-of-memory with
batch_size='auto', and exit codes (0 finished or interrupted, 1 failed).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from . import checkpoint, distributed
from .autobatch import CPU_FALLBACK_BATCH, MAX_AUTO_BATCH, make_measure, probe_batch_size, scale_lr
from .config import TrainConfig, to_dict
from .data import ResumableSampler, ShardSampler, make_loader
from .device import (
    amp_dtype,
    bf16_supported,
    choose_amp,
    configure_backends,
    describe,
    is_oom,
    loader_settings,
    peak_memory_mb,
    pick_device,
    reset_peak_memory,
)
from .distributed import DistInfo
from .errors import TrainerError
from .outputs import Outputs
from .protocol import (
    BEST_CHECKPOINT_FILE,
    LAST_CHECKPOINT_FILE,
    STOP_FILE,
    Phase,
    TrainerEvent,
)
from .schedule import build_scheduler
from .stop import StopRequest
from .tasks import load_task


class OutOfMemory(TrainerError):
    """A training step did not fit; carries the batch size that does, when known."""

    def __init__(self, message: str, suggestion: int | None) -> None:
        super().__init__(message)
        self.suggestion = suggestion


@dataclass
class Attempt:
    """What `run` needs to explain an OOM after `train`'s frame (and activations) is gone."""

    batch: int | None = None
    probe: Callable[[int], int | None] | None = None


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices and conv kernels; leave norms and biases alone."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _no_progress() -> dict[str, float]:
    """Accumulators of an epoch in progress (kept in mid-epoch checkpoints)."""
    return {"loss_sum": 0.0, "micro_steps": 0, "seconds": 0.0, "train_seconds": 0.0}


def _loader_seed(seed: int, epoch: int, rank: int) -> int:
    """Worker base seeds per (seed, epoch, rank): resume re-creates them exactly."""
    return (seed * 1_000_003 + epoch * 7_919 + rank) % (2**63)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    task: Any,
    device: torch.device,
    autocast: Callable[[], Any],
) -> tuple[float, float, float]:
    """(loss sum, metric sum, samples) on this rank's shard of the validation set."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    metric_sum = torch.zeros((), dtype=torch.float64, device=device)
    n = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast():
            out = model(x)
            loss = task.loss_fn(out, y)
        loss_sum += loss.double() * y.shape[0]
        metric_sum += task.metric_fn(out.float(), y).double()
        n += y.shape[0]
    model.train()
    return float(loss_sum), float(metric_sum), float(n)


def train(
    cfg: TrainConfig,
    info: DistInfo,
    device: torch.device,
    out: Outputs,
    stop: StopRequest,
    resuming: bool,
    attempt: Attempt,
    batch_override: int | None = None,
) -> int:
    """Train cfg.epochs epochs (or the rest of them on resume); 0 = finished or interrupted."""
    t_start = time.monotonic()
    out_dir = Path(str(cfg.out_dir))
    last_path, best_path = out_dir / LAST_CHECKPOINT_FILE, out_dir / BEST_CHECKPOINT_FILE
    ws, rank = info.world_size, info.rank
    out.status(phase=Phase.STARTING, epochs=cfg.epochs, reason=None)

    # -------- precision and kernels
    configure_backends(device, cfg.deterministic)
    amp = choose_amp(cfg.amp, device.type, bf16_supported(device))
    dtype = amp_dtype(amp)
    autocast = (
        partial(torch.autocast, device.type, dtype=dtype) if dtype else contextlib.nullcontext
    )

    # -------- what we resume from
    ckpt = None
    if resuming:
        if not last_path.exists():
            raise TrainerError(
                f"--resume: no last.pt in {out_dir}; start without --resume, "
                "or use --auto-resume to resume when there is one"
            )
        ckpt = checkpoint.load(last_path)

    # -------- task and model (same init on every rank; DDP also broadcasts rank 0's)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    task = load_task(cfg)
    raw_model = task.model.to(device)
    per_rank = len(task.train_set) // ws  # DistributedSampler(drop_last=True) shard size
    micro = cfg.grad_accum
    n_params = sum(p.numel() for p in raw_model.parameters())

    # -------- batch size (and lr, which scales with an auto batch)
    param_bytes = sum(p.numel() * p.element_size() for p in raw_model.parameters())
    extra = param_bytes * (3 if info.enabled else 2)  # AdamW moments (+ DDP buckets)
    sample = task.train_set[0]
    measure = make_measure(raw_model, sample, task.loss_fn, device, dtype, extra)
    budget = float("inf")
    if device.type == "cuda":
        budget = cfg.auto_batch_target * torch.cuda.get_device_properties(device).total_memory
    if not info.enabled:  # a probe under DDP would leave the other ranks waiting
        attempt.probe = lambda bad: probe_batch_size(measure, budget, max(1, bad // 2), bad - 1)
    if ckpt is not None:
        batch, lr = int(ckpt["batch_size"]), float(ckpt["lr"])
        if cfg.batch_size not in ("auto", batch):
            out.log(
                f"warning: keeping the checkpoint's batch_size={batch} (config says "
                f"{cfg.batch_size}) so the resumed run continues exactly"
            )
    else:
        if batch_override is not None:
            batch = batch_override
        elif cfg.batch_size != "auto":
            batch = int(cfg.batch_size)
        elif device.type != "cuda":
            batch = min(CPU_FALLBACK_BATCH, max(1, per_rank // micro))
            out.log(f"batch_size=auto: no GPU to probe, using a fixed batch_size={batch}")
        else:
            limit = min(MAX_AUTO_BATCH, max(1, per_rank // micro))
            found = probe_batch_size(measure, budget, min(32, limit), limit)
            if found is None:
                raise TrainerError("batch_size=auto: not even batch 1 fits in GPU memory")
            batch = distributed.min_int(found, device, info)
            out.log(
                f"batch_size=auto: {batch} per GPU fits {cfg.auto_batch_target:.0%} of "
                f"{budget / cfg.auto_batch_target / 2**30:.1f} GiB"
            )
        lr = cfg.lr
        if cfg.batch_size == "auto":
            lr = scale_lr(cfg.lr, batch * ws * micro, cfg.lr_ref_batch)
    attempt.batch = batch
    steps_per_epoch = per_rank // (batch * micro)
    if cfg.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    if steps_per_epoch < 1:
        raise TrainerError(
            f"{len(task.train_set)} training samples over {ws} process(es) make no full step "
            f"of batch_size {batch} x grad_accum {micro}; lower batch_size or add samples"
        )

    # -------- wrap: SyncBN, optimizer, schedule, scaler, compile, DDP
    if cfg.sync_bn and info.enabled and device.type == "cpu":
        out.log("sync_bn: ignored on CPU (SyncBatchNorm needs a GPU); BatchNorm stays per-rank")
    elif cfg.sync_bn and info.enabled:
        raw_model = nn.SyncBatchNorm.convert_sync_batchnorm(raw_model)
    fast = {"fused": True} if device.type == "cuda" else {}  # fused=False would disable foreach
    optimizer = torch.optim.AdamW(_param_groups(raw_model, cfg.weight_decay), lr=lr, **fast)
    scheduler = build_scheduler(
        optimizer, steps_per_epoch, cfg.epochs, cfg.warmup_epochs, cfg.min_lr_ratio
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp.use_scaler)
    core = torch.compile(raw_model) if cfg.compile else raw_model
    model: nn.Module = core
    if info.enabled:
        model = DDP(core, device_ids=[device.index] if device.type == "cuda" else None)

    # -------- data
    settings = loader_settings(device.type, os.cpu_count() or 1, ws, cfg.workers)
    sampler = ResumableSampler(task.train_set, ws, rank, cfg.seed)
    loader_gen = torch.Generator()
    train_loader = make_loader(task.train_set, sampler, batch, settings, loader_gen, True)
    val_loader = make_loader(
        task.val_set, ShardSampler(len(task.val_set), ws, rank), batch, settings
    )

    # -------- position: fresh, or exactly where last.pt left off
    start_epoch, start_step = 0, 0  # epochs completed; optimizer steps done in the next one
    history: list[dict[str, Any]] = []
    best_metric: float | None = None
    partial_epoch = _no_progress()
    # Wall time and attempts of the whole run: a resumed run reports all of it, not the
    # last attempt only.
    elapsed_before, attempts = 0.0, 1
    if ckpt is None:
        random.seed(cfg.seed + rank)
        torch.manual_seed(cfg.seed + rank)
    else:
        raw_model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"] is not None and scaler.is_enabled():
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, start_step = int(ckpt["epoch"]), int(ckpt["step"])
        history, best_metric = list(ckpt["history"]), ckpt["best_metric"]
        partial_epoch = dict(ckpt["partial_epoch"])
        elapsed_before = float(ckpt.get("elapsed_seconds") or 0.0)
        attempts = int(ckpt.get("attempts") or 1) + 1
        if start_step and int(ckpt["world_size"]) != ws:
            out.log(
                f"warning: world size changed ({ckpt['world_size']} -> {ws}); "
                f"epoch {start_epoch + 1} restarts from its first step"
            )
            start_step, partial_epoch = 0, _no_progress()
        start_step = min(start_step, steps_per_epoch)
        rngs = ckpt["rng"]
        checkpoint.set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0], device)

    # -------- say what is about to happen
    out.log(f"run {cfg.run_id} (preset {cfg.preset}) on {describe(device)}, world size {ws}")
    if ckpt is not None:
        where = f"epoch {start_epoch + 1} step {start_step}/{steps_per_epoch}"
        out.log(f"resumed from {where if start_step else f'epoch {start_epoch}'} ({last_path})")
    out.log("config: " + json.dumps(to_dict(cfg), sort_keys=True))
    out.log(f"task: {getattr(task, 'description', '') or cfg.task}; {n_params:,} parameters")
    out.log(
        f"{amp.note}; batch_size {batch} x {ws} process(es) x grad_accum {micro}; lr {lr:.3g}; "
        f"{steps_per_epoch} steps/epoch; loader workers {settings.num_workers}"
        + (", torch.compile" if cfg.compile else "")
    )
    out.event(
        TrainerEvent.START,
        run_id=cfg.run_id,
        config=to_dict(cfg),
        device=describe(device),
        world_size=ws,
        amp=amp.mode,
        batch_size=batch,
        steps_per_epoch=steps_per_epoch,
        epochs=cfg.epochs,
        start_epoch=start_epoch + 1,
    )
    out.history(history)
    out.status(
        phase=Phase.WARMUP,
        epoch=min(start_epoch + 1, cfg.epochs),
        epochs_done=start_epoch,
        step=start_step,
        steps_per_epoch=steps_per_epoch,
        best_metric=best_metric,
        eta_seconds=None,
    )

    def make_state(epochs_done: int, step: int, progress: dict[str, float]) -> dict[str, Any]:
        """Everything --resume needs; a collective (RNG gather), so every rank calls it."""
        return {
            "format": checkpoint.FORMAT,
            "config": to_dict(cfg),
            "model": raw_model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "epoch": epochs_done,
            "step": step,
            "partial_epoch": progress,
            "history": history,
            "best_metric": best_metric,
            "batch_size": batch,
            "lr": lr,
            "world_size": ws,
            "rng": distributed.gather(checkpoint.rng_state(device), info, device),
            "sampler": {"seed": cfg.seed, "epoch": epochs_done},
            "elapsed_seconds": elapsed_before + time.monotonic() - t_start,
            "attempts": attempts,
        }

    # -------- the loop
    samples_per_step = batch * micro  # per rank
    log_every = max(1, steps_per_epoch // 10)
    ckpt_every = cfg.checkpoint_every_minutes * 60.0
    last_ckpt = time.monotonic()
    steady_seconds: list[float] = []  # epoch times of this process, warm-up epoch excluded
    for epoch in range(start_epoch, cfg.epochs):
        warmup = epoch == start_epoch
        phase = Phase.WARMUP if warmup else Phase.TRAINING
        step0 = start_step if warmup else 0
        if not warmup or not step0:
            partial_epoch = _no_progress()
        sampler.set_position(epoch, step0 * samples_per_step)
        loader_gen.manual_seed(_loader_seed(cfg.seed, epoch, rank))
        reset_peak_memory(device)
        model.train()
        t_epoch = time.monotonic()
        loss_sum = torch.tensor(partial_epoch["loss_sum"], dtype=torch.float64, device=device)
        micro_steps = int(partial_epoch["micro_steps"])
        batches = iter(train_loader)
        for step in range(step0, steps_per_epoch):
            for m in range(micro):
                x, y = next(batches)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                sync = m == micro - 1  # DDP all-reduces gradients on the last micro-batch only
                with model.no_sync() if info.enabled and not sync else contextlib.nullcontext():
                    with autocast():
                        loss = task.loss_fn(model(x), y)
                    scaler.scale(loss / micro).backward()
                loss_sum += loss.detach()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            micro_steps += micro
            done = step + 1

            # bookkeeping: cheap every step; anything that syncs the GPU only now and then
            now = time.monotonic()
            if warmup and done == step0 + 1:
                out.log(f"first step done in {now - t_start:.1f}s since start (warm-up)")
            if done % log_every == 0 or done == steps_per_epoch:
                out.log(
                    f"epoch {epoch + 1}/{cfg.epochs} step {done}/{steps_per_epoch} "
                    f"loss {loss.item():.4f} lr {optimizer.param_groups[0]['lr']:.3g}"
                )
            eta = None
            if steady_seconds:
                left = cfg.epochs - epoch - done / steps_per_epoch
                eta = round(sum(steady_seconds) / len(steady_seconds) * left, 1)
            out.status(
                force=done == step0 + 1, phase=phase, epoch=epoch + 1, step=done, eta_seconds=eta
            )
            want_stop, want_ckpt = stop.requested(), 0 < ckpt_every <= now - last_ckpt
            if info.enabled:
                want_stop, want_ckpt = distributed.any_([want_stop, want_ckpt], device, info)
            if want_stop or (want_ckpt and done < steps_per_epoch):
                elapsed = now - t_epoch
                progress = {
                    "loss_sum": float(loss_sum),
                    "micro_steps": micro_steps,
                    "seconds": partial_epoch["seconds"] + elapsed,
                    "train_seconds": partial_epoch["train_seconds"] + elapsed,
                }
                state = make_state(epoch, done, progress)
                if info.is_main:
                    checkpoint.atomic_save(state, last_path)
                out.event(TrainerEvent.CHECKPOINT, path=str(last_path), epoch=epoch + 1, best=False)
                last_ckpt = time.monotonic()
                if want_stop:
                    reason = stop.reason or "stop requested on another rank"
                    out.event(TrainerEvent.INTERRUPTED, epoch=epoch + 1, step=done, reason=reason)
                    out.status(phase=Phase.INTERRUPTED, reason=reason, eta_seconds=None)
                    out.log(
                        f"interrupted ({reason}) at epoch {epoch + 1} step {done}; "
                        "last.pt written; continue with --resume"
                    )
                    return 0
                out.log(f"checkpoint: last.pt at epoch {epoch + 1} step {done}")

        # -------- end of epoch: validate, record, checkpoint
        train_seconds = partial_epoch["train_seconds"] + time.monotonic() - t_epoch
        v_loss, v_metric, v_n = evaluate(core, val_loader, task, device, autocast)
        t_loss, t_micro, v_loss, v_metric, v_n = distributed.sum_(
            [float(loss_sum), float(micro_steps), v_loss, v_metric, v_n], device, info
        )
        epoch_seconds = partial_epoch["seconds"] + time.monotonic() - t_epoch
        samples = steps_per_epoch * samples_per_step * ws
        row = {
            "epoch": epoch + 1,
            "train_loss": t_loss / max(1.0, t_micro),
            "val_loss": v_loss / max(1.0, v_n),
            "val_metric": v_metric / max(1.0, v_n),
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_seconds": round(epoch_seconds, 3),
            "samples_per_second": round(samples / max(1e-9, train_seconds), 2),
        }
        history.append(row)
        is_best = best_metric is None or row["val_metric"] > best_metric
        if is_best:
            best_metric = row["val_metric"]
        want_stop = stop.requested()
        if info.enabled:
            want_stop = distributed.any_([want_stop], device, info)[0]
        finished = epoch + 1 == cfg.epochs
        due = (epoch + 1) % cfg.checkpoint_every_epochs == 0 or finished or want_stop
        if due or is_best:
            state = make_state(epoch + 1, 0, _no_progress())
            if info.is_main:
                if due:
                    checkpoint.atomic_save(state, last_path)
                    last_ckpt = time.monotonic()
                if is_best and due:
                    checkpoint.atomic_copy(last_path, best_path)
                elif is_best:
                    checkpoint.atomic_save(state, best_path)
            del state
        out.event(
            TrainerEvent.EPOCH_END,
            **row,
            epochs=cfg.epochs,
            peak_mem_mb=peak_memory_mb(device),
            warmup=warmup,
        )
        if due:
            out.event(TrainerEvent.CHECKPOINT, path=str(last_path), epoch=epoch + 1, best=False)
        if is_best:
            out.event(TrainerEvent.CHECKPOINT, path=str(best_path), epoch=epoch + 1, best=True)
        out.history(history)
        if not warmup:  # ETA from whole epochs (checkpoint included), warm-up excluded
            steady_seconds.append(partial_epoch["seconds"] + time.monotonic() - t_epoch)
        eta = None
        if steady_seconds:
            eta = round(sum(steady_seconds) / len(steady_seconds) * (cfg.epochs - epoch - 1), 1)
        out.status(
            phase=Phase.TRAINING,
            epoch=epoch + 1,
            epochs_done=epoch + 1,
            step=steps_per_epoch,
            eta_seconds=eta,
            best_metric=best_metric,
        )
        out.log(
            f"epoch {epoch + 1}/{cfg.epochs} done: train_loss {row['train_loss']:.4f} "
            f"val_loss {row['val_loss']:.4f} val_metric {row['val_metric']:.4f} "
            f"in {epoch_seconds:.1f}s ({row['samples_per_second']:.0f} samples/s"
            + (", includes warm-up)" if warmup else ")")
            + (" *best*" if is_best else "")
        )
        if want_stop and not finished:
            reason = stop.reason or "stop requested on another rank"
            out.event(TrainerEvent.INTERRUPTED, epoch=epoch + 2, step=0, reason=reason)
            out.status(phase=Phase.INTERRUPTED, epoch=epoch + 2, step=0, reason=reason)
            out.log(f"interrupted ({reason}) after epoch {epoch + 1}; continue with --resume")
            return 0

    seconds = round(elapsed_before + time.monotonic() - t_start, 3)
    out.event(TrainerEvent.FINISHED, epochs=cfg.epochs, best_metric=best_metric, seconds=seconds)
    out.status(
        phase=Phase.FINISHED,
        epoch=cfg.epochs,
        epochs_done=cfg.epochs,
        eta_seconds=0.0,
        best_metric=best_metric,
    )
    over = f" over {attempts} attempts" if attempts > 1 else ""
    out.log(f"finished {cfg.epochs} epochs in {seconds:.1f}s{over}; best val_metric {best_metric}")
    return 0


def _fail(out: Outputs, reason: str, detail: str | None = None) -> int:
    """status failed + a failed event + one clear line on stderr; exit code 1."""
    out.error(f"trainer failed: {reason}")
    if detail:
        out.error(detail.rstrip())
    out.event(TrainerEvent.FAILED, reason=reason)
    out.status(phase=Phase.FAILED, reason=reason, eta_seconds=None)
    return 1


def run(cfg: TrainConfig, *, resume: bool = False, auto_resume: bool = False) -> int:
    """Train with process setup and error mapping around it; returns the exit code."""
    info = distributed.from_env()
    out_dir = Path(str(cfg.out_dir))
    resuming = resume or (auto_resume and (out_dir / LAST_CHECKPOINT_FILE).exists())
    out = Outputs(out_dir, enabled=info.is_main, fresh=not resuming)
    stop = StopRequest(out_dir / STOP_FILE if info.is_main else None)
    stop.install()
    try:
        device = pick_device(info.local_rank)
        distributed.init(info, device)
        attempt = Attempt()
        oom: str | None = None
        try:
            code = train(cfg, info, device, out, stop, resuming, attempt)
            distributed.barrier(info)  # no rank tears the group down while a peer still talks
            return code
        except Exception as exc:
            if not is_oom(exc):
                raise
            oom = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # train's frame is gone here, so its activations are free for the probe
        bad = attempt.batch or 0
        fits = attempt.probe(bad) if attempt.probe is not None and bad > 1 else None
        if fits:
            hint = f"batch_size={fits} fits"
        elif bad > 1:
            hint = f"try batch_size={bad // 2}"
        else:
            hint = "not even batch_size=1 fits: use a smaller model or image_size"
        retry = cfg.batch_size == "auto" and not resuming and fits is not None
        out.log(f"out of memory at batch_size={bad} on {device} ({oom}); {hint}")
        if not retry:
            raise OutOfMemory(
                f"out of memory at batch_size={bad}: {hint} (set batch_size, or batch_size='auto')",
                fits,
            )
        out.log(f"batch_size=auto: retrying once with batch_size={fits}")
        try:
            return train(cfg, info, device, out, stop, False, Attempt(), batch_override=fits)
        except Exception as exc:
            if not is_oom(exc):
                raise
            raise OutOfMemory(f"out of memory again at batch_size={fits}", None) from None
    except TrainerError as exc:
        return _fail(out, str(exc))
    except KeyboardInterrupt:
        return _fail(out, "forced stop by a second signal; last.pt is from the last checkpoint")
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
        return _fail(out, reason, traceback.format_exc())
    finally:
        stop.uninstall()
        distributed.cleanup()
        out.close()
