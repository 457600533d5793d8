"""Write a small "digits" dataset to data/digits as train.pt and val.pt (uint8 images).

It stands in for your own data: a local directory that gpuctl uploads once per machine
(the `[data.digits]` table in gpuctl.toml) and train.py reads with `--data data/digits`.

    python make_data.py                 # 20,000 training + 2,000 validation images, 17 MB
    python make_data.py --size 2000     # a few seconds' worth, for trying things out
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from train import atomic_save, synthetic_digits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20_000, help="training images")
    parser.add_argument("--out", type=Path, default=Path("data/digits"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for split, count, seed in (
        ("train", args.size, args.seed),
        ("val", args.size // 10, args.seed + 1),
    ):
        x, y = synthetic_digits(max(count, 1), seed)
        pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # 4x smaller than float
        atomic_save({"x": pixels, "y": y}, args.out / f"{split}.pt")
        print(f"{args.out / split}.pt: {len(y)} images")


if __name__ == "__main__":
    main()
