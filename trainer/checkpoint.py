"""Checkpoints: atomic writes (tmp + fsync + rename) and the RNG state they carry."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch

FORMAT = 1  # checkpoint layout version (independent of the config version)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (best effort: not every OS allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(state: dict[str, Any], path: Path) -> None:
    """torch.save to a temp file, fsync, rename over `path`: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy a finished checkpoint (last.pt -> best.pt) with the same guarantees."""
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(dst.parent)


def load(path: Path) -> dict[str, Any]:
    """Load on CPU with the safe (weights-only) unpickler: checkpoints hold plain data."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a trainer checkpoint (format {FORMAT})")
    return state


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG a training step may draw from (python, torch CPU, this GPU)."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what rng_state captured (GPU state only when both sides have one)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
