"""Train the tiny CNN and tell gpuctl its progress with `gpuctl_report` (optional).

What this example adds to ../plain-pytorch:
- `report(epoch, epochs=, loss=, val_loss=, metric=)` each epoch: exact numbers for gpuctl's
  progress, ETA and charts, instead of gpuctl reading them from the printed lines;
- `checkpoint(path)` after each save: gpuctl copies the checkpoint off the machine right
  away (a spot machine can vanish between epochs), not only when the script exits;
- the checkpoint is a directory, checkpoints/last/ (model.pt + state.json).

gpuctl puts `gpuctl_report` on the PYTHONPATH; without gpuctl the import fails and the
script runs as it is, printing its lines.

    python train.py --epochs 5 --size 20000
    python train.py --epochs 5 --size 20000 --resume checkpoints/last
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from model import evaluate, synthetic_digits, tiny_cnn
from torch import nn, optim
from torch.nn import functional as F

try:
    from gpuctl_report import checkpoint, report
except ImportError:  # not started by gpuctl: the printed lines are all there is

    def report(epoch: int, **values: float) -> None:
        pass

    def checkpoint(path: str) -> None:
        pass


STOP: list[str] = []  # the name of the signal that asked us to stop, once one did


def on_signal(signum: int, _frame: FrameType | None) -> None:
    STOP.append(signal.Signals(signum).name)  # acted on between steps, never mid-step


def save_checkpoint(
    directory: Path, model: nn.Module, optimizer: optim.Optimizer, state: dict[str, Any]
) -> None:
    """Write the directory beside the old one, then swap them by renames: the checkpoint
    gpuctl copies is always one whole checkpoint, never new weights with an old state.json."""
    new = directory.with_name(f".{directory.name}.new")
    old = directory.with_name(f".{directory.name}.old")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    weights = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    torch.save(weights | {"rng": torch.get_rng_state()}, new / "model.pt")
    (new / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    if directory.exists():
        os.replace(directory, old)
    os.replace(new, directory)
    shutil.rmtree(old, ignore_errors=True)
    checkpoint(str(directory.resolve()))


def load_checkpoint(path: Path, model: nn.Module, optimizer: optim.Optimizer) -> dict[str, Any]:
    weights = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(weights["model"])
    optimizer.load_state_dict(weights["optimizer"])
    torch.set_rng_state(weights["rng"])
    return json.loads((path / "state.json").read_text())


def train_epoch(
    model: nn.Module, optimizer: optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
    epoch: int, args: argparse.Namespace,
) -> float | None:  # fmt: skip
    """One pass over the training data: its mean loss, or None if a stop came first."""
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
    # gpuctl sets GPUCTL_CHECKPOINT to gpuctl.toml's `checkpoint`: the script needs no flag
    default_checkpoint = Path(os.environ.get("GPUCTL_CHECKPOINT", "checkpoints/last"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--size", type=int, default=10_000, help="synthetic training images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N images")
    parser.add_argument("--checkpoint", type=Path, default=default_checkpoint)
    parser.add_argument("--resume", type=Path, help="checkpoint directory to continue from")
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
    limit, val_size = args.limit or None, max(args.size // 10, 1)
    x, y = (t[:limit].to(device) for t in synthetic_digits(args.size, args.seed))
    val_x, val_y = (t[:limit].to(device) for t in synthetic_digits(val_size, args.seed + 1))
    model = tiny_cnn().to(device)
    optimizer = optim.Adam(model.parameters(), lr=args.lr)

    state: dict[str, Any] = {"epoch": 0, "history": []}  # epochs finished, one row each
    if args.resume:
        state = load_checkpoint(args.resume, model, optimizer)
        done = state["epoch"]
        print(f"Resumed from {args.resume}: {done} of {args.epochs} epochs done", flush=True)

    for epoch in range(state["epoch"] + 1, args.epochs + 1):
        train_loss = train_epoch(model, optimizer, x, y, epoch, args)
        if train_loss is None:  # stopped mid-epoch: a resume runs this epoch from its start
            save_checkpoint(args.checkpoint, model, optimizer, state)
            print(f"Stopped by {STOP[0]}: {state['epoch']} of {args.epochs} epochs done, "
                  f"saved {args.checkpoint}", flush=True)  # fmt: skip
            return 0
        val_loss, acc = evaluate(model, val_x, val_y, batch=args.batch_size * 4)
        report(epoch, epochs=args.epochs, loss=train_loss, val_loss=val_loss, metric=acc)
        print(f"Epoch {epoch}/{args.epochs} loss {train_loss:.4f} "
              f"val_loss {val_loss:.4f} acc {acc:.3f}", flush=True)  # fmt: skip
        row = {"epoch": epoch, "loss": train_loss, "val_loss": val_loss, "acc": acc}
        history = [*state["history"], row]
        if val_loss <= min(row["val_loss"] for row in history):
            args.out.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), args.out / ".best.pt.tmp")
            os.replace(args.out / ".best.pt.tmp", args.out / "best.pt")
        state = {"epoch": epoch, "history": history}
        save_checkpoint(args.checkpoint, model, optimizer, state)

    best = min(state["history"], key=lambda row: row["val_loss"])
    metrics = {"epochs": args.epochs, "best": best, "history": state["history"]}
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"Done: best val_loss {best['val_loss']:.4f} at epoch {best['epoch']}, "
          f"wrote {args.out}/best.pt and metrics.json", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
