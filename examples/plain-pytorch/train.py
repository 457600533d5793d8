"""Train a tiny CNN on 28x28 "digits": an ordinary PyTorch script, nothing gpuctl-specific.

gpuctl needs only three habits from it, which most training scripts already have:
- one line per epoch, `Epoch 3/10 loss 0.41 val_loss 0.52 acc 0.871` (gpuctl reads it
  from the log to show progress and estimate the time left);
- on SIGTERM (gpuctl stop, a spot notice, the budget) finish the current step, save the
  checkpoint and exit 0;
- `--resume PATH` continues from that checkpoint at the next epoch.

    python make_data.py                      # writes data/digits (optional)
    python train.py --epochs 5 --data data/digits
    python train.py --epochs 5 --data data/digits --resume checkpoints/last.pt
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

CLASSES, SIDE, SHIFT = 10, 28, 2  # 10 classes of 28x28 images, shifted up to 2 pixels
STOP: list[str] = []  # the name of the signal that asked us to stop, once one did


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


def load_data(args: argparse.Namespace) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """train.pt / val.pt from --data ({"x": uint8 images, "y": labels}), else synthetic."""
    if args.data:
        splits = {}
        for split in ("train", "val"):
            saved = torch.load(Path(args.data, f"{split}.pt"), weights_only=True)
            splits[split] = (saved["x"].float() / 127.5 - 1, saved["y"])
    else:
        splits = {
            "train": synthetic_digits(args.size, seed=args.seed),
            "val": synthetic_digits(max(args.size // 10, 1), seed=args.seed + 1),
        }
    if args.limit:
        splits = {name: (x[: args.limit], y[: args.limit]) for name, (x, y) in splits.items()}
    return splits


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, CLASSES),
    )  # fmt: skip


def atomic_save(obj: object, path: Path) -> None:
    """Write a temp file and rename it over `path`: a reader (or a copy made while we are
    killed) sees the old checkpoint or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".json":
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
    else:
        torch.save(obj, tmp)
    os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> tuple[float, float]:
    model.eval()
    loss = correct = 0.0
    for xb, yb in zip(x.split(batch), y.split(batch), strict=True):
        logits = model(xb)
        loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return loss / len(y), correct / len(y)


def on_signal(signum: int, _frame: FrameType | None) -> None:
    STOP.append(signal.Signals(signum).name)  # acted on between steps, never mid-step


def train_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, data: tuple[torch.Tensor, torch.Tensor],
    epoch: int, args: argparse.Namespace,
) -> float | None:  # fmt: skip
    """One pass over the training data: its mean loss, or None if a stop came first."""
    x, y = data
    model.train()
    shuffle = torch.Generator().manual_seed(args.seed * 1000 + epoch)
    batches = torch.randperm(len(y), generator=shuffle).to(x.device).split(args.batch_size)
    total = 0.0
    for batch in batches:
        if STOP:
            return None
        loss = F.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)
        time.sleep(args.sleep / len(batches))
    return total / len(y)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--size", type=int, default=10_000, help="synthetic training images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N images")
    parser.add_argument("--data", help="directory with train.pt and val.pt (make_data.py)")
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/last.pt"))
    parser.add_argument("--resume", type=Path, help="checkpoint to continue from")
    parser.add_argument("--out", type=Path, default=Path("checkpoints"), help="best.pt, metrics")
    parser.add_argument("--sleep", type=float, default=0.0, help="extra seconds per epoch")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    data = {k: (x.to(device), y.to(device)) for k, (x, y) in load_data(args).items()}
    model = tiny_cnn().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    done, history = 0, []  # epochs finished, one dict per finished epoch
    if args.resume:
        saved = torch.load(args.resume, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        set_rng_state(saved["rng"])
        done, history = saved["epoch"], saved["history"]
        print(f"Resumed from {args.resume}: {done} of {args.epochs} epochs done", flush=True)

    def save_checkpoint() -> None:
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
        state |= {"epoch": done, "history": history, "rng": rng_state()}
        atomic_save(state, args.checkpoint)

    for epoch in range(done + 1, args.epochs + 1):
        train_loss = train_epoch(model, optimizer, data["train"], epoch, args)
        if train_loss is None:  # stopped mid-epoch: a resume runs this epoch from its start
            save_checkpoint()
            print(f"Stopped by {STOP[0]}: {done} of {args.epochs} epochs done, "
                  f"saved {args.checkpoint}", flush=True)  # fmt: skip
            return 0
        val_loss, acc = evaluate(model, *data["val"], batch=args.batch_size * 4)
        history.append({"epoch": epoch, "loss": train_loss, "val_loss": val_loss, "acc": acc})
        print(f"Epoch {epoch}/{args.epochs} loss {train_loss:.4f} "
              f"val_loss {val_loss:.4f} acc {acc:.3f}", flush=True)  # fmt: skip
        if val_loss <= min(row["val_loss"] for row in history):
            atomic_save({"model": model.state_dict(), "epoch": epoch}, args.out / "best.pt")
        done = epoch
        save_checkpoint()

    best = min(history, key=lambda row: row["val_loss"])
    metrics = {"epochs": args.epochs, "best": best, "history": history}
    atomic_save(metrics, args.out / "metrics.json")
    print(f"Done: best val_loss {best['val_loss']:.4f} at epoch {best['epoch']}, "
          f"wrote {args.out}/best.pt and metrics.json", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
