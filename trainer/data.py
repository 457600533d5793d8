"""Datasets and sampling for the bundled task, with no torchvision and no download.

- SyntheticImages: class-dependent smooth patterns plus noise, generated on the fly
  from (seed, split, index): reproducible, learnable, and free of disk or network.
- ImageFolder: a real `data_dir` of class folders; PPM/PGM decoded here, PNG/JPEG
  through Pillow only if it happens to be installed.
- ResumableSampler: DistributedSampler that can start mid-epoch, so `--resume`
  continues the exact sample order.
"""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from .device import LoaderSettings
from .errors import TrainerError

NATIVE_EXTS = frozenset({".ppm", ".pgm", ".pnm"})
PIL_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
_MEAN, _STD = 0.5, 0.25


def _mix(*parts: int) -> int:
    """Combine integers into one 63-bit seed (splitmix-style), stable across runs."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (p & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class SyntheticImages(Dataset):
    """Deterministic image classification data; item i depends only on (seed, split, i)."""

    def __init__(
        self,
        size: int,
        num_classes: int,
        image_size: int,
        seed: int,
        split: int,
        noise: float = 1.5,
        channels: int = 3,
    ) -> None:
        self.size = size
        self.num_classes = num_classes
        self.image_size = image_size
        self.seed = seed
        self.split = split
        self.noise = noise
        self.shift = max(1, image_size // 8)
        protos = []
        for c in range(num_classes):  # one smooth random pattern per class
            g = torch.Generator().manual_seed(_mix(seed, 7919, c))
            coarse = torch.randn(1, channels, 4, 4, generator=g)
            p = F.interpolate(coarse, size=(image_size, image_size), mode="bicubic")[0]
            protos.append((p - p.mean()) / (p.std() + 1e-6))
        self.prototypes = torch.stack(protos)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        g = torch.Generator().manual_seed(_mix(self.seed, self.split, index))
        label = int(torch.randint(self.num_classes, (1,), generator=g))
        knobs = torch.rand(3, generator=g)  # amplitude, x shift, y shift
        amp = 0.6 + 0.8 * float(knobs[0])
        dx, dy = (int((k * (2 * self.shift + 1)).floor()) - self.shift for k in knobs[1:])
        base = torch.roll(self.prototypes[label], shifts=(dy, dx), dims=(1, 2))
        noise = torch.randn(base.shape, generator=g)
        return base * amp + noise * self.noise, label


def read_pnm(path: Path) -> torch.Tensor:
    """Decode a binary or ASCII PGM/PPM (P2/P3/P5/P6) to float CxHxW in [0, 1]."""
    data = path.read_bytes()
    if len(data) < 2 or data[:1] != b"P" or data[1:2] not in b"2356":
        raise TrainerError(f"{path}: not a PGM/PPM file")
    magic = data[1:2].decode()
    tokens: list[bytes] = []
    pos = 2
    while len(tokens) < 3:  # width, height, maxval, skipping comments
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            while pos < len(data) and data[pos : pos + 1] not in (b"\n", b"\r"):
                pos += 1
            continue
        start = pos
        while pos < len(data) and not data[pos : pos + 1].isspace():
            pos += 1
        if start == pos:
            raise TrainerError(f"{path}: truncated PGM/PPM header")
        tokens.append(data[start:pos])
    try:
        width, height, maxval = (int(t) for t in tokens)
    except ValueError:
        raise TrainerError(f"{path}: bad PGM/PPM header") from None
    channels = 3 if magic in "36" else 1
    count = width * height * channels
    if magic in "23":  # ASCII raster
        values = [int(v) for v in data[pos:].split()[:count]]
        if len(values) < count:
            raise TrainerError(f"{path}: truncated PGM/PPM data")
        flat = torch.tensor(values, dtype=torch.float32)
    else:
        raster = data[pos + 1 :]  # exactly one whitespace byte after maxval
        width_bytes = 2 if maxval > 255 else 1
        if len(raster) < count * width_bytes:
            raise TrainerError(f"{path}: truncated PGM/PPM data")
        raw = torch.frombuffer(bytearray(raster[: count * width_bytes]), dtype=torch.uint8)
        if width_bytes == 2:  # big-endian 16-bit samples
            raw16 = raw.view(-1, 2).to(torch.int32)
            flat = (raw16[:, 0] * 256 + raw16[:, 1]).to(torch.float32)
        else:
            flat = raw.to(torch.float32)
    return (flat / maxval).view(height, width, channels).permute(2, 0, 1).contiguous()


def _read_with_pil(path: Path) -> torch.Tensor:
    from PIL import Image  # optional: only when a PNG/JPEG tree is used

    with Image.open(path) as img:
        rgb = img.convert("RGB")
        buf = bytearray(rgb.tobytes())
    x = torch.frombuffer(buf, dtype=torch.uint8).view(rgb.height, rgb.width, 3)
    return x.permute(2, 0, 1).to(torch.float32) / 255.0


def load_image(path: Path, image_size: int) -> torch.Tensor:
    """Decode, center-crop to a square, resize to image_size, normalise; 3xSxS float."""
    x = read_pnm(path) if path.suffix.lower() in NATIVE_EXTS else _read_with_pil(path)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    h, w = x.shape[1:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = x[:, top : top + side, left : left + side]
    if side != image_size:
        x = F.interpolate(
            x.unsqueeze(0), size=(image_size, image_size), mode="bilinear", antialias=True
        )[0]
    return (x - _MEAN) / _STD


def _list_images(folder: Path) -> list[Path]:
    exts = NATIVE_EXTS | PIL_EXTS
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in exts)


def _subset(items: list[tuple[Path, int]], cap: int, seed: int) -> list[tuple[Path, int]]:
    """A seeded, order-stable subset so presets can train on a tiny slice of a big set."""
    if len(items) <= cap:
        return items
    g = torch.Generator().manual_seed(_mix(seed, 104729))
    keep = sorted(torch.randperm(len(items), generator=g)[:cap].tolist())
    return [items[i] for i in keep]


class ImageFolder(Dataset):
    """`root/<class>/<image>` samples, decoded on access (workers parallelise this)."""

    def __init__(self, samples: list[tuple[Path, int]], image_size: int) -> None:
        self.samples = samples
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return load_image(path, self.image_size), label


def open_image_folder(
    data_dir: str, image_size: int, train_cap: int, val_cap: int, seed: int
) -> tuple[ImageFolder, ImageFolder, list[str]]:
    """Train/val ImageFolders from `data_dir/{train,val}/<class>/` or `data_dir/<class>/`.

    Without a val/ folder, a seeded slice of the class folders becomes validation.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise TrainerError(f"data_dir {root} does not exist or is not a directory")
    train_root = root / "train" if (root / "train").is_dir() else root
    val_root = next((root / n for n in ("val", "validation") if (root / n).is_dir()), None)
    classes = sorted(p.name for p in train_root.iterdir() if p.is_dir())
    if train_root is root:
        classes = [c for c in classes if c not in ("val", "validation")]
    if not classes:
        raise TrainerError(f"data_dir {root} has no class folders (expected <class>/<image>)")
    index = {c: i for i, c in enumerate(classes)}
    train_items = [(p, index[c]) for c in classes for p in _list_images(train_root / c)]
    val_items: list[tuple[Path, int]] = []
    if val_root is not None:
        for folder in sorted(p for p in val_root.iterdir() if p.is_dir()):
            if folder.name not in index:
                raise TrainerError(f"{folder}: class '{folder.name}' is not among train classes")
            val_items += [(p, index[folder.name]) for p in _list_images(folder)]
    else:  # carve a deterministic validation slice out of the training images
        g = torch.Generator().manual_seed(_mix(seed, 15485863))
        order = torch.randperm(len(train_items), generator=g).tolist()
        n_val = min(val_cap, max(1, len(train_items) // 5))
        val_set = set(order[:n_val])
        val_items = [it for i, it in enumerate(train_items) if i in val_set]
        train_items = [it for i, it in enumerate(train_items) if i not in val_set]
    if not train_items or not val_items:
        raise TrainerError(f"data_dir {root}: no images found (need train and val images)")
    train_items = _subset(train_items, train_cap, seed)
    val_items = _subset(val_items, val_cap, seed + 1)
    needs_pil = {p.suffix.lower() for p, _ in train_items + val_items} & PIL_EXTS
    if needs_pil and importlib.util.find_spec("PIL") is None:
        raise TrainerError(
            f"data_dir {root} has {', '.join(sorted(needs_pil))} images but Pillow is not "
            "installed: `pip install pillow`, or convert the images to PPM/PGM"
        )
    return ImageFolder(train_items, image_size), ImageFolder(val_items, image_size), classes


class ResumableSampler(DistributedSampler):
    """DistributedSampler (shuffle by seed + epoch) that can skip what was already trained.

    The order of an epoch is a pure function of (seed, epoch, rank, world size), so a
    resumed run only needs the epoch and the number of samples already consumed.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Begin epoch `epoch` at its `start`-th sample (on this rank)."""
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


class ShardSampler(Sampler[int]):
    """Validation order: rank r takes r, r+W, r+2W, ... (no padding, so no double counts)."""

    def __init__(self, size: int, num_replicas: int, rank: int) -> None:
        self.indices = list(range(rank, size, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_loader(
    dataset: Dataset,
    sampler: Sampler[int],
    batch_size: int,
    settings: LoaderSettings,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader with the device-chosen worker/pinning settings."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=settings.num_workers,
        pin_memory=settings.pin_memory,
        persistent_workers=settings.persistent_workers,
        prefetch_factor=settings.prefetch_factor,
        generator=generator,
        drop_last=drop_last,
    )
