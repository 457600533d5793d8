"""What the trainer's bookkeeping costs: its real loop vs a bare torch loop, same model and data.

Run from the repo root: `python tests/bench/bench_trainer.py [--reps 5] [--quick]`.

Both sides build the bundled task (SmallCNN on synthetic data) from the same config,
train the same number of steps with the same batch and evaluate the same validation
set each epoch. The trainer side is `trainer.loop.run` itself, with its events,
status.json, train.log, history.json and per-epoch checkpoints (last.pt, best.pt);
the bare side is forward/backward/step plus the same eval forward passes.
Reported: median samples/s over interleaved repetitions for
  - end to end: training samples / wall time of the whole run (setup, eval, and for
    the trainer every output and checkpoint write included);
  - steady state: training samples / time in the training phase, first epoch excluded;
  - per CPU second: training samples / process CPU time (steadier on a shared machine,
    blind to I/O waits such as fsync), and the best wall-clock rep;
  - bookkeeping share: time inside the trainer's outputs, checkpoint and stop code as a
    fraction of its run, measured with cProfile (robust to a busy machine).
On a machine with a GPU it also reports AMP and torch.compile speedups of the trainer.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402

from trainer.config import TrainConfig, resolve_paths, validate  # noqa: E402
from trainer.loop import run  # noqa: E402
from trainer.tasks import load_task  # noqa: E402

BASE: dict[str, Any] = {
    "run_id": "bench",
    "train_samples": 2048,
    "val_samples": 512,
    "image_size": 32,
    "width": 16,
    "depth": 2,
    "epochs": 3,
    "batch_size": 64,
    "workers": 0,
    "seed": 0,
}


def trainer_side(raw: dict[str, Any]) -> tuple[float, float, float]:
    """(end-to-end, steady-state, end-to-end per CPU second) samples/s of the real loop."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = resolve_paths(validate(raw), tmp)
        with contextlib.redirect_stdout(io.StringIO()):
            t0, c0 = time.perf_counter(), time.process_time()
            code = run(cfg)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if code != 0:
            raise SystemExit(f"trainer run failed ({code}); see {tmp}/train.log")
        phase = json.loads((Path(tmp) / "status.json").read_text())["phase"]
        if phase != "finished":  # e.g. SIGTERM/Ctrl-C: the trainer stopped gracefully
            raise SystemExit(f"trainer run ended as {phase!r}; no numbers")
        history = json.loads((Path(tmp) / "history.json").read_text())
        start = json.loads((Path(tmp) / "events.jsonl").read_text().splitlines()[0])
    per_epoch = start["steps_per_epoch"] * start["batch_size"]
    train_times = [per_epoch / h["samples_per_second"] for h in history]
    steady = per_epoch * (len(history) - 1) / sum(train_times[1:])
    total = per_epoch * len(history)
    return total / wall, steady, total / cpu


BOOKKEEPING = {  # entry points of everything the trainer does besides training (no nesting)
    ("outputs.py", "log"),
    ("outputs.py", "event"),
    ("outputs.py", "status"),
    ("outputs.py", "history"),
    ("checkpoint.py", "atomic_save"),
    ("checkpoint.py", "atomic_copy"),
    ("stop.py", "requested"),
    ("loop.py", "make_state"),
}


def bookkeeping_share(raw: dict[str, Any]) -> float:
    """Fraction of the trainer's run time spent in bookkeeping, by cProfile.

    Independent of how busy the machine is; conservative, since profiling slows the
    Python-heavy bookkeeping more than the torch kernels.
    """
    with tempfile.TemporaryDirectory() as tmp:
        cfg = resolve_paths(validate(raw), tmp)
        profile = cProfile.Profile()
        with contextlib.redirect_stdout(io.StringIO()):
            profile.runcall(run, cfg)
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total = spent = 0.0
    for (filename, _, name), (_, _, _, cumulative, _) in stats.items():
        base = Path(filename).name
        if base == "loop.py" and name == "train":
            total = cumulative
        elif (base, name) in BOOKKEEPING and Path(filename).parent.name == "trainer":
            spent += cumulative
    return spent / total


def bare_side(raw: dict[str, Any]) -> tuple[float, float, float]:
    """The same work written as the shortest honest torch loop."""
    cfg: TrainConfig = validate(raw)
    t0, c0 = time.perf_counter(), time.process_time()
    torch.manual_seed(cfg.seed)
    task = load_task(cfg)
    model = task.model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    batch = int(cfg.batch_size)
    train = torch.utils.data.DataLoader(
        task.train_set, batch_size=batch, shuffle=True, drop_last=True, generator=gen
    )
    val = torch.utils.data.DataLoader(task.val_set, batch_size=batch)
    train_times = []
    samples = 0
    for _ in range(cfg.epochs):
        model.train()
        t_epoch = time.perf_counter()
        for x, y in train:
            loss = task.loss_fn(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            samples += x.shape[0]
        train_times.append(time.perf_counter() - t_epoch)
        model.eval()
        with torch.no_grad():
            for x, y in val:
                task.loss_fn(model(x), y)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    per_epoch = samples / cfg.epochs
    return samples / wall, per_epoch * (cfg.epochs - 1) / sum(train_times[1:]), samples / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7, help="interleaved repetitions (median)")
    parser.add_argument("--quick", action="store_true", help="smaller run, for a smoke check")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (1 is steadiest on a busy box)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    raw = dict(BASE)
    if args.quick:
        raw.update(train_samples=512, val_samples=128)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"bench: torch {torch.__version__}, {device}, {torch.get_num_threads()} threads; "
        f"{raw['epochs']} epochs x {raw['train_samples']} samples, batch {raw['batch_size']}, "
        f"{raw['image_size']}px SmallCNN(width={raw['width']}, depth={raw['depth']})",
        flush=True,
    )
    if device == "cpu":
        raw["amp"] = "off"
    trainer_side(raw), bare_side(raw)  # warm-up: allocator, oneDNN kernels, page cache
    print(
        "samples/s per rep: end-to-end wall / steady-state wall / end-to-end per CPU second",
        flush=True,
    )
    results: dict[str, list[tuple[float, float, float]]] = {"trainer": [], "bare": []}
    for rep in range(args.reps):
        order = ("trainer", "bare") if rep % 2 == 0 else ("bare", "trainer")
        for side in order:
            results[side].append(trainer_side(raw) if side == "trainer" else bare_side(raw))
        t, b = results["trainer"][-1], results["bare"][-1]
        print(
            f"  rep {rep + 1}: trainer {t[0]:7.1f} / {t[1]:7.1f} / {t[2]:7.1f}"
            f"   bare {b[0]:7.1f} / {b[1]:7.1f} / {b[2]:7.1f}",
            flush=True,
        )
    rows = (
        ("end-to-end, wall, median", 0, statistics.median),
        ("end-to-end, wall, best", 0, max),
        ("end-to-end, per CPU second, median", 2, statistics.median),
        ("steady-state, wall, median", 1, statistics.median),
    )
    print(f"\nsamples/s over {args.reps} reps{'':<22}trainer       bare   trainer/bare")
    for label, i, stat in rows:
        t = stat(r[i] for r in results["trainer"])
        b = stat(r[i] for r in results["bare"])
        print(f"  {label:<36} {t:9.1f}  {b:9.1f}   {t / b:6.3f}  (bookkeeping {1 - t / b:+.1%})")
    paired = [t[0] / b[0] for t, b in zip(results["trainer"], results["bare"], strict=True)]
    print(
        f"  {'end-to-end, wall, median of per-rep ratios':<58}   {statistics.median(paired):6.3f}"
        f"  (bookkeeping {1 - statistics.median(paired):+.1%})"
    )
    walls = [r[0] for rs in results.values() for r in rs]
    if max(walls) / min(walls) > 1.25:
        print(
            f"  note: wall-clock spread {max(walls) / min(walls):.2f}x between reps: machine busy;"
            " trust 'best' and 'per CPU second' over the medians"
        )
    share = statistics.median(bookkeeping_share(raw) for _ in range(3))
    print(f"  bookkeeping share of the trainer's own time (cProfile, median of 3): {share:.2%}")
    print("  goal: bookkeeping <= 3% (trainer/bare >= 0.97)")
    if device == "cuda":
        print("\nGPU variants of the trainer (steady-state samples/s, median of 3):")
        for name, extra in (
            ("fp32 (amp off)", {"amp": "off"}),
            ("amp auto", {"amp": "auto"}),
            ("amp auto + compile", {"amp": "auto", "compile": True}),
        ):
            runs = [trainer_side({**raw, **extra})[1] for _ in range(3)]
            print(f"  {name:<20} {statistics.median(runs):10.1f}")


if __name__ == "__main__":
    main()
